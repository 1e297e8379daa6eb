"""The bookkeeping of one training run, split out of the loop: loss window, preview timing, best model.

``Trainer._train`` keeps only the order of things (control, new annotations, step, reports, validation,
preview); each object here owns one concern and its numbers.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.augment import Augmenter
from ..methods import MethodContext
from .optim import AdamW

#: Timed previews are spaced so that they take at most this share of the training time (a preview
#: of a large region on a CPU can cost as much as several steps); requested previews are not held back.
PREVIEW_TIME_SHARE = 0.15


@dataclass
class LossWindow:
    """Losses summed since the last PROGRESS report, and the training time they took.

    Paused, validation and preview time is taken out (``exclude``): it is not training throughput.
    """

    t_start: float
    loss: torch.Tensor | None = None
    terms: dict[str, Any] = field(default_factory=dict)
    n: int = 0

    def add(self, loss: torch.Tensor, terms: dict[str, Any]) -> None:
        """Add one step's loss and its named terms (kept on the device: no sync per step)."""
        self.loss = loss if self.loss is None else self.loss + loss
        for k, v in terms.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            self.terms[k] = v if k not in self.terms else self.terms[k] + v
        self.n += 1

    #: seconds of previews and validation in this window: left out of the throughput, but the person
    #: waits through them, so they count in :attr:`wall_its_per_s`
    work_s: float = 0.0
    #: iterations per second of the last closed window as the person sees them (pauses excluded)
    wall_its_per_s: float = 0.0

    def exclude(self, seconds: float, waited: bool = True) -> None:
        """Leave ``seconds`` of non-training time out of the iterations per second.

        ``waited``: the time still passes for the person (previews, validation; not pauses).
        """
        self.t_start += seconds
        if waited:
            self.work_s += seconds

    def close(self, now: float) -> tuple[float, dict[str, float], float]:
        """Mean loss, mean terms and iterations per second of the window; then start a new one at ``now``."""
        mean_loss = float(self.loss) / self.n
        losses = {k: float(v) / self.n for k, v in self.terms.items()}
        its = self.n / max(now - self.t_start, 1e-9)
        self.wall_its_per_s = self.n / max(now - self.t_start + self.work_s, 1e-9)
        self.loss, self.terms, self.n, self.t_start, self.work_s = None, {}, 0, now, 0.0
        return mean_loss, losses, its


@dataclass
class PreviewSchedule:
    """When the next timed preview is due: the first right after the first PROGRESS, then every
    ``every_s`` seconds, stretched so previews take at most ``PREVIEW_TIME_SHARE`` of the time."""

    every_s: float
    last: float
    first_due: bool
    gap: float

    @classmethod
    def start(cls, every_s: float) -> PreviewSchedule:
        return cls(every_s=every_s, last=time.perf_counter(), first_due=every_s > 0, gap=every_s)

    def due(self, now: float, progress_sent: bool) -> bool:
        return (self.first_due and progress_sent) or (self.every_s > 0 and now - self.last >= self.gap)

    def done(self, t_before: float, t_after: float) -> None:
        """A preview ran from ``t_before`` to ``t_after``."""
        self.first_due = False
        self.last = t_after
        self.gap = max(self.every_s, (t_after - t_before) / PREVIEW_TIME_SHARE)


@dataclass
class BestModel:
    """Validation bookkeeping: the best loss, a CPU copy of its weights, validations without improvement."""

    best_val: float = math.inf
    last_val: float | None = None
    state: dict[str, dict[str, torch.Tensor]] | None = None
    bad_validations: int = 0

    def reset(self) -> None:
        """A new validation set: earlier losses do not compare with the next ones."""
        self.best_val, self.bad_validations = math.inf, 0

    def record(self, val_loss: float, models: dict[str, nn.Module]) -> bool:
        """Note a validation loss; True (and the weights kept) when it is the best so far."""
        self.last_val = val_loss
        if val_loss < self.best_val:
            self.best_val, self.bad_validations = val_loss, 0
            self.state = {n: {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
                          for n, m in models.items()}
            return True
        self.bad_validations += 1
        return False

    def restore(self, models: dict[str, nn.Module]) -> None:
        """Load the best weights back (the best model becomes the inference network)."""
        if self.state is not None:
            for name, state in self.state.items():
                models[name].load_state_dict(state)

    @property
    def best_or_none(self) -> float | None:
        return self.best_val if math.isfinite(self.best_val) else None


@dataclass
class RunState:
    """What one call of ``Trainer._train`` works with from start to end."""

    optimizer: AdamW
    scaler: Any
    augmenter: Augmenter
    ctx: MethodContext
    out_dir: Path | None
    t_start: float
    window: LossWindow
    preview: PreviewSchedule
    best: BestModel = field(default_factory=BestModel)
    progress_sent: bool = False
    lr: float = 0.0  # the learning rate of the last step
    preview_s: float = 0.0  # seconds spent on timed and requested previews
    paused_s: float = 0.0  # seconds paused
