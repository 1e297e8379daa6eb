"""Single 2D raster images (PNG, JPEG, BMP, GIF frames) read with Pillow."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from PIL import Image

from .errors import LabelfxIOError, describe_exception
from .image_data import EAGER_LIMIT_BYTES, ImageData

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Pillow modes kept as they are (grey, 16/32-bit grey, float, palette indices, RGB(A))
_KEEP_MODES = {"L", "I;16", "I;16B", "I;16L", "I", "F", "P", "RGB", "RGBA"}


def is_raster_path(path: Path) -> bool:
    """True for a file with a PNG/JPEG/BMP extension."""
    return path.suffix.lower() in RASTER_SUFFIXES


def raster_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a raster image from its header only (nothing decoded)."""
    try:
        with Image.open(path) as img:
            mode, (width, height) = img.mode, img.size
    except Exception as exc:
        raise LabelfxIOError(path, f"not a readable image ({describe_exception(exc)})") from exc
    mode = _target_mode(mode)
    probe = np.asarray(Image.new(mode, (1, 1)))
    return (height, width, *probe.shape[2:]), probe.dtype


def _target_mode(mode: str) -> str:
    if mode in _KEEP_MODES:
        return mode
    if mode in ("1",):
        return "L"
    if mode in ("LA", "La"):
        return "L"  # a grey image with alpha: the alpha carries no image content for segmentation
    if mode in ("PA", "RGBa", "RGBX"):
        return "RGBA" if mode != "RGBX" else "RGB"
    return "RGB"  # CMYK, YCbCr, LAB, HSV


def read_raster_array(path: Path) -> np.ndarray:
    """Decode a raster image to (Y, X) or (Y, X, 3|4); palette images keep their index values."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = _target_mode(img.mode)
            if img.mode == "1":
                return np.asarray(img, dtype=np.uint8)
            return np.asarray(img if img.mode == mode else img.convert(mode))
    except Exception as exc:
        raise LabelfxIOError(path, f"cannot decode image ({describe_exception(exc)})") from exc


def read_raster(path: str | os.PathLike, eager_limit: int = EAGER_LIMIT_BYTES) -> ImageData:
    """Read one PNG/JPEG/BMP file into an ImageData with axes "YX" or "YXS".

    These formats decode whole, so "lazy" (above ``eager_limit`` bytes) only defers that decode.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelfxIOError(path, "no such file")
    shape, dtype = raster_header(path)
    if int(np.prod(shape)) * dtype.itemsize < eager_limit:
        data: Any = read_raster_array(path)
    else:
        data = da.from_delayed(dask.delayed(read_raster_array)(path), shape=shape, dtype=dtype)
    axes = "YXS" if len(shape) == 3 else "YX"
    return ImageData(
        data=data, axes=axes, scale=(1.0, 1.0), dtype=dtype, multiscale=False, name=path.stem,
        metadata={"path": str(path), "format": path.suffix.lower().lstrip("."), "unit": None,
                  "labels": None, "source_axes": axes},
        chunks=tuple(shape),
    )
