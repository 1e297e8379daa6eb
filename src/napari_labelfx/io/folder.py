"""A folder of same-sized 2D images read as a lazy Z stack (files in natural sort order)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import tifffile

from .errors import LabelfxIOError, describe_exception
from .image_data import EAGER_LIMIT_BYTES, ImageData
from .raster import RASTER_SUFFIXES, raster_header, read_raster_array
from .tiff import TIFF_SUFFIXES

FOLDER_SUFFIXES = RASTER_SUFFIXES + TIFF_SUFFIXES


def natural_key(name: str) -> list[Any]:
    """Sort key where digit runs compare as numbers: img2 < img10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def image_files(folder: Path) -> list[Path]:
    """Visible image files directly inside ``folder``, in natural order."""
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise LabelfxIOError(folder, f"cannot list folder ({describe_exception(exc)})") from exc
    files = [p for p in entries if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in FOLDER_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, dtype = tuple(series.shape), series.dtype
        except Exception as exc:
            raise LabelfxIOError(path, f"not a readable TIFF ({describe_exception(exc)})") from exc
        if not (len(shape) == 2 or len(shape) == 3 and shape[-1] in (3, 4)):
            raise LabelfxIOError(path, f"a stack folder needs 2D images, this TIFF has shape {shape}")
        return shape, np.dtype(dtype)
    return raster_header(path)


def _read_one(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            arr = tifffile.imread(path)
        except Exception as exc:
            raise LabelfxIOError(path, f"cannot read TIFF ({describe_exception(exc)})") from exc
    else:
        arr = read_raster_array(path)
    if arr.shape != shape or arr.dtype != dtype:
        raise LabelfxIOError(path, f"image is {arr.shape} {arr.dtype}, the stack expects {shape} {dtype}")
    return arr


def read_folder(path: str | os.PathLike, eager_limit: int = EAGER_LIMIT_BYTES) -> ImageData:
    """Stack the 2D images of a folder along Z (axes "ZYX", or "ZYXS" for RGB files).

    Only file headers are read up front; the pixels are read per file when the stack is large.

    Raises
    ------
    LabelfxIOError : no images, or images that differ in size, colour mode or dtype.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise LabelfxIOError(folder, "no such folder")
    files = image_files(folder)
    if not files:
        raise LabelfxIOError(folder, f"folder holds no images ({', '.join(FOLDER_SUFFIXES)})")
    shape, dtype = _header(files[0])
    for f in files[1:]:
        other_shape, other_dtype = _header(f)
        if other_shape != shape or other_dtype != dtype:
            raise LabelfxIOError(
                f, f"image is {other_shape} {other_dtype} but {files[0].name} is {shape} {dtype}; "
                   "all images of a stack folder must have the same size and type")
    nbytes = len(files) * int(np.prod(shape)) * dtype.itemsize
    if nbytes < eager_limit:
        data: Any = np.stack([_read_one(f, shape, dtype) for f in files])
    else:
        data = da.stack([
            da.from_delayed(dask.delayed(_read_one)(f, shape, dtype), shape=shape, dtype=dtype)
            for f in files
        ])
    axes = "ZYXS" if len(shape) == 3 else "ZYX"
    return ImageData(
        data=data, axes=axes, scale=(1.0, 1.0, 1.0), dtype=dtype, multiscale=False, name=folder.name,
        metadata={"path": str(folder), "format": "image-folder", "unit": None, "labels": None,
                  "source_axes": axes, "files": [f.name for f in files]},
        chunks=(1, *shape),
    )
