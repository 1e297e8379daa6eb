"""In-memory sliding-window prediction with Gaussian blending and flip TTA."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
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
from napari_labelfx.inference.tiling import tile_grid, tile_starts


def iter_tile_batches(
    forward: TileForward,
    array: np.ndarray,
    starts: Sequence[tuple[int, ...]],
    roi: Sequence[int],
    batch_size: int,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[Sequence[tuple[int, ...]], torch.Tensor]]:
    """Yield ``(starts of the batch, probabilities (B, K, *roi))`` for consecutive batches of tiles.

    ``prepare`` maps the stacked raw tiles (B, C, *roi) to the float32 network input (e.g. intensity
    normalisation), so a large source can stay in its compact raw dtype.
    """
    for i in range(0, len(starts), batch_size):
        batch = starts[i : i + batch_size]
        tiles = np.stack(
            [array[(slice(None), *(slice(s, s + r) for s, r in zip(start, roi)))] for start in batch]
        )
        yield batch, forward(prepare(tiles) if prepare is not None else tiles)


def sliding_window_predict(
    model: nn.Module,
    image: Any,
    roi_size: int | Sequence[int],
    overlap: float = 0.25,
    batch_size: int = 4,
    blend: str = "gaussian",
    tta: bool = False,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
    multilabel: bool | None = None,
    progress: Any = None,
    amp: bool = True,
) -> np.ndarray:
    """Predict class probabilities of a whole image with overlapping tiles.

    Parameters
    ----------
    model : network returning ``SegOutput`` (or logits); put in eval mode for the call, then restored.
    image : channels-first ``(C, Y, X)`` or ``(C, Z, Y, X)`` array-like (numpy, dask, zarr), already
        normalised; it is read into memory once (use ``predict_to_zarr`` for volumes that do not fit).
        A volume given to a 2D model is predicted one Z slice at a time (a 3D ``roi_size`` then uses
        its last two entries).
    roi_size : window size (int for all axes, or one per spatial axis). Axes shorter than the ROI are
        mirror-padded up to it and cropped back.
    overlap : fraction of the window shared by neighbouring windows, in [0, 1).
    batch_size : windows per forward pass.
    blend : ``"gaussian"`` (centre-weighted) or ``"constant"`` (plain average) blending.
    tta : average the mirrored predictions over all flips of the spatial axes (4 in 2D, 8 in 3D).
    device : compute device; None = the model's device (the model is moved if another is given).
    num_classes : expected number of output channels (checked), or None to take the model's.
    multilabel : sigmoid per class instead of softmax; None = ``model.config.multilabel``.
    progress : tqdm-like (``update(n)`` per batch of tiles) or a callable ``progress(done, total)``.
    amp : float16 autocast when computing on CUDA.

    Returns
    -------
    np.ndarray : float32 probabilities ``(K, *spatial)``.
    """
    if batch_size < 1:
        raise InferenceError(f"batch_size must be >= 1, got {batch_size}")
    if is_slicewise(model, image):
        return _predict_slices(
            model, image, roi_size, progress, overlap=overlap, batch_size=batch_size, blend=blend, tta=tta,
            device=device, num_classes=num_classes, multilabel=multilabel, amp=amp,
        )
    check_image(model, image, None if isinstance(roi_size, (int, np.integer)) else len(roi_size))
    array = np.asarray(image, dtype=np.float32)
    spatial = array.shape[1:]
    roi = normalise_roi(roi_size, len(spatial))
    padded = pad_to_roi(array, roi)
    axis_starts = [tile_starts(s, r, overlap) for s, r in zip(padded.shape[1:], roi)]
    starts = tile_grid(padded.shape[1:], roi, overlap)
    dev = resolve_device(model, device)
    if multilabel is None:
        multilabel = bool(model_attr(model, "multilabel", False))
    k_guess = num_classes or model_attr(model, "num_classes", 1)
    acc_dev = accumulator_device(dev, 4 * k_guess * int(np.prod(padded.shape[1:])))

    model.to(dev)
    with torch.inference_mode(), eval_mode(model):
        forward = TileForward(model, dev, len(spatial), multilabel, tta, amp)
        blender = Blender(padded.shape[1:], roi, axis_starts, blend, acc_dev)
        done = 0
        for batch, probs in iter_tile_batches(forward, padded, starts, roi, batch_size):
            if num_classes is not None and probs.shape[1] != num_classes:
                raise InferenceError(f"the model returned {probs.shape[1]} classes, expected num_classes={num_classes}")
            blender.add(batch, probs)
            done += len(batch)
            report_progress(progress, len(batch), done, len(starts))
        result = blender.result(0, padded.shape[1], inplace=True)[(slice(None), *(slice(0, s) for s in spatial))]
        return np.ascontiguousarray(result.cpu().numpy(), dtype=np.float32)


def _predict_slices(model: nn.Module, image: Any, roi_size: int | Sequence[int], progress: Any,
                    **kwargs: Any) -> np.ndarray:
    """A 2D model on a volume ``(C, Z, Y, X)``: each Z slice through the 2D sliding window.

    ``progress`` hears about slices: ``update(1)`` per slice, or ``progress(done_slices, depth)``.
    """
    roi = roi_size if isinstance(roi_size, (int, np.integer)) else tuple(roi_size)[-2:]
    depth = int(image.shape[1])
    if depth < 1:
        raise InferenceError(f"the image is empty (shape {tuple(image.shape)})")
    planes = []
    for z in range(depth):
        planes.append(sliding_window_predict(model, np.asarray(image[:, z]), roi, **kwargs))
        report_progress(progress, 1, z + 1, depth)
    return np.stack(planes, axis=1)
