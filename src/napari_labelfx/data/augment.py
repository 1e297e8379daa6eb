"""Batch augmentations applied identically to image, target and instances (torch or numpy input).

Geometry (flips on every spatial axis, 90-degree rotations in the Y-X plane) is drawn per sample and
applied to every per-pixel array of the batch, so labels move exactly with the image. Intensity
changes (gain, offset, gamma, Gaussian noise) touch only the image. Further image transforms (e.g. the
HED stain jitter from ``tools``) plug in through :func:`register_transform` and are switched on by
name in the augmentation settings.

Random parameters come from a numpy generator (reproducible and device-independent); the arithmetic
runs in torch on the batch's device, so on a GPU the augmentation costs almost nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from .errors import AugmentationError

#: Image transform: (image (B, C, *spatial) float tensor, rng) -> transformed image.
ImageTransform = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]

_EXTRA_TRANSFORMS: dict[str, ImageTransform] = {}

#: Batch keys whose trailing axes are the patch's spatial axes (moved by geometric transforms).
SPATIAL_KEYS = ("image", "target", "instances", "weight")


#: Built-in switches whose transform lives in another module and is registered under the same name.
_TRANSFORM_SWITCHES = frozenset({"hed"})


def register_transform(name: str, transform: ImageTransform) -> None:
    """Make an image-only transform available as ``augment={name: True}`` (e.g. ``"hed"``)."""
    if name in {f.name for f in fields(AugmentConfig)} and name not in _TRANSFORM_SWITCHES:
        raise AugmentationError(f"{name!r} is a built-in augmentation setting and cannot be re-registered")
    _EXTRA_TRANSFORMS[name] = transform


def _register_builtin_transforms() -> None:
    """Register the HED stain jitter behind the built-in ``hed`` switch (imported lazily: no cycle)."""
    if "hed" not in _EXTRA_TRANSFORMS:
        from .stain_augment import hed_transform

        _EXTRA_TRANSFORMS["hed"] = hed_transform


def available_transforms() -> list[str]:
    """Names of registered extra image transforms."""
    return sorted(_EXTRA_TRANSFORMS)


@dataclass
class AugmentConfig:
    """Augmentation switches and ranges.

    Attributes
    ----------
    flip : random flips along every spatial axis.
    rot90 : random 90-degree rotations in the Y-X plane (only 0/180 degrees for non-square patches).
    intensity : random gain, offset, gamma and noise on the image.
    hed : HED stain jitter (needs a transform registered under ``"hed"``).
    gain : (low, high) multiplicative gain, drawn log-uniformly per sample and channel.
    offset : additive offset drawn uniformly in [-offset, offset] per sample and channel.
    gamma : (low, high) gamma, drawn log-uniformly per sample, applied on the patch's own range.
    noise : maximal standard deviation of additive Gaussian noise (drawn uniformly per sample).
    p : probability of each intensity component per sample.
    extra : other registered transforms switched on by name.
    """

    flip: bool = True
    rot90: bool = True
    intensity: bool = True
    hed: bool = False
    # wide on purpose: objects in another image (or next to a saturated one) are often 1.5x dimmer
    gain: tuple[float, float] = (0.6, 1.6)
    offset: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.5)
    noise: float = 0.05
    p: float = 0.5
    extra: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.gain = (float(self.gain[0]), float(self.gain[1]))
        self.gamma = (float(self.gamma[0]), float(self.gamma[1]))
        if not 0 < self.gain[0] <= self.gain[1]:
            raise AugmentationError(f"augment gain must be 0 < low <= high, got {self.gain}")
        if not 0 < self.gamma[0] <= self.gamma[1]:
            raise AugmentationError(f"augment gamma must be 0 < low <= high, got {self.gamma}")
        if self.offset < 0 or self.noise < 0 or not 0 <= self.p <= 1:
            raise AugmentationError("augment offset and noise must be >= 0 and p in [0, 1]")
        wanted = [n for n, on in self.extra.items() if on]
        if self.hed:
            _register_builtin_transforms()
            wanted.append("hed")
        missing = [n for n in wanted if n not in _EXTRA_TRANSFORMS]
        if missing:
            raise AugmentationError(
                f"augmentation(s) {missing} are not available; registered: {available_transforms() or 'none'}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AugmentConfig:
        """Build from a settings dict; keys that are neither built in nor registered raise an error."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = dict(data.pop("extra", {}) or {})
        for key in list(data):
            if key not in known:
                if key in _EXTRA_TRANSFORMS:
                    extra[key] = bool(data.pop(key))
                else:
                    raise AugmentationError(
                        f"unknown augmentation {key!r}; known: {sorted(known | set(_EXTRA_TRANSFORMS))}"
                    )
        return cls(**data, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d["gain"], d["gamma"] = list(self.gain), list(self.gamma)
        d.update(self.extra)
        return d


def flip(x: Any, axes: tuple[int, ...]) -> Any:
    """Flip a torch tensor or numpy array along ``axes``."""
    if not axes:
        return x
    if isinstance(x, torch.Tensor):
        return torch.flip(x, dims=axes)
    return np.flip(x, axis=axes)


def rot90(x: Any, k: int, axes: tuple[int, int] = (-2, -1)) -> Any:
    """Rotate a torch tensor or numpy array by ``k`` quarter turns in the plane ``axes``."""
    k %= 4
    if k == 0:
        return x
    if isinstance(x, torch.Tensor):
        return torch.rot90(x, k, dims=axes)
    return np.rot90(x, k, axes=axes)


class Augmenter:
    """Random augmentations of a batch dict (see :class:`AugmentConfig`).

    Parameters
    ----------
    config : settings (an :class:`AugmentConfig` or its dict form).
    spatial_dims : 2 or 3; the trailing axes of every per-pixel array.
    rng : seed or numpy generator for all random parameters.
    """

    def __init__(
        self,
        config: AugmentConfig | Mapping[str, Any] | None,
        spatial_dims: int,
        rng: int | np.random.Generator | None = 0,
    ) -> None:
        self.config = config if isinstance(config, AugmentConfig) else AugmentConfig.from_dict(config)
        if spatial_dims not in (2, 3):
            raise AugmentationError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    def draw_geometry(self, batch_size: int, square: bool) -> np.ndarray:
        """Per-sample geometry: column 0 = quarter turns, then one flip flag per spatial axis."""
        geo = np.zeros((batch_size, 1 + self.spatial_dims), dtype=np.int64)
        if self.config.rot90:
            geo[:, 0] = self.rng.integers(0, 4, batch_size) if square else 2 * self.rng.integers(0, 2, batch_size)
        if self.config.flip:
            geo[:, 1:] = self.rng.integers(0, 2, (batch_size, self.spatial_dims))
        return geo

    def apply_geometry(self, x: Any, geometry: np.ndarray) -> Any:
        """Apply per-sample geometry to a batched per-pixel array (B, ..., *spatial)."""
        nd = self.spatial_dims
        out = []
        for i in range(x.shape[0]):
            xi = x[i]
            axes = tuple(a - nd for a in range(nd) if geometry[i, 1 + a])
            xi = rot90(flip(xi, axes), int(geometry[i, 0]))
            out.append(xi)
        if isinstance(x, torch.Tensor):
            return torch.stack(out)
        return np.ascontiguousarray(np.stack(out))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Augment a batch in place of its arrays; adds ``geometry`` (B, 1 + spatial_dims).

        ``image`` is (B, C, *spatial); ``target``, ``instances`` and ``weight`` (when present) are
        (B, *spatial) or (B, K, *spatial). Returns a new dict with the same keys.
        """
        out = dict(batch)
        image = out["image"]
        was_numpy = isinstance(image, np.ndarray)
        b = image.shape[0]
        spatial = image.shape[-self.spatial_dims:]
        geometry = self.draw_geometry(b, square=spatial[-1] == spatial[-2])
        if geometry.any():
            for key in SPATIAL_KEYS:
                if key in out and out[key] is not None:
                    out[key] = self.apply_geometry(out[key], geometry)
        out["geometry"] = geometry
        img = torch.from_numpy(np.ascontiguousarray(out["image"])) if was_numpy else out["image"]
        if self.config.intensity:
            img = self._intensity(img)
        for name, on in self.config.extra.items():
            if on:
                img = _EXTRA_TRANSFORMS[name](img, self.rng)
        if self.config.hed:
            img = _EXTRA_TRANSFORMS["hed"](img, self.rng)
        out["image"] = img.numpy() if was_numpy else img
        return out

    def _intensity(self, img: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b, c = img.shape[:2]
        rng = self.rng
        dev, dt = img.device, img.dtype

        def tensor(a: np.ndarray) -> torch.Tensor:
            # (B,) -> (B, 1, 1, ...) and (B, C) -> (B, C, 1, ...) so factors broadcast over pixels
            a = a.reshape(a.shape + (1,) * (img.ndim - a.ndim))
            return torch.as_tensor(a.astype(np.float32), device=dev, dtype=dt)

        use = rng.random((b, 4)) < cfg.p  # which of gamma, gain, offset, noise each sample gets
        if use[:, 0].any():
            # gamma on the patch's own [min, max] per channel so no value is clipped
            g = np.where(use[:, 0], np.exp(rng.uniform(np.log(cfg.gamma[0]), np.log(cfg.gamma[1]), b)), 1.0)
            dims = tuple(range(2, img.ndim))
            lo = img.amin(dim=dims, keepdim=True)
            hi = img.amax(dim=dims, keepdim=True)
            span = (hi - lo).clamp_min(1e-6)
            img = lo + span * ((img - lo) / span).clamp(0, 1).pow(tensor(g))
        if use[:, 1].any():
            gain = np.exp(rng.uniform(np.log(cfg.gain[0]), np.log(cfg.gain[1]), (b, c)))
            img = img * tensor(np.where(use[:, 1:2], gain, 1.0))
        if use[:, 2].any():
            off = rng.uniform(-cfg.offset, cfg.offset, (b, c))
            img = img + tensor(np.where(use[:, 2:3], off, 0.0))
        if use[:, 3].any() and cfg.noise > 0:
            sd = np.where(use[:, 3], rng.uniform(0, cfg.noise, b), 0.0)
            # the noise itself is drawn on the device (cheap on a GPU), seeded from the numpy generator
            gen = torch.Generator(device=dev)
            gen.manual_seed(int(rng.integers(2**62)))
            noise = torch.randn(tuple(img.shape), generator=gen, device=dev, dtype=dt)
            img = img + noise * tensor(sd)
        return img
