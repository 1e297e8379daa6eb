"""Slab-by-slab prediction of volumes larger than memory, written to Zarr as it goes.

The image is read along its first spatial axis (Z for volumes, Y for 2D images) one slab at a time,
a slab being one window depth. All windows starting at the same Z are predicted and blended into
an accumulator that is only one window deep; rows in front of the next window start can receive no
further contribution, so they are divided by their weights, turned into labels and written out,
and the accumulator slides on. Peak memory is set by the slab, not by the volume.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
import zarr
from torch import nn

from napari_labelfx.inference._runtime import (
    Blender,
    TileForward,
    accumulator_device,
    check_image,
    eval_mode,
    is_slicewise,
    model_attr,
    normalise_roi,
    pad_to_roi,
    report_progress,
    resolve_device,
)
from napari_labelfx.inference.errors import InferenceError
from napari_labelfx.inference.labels import labels_dtype, probabilities_to_labels
from napari_labelfx.inference.sliding_window import iter_tile_batches
from napari_labelfx.inference.tiling import tile_grid, tile_starts
from napari_labelfx.io.atomic import atomic_path
from napari_labelfx.io.safety import check_destination
from napari_labelfx.io.zarr_io import COMPLETE_ATTR, LABELS_ATTR


class _Normaliser:
    """Per-channel ``(x - low) / (high - low)`` on a batch of raw tiles (B, C, ...), as float32.

    Same formula as :func:`napari_labelfx.core.normalize.apply_normalisation`; applied per batch so the
    slab stays in its raw dtype (a uint16 slab is half the size of a float32 one).
    """

    def __init__(self, normalisation: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.lo = self.scale = None
        if normalisation is not None:
            lo = np.asarray(normalisation[0], np.float32).reshape(-1)
            hi = np.asarray(normalisation[1], np.float32).reshape(-1)
            self.lo, self.scale = lo, np.maximum(hi - lo, 1e-6)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        out = tiles.astype(np.float32)  # always a copy: the caller's data is never modified
        if self.lo is not None:
            shape = (1, -1) + (1,) * (tiles.ndim - 2)
            out -= self.lo.reshape(shape)
            out /= self.scale.reshape(shape)
        return out


#: Finished rows are handed out in blocks of at most this many rows, to keep temporaries small.
BLOCK_ROWS = 8


@torch.inference_mode()
def stream_probabilities(
    model: nn.Module,
    image: Any,
    roi_size: int | Sequence[int],
    overlap: float = 0.25,
    batch_size: int = 4,
    blend: str = "gaussian",
    tta: bool = False,
    device: str | torch.device | None = None,
    multilabel: bool | None = None,
    normalisation: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Any = None,
    amp: bool = True,
    block_rows: int = BLOCK_ROWS,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, probabilities (K, n, *rest))`` for consecutive finished ranges of the first axis.

    Same parameters as :func:`~napari_labelfx.inference.sliding_window_predict`, plus
    ``normalisation``: per-channel ``(low, high)`` values mapped to 0 and 1 on each slab as it is read
    (None: the image is already normalised), and ``block_rows``: the most rows per yielded block.
    The blocks tile ``[0, image.shape[1])`` in order and equal the in-memory prediction up to float
    rounding. Memory: one slab of the input (C x roi depth x plane, raw dtype), the accumulator
    ((K-1) x roi depth x plane, float32; K when multi-label), one batch of tiles through the model,
    and one block. A volume ``(C, Z, Y, X)`` given to a 2D model is predicted slice by slice: one
    block per Z slice, with only that slice in memory.
    """
    if batch_size < 1 or block_rows < 1:
        raise InferenceError(f"batch_size and block_rows must be >= 1, got {batch_size} and {block_rows}")
    if is_slicewise(model, image):
        yield from _stream_slices(model, image, roi_size, overlap, batch_size, blend, tta, device, multilabel,
                                  normalisation, progress, amp)
        return
    check_image(model, image, None if isinstance(roi_size, (int, np.integer)) else len(roi_size))
    spatial = tuple(int(s) for s in image.shape[1:])
    roi = normalise_roi(roi_size, len(spatial))
    padded = tuple(max(s, r) for s, r in zip(spatial, roi))
    axis_starts = [tile_starts(s, r, overlap) for s, r in zip(padded, roi)]
    z_starts = axis_starts[0]
    # windows inside one slab: first-axis offset 0, every in-plane position
    plane = [(0, *s) for s in tile_grid(padded[1:], roi[1:], overlap)]
    total = len(z_starts) * len(plane)
    dev = resolve_device(model, device)
    if multilabel is None:
        multilabel = bool(model_attr(model, "multilabel", False))
    k_guess = model_attr(model, "num_classes", 1)
    acc_dev = accumulator_device(dev, 4 * k_guess * roi[0] * int(np.prod(padded[1:])))
    crop_rest = tuple(slice(0, s) for s in spatial[1:])

    model.to(dev)
    # torch.inference_mode() as a decorator of a generator is active only while it runs, not while
    # the consumer handles a yielded block
    with eval_mode(model):
        forward = TileForward(model, dev, len(spatial), multilabel, tta, amp)
        blender = Blender(padded, roi, axis_starts, blend, acc_dev, window_rows=roi[0], implicit_last=not multilabel)
        prepare = _Normaliser(normalisation)
        done = 0
        for i, z in enumerate(z_starts):
            # the raw slab (one window deep, whole plane) is the only part of the input in memory
            slab = pad_to_roi(np.asarray(image[:, z : min(z + roi[0], spatial[0])]), roi)
            for batch, probs in iter_tile_batches(forward, slab, plane, roi, batch_size, prepare):
                blender.add(batch, probs)
                done += len(batch)
                report_progress(progress, len(batch), done, total)
            del slab
            # rows before the next window start receive no further contribution
            finished = (z_starts[i + 1] if i + 1 < len(z_starts) else padded[0]) - z
            real = min(z + finished, spatial[0]) - z
            for r in range(0, max(real, 0), block_rows):
                stop = min(r + block_rows, real)
                block = blender.result(r, stop)[(slice(None), slice(None), *crop_rest)]
                yield z + r, np.ascontiguousarray(block.cpu().numpy(), dtype=np.float32)
            blender.advance(finished)


def _slice_roi(roi_size: int | Sequence[int]) -> tuple[int, ...]:
    """The in-plane window of a 2D model on a volume (a 3D size keeps its last two entries)."""
    if isinstance(roi_size, (int, np.integer)):
        return normalise_roi(roi_size, 2)
    return normalise_roi(tuple(roi_size)[-2:], 2)


def _stream_slices(
    model: nn.Module, image: Any, roi_size: int | Sequence[int], overlap: float, batch_size: int, blend: str,
    tta: bool, device: str | torch.device | None, multilabel: bool | None,
    normalisation: tuple[np.ndarray, np.ndarray] | None, progress: Any, amp: bool,
) -> Iterator[tuple[int, np.ndarray]]:
    """A 2D model on a volume ``(C, Z, Y, X)``: yield ``(z, probabilities (K, 1, Y, X))`` slice by slice.

    Only one raw slice, one slice-sized accumulator and one batch of tiles are in memory at a time.
    """
    depth = int(image.shape[1])
    plane = tuple(int(s) for s in image.shape[2:])
    # shape-only stand-in: indexing a zarr/dask source just to check it would read pixels
    check_image(model, _Shape((int(image.shape[0]), *plane)), 2)
    roi = _slice_roi(roi_size)
    padded = tuple(max(s, r) for s, r in zip(plane, roi))
    axis_starts = [tile_starts(s, r, overlap) for s, r in zip(padded, roi)]
    starts = tile_grid(padded, roi, overlap)
    total = depth * len(starts)
    dev = resolve_device(model, device)
    if multilabel is None:
        multilabel = bool(model_attr(model, "multilabel", False))
    k_guess = model_attr(model, "num_classes", 1)
    acc_dev = accumulator_device(dev, 4 * k_guess * int(np.prod(padded)))
    crop = (slice(None), slice(0, plane[0]), slice(0, plane[1]))
    model.to(dev)
    with eval_mode(model):
        forward = TileForward(model, dev, 2, multilabel, tta, amp)
        prepare = _Normaliser(normalisation)
        done = 0
        for z in range(depth):
            raw = pad_to_roi(np.asarray(image[:, z]), roi)
            blender = Blender(padded, roi, axis_starts, blend, acc_dev, implicit_last=not multilabel)
            for batch, probs in iter_tile_batches(forward, raw, starts, roi, batch_size, prepare):
                blender.add(batch, probs)
                done += len(batch)
                report_progress(progress, len(batch), done, total)
            block = blender.result(0, padded[0], inplace=True)[crop]
            yield z, np.ascontiguousarray(block.cpu().numpy()[:, None], dtype=np.float32)


class _Shape:
    """An object with only a ``shape`` (for shape checks)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def _default_chunks(shape: Sequence[int], axes: str) -> tuple[int, ...]:
    """About 1-4 MB chunks, like the io label writer: (16, 256, 256) bricks in volumes, 1024^2 in 2D."""
    out = []
    for size, a in zip(shape, axes):
        if a in "YX":
            out.append(min(size, 256 if "Z" in axes else 1024))
        elif a == "Z":
            out.append(min(size, 16))
        else:
            out.append(1)
    return tuple(out)


class _ZarrOut:
    """A label/confidence array written row range by row range, created in a temporary folder."""

    def __init__(self, tmp: Path, shape: tuple[int, ...], dtype: Any, axes: str, chunks: Sequence[int] | None,
                 attributes: dict[str, Any]) -> None:
        chunk_shape = tuple(int(c) for c in chunks) if chunks is not None else _default_chunks(shape, axes)
        if len(chunk_shape) != len(shape):
            raise InferenceError(f"chunks {chunk_shape} must have one entry per axis of the output {shape}")
        self.array = zarr.create_array(
            store=str(tmp), shape=shape, dtype=dtype, chunks=chunk_shape, fill_value=0, zarr_format=3,
            dimension_names=[a.lower() for a in axes], attributes=attributes,
            config={"write_empty_chunks": True},  # every chunk on disk: a missing one means damage
        )

    def write(self, index: tuple[slice, ...], block: np.ndarray) -> None:
        self.array[index] = block

    def close(self) -> None:
        self.array.attrs[COMPLETE_ATTR] = True


class _TiffOut:
    """A float32 TIFF written through a memory map (pages reach the disk, not the heap)."""

    def __init__(self, tmp: Path, shape: tuple[int, ...], dtype: Any, metadata: dict[str, Any] | None = None) -> None:
        # the metadata carries the labelfx block, so a later run may replace this file (io.safety)
        self.array = tifffile.memmap(str(tmp), shape=shape, dtype=dtype, photometric="minisblack", bigtiff=True,
                                     metadata=metadata)

    def write(self, index: tuple[slice, ...], block: np.ndarray) -> None:
        self.array[index] = block
        self.array.flush()

    def close(self) -> None:
        self.array.flush()
        del self.array


def predict_to_zarr(
    model: nn.Module,
    image: Any,
    out_path: str | os.PathLike,
    roi_size: int | Sequence[int],
    overlap: float = 0.25,
    batch_size: int = 4,
    blend: str = "gaussian",
    tta: bool = False,
    device: str | torch.device | None = None,
    multilabel: bool | None = None,
    normalisation: tuple[np.ndarray, np.ndarray] | None = None,
    threshold: float = 0.5,
    confidence_path: str | os.PathLike | None = None,
    axes: str | None = None,
    scale: Sequence[float] | None = None,
    unit: str | None = None,
    chunks: Sequence[int] | None = None,
    attrs: dict[str, Any] | None = None,
    progress: Any = None,
    amp: bool = True,
    overwrite: bool = False,
) -> Path:
    """Stream the labels (and optionally the confidence) of a large image into Zarr.

    ``out_path`` becomes a Zarr v3 array of labels (uint8, or uint16 above 256 classes; ``(K, *spatial)``
    0/1 per class when multi-label) that the io reader opens as labels. ``confidence_path`` (``.zarr``
    or ``.tif``) receives the float32 confidence, written the same way. Everything is written in
    temporary paths beside the outputs and renamed at the end, so a failed run leaves no half-written
    files. Other parameters as in :func:`stream_probabilities`; ``axes`` names the spatial axes
    (default ``"ZYX"``/``"YX"``), ``scale``/``unit`` the pixel size per spatial axis. Existing
    outputs that labelfx did not write are refused unless ``overwrite`` (see `io.safety`).

    Returns
    -------
    Path : ``out_path``.
    """
    out_path = Path(out_path)
    spatial = tuple(int(s) for s in image.shape[1:])
    axes = axes or ("ZYX" if len(spatial) == 3 else "YX")
    if len(axes) != len(spatial):
        raise InferenceError(f"axes {axes!r} must name the {len(spatial)} spatial axes of shape {spatial}")
    if confidence_path is not None:
        confidence_path = Path(confidence_path)
        if confidence_path.suffix.lower() not in (".zarr", ".tif", ".tiff"):
            raise InferenceError(f"{confidence_path}: the confidence map is written as .zarr, .tif or .tiff")
        if confidence_path.resolve() == out_path.resolve():
            raise InferenceError(f"{confidence_path}: labels and confidence need different paths")
    # before any work: never replace the person's data, fail early on an unwritable folder
    check_destination(out_path, overwrite=overwrite, what="labels")
    if confidence_path is not None:
        check_destination(confidence_path, overwrite=overwrite, what="confidence")
    if multilabel is None:
        multilabel = bool(model_attr(model, "multilabel", False))
    slicewise = is_slicewise(model, image)
    roi = _slice_roi(roi_size) if slicewise else normalise_roi(roi_size, len(spatial))
    settings = {"kind": "prediction", "multilabel": multilabel, "roi_size": list(roi), "slicewise": slicewise,
                "overlap": overlap, "blend": blend, "tta": tta, **(attrs or {})}
    base_attrs = {"scale": list(scale) if scale is not None else [1.0] * len(spatial), "unit": unit}
    blocks = stream_probabilities(
        model, image, roi_size, overlap=overlap, batch_size=batch_size, blend=blend, tta=tta, device=device,
        multilabel=multilabel, normalisation=normalisation, progress=progress, amp=amp,
    )
    with contextlib.ExitStack() as stack:
        tmp_labels = stack.enter_context(atomic_path(out_path))
        tmp_conf = stack.enter_context(atomic_path(confidence_path)) if confidence_path is not None else None
        labels_out: _ZarrOut | None = None
        conf_out: _ZarrOut | _TiffOut | None = None
        for z, probs in blocks:
            if labels_out is None:
                k = probs.shape[0]
                lead_axes, lead = ("C", (k,)) if multilabel else ("", ())
                label_axes = lead_axes + axes
                labels_out = _ZarrOut(
                    tmp_labels, lead + spatial, np.uint8 if multilabel else labels_dtype(k), label_axes,
                    None if chunks is None else (1,) * len(lead) + tuple(chunks),
                    {LABELS_ATTR: True, "axes": label_axes, **base_attrs,
                     "scale": ([1.0] if multilabel else []) + base_attrs["scale"],
                     "labelfx": {**settings, "num_classes": k}},
                )
                if tmp_conf is not None:
                    if confidence_path.suffix.lower() == ".zarr":  # type: ignore[union-attr]
                        conf_out = _ZarrOut(tmp_conf, spatial, np.float32, axes, chunks,
                                            {"axes": axes, **base_attrs, "labelfx": {**settings, "num_classes": k}})
                    else:
                        conf_out = _TiffOut(tmp_conf, spatial, np.float32, {"axes": axes, "labelfx": {
                            "labels": False, "axes": axes, "shape": list(spatial), **base_attrs, "metadata": {}}})
            labels, confidence = probabilities_to_labels(probs, multilabel, threshold)
            rows = slice(z, z + probs.shape[1])
            labels_out.write((slice(None), rows) if multilabel else (rows,), labels)
            if conf_out is not None:
                conf_out.write((rows,), confidence)
        if labels_out is None:
            raise InferenceError("nothing was predicted (empty image?)")
        labels_out.close()
        if conf_out is not None:
            conf_out.close()
    return out_path
