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

Mixed batches (optional, SISSI's source + target training): ``clean_source`` names a second,
cleanly annotated dataset folder (``images/``, ``masks/``, ``meta.json``, the layout of
``labelfx eval``; e.g. another nuclei set). Every step then adds ``clean_batch`` patches of it
(0 = as many as the batch has, i.e. equal numbers) to the batch, drawn to cover every class, and the
supervised loss runs on both halves. The clean images are normalised like the training images
(percentile 1-99.8) and must have the same number of channels and classes.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..annotations.kinds import IGNORE_INDEX, TrainingItem
from ..tools.seamless import synthetic_like
from ._unlabelled import PatchDrawer, stack
from .adele import Adele
from .base import MethodContext, MethodError, Param
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
    params_spec = Adele.params_spec.with_changes("tta_flips", important=False).extend(
        Param("blur_kernel", "int", 71, "blur kernel of the synthetic-like background (a weak blur: 21)", min=1),
        Param("blur_sigma", "float", 30.0, "blur sigma of the synthetic-like background (a weak blur: 5)",
              min=0, min_open=True, important=True),
        Param("synthetic_from_start", "bool", False,
              "synthetic images from the first epoch, not only after the start of correction"),
        Param("clean_source", "text", "",
              "a cleanly annotated dataset folder (eval layout); each step adds its patches", important=True),
        Param("clean_batch", "int", 0, "clean patches per step (0 = as many as the batch: equal numbers)", min=0),
    )

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.real_images: list[np.ndarray] = []
        self.clean_items: list[TrainingItem] = []
        self._clean_drawer: PatchDrawer | None = None
        self._clean_rng = np.random.default_rng(0)

    def on_start(self, ctx: MethodContext) -> None:
        super().on_start(ctx)
        self.real_images = [it.image for it in ctx.items]
        source = str(self.params["clean_source"] or "").strip()
        if source and not self.clean_items:
            self.clean_items = load_clean_items(source, ctx)
            ctx.log(f"{self.name}: mixed batches with {len(self.clean_items)} clean images from {source}")
        self._clean_drawer = None
        self._clean_rng = np.random.default_rng([int(torch.initial_seed()) % (2 ** 32), 5])
        if self.params["synthetic_from_start"] and ctx.set_training_items is not None:
            ctx.set_training_items([self._make_item(i, it, it.target) if it.target is not None else it
                                    for i, it in enumerate(ctx.items)])

    def _source_image(self, index: int, item: TrainingItem) -> np.ndarray:
        return self.real_images[index] if index < len(self.real_images) else item.image

    def _make_item(self, index: int, item: TrainingItem, target: np.ndarray) -> TrainingItem:
        real = self._source_image(index, item)
        img = synthetic_image(real, target, int(self.params["blur_kernel"]), float(self.params["blur_sigma"]))
        return replace(item, image=img.astype(np.float32), target=target)

    # -- mixed batches with a clean source set ------------------------------------------------------
    def forward(self, models: Any, batch: dict[str, torch.Tensor], ctx: MethodContext) -> dict[str, Any]:
        if not self.clean_items:
            return super().forward(models, batch, ctx)
        image = batch["image"]
        patch = tuple(int(s) for s in image.shape[2:])
        if self._clean_drawer is None or self._clean_drawer.patch != patch:
            self._clean_drawer = PatchDrawer(self.clean_items, patch, ctx.num_classes, ctx.multilabel, self._clean_rng)
        n = int(self.params["clean_batch"]) or image.shape[0]
        clean = stack(self._clean_drawer.pool(n), image.device)
        out = models[self.inference_model](torch.cat([image, clean["image"].to(image.dtype)]))
        return {self.inference_model: out, "clean_target": clean["target"], "n_target": image.shape[0]}

    def loss(self, batch: dict[str, torch.Tensor], outputs: dict[str, Any], ctx: MethodContext
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        if "clean_target" not in outputs:
            return super().loss(batch, outputs, ctx)
        # one supervised loss over the target half and the clean half together (equal numbers)
        target = torch.cat([batch["target"], outputs["clean_target"].to(batch["target"].dtype)])
        total, terms = super().loss({**batch, "target": target}, outputs, ctx)
        terms["clean_patches"] = float(outputs["clean_target"].shape[0])
        return total, terms


def load_clean_items(folder: str | Path, ctx: MethodContext) -> list[TrainingItem]:
    """Training items with full masks from a dataset folder (the ``labelfx eval`` layout).

    Raises
    ------
    MethodError
        When the folder cannot be read, or its images or classes do not fit the training images.
    """
    from ..annotations.dataset_items import strong_items
    from ..io.dataset import DatasetError, Sample, load_dataset

    try:
        ds = load_dataset(folder)
    except (DatasetError, OSError) as exc:
        raise MethodError(f"sissi: clean_source {str(folder)!r}: {exc}") from None
    if ds.multilabel != bool(ctx.multilabel):
        raise MethodError(f"sissi: clean_source {ds.root} is {'multi-label' if ds.multilabel else 'multi-class'}, "
                          f"the training labels are not")
    k = len(ds.class_names)
    if k != ctx.num_classes:
        raise MethodError(f"sissi: clean_source {ds.root} has {k} classes {ds.class_names}, the training labels "
                          f"{ctx.num_classes} {list(ctx.class_names)}")
    channels = ctx.items[0].image.shape[0] if ctx.items else None

    def same_channels(stem: str, smp: Sample) -> None:
        if channels is not None and smp.image.shape[0] != channels:
            raise MethodError(f"sissi: clean_source image {stem!r} has {smp.image.shape[0]} channels, the training "
                              f"images {channels}")

    items = strong_items(ds, same_channels)
    if not items:
        raise MethodError(f"sissi: clean_source {ds.root} holds no image")
    return items
