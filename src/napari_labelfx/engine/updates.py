"""Typed messages the training side emits; the GUI and CLI apply them.

One frozen dataclass per kind (:class:`Started`, :class:`Progress`, :class:`Validation`, :class:`Preview`,
:class:`Checkpoint`, :class:`Paused`, :class:`Resumed`, :class:`Log`, :class:`Result`, :class:`Finished`,
:class:`Failed`), all subclasses of :class:`Update`. Every update carries ``iteration`` and ``total``, its
``kind`` (a class constant, so consumers may switch on it or on the type) and ``source``, which the
``auto`` trainer sets to ``"forest"`` or ``"network"`` to say which learner sent it. The fields hold only
builtins, numpy arrays and :class:`~napari_labelfx.core.results.ResultLayer` s, so the process runner can
pickle them across its queue.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from ..core.results import Curve, Marker, MethodResult, ResultLayer


class UpdateKind(str, Enum):
    STARTED = "started"
    PROGRESS = "progress"
    VALIDATION = "validation"
    PREVIEW = "preview"
    CHECKPOINT = "checkpoint"
    PAUSED = "paused"
    RESUMED = "resumed"
    LOG = "log"
    RESULT = "result"
    FINISHED = "finished"
    FAILED = "failed"


# eq=False: updates carry numpy arrays, whose == is element-wise; identity is what consumers need.
@dataclass(frozen=True, eq=False)
class Update:
    """One message from a trainer: the iteration it was sent at, of ``total``; subclasses add the payload."""

    kind: ClassVar[UpdateKind]
    iteration: int = 0
    total: int = 0
    source: str | None = field(default=None, kw_only=True)  # "forest" | "network" (auto trainer) or None


@dataclass(frozen=True, eq=False, kw_only=True)
class Started(Update):
    """Training starts: where and what."""

    kind: ClassVar[UpdateKind] = UpdateKind.STARTED
    device: str = "cpu"
    method: str = ""
    start_iteration: int = 0  # > 0 when resumed
    amp: bool = False
    n_items: int = 0
    model: Mapping[str, Any] | None = None  # the network's config (network trainers)
    n_train_pixels: int | None = None
    n_val_pixels: int | None = None
    validation: bool = False  # whether pixels are held out for validation
    epoch_length: int | None = None
    features: int | None = None  # forest: filter-bank features per pixel
    live: bool | None = None  # forest: refits while the person paints


@dataclass(frozen=True, eq=False, kw_only=True)
class Progress(Update):
    """Training advanced: the mean loss since the last report and the rates."""

    kind: ClassVar[UpdateKind] = UpdateKind.PROGRESS
    loss: float = float("nan")
    losses: Mapping[str, float] = field(default_factory=dict)  # the method's named loss terms
    lr: float = 0.0
    its_per_s: float = 0.0  # optimisation steps per second (training time only)
    epoch: int = 0
    wall_its_per_s: float | None = None  # what the person sees advance (previews, validation included)
    preview_share: float | None = None  # share of the run's time spent on previews
    elapsed_s: float = 0.0
    eta_s: float = 0.0
    fit_s: float | None = None  # forest: seconds of the fit
    n_samples: int | None = None  # forest: labelled pixels it was fitted on
    quick: bool = False  # forest: the quick first fit, refined right after
    winner: str | None = None  # auto: the learner shown now


@dataclass(frozen=True, eq=False, kw_only=True)
class Validation(Update):
    """A held-out score (``engine.validation.evaluate_split`` / ``forest_validation`` definitions)."""

    kind: ClassVar[UpdateKind] = UpdateKind.VALIDATION
    val_loss: float
    dice_mean: float | None = None
    dice: Mapping[str, float | None] = field(default_factory=dict)  # per class name
    accuracy: float | None = None
    n_pixels: int = 0
    best: bool = False  # the best validation loss so far
    best_val_loss: float | None = None
    forest: Mapping[str, Any] | None = None  # auto: the forest's scores on the same pixels
    winner: str | None = None  # auto: the learner shown after this comparison
    changed: bool = False  # auto: the shown learner changed with this comparison

    @classmethod
    def from_metrics(cls, iteration: int, total: int, metrics: Mapping[str, Any], **extra: Any) -> Validation:
        """From a metrics dict (``val_loss``, ``dice``, ``dice_mean``, ``accuracy``, ``n_pixels``) and extra fields."""
        return cls(iteration, total, val_loss=float(metrics["val_loss"]), dice_mean=metrics.get("dice_mean"),
                   dice=dict(metrics.get("dice") or {}), accuracy=metrics.get("accuracy"),
                   n_pixels=int(metrics.get("n_pixels", 0)), **extra)


@dataclass(frozen=True, eq=False, kw_only=True)
class Preview(Update):
    """The current model's prediction of a region of one training image."""

    kind: ClassVar[UpdateKind] = UpdateKind.PREVIEW
    image_index: int
    region: tuple[tuple[int, int], ...]  # (start, stop) per spatial axis of the image
    labels: Any  # ndarray: class indices of the region (or (K, ...) 0/1 multi-label)
    confidence: Any  # ndarray float32: the winning class's probability
    name: str = ""  # the training item's name


@dataclass(frozen=True, eq=False, kw_only=True)
class Checkpoint(Update):
    """A model folder was written."""

    kind: ClassVar[UpdateKind] = UpdateKind.CHECKPOINT
    path: str
    which: str  # "best" | "last" | "forest" (auto's forest folder)
    val_loss: float | None = None


@dataclass(frozen=True, eq=False)
class Paused(Update):
    kind: ClassVar[UpdateKind] = UpdateKind.PAUSED


@dataclass(frozen=True, eq=False)
class Resumed(Update):
    kind: ClassVar[UpdateKind] = UpdateKind.RESUMED


@dataclass(frozen=True, eq=False, kw_only=True)
class Log(Update):
    """A line for the person: ``level`` is ``"info"`` or ``"warning"``."""

    kind: ClassVar[UpdateKind] = UpdateKind.LOG
    message: str
    level: str = "info"


@dataclass(frozen=True, eq=False, kw_only=True)
class Result(Update):
    """A method's results to show (see :class:`~napari_labelfx.core.results.MethodResult`)."""

    kind: ClassVar[UpdateKind] = UpdateKind.RESULT
    layers: tuple[ResultLayer, ...] = ()
    markers: tuple[Marker, ...] = ()  # vertical lines on the loss plot
    curves: Mapping[str, Curve] = field(default_factory=dict)  # extra series on the plot (second y axis)
    message: str | None = None  # for the status line
    method: str = ""

    def by_name(self) -> dict[str, ResultLayer]:
        """The layers keyed by name."""
        return {layer.name: layer for layer in self.layers}

    @classmethod
    def of(cls, iteration: int, total: int, result: MethodResult, method: str) -> Result:
        """The RESULT update of ``method``'s ``result`` at ``iteration``."""
        return cls(iteration, total, layers=tuple(result.layers), markers=tuple(result.markers),
                   curves=dict(result.curves), message=result.message, method=method)


@dataclass(frozen=True, eq=False, kw_only=True)
class Finished(Update):
    """Training ended as planned, was stopped, or stopped early."""

    kind: ClassVar[UpdateKind] = UpdateKind.FINISHED
    reason: str = "done"  # "done" | "stopped" | "early-stopping" | "time-budget"
    best_path: str | None = None
    last_path: str | None = None
    best_val_loss: float | None = None
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    winner: str | None = None  # auto: the learner kept


@dataclass(frozen=True, eq=False, kw_only=True)
class Failed(Update):
    """Training failed; ``reason`` is the human-readable cause."""

    kind: ClassVar[UpdateKind] = UpdateKind.FAILED
    reason: str = "unknown error"
    error_type: str = ""
    traceback: str | None = None


__all__ = [
    "Checkpoint",
    "Failed",
    "Finished",
    "Log",
    "Paused",
    "Preview",
    "Progress",
    "Result",
    "Resumed",
    "Started",
    "Update",
    "UpdateKind",
    "Validation",
]
