"""Label and image writers (TIFF, Zarr v3) that round-trip dtype, shape, axes and scale."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr

from .atomic import atomic_path
from .axes import CANONICAL, guess_axes
from .errors import LabelfxIOError, describe_exception
from .reader import read_image
from .safety import check_destination
from .tiff import LABELFX_KEY, TIFF_SUFFIXES
from .zarr_io import COMPLETE_ATTR, LABELS_ATTR

#: dtypes ImageJ opens natively; other types are written as plain (shaped) TIFF.
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def _level0_array(path: Path, data: Any, labels: bool) -> Any:
    """Level 0 of ``data`` as a numpy or dask array (bool becomes uint8); labels must be integer."""
    if isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape"):
        data = data[0]  # multiscale layer data: write the full-resolution level
    if not hasattr(data, "dtype"):
        data = np.asarray(data)
    dtype = np.dtype(data.dtype)
    what = "labels" if labels else "an image"
    if dtype == np.bool_:
        data = data.astype(np.uint8)
    elif labels and not np.issubdtype(dtype, np.integer):
        raise LabelfxIOError(path, f"labels must have an integer dtype, got {dtype}")
    elif not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise LabelfxIOError(path, f"cannot write {dtype} data as {what}")
    if data.ndim < 2:
        raise LabelfxIOError(path, f"{what} needs at least 2 dimensions, got shape {tuple(data.shape)}")
    return data


def _check_axes(path: Path, axes: str | None, shape: tuple[int, ...]) -> str:
    if axes is None:
        try:
            return guess_axes(shape, rgb_ok=False)
        except ValueError as exc:
            raise LabelfxIOError(path, str(exc)) from exc
    axes = axes.upper()
    order = [CANONICAL.index(a) if a in CANONICAL else -1 for a in axes]
    if len(axes) != len(shape) or -1 in order or order != sorted(set(order)) or "S" in axes:
        raise LabelfxIOError(
            path, f"axes {axes!r} must name each of the {len(shape)} dimensions with letters from "
                  "'TZCYX' in that order")
    return axes


def _check_scale(path: Path, scale: Sequence[float] | None, ndim: int) -> list[float]:
    if scale is None:
        return [1.0] * ndim
    values = [float(s) for s in scale]
    if len(values) != ndim:
        raise LabelfxIOError(path, f"scale {tuple(values)} needs one value per dimension ({ndim})")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise LabelfxIOError(path, f"scale values must be positive and finite, got {tuple(values)}")
    return values


def _json_block(path: Path, axes: str, shape: tuple[int, ...], scale: list[float], unit: str | None,
                metadata: dict[str, Any] | None, labels: bool) -> dict[str, Any]:
    # the shape lets readers restore length-1 dimensions that TIFF readers drop
    block = {"labels": labels, "axes": axes, "shape": list(shape), "scale": scale, "unit": unit,
             "metadata": metadata or {}}
    try:
        json.dumps(block)
    except (TypeError, ValueError) as exc:
        raise LabelfxIOError(path, f"metadata is not JSON-serialisable ({describe_exception(exc)})") from exc
    return block


def write_labels(
    path: str | os.PathLike,
    data: Any,
    scale: Sequence[float] | None = None,
    metadata: dict[str, Any] | None = None,
    axes: str | None = None,
    unit: str | None = "um",
    overwrite: bool = False,
) -> Path:
    """Write a label image atomically as TIFF (.tif/.tiff) or Zarr v3 (.zarr).

    TIFF: uint8/uint16 (and bool, stored as uint8) become ImageJ hyperstacks with the pixel size
    in the resolution tags and ImageJ ``spacing``/``unit``; other integer types are plain TIFF
    with the pixel size in the resolution tags (per cm). Either way a JSON block (axes, scale,
    unit, metadata, labels flag) is stored in the description (ImageJ: its ``Info`` entry), so
    reading back is exact. Zarr: a chunked v3 array with ``dimension_names`` and the attributes
    ``axes``, ``scale``, ``unit``, ``metadata``, ``labelfx_labels``; every chunk is written, so a
    missing chunk file is later detected. TIFF writing holds the array in memory; Zarr writes a
    dask array chunk by chunk, so use .zarr for labels larger than memory.

    Parameters
    ----------
    path : destination; its extension picks the format.
    data : integer or bool array (numpy, dask, or a list of levels: level 0 is written).
    scale : pixel size per dimension (default 1.0 each).
    metadata : JSON-serialisable extra facts, returned by `read_labels`.
    axes : letters from "TZCYX" in that order, one per dimension (default: YX, ZYX, ...).
    unit : unit of ``scale`` ("um" by default; None for pixels).
    overwrite : also replace an existing file or Zarr store that labelfx did not write (a file or
        Zarr array labelfx wrote is always replaced; a plain folder never is).

    Returns
    -------
    Path : the written path.

    Raises
    ------
    LabelfxIOError : unsupported extension, non-integer data, bad scale/axes/metadata, I/O failure,
        or a destination whose replacement would lose data (see `io.safety.check_destination`).
    """
    return _write(path, data, scale, metadata, axes, unit, labels=True, overwrite=overwrite)


def write_image(
    path: str | os.PathLike,
    data: Any,
    scale: Sequence[float] | None = None,
    metadata: dict[str, Any] | None = None,
    axes: str | None = None,
    unit: str | None = "um",
    overwrite: bool = False,
) -> Path:
    """Write an image (e.g. a float32 probability or confidence map) like `write_labels` does.

    Same formats, atomicity and metadata as `write_labels`, for any integer, float or bool
    dtype; the file is not marked as labels, so readers open it as an image. ImageJ
    hyperstacks are written for uint8, uint16 and float32.

    Raises
    ------
    LabelfxIOError : unsupported extension or dtype, bad scale/axes/metadata, I/O failure.
    """
    return _write(path, data, scale, metadata, axes, unit, labels=False, overwrite=overwrite)


def _write(path: str | os.PathLike, data: Any, scale: Sequence[float] | None,
           metadata: dict[str, Any] | None, axes: str | None, unit: str | None, labels: bool,
           overwrite: bool = False) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    arr = _level0_array(path, data, labels)
    shape = tuple(int(s) for s in arr.shape)
    axes_ = _check_axes(path, axes, shape)
    scale_ = _check_scale(path, scale, len(shape))
    block = _json_block(path, axes_, shape, scale_, unit, metadata, labels)
    what = "labels" if labels else "image"
    if suffix in TIFF_SUFFIXES or suffix == ".zarr":
        check_destination(path, overwrite=overwrite, what=what)
    try:
        if suffix in TIFF_SUFFIXES:
            with atomic_path(path) as tmp:
                _write_tiff(tmp, np.asarray(arr), axes_, scale_, unit, block)
        elif suffix == ".zarr":
            with atomic_path(path) as tmp:
                _write_zarr(tmp, arr, axes_, scale_, unit, block)
        else:
            raise LabelfxIOError(
                path, f"cannot write {what} as {suffix or 'no extension'!r}; use .tif, .tiff or .zarr")
    except LabelfxIOError:
        raise
    except Exception as exc:
        raise LabelfxIOError(path, f"cannot write {what} ({describe_exception(exc)})") from exc
    return path


def _write_tiff(tmp: Path, arr: np.ndarray, axes: str, scale: list[float], unit: str | None,
                block: dict[str, Any]) -> None:
    by_axis = dict(zip(axes, scale))
    sx, sy = by_axis.get("X", 1.0), by_axis.get("Y", 1.0)
    kwargs: dict[str, Any] = {"photometric": "minisblack", "compression": "zlib"}
    if arr.dtype in _IMAGEJ_DTYPES:
        ij: dict[str, Any] = {"axes": axes, "Info": json.dumps({LABELFX_KEY: block})}
        if unit:
            ij["unit"] = unit
        if "Z" in by_axis:
            ij["spacing"] = by_axis["Z"]
        if "T" in by_axis:
            ij["finterval"] = by_axis["T"]
        # ImageJ keeps pixels per calibration unit in the resolution tags
        tifffile.imwrite(tmp, arr, imagej=True, resolution=(1.0 / sx, 1.0 / sy), metadata=ij, **kwargs)
    else:
        res: dict[str, Any] = {}
        if unit and unit.lower() in ("um", "µm", "micron", "micrometer"):
            res = {"resolution": (1e4 / sx, 1e4 / sy), "resolutionunit": "CENTIMETER"}
        tifffile.imwrite(tmp, arr, metadata={"axes": axes, LABELFX_KEY: block}, **res, **kwargs)


def _zarr_chunks(shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    """About 1-4 MB chunks: whole-ish planes in 2D, (16, 256, 256) bricks in volumes."""
    chunks = []
    for size, a in zip(shape, axes):
        if a in "YX":
            chunks.append(min(size, 1024 if "Z" not in axes else 256))
        elif a == "Z":
            chunks.append(min(size, 16))
        else:
            chunks.append(1)
    return tuple(chunks)


def _write_zarr(tmp: Path, arr: Any, axes: str, scale: list[float], unit: str | None,
                block: dict[str, Any]) -> None:
    z = zarr.create_array(
        store=str(tmp), shape=arr.shape, dtype=arr.dtype, chunks=_zarr_chunks(tuple(arr.shape), axes),
        fill_value=0, zarr_format=3, dimension_names=[a.lower() for a in axes],
        attributes={LABELS_ATTR: block["labels"], "axes": axes, "scale": scale, "unit": unit,
                    "metadata": block["metadata"]},
        config={"write_empty_chunks": True},  # every chunk on disk: a missing one means damage
    )
    if isinstance(arr, da.Array):
        # chunk by chunk, never the whole array in memory; aligned to the zarr chunk grid so no
        # two tasks read-modify-write the same chunk concurrently
        da.store(arr.rechunk(z.chunks), z, lock=False)
    else:
        z[...] = arr
    z.attrs[COMPLETE_ATTR] = True


def read_labels(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...], dict[str, Any]]:
    """Read a label image written by `write_labels` (or any integer TIFF/Zarr/PNG image).

    Returns
    -------
    array : numpy array, dtype and shape as written.
    scale : pixel size per dimension.
    metadata : the ``metadata`` given to `write_labels`, plus ``axes`` and ``unit``.

    Raises
    ------
    LabelfxIOError : unreadable file or non-integer data.
    """
    path = Path(path)
    image = read_image(path, eager_limit=2**62)  # labels are used whole: read them in memory
    if not (np.issubdtype(image.dtype, np.integer) or image.dtype == bool):
        raise LabelfxIOError(path, f"holds {image.dtype} data, not integer labels")
    level0 = image.levels[0]
    array = np.asarray(level0.compute() if isinstance(level0, da.Array) else level0)
    own = image.metadata.get("labelfx") or {}
    attrs = image.metadata.get("attributes") or {}
    if LABELS_ATTR in attrs:  # written by us (write_labels or write_image)
        own = {"axes": attrs.get("axes"), "scale": attrs.get("scale"), "unit": attrs.get("unit"),
               "metadata": attrs.get("metadata")}
    if own.get("scale") and len(own["scale"]) == array.ndim:
        scale = tuple(float(s) for s in own["scale"])
    else:  # a foreign file: the image scale, with 1.0 for channel-like axes
        grid = iter(image.scale)
        scale = tuple(1.0 if a in "CS" else next(grid) for a in image.axes)
    metadata = dict(own.get("metadata") or {})
    metadata.setdefault("axes", own.get("axes") or image.axes)
    metadata.setdefault("unit", own.get("unit") if own else image.metadata.get("unit"))
    return array, scale, metadata
