"""Shared plumbing of the inference functions: devices, eval mode, forward pass with TTA, blending."""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_labelfx.inference.errors import InferenceError
from napari_labelfx.inference.tiling import importance_profiles, weight_sums

#: Accumulators larger than this stay in host memory even when the model runs on a GPU.
MAX_DEVICE_ACCUMULATOR_BYTES = 2 * 2**30


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """``None`` -> the model's device; otherwise ``core.device.select_device`` (``"auto"``: CUDA,
    then MPS, then CPU; an unavailable explicit choice raises its ``DeviceError``, a ValueError)."""
    if device is None:
        param = next(itertools.chain(model.parameters(), model.buffers()), None)
        return param.device if param is not None else torch.device("cpu")
    # imported here: the engine package imports the trainer, which uses this package
    from napari_labelfx.core.device import select_device

    return select_device(device)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put the model in eval mode (BatchNorm statistics, no dropout) and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def logits_of(output: Any) -> torch.Tensor:
    """Segmentation logits from a model output: ``SegOutput``, tensor, dict or tuple."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise InferenceError(f"cannot find segmentation logits in a model output of type {type(output).__name__}")


def model_attr(model: nn.Module, name: str, default: Any) -> Any:
    """An attribute of ``model.config`` if the model has one (registry models do)."""
    return getattr(getattr(model, "config", None), name, default)


def flip_axes(spatial_dims: int) -> list[tuple[int, ...]]:
    """All subsets of the spatial tensor axes (2 .. 2+spatial_dims-1), the identity first."""
    axes = range(2, 2 + spatial_dims)
    return [c for k in range(spatial_dims + 1) for c in itertools.combinations(axes, k)]


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """``torch.channels_last`` (2D) or ``torch.channels_last_3d`` (3D)."""
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def model_memory_format(model: nn.Module, spatial_dims: int) -> torch.memory_format | None:
    """The channels-last format if the model's conv weights use it (inputs should match), else None."""
    fmt = channels_last_format(spatial_dims)
    for p in model.parameters():
        if p.ndim == spatial_dims + 2 and p.shape[1] > 1:
            # a weight with several input channels tells the two layouts apart
            return fmt if p.is_contiguous(memory_format=fmt) and not p.is_contiguous() else None
    return None


class TileForward:
    """Runs a batch of tiles through the model and returns class probabilities (float32).

    With ``tta`` the batch is also run mirrored along every combination of spatial axes; each
    result is mirrored back before averaging, so the output is aligned with the input tiles.
    """

    def __init__(self, model: nn.Module, device: torch.device, spatial_dims: int, multilabel: bool,
                 tta: bool, amp: bool) -> None:
        self.model = model
        self.device = device
        self.multilabel = multilabel
        self.flips = flip_axes(spatial_dims) if tta else [()]
        self.amp = amp and device.type == "cuda"
        # a model converted to channels-last (Predictor does this) wants inputs in the same layout
        self.memory_format = model_memory_format(model, spatial_dims)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def __call__(self, tiles: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device, non_blocking=True)
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        total: torch.Tensor | None = None
        for axes in self.flips:
            xi = torch.flip(x, axes) if axes else x
            with self._autocast():
                logits = logits_of(self.model(xi))
            # probabilities are computed and blended in float32 even under AMP
            logits = logits.float()
            probs = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)
            if axes:
                probs = torch.flip(probs, axes)
            total = probs if total is None else total.add_(probs)
        assert total is not None
        return total.div_(len(self.flips)) if len(self.flips) > 1 else total


class Blender:
    """Weighted sum of tile probabilities over a window of the (padded) image.

    The window covers the whole image for in-memory prediction, or one window depth along the
    first spatial axis for streaming, where ``advance`` drops finished leading rows. Weight maps
    are separable and tiles form a Cartesian grid, so the sum of weights at a pixel is a product of
    per-axis sums: no weight accumulator is needed, only three small 1D arrays.

    Parameters
    ----------
    padded : spatial shape of the padded image.
    roi : window size.
    starts : window start offsets per axis (over ``padded``).
    blend : ``"gaussian"`` or ``"constant"``.
    device : where the accumulator lives.
    window_rows : rows of the first axis held at once (default: all).
    implicit_last : the probabilities sum to 1 over classes (softmax): accumulate K-1 channels and
        recover the last as 1 - the others (blending is a weighted mean, so sums to 1 are kept);
        saves 1/K of the accumulator (half for two classes).
    """

    def __init__(self, padded: Sequence[int], roi: Sequence[int], starts: Sequence[Sequence[int]], blend: str,
                 device: torch.device, window_rows: int | None = None, implicit_last: bool = False) -> None:
        profiles = importance_profiles(roi, blend)
        weights = np.ones((), np.float64)
        for profile in profiles:
            weights = np.multiply.outer(weights, profile)
        self.roi = tuple(int(r) for r in roi)
        self.device = device
        self.weights = torch.from_numpy(weights.astype(np.float32)).to(device)
        self.inverse = [
            torch.from_numpy((1.0 / weight_sums(n, r, st, prof)).astype(np.float32)).to(device)
            for n, r, st, prof in zip(padded, roi, starts, profiles)
        ]
        self.window = (int(window_rows or padded[0]), *(int(p) for p in padded[1:]))
        self.origin = 0  # padded-image row of window row 0
        self.implicit_last = implicit_last
        self.num_classes = 0
        self.acc: torch.Tensor | None = None  # (K or K-1, *window), allocated when K is known

    def add(self, starts: Sequence[Sequence[int]], probs: torch.Tensor) -> None:
        """Add a batch of tile probabilities (B, K, *roi) at window-relative ``starts``."""
        probs = probs.to(self.device)
        if self.acc is None:
            self.num_classes = probs.shape[1]
            stored = self.num_classes - 1 if self.implicit_last and self.num_classes > 1 else self.num_classes
            self.implicit_last = stored < self.num_classes
            self.acc = torch.zeros((stored, *self.window), dtype=torch.float32, device=self.device)
        elif probs.shape[1] != self.num_classes:
            raise InferenceError(f"the model returned {probs.shape[1]} classes, earlier tiles {self.num_classes}")
        if self.implicit_last:
            probs = probs[:, :-1]
        for start, p in zip(starts, probs):
            region = tuple(slice(s, s + r) for s, r in zip(start, self.roi))
            self.acc[(slice(None), *region)].addcmul_(p, self.weights)

    def result(self, start: int, stop: int, inplace: bool = False) -> torch.Tensor:
        """Blended probabilities (K, stop-start, ...) of window rows ``[start, stop)``."""
        if self.acc is None:
            raise InferenceError("no tile was predicted")
        nd = len(self.window)
        block = self.acc[:, start:stop]
        for axis, inv in enumerate(self.inverse):
            if axis == 0:
                inv = inv[self.origin + start : self.origin + stop]
            shape = [1] * (nd + 1)
            shape[axis + 1] = -1
            factor = inv.view(shape)
            block = block.mul_(factor) if (inplace or axis > 0) else block * factor  # axis 0 copies unless inplace
        if self.implicit_last:
            block = torch.cat([block, (1.0 - block.sum(dim=0, keepdim=True)).clamp_(min=0.0)], dim=0)
        return block

    def advance(self, rows: int) -> None:
        """Drop the first ``rows`` window rows; the freed rows at the end start from zero."""
        self.origin += rows
        if self.acc is None or rows <= 0:
            return
        keep = self.window[0] - rows
        # forward row-by-row copy: source rows lie after their targets, so no temporary copy is needed
        for i in range(max(keep, 0)):
            self.acc[:, i].copy_(self.acc[:, rows + i])
        self.acc[:, max(keep, 0) :].zero_()


def accumulator_device(compute: torch.device, nbytes: int) -> torch.device:
    """Blend on the compute device unless the accumulator would be too big for it."""
    if compute.type == "cpu" or nbytes <= MAX_DEVICE_ACCUMULATOR_BYTES:
        return compute
    return torch.device("cpu")


def report_progress(progress: Any, n: int, done: int, total: int) -> None:
    """Tell a tqdm-like object (``update(n)``) or a callback ``progress(done, total)`` about new tiles."""
    if progress is None:
        return
    if hasattr(progress, "update"):
        progress.update(n)
    elif callable(progress):
        progress(done, total)


def normalise_roi(roi_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """ROI as a tuple of positive ints with one entry per spatial axis."""
    if isinstance(roi_size, (int, np.integer)):
        roi = (int(roi_size),) * spatial_dims
    else:
        roi = tuple(int(r) for r in roi_size)
    if len(roi) != spatial_dims or any(r < 1 for r in roi):
        raise InferenceError(
            f"roi_size {roi_size!r} does not fit a {spatial_dims}D image (need {spatial_dims} positive sizes)"
        )
    return roi


def pad_to_roi(array: np.ndarray, roi: Sequence[int]) -> np.ndarray:
    """Pad a channels-first array at the far end of each spatial axis shorter than the ROI (mirror)."""
    pads = [(0, 0)] + [(0, max(0, r - s)) for s, r in zip(array.shape[1:], roi)]
    if not any(p[1] for p in pads):
        return array
    # numpy's reflect mirrors repeatedly when the pad is longer than the axis, and repeats a 1-pixel axis
    return np.pad(array, pads, mode="reflect")


def is_slicewise(model: nn.Module, image: Any) -> bool:
    """True when a 2D model is given a channels-first volume ``(C, Z, Y, X)``: it is predicted one
    Z slice at a time (the main volume workflow: train on a few annotated slices, predict the stack)."""
    shape = tuple(getattr(image, "shape", ()))
    return model_attr(model, "spatial_dims", None) == 2 and len(shape) == 4


def check_image(model: nn.Module, image: Any, roi_dims: int | None = None) -> int:
    """Validate a channels-first image against the model; return its number of spatial axes."""
    shape = tuple(getattr(image, "shape", ()))
    dims = model_attr(model, "spatial_dims", roi_dims if roi_dims is not None else len(shape) - 1)
    if len(shape) != dims + 1:
        axes = "(C, Y, X)" if dims == 2 else "(C, Z, Y, X)"
        raise InferenceError(f"the model expects a channels-first {dims}D image {axes}, got shape {shape}")
    channels = model_attr(model, "in_channels", shape[0])
    if shape[0] != channels:
        raise InferenceError(f"the model expects {channels} channel(s), the image has {shape[0]} (shape {shape})")
    if any(s < 1 for s in shape[1:]):
        raise InferenceError(f"the image is empty (shape {shape})")
    return dims
