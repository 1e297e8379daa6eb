"""Reinhard colour transfer (Reinhard et al. 2001) in CIELAB, numpy/OpenCV and torch backends.

Each channel of the image's LAB is standardised with the image's own mean and standard deviation
and mapped to the reference's: ``lab' = (lab - mean) * std_ref / std + mean_ref``.

LAB here is **CIELAB (D65 white, sRGB input with its gamma curve)**, L in [0, 100], computed with
the exact CIE formulas (see :mod:`.lab`), not Ruderman's l-alpha-beta of the original paper:
CIELAB is what histology toolkits use for this method today, and it is the space the skin-tone ITA
is defined in, so one conversion serves both. Statistics are means and population standard
deviations over all pixels (background included), as in the common implementations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ._common import StainError, StainNormalizer, is_tensor, resolve_backend
from .lab import as_cv_image, lab_to_rgb_torch, lab_to_rgb_uint8, rgb_to_lab, rgb_to_lab_torch


@dataclass(frozen=True)
class LabStats:
    """Per-channel CIELAB mean and standard deviation (float64, (3,) each: L, a, b)."""

    means: np.ndarray
    stds: np.ndarray


class ReinhardNormalizer(StainNormalizer):
    """Reinhard normalizer: match per-channel CIELAB mean and std to a reference.

    Parameters
    ----------
    target_means, target_stds : optional reference LAB statistics (3 values each); otherwise call
        :meth:`fit` with a reference image.
    backend : ``"numpy"`` (numpy + OpenCV, CPU) or ``"torch"`` (any torch device).
    device : torch device for the torch backend (None: automatic).
    """

    method_name = "Reinhard normalizer"

    def __init__(
        self,
        target_means: Any = None,
        target_stds: Any = None,
        backend: str = "numpy",
        device: Any = None,
    ) -> None:
        self.backend, self.device = resolve_backend(backend, device)
        self.target: LabStats | None = None
        if (target_means is None) != (target_stds is None):
            raise StainError("give both target_means and target_stds, or neither")
        if target_means is not None:
            means = np.asarray(target_means, dtype=np.float64)
            stds = np.asarray(target_stds, dtype=np.float64)
            if means.shape != (3,) or stds.shape != (3,) or not np.all(stds >= 0):
                raise StainError("target_means and target_stds must be 3 numbers each (stds >= 0)")
            self.target = LabStats(means, stds)

    @property
    def _reference_ready(self) -> bool:
        return self.target is not None

    def _set_reference(self, stats: LabStats) -> None:
        self.target = stats

    def _prepare(self, rgb: Any) -> Any:
        if is_tensor(rgb):
            return rgb_to_lab_torch(rgb.float() / 255.0)
        return rgb_to_lab(rgb)

    def _estimate(self, work: Any, name: str) -> LabStats:
        if is_tensor(work):
            flat = work.reshape(-1, 3).double()
            return LabStats(flat.mean(0).cpu().numpy(), flat.std(0, correction=0).cpu().numpy())
        # OpenCV accumulates in double precision in one pass (population std)
        means, stds = cv2.meanStdDev(as_cv_image(work))
        return LabStats(means.reshape(3), stds.reshape(3))

    def _affine(self, stats: LabStats) -> np.ndarray:
        """(3, 4) per-channel LAB map ``lab' = s * lab + o``."""
        assert self.target is not None
        # a constant channel (std 0) has nothing to stretch: it is moved to the target mean
        scale = np.where(stats.stds > 1e-6, self.target.stds / np.maximum(stats.stds, 1e-6), 0.0)
        offset = self.target.means - scale * stats.means
        m = np.zeros((3, 4))
        m[np.arange(3), np.arange(3)] = scale
        m[:, 3] = offset
        return m

    def _apply(self, work: Any, stats: LabStats) -> Any:
        m = self._affine(stats)
        if is_tensor(work):
            import torch

            scale = torch.as_tensor(m.diagonal().copy(), dtype=work.dtype, device=work.device)
            offset = torch.as_tensor(m[:, 3], dtype=work.dtype, device=work.device)
            rgb = lab_to_rgb_torch(work * scale + offset)
            return (rgb * 255.0).round_().to(torch.uint8)
        # the LAB affine map is folded into the first matrix of the LAB -> RGB conversion
        return lab_to_rgb_uint8(work, affine=m)

    def lab_stats(self, image: Any, name: str = "image") -> LabStats:
        """CIELAB mean and std of an image (uint8 RGB ``(H, W, 3)``)."""
        return self._estimate(self._prepare(self._checked(image, name)), name)
