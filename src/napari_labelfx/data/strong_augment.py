"""Strong augmentation for consistency training (FixMatch, RPG+): RandAugment-style ops + CutOut.

Each sample gets ``n_ops`` operations drawn uniformly from intensity ops (autocontrast, brightness,
contrast, equalize, gamma, posterize, solarize, sharpness, blur, noise, identity) and geometric ops
(rotate, shear, translate), each with a random magnitude up to ``magnitude``, then one CutOut square.

* Intensity ops touch the image only and work on each sample's own value range, so they fit any
  normalisation.
* Geometric ops are composed into one affine map per sample, applied in the Y-X plane to the image
  (bilinear) and to the target and any per-pixel maps (nearest, so labels stay labels). Pixels that
  come from outside the patch become unknown (IGNORE_INDEX / MULTILABEL_IGNORE, weight 0).
* CutOut fills a square of the image with the sample's mean and sets its label to background
  (class 0; multi-label: no class), since nothing of the object is visible there any more.

Volumes (B, C, Z, Y, X) are handled by moving the Z axis into the channel axis: the same in-plane
map applies to every slice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE
from .errors import AugmentationError

INTENSITY_OPS = (
    "identity", "autocontrast", "brightness", "contrast", "equalize", "gamma", "posterize",
    "solarize", "sharpness", "blur", "noise",
)
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
ALL_OPS = INTENSITY_OPS + GEOMETRIC_OPS

#: Ranges at magnitude 1: rotation in degrees, shear factor, translation as a fraction of the edge.
MAX_ROTATE_DEG = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.3


@dataclass
class StrongAugmentConfig:
    """Settings of :func:`strong_augment`.

    Attributes
    ----------
    n_ops : operations per sample (RandAugment's N).
    magnitude : upper bound of the per-op magnitude in [0, 1] (each op draws uniformly below it).
    cutout : largest CutOut edge as a fraction of the smaller patch edge (0 = no CutOut).
    geometric : allow geometric ops (else intensity ops only).
    """

    n_ops: int = 2
    magnitude: float = 1.0
    cutout: float = 0.5
    geometric: bool = True

    def __post_init__(self) -> None:
        if self.n_ops < 0:
            raise AugmentationError(f"strong augmentation n_ops must be >= 0, got {self.n_ops}")
        if not 0 <= self.magnitude <= 1:
            raise AugmentationError(f"strong augmentation magnitude must be in [0, 1], got {self.magnitude}")
        if not 0 <= self.cutout <= 1:
            raise AugmentationError(f"strong augmentation cutout must be in [0, 1], got {self.cutout}")


@dataclass
class StrongView:
    """A strongly augmented batch.

    Attributes
    ----------
    image : (B, C, *spatial) float.
    target : same layout as the input target, geometry applied, CutOut = background, outside = unknown.
    weight : (B, *spatial) float per-pixel map (input weight or ones), geometry applied, outside = 0.
    theta : (B, 2, 3) affine maps (output -> input, normalised coordinates) used.
    cutout : (B, Y, X) bool CutOut regions.
    ops : names of the operations applied to each sample.
    """

    image: torch.Tensor
    target: torch.Tensor | None
    weight: torch.Tensor
    theta: torch.Tensor
    cutout: torch.Tensor
    ops: list[list[str]]


# -- geometry --------------------------------------------------------------------------------------------
def affine_theta(rotate_deg: float, shear_x: float, shear_y: float, tx: float, ty: float,
                 size: tuple[int, int]) -> np.ndarray:
    """(2, 3) ``grid_sample`` matrix (output -> input, align_corners=False) of an in-plane map.

    The map is built in pixel units about the patch centre (so angles are true angles on non-square
    patches); ``tx``, ``ty`` are translations in pixels of the content.
    """
    h, w = size
    a = math.radians(rotate_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    shear = np.array([[1.0, shear_x], [shear_y, 1.0]])
    fwd = rot @ shear  # content map in (x, y) pixel coordinates about the centre
    inv = np.linalg.inv(fwd)
    # input = inv @ (output - t); normalised x_n = 2 x / w (about the centre)
    scale = np.diag([w / 2.0, h / 2.0])
    m = np.linalg.inv(scale) @ inv @ scale
    t = -np.linalg.inv(scale) @ inv @ np.array([tx, ty])
    return np.concatenate([m, t[:, None]], axis=1).astype(np.float32)


def _fold(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(B, ..., Y, X) -> (B, prod(...), Y, X), remembering the shape."""
    shape = tuple(x.shape)
    return x.reshape(shape[0], -1, shape[-2], shape[-1]), shape


def warp(x: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """Apply per-sample affine maps in the Y-X plane to (B, ..., Y, X) float data (zeros outside)."""
    folded, shape = _fold(x.float())
    grid = F.affine_grid(theta.to(folded.device, torch.float32), list(folded.shape), align_corners=False)
    out = F.grid_sample(folded, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.reshape(shape)


def warp_target(target: torch.Tensor, theta: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Nearest-warp a class-index (B, *spatial) or multi-hot (B, K, *spatial) target; outside = unknown."""
    inside = warp(torch.ones_like(target, dtype=torch.float32), theta, "nearest") > 0.5
    moved = warp(target.float(), theta, "nearest").round()
    if multilabel:
        return torch.where(inside, moved, torch.full_like(moved, MULTILABEL_IGNORE)).to(target.dtype)
    return torch.where(inside, moved, torch.full_like(moved, IGNORE_INDEX)).to(target.dtype)


# -- intensity -------------------------------------------------------------------------------------------
def _range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = x.amin(), x.amax()
    return lo, (hi - lo).clamp_min(1e-6)


def _blur3(x: torch.Tensor) -> torch.Tensor:
    """3x3 box blur in the Y-X plane of (C, ..., Y, X)."""
    folded = x.reshape(1, -1, x.shape[-2], x.shape[-1])
    return F.avg_pool2d(F.pad(folded, (1, 1, 1, 1), mode="replicate"), 3, 1).reshape(x.shape)


def _intensity_op(x: torch.Tensor, op: str, m: float, rng: np.random.Generator) -> torch.Tensor:
    """One intensity op on one sample (C, *spatial) at magnitude ``m`` in [0, 1]."""
    lo, span = _range(x)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if op == "identity":
        return x
    if op == "autocontrast":  # stretch each channel to the sample's full range
        dims = tuple(range(1, x.ndim))
        clo, chi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        return lo + span * (x - clo) / (chi - clo).clamp_min(1e-6)
    if op == "brightness":
        return x + sign * 0.3 * m * span
    if op == "contrast":
        mean = x.mean()
        return mean + (x - mean) * (1.0 + sign * 0.9 * m)
    if op == "equalize":  # rank transform per channel = histogram equalisation
        flat = x.reshape(x.shape[0], -1)
        ranks = flat.argsort(dim=1).argsort(dim=1).float() / max(1, flat.shape[1] - 1)
        return (lo + span * ranks).reshape(x.shape)
    if op == "gamma":
        g = math.exp(sign * m * math.log(2.0))
        return lo + span * ((x - lo) / span).clamp(0, 1).pow(g)
    if op == "posterize":  # 8 -> 2 bits as the magnitude grows
        levels = 2 ** max(1, int(round(8 - 6 * m)))
        return lo + span * torch.floor((x - lo) / span * (levels - 1) + 0.5) / (levels - 1)
    if op == "solarize":
        thr = lo + span * (1.0 - m)
        return torch.where(x >= thr, lo + span - (x - lo), x)
    if op == "sharpness":
        return x + 2.0 * m * (x - _blur3(x))
    if op == "blur":
        return x + m * (_blur3(x) - x)
    if op == "noise":
        return x + torch.randn(x.shape, generator=None, device=x.device, dtype=x.dtype) * (0.1 * m) * span
    raise AugmentationError(f"unknown intensity op {op!r}")


# -- the augmentation ------------------------------------------------------------------------------------
def strong_augment(
    image: torch.Tensor,
    target: torch.Tensor | None,
    multilabel: bool,
    rng: np.random.Generator,
    config: StrongAugmentConfig | None = None,
    weight: torch.Tensor | None = None,
) -> StrongView:
    """Strongly augment a batch (see the module docstring).

    Parameters
    ----------
    image : (B, C, *spatial) float, spatial = (Y, X) or (Z, Y, X).
    target : (B, *spatial) int64 class indices or (B, K, *spatial) uint8 multi-hot, or None.
    multilabel : the target layout.
    rng : numpy generator for every random choice.
    weight : optional (B, *spatial) per-pixel map moved like the target (e.g. pseudo-label weights).

    Raises
    ------
    AugmentationError
        For an image that is not (B, C, Y, X) or (B, C, Z, Y, X), or a target of another size.
    """
    cfg = config or StrongAugmentConfig()
    if image.ndim not in (4, 5):
        raise AugmentationError(f"strong augmentation expects (B, C, Y, X) or (B, C, Z, Y, X), got {tuple(image.shape)}")
    b = image.shape[0]
    spatial = tuple(image.shape[2:])
    size = (int(spatial[-2]), int(spatial[-1]))
    if target is not None:
        want = (b, *spatial) if not multilabel else None
        if (want is not None and tuple(target.shape) != want) or (multilabel and (
                target.ndim != image.ndim or tuple(target.shape[2:]) != spatial or target.shape[0] != b)):
            raise AugmentationError(
                f"strong augmentation target shape {tuple(target.shape)} does not fit image {tuple(image.shape)}"
            )
    ops_pool = ALL_OPS if cfg.geometric else INTENSITY_OPS
    images, thetas, all_ops = [], [], []
    for i in range(b):
        ops = [ops_pool[j] for j in rng.integers(0, len(ops_pool), cfg.n_ops)]
        all_ops.append(ops)
        x = image[i].float()
        rot = shx = shy = tx = ty = 0.0
        for op in ops:
            m = float(rng.uniform(0.0, cfg.magnitude))
            sign = 1.0 if rng.random() < 0.5 else -1.0
            if op == "rotate":
                rot += sign * m * MAX_ROTATE_DEG
            elif op == "shear_x":
                shx += sign * m * MAX_SHEAR
            elif op == "shear_y":
                shy += sign * m * MAX_SHEAR
            elif op == "translate_x":
                tx += round(sign * m * MAX_TRANSLATE * size[1])
            elif op == "translate_y":
                ty += round(sign * m * MAX_TRANSLATE * size[0])
            else:
                x = _intensity_op(x, op, m, rng)
        images.append(x)
        thetas.append(affine_theta(rot, shx, shy, tx, ty, size))
    img = torch.stack(images).to(image.dtype)
    theta = torch.from_numpy(np.stack(thetas)).to(image.device)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=image.device)
    moved = bool((theta - identity).abs().max() > 1e-7)
    w = weight.float() if weight is not None else torch.ones((b, *spatial), device=image.device)
    tgt = target
    if moved:
        # the image's own outside stays at the sample's minimum rather than a hard 0 edge
        lo = img.flatten(1).amin(dim=1).reshape((b,) + (1,) * (img.ndim - 1))
        img = warp(img - lo, theta, "bilinear") + lo
        w = warp(w, theta, "nearest")
        if tgt is not None:
            tgt = warp_target(tgt, theta, multilabel)
    cut = torch.zeros((b, *size), dtype=torch.bool, device=image.device)
    if cfg.cutout > 0:
        for i in range(b):
            edge = int(round(rng.uniform(0.0, cfg.cutout) * min(size)))
            if edge < 1:
                continue
            cy, cx = int(rng.integers(size[0])), int(rng.integers(size[1]))
            y0, x0 = max(0, cy - edge // 2), max(0, cx - edge // 2)
            cut[i, y0:cy + (edge + 1) // 2, x0:cx + (edge + 1) // 2] = True
        if cut.any():
            img = img.clone()
            mean = img.flatten(1).mean(dim=1)
            for i in range(b):
                img[i][..., cut[i]] = mean[i].to(img.dtype)
            if tgt is not None:
                tgt = tgt.clone()
                for i in range(b):
                    if multilabel:
                        tgt[i][..., cut[i]] = 0
                    else:
                        tgt[i][..., cut[i]] = 0
                w = w.clone()
                for i in range(b):
                    w[i][..., cut[i]] = 1.0  # background is certain where the content was removed
    return StrongView(img, tgt, w, theta, cut, all_ops)
