"""TIFF, OME-TIFF and ImageJ hyperstack reading (tifffile), lazy for large files."""
from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from .axes import canonical_permutation, grid_axes, name_unknown, to_micrometres
from .errors import LabelfxIOError, describe_exception
from .image_data import EAGER_LIMIT_BYTES, ImageData
from .lazy import guarded_dask, read_eager

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
#: Key under which our writer stores its JSON metadata (shaped description or ImageJ "Info").
LABELFX_KEY = "labelfx"
_RGB_PHOTOMETRIC = {tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR}


#: Words in tifffile's logged errors that mean the file structure is damaged (tifffile then
#: carries on with whatever pages it could parse, e.g. one page of a truncated stack).
_FATAL_LOG_MARKERS = ("offset", "corrupt", "reshape", "truncat")


@contextmanager
def _collect_tifffile_warnings():
    """Capture tifffile's logged warnings/errors as (levelno, message) to judge and quote them."""
    records: list[tuple[int, str]] = []

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.levelno, record.getMessage()))

    logger = logging.getLogger("tifffile")
    handler = _Handler(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def is_tiff_path(path: Path) -> bool:
    """True for a file with a TIFF extension."""
    return path.suffix.lower() in TIFF_SUFFIXES


def _labelfx_metadata(tif: tifffile.TiffFile) -> dict[str, Any] | None:
    """The JSON block our writer stored, from a shaped description or an ImageJ 'Info' entry."""
    for md in tif.shaped_metadata or ():
        if isinstance(md, dict) and isinstance(md.get(LABELFX_KEY), dict):
            return md[LABELFX_KEY]
    ij = tif.imagej_metadata or {}
    info = ij.get("Info")
    if isinstance(info, str) and LABELFX_KEY in info:
        try:
            block = json.loads(info).get(LABELFX_KEY)
        except (ValueError, AttributeError):
            return None
        return block if isinstance(block, dict) else None
    return None


def _normalise_axes(raw: str, shape: tuple[int, ...], rgb_photometric: bool) -> str:
    """Map tifffile axis letters onto "TZCYX" + "S" (RGB samples only)."""
    out: list[str | None] = []
    for letter, size in zip(raw, shape):
        if letter in "TZCYX" and letter not in out:
            out.append(letter)
        elif letter == "S" and rgb_photometric and size in (3, 4) and "S" not in out:
            out.append("S")
        elif letter == "S" and "C" not in raw and "C" not in out:
            out.append("C")  # extra samples that are not colour (e.g. grey + alpha, multi-band)
        else:
            out.append(None)  # I, Q and OME modulo axes: meaning unknown
    unknown = [i for i, a in enumerate(out) if a is None]
    if unknown:
        free = [a for a in "ZCT" if a not in out]
        names = name_unknown([shape[i] for i in unknown], free)
        for i, name in zip(unknown, names):
            out[i] = name
    return "".join(out)  # type: ignore[arg-type]


def _ome_pixels(tif: tifffile.TiffFile, series_index: int) -> ET.Element | None:
    """The OME <Pixels> element of the image read as ``series_index``."""
    xml = tif.ome_metadata
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"]
    if not pixels:
        return None
    return pixels[min(series_index, len(pixels) - 1)]


def _scale_from_ome(pixels: ET.Element) -> tuple[dict[str, float], str | None]:
    scale: dict[str, float] = {}
    unit_out: str | None = None
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        if value is None:
            continue
        um, unit_out = to_micrometres(float(value), pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        scale[axis] = um
    if pixels.get("TimeIncrement") is not None:
        scale["T"] = float(pixels.get("TimeIncrement"))
    return scale, unit_out


def _resolution_scale(page: Any, raw: bool = False) -> tuple[dict[str, float], str | None]:
    """Pixel size from the X/YResolution tags (pixels per unit); ``raw`` ignores ResolutionUnit."""
    try:
        xres, yres = page.resolution
    except Exception:
        return {}, None
    if not (xres and yres) or xres <= 0 or yres <= 0:
        return {}, None
    if raw:
        return {"X": 1.0 / xres, "Y": 1.0 / yres}, None
    unit = page.resolutionunit
    factor = {
        tifffile.RESUNIT.CENTIMETER: 1e4,
        tifffile.RESUNIT.MILLIMETER: 1e3,
        tifffile.RESUNIT.MICROMETER: 1.0,
    }.get(unit)
    if factor is None and unit == tifffile.RESUNIT.INCH and xres > 1000:
        # image editors write 72-300 dpi that says nothing about the sample; microscopes and
        # slide scanners that use inches write thousands of dots per inch
        factor = 25400.0
    if factor is not None:
        return {"X": factor / xres, "Y": factor / yres}, "um"
    return {}, None  # ResolutionUnit NONE outside ImageJ: no physical size


def _tiff_scale(
    tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, own: dict[str, Any] | None
) -> tuple[dict[str, float], str | None]:
    """Scale per axis letter (file's own metadata first: ours, OME, ImageJ, resolution tags)."""
    if own and own.get("scale") and own.get("axes"):
        return dict(zip(own["axes"], (float(s) for s in own["scale"]))), own.get("unit")
    if tif.is_ome:
        pixels = _ome_pixels(tif, 0)
        if pixels is not None:
            scale, unit = _scale_from_ome(pixels)
            if scale:
                return scale, unit
    if tif.is_imagej:
        ij = tif.imagej_metadata or {}
        unit = ij.get("unit")
        if unit:
            # ImageJ: X/YResolution are pixels per calibration unit, spacing is Z in that unit
            scale, _ = _resolution_scale(series.keyframe, raw=True)
            if ij.get("spacing"):
                scale["Z"] = float(ij["spacing"])
            out_unit: str | None = unit
            for k in list(scale):
                scale[k], out_unit = to_micrometres(scale[k], unit)
        else:
            scale, out_unit = _resolution_scale(series.keyframe)
            if ij.get("spacing"):
                scale["Z"] = float(ij["spacing"])
        if ij.get("finterval"):
            scale["T"] = float(ij["finterval"])
        return scale, out_unit
    return _resolution_scale(series.keyframe)


def _check_extent(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, path: Path) -> None:
    """Raise when the pixel data the file points to lies beyond its end (a truncated file)."""
    size = tif.filehandle.size
    if series.dataoffset is not None:
        end = int(series.dataoffset) + int(series.nbytes)
        if end > size:
            raise LabelfxIOError(path, f"file is truncated: pixel data needs {end} bytes, file has {size}")
        return
    pages = [series.keyframe]
    try:
        last = series.pages[len(series.pages) - 1]
        if last is not None:
            pages.append(last)
    except Exception:  # lazily indexed frames: the key frame check below still applies
        pass
    for page in pages:
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        ends = [int(o) + int(c) for o, c in zip(offsets, counts) if c]
        if ends and max(ends) > size:
            raise LabelfxIOError(
                path, f"file is truncated: a strip/tile ends at byte {max(ends)}, file has {size} bytes"
            )


def _channel_names(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> list[str] | None:
    if tif.is_ome:
        pixels = _ome_pixels(tif, 0)
        if pixels is not None:
            names = [el.get("Name") for el in pixels if el.tag.rsplit("}", 1)[-1] == "Channel"]
            if names and all(names):
                return [str(n) for n in names]
    labels = (tif.imagej_metadata or {}).get("Labels")
    if isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels):
        return labels
    return None


def read_tiff(path: str | os.PathLike, eager_limit: int = EAGER_LIMIT_BYTES) -> ImageData:
    """Read a TIFF, OME-TIFF or ImageJ hyperstack (first series; pyramid levels when present).

    Files whose level 0 is below ``eager_limit`` bytes are read at once; larger ones become dask
    arrays reading through ``series.aszarr()`` one chunk (strip/tile/page) at a time.

    Raises
    ------
    LabelfxIOError : not a TIFF, truncated or otherwise unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelfxIOError(path, "no such file")
    with _collect_tifffile_warnings() as warnings_seen:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise LabelfxIOError(path, f"not a readable TIFF file ({describe_exception(exc)})") from exc
        try:
            return _read_open_tiff(tif, path, eager_limit, warnings_seen)
        except LabelfxIOError as exc:
            if warnings_seen and "tifffile:" not in exc.problem:
                raise LabelfxIOError(path, f"{exc.problem}; tifffile: {warnings_seen[0][1]}") from exc
            raise
        except Exception as exc:
            hint = f"; tifffile: {warnings_seen[0][1]}" if warnings_seen else ""
            raise LabelfxIOError(path, f"cannot read TIFF ({describe_exception(exc)}){hint}") from exc
        finally:
            tif.close()


def _raise_on_damage(path: Path, logged: list[tuple[int, str]]) -> None:
    """Turn tifffile's logged structural errors into an error instead of a silently short stack."""
    for level, message in logged:
        if level >= logging.ERROR and any(m in message.lower() for m in _FATAL_LOG_MARKERS):
            raise LabelfxIOError(path, f"damaged or truncated TIFF (tifffile: {message})")


def _own_shape(own: dict[str, Any] | None, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Shape recorded by our writer when it matches the file's data up to length-1 dimensions."""
    if not own or not isinstance(own.get("axes"), str):
        return None
    recorded = tuple(int(s) for s in own.get("shape") or shape)
    if len(recorded) != len(own["axes"]):
        return None
    if tuple(s for s in recorded if s != 1) != tuple(s for s in shape if s != 1):
        return None
    return recorded


def _read_open_tiff(
    tif: tifffile.TiffFile, path: Path, eager_limit: int, logged: list[tuple[int, str]]
) -> ImageData:
    if not tif.series:
        _raise_on_damage(path, logged)
        raise LabelfxIOError(path, "TIFF holds no image series")
    series = tif.series[0]
    _ = series.keyframe, tif.imagej_metadata, tif.shaped_metadata  # parse what can log damage
    _raise_on_damage(path, logged)
    shape = tuple(int(s) for s in series.shape)
    if len(shape) < 2 or min(shape) == 0:
        raise LabelfxIOError(path, f"TIFF image has unusable shape {shape}")
    own = _labelfx_metadata(tif)
    rgb = series.keyframe.photometric in _RGB_PHOTOMETRIC and not (own and own.get("labels"))
    try:
        axes = _normalise_axes(series.axes, shape, rgb)
    except ValueError as exc:
        raise LabelfxIOError(path, f"unsupported axes {series.axes!r}: {exc}") from exc
    # our writer's shape and axes; tifffile drops length-1 dimensions, which we put back
    file_axes = axes  # of the (squeezed) array tifffile hands out
    own_shape = _own_shape(own, shape)
    if own_shape is not None:
        axes = own["axes"]
    _check_extent(tif, series, path)

    scale_by_axis, unit = _tiff_scale(tif, series, own)
    perm = canonical_permutation(axes)
    canon = "".join(axes[i] for i in perm)
    scale = tuple(scale_by_axis.get(a, 1.0) for a in grid_axes(canon))

    nbytes = int(np.prod(shape, dtype=np.int64)) * series.dtype.itemsize
    levels = list(series.levels) if len(series.levels) > 1 else [series]
    native = shape
    if nbytes < eager_limit and len(levels) == 1:
        arrays: list[Any] = [read_eager(series.asarray, str(path)).reshape(shape)]
        _raise_on_damage(path, logged)
    else:
        arrays = []
        for i, level in enumerate(levels):
            store = series.aszarr(level=i)
            z = zarr.open_array(store, mode="r")
            if tuple(z.shape) != tuple(level.shape):
                raise LabelfxIOError(path, f"level {i} shape {z.shape} does not match {level.shape}")
            grow = [j for j, a in enumerate(file_axes) if a in "YX"]
            arrays.append(guarded_dask(z, str(path), z.chunks, grow))
            if i == 0:
                native = tuple(int(c) for c in z.chunks)
    if own_shape is not None and own_shape != shape:
        arrays = [a.reshape(own_shape) for a in arrays]
        squeezed = iter(native)
        native = tuple(next(squeezed) if n != 1 else 1 for n in own_shape)
        shape = own_shape
    arrays = [a.transpose(perm) for a in arrays]

    metadata: dict[str, Any] = {
        "path": str(path),
        "format": "ome-tiff" if tif.is_ome else "imagej-tiff" if tif.is_imagej else "tiff",
        "unit": unit,
        "source_axes": series.axes,
        "labels": bool(own.get("labels")) if own else None,  # None: the file does not say
    }
    names = _channel_names(tif, series)
    if names and "C" in canon and len(names) == shape[axes.index("C")]:
        metadata["channel_names"] = names
    if own:
        metadata["labelfx"] = own
    return ImageData(
        data=arrays if len(arrays) > 1 else arrays[0],
        axes=canon,
        scale=scale,
        dtype=series.dtype,
        multiscale=len(arrays) > 1,
        name=_stem(path),
        metadata=metadata,
        chunks=tuple(native[i] for i in perm),
    )


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
