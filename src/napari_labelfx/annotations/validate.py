"""Checks with messages a person can act on: each names the image or layer and what is wrong.

Image dtypes: integers of any width, float16/32/64 and bool are accepted (bool is a 0/1 image, e.g. a
binary channel; it is converted to float like the rest). Complex, object, string, datetime and
structured dtypes are refused: none of them is an intensity. Float images must be finite (NaN/inf
would poison the percentile normalisation and every loss).

Axes strings use ``Y`` and ``X`` (required), optional ``Z`` (volume), and at most one channel axis:
``C`` (channels, e.g. fluorescence) or ``S`` (RGB/RGBA samples, last axis as napari's ``rgb``). A
time axis ``T`` (as the io readers name it) is accepted only with a single time point, which is
dropped; time series are refused.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .class_table import ClassTable
from .errors import (
    EmptyAnnotationError,
    ImageError,
    LabelValueError,
    ShapeMismatchError,
    format_values,
)
from .kinds import IGNORE_INDEX, MULTILABEL_IGNORE, LabelKind, TrainingItem

AXIS_LETTERS = "TCSZYX"


def check_axes(axes: str, ndim: int, *, name: str) -> str:
    """Validate an axes string against an image's number of dimensions; return it upper-cased."""
    if not isinstance(axes, str):
        raise ImageError(f"image {name!r}: axes must be a string like 'YX', got {axes!r}")
    ax = axes.upper()
    bad = sorted({a for a in ax if a not in AXIS_LETTERS})
    if bad:
        raise ImageError(f"image {name!r}: axes {axes!r} use unknown letters {bad}; allowed: T, C, S, Z, Y, X")
    if len(set(ax)) != len(ax):
        raise ImageError(f"image {name!r}: axes {axes!r} repeat a letter")
    if "Y" not in ax or "X" not in ax:
        raise ImageError(f"image {name!r}: axes {axes!r} must contain Y and X")
    if "C" in ax and "S" in ax:
        raise ImageError(f"image {name!r}: axes {axes!r} have both C and S; use one channel axis")
    if len(ax) != ndim:
        raise ImageError(
            f"image {name!r} has {ndim} dimensions but axes {axes!r} describe {len(ax)}; "
            "expected e.g. 'YX', 'YXS' (RGB), 'CYX', 'ZYX' or 'CZYX'"
        )
    return ax


def infer_axes(shape: Sequence[int], rgb: bool | None = None, *, name: str = "image") -> str:
    """Guess the axes of an image from its shape (and napari's ``rgb`` flag when known).

    2D -> ``YX``; 3D -> ``YXS`` when RGB (or, with ``rgb=None``, a last axis of 3 or 4), else ``ZYX``;
    4D -> ``ZYXS`` when RGB; anything else is ambiguous and must be given explicitly.
    """
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    rgb_like = bool(rgb) if rgb is not None else (nd in (3, 4) and shape[-1] in (3, 4) and shape[-2] > 4)
    if nd == 2:
        if rgb:
            raise ImageError(f"image {name!r} of shape {shape} is marked RGB but has no sample axis")
        return "YX"
    if nd == 3:
        return "YXS" if rgb_like else "ZYX"
    if nd == 4 and rgb_like:
        return "ZYXS"
    raise ImageError(
        f"image {name!r} has {nd} dimensions (shape {shape}); expected a 2D image, an RGB image, or a "
        "3D volume. Give its axes explicitly (e.g. 'CZYX') or split channels into separate layers"
    )


def spatial_shape(shape: Sequence[int], axes: str) -> tuple[int, ...]:
    """The (Y, X) or (Z, Y, X) shape of an image with the given axes."""
    sizes = dict(zip(axes.upper(), shape))
    return tuple(sizes[a] for a in "ZYX" if a in sizes)


def check_image(image: Any, axes: str, *, name: str, check_finite: bool = True) -> str:
    """Validate an image's dtype, dimensionality, RGB sample count and finiteness; return its axes."""
    dtype = np.dtype(getattr(image, "dtype", np.asarray(image).dtype))
    shape = tuple(getattr(image, "shape", np.shape(image)))
    if dtype.kind not in "biuf":
        what = {"c": "complex", "O": "object", "U": "string", "S": "bytes", "M": "datetime",
                "m": "timedelta", "V": "structured"}.get(dtype.kind, str(dtype))
        raise ImageError(
            f"image {name!r}: dtype {dtype} ({what}) is not supported; use an integer, float or bool image"
        )
    ax = check_axes(axes, len(shape), name=name)
    sizes = dict(zip(ax, shape))
    if "S" in sizes and sizes["S"] not in (3, 4):
        raise ImageError(
            f"image {name!r}: the RGB sample axis S has {sizes['S']} entries; expected 3 (RGB) or 4 (RGBA)"
        )
    if sizes.get("T", 1) != 1:
        raise ImageError(
            f"image {name!r} is a time series ({sizes['T']} time points); pick one time point to annotate"
        )
    if any(s < 1 for s in shape):
        raise ImageError(f"image {name!r} is empty (shape {shape})")
    if check_finite and dtype.kind == "f":
        arr = np.asarray(image)
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ImageError(
                f"image {name!r} contains {bad} NaN/inf value{'s' if bad != 1 else ''}; replace them "
                "(e.g. with 0) before training"
            )
    return ax


def check_label_shape(
    label_shape: Sequence[int], image_spatial_shape: Sequence[int], *, layer_name: str, image_name: str
) -> None:
    """A label layer must cover its image pixel for pixel (same Y, X and Z sizes)."""
    ls, ims = tuple(int(s) for s in label_shape), tuple(int(s) for s in image_spatial_shape)
    if ls != ims:
        hint = ""
        if len(ls) == len(ims) + 1 and ls[1:] == ims:
            hint = " (the label layer has an extra leading axis: is it per-channel?)"
        elif len(ls) + 1 == len(ims) and ls == ims[1:]:
            hint = " (a 2D label layer on a volume: paint it in a 3D layer of the volume's shape)"
        raise ShapeMismatchError(
            f"label layer {layer_name!r} has shape {ls} but image {image_name!r} has spatial shape "
            f"{ims}{hint}"
        )


def check_label_values(
    data: Any,
    kind: LabelKind | str,
    class_table: ClassTable,
    *,
    layer_name: str,
    values_are_classes: bool | None = None,
) -> None:
    """Refuse label values the class table cannot interpret.

    Scribble values must be class index + 1 (1..K). With ``values_are_classes=True`` (semantic
    masks of any kind, where instance ids are not expected) every nonzero value must be a class value.
    """
    kind = LabelKind(kind)
    arr = np.asarray(data)
    if values_are_classes is None:
        values_are_classes = kind is LabelKind.SCRIBBLE
    if not values_are_classes or arr.size == 0:
        return
    present = np.unique(arr)
    present = present[present != 0]
    if kind is LabelKind.SCRIBBLE:
        allowed = np.arange(1, class_table.num_classes + 1)
        legend = ", ".join(f"{i + 1} = {n}" for i, n in enumerate(class_table.names))
    else:
        allowed = np.asarray(class_table.values[1:])
        legend = ", ".join(f"{e.value} = {e.name}" for e in class_table.foreground)
    missing = np.setdiff1d(present, allowed)
    if missing.size:
        raise LabelValueError(
            f"{kind.value} layer {layer_name!r}: label values {format_values(missing)} are not in the "
            f"class table ({legend or 'no foreground class'}); add classes or repaint them"
        )


def count_known(target: np.ndarray | None, multilabel: bool) -> int:
    """Number of annotated (not unknown) pixels of a target."""
    if target is None:
        return 0
    if multilabel:
        return int(np.count_nonzero((target != MULTILABEL_IGNORE).any(axis=0)))
    return int(np.count_nonzero(target != IGNORE_INDEX))


def check_has_annotation(items: Sequence[TrainingItem]) -> None:
    """A training request needs at least one annotated pixel or one image-level tag somewhere."""
    if not items:
        raise EmptyAnnotationError("nothing to train on: no image was given")
    for it in items:
        multilabel = it.target is not None and it.target.dtype == np.uint8
        if count_known(it.target, multilabel) > 0:
            return
        if it.tags is not None and np.any(it.tags > 0):
            return
        if any(np.any(v > 0) for v in it.extra.get("slice_tags", {}).values()):
            return
    names = ", ".join(repr(it.name) for it in items)
    raise EmptyAnnotationError(
        f"nothing to train on: no annotated pixel and no image tag in {names}. Paint a strong mask, "
        "scribbles or weak shapes, or tag the images, then train again"
    )
