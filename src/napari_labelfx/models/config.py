"""Model configuration: a small JSON-serialisable dataclass plus size presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


class ModelConfigError(ValueError):
    """A model configuration is invalid (bad value, unknown key, unknown preset)."""


_NORMS = ("batch", "group", "instance", "none")
_UPSAMPLES = ("linear", "transpose")
_INITS = ("kaiming", "xavier")


@dataclass
class ModelConfig:
    """Architecture of a segmentation network; ``build_model`` turns it into an ``nn.Module``.

    Attributes
    ----------
    name : registry name of the architecture (``"unet"``).
    spatial_dims : 2 for images (B, C, H, W), 3 for volumes (B, C, D, H, W).
    in_channels : input channels.
    num_classes : output channels (softmax classes incl. background, or sigmoid classes if multilabel).
    depth : number of 2x downsamplings; the decoder exposes ``depth + 1`` maps f0..f_depth.
    width : channels of the full-resolution level; level i has ``width * 2**i``.
    norm : ``"batch"``, ``"group"``, ``"instance"`` or ``"none"``.
    upsample : ``"linear"`` (1x1 conv + bilinear/trilinear) or ``"transpose"`` (transposed conv).
    init : ``"kaiming"`` or ``"xavier"`` weight initialisation of conv/linear layers.
    multilabel : logits are independent sigmoids per class instead of one softmax.
    image_head : add an image-level classifier (global average pool of the bottleneck -> linear).
    dropout : channel dropout probability before the segmentation head.
    options : architecture-specific extra keyword arguments for models registered later.
    input_scale : the network works at this fraction of the image's resolution (the working scale,
        chosen from the objects' size): inputs are resampled by it inside ``forward`` and the logits
        resampled back, so callers always give and get full-resolution arrays. 1.0 = off.
    """

    name: str = "unet"
    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    depth: int = 4
    width: int = 16
    norm: str = "batch"
    upsample: str = "linear"
    init: str = "kaiming"
    multilabel: bool = False
    image_head: bool = False
    dropout: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    input_scale: float = 1.0

    def __post_init__(self) -> None:
        def bad(msg: str) -> ModelConfigError:
            return ModelConfigError(f"ModelConfig: {msg}")

        if not isinstance(self.name, str) or not self.name:
            raise bad(f"name must be a non-empty string, got {self.name!r}")
        if self.spatial_dims not in (2, 3):
            raise bad(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        for key in ("in_channels", "num_classes", "width"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(f"{key} must be a positive integer, got {value!r}")
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or not 1 <= self.depth <= 6:
            raise bad(f"depth must be an integer in 1..6, got {self.depth!r}")
        if self.norm not in _NORMS:
            raise bad(f"norm must be one of {_NORMS}, got {self.norm!r}")
        if self.upsample not in _UPSAMPLES:
            raise bad(f"upsample must be one of {_UPSAMPLES}, got {self.upsample!r}")
        if self.init not in _INITS:
            raise bad(f"init must be one of {_INITS}, got {self.init!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise bad(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.options, dict):
            raise bad(f"options must be a dict, got {type(self.options).__name__}")
        if isinstance(self.input_scale, bool) or not isinstance(self.input_scale, (int, float)) or \
                not 0.05 <= float(self.input_scale) <= 1.0:
            raise bad(f"input_scale must be a number in [0.05, 1], got {self.input_scale!r}")
        self.input_scale = float(self.input_scale)
        self.multilabel = bool(self.multilabel)
        self.image_head = bool(self.image_head)
        self.dropout = float(self.dropout)

    @property
    def divisor(self) -> int:
        """Spatial sizes are padded internally to a multiple of this (``2**depth``)."""
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict as written by :meth:`to_dict`; unknown keys raise ``ModelConfigError``."""
        if not isinstance(data, dict):
            raise ModelConfigError(f"ModelConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelConfigError(f"ModelConfig: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**dict(data))


#: Size presets (kwargs of ModelConfig). Chosen for CPU: "small" trains in minutes on a laptop CPU
#: (~0.45 M parameters in 2D, 1.3 M in 3D), "medium" is the usual 4-level UNet at width 32 (~7.2 M in 2D),
#: "large" is a 4-level UNet at width 64 (~29 M in 2D) meant for a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"depth": 3, "width": 16, "norm": "batch", "upsample": "linear"},
    "medium": {"depth": 4, "width": 32, "norm": "batch", "upsample": "linear"},
    "large": {"depth": 4, "width": 64, "norm": "batch", "upsample": "linear"},
}


def config_from_preset(preset: str, **overrides: Any) -> ModelConfig:
    """A :class:`ModelConfig` from a preset name with keyword overrides (e.g. ``spatial_dims=3``)."""
    if preset not in PRESETS:
        raise ModelConfigError(f"unknown model preset {preset!r}; available: {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[preset], **overrides})
