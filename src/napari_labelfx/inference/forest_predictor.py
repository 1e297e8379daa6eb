"""``ForestPredictor``: a forest model folder applied to raw images, with the Predictor's interface.

In memory the image is predicted tile by tile with exact features (each tile read with the filter
bank's halo). For streaming to Zarr the forest is wrapped as a module the sliding-window streamer can
call; there every window computes its own features (mirrored at the window border), and the windows
overlap by half so the blended result stays close to the in-memory one.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.normalize import apply_normalisation
from ..forest.classifier import PixelForest
from ..forest.features import FilterBank
from ..forest.folder import load_forest
from ..forest.tiles import TILE, predict_region_probabilities
from .labels import probabilities_to_labels
from .predictor import Prediction, Predictor

#: Window overlap used when streaming a forest prediction (features need context at window borders).
STREAM_OVERLAP = 0.5


class _ForestConfig:
    """The few ``ModelConfig`` attributes the inference helpers read from ``model.config``."""

    def __init__(self, section: dict[str, Any]) -> None:
        self.name = section["name"]
        self.spatial_dims = int(section["spatial_dims"])
        self.in_channels = int(section["in_channels"])
        self.num_classes = int(section["num_classes"])
        self.multilabel = bool(section["multilabel"])

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class ForestModule(nn.Module):
    """The forest as a module: (B, C, *window) normalised tiles -> (B, K, *window) logits.

    Logits are ``log p`` (softmax gives back ``p``) or ``logit p`` for multi-label (sigmoid gives ``p``),
    so every tool that turns logits into probabilities reads the forest's probabilities.
    """

    def __init__(self, forest: PixelForest, bank: FilterBank, section: dict[str, Any]) -> None:
        super().__init__()
        self.forest, self.bank = forest, bank
        self.config = _ForestConfig(section)
        self.register_buffer("_device_anchor", torch.zeros(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().float().cpu().numpy()
        out = np.stack([predict_region_probabilities(self.forest, a, bank=self.bank) for a in arr])
        p = torch.from_numpy(np.clip(out, 1e-6, 1 - 1e-6)).to(x.device)
        return torch.log(p / (1 - p)) if self.forest.multilabel else torch.log(p)


class ForestPredictor(Predictor):
    """Applies a pixel forest with the normalisation stored beside it (see :class:`Predictor`)."""

    def __init__(self, forest: PixelForest, bank: FilterBank, config: dict[str, Any],
                 roi_size: Any = None, threshold: float = 0.5, **_: Any) -> None:
        self.forest, self.bank = forest, bank
        # the Predictor's own set-up (normalisation, sizes, thresholds) with the forest as its module
        super().__init__(ForestModule(forest, bank, config["model"]), config, device="cpu", roi_size=roi_size,
                         overlap=STREAM_OVERLAP, batch_size=1, tta=False, amp=False, threshold=threshold,
                         channels_last=False)

    @classmethod
    def from_folder(cls, model_dir: str | os.PathLike, device: Any = "auto", **kwargs: Any) -> ForestPredictor:
        """Load a forest model folder (the device is ignored: forests run on the CPU)."""
        forest, bank, config = load_forest(model_dir)
        return cls(forest, bank, config, **{k: v for k, v in kwargs.items() if k in ("roi_size", "threshold")})

    def roi_for(self, spatial_shape: Any) -> tuple[int, ...]:
        roi = self.roi_size or TILE[self.spatial_dims]
        if isinstance(roi, (int, np.integer)):
            roi = (int(roi),) * self.spatial_dims
        return tuple(max(1, min(int(r), int(s))) for r, s in zip(roi, spatial_shape))

    def __call__(self, image: Any, normalise: bool = True, roi_size: Any = None, tta: bool | None = None,
                 progress: Any = None) -> Prediction:
        """Predict one image ``(C, *spatial)`` in memory, tile by tile with exact features."""
        image = self._as_chw(image)
        if normalise:
            lo, hi = self.normalisation_for(image)
            array = apply_normalisation(np.asarray(image), lo, hi)
        else:
            array = np.asarray(image, dtype=np.float32)
        if self.is_slicewise(array):  # a 2D forest on a volume: slice by slice, one normalisation
            probs = np.stack([predict_region_probabilities(self.forest, array[:, z], bank=self.bank)
                              for z in range(array.shape[1])], axis=1)
        else:
            probs = predict_region_probabilities(self.forest, array, bank=self.bank, progress=progress)
        labels, confidence = probabilities_to_labels(probs, self.multilabel, self.threshold)
        return Prediction(labels=labels, probabilities=probs, confidence=confidence)
