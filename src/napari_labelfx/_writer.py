"""npe2 single-layer writers for Labels layers (no Qt here)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .io.safety import is_saved_layer
from .io.writer import write_labels


def _with_suffix(path: str, allowed: tuple[str, ...]) -> Path:
    p = Path(path)
    return p if p.suffix.lower() in allowed else p.with_name(p.name + allowed[0])


def _json_items(values: Any) -> dict[str, Any]:
    """The JSON-serialisable entries of a layer's metadata dict (others cannot go in a file)."""
    out: dict[str, Any] = {}
    for key, value in dict(values or {}).items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def _file_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    md: dict[str, Any] = {"name": meta.get("name")}
    if meta.get("translate") is not None:
        md["translate"] = [float(t) for t in meta["translate"]]
    layer_md = _json_items(meta.get("metadata"))
    if layer_md:
        md["layer_metadata"] = layer_md
    return md


def _axes(meta: dict[str, Any], ndim: int) -> str | None:
    axes = (meta.get("metadata") or {}).get("labelfx_axes")
    return axes if isinstance(axes, str) and len(axes) == ndim and "S" not in axes else None


def _write(path: Path, data: Any, meta: dict[str, Any]) -> list[str]:
    level0 = data[0] if isinstance(data, (list, tuple)) else data
    scale = meta.get("scale")
    write_labels(
        path, data, scale=None if scale is None else [float(s) for s in scale],
        metadata=_file_metadata(meta), axes=_axes(meta, len(level0.shape)),
        # saving a layer again over a layer saved here before is the person's intent; anything
        # else at the path (someone's file, a Zarr group, a folder) is still refused
        overwrite=is_saved_layer(path),
    )
    return [str(path)]


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer to .tif (ImageJ hyperstack for uint8/uint16), keeping ``meta['scale']``."""
    return _write(_with_suffix(path, (".tif", ".tiff")), data, meta)


def write_labels_zarr(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer to a .zarr (v3) folder, keeping ``meta['scale']``."""
    return _write(_with_suffix(path, (".zarr",)), data, meta)
