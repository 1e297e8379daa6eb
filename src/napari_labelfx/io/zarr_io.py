"""Zarr v2/v3 arrays and OME-Zarr (NGFF 0.1-0.5) multiscale images, read lazily with zarr 3."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .axes import canonical_permutation, grid_axes, guess_axes, name_unknown, to_micrometres
from .errors import LabelfxIOError, describe_exception
from .image_data import EAGER_LIMIT_BYTES, ImageData
from .lazy import check_plausible_shape, guarded_dask, read_eager

ZARR_METADATA_FILES = ("zarr.json", ".zarray", ".zgroup")
#: Attribute our label writer sets; a reader that sees it opens the array as labels.
LABELS_ATTR = "labelfx_labels"
#: Attribute our writer sets after writing every chunk, so a missing chunk file is an error.
COMPLETE_ATTR = "labelfx_complete_chunks"

_NAME_TO_AXIS = {
    "t": "T", "time": "T",
    "z": "Z", "depth": "Z",
    "c": "C", "ch": "C", "channel": "C", "channels": "C",
    "y": "Y", "x": "X",
    "s": "S", "rgb": "S", "rgba": "S", "samples": "S",
}
_TYPE_TO_AXIS = {"time": "T", "channel": "C"}


def _meta_file(path: Path, sub: str = "") -> Path:
    """The metadata file that holds a node's attributes (for messages naming the file)."""
    folder = path / sub if sub else path
    for name in ("zarr.json", ".zattrs", ".zarray", ".zgroup"):
        if (folder / name).is_file():
            return folder / name
    return folder


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate_ngff(ms: Any, where: Path) -> None:
    """Check the parts of an NGFF ``multiscales`` entry the reader uses; the message names the field."""

    def bad(field: str, problem: str) -> LabelfxIOError:
        return LabelfxIOError(where, f"OME-Zarr metadata field {field} {problem}")

    if not isinstance(ms, dict):
        raise bad("multiscales[0]", f"must be an object, got {ms!r:.60}")
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise bad("multiscales[0].datasets", f"must be a non-empty list, got {datasets!r:.60}")
    for i, d in enumerate(datasets):
        if not isinstance(d, dict) or not isinstance(d.get("path"), (str, int)) or isinstance(d.get("path"), bool):
            raise bad(f"multiscales[0].datasets[{i}]", f"must be an object with a 'path', got {d!r:.60}")
        _validate_transforms(d.get("coordinateTransformations"), f"multiscales[0].datasets[{i}]", bad)
    _validate_transforms(ms.get("coordinateTransformations"), "multiscales[0]", bad)
    axes = ms.get("axes")
    if axes is None:
        return
    if not isinstance(axes, list):
        raise bad("multiscales[0].axes", f"must be a list, got {axes!r:.60}")
    if all(isinstance(a, str) for a in axes):
        return
    for i, a in enumerate(axes):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise bad(f"multiscales[0].axes[{i}]", f"must be an axis name or an object with a 'name', got {a!r:.60}")
        for key in ("type", "unit"):
            if a.get(key) is not None and not isinstance(a[key], str):
                raise bad(f"multiscales[0].axes[{i}].{key}", f"must be a string, got {a[key]!r:.60}")


def _validate_transforms(transforms: Any, where: str, bad: Any) -> None:
    if transforms is None:
        return
    field = f"{where}.coordinateTransformations"
    if not isinstance(transforms, list):
        raise bad(field, f"must be a list of transformations, got {transforms!r:.60}")
    for i, t in enumerate(transforms):
        if not isinstance(t, dict):
            raise bad(f"{field}[{i}]", f"must be an object, got {t!r:.60}")
        kind = t.get("type")
        if kind in ("scale", "translation"):
            values = t.get(kind)
            if values is None and "path" in t:
                continue  # stored in a separate array: not used by this reader
            if not isinstance(values, list) or not all(_is_number(v) for v in values):
                raise bad(f"{field}[{i}].{kind}", f"must be a list of finite numbers, got {values!r:.60}")
            if kind == "scale" and not all(v > 0 for v in values):
                raise bad(f"{field}[{i}].scale", f"must be positive, got {values!r:.60}")


def _validate_plain_attrs(attrs: dict[str, Any], ndim: int, where: Path) -> None:
    """Check the attributes of a plain array (ours: axes, scale, unit; xarray's dimension names)."""

    def bad(field: str, problem: str) -> LabelfxIOError:
        return LabelfxIOError(where, f"Zarr attribute {field!r} {problem}")

    for key in ("axes", "_ARRAY_DIMENSIONS"):
        names = attrs.get(key)
        if names is None or isinstance(names, str):
            continue
        if not isinstance(names, list) or not all(n is None or isinstance(n, str) for n in names):
            raise bad(key, f"must be a string or a list of axis names, got {names!r:.60}")
    scale = attrs.get("scale")
    if scale is not None and isinstance(scale, (list, tuple)) and len(scale) == ndim:
        if not all(_is_number(v) and v > 0 for v in scale):
            raise bad("scale", f"must be positive finite numbers, got {scale!r:.60}")
    elif scale is not None and not isinstance(scale, (list, tuple)):
        raise bad("scale", f"must be a list of numbers, got {scale!r:.60}")
    unit = attrs.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise bad("unit", f"must be a string, got {unit!r:.60}")


def is_zarr_path(path: Path) -> bool:
    """True for a folder that is a Zarr array or group (metadata file present or a .zarr name)."""
    if not path.is_dir():
        return False
    return path.suffix.lower() == ".zarr" or any((path / f).is_file() for f in ZARR_METADATA_FILES)


def _open_node(path: Path) -> Any:
    if not path.is_dir():
        raise LabelfxIOError(path, "no such Zarr folder")
    if not any((path / f).is_file() for f in ZARR_METADATA_FILES):
        raise LabelfxIOError(path, "not a Zarr store (no zarr.json, .zarray or .zgroup)")
    try:
        return zarr.open(store=str(path), mode="r")
    except Exception as exc:
        raise LabelfxIOError(path, f"broken Zarr metadata ({describe_exception(exc)})") from exc


def _axis_letters(names: list[str | None], types: list[str | None], shape: tuple[int, ...]) -> str:
    """Axis letters for named dimensions; names we do not know are filled like unknown axes."""
    out: list[str | None] = []
    for name, kind in zip(names, types):
        letter = _NAME_TO_AXIS.get(str(name).lower()) if name is not None else None
        if letter is None and kind is not None:
            letter = _TYPE_TO_AXIS.get(str(kind).lower())
        out.append(letter if letter not in out else None)
    if "S" in out and (out[-1] != "S" or shape[-1] not in (3, 4)):
        out = [None if a == "S" else a for a in out]  # samples must be a trailing RGB(A) axis
    unknown = [i for i, a in enumerate(out) if a is None]
    if unknown:
        if all(a is None for a in out):
            return guess_axes(shape)
        free = [a for a in "ZCT" if a not in out]
        for i, name in zip(unknown, name_unknown([shape[i] for i in unknown], free)):
            out[i] = name
    if "Y" not in out or "X" not in out:
        raise ValueError(f"no Y and X axes among {names}")
    return "".join(out)  # type: ignore[arg-type]


def _plain_array_axes(arr: Any) -> str:
    """Axes of a plain array: our 'axes' attribute, xarray's dimensions, v3 dimension_names, a guess."""
    attrs = dict(arr.attrs)
    shape = tuple(arr.shape)
    names: Any = attrs.get("axes") or attrs.get("_ARRAY_DIMENSIONS")
    if names is None:
        names = getattr(arr.metadata, "dimension_names", None)
    if isinstance(names, str):
        names = list(names)
    if names is not None and len(names) == len(shape) and any(n is not None for n in names):
        return _axis_letters(list(names), [None] * len(shape), shape)
    return guess_axes(shape, rgb_ok=np.dtype(arr.dtype) == np.uint8)


def _multiscales_attr(attrs: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str | None]:
    """NGFF multiscales list and version: 0.5 nests it under 'ome', 0.1-0.4 put it at the top."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and isinstance(ome.get("multiscales"), list):
        return ome["multiscales"], ome.get("version")
    ms = attrs.get("multiscales")
    if isinstance(ms, list) and ms:
        return ms, ms[0].get("version") if isinstance(ms[0], dict) else None
    return None, None


def _declared_labels(attrs: dict[str, Any]) -> bool | None:
    """True/False when the attributes say whether this is a label image, None when they do not."""
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    if "image-label" in attrs or "image-label" in ome:
        return True
    return bool(attrs[LABELS_ATTR]) if LABELS_ATTR in attrs else None


def _resolve(node: Any, path: Path, depth: int = 0) -> tuple[Any, str]:
    """Descend from a group to the image it holds: an NGFF multiscale group or a single array."""
    if isinstance(node, zarr.Array):
        return node, ""
    attrs = dict(node.attrs)
    if _multiscales_attr(attrs)[0] is not None:
        return node, ""
    arrays = sorted(node.array_keys())
    groups = sorted(node.group_keys())
    if len(arrays) == 1 and not (depth == 0 and "bioformats2raw.layout" in attrs):
        return node[arrays[0]], arrays[0]
    if depth < 3 and not arrays:
        # bioformats2raw puts the image in "0"; a group with one subgroup is a wrapper
        target = "0" if "0" in groups else groups[0] if len(groups) == 1 else None
        if target is not None:
            inner, sub = _resolve(node[target], path, depth + 1)
            return inner, f"{target}/{sub}".rstrip("/")
    what = f"{len(arrays)} arrays ({', '.join(arrays[:5])})" if arrays else "no arrays"
    raise LabelfxIOError(path, f"Zarr group holds {what} and no OME-Zarr 'multiscales'; open one array folder")


def _ngff_scale(ms: dict[str, Any], n: int) -> tuple[list[float], list[float] | None]:
    """Scale (and translation) of level 0: dataset transforms times the multiscale-wide ones."""
    scale = [1.0] * n
    translate: list[float] | None = None

    def apply(transforms: Any) -> None:
        nonlocal translate
        for t in transforms or ():
            if t.get("type") == "scale" and len(t.get("scale", ())) == n:
                scale[:] = [a * float(b) for a, b in zip(scale, t["scale"])]
            elif t.get("type") == "translation" and len(t.get("translation", ())) == n:
                translate = [float(v) for v in t["translation"]]

    apply(ms["datasets"][0].get("coordinateTransformations"))
    apply(ms.get("coordinateTransformations"))
    return scale, translate


def read_zarr(path: str | os.PathLike, eager_limit: int = EAGER_LIMIT_BYTES) -> ImageData:
    """Read a Zarr array, a group holding one array, or an OME-Zarr multiscale image.

    Plain arrays below ``eager_limit`` bytes are read at once; larger ones and every OME-Zarr
    pyramid come back as dask arrays (a list of levels for OME-Zarr).

    Raises
    ------
    LabelfxIOError : not a Zarr store, broken metadata, missing or undecodable chunks.
    """
    path = Path(path)
    node, sub = _resolve(_open_node(path), path)
    name = path.name[: -len(".zarr")] if path.name.lower().endswith(".zarr") else path.name
    if isinstance(node, zarr.Array):
        return _read_plain(node, path, sub, name, eager_limit)
    return _read_multiscale(node, path, sub, name)


def _check_complete(arr: Any, path: Path) -> None:
    """Missing chunks read as the fill value per the Zarr spec; our writer marks arrays where
    every chunk was written, so for those a missing chunk file is detected as damage."""
    if not arr.attrs.get(COMPLETE_ATTR):
        return
    try:
        present, total = int(arr.nchunks_initialized), int(arr.nchunks)
    except Exception as exc:
        raise LabelfxIOError(path, f"cannot list Zarr chunks ({describe_exception(exc)})") from exc
    if present < total:
        raise LabelfxIOError(path, f"{total - present} of {total} chunk files are missing")


def _read_plain(arr: Any, path: Path, sub: str, name: str, eager_limit: int) -> ImageData:
    shape = tuple(int(s) for s in arr.shape)
    if len(shape) < 2 or min(shape) == 0:
        raise LabelfxIOError(path, f"Zarr array has unusable shape {shape}")
    meta_file = _meta_file(path, sub)
    check_plausible_shape(meta_file, shape, tuple(int(c) for c in arr.chunks), np.dtype(arr.dtype))
    _validate_plain_attrs(dict(arr.attrs), len(shape), meta_file)
    try:
        axes = _plain_array_axes(arr)
    except ValueError as exc:
        raise LabelfxIOError(path, f"cannot tell the axes: {exc}") from exc
    _check_complete(arr, path)
    attrs = dict(arr.attrs)
    perm = canonical_permutation(axes)
    canon = "".join(axes[i] for i in perm)
    by_axis: dict[str, float] = {}
    unit = attrs.get("unit")
    if isinstance(attrs.get("scale"), (list, tuple)) and len(attrs["scale"]) == len(shape):
        for a, s in zip(axes, attrs["scale"]):
            by_axis[a] = float(s)
    scale = tuple(by_axis.get(a, 1.0) for a in grid_axes(canon))
    nbytes = math.prod(shape) * np.dtype(arr.dtype).itemsize  # Python ints: no overflow
    if nbytes < eager_limit:
        data: Any = read_eager(lambda: arr[...], str(path))
    else:
        data = guarded_dask(arr, str(path), arr.chunks, [i for i, a in enumerate(axes) if a in "YX"])
    metadata = {
        "path": str(path),
        "format": f"zarr-v{arr.metadata.zarr_format}",
        "unit": unit,
        "labels": _declared_labels(attrs),
        "source_axes": axes,
        "array_path": sub,
        "attributes": attrs,
    }
    return ImageData(
        data=data.transpose(perm), axes=canon, scale=scale, dtype=arr.dtype, multiscale=False,
        name=name, metadata=metadata, chunks=tuple(int(arr.chunks[i]) for i in perm),
    )


def _read_multiscale(group: Any, path: Path, sub: str, name: str) -> ImageData:
    attrs = dict(group.attrs)
    multiscales, version = _multiscales_attr(attrs)
    ms = multiscales[0]  # type: ignore[index]
    meta_file = _meta_file(path, sub)
    _validate_ngff(ms, meta_file)
    datasets = ms["datasets"]
    try:
        levels = [group[str(d["path"])] for d in datasets]
    except Exception as exc:
        raise LabelfxIOError(path, f"OME-Zarr level missing or broken ({describe_exception(exc)})") from exc
    if not all(isinstance(lv, zarr.Array) for lv in levels):
        raise LabelfxIOError(path, "an OME-Zarr dataset path is not an array")
    shape = tuple(int(s) for s in levels[0].shape)
    n = len(shape)
    for d, lv in zip(datasets, levels):
        check_plausible_shape(_meta_file(path, f"{sub}/{d['path']}".strip("/")), tuple(int(v) for v in lv.shape),
                              tuple(int(c) for c in lv.chunks), np.dtype(lv.dtype))
    if any(len(lv.shape) != n for lv in levels):
        raise LabelfxIOError(path, "OME-Zarr levels differ in dimensionality")
    axes_meta = ms.get("axes")
    if axes_meta is None:  # NGFF 0.1/0.2: always (t, c, z, y, x)
        names: list[Any] = list("tczyx"[-n:])
        types: list[Any] = [None] * n
        units: list[Any] = [None] * n
    elif all(isinstance(a, str) for a in axes_meta):  # NGFF 0.3
        names, types, units = list(axes_meta), [None] * n, [None] * n
    else:
        names = [a.get("name") for a in axes_meta]
        types = [a.get("type") for a in axes_meta]
        units = [a.get("unit") for a in axes_meta]
    if len(names) != n:
        raise LabelfxIOError(path, f"OME-Zarr axes {names} do not match the level-0 shape {shape}")
    try:
        axes = _axis_letters(names, types, shape)
    except ValueError as exc:
        raise LabelfxIOError(path, f"cannot tell the axes: {exc}") from exc
    raw_scale, translate = _ngff_scale(ms, n)
    by_axis: dict[str, float] = {}
    out_unit: str | None = None
    factors = [1.0] * n  # length unit -> µm per axis, applied to scale and translation alike
    for i, (a, s, u) in enumerate(zip(axes, raw_scale, units)):
        if a in "ZYX":
            factors[i], unit = to_micrometres(1.0, u)
            out_unit = out_unit or unit
        by_axis[a] = s * factors[i]
    if translate is not None:
        translate = [t * f for t, f in zip(translate, factors)]
    perm = canonical_permutation(axes)
    canon = "".join(axes[i] for i in perm)
    grow = [i for i, a in enumerate(axes) if a in "YX"]
    data = [guarded_dask(lv, str(path), lv.chunks, grow).transpose(perm) for lv in levels]
    metadata: dict[str, Any] = {
        "path": str(path),
        "format": f"ome-zarr-{version or 'unknown'}",
        "unit": out_unit,
        "labels": _declared_labels(attrs),
        "source_axes": axes,
        "array_path": sub,
        "attributes": attrs,
    }
    if translate is not None:
        metadata["translate"] = tuple(
            v for a, v in zip(canon, (translate[i] for i in perm)) if a not in "CS"
        )
    omero = attrs.get("omero") or (attrs.get("ome") or {}).get("omero")
    if isinstance(omero, dict) and "C" in axes:
        labels = [c.get("label") for c in omero.get("channels", [])]
        if labels and all(labels) and len(labels) == shape[axes.index("C")]:
            metadata["channel_names"] = [str(x) for x in labels]
    return ImageData(
        data=data if len(data) > 1 else data[0], axes=canon,
        scale=tuple(by_axis.get(a, 1.0) for a in grid_axes(canon)),
        dtype=levels[0].dtype, multiscale=len(data) > 1, name=name, metadata=metadata,
        chunks=tuple(int(levels[0].chunks[i]) for i in perm),
    )
