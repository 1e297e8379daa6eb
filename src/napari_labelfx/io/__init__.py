"""Readers and writers: TIFF/OME-TIFF/ImageJ, Zarr v2/v3, OME-Zarr, image folders; atomic writes.

No Qt here. Large sources open lazily (dask) and corrupt ones raise `LabelfxIOError`.
"""
from .atomic import atomic_path
from .errors import LabelfxIOError
from .image_data import EAGER_LIMIT_BYTES, ImageData
from .reader import can_read, describe, label_name_hint, read_image
from .writer import read_labels, write_image, write_labels

__all__ = [
    "EAGER_LIMIT_BYTES",
    "ImageData",
    "LabelfxIOError",
    "atomic_path",
    "can_read",
    "describe",
    "label_name_hint",
    "read_image",
    "read_labels",
    "write_image",
    "write_labels",
]
