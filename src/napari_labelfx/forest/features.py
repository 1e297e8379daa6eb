"""Multiscale filter features per pixel (the ilastik / scikit-image trainable-segmentation bank).

For every channel and every scale sigma the bank computes, with Gaussian derivative filters:

* ``gauss``: Gaussian smoothing,
* ``log``: Laplacian of Gaussian,
* ``gradient``: Gaussian gradient magnitude,
* ``hessian``: eigenvalues of the Hessian of Gaussian (2 in 2D, 3 in 3D, descending),
* ``structure``: eigenvalues of the structure tensor (derivatives at sigma/2, smoothed at sigma).

Features of a region are computed from the region widened by a halo of ``4 * sigma`` pixels, so a tile
of a large image or volume gets exactly the values the whole image would give (up to the image
border, which is mirrored). Nothing here holds more than one widened tile in memory.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

#: Filter kinds in the order their features are stacked.
KINDS: tuple[str, ...] = ("gauss", "log", "gradient", "hessian", "structure")
#: ilastik's default scales (pixels). 0.3 stands for the raw intensity (only its smoothing is used).
DEFAULT_SIGMAS: tuple[float, ...] = (0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
#: Gaussian kernels are cut at this many sigmas (scipy's and scikit-image's default).
TRUNCATE = 4.0
#: Border handling: mirror without repeating the edge pixel, as ilastik does.
MODE = "mirror"


class FeatureError(ValueError):
    """A filter-bank setting or input is unusable."""


def _eig_sym2(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
    """Eigenvalues (descending) of the symmetric 2x2 fields [[a, b], [b, c]] in closed form."""
    mean = 0.5 * (a + c)
    root = np.sqrt(0.25 * (a - c) ** 2 + b * b)
    return [mean + root, mean - root]


def _eig_sym3(m: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Eigenvalues (descending) of symmetric 3x3 fields given as (xx, xy, xz, yy, yz, zz) in axis order."""
    a00, a01, a02, a11, a12, a22 = m
    mat = np.stack([np.stack([a00, a01, a02], -1), np.stack([a01, a11, a12], -1),
                    np.stack([a02, a12, a22], -1)], -2)
    ev = np.linalg.eigvalsh(mat.astype(np.float64, copy=False))  # ascending
    return [ev[..., 2].astype(np.float32), ev[..., 1].astype(np.float32), ev[..., 0].astype(np.float32)]


@dataclass(frozen=True)
class FilterBank:
    """Which filters at which scales; ``compute`` turns a channels-first image into features.

    Attributes
    ----------
    sigmas : scales in pixels (each > 0). The smallest scale only contributes its smoothing when it
        is below 0.5 (finer derivatives are noise), as in ilastik.
    kinds : subset of :data:`KINDS`.
    spatial_dims : 2 or 3; in 3D the filters are isotropic in voxels.
    """

    sigmas: tuple[float, ...] = DEFAULT_SIGMAS
    kinds: tuple[str, ...] = KINDS
    spatial_dims: int = 2
    _names: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            sigmas = tuple(float(s) for s in self.sigmas)
        except (TypeError, ValueError):
            raise FeatureError(f"sigmas must be numbers, got {self.sigmas!r}") from None
        if not sigmas or any(not math.isfinite(s) or s <= 0 or s > 64 for s in sigmas):
            raise FeatureError(f"sigmas must be in (0, 64] pixels, got {self.sigmas!r}")
        kinds = tuple(str(k) for k in self.kinds)
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise FeatureError(f"unknown filter kind(s) {unknown}; known: {list(KINDS)}")
        if self.spatial_dims not in (2, 3):
            raise FeatureError(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        object.__setattr__(self, "sigmas", tuple(sorted(set(sigmas))))
        object.__setattr__(self, "kinds", tuple(k for k in KINDS if k in kinds))
        object.__setattr__(self, "_names", tuple(self._feature_names()))

    # -- description -----------------------------------------------------------------------------------
    def _kinds_at(self, sigma: float) -> tuple[str, ...]:
        if sigma < 0.5:
            return ("gauss",)
        return self.kinds

    def _feature_names(self) -> list[str]:
        names = []
        nd = self.spatial_dims
        for sigma in self.sigmas:
            for kind in self._kinds_at(sigma):
                if kind in ("hessian", "structure"):
                    names += [f"{kind}{i}@{sigma:g}" for i in range(nd)]
                else:
                    names.append(f"{kind}@{sigma:g}")
        return names

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names per channel, in output order (``kind@sigma``)."""
        return self._names

    def n_features(self, channels: int) -> int:
        """Number of features for an image with ``channels`` channels."""
        return channels * len(self._names)

    @property
    def halo(self) -> int:
        """Pixels of context a region needs on each side for exact features."""
        # the structure tensor smooths derivatives taken at sigma/2: its support is the sum of both
        return int(math.ceil(TRUNCATE * max(self.sigmas) * 1.5)) + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON form (inverse of :meth:`from_dict`)."""
        d = asdict(self)
        d.pop("_names", None)
        d["sigmas"] = list(self.sigmas)
        d["kinds"] = list(self.kinds)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FilterBank:
        """Build from :meth:`to_dict` output (unknown keys raise :class:`FeatureError`)."""
        if not isinstance(data, dict):
            raise FeatureError(f"a filter bank must be a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - {"sigmas", "kinds", "spatial_dims"})
        if unknown:
            raise FeatureError(f"unknown filter-bank setting(s) {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    # -- computation -----------------------------------------------------------------------------------
    def compute(self, image: np.ndarray) -> np.ndarray:
        """Features ``(F, *spatial)`` float32 of a channels-first image ``(C, *spatial)`` (whole image)."""
        image = np.asarray(image)
        if image.ndim != self.spatial_dims + 1:
            raise FeatureError(
                f"the filter bank is {self.spatial_dims}D and needs a (C, *spatial) array, got shape {image.shape}"
            )
        out = np.empty((self.n_features(image.shape[0]), *image.shape[1:]), np.float32)
        # one job per (channel, scale); scipy's filters release the GIL, so threads use every core
        jobs, k = [], 0
        for c in range(image.shape[0]):
            x = np.asarray(image[c], np.float32)
            for sigma in self.sigmas:
                n = self._count_at(sigma)
                jobs.append((x, sigma, k))
                k += n
        workers = min(len(jobs), os.cpu_count() or 1)
        if workers <= 1 or image[0].size < 4096:
            for job in jobs:
                self._fill(out, *job)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda job: self._fill(out, *job), jobs))
        return out

    def _count_at(self, sigma: float) -> int:
        nd = self.spatial_dims
        return sum(nd if k in ("hessian", "structure") else 1 for k in self._kinds_at(sigma))

    def _fill(self, out: np.ndarray, x: np.ndarray, sigma: float, k: int) -> None:
        for i, feat in enumerate(self._scale_features(x, sigma)):
            out[k + i] = feat

    def compute_region(self, image: Any, region: Sequence[slice]) -> np.ndarray:
        """Features of ``region`` (one slice per spatial axis) of a (possibly lazy) ``(C, *spatial)`` image.

        Reads the region widened by :attr:`halo` (clipped at the image border, where the filters mirror),
        computes and crops: equal to ``compute(image)[(slice(None), *region)]``.
        """
        spatial = tuple(int(s) for s in image.shape[1:])
        if len(region) != len(spatial):
            raise FeatureError(f"a region needs {len(spatial)} slices, got {len(region)}")
        h = self.halo
        wide, inner = [], []
        for r, d in zip(region, spatial):
            start = 0 if r.start is None else int(r.start)
            stop = d if r.stop is None else int(r.stop)
            lo, hi = max(0, start - h), min(d, stop + h)
            wide.append(slice(lo, hi))
            inner.append(slice(start - lo, stop - lo))
        # inside the image the halo is the filters' whole support; where the widened block was
        # clipped it touches the image border, and mirroring there is what the whole image does too
        block = np.asarray(image[(slice(None), *wide)], dtype=np.float32)
        return self.compute(block)[(slice(None), *inner)]

    @staticmethod
    def _hessian(x: np.ndarray, sigma: float) -> list[np.ndarray]:
        """Hessian of Gaussian in upper-triangle order, as two first-order passes at sigma / sqrt(2).

        A sampled second-order Gaussian kernel is badly aliased at small sigma; two first-derivative
        passes at sigma / sqrt(2) give the same total smoothing without it (scikit-image's method).
        """
        nd = x.ndim
        s = sigma / math.sqrt(2.0)
        first = []
        for axis in range(nd):
            order = [0] * nd
            order[axis] = 1
            first.append((order, ndi.gaussian_filter(x, s, order=order, mode=MODE, truncate=TRUNCATE)))
        return [ndi.gaussian_filter(first[i][1], s, order=first[j][0], mode=MODE, truncate=TRUNCATE)
                for i in range(nd) for j in range(i, nd)]

    def _scale_features(self, x: np.ndarray, sigma: float):  # noqa: ANN202 - a generator of arrays
        """The features of one channel at one scale, in :attr:`names` order."""
        nd = x.ndim
        kinds = self._kinds_at(sigma)
        if "gauss" in kinds:
            yield ndi.gaussian_filter(x, sigma, mode=MODE, truncate=TRUNCATE)
        h = self._hessian(x, sigma) if ("log" in kinds or "hessian" in kinds) else None
        if "log" in kinds:  # the Laplacian of Gaussian is the trace of the Hessian of Gaussian
            yield h[0] + h[2] if nd == 2 else h[0] + h[3] + h[5]
        if "gradient" in kinds:
            yield ndi.gaussian_gradient_magnitude(x, sigma, mode=MODE, truncate=TRUNCATE)
        if "hessian" in kinds:
            yield from (_eig_sym2(h[0], h[1], h[2]) if nd == 2 else _eig_sym3(h))
        if "structure" in kinds:
            inner = sigma / 2.0
            grads = []
            for axis in range(nd):
                order = [0] * nd
                order[axis] = 1
                grads.append(ndi.gaussian_filter(x, inner, order=order, mode=MODE, truncate=TRUNCATE))
            t = [ndi.gaussian_filter(grads[i] * grads[j], sigma, mode=MODE, truncate=TRUNCATE)
                 for i in range(nd) for j in range(i, nd)]
            yield from (_eig_sym2(t[0], t[1], t[2]) if nd == 2 else _eig_sym3(t))


def tile_grid(spatial: Sequence[int], tile: Sequence[int]) -> list[tuple[slice, ...]]:
    """Non-overlapping tiles covering an array of shape ``spatial`` (edge tiles are smaller)."""
    ranges = [[slice(s, min(s + t, d)) for s in range(0, d, t)] for d, t in zip(spatial, tile)]
    out: list[tuple[slice, ...]] = [()]
    for r in ranges:
        out = [(*o, s) for o in out for s in r]
    return out
