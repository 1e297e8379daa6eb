"""Shared pieces of the stain normalizers: errors, input checks, optical density, tiling.

Every normalizer works on 8-bit RGB images ``(H, W, 3)`` and follows the same three steps, which the
base class :class:`StainNormalizer` strings together:

``_prepare(rgb) -> work``  per-pixel quantities (optical density, CIELAB, ...), computed once;
``_estimate(work) -> stats``  the image's stain statistics (stain vectors and scales, LAB moments);
``_apply(work, stats) -> rgb``  map the pixels with the image's statistics onto the reference.

``normalize`` runs all three on one image. ``normalize_tiled`` estimates the statistics once on an
evenly strided subsample of the whole image and then applies them tile by tile, so neighbouring
tiles are mapped with the same transform and show no seams.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class StainError(ValueError):
    """A stain normalizer cannot do what was asked (not fitted, no tissue, degenerate stains)."""


class StainInputError(StainError):
    """An image given to a stain tool is not an 8-bit RGB image; the message names it."""


def is_tensor(x: Any) -> bool:
    """True for a torch tensor, without importing torch."""
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def check_rgb_meta(shape: tuple[int, ...], dtype: Any, name: str) -> None:
    """Raise :class:`StainInputError` unless ``shape``/``dtype`` describe an 8-bit RGB(A) image.

    Parameters
    ----------
    shape, dtype : of the candidate array (it is not loaded, so lazy arrays can be checked).
    name : how the image is called in the message (file or layer name).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        hint = " (a greyscale image has no stains to separate)" if len(shape) == 2 else ""
        raise StainInputError(f"{name}: expected an RGB image of shape (H, W, 3), got shape {shape}{hint}")
    if shape[-1] not in (3, 4):
        hint = " - channels-first? transpose it to (H, W, 3)" if shape[0] in (3, 4) else ""
        raise StainInputError(f"{name}: expected 3 colour channels last, got shape {shape}{hint}")
    if shape[0] == 0 or shape[1] == 0:
        raise StainInputError(f"{name}: the image is empty (shape {shape})")
    if str(dtype) not in ("uint8", "torch.uint8"):
        raise StainInputError(
            f"{name}: expected 8-bit RGB (uint8, 0-255), got dtype {dtype}; "
            "for a float image in [0, 1] use (img * 255).round().astype('uint8')"
        )


def resolve_backend(backend: str, device: Any) -> tuple[str, Any]:
    """Validate a backend name; for ``"torch"`` also pick the device (``None`` = automatic)."""
    if backend not in ("numpy", "torch"):
        raise StainError(f"backend must be 'numpy' or 'torch', got {backend!r}")
    if backend == "numpy":
        return backend, None
    from ...core.device import select_device

    return backend, select_device("auto" if device is None else device)


def check_rgb(image: Any, name: str = "image") -> np.ndarray:
    """Return ``image`` as a contiguous uint8 ``(H, W, 3)`` numpy array (alpha dropped), or raise.

    Parameters
    ----------
    image : array-like RGB or RGBA image, channels last, uint8.
    name : how the image is called in error messages.
    """
    if is_tensor(image):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    check_rgb_meta(arr.shape, arr.dtype, name)
    return np.ascontiguousarray(arr[..., :3])


def od_lut(io: float) -> np.ndarray:
    """Optical density of every 8-bit intensity: ``OD = -ln((I + 1) / Io)``, float32 (256,).

    Because the input is 8-bit, a 256-entry table replaces a logarithm per pixel and channel.
    """
    if not io > 0:
        raise StainError(f"transmitted light intensity Io must be > 0, got {io}")
    return (-np.log((np.arange(256, dtype=np.float64) + 1.0) / float(io))).astype(np.float32)


#: Arrays smaller than this are partitioned directly by :func:`percentiles`.
_SELECT_DIRECT = 1 << 18
#: Size of the evenly strided sample that brackets each order statistic.
_SELECT_SAMPLE = 1 << 16


def _order_stats(x: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Exact k-th smallest values (0-based, sorted unique ``ks``) of an array of any layout.

    For large arrays a random sample brackets each group of nearby order statistics
    between two values; counting the values below the bracket and partitioning only the few inside
    it replaces a partial sort of the whole array (a copy plus several passes) by three streaming
    passes. The counts prove the bracket right; if it missed, the whole array is partitioned.
    """
    flat = x.reshape(-1)  # a view for whole arrays and for channel views of (H, W, C) images
    n = flat.size
    if n <= _SELECT_DIRECT:
        return np.partition(flat, ks)[ks]
    # a random (fixed-seed) sample: a regular stride can alias with image structure and bias it
    sample = np.sort(flat[np.random.default_rng(0).integers(0, n, _SELECT_SAMPLE)])
    m = sample.size

    def sample_rank(k: int, side: int) -> int:
        p = k / (n - 1)
        margin = 5.0 * np.sqrt(m * p * (1 - p)) + 8  # five binomial sd of the sample rank, and some
        r = p * (m - 1) + side * margin
        return int(min(max(np.floor(r) if side < 0 else np.ceil(r), 0), m - 1))

    out: dict[int, Any] = {}
    groups = np.split(ks, np.nonzero(np.diff(ks) > 64)[0] + 1)
    for group in groups:
        k0, k1 = int(group[0]), int(group[-1])
        lo_v, hi_v = sample[sample_rank(k0, -1)], sample[sample_rank(k1, 1)]
        below = int(np.count_nonzero(x < lo_v))
        inside = flat[((x >= lo_v) & (x <= hi_v)).reshape(-1)]
        if below <= k0 and k1 < below + inside.size:
            local = group - below
            vals = np.partition(inside, local)[local]
        else:
            vals = np.partition(flat, group)[group]
        out.update(zip(group.tolist(), vals))
    return np.array([out[int(k)] for k in ks], dtype=x.dtype)


def percentiles(x: np.ndarray, qs: Any) -> np.ndarray:
    """Percentiles with numpy's default (linear) interpolation, exact, fast on 10^7 values.

    Parameters
    ----------
    x : array of any shape and layout (a strided channel view is fine; it is not copied).
    qs : percentiles in [0, 100].

    Returns
    -------
    float64 array, one value per percentile (equal to ``np.percentile(x, qs)``).
    """
    x = np.asarray(x)
    n = x.size
    if n == 0:
        raise StainError("cannot take percentiles of an empty set of pixels")
    if not np.all(np.isfinite(x[:: max(1, n // 1000)])):
        x = x[np.isfinite(x)]  # NaN would break the ordering; rare (only from broken input)
        n = x.size
        if n == 0:
            raise StainError("cannot take percentiles: no finite value")
    pos = np.asarray(qs, dtype=np.float64).reshape(-1) / 100.0 * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    ks = np.unique(np.concatenate([lo, hi]))
    vals = dict(zip(ks.tolist(), _order_stats(x, ks).astype(np.float64)))
    frac = pos - lo
    return np.array([vals[a] * (1.0 - f) + vals[b] * f for a, b, f in zip(lo, hi, frac)])


class StainNormalizer(ABC):
    """Base class: ``fit(reference)``, ``normalize(image)``, ``normalize_tiled(image)``.

    Subclasses implement ``_prepare``, ``_estimate``, ``_apply`` and ``_set_reference`` and say via
    ``_reference_ready`` whether a target is available (some have a built-in default).
    """

    #: Shown in messages.
    method_name = "stain normalizer"

    # -- subclass hooks -------------------------------------------------------------------------
    @abstractmethod
    def _prepare(self, rgb: Any) -> Any:
        """Per-pixel quantities of an RGB image (numpy (H, W, 3) uint8, or a tensor)."""

    @abstractmethod
    def _estimate(self, work: Any, name: str) -> Any:
        """Stain statistics of one prepared image."""

    @abstractmethod
    def _apply(self, work: Any, stats: Any) -> Any:
        """Normalised uint8 RGB (same kind of array as the prepared input)."""

    @abstractmethod
    def _set_reference(self, stats: Any) -> None:
        """Make ``stats`` (from :meth:`_estimate` on a reference) the normalisation target."""

    @property
    @abstractmethod
    def _reference_ready(self) -> bool:
        """True when a target is set (fitted or built in)."""

    #: "numpy" (OpenCV/numpy on the CPU) or "torch" (any torch device); set by subclasses.
    backend: str = "numpy"
    #: torch device of the torch backend.
    device: Any = None

    def _to_work_input(self, rgb: np.ndarray) -> Any:
        """Checked numpy RGB -> the array type the backend computes on."""
        if self.backend == "torch":
            import torch

            return torch.from_numpy(rgb).to(self.device)
        return rgb

    def _from_work_output(self, out: Any) -> np.ndarray:
        return out.cpu().numpy() if is_tensor(out) else out

    def _checked(self, image: Any, name: str) -> Any:
        if is_tensor(image) and self.backend == "torch":
            check_rgb_meta(tuple(image.shape), image.dtype, name)
            return image[..., :3].contiguous().to(self.device)
        return self._to_work_input(check_rgb(image, name))

    def _finish(self, out: Any, like: Any) -> Any:
        """Return numpy for numpy input and a tensor on the input's device for tensor input."""
        if is_tensor(like):
            import torch

            return (out if is_tensor(out) else torch.from_numpy(out)).to(like.device)
        return self._from_work_output(out)

    # -- public API -----------------------------------------------------------------------------
    def fit(self, reference: Any, mask: np.ndarray | None = None, name: str = "reference") -> StainNormalizer:
        """Estimate the normalisation target from a reference image (or a masked region of it).

        Parameters
        ----------
        reference : uint8 RGB ``(H, W, 3)``.
        mask : optional boolean ``(H, W)``: only these pixels describe the reference.
        name : how the reference is called in error messages.

        Returns
        -------
        self
        """
        rgb = check_rgb(reference, name)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != rgb.shape[:2]:
                raise StainInputError(f"{name}: mask shape {mask.shape} differs from the image's {rgb.shape[:2]}")
            rgb = np.ascontiguousarray(rgb[mask.astype(bool)][:, None, :])  # (N, 1, 3) stays image-like
            if rgb.shape[0] == 0:
                raise StainInputError(f"{name}: the reference mask selects no pixel")
        work = self._prepare(self._to_work_input(rgb))
        self._set_reference(self._estimate(work, name))
        return self

    def _require_reference(self) -> None:
        if not self._reference_ready:
            raise StainError(f"{self.method_name}: no reference yet; call fit(reference) first")

    def normalize(self, image: Any, name: str = "image") -> Any:
        """Map an image's stain appearance onto the reference.

        Parameters
        ----------
        image : uint8 RGB ``(H, W, 3)`` (RGBA: the alpha channel is dropped). A torch tensor is
            accepted by the torch backends and returned as a tensor on its device.
        name : how the image is called in error messages.

        Returns
        -------
        uint8 RGB ``(H, W, 3)``.
        """
        self._require_reference()
        work = self._prepare(self._checked(image, name))
        return self._finish(self._apply(work, self._estimate(work, name)), image)

    def normalize_tiled(
        self,
        image: Any,
        tile: int = 2048,
        sample_pixels: int = 4_000_000,
        out: Any | None = None,
        name: str = "image",
    ) -> Any:
        """Normalise a large image tile by tile with one set of statistics for the whole image.

        The statistics are estimated once on an evenly strided subsample of at most
        ``sample_pixels`` pixels, so every tile gets the same transform (no seams) and memory stays
        bounded by the tile size.

        Parameters
        ----------
        image : uint8 RGB ``(H, W, 3)``: numpy, or any lazily sliced array (Zarr, dask).
        tile : tile side in pixels.
        sample_pixels : at most this many pixels feed the statistics.
        out : optional destination array ``(H, W, 3)`` uint8 (e.g. a Zarr array); a new numpy
            array when None.
        name : how the image is called in error messages.

        Returns
        -------
        ``out`` (or the new array) holding the normalised image.
        """
        self._require_reference()
        shape = tuple(image.shape)
        check_rgb_meta(shape, getattr(image, "dtype", None), name)
        if tile < 16:
            raise StainError(f"{name}: tile must be at least 16 pixels, got {tile}")
        if sample_pixels < 1:
            raise StainError(f"{name}: sample_pixels must be positive, got {sample_pixels}")
        h, w = shape[:2]
        step = max(1, math.ceil(math.sqrt(h * w / sample_pixels)))
        sample = check_rgb(np.asarray(image[::step, ::step]), name)
        stats = self._estimate(self._prepare(self._to_work_input(sample)), name)
        if out is None:
            out = np.empty((h, w, 3), dtype=np.uint8)
        elif tuple(out.shape) != (h, w, 3):
            raise StainInputError(f"{name}: output array shape {tuple(out.shape)} must be {(h, w, 3)}")
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                block = check_rgb(np.asarray(image[y : y + tile, x : x + tile]), name)
                work = self._prepare(self._to_work_input(block))
                out[y : y + tile, x : x + tile] = self._from_work_output(self._apply(work, stats))
        return out
