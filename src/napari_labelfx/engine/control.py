"""Thread-safe pause/resume/stop switches that a trainer checks between steps."""
from __future__ import annotations

import threading


class TrainerControl:
    """Pause, resume and stop a running :class:`~napari_labelfx.engine.trainer.Trainer`.

    Safe to call from any thread; the trainer polls it between optimisation steps. Stopping also
    ends a pause. A stopped control stays stopped.
    """

    def __init__(self) -> None:
        self._paused = threading.Event()
        self._stopped = threading.Event()

    def pause(self) -> None:
        """Hold training after the current step (the trainer sleeps until resumed or stopped)."""
        if not self._stopped.is_set():
            self._paused.set()

    def resume(self) -> None:
        """Continue a paused training."""
        self._paused.clear()

    def stop(self) -> None:
        """End training after the current step; the trainer saves and reports the best model."""
        self._stopped.set()
        self._paused.clear()

    @property
    def is_paused(self) -> bool:
        return self._paused.is_set()

    @property
    def should_stop(self) -> bool:
        return self._stopped.is_set()

    def wait_while_paused(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds while paused; True when no longer paused."""
        if not self._paused.is_set():
            return True
        # Event has no "wait until clear": poll in short sleeps so resume/stop are seen quickly.
        self._stopped.wait(timeout)
        return not self._paused.is_set()
