"""npe2 reader: napari LayerData tuples from `io.read_image` (no Qt here)."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .io.axes import grid_axes
from .io.image_data import ImageData
from .io.reader import can_read, read_image

PathLike = str | os.PathLike
LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> Callable[..., list[LayerData]] | None:
    """Return `read_layers` when every path is something we read, else None (napari asks others)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if paths and all(can_read(p) for p in paths):
        return read_layers
    return None


def read_layers(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Open one or more paths as napari layers.

    Channels become separate image layers (``channel_axis``) unless the image is RGB(A)
    (``rgb=True``); OME-Zarr and TIFF pyramids open with ``multiscale=True``; a file whose
    metadata or name says it holds labels (integer data) opens as a Labels layer.

    Raises
    ------
    LabelfxIOError : a path is corrupt or unsupported (napari shows the message).
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers.extend(image_to_layer_data(read_image(p)))
    return layers


def _written_translate(image: ImageData) -> tuple[float, ...] | None:
    """The layer ``translate`` our Labels writer stored in the file's metadata, if valid."""
    import math

    md = image.metadata
    own = md.get("labelfx") if isinstance(md.get("labelfx"), dict) else None  # TIFF block
    attrs = md.get("attributes") if isinstance(md.get("attributes"), dict) else {}
    if own is None and "labelfx_labels" in attrs:  # Zarr written by write_labels
        own = attrs
    extra = own.get("metadata") if isinstance(own, dict) else None
    t = extra.get("translate") if isinstance(extra, dict) else None
    if (isinstance(t, list) and len(t) == len(image.axes)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in t)):
        return tuple(float(v) for v in t)
    return None


def image_to_layer_data(image: ImageData) -> list[LayerData]:
    """LayerData for one opened image (shared with sample data and widgets)."""
    md = image.metadata
    layer_meta: dict[str, Any] = {
        "labelfx_source": md.get("path"),
        "labelfx_format": md.get("format"),
        "labelfx_unit": md.get("unit"),
    }
    kwargs: dict[str, Any] = {"name": image.name}
    if image.multiscale:
        kwargs["multiscale"] = True
    integer = np.issubdtype(image.dtype, np.integer) or image.dtype == bool
    if image.is_labels and integer and not image.rgb:
        data = image.data
        if image.dtype == bool:  # napari Labels want integer values
            data = [lv.astype(np.uint8) for lv in data] if image.multiscale else data.astype(np.uint8)
        grid = iter(image.scale)
        kwargs["scale"] = tuple(1.0 if a == "C" else next(grid) for a in image.axes)
        if "translate" in md:
            t = iter(md["translate"])
            kwargs["translate"] = tuple(0.0 if a == "C" else next(t) for a in image.axes)
        written = _written_translate(image)
        if written is not None:  # what our Labels writer stored: restore it, as it was saved
            kwargs["translate"] = written
        kwargs["metadata"] = {**layer_meta, "labelfx_axes": image.axes}
        return [(data, kwargs, "labels")]

    kwargs["scale"] = image.scale
    if "translate" in md:
        kwargs["translate"] = tuple(md["translate"])
    layer_axes = grid_axes(image.axes)
    if image.rgb:
        kwargs["rgb"] = True
        layer_axes += "S"
    if image.channel_axis is not None:
        kwargs["channel_axis"] = image.channel_axis
        n_channels = image.shape[image.channel_axis]
        names = md.get("channel_names") or [f"{image.name} [{i}]" for i in range(n_channels)]
        kwargs["name"] = list(names) if n_channels > 1 else image.name
    kwargs["metadata"] = {**layer_meta, "labelfx_axes": layer_axes}
    return [(image.data, kwargs, "image")]
