"""Shared plumbing for panels that run one long job at a time in a napari thread worker."""
from __future__ import annotations

from typing import Any


class WorkerPanelMixin:
    """Runs ``func`` in a thread worker, disables the panel's buttons meanwhile, reports errors.

    A panel sets ``_worker_label`` (shown in notifications), ``status`` (a QLabel) and implements
    ``_busy_buttons()``.
    """

    _worker_label = "LabelFX"
    _worker: Any = None

    def _busy_buttons(self) -> list[Any]:
        return []

    def _run(self, func: Any, done: Any, what: str) -> None:
        from napari.qt.threading import thread_worker

        self.status.setText(f"{what}...")
        for b in self._busy_buttons():
            b.setEnabled(False)
        # errors go to our handler (a notification), not re-raised in the event loop
        worker = thread_worker(func, ignore_errors=True)()
        worker.returned.connect(done)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._finished)
        self._worker = worker
        worker.start()

    def _failed(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(f"failed: {exc}")
        show_error(f"{self._worker_label}: {exc}")

    def _finished(self) -> None:
        for b in self._busy_buttons():
            b.setEnabled(True)
        self._worker = None
