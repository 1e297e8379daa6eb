"""One entry point for every supported image source: `read_image`, `can_read`, `describe`."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LabelfxIOError, describe_exception
from .folder import image_files, read_folder
from .image_data import EAGER_LIMIT_BYTES, ImageData
from .raster import is_raster_path, read_raster
from .tiff import is_tiff_path, read_tiff
from .zarr_io import is_zarr_path, read_zarr

#: Words in a file name (or its parent folder's name) that say it holds a label image.
LABEL_NAME_WORDS = frozenset({
    "label", "labels", "mask", "masks", "seg", "segmentation", "segmentations",
    "annotation", "annotations", "instances", "gt", "groundtruth",
})


def label_name_hint(path: str | os.PathLike) -> bool:
    """True when the file name, or the name of the folder it sits in, says it holds labels.

    Words are split on non-letters, so ``cell_masks.tif``, ``labels/img01.tif`` and
    ``nuclei-seg.zarr`` qualify but ``masked_image.tif`` does not.
    """
    path = Path(path)
    stem = re.sub(r"(\.ome)?\.(tiff?|zarr|png|jpe?g|bmp)$", "", path.name, flags=re.I)
    words = {w for w in re.split(r"[^a-z]+", stem.lower()) if w}
    parent = path.parent.name.lower()
    return bool(words & LABEL_NAME_WORDS) or parent in {"masks", "labels"}


def _kind(path: Path) -> str | None:
    if path.is_dir():
        if is_zarr_path(path):
            return "zarr"
        return "folder"
    if is_tiff_path(path):
        return "tiff"
    if is_raster_path(path):
        return "raster"
    return None


def can_read(path: str | os.PathLike) -> bool:
    """Cheap check (extension and folder structure, no pixel reads) that `read_image` applies.

    True for TIFF/OME-TIFF/ImageJ files, PNG/JPEG/BMP files, Zarr/OME-Zarr folders and folders
    that directly contain such 2D images; False for anything else and for missing paths.
    """
    try:
        path = Path(path)
        kind = _kind(path) if path.exists() else None
        if kind == "folder":
            return bool(image_files(path))
        return kind is not None
    except (OSError, LabelfxIOError, TypeError):
        return False


def read_image(path: str | os.PathLike, eager_limit: int = EAGER_LIMIT_BYTES) -> ImageData:
    """Open an image, volume, pyramid or image folder.

    Parameters
    ----------
    path : TIFF/OME-TIFF/ImageJ file, PNG/JPEG/BMP file, Zarr/OME-Zarr folder or image folder.
    eager_limit : sources smaller than this many bytes are read into memory; larger ones stay
        lazy (dask) and are read chunk by chunk. OME-Zarr pyramids are always lazy.

    Returns
    -------
    ImageData : canonical axes ("TZCYX" order, "S" last for RGB), scale, and
        ``metadata["labels"]``: what the file's metadata declares, or, when it declares
        nothing, whether its name says labels and its data are integer
        (``metadata["labels_from"]`` is "metadata", "name" or None).

    Raises
    ------
    LabelfxIOError : unsupported, missing, corrupt or truncated input.
    """
    path = Path(path)
    if not path.exists():
        raise LabelfxIOError(path, "no such file or folder")
    kind = _kind(path)
    try:
        if kind == "tiff":
            image = read_tiff(path, eager_limit)
        elif kind == "zarr":
            image = read_zarr(path, eager_limit)
        elif kind == "folder":
            image = read_folder(path, eager_limit)
        elif kind == "raster":
            image = read_raster(path, eager_limit)
        else:
            raise LabelfxIOError(
                path, "unsupported file type (expected .tif/.tiff, .png/.jpg/.bmp, a .zarr folder or an image folder)")
    except LabelfxIOError:
        raise
    except (AttributeError, TypeError, KeyError, IndexError, ValueError, OSError) as exc:
        # metadata of a shape no check above foresaw: still one line naming the file, never a traceback
        raise LabelfxIOError(path, f"malformed file or metadata ({describe_exception(exc)})") from exc
    _check_usable(path, image)
    declared = image.metadata.get("labels")
    if declared is not None:  # the file's own metadata decides
        image.metadata["labels"] = bool(declared)
        image.metadata["labels_from"] = "metadata"
    else:
        image.metadata["labels"] = bool(
            label_name_hint(path) and not image.rgb
            and (np.issubdtype(image.dtype, np.integer) or image.dtype == bool))
        image.metadata["labels_from"] = "name" if image.metadata["labels"] else None
    return image


def _check_usable(path: Path, image: ImageData) -> None:
    """Refuse what napari and the models cannot show or use (complex/string dtypes, bad scales)."""
    dtype = np.dtype(image.dtype)
    if dtype.kind not in "biuf":
        raise LabelfxIOError(path, f"holds {dtype} data; labelfx reads integer, float or bool images")
    bad = [s for s in image.scale if not (math.isfinite(s) and s > 0)]
    if bad:
        raise LabelfxIOError(path, f"declares the pixel size {tuple(image.scale)} (axes {image.axes}); every "
                                   "scale must be a positive number")


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Facts about an image source without reading its pixels (for ``labelfx info FILE``).

    Returns
    -------
    dict : path, name, format, shape, axes, dtype, scale (per non-channel axis), unit, chunks,
        levels (shape per pyramid level), nbytes (uncompressed level 0), size_on_disk, lazy
        (whether `read_image` keeps it on disk), multiscale, labels, channel_names.
    """
    path = Path(path)
    image = read_image(path, eager_limit=0)  # everything lazy: describe never decodes pixels
    md = image.metadata
    return {
        "path": str(path),
        "name": image.name,
        "format": md.get("format"),
        "shape": list(image.shape),
        "axes": image.axes,
        "dtype": str(image.dtype),
        "scale": list(image.scale),
        "unit": md.get("unit"),
        "chunks": list(image.chunks) if image.chunks is not None else None,
        "levels": [list(map(int, level.shape)) for level in image.levels],
        "nbytes": image.nbytes,
        "size_on_disk": _size_on_disk(path),
        # what a normal read_image would do: pyramids and large sources stay on disk
        "lazy": bool(image.multiscale or image.nbytes >= EAGER_LIMIT_BYTES),
        "multiscale": image.multiscale,
        "labels": bool(md.get("labels")),
        "channel_names": md.get("channel_names"),
    }
