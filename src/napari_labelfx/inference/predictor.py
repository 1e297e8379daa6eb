"""``Predictor``: a trained model folder applied to raw images the way it was trained."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
from torch import nn

from napari_labelfx.core.normalize import apply_normalisation, channel_percentiles
from napari_labelfx.inference._runtime import channels_last_format, resolve_device
from napari_labelfx.inference.errors import InferenceError
from napari_labelfx.inference.labels import probabilities_to_labels
from napari_labelfx.inference.sliding_window import sliding_window_predict
from napari_labelfx.inference.streaming import predict_to_zarr
from napari_labelfx.models.checkpoint import load_model

#: Window size when neither the call nor the model folder names one (2D, 3D).
DEFAULT_ROI: dict[int, tuple[int, ...]] = {2: (256, 256), 3: (32, 128, 128)}
#: Percentiles used when the model folder stores no normalisation (the training default).
DEFAULT_NORMALISATION = {"low": 1.0, "high": 99.8, "robust": True}


@dataclass
class Prediction:
    """Result of :class:`Predictor` on one image.

    Attributes
    ----------
    labels : class indices (*spatial) uint8/uint16; multi-label: (K, *spatial) uint8 0/1.
    probabilities : (K, *spatial) float32 blended probabilities.
    confidence : (*spatial) float32, winning probability (multi-label: least certain class).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    confidence: np.ndarray


def _lazy(image: Any) -> Any:
    """numpy and dask stay; other array-likes (zarr, ...) are wrapped in dask for chunked reads."""
    if isinstance(image, (np.ndarray, da.Array)):
        return image
    chunks = getattr(image, "chunks", None)
    return da.from_array(image, chunks=chunks if isinstance(chunks, tuple) else "auto")



def _check_config_values(config: dict[str, Any], norm: dict[str, Any], dims: int) -> None:
    """Clear messages for malformed values of a model config (instead of a bare 'could not convert')."""

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    low, high = norm.get("low", 1.0), norm.get("high", 99.8)
    if not (number(low) and number(high) and 0 <= low < high <= 100):
        raise InferenceError(f"normalisation low/high must be percentiles with 0 <= low < high <= 100, "
                             f"got low={low!r:.40}, high={high!r:.40}")
    inference = config.get("inference")
    roi = inference.get("roi_size") if isinstance(inference, dict) else None
    if roi is not None and not (isinstance(roi, (list, tuple)) and len(roi) == dims
                                and all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in roi)):
        raise InferenceError(f"inference.roi_size must be {dims} positive integers, got {roi!r:.60}")
    train = config.get("train_config") or config.get("train") or {}
    patch = train.get("patch_size") if isinstance(train, dict) else None
    if patch is not None and not (isinstance(patch, (list, tuple))
                                  and all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in patch)):
        raise InferenceError(f"train_config.patch_size must be positive integers, got {patch!r:.60}")

class Predictor:
    """Applies a segmentation model with the settings stored beside it.

    Parameters
    ----------
    model : a network from the model registry (``model.config`` describes it).
    config : the model folder's config.json (``{"model": ..., "normalisation": ..., ...}``); optional.
    device : ``"auto"``, a device name, or None to keep the model where it is.
    roi_size : window size; None = ``config["inference"]["roi_size"]``, else the training patch size
        (``config["train_config"]["patch_size"]``) but at least ``DEFAULT_ROI``; capped at the image size.
    overlap, batch_size, blend, tta, amp : see :func:`sliding_window_predict`.
    threshold : probability threshold of multi-label outputs.
    channels_last : store the model's weights channels-last (NHWC / NDHWC). Same results up to float
        rounding; about 1.5x faster convolutions on CPU and less memory per batch. The Predictor owns
        the model it is given: it also moves it to ``device`` and puts it in eval mode.
    """

    def __init__(
        self,
        model: nn.Module,
        config: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        roi_size: int | Sequence[int] | None = None,
        overlap: float = 0.25,
        batch_size: int = 4,
        blend: str = "gaussian",
        tta: bool = False,
        amp: bool = True,
        threshold: float = 0.5,
        channels_last: bool = True,
    ) -> None:
        cfg = getattr(model, "config", None)
        if cfg is None:
            raise InferenceError("Predictor needs a model built by build_model (with model.config)")
        self.model = model
        self.config: dict[str, Any] = dict(config) if config else {"model": cfg.to_dict()}
        self.device = resolve_device(model, device)
        self.model.to(self.device).eval()
        if channels_last:
            self.model.to(memory_format=channels_last_format(cfg.spatial_dims))
        self.spatial_dims: int = cfg.spatial_dims
        self.in_channels: int = cfg.in_channels
        self.num_classes: int = cfg.num_classes
        self.multilabel: bool = cfg.multilabel
        self.roi_size = roi_size
        self.overlap = overlap
        self.batch_size = batch_size
        self.blend = blend
        self.tta = tta
        self.amp = amp
        self.threshold = threshold
        norm = self.config.get("normalisation")
        norm = norm if isinstance(norm, dict) else DEFAULT_NORMALISATION
        _check_config_values(self.config, norm, cfg.spatial_dims)
        self.percentiles = (float(norm.get("low", 1.0)), float(norm.get("high", 99.8)))
        # models saved before the robust white point existed were trained without it
        self.robust = bool(norm.get("robust", False))

    @classmethod
    def from_folder(
        cls, model_dir: str | os.PathLike, device: str | torch.device = "auto", **kwargs: Any
    ) -> Predictor:
        """Load a model folder (see :func:`~napari_labelfx.models.checkpoint.load_model`).

        A folder holding a pixel forest (``forest.npz``) gives a
        :class:`~napari_labelfx.inference.forest_predictor.ForestPredictor` with the same interface.
        """
        from napari_labelfx.forest.folder import is_forest_folder

        model_dir = _forest_run_best(Path(model_dir))
        if is_forest_folder(model_dir):
            from napari_labelfx.inference.forest_predictor import ForestPredictor

            return ForestPredictor.from_folder(model_dir, device=device, **kwargs)
        model, config = load_model(model_dir, device="cpu")
        try:
            return cls(model, config, device=device, **kwargs)
        except InferenceError as exc:  # name the file the bad value came from
            raise InferenceError(f"{Path(model_dir) / 'config.json'}: {exc}") from None

    @property
    def class_names(self) -> list[str] | None:
        """Class names stored in the config (``"class_names"`` or ``"classes"``), if any."""
        for key in ("class_names", "classes"):
            names = self.config.get(key)
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return list(names)
        return None

    # -- input handling ----------------------------------------------------------------------------
    def to_channels_first(self, data: Any, axes: str) -> Any:
        """Reorder an array with axis letters (e.g. ``"ZYX"``, ``"CYX"``, ``"YXS"``, ``"TZCYX"``) to
        ``(C, *spatial)`` for this model, lazily for dask arrays.

        ``C`` or ``S`` (RGB samples) is the channel axis; a missing one is added when the model takes
        one channel; ``T`` must have size 1 and is dropped. A 2D model keeps a ``Z`` axis longer than 1,
        giving ``(C, Z, Y, X)``: the volume is then predicted slice by slice.
        """
        axes = axes.upper()
        if len(axes) != len(data.shape) or len(set(axes)) != len(axes):
            raise InferenceError(f"axes {axes!r} do not describe an array of shape {tuple(data.shape)}")
        arr = data if isinstance(data, (np.ndarray, da.Array)) else _lazy(data)
        spatial = "ZYX" if self.spatial_dims == 3 else "YX"
        if self.spatial_dims == 2 and "Z" in axes and arr.shape[axes.index("Z")] > 1:
            spatial = "ZYX"  # a volume through a 2D model: slice by slice
        channel = [a for a in "CS" if a in axes]
        if len(channel) > 1:
            raise InferenceError(f"axes {axes!r} have both C and S; merge the channels first")
        for a in axes:
            if a not in spatial and a not in channel and arr.shape[axes.index(a)] != 1:
                raise InferenceError(
                    f"axis {a} of size {arr.shape[axes.index(a)]} cannot be fed to a {self.spatial_dims}D model "
                    f"(shape {tuple(data.shape)}, axes {axes!r}); select one {a} position first"
                )
        missing = [a for a in spatial if a not in axes]
        if missing:
            raise InferenceError(
                f"a {self.spatial_dims}D model needs axes {spatial}; {axes!r} lacks {''.join(missing)}"
            )
        # drop singleton axes the model does not use, then move channels first
        index = tuple(slice(None) if (a in spatial or a in channel) else 0 for a in axes)
        arr = arr[index]
        kept = "".join(a for a in axes if a in spatial or a in channel)
        order = [kept.index(c) for c in channel] + [kept.index(a) for a in spatial]
        arr = arr.transpose(order)
        if not channel:
            arr = arr[None]
        if arr.shape[0] != self.in_channels:
            raise InferenceError(
                f"the model expects {self.in_channels} channel(s), the image has {arr.shape[0]} (axes {axes!r})"
            )
        return arr

    def is_slicewise(self, image: Any) -> bool:
        """True when this is a 2D model and ``image`` a channels-first volume ``(C, Z, Y, X)``."""
        return self.spatial_dims == 2 and len(getattr(image, "shape", ())) == 4

    def _as_chw(self, image: Any) -> Any:
        shape = tuple(getattr(image, "shape", ()))
        ndim = len(shape)
        if ndim == self.spatial_dims and self.in_channels == 1:
            return image[None]  # a single-channel image given without its channel axis
        if self.spatial_dims == 2 and self.in_channels == 1 and ndim == 3 and shape[0] != 1:
            return image[None]  # a one-channel volume (Z, Y, X) for a 2D model: slice by slice
        if self.spatial_dims == 2 and ndim == 4:
            return image  # (C, Z, Y, X): slice by slice
        if ndim != self.spatial_dims + 1:
            axes = "(C, Y, X)" if self.spatial_dims == 2 else "(C, Z, Y, X)"
            raise InferenceError(
                f"the model expects a channels-first {self.spatial_dims}D image {axes}, got shape {tuple(image.shape)}"
            )
        return image

    def normalisation_for(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (low, high) percentile values of a channels-first image (lazy inputs subsampled)."""
        try:
            # an all-NaN image would otherwise be predicted as all background, silently
            return channel_percentiles(_lazy(image), *self.percentiles, robust=self.robust, require_finite=True)
        except ValueError as exc:
            raise InferenceError(f"cannot predict: {exc}") from None

    def roi_for(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The window size used for an image of this spatial shape when the call names none."""
        dims = self.spatial_dims
        roi: Sequence[int] | None = self.roi_size
        if roi is None:
            stored = (self.config.get("inference") or {}).get("roi_size")
            if isinstance(stored, (list, tuple)) and len(stored) == dims:
                roi = stored
        if roi is None:
            # the engine stores its TrainConfig under "train_config"
            train = self.config.get("train_config") or self.config.get("train") or {}
            patch = train.get("patch_size") if isinstance(train, dict) else None
            base = DEFAULT_ROI[dims]
            roi = tuple(max(int(p), b) for p, b in zip(patch, base)) if (
                isinstance(patch, (list, tuple)) and len(patch) == dims) else base
        if isinstance(roi, (int, np.integer)):
            roi = (int(roi),) * dims
        # a window larger than the image only adds padding: the model takes any size
        # (a volume for a 2D model: the window covers the last two axes)
        return tuple(max(1, min(int(r), int(s))) for r, s in zip(roi, tuple(spatial_shape)[-dims:]))

    # -- prediction --------------------------------------------------------------------------------
    def __call__(
        self,
        image: Any,
        normalise: bool = True,
        roi_size: int | Sequence[int] | None = None,
        tta: bool | None = None,
        progress: Any = None,
    ) -> Prediction:
        """Predict one image ``(C, *spatial)`` (or ``(*spatial)`` for one-channel models) in memory.

        A 2D model predicts a volume ``(C, Z, Y, X)`` slice by slice (normalised over the whole
        volume, as in training); ``progress`` then hears about slices. ``normalise`` applies the
        stored percentile normalisation per channel (use False when the
        image is already normalised, e.g. a ``TrainingItem.image``).
        """
        image = self._as_chw(image)
        if normalise:
            lo, hi = self.normalisation_for(image)
            array = apply_normalisation(np.asarray(image), lo, hi)
        else:
            array = np.asarray(image, dtype=np.float32)
        roi = roi_size if roi_size is not None else self.roi_for(array.shape[1:])
        probs = sliding_window_predict(
            self.model, array, roi, overlap=self.overlap, batch_size=self.batch_size, blend=self.blend,
            tta=self.tta if tta is None else tta, device=self.device, multilabel=self.multilabel,
            progress=progress, amp=self.amp,
        )
        labels, confidence = probabilities_to_labels(probs, self.multilabel, self.threshold)
        return Prediction(labels=labels, probabilities=probs, confidence=confidence)

    def predict_to_zarr(
        self,
        image: Any,
        out_path: str | os.PathLike,
        roi_size: int | Sequence[int] | None = None,
        normalise: bool = True,
        confidence_path: str | os.PathLike | None = None,
        tta: bool | None = None,
        axes: str | None = None,
        scale: Sequence[float] | None = None,
        unit: str | None = None,
        chunks: Sequence[int] | None = None,
        progress: Any = None,
        overwrite: bool = False,
    ) -> Path:
        """Stream the prediction of a (lazy) image ``(C, *spatial)`` into a Zarr label array.

        The image is read one slab (one window deep) at a time along its first spatial axis (one Z
        slice at a time for a 2D model on a volume), so volumes larger than memory work; labels go
        to ``out_path`` and, if given, the confidence
        to ``confidence_path`` (.zarr or .tif). See :func:`napari_labelfx.inference.predict_to_zarr`.
        """
        image = self._as_chw(image)
        normalisation = self.normalisation_for(image) if normalise else None
        roi = roi_size if roi_size is not None else self.roi_for(image.shape[1:])
        attrs = {"model": self.config.get("model", {}).get("name")}
        if self.class_names is not None:
            attrs["class_names"] = self.class_names
        return predict_to_zarr(
            self.model, image, out_path, roi, overlap=self.overlap, batch_size=self.batch_size, blend=self.blend,
            tta=self.tta if tta is None else tta, device=self.device, multilabel=self.multilabel,
            normalisation=normalisation, threshold=self.threshold, confidence_path=confidence_path, axes=axes,
            scale=scale, unit=unit, chunks=chunks, attrs=attrs, progress=progress, amp=self.amp,
            overwrite=overwrite,
        )


def _forest_run_best(folder: Path) -> Path:
    """A forest training run's output folder (``labelfx train --method forest --out X``) -> its ``best/``
    (or ``last/``) model; any other path unchanged (network run folders are resolved by ``load_model``)."""
    from napari_labelfx.forest.folder import is_forest_folder
    from napari_labelfx.models.checkpoint import MODEL_FILE

    if not folder.is_dir() or is_forest_folder(folder) or (folder / MODEL_FILE).is_file():
        return folder
    for sub in ("best", "last"):
        if is_forest_folder(folder / sub):
            return folder / sub
    return folder
