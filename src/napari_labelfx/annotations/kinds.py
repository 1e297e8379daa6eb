"""Label kinds, the ignore value and the item the training engine consumes."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

#: Target value of pixels the loss ignores (unknown) in int64 class-index targets.
IGNORE_INDEX: int = -1
#: Unknown value in uint8 multi-label targets (K, ...) whose known values are 0/1.
MULTILABEL_IGNORE: int = 255


class LabelKind(str, Enum):
    """What a painted layer means. Stored in a layer's ``metadata["labelfx_kind"]``."""

    STRONG = "strong"  # full mask: unpainted pixels are background
    SCRIBBLE = "scribble"  # sparse strokes: unpainted pixels are unknown
    WEAK = "weak"  # coarse masks / boxes / ellipses / polygons: each object is a weak instance
    NOISY = "noisy"  # full mask of doubtful quality: unpainted pixels are background
    IMAGE_LEVEL = "image-level"  # class tags per image or per slice
    NONE = "none"  # no annotation (unlabelled image)

    @property
    def unpainted_is_background(self) -> bool:
        """True for full-mask kinds, where unpainted pixels are background, not unknown."""
        return self in (LabelKind.STRONG, LabelKind.NOISY)


@dataclass
class TrainingItem:
    """One image or volume with its targets, ready for the engine (numpy only, picklable).

    Attributes
    ----------
    image : float32 array (C, Y, X) or (C, Z, Y, X), normalised.
    target : int64 class indices with ``IGNORE_INDEX`` (multi-class), or uint8 (K, ...) 0/1 with
        ``MULTILABEL_IGNORE`` (multi-label), or None for an unlabelled image.
    kind : dominant label kind of the target.
    instances : int32 weak-instance ids (0 = none), same spatial shape, or None.
    tags : float32 (K,) multi-hot image-level classes (index 0 = background), or None.
    name : a name for messages and outputs.
    """

    image: np.ndarray
    target: np.ndarray | None = None
    kind: LabelKind = LabelKind.NONE
    instances: np.ndarray | None = None
    tags: np.ndarray | None = None
    name: str = "image"
    extra: dict = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])

    @property
    def spatial_ndim(self) -> int:
        return self.image.ndim - 1
