"""``sissi``: ADELE-started label correction plus training on synthetic-like images.

SISSI (Elbatel et al., DART 2022) adds to the ADELE loop (see :mod:`napari_labelfx.methods.adele`)
one idea: once labels are being corrected, train on images in which the unlabelled objects are
blurred away. Every correction epoch, each training image is rebuilt as the seamless (mixed
gradient) clone of its labelled objects (the current corrected labels' foreground) onto a
Gaussian-blurred copy of itself (:func:`napari_labelfx.tools.seamless.synthetic_like`). The
network then is not pushed to call the cells the labels still miss background. The correction
itself always predicts on the real images.

Parameters on top of ``adele``'s: ``blur_kernel`` and ``blur_sigma`` (SISSI's code: 71 and 30; a
weak blur is about 21 and 5), ``synthetic_from_start`` (also before the end of early learning,
from the initial labels). Volumes are rebuilt slice by slice.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..annotations.kinds import IGNORE_INDEX, TrainingItem
from ..tools.seamless import synthetic_like
from .adele import Adele
from .base import MethodContext, MethodError
from .registry import register_method


def synthetic_image(image: np.ndarray, target: np.ndarray, blur_kernel: int, blur_sigma: float) -> np.ndarray:
    """Synthetic-like version of a (C, Y, X) or (C, Z, Y, X) image from a class-index target."""
    fg = (target > 0) & (target != IGNORE_INDEX)
    if image.ndim == 3:
        return synthetic_like(image, fg, blur_kernel, blur_sigma)
    return np.stack([synthetic_like(image[:, z], fg[z], blur_kernel, blur_sigma) for z in range(image.shape[1])],
                    axis=1)


@register_method
class Sissi(Adele):
    """ADELE correction + synthetic-like images regenerated every correction epoch."""

    name = "sissi"
    description = "noisy labels: ADELE start, TTA-fused correction and synthetic-like (seamless cloned) images"
    defaults = {**Adele.defaults, "blur_kernel": 71, "blur_sigma": 30.0, "synthetic_from_start": False}

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        if int(self.params["blur_kernel"]) < 1 or float(self.params["blur_sigma"]) <= 0:
            raise MethodError(f"{self.name}: blur_kernel must be >= 1 and blur_sigma > 0, got "
                              f"{self.params['blur_kernel']} and {self.params['blur_sigma']}")
        self.real_images: list[np.ndarray] = []

    def on_start(self, ctx: MethodContext) -> None:
        super().on_start(ctx)
        self.real_images = [it.image for it in ctx.items]
        if self.params["synthetic_from_start"] and ctx.set_training_items is not None:
            ctx.set_training_items([self._make_item(i, it, it.target) if it.target is not None else it
                                    for i, it in enumerate(ctx.items)])

    def _source_image(self, index: int, item: TrainingItem) -> np.ndarray:
        return self.real_images[index] if index < len(self.real_images) else item.image

    def _make_item(self, index: int, item: TrainingItem, target: np.ndarray) -> TrainingItem:
        real = self._source_image(index, item)
        img = synthetic_image(real, target, int(self.params["blur_kernel"]), float(self.params["blur_sigma"]))
        return replace(item, image=img.astype(np.float32), target=target)
