"""Shared machinery of the stain-matrix normalizers (Macenko, Vahadane).

Both model an RGB pixel by Beer-Lambert: ``OD = -ln((I + 1) / Io) = HE @ c`` with ``HE`` the
(3, 2) matrix of unit optical-density vectors of haematoxylin and eosin (columns) and ``c >= 0``
their concentrations. Normalisation estimates ``HE`` and the 99th-percentile concentrations
``maxC`` of an image, scales its concentrations by ``maxC_ref / maxC`` and re-renders them with the
reference vectors: ``out = Io * exp(-HE_ref @ (c * maxC_ref / maxC))``, clipped to 0-255 and rounded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np

from ._common import StainError, StainNormalizer, check_rgb, is_tensor, od_lut
from .lab import as_cv_image, transform

#: Reference H&E optical-density vectors (columns H, E; rows R, G, B) from Macenko et al.'s code.
HE_REF = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
#: Reference 99th-percentile concentrations of H and E that go with :data:`HE_REF`.
MAX_C_REF = np.array([1.9705, 1.0308])


@dataclass(frozen=True)
class StainEstimate:
    """Stain statistics of one image.

    Attributes
    ----------
    stain_matrix : float64 (3, 2): unit OD vectors of haematoxylin (column 0) and eosin (column 1).
    max_concentrations : float64 (2,): 99th percentile of each stain's concentration.
    n_tissue : number of pixels the stain vectors were estimated from.
    """

    stain_matrix: np.ndarray
    max_concentrations: np.ndarray
    n_tissue: int


class ODWork(NamedTuple):
    """Prepared image: the RGB pixels and their optical density (numpy or torch, channels last)."""

    rgb: Any
    od: Any


def percentiles_torch(x: Any, qs: Any) -> Any:
    """Percentiles of a tensor (flattened) with numpy's linear interpolation, on its device.

    ``torch.quantile`` refuses more than 2^24 elements; ``kthvalue`` has no such limit.
    """
    import torch

    x = x.reshape(-1)
    n = x.numel()
    if n == 0:
        raise StainError("cannot take percentiles of an empty set of pixels")
    out = []
    for q in np.atleast_1d(np.asarray(qs, dtype=np.float64)):
        pos = q / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        frac = pos - lo
        v = x.kthvalue(lo + 1).values
        if frac > 0 and lo + 1 < n:
            v = v + frac * (x.kthvalue(lo + 2).values - v)
        out.append(v)
    return torch.stack(out)


def check_stain_matrix(matrix: Any, what: str) -> np.ndarray:
    """Return a (3, 2) float64 matrix with unit, non-parallel columns, or raise :class:`StainError`."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 2) or not np.all(np.isfinite(m)):
        raise StainError(f"{what}: expected a finite (3, 2) matrix (columns H, E), got shape {m.shape}")
    norms = np.linalg.norm(m, axis=0)
    if np.any(norms < 1e-8):
        raise StainError(f"{what}: a stain vector is zero")
    m = m / norms
    if abs(float(m[:, 0] @ m[:, 1])) > 0.9999:
        raise StainError(f"{what}: the two stain vectors are parallel, so the stains cannot be separated")
    return m


class StainMatrixNormalizer(StainNormalizer):
    """Base of Macenko and Vahadane: reference stain matrix, rendering, separation.

    Subclasses implement ``_estimate`` (-> :class:`StainEstimate`) and ``_concentrations``.
    """

    def __init__(
        self,
        io: float,
        stain_matrix_ref: Any,
        max_c_ref: Any,
        backend: str = "numpy",
        device: Any = None,
    ) -> None:
        from ._common import resolve_backend

        self.io = float(io)
        self._lut = od_lut(self.io)
        self.stain_matrix_ref = check_stain_matrix(stain_matrix_ref, "reference stain matrix")
        self.max_c_ref = np.asarray(max_c_ref, dtype=np.float64)
        if self.max_c_ref.shape != (2,) or not np.all(self.max_c_ref > 0):
            raise StainError(f"reference max concentrations must be 2 positive numbers, got {max_c_ref!r}")
        self.backend, self.device = resolve_backend(backend, device)

    # -- hooks ------------------------------------------------------------------------------------
    def _concentrations(self, work: ODWork, stain_matrix: np.ndarray) -> Any:
        """Concentrations ``(..., 2)`` of every pixel for the given stain matrix."""
        raise NotImplementedError

    @property
    def _reference_ready(self) -> bool:
        return True  # the built-in reference (HE_REF, MAX_C_REF) applies until fit() replaces it

    def _set_reference(self, stats: StainEstimate) -> None:
        self.stain_matrix_ref = stats.stain_matrix.copy()
        self.max_c_ref = stats.max_concentrations.copy()

    def _prepare(self, rgb: Any) -> ODWork:
        if is_tensor(rgb):
            import torch

            od = -torch.log((rgb.float() + 1.0) / self.io)
            return ODWork(rgb, od)
        # 8-bit input: a 256-entry table instead of a logarithm per pixel and channel
        return ODWork(rgb, cv2.LUT(as_cv_image(rgb), self._lut.reshape(1, 256)).reshape(rgb.shape))

    def _scales(self, stats: StainEstimate, name: str = "image") -> np.ndarray:
        if not np.all(stats.max_concentrations > 1e-6):
            raise StainError(f"{name}: a stain has no signal (99th-percentile concentration <= 0)")
        return self.max_c_ref / stats.max_concentrations

    def _apply(self, work: ODWork, stats: StainEstimate) -> Any:
        conc = self._concentrations(work, stats.stain_matrix)
        # out = Io exp(-HE_ref @ diag(s) @ c): one per-pixel matrix, one exp, one scaled cast
        m = -(self.stain_matrix_ref * self._scales(stats)[None, :])
        return self._render(conc, m)

    def _render(self, x: Any, m: np.ndarray) -> Any:
        """``Io * exp(x @ m.T)`` as rounded, saturated uint8 (numpy or torch)."""
        if is_tensor(x):
            import torch

            mt = torch.as_tensor(m.T, dtype=x.dtype, device=x.device)
            return (self.io * torch.exp(x @ mt)).clamp_(0, 255).round_().to(torch.uint8)
        log_out = transform(x, m)
        shape = log_out.shape
        cv_img = as_cv_image(log_out)
        cv2.exp(cv_img, dst=cv_img)
        # exp() > 0, so convertScaleAbs is exactly "scale by Io, round, saturate to 0-255"
        return cv2.convertScaleAbs(cv_img, alpha=self.io).reshape(shape)

    # -- public API -------------------------------------------------------------------------------
    def estimate(self, image: Any, name: str = "image") -> StainEstimate:
        """Stain vectors and 99th-percentile concentrations of an image (uint8 RGB ``(H, W, 3)``)."""
        return self._estimate(self._prepare(self._checked(image, name)), name)

    def separate(self, image: Any, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """Haematoxylin and eosin concentration maps of an image, from its own stain vectors.

        Parameters
        ----------
        image : uint8 RGB ``(H, W, 3)``.
        name : how the image is called in error messages.

        Returns
        -------
        (h, e) : float32 ``(H, W)`` concentrations (optical-density units; 0 = no stain).
        """
        work = self._prepare(self._to_work_input(check_rgb(image, name)))
        stats = self._estimate(work, name)
        conc = self._from_work_output(self._concentrations(work, stats.stain_matrix))
        conc = np.asarray(conc, dtype=np.float32)
        return np.ascontiguousarray(conc[..., 0]), np.ascontiguousarray(conc[..., 1])

    def stain_images(self, image: Any, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """RGB renderings of the normalised haematoxylin-only and eosin-only images (uint8).

        Each stain's scaled concentration is rendered alone with the reference vector, which is
        the usual colour-deconvolution view of where each stain sits.
        """
        work = self._prepare(self._to_work_input(check_rgb(image, name)))
        stats = self._estimate(work, name)
        conc = self._concentrations(work, stats.stain_matrix)
        scales = self._scales(stats, name)
        out = []
        for k in range(2):
            m = np.zeros((3, 2))
            m[:, k] = -self.stain_matrix_ref[:, k] * scales[k]
            out.append(self._from_work_output(self._render(conc, m)))
        return out[0], out[1]
