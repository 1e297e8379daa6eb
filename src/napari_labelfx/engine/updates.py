"""Typed messages the training side emits; the GUI and CLI apply them (plain data, picklable)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class UpdateKind(str, Enum):
    STARTED = "started"  # data: device, method, total iterations
    PROGRESS = "progress"  # data: loss, losses{name: value}, lr, its_per_s
    VALIDATION = "validation"  # data: val_loss, metrics{...}
    PREVIEW = "preview"  # data: image_index, region (slices as tuples), labels, confidence
    CHECKPOINT = "checkpoint"  # data: path, which ("best"|"last"), val_loss
    PAUSED = "paused"
    RESUMED = "resumed"
    LOG = "log"  # data: message, level
    RESULT = "result"  # data: method-specific result layers (pseudo-labels, weights, ...)
    FINISHED = "finished"  # data: best_path, last_path, reason ("done"|"stopped"|"early-stopping")
    FAILED = "failed"  # data: reason (human-readable), error type


@dataclass
class Update:
    """One message from the trainer. ``data`` holds only builtins and numpy arrays."""

    kind: UpdateKind
    iteration: int = 0
    total: int = 0
    data: dict[str, Any] = field(default_factory=dict)
