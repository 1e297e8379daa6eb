"""Vahadane stain normalization (Vahadane et al., IEEE TMI 2016): sparse non-negative dictionary learning.

Tissue pixels (CIELAB luminosity ``L / 100 < 0.8``) are decomposed as ``OD ~ C @ D`` with a
dictionary ``D`` of K = 2 non-negative unit atoms (the H and E optical-density vectors) and sparse
non-negative codes ``C``, minimising ``0.5 ||OD - C D||^2 + lambda ||C||_1`` with lambda = 0.1.
Concentrations of all pixels are the non-negative lasso codes for the learnt atoms (lambda 0.01,
the usual choice of the reference implementations: small, so concentrations stay nearly unbiased).
Rendering and scaling are those of Macenko (99th-percentile concentrations, reference vectors).

Two solvers give the same objective:

``"cd"`` (default)
    alternating minimisation written for K = 2: the code step is the exact closed-form solution of
    the two-variable non-negative lasso for every pixel at once (a 2x2 system plus its KKT
    boundary cases), the dictionary step is one block-coordinate pass over the atoms (non-negative,
    projected to the unit ball). Milliseconds for 10^5 pixels.
``"sklearn"``
    :class:`sklearn.decomposition.DictionaryLearning` with ``positive_code`` and ``positive_dict``;
    about a thousand times slower, so it is fed at most ``sklearn_max_pixels`` pixels. Kept as the
    reference the fast solver is tested against.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._common import StainError, percentiles
from ._matrix import HE_REF, MAX_C_REF, ODWork, StainEstimate, StainMatrixNormalizer, check_stain_matrix
from .lab import rgb_to_lab


def nonneg_lasso_2(x: np.ndarray, atoms: np.ndarray, lam: float) -> np.ndarray:
    """Exact ``argmin_{c >= 0} 0.5 ||x - atoms @ c||^2 + lam * sum(c)`` for every row of ``x``.

    Parameters
    ----------
    x : (N, 3) optical densities.
    atoms : (3, 2) dictionary (columns are the atoms).
    lam : L1 weight (>= 0).

    Returns
    -------
    float32 (N, 2) codes.

    Notes
    -----
    The problem is a strictly convex quadratic program in two variables, so its unique KKT point
    is one of: the unconstrained solution ``G^-1 r`` (``G = atoms^T atoms``, ``r = atoms^T x - lam``)
    when it is non-negative; else one coordinate at ``max(r_i / G_ii, 0)`` and the other at 0,
    whichever satisfies the other coordinate's KKT condition ``(G c - r)_j >= 0``.
    """
    x = np.asarray(x, dtype=np.float32).reshape(-1, 3)
    g = atoms.T @ atoms
    det = g[0, 0] * g[1, 1] - g[0, 1] ** 2
    if det <= 1e-12 * g[0, 0] * g[1, 1]:
        raise StainError("the two stain atoms are parallel; the lasso codes are not unique")
    r = x @ atoms.astype(np.float32) - np.float32(lam)  # (N, 2)
    inv = np.linalg.inv(g).astype(np.float32)
    c = r @ inv
    # boundary candidates: only c0 > 0, only c1 > 0
    c0 = np.maximum(r[:, 0] / np.float32(g[0, 0]), 0)
    c1 = np.maximum(r[:, 1] / np.float32(g[1, 1]), 0)
    interior = (c[:, 0] >= 0) & (c[:, 1] >= 0)
    only0 = ~interior & (np.float32(g[0, 1]) * c0 - r[:, 1] >= 0)
    only1 = ~interior & ~only0
    c[only0, 0] = c0[only0]
    c[only0, 1] = 0
    c[only1, 0] = 0
    c[only1, 1] = c1[only1]
    return c


def learn_stain_dictionary(
    od: np.ndarray,
    lam: float = 0.1,
    init: np.ndarray = HE_REF,
    max_iter: int = 200,
    tol: float = 1e-6,
) -> np.ndarray:
    """Non-negative unit atoms (3, 2) minimising ``0.5 ||OD - C D||^2 + lam ||C||_1``, ``C >= 0``.

    Parameters
    ----------
    od : (N, 3) optical densities of tissue pixels.
    lam : L1 weight of the codes.
    init : (3, 2) starting atoms (a prior H&E pair; the result does not need to be near it).
    max_iter : alternations at most.
    tol : stop when no atom component moves more than this.

    Returns
    -------
    (3, 2) float64, unit columns, in the order they were learnt (not yet sorted H/E).
    """
    x = np.asarray(od, dtype=np.float32).reshape(-1, 3)
    d = check_stain_matrix(init, "initial dictionary")
    for _ in range(max_iter):
        c = nonneg_lasso_2(x, d, lam).astype(np.float64)
        cc = c.T @ c  # (2, 2)
        xc = (x.T @ c.astype(np.float32)).astype(np.float64)  # (3, 2)
        new = d.copy()
        for k in range(2):
            if cc[k, k] <= 1e-12:
                continue  # an unused atom keeps its value
            # block-coordinate step on atom k, then the constraints: >= 0 and inside the unit ball
            atom = new[:, k] + (xc[:, k] - new @ cc[:, k]) / cc[k, k]
            atom = np.maximum(atom, 0.0)
            norm = np.linalg.norm(atom)
            if norm < 1e-12:
                continue
            new[:, k] = atom / max(norm, 1.0)
        moved = float(np.abs(new - d).max())
        d = new
        if moved < tol:
            break
    norms = np.linalg.norm(d, axis=0)
    if np.any(norms < 1e-12):
        raise StainError("dictionary learning lost an atom (all codes zero): is there tissue in the image?")
    return d / norms


class VahadaneNormalizer(StainMatrixNormalizer):
    """Vahadane (sparse non-negative dictionary learning) stain normalizer, numpy backend.

    Parameters
    ----------
    io : transmitted light intensity for ``OD = -ln((I + 1) / Io)`` (240, as Macenko, so the
        built-in reference applies).
    lambda_dict : L1 weight during dictionary learning (0.1).
    lambda_conc : L1 weight of the concentration codes of all pixels (0.01).
    luminosity_threshold : tissue = pixels with CIELAB ``L / 100`` below this (0.8).
    max_fit_pixels : at most this many tissue pixels (an even stride) are used for learning.
    solver : ``"cd"`` (built-in, fast) or ``"sklearn"`` (:class:`~sklearn.decomposition.DictionaryLearning`).
    sklearn_max_pixels : pixel cap for the sklearn solver.
    max_iter : iterations of the dictionary learning.
    random_state : seed of the sklearn solver.
    stain_matrix_ref, max_c_ref : reference (defaults: Macenko's H&E reference).
    min_tissue_pixels : fewer tissue pixels raise :class:`StainError`.
    """

    method_name = "Vahadane normalizer"

    def __init__(
        self,
        io: float = 240.0,
        lambda_dict: float = 0.1,
        lambda_conc: float = 0.01,
        luminosity_threshold: float = 0.8,
        max_fit_pixels: int = 100_000,
        solver: str = "cd",
        sklearn_max_pixels: int = 3_000,
        max_iter: int = 200,
        random_state: int = 0,
        stain_matrix_ref: Any = HE_REF,
        max_c_ref: Any = MAX_C_REF,
        min_tissue_pixels: int = 100,
    ) -> None:
        super().__init__(io, stain_matrix_ref, max_c_ref, backend="numpy")
        if solver not in ("cd", "sklearn"):
            raise StainError(f"solver must be 'cd' or 'sklearn', got {solver!r}")
        if lambda_dict < 0 or lambda_conc < 0:
            raise StainError("lambda_dict and lambda_conc must be >= 0")
        self.lambda_dict = float(lambda_dict)
        self.lambda_conc = float(lambda_conc)
        self.luminosity_threshold = float(luminosity_threshold)
        self.max_fit_pixels = int(max_fit_pixels)
        self.solver = solver
        self.sklearn_max_pixels = int(sklearn_max_pixels)
        self.max_iter = int(max_iter)
        self.random_state = int(random_state)
        self.min_tissue_pixels = int(min_tissue_pixels)

    def _tissue_od(self, work: ODWork, name: str) -> np.ndarray:
        light = rgb_to_lab(work.rgb)[..., 0].reshape(-1) / 100.0
        x = work.od.reshape(-1, 3)[light < self.luminosity_threshold]
        if x.shape[0] < max(self.min_tissue_pixels, 2):
            raise StainError(
                f"{name}: only {x.shape[0]} tissue pixels (luminosity < {self.luminosity_threshold}); "
                f"need at least {self.min_tissue_pixels} to learn the stains"
            )
        return x

    def _learn(self, x: np.ndarray) -> np.ndarray:
        cap = self.sklearn_max_pixels if self.solver == "sklearn" else self.max_fit_pixels
        if x.shape[0] > cap:
            x = x[:: int(np.ceil(x.shape[0] / cap))]  # even stride: deterministic, spatially spread
        if self.solver == "cd":
            return learn_stain_dictionary(x, self.lambda_dict, max_iter=self.max_iter)
        from sklearn.decomposition import DictionaryLearning

        model = DictionaryLearning(
            n_components=2,
            alpha=self.lambda_dict,
            fit_algorithm="cd",
            transform_algorithm="lasso_cd",
            positive_code=True,
            positive_dict=True,
            max_iter=self.max_iter,
            random_state=self.random_state,
        )
        model.fit(x.astype(np.float64))
        d = model.components_.T.copy()
        norms = np.linalg.norm(d, axis=0)
        if np.any(norms < 1e-12):
            raise StainError("dictionary learning lost an atom (all codes zero): is there tissue in the image?")
        return d / norms

    def _estimate(self, work: ODWork, name: str) -> StainEstimate:
        x = self._tissue_od(work, name)
        d = self._learn(x)
        # haematoxylin absorbs red more strongly than eosin does
        if d[0, 0] < d[0, 1]:
            d = d[:, ::-1]
        stains = check_stain_matrix(d, f"{name}: learnt stain matrix")
        conc = self._concentrations(work, stains)
        max_c = np.array([percentiles(conc[..., k], [99.0])[0] for k in range(2)], dtype=np.float64)
        return StainEstimate(stains, max_c, int(x.shape[0]))

    def _concentrations(self, work: ODWork, stain_matrix: np.ndarray) -> np.ndarray:
        shape = work.od.shape[:-1]
        return nonneg_lasso_2(work.od.reshape(-1, 3), stain_matrix, self.lambda_conc).reshape(shape + (2,))
