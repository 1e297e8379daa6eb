"""HED-light stain jitter (Tellez et al.; used by Stain-AgLr) as a training augmentation.

An RGB image in [0, 1] is deconvolved into haematoxylin, eosin and DAB "stain" channels
(Ruifrok & Johnston colour deconvolution), each stain channel ``v`` is perturbed as
``v * (1 + sigma) + beta`` with ``sigma, beta ~ U(-0.05, 0.05)`` drawn per image and channel, and the
result is converted back to RGB and clipped to [0, 1]. Images whose mean intensity is outside
[0.15, 0.85] (mostly background, or nearly black) are returned unchanged.

Units (an assumption, exposed as ``od_unit``): the additive ``beta`` is in natural-log optical
density, ``OD = -ln(I)``, as in the scikit-image versions of the HED-light papers' time. Current
scikit-image divides OD by ``ln(1e6)`` before jittering; there ``beta = 0.05`` means an OD shift of
0.69, which recolours a slide strongly (checked by eye on CPM-15 H&E) - not "light". Pass
``od_unit=np.log(1e6)`` to get that behaviour. Negative stain values are not clipped (scikit-image
clips them); keeping them makes the transform exactly invertible, so a zero perturbation returns
the input (intensities are floored at ``od_eps`` = 1e-6 before the logarithm).

Random parameters come from a numpy generator (reproducible and device-independent); the arithmetic
runs in numpy for ``(3, ...)`` arrays and in torch, on the tensor's device, for ``(B, 3, ...)`` batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import AugmentationError

#: Rows: optical-density RGB vectors of haematoxylin, eosin and DAB (Ruifrok & Johnston 2001).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])


@dataclass(frozen=True)
class HEDJitter:
    """HED-light jitter settings; call it on an image or a batch.

    Attributes
    ----------
    sigma : multiplicative perturbation ``sigma ~ U(-sigma, sigma)`` per image and stain.
    bias : additive perturbation ``beta ~ U(-bias, bias)`` per image and stain.
    mean_range : images whose mean (in [0, 1]) lies outside this closed interval are not changed.
    stain_matrix : (3, 3) rows = OD vectors of H, E, DAB.
    od_eps : floor of intensities before the logarithm.
    od_unit : optical density of one stain unit (``beta`` is in these units): 1 = natural-log OD.
    """

    sigma: float = 0.05
    bias: float = 0.05
    mean_range: tuple[float, float] = (0.15, 0.85)
    stain_matrix: tuple[tuple[float, ...], ...] = tuple(map(tuple, RGB_FROM_HED))
    od_eps: float = 1e-6
    od_unit: float = 1.0

    def __post_init__(self) -> None:
        if self.sigma < 0 or self.bias < 0:
            raise AugmentationError(f"HED jitter sigma and bias must be >= 0, got {self.sigma}, {self.bias}")
        lo, hi = self.mean_range
        if not 0 <= lo <= hi <= 1:
            raise AugmentationError(f"HED jitter mean_range must satisfy 0 <= low <= high <= 1, got {self.mean_range}")
        m = np.asarray(self.stain_matrix, dtype=np.float64)
        if m.shape != (3, 3) or abs(np.linalg.det(m)) < 1e-8:
            raise AugmentationError("HED jitter stain_matrix must be an invertible 3x3 matrix")
        if not 0 < self.od_eps < 1:
            raise AugmentationError(f"HED jitter od_eps must be in (0, 1), got {self.od_eps}")
        if not self.od_unit > 0:
            raise AugmentationError(f"HED jitter od_unit must be > 0, got {self.od_unit}")

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``(sigmas, betas)``, each float64 (n, 3), for n images."""
        sigmas = rng.uniform(-self.sigma, self.sigma, (n, 3))
        betas = rng.uniform(-self.bias, self.bias, (n, 3))
        return sigmas, betas

    def __call__(self, image: Any, rng: np.random.Generator | int | None = None) -> Any:
        """Jitter a numpy ``(3, ...)`` image or a torch ``(B, 3, ...)`` batch (floats in [0, 1])."""
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        if type(image).__module__.startswith("torch"):
            sigmas, betas = self.draw(gen, int(image.shape[0]) if image.ndim else 0)
            return perturb_hed_torch(image, sigmas, betas, self)
        sigmas, betas = self.draw(gen, 1)
        return perturb_hed(image, sigmas[0], betas[0], self)


def _matrices(cfg: HEDJitter) -> tuple[np.ndarray, np.ndarray, float]:
    rgb_from_hed = np.asarray(cfg.stain_matrix, dtype=np.float64)
    return np.linalg.inv(rgb_from_hed), rgb_from_hed, float(cfg.od_unit)


def _in_range(mean: float, cfg: HEDJitter) -> bool:
    return cfg.mean_range[0] <= mean <= cfg.mean_range[1]


def perturb_hed(
    image: np.ndarray, sigmas: np.ndarray, betas: np.ndarray, cfg: HEDJitter = HEDJitter()
) -> np.ndarray:
    """Apply given HED perturbations to one numpy RGB image ``(3, ...)`` in [0, 1].

    Parameters
    ----------
    image : float array, channels first (3, H, W) or (3, Z, Y, X); values outside [0, 1] are clipped.
    sigmas, betas : (3,) multiplicative and additive perturbations of H, E, DAB.
    cfg : stain matrix, units and the skip rule.

    Returns
    -------
    float32 array of the input's shape (the input itself, unchanged, when the skip rule applies).
    """
    image = np.asarray(image)
    if image.ndim < 2 or image.shape[0] != 3:
        raise AugmentationError(f"HED jitter needs an RGB image with 3 channels first, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise AugmentationError(f"HED jitter needs a float image in [0, 1], got dtype {image.dtype}")
    if not _in_range(float(image.mean()), cfg):
        return image
    hed_from_rgb, rgb_from_hed, unit = _matrices(cfg)
    s = np.asarray(sigmas, dtype=np.float64).reshape(3)
    b = np.asarray(betas, dtype=np.float64).reshape(3)
    pix = np.clip(image.reshape(3, -1).astype(np.float32), cfg.od_eps, 1.0)
    od = -np.log(pix)  # (3, N)
    # stains = od^T @ hed_from_rgb / unit; perturbed; back: od' = stains' @ rgb_from_hed * unit.
    # The scale and shift are folded into one 3x3 matrix and one offset per channel.
    m = (hed_from_rgb * (1.0 + s)[None, :]) @ rgb_from_hed  # od' (row) = od (row) @ m + shift
    shift = unit * (b @ rgb_from_hed)
    od2 = m.T.astype(np.float32) @ od + shift.astype(np.float32)[:, None]
    out = np.exp(-od2)
    np.clip(out, 0.0, 1.0, out=out)
    return out.reshape(image.shape).astype(np.float32, copy=False)


def perturb_hed_torch(batch: Any, sigmas: np.ndarray, betas: np.ndarray, cfg: HEDJitter = HEDJitter()) -> Any:
    """Apply given per-image HED perturbations ``(B, 3)`` to a torch batch ``(B, 3, ...)`` in [0, 1].

    Images failing the skip rule pass through unchanged; the others are clipped to [0, 1] first.
    """
    import torch

    if batch.ndim < 3 or batch.shape[1] != 3:
        raise AugmentationError(f"HED jitter needs an RGB batch (B, 3, ...), got shape {tuple(batch.shape)}")
    if not torch.is_floating_point(batch):
        raise AugmentationError(f"HED jitter needs float images in [0, 1], got dtype {batch.dtype}")
    n = batch.shape[0]
    sig = np.asarray(sigmas, dtype=np.float64).reshape(n, 3)
    bet = np.asarray(betas, dtype=np.float64).reshape(n, 3)
    if n == 0:
        return batch
    hed_from_rgb, rgb_from_hed, unit = _matrices(cfg)
    means = batch.reshape(n, -1).mean(dim=1).detach().cpu().numpy()
    keep = np.array([_in_range(float(v), cfg) for v in means])
    if not keep.any():
        return batch
    # per image: od'(row) = od(row) @ m_i + shift_i, m_i = hed_from_rgb diag(1 + s_i) rgb_from_hed
    mats = np.einsum("ij,bj,jk->bik", hed_from_rgb, 1.0 + sig, rgb_from_hed)
    shifts = unit * (bet @ rgb_from_hed)
    dev, dt = batch.device, batch.dtype
    flat = batch.reshape(n, 3, -1).clamp(cfg.od_eps, 1.0)
    od = -torch.log(flat)
    m_t = torch.as_tensor(mats.transpose(0, 2, 1), dtype=dt, device=dev)  # (B, 3, 3) acting on columns
    od2 = torch.bmm(m_t, od) + torch.as_tensor(shifts, dtype=dt, device=dev)[:, :, None]
    out = torch.exp(-od2).clamp_(0.0, 1.0).reshape(batch.shape)
    keep_t = torch.as_tensor(keep, device=dev).reshape((n,) + (1,) * (batch.ndim - 1))
    return torch.where(keep_t, out, batch)


def hed_jitter(image: np.ndarray, rng: np.random.Generator | int | None = None, **settings: Any) -> np.ndarray:
    """HED-light jitter of one numpy image ``(3, ...)`` in [0, 1] (``settings``: :class:`HEDJitter` fields)."""
    return HEDJitter(**settings)(image, rng)


def hed_jitter_torch(batch: Any, rng: np.random.Generator | int | None = None, **settings: Any) -> Any:
    """HED-light jitter of a torch batch ``(B, 3, ...)`` in [0, 1] (``settings``: :class:`HEDJitter` fields)."""
    return HEDJitter(**settings)(batch, rng)


#: Default-settings transform in the ``Augmenter``'s ``ImageTransform`` form ``(batch, rng) -> batch``.
hed_transform = HEDJitter()
