"""Training configuration: one picklable, JSON-serialisable dataclass."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A training setting is unknown or out of range."""


DEFAULT_PATCH_2D = (128, 128)
#: Modest on purpose: 3D steps on a CPU are slow; raise it on a GPU.
DEFAULT_PATCH_3D = (32, 64, 64)


def _default_augment() -> dict[str, Any]:
    return {"flip": True, "rot90": True, "intensity": True, "hed": False}


@dataclass
class TrainConfig:
    """Everything that defines a training run (see ``docs/architecture.md``).

    Attributes
    ----------
    method : registered training method (``"supervised"``, ``"scribble"``, ...).
    preset : model size preset (``"small"``, ``"medium"``, ``"large"``).
    model : ModelConfig overrides on top of the preset (e.g. ``{"norm": "group"}``).
    spatial : ``"2d"`` (images, or slices of volumes) or ``"3d"`` (3D patches of volumes).
    iterations : total optimizer steps (a resumed run continues up to this number).
    lr, weight_decay : AdamW settings; the learning rate follows a cosine schedule after a warm-up.
    batch_size : patches per step.
    patch_size : (Y, X) in ``"2d"``, (Z, Y, X) in ``"3d"``; None: (128, 128) or (32, 64, 64).
    device : ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    amp : mixed precision (used on CUDA only).
    val_fraction : share of annotated blocks held out for validation (0 = none).
    val_every : iterations between validations (and ``last`` checkpoints).
    early_stopping : stop after this many validations without improvement (0 = never).
    seed : seeds sampling, augmentation, weight initialisation and the validation split.
    preview_every_s : seconds between preview predictions (<= 0: only when requested); stretched when
        a preview is slow so that previews take at most 15 % of the time.
    output_dir : folder for the ``best`` and ``last`` checkpoints (None: keep in memory only).
    augment : augmentation switches (see ``data.augment.AugmentConfig``).
    method_params : parameters of the method (see its ``defaults``).
    log_every : iterations between PROGRESS updates.
    resume_from : a model folder written by a previous run to continue from.
    warmup_iterations : linear warm-up length (None: 5 % of the iterations, at most 100).
    val_block : edge in pixels of the blocks held out for validation.
    annotated_fraction : share of patches centred on an annotated pixel.
    time_budget_s : stop after this many wall-clock seconds (None: run all ``iterations``); the
        learning-rate schedule then follows the elapsed share of the budget, and ``iterations`` is a cap.
    """

    method: str = "supervised"
    preset: str = "small"
    model: dict[str, Any] = field(default_factory=dict)
    spatial: str = "2d"
    iterations: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 4
    patch_size: tuple[int, ...] | None = None
    device: str = "auto"
    amp: bool = True
    val_fraction: float = 0.1
    val_every: int = 50
    early_stopping: int = 0
    seed: int = 0
    preview_every_s: float = 3.0
    output_dir: str | None = None
    augment: dict[str, Any] = field(default_factory=_default_augment)
    method_params: dict[str, Any] = field(default_factory=dict)
    log_every: int = 10
    resume_from: str | None = None
    warmup_iterations: int | None = None
    val_block: int = 32
    annotated_fraction: float = 0.5
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"training setting {msg}")

        def positive_int(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
                raise bad(f"{name} must be an integer >= {0 if allow_zero else 1}, got {v!r}")

        if not isinstance(self.method, str) or not self.method:
            raise bad(f"method must be a method name, got {self.method!r}")
        if self.spatial not in ("2d", "3d"):
            raise bad(f"spatial must be '2d' or '3d', got {self.spatial!r}")
        for name in ("iterations", "batch_size", "val_every", "log_every", "val_block"):
            positive_int(name)
        positive_int("early_stopping", allow_zero=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise bad(f"seed must be an integer, got {self.seed!r}")
        for name in ("lr", "weight_decay", "val_fraction", "preview_every_s", "annotated_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(f"{name} must be a finite number, got {v!r}")
            setattr(self, name, float(v))
        if self.lr <= 0 or self.weight_decay < 0:
            raise bad(f"lr must be > 0 and weight_decay >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise bad(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.annotated_fraction <= 1.0:
            raise bad(f"annotated_fraction must be in [0, 1], got {self.annotated_fraction}")
        if self.patch_size is None:
            self.patch_size = DEFAULT_PATCH_2D if self.spatial == "2d" else DEFAULT_PATCH_3D
        try:
            self.patch_size = tuple(int(p) for p in self.patch_size)
        except (TypeError, ValueError):
            raise bad(f"patch_size must be a sequence of integers, got {self.patch_size!r}") from None
        want = 2 if self.spatial == "2d" else 3
        if len(self.patch_size) != want or min(self.patch_size) < 4:
            raise bad(
                f"patch_size must have {want} sizes >= 4 for spatial={self.spatial!r}, got {self.patch_size}"
            )
        if self.time_budget_s is not None:
            v = self.time_budget_s
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise bad(f"time_budget_s must be a positive number of seconds, got {v!r}")
            self.time_budget_s = float(v)
        if self.warmup_iterations is not None:
            positive_int("warmup_iterations", allow_zero=True)
        for name in ("model", "augment", "method_params"):
            if not isinstance(getattr(self, name), dict):
                raise bad(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")
        self.augment = {**_default_augment(), **self.augment}
        if self.output_dir is not None:
            self.output_dir = str(Path(self.output_dir))
        if self.resume_from is not None:
            self.resume_from = str(Path(self.resume_from))
        self.amp = bool(self.amp)

    @property
    def warmup(self) -> int:
        """Warm-up iterations actually used."""
        if self.warmup_iterations is not None:
            return min(self.warmup_iterations, self.iterations)
        return max(1, min(100, self.iterations // 20))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"a training configuration must be a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)
