"""Macenko stain normalization (Macenko et al., ISBI 2009), numpy/OpenCV and torch backends.

Steps (parameters Io = 240, alpha = 1, beta = 0.15):

1. ``OD = -ln((I + 1) / Io)`` per channel.
2. Tissue = pixels whose OD is >= beta in every channel (transparent pixels are dropped).
3. Eigenvectors of the covariance of the tissue OD; keep the two leading ones, ``e1`` (largest
   eigenvalue) and ``e2``. Signs are fixed so that ``e1`` points into the positive OD octant
   (sum > 0) and ``e2`` has a non-negative red component; the result does not depend on ``e2``'s
   sign (it only mirrors the angles), but fixing it makes intermediate values reproducible.
4. Project tissue OD on (e1, e2); angle ``phi = atan2(<od, e2>, <od, e1>)``; the alpha and
   100 - alpha percentile angles give the two extreme stain directions
   ``v = cos(phi) e1 + sin(phi) e2``. The one with the larger red component is haematoxylin.
5. Concentrations of every pixel by least squares (``pinv(HE) @ OD``); their 99th percentiles
   ``maxC`` give the scale ``maxC_ref / maxC``; ``out = Io exp(-HE_ref @ C_scaled)``, clipped, rounded.

Steps 1 and 5 are linear in the OD, so the whole mapping of a pixel is
``Io * exp(-HE_ref @ diag(maxC_ref / maxC) @ pinv(HE) @ OD)``: one 3x3 matrix per image, applied in
a single pass (``cv2.transform`` on the CPU, a matmul in torch).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ._common import StainError, is_tensor, percentiles
from ._matrix import HE_REF, MAX_C_REF, ODWork, StainEstimate, StainMatrixNormalizer, percentiles_torch
from .lab import as_cv_image, transform


def _fix_signs(e1: np.ndarray, e2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if e1.sum() < 0:
        e1 = -e1
    if e2[0] < 0:
        e2 = -e2
    return e1, e2


def _vectors_from_angles(e1: np.ndarray, e2: np.ndarray, phi_lo: float, phi_hi: float) -> np.ndarray:
    """(3, 2) stain matrix (H, E columns) from the two extreme angles."""
    v_lo = np.cos(phi_lo) * e1 + np.sin(phi_lo) * e2
    v_hi = np.cos(phi_hi) * e1 + np.sin(phi_hi) * e2
    # haematoxylin absorbs red more strongly than eosin does
    h, e = (v_lo, v_hi) if v_lo[0] > v_hi[0] else (v_hi, v_lo)
    m = np.stack([h, e], axis=1)
    return m / np.linalg.norm(m, axis=0)


def _covariance(x: np.ndarray) -> np.ndarray:
    """Covariance (float64, 3x3) of the rows of a float32 (n, 3) array.

    Sums and second moments are taken block by block with BLAS products (torch's on the CPU is
    several times faster than numpy's for this tall-and-thin shape) and accumulated in float64,
    because float32 sums over 10^7 rows drift.
    """
    import torch

    n = x.shape[0]
    t = torch.from_numpy(x)
    second = np.zeros((3, 3))
    total = np.zeros(3)
    block = 1 << 20
    ones = torch.ones(1, min(n, block), dtype=t.dtype)
    for i in range(0, n, block):
        b = t[i : i + block]
        second += (b.T @ b).double().numpy()
        total += (ones[:, : b.shape[0]] @ b).double().numpy()[0]
    mean = total / n
    return (second - n * np.outer(mean, mean)) / max(n - 1, 1)


def _leading_axes(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    return _fix_signs(vecs[:, 2], vecs[:, 1])


class MacenkoNormalizer(StainMatrixNormalizer):
    """Macenko stain normalizer for uint8 RGB H&E images.

    Parameters
    ----------
    io : transmitted light intensity Io.
    alpha : angle percentile (alpha and 100 - alpha) that defines the extreme stain directions.
    beta : OD threshold; pixels with OD < beta in any channel are background.
    stain_matrix_ref : (3, 2) reference H and E OD vectors (columns); :data:`HE_REF` by default.
    max_c_ref : reference 99th-percentile concentrations; :data:`MAX_C_REF` by default.
    backend : ``"numpy"`` (numpy + OpenCV, CPU) or ``"torch"`` (any torch device).
    device : torch device for the torch backend (None: CUDA, then MPS, then CPU).
    min_tissue_pixels : fewer tissue pixels than this raise :class:`StainError` (no stain to measure).

    Examples
    --------
    >>> norm = MacenkoNormalizer().fit(reference_rgb)      # or keep the built-in reference
    >>> out = norm.normalize(rgb)                           # uint8 (H, W, 3)
    >>> h, e = norm.separate(rgb)                           # concentration maps
    >>> big = norm.normalize_tiled(slide_rgb, tile=2048)    # one set of statistics, many tiles
    """

    method_name = "Macenko normalizer"

    def __init__(
        self,
        io: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.15,
        stain_matrix_ref: Any = HE_REF,
        max_c_ref: Any = MAX_C_REF,
        backend: str = "numpy",
        device: Any = None,
        min_tissue_pixels: int = 100,
    ) -> None:
        super().__init__(io, stain_matrix_ref, max_c_ref, backend, device)
        if not 0 <= alpha < 50:
            raise StainError(f"alpha must be in [0, 50), got {alpha}")
        if not beta >= 0:
            raise StainError(f"beta must be >= 0, got {beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.min_tissue_pixels = int(min_tissue_pixels)
        # OD decreases with intensity, so "OD >= beta in every channel" is "I <= t in every channel"
        ok = np.nonzero(self._lut >= self.beta)[0]
        self._tissue_max = int(ok.max()) if ok.size else -1

    def _check_tissue(self, n: int, name: str) -> None:
        if n < max(self.min_tissue_pixels, 2):
            raise StainError(
                f"{name}: only {n} tissue pixels (OD >= {self.beta} in every channel); need at least "
                f"{self.min_tissue_pixels} to estimate the stains (is it an empty or background region?)"
            )

    # -- estimation -------------------------------------------------------------------------------
    def _estimate(self, work: ODWork, name: str) -> StainEstimate:
        if is_tensor(work.od):
            return self._estimate_torch(work, name)
        rgb, od = work
        t = self._tissue_max
        if t < 0:
            self._check_tissue(0, name)
        mask = cv2.inRange(as_cv_image(rgb), (0, 0, 0), (t, t, t)).reshape(-1) != 0
        x = np.compress(mask, od.reshape(-1, 3), axis=0)  # 3x faster than boolean row indexing
        n = x.shape[0]
        self._check_tissue(n, name)
        cov = _covariance(x)
        e1, e2 = _leading_axes(cov)
        proj = x @ np.stack([e1, e2], axis=1).astype(np.float32)
        phi = np.arctan2(proj[:, 1], proj[:, 0])
        lo, hi = percentiles(phi, [self.alpha, 100.0 - self.alpha])
        stains = _vectors_from_angles(e1, e2, float(lo), float(hi))
        pinv = np.linalg.pinv(stains)
        # one contiguous map per stain: selection on contiguous memory is ~4x faster than on a
        # strided channel of a 3-channel result
        cv_od = as_cv_image(od)
        max_c = np.array(
            [percentiles(cv2.transform(cv_od, pinv[k : k + 1]), [99.0])[0] for k in range(2)], dtype=np.float64
        )
        return StainEstimate(stains, max_c, int(n))

    def _estimate_torch(self, work: ODWork, name: str) -> StainEstimate:
        import torch

        rgb, od = work
        mask = (rgb <= self._tissue_max).all(dim=-1)
        x = od[mask]
        n = int(x.shape[0])
        self._check_tissue(n, name)
        mean = x.mean(dim=0)
        xc = x - mean
        cov = (xc.T @ xc / (n - 1)).double().cpu().numpy()
        e1, e2 = _leading_axes(cov)
        basis = torch.as_tensor(np.stack([e1, e2], axis=1), dtype=x.dtype, device=x.device)
        proj = x @ basis
        phi = torch.atan2(proj[:, 1], proj[:, 0])
        lo, hi = percentiles_torch(phi, [self.alpha, 100.0 - self.alpha]).double().cpu().numpy()
        stains = _vectors_from_angles(e1, e2, float(lo), float(hi))
        conc = self._concentrations(work, stains)
        max_c = torch.stack([percentiles_torch(conc[..., k], [99.0])[0] for k in range(2)])
        return StainEstimate(stains, max_c.double().cpu().numpy(), n)

    # -- concentrations and rendering -------------------------------------------------------------
    def _concentrations(self, work: ODWork, stain_matrix: np.ndarray) -> Any:
        pinv = np.linalg.pinv(stain_matrix)  # (2, 3) least-squares solution operator
        od = work.od
        if is_tensor(od):
            import torch

            return od @ torch.as_tensor(pinv.T, dtype=od.dtype, device=od.device)
        # a 3-row matrix keeps OpenCV on its fast 3-channel path; the third channel is dropped
        return transform(od, np.vstack([pinv, np.zeros((1, 3))]))[..., :2]

    def _apply(self, work: ODWork, stats: StainEstimate) -> Any:
        # concentrations are linear in OD: fold pinv, scales and the reference into one 3x3 matrix
        m = -(self.stain_matrix_ref * self._scales(stats)[None, :]) @ np.linalg.pinv(stats.stain_matrix)
        return self._render(work.od, m)
