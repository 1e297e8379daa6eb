"""``chexseg``: classifier saliency as pseudo-masks, mixed with the strong masks (Gadgil et al. 2021).

1. The UNet gets an image-level head on its bottleneck (``ModelConfig.image_head``). Throughout
   training it learns image-level BCE from whole tagged images (resized to the patch size) and from
   the classes present in strong patches (which give the negatives that tags of always-present
   classes lack), alongside CE + Dice on the strong patches.
2. After ``classifier_fraction`` of the iterations, Grad-CAM maps of every tagged class are computed
   on the tagged images (and on the strong images to choose the thresholds: per class, the one that
   maximises IoU with the strong masks; Otsu per map when no strong mask shows the class), normalised
   by their maxima, thresholded and hole-filled into pseudo-masks. They are published as RESULT
   layers (saliency images and pseudo-mask labels) that the person can inspect and accept/repaint.
3. From then on each sample of a batch stays the engine's strong patch with probability ``p``
   (default 0.9), else it is replaced by a random crop of a pseudo-masked image.

Distillation variant (``distill=true``, CheXseg's teacher-student baseline): at the switch the network
(so far trained on the strong masks) is frozen as the teacher; the samples drawn with probability
``1 - p`` are crops of images without masks (tagged or not), and the network learns the teacher's
softened outputs on them (KL divergence at ``temperature``, scaled by its square; BCE against the
softened sigmoids for multi-label tables) instead of Grad-CAM pseudo-masks.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE
from ..core.results import MethodResult, ResultLayer
from ..data.crop import crop_pad
from ..tools.gradcam import best_thresholds, normalise_maps, otsu_threshold, pseudo_mask, unet_grad_cam
from . import losses
from ._deep_supervision import TaggedImageSampler, patch_tags
from .base import Method, MethodContext, MethodError, Param, ParamSpec
from .registry import register_method


@register_method
class CheXseg(Method):
    """Strong masks + Grad-CAM pseudo-masks of image-level tagged images, sampled with probability p."""

    name = "chexseg"
    description = "image-level tags: classifier Grad-CAM pseudo-masks mixed with strong masks (p = strong share)"
    params_spec = ParamSpec((
        Param("p", "float", 0.9, "probability that a sample is a strong patch (else a pseudo-masked crop)",
              min=0, max=1, important=True),
        Param("classifier_fraction", "float", 0.3, "share of the run before the pseudo-masks are made",
              min=0, max=1, max_open=True, important=True),
        Param("lambda_cls", "float", 1.0, "weight of the image-level BCE", min=0),
        Param("tag_batch", "int", 2, "whole tagged images per step for the classifier", min=0),
        Param("dice_weight", "float", 1.0, "weight of the soft Dice term", min=0),
        Param("threshold", "float", "auto", "`auto` = best IoU on the strong masks (else Otsu); `otsu`; or a number",
              min=0, max=1, min_open=True, max_open=True, choices=("auto", "otsu"), important=True),
        Param("fill_holes", "bool", True, "fill holes of the pseudo-masks"),
        Param("cam_scale", "float", 1.0, "Grad-CAM input: the whole image resized to cam_scale x the patch size",
              min=0, min_open=True),
        Param("max_result_images", "int", 4, "saliency/pseudo-mask layers sent for at most this many images", min=0),
        Param("distill", "bool", False, "teacher-student variant: at the switch the network is frozen as the teacher "
              "and the `1 - p` samples are crops of images without masks, trained on its softened outputs "
              "instead of Grad-CAM masks"),
        Param("temperature", "float", 10.0, "distillation: softening (KL divergence scaled by the temperature "
              "squared; BCE for multi-label)", min=0, min_open=True),
        Param("distill_weight", "float", 1.0, "weight of the distillation term", min=0),
    ))
    needs_target = True  # the engine samples strong patches; tagged images are drawn here

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self._teacher: nn.Module | None = None
        self._unlabeled: list[np.ndarray] = []
        self._tags = TaggedImageSampler(0)
        self._rng = np.random.default_rng(0)
        self._pseudo: list[tuple[np.ndarray, np.ndarray]] = []
        self._results: list[ResultLayer] = []
        self._made = False
        self.thresholds: list[float] = []
        self.threshold_iou: list[float] = []

    def build_models(self, model_config: Any) -> dict[str, nn.Module]:
        from ..models import build_model

        if not hasattr(model_config, "image_head"):
            raise MethodError("method 'chexseg' needs a model configuration with an image head option (unet)")
        return {"net": build_model(dataclasses.replace(model_config, image_head=True))}

    def on_start(self, ctx: MethodContext) -> None:
        seed = int(torch.initial_seed() % (2**32))
        self._tags = TaggedImageSampler(seed)
        self._rng = np.random.default_rng([seed, 7])
        if not self._tags.tagged_indices(ctx.items):
            ctx.log("chexseg: no image has image-level tags: training on the strong masks only", "warning")

    # -- pseudo-masks --------------------------------------------------------------------------------
    def _cam_size(self, patch: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(max(8, int(round(s * float(self.params["cam_scale"])))) for s in patch)

    def _class_list(self, ctx: MethodContext) -> list[int]:
        return list(range(ctx.num_classes)) if ctx.multilabel else list(range(1, ctx.num_classes))

    def make_pseudo_masks(self, ctx: MethodContext, patch: tuple[int, ...]) -> None:
        """Grad-CAM maps, thresholds and pseudo-masks for the tagged images (see the module docstring)."""
        model = ctx.models["net"]
        classes = self._class_list(ctx)
        size = self._cam_size(patch)
        strong_maps, strong_truths, strong_known = [], [], []
        for item in ctx.items:
            if item.target is None or item.image.ndim - 1 != len(patch):
                continue
            maps, _ = unet_grad_cam(model, item.image, classes, size, ctx.device)
            strong_maps.append(normalise_maps(maps))
            if ctx.multilabel:
                strong_truths.append(item.target == 1)
                strong_known.append(np.all(item.target != MULTILABEL_IGNORE, axis=0))
            else:
                strong_truths.append(np.stack([item.target == c for c in classes]))
                strong_known.append(item.target != IGNORE_INDEX)
        thr_param = self.params["threshold"]
        chosen = np.full(len(classes), np.nan)
        iou = np.full(len(classes), np.nan)
        if thr_param == "auto" and strong_maps:
            chosen, iou = best_thresholds(strong_maps, strong_truths, strong_known,
                                          fill_holes=bool(self.params["fill_holes"]))
        elif thr_param not in ("auto", "otsu"):
            chosen[:] = float(thr_param)
        self.thresholds = [float(t) for t in chosen]
        self.threshold_iou = [float(v) for v in iou]
        pseudo: list[tuple[np.ndarray, np.ndarray]] = []
        results: list[ResultLayer] = []
        n_shown = 0
        for index, item in enumerate(ctx.items):
            if item.tags is None or item.target is not None or item.image.ndim - 1 != len(patch):
                continue
            maps, probs = unet_grad_cam(model, item.image, classes, size, ctx.device)
            maps = normalise_maps(maps)
            thr = np.array([t if np.isfinite(t) else otsu_threshold(m) for t, m in zip(chosen, maps)])
            present = [bool(item.tags[c] > 0) for c in classes]
            target = pseudo_mask(maps, thr, present, ctx.multilabel, bool(self.params["fill_holes"]))
            pseudo.append((item.image, target))
            if n_shown < int(self.params["max_result_images"]):
                results.extend(self._layers(index, item.name, maps, target, ctx))
                n_shown += 1
        self._pseudo = pseudo
        self._results = results
        self._made = True
        described = ", ".join(
            f"{ctx.class_names[c]}: {t:.2f}" + (f" (IoU {v:.2f})" if np.isfinite(v) else " (Otsu)")
            for c, t, v in zip(classes, chosen, iou)
        )
        ctx.log(f"chexseg: {len(pseudo)} pseudo-masks from Grad-CAM; thresholds {described}")

    def _layers(self, index: int, name: str, maps: np.ndarray, target: np.ndarray,
                ctx: MethodContext) -> list[ResultLayer]:
        # image 0 keeps short names (the Train panel names layers "<image> <name>"); others add the name
        suffix = "" if index == 0 else f" {name}"
        classes = self._class_list(ctx)
        out = [ResultLayer(name=f"saliency {ctx.class_names[c]}{suffix}", kind="image", data=m, image_index=index,
                           colormap="inferno", opacity=0.5, additive=True, visible=False)
               for m, c in zip(maps, classes)]
        if ctx.multilabel:
            out += [ResultLayer(name=f"pseudo-mask {ctx.class_names[c]}{suffix}", kind="labels",
                                data=ch.astype(np.int32), image_index=index, opacity=0.5)
                    for ch, c in zip(target, classes)]
        else:
            out.append(ResultLayer(name=f"pseudo-mask{suffix}", kind="labels", data=target.astype(np.int32),
                                   image_index=index, opacity=0.5))
        return out

    def _pseudo_crop(self, patch: tuple[int, ...], multilabel: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """A random flipped crop of a pseudo-masked image (or, when distilling, of an image without mask)."""
        if self._teacher is not None:
            image, target = self._unlabeled[int(self._rng.integers(len(self._unlabeled)))], None
        else:
            image, target = self._pseudo[int(self._rng.integers(len(self._pseudo)))]
        spatial = image.shape[1:]
        start = tuple(int(self._rng.integers(0, max(1, d - s + 1))) for d, s in zip(spatial, patch))
        img = crop_pad(image, start, patch, 0.0)
        fill = MULTILABEL_IGNORE if multilabel else IGNORE_INDEX
        tgt = None if target is None else crop_pad(target, start, patch, fill)
        # flips as a light augmentation (the engine augmented only its own patches)
        for axis in range(len(patch)):
            if self._rng.random() < 0.5:
                img = np.flip(img, axis + 1)
                if tgt is not None:
                    tgt = np.flip(tgt, axis + (1 if multilabel else 0))
        return np.ascontiguousarray(img), None if tgt is None else np.ascontiguousarray(tgt)

    # -- training ------------------------------------------------------------------------------------
    def forward(self, models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor], ctx: MethodContext) -> dict[str, Any]:
        x, target = batch["image"], batch["target"]
        patch = tuple(int(s) for s in x.shape[2:])
        self._patch = patch
        swapped = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if self._pseudo or (self._teacher is not None and self._unlabeled):
            swap = self._rng.random(x.shape[0]) >= float(self.params["p"])
            if swap.any():
                x, target = x.clone(), target.clone()
                fill = MULTILABEL_IGNORE if ctx.multilabel else IGNORE_INDEX
                for i in np.flatnonzero(swap):
                    img, tgt = self._pseudo_crop(patch, ctx.multilabel)
                    x[i] = torch.from_numpy(img).to(x.device, x.dtype)
                    if tgt is None:  # distillation: no hard target, the teacher's soft one in loss()
                        target[i] = fill
                    else:
                        target[i] = torch.from_numpy(tgt).to(target.device, target.dtype)
                swapped = torch.from_numpy(swap).to(x.device)
        teacher = None
        if self._teacher is not None and bool(swapped.any()):
            with torch.no_grad():
                teacher = self._teacher(x[swapped]).logits.float()
        extra = None
        if float(self.params["lambda_cls"]) > 0:
            extra = self._tags.sample(ctx.items, int(self.params["tag_batch"]), patch, x.device)
        n = x.shape[0]
        inp = x if extra is None else torch.cat([x, extra[0].to(x.dtype)])
        out = models["net"](inp)
        return {"net": out, "n": n, "target": target, "tagged": extra, "swapped": swapped, "teacher": teacher}

    def loss(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, Any], ctx: MethodContext
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        out, n, target = outputs["net"], outputs["n"], outputs["target"]
        logits = out.logits[:n]
        if ctx.multilabel:
            seg = losses.bce_with_ignore(logits, target)
            dice = losses.soft_dice_loss_multilabel(logits, target)
        else:
            seg = losses.cross_entropy(logits, target)
            dice = losses.soft_dice_loss(logits, target)
        total = seg + float(self.params["dice_weight"]) * dice
        terms: dict[str, torch.Tensor | float] = {"ce": seg.detach(), "dice": dice.detach(),
                                                   "pseudo_share": outputs["swapped"].float().mean()}
        teacher = outputs.get("teacher")
        if teacher is not None:
            t = float(self.params["temperature"])
            student = logits[outputs["swapped"]].float() / t
            if ctx.multilabel:
                kd = F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher / t))
            else:  # per-pixel KL(teacher || student), averaged over pixels
                kd = F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher / t, 1), log_target=True,
                              reduction="none").sum(1).mean()
            kd = kd * t * t  # keeps the gradient scale independent of the temperature (Hinton et al.)
            total = total + float(self.params["distill_weight"]) * kd
            terms["distill"] = kd.detach()
        lam = float(self.params["lambda_cls"])
        if lam > 0 and out.image_logits is not None:
            # classifier: strong patches (classes present in the patch) + whole tagged images
            tags, weight = patch_tags(target, ctx.num_classes, ctx.multilabel)
            weight = weight * (~outputs["swapped"]).float()[:, None]  # pseudo-masks are no evidence
            img_logits = out.image_logits.float()
            bce = F.binary_cross_entropy_with_logits(img_logits[:n], tags, reduction="none") * weight
            num, den = bce.sum(), weight.sum()
            tagged = outputs.get("tagged")
            if tagged is not None:
                bce_t = F.binary_cross_entropy_with_logits(img_logits[n:], tagged[1], reduction="none") * tagged[2]
                num, den = num + bce_t.sum(), den + tagged[2].sum()
            cls = num / den.clamp_min(1.0)
            total = total + lam * cls
            terms["cls"] = cls.detach()
        return total, terms

    def on_iteration(self, ctx: MethodContext) -> None:
        switch = int(round(float(self.params["classifier_fraction"]) * ctx.total_iterations))
        if bool(self.params["distill"]):
            if self._teacher is None and ctx.iteration >= max(1, switch):
                self._start_distillation(ctx)
            return
        if self._made or ctx.iteration < max(1, switch) or not self._tags.tagged_indices(ctx.items):
            return
        self.make_pseudo_masks(ctx, getattr(self, "_patch", (128, 128)))
        if ctx.emit_result is not None and self._results:
            ctx.emit_result(MethodResult(layers=tuple(self._results), markers=((ctx.iteration, "pseudo-masks"),),
                                         message=f"chexseg: {len(self._pseudo)} Grad-CAM pseudo-masks ready"))

    def _start_distillation(self, ctx: MethodContext) -> None:
        """Freeze the network trained so far (strong masks) as the teacher of the images without masks."""
        ndim = len(getattr(self, "_patch", (128, 128)))
        self._unlabeled = [it.image for it in ctx.items if it.target is None and it.image.ndim - 1 == ndim]
        if not self._unlabeled:
            ctx.log("chexseg: distill=true but no image without a mask: training on the strong masks only", "warning")
        # not saved with checkpoints: a resumed run past the switch freezes its resumed network instead
        teacher = copy.deepcopy(ctx.models["net"]).eval()
        for prm in teacher.parameters():
            prm.requires_grad_(False)
        self._teacher = teacher
        ctx.log(f"chexseg: teacher frozen at iteration {ctx.iteration}; distilling on {len(self._unlabeled)} images "
                f"at temperature {float(self.params['temperature']):g}")
        if ctx.emit_result is not None:
            ctx.emit_result(MethodResult(
                markers=((ctx.iteration, "teacher"),),
                message=f"chexseg: distilling from the teacher on {len(self._unlabeled)} images"))

    def result_layers(self) -> MethodResult:
        return MethodResult()  # sent once, when made (see on_iteration): large arrays are not re-sent every epoch

    def state_dict(self) -> dict[str, Any]:
        return {"thresholds": list(self.thresholds)}
