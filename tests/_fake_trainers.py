"""Trainer doubles for runner tests (importable by a spawned worker: plain module functions)."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from napari_labelfx.engine.updates import Finished, Paused, Progress, Resumed, Started


@dataclass(frozen=True, eq=False, kw_only=True)
class CountingProgress(Progress):
    """A PROGRESS update that also says what the trainer received (module level: it crosses the queue)."""

    n_items: int = 0
    preview: Any = None


class _Control:
    def __init__(self) -> None:
        self._pause = threading.Event()
        self._stop = threading.Event()

    def pause(self) -> None:
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    def stop(self) -> None:
        self._stop.set()

    @property
    def is_paused(self) -> bool:
        return self._pause.is_set()

    @property
    def should_stop(self) -> bool:
        return self._stop.is_set()


class CountingTrainer:
    """Counts iterations slowly; honours pause/stop; reports items and preview requests it received."""

    def __init__(self, config, items, class_names, multilabel=False) -> None:
        self.config = config
        self.control = _Control()
        self.items = items
        self.preview = None

    def set_items(self, items) -> None:
        self.items = items

    def request_preview(self, image_index, region) -> None:
        self.preview = (image_index, region)

    def updates(self):
        total = int(self.config.get("iterations", 50))
        yield Started(0, total, device="cpu", method="fake")
        it = 0
        while it < total:
            if self.control.should_stop:
                yield Finished(it, total, reason="stopped")
                return
            if self.control.is_paused:
                yield Paused(it, total)
                while self.control.is_paused and not self.control.should_stop:
                    time.sleep(0.01)
                yield Resumed(it, total)
                continue
            it += 1
            time.sleep(float(self.config.get("sleep", 0.01)))
            yield CountingProgress(it, total, loss=1.0 / it, n_items=len(self.items), preview=self.preview)
        yield Finished(it, total, reason="done")


class FailingTrainer(CountingTrainer):
    """Raises inside training after a few steps."""

    def updates(self):
        yield Started(0, 3)
        yield Progress(1, 3, loss=1.0)
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


class DyingTrainer(CountingTrainer):
    """Kills its own process (as the OOM killer would)."""

    def updates(self):
        yield Started(0, 3)
        time.sleep(0.2)
        os._exit(9)
