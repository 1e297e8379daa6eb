"""``mlds`` and ``mlds-mt``: multi-label deep supervision (Reiss et al., CVPR 2021).

* Strong/partial masks: CE + soft Dice on the main head, plus ``lambda_ds`` times the sum over the
  decoder heads f0..fD of sigmoid BCE against max-pooled multi-hot targets.
* Image-level tags: whole tagged images (resized to the patch size, see
  :class:`~._deep_supervision.TaggedImageSampler`) join the batch; the global average of each
  head's logits is trained with BCE against the tags (``lambda_image``).
* Unlabeled images (``unlabeled``): ``"self"`` (Self-Taught) uses the student's own detached
  prediction as deep-head targets; ``"mean-teacher"`` (Mean-Taught, the default of ``mlds-mt``)
  uses an EMA teacher's prediction for those targets and adds the mean-teacher MSE between student
  and teacher probabilities. Both unlabeled terms follow a sigmoid ramp-up over the first
  ``rampup`` share of training. Classes an unlabeled image is tagged without are removed from its
  pseudo-targets.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE
from . import losses
from ._deep_supervision import (
    DeepSupervisionHeads,
    TaggedImageSampler,
    deep_supervision_loss,
    image_level_loss,
    pool_mask_targets,
)
from .base import Method, MethodContext, MethodError, Param, ParamSpec
from .registry import register_method

UNLABELED_MODES = ("none", "self", "mean-teacher")


def sigmoid_rampup(progress: float, length: float) -> float:
    """exp(-5 (1 - t)^2) with t = progress / length clipped to [0, 1] (Laine & Aila / Tarvainen)."""
    if length <= 0:
        return 1.0
    t = min(1.0, max(0.0, progress / length))
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student; buffers (BN statistics) are copied."""
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        pt.mul_(decay).add_(ps.detach(), alpha=1.0 - decay)
    for bt, bs in zip(teacher.buffers(), student.buffers()):
        bt.copy_(bs)


@register_method
class MLDS(Method):
    """Deep supervision with max-pooled multi-hot targets, image-level tags on all heads."""

    name = "mlds"
    description = "multi-label deep supervision: decoder heads with pooled targets, image-level tags, unlabeled images"
    params_spec = ParamSpec((
        Param("lambda_ds", "float", 1.0, "weight of the deep-supervision heads", min=0, important=True),
        Param("lambda_image", "float", 1.0, "weight of the image-level (tag) term", min=0, important=True),
        Param("tag_batch", "int", 2, "whole tagged images added to each step (resized to the patch; 0 = none)", min=0),
        Param("dice_weight", "float", 1.0, "weight of the soft Dice term", min=0),
        Param("head_width", "int", 64, "channels of each deep head", min=1),
        Param("unlabeled", "choice", "none", "unlabelled images: `self` = Self-Taught (the student's own "
              "prediction), `mean-teacher` = an EMA teacher's", choices=UNLABELED_MODES, important=True),
        Param("lambda_unlabeled", "float", 1.0, "weight of the deep-head loss on pseudo-targets", min=0),
        Param("ema", "float", 0.99, "mean teacher: EMA decay", min=0, max=1, max_open=True),
        Param("consistency", "float", 1.0, "mean teacher: weight of the MSE", min=0),
        Param("rampup", "float", 0.3, "share of training over which the unlabelled terms ramp up", min=0),
        Param("teacher_noise", "float", 0.1, "mean teacher: std of Gaussian noise on the teacher's input", min=0),
    ))
    needs_target = False  # unlabeled / tagged images are drawn too

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self._tags = TaggedImageSampler(0)

    @property
    def uses_teacher(self) -> bool:
        return self.params["unlabeled"] == "mean-teacher"

    def build_models(self, model_config: Any) -> dict[str, nn.Module]:
        from ..models import build_model

        net = build_model(model_config)
        channels = getattr(net, "decoder_channels", None)
        if channels is None:
            raise MethodError(f"method {self.name!r} needs a model with decoder taps (decoder_channels), e.g. unet")
        models: dict[str, nn.Module] = {
            "net": net,
            "ds_heads": DeepSupervisionHeads(channels, model_config.num_classes, model_config.spatial_dims,
                                             int(self.params["head_width"])),
        }
        if self.uses_teacher:
            teacher = copy.deepcopy(net)
            for p in teacher.parameters():
                p.requires_grad_(False)  # updated by EMA only; parameter_groups skips it
            models["teacher"] = teacher
        return models

    def on_start(self, ctx: MethodContext) -> None:
        self._tags = TaggedImageSampler(int(torch.initial_seed() % (2**32)))

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor], ctx: MethodContext) -> dict[str, Any]:
        x = batch["image"]
        n = x.shape[0]
        extra = None
        if float(self.params["lambda_image"]) > 0:
            extra = self._tags.sample(ctx.items, int(self.params["tag_batch"]), x.shape[2:], x.device)
        inp = x if extra is None else torch.cat([x, extra[0].to(x.dtype)])
        out = models["net"](inp)
        heads = models["ds_heads"](out.decoder)
        result: dict[str, Any] = {"net": out, "heads": heads, "n": n, "tagged": extra}
        if self.uses_teacher:
            teacher = models["teacher"]
            teacher.eval()  # EMA weights with running BN statistics: a stable target
            with torch.no_grad():
                noisy = x + float(self.params["teacher_noise"]) * torch.randn_like(x)
                result["teacher_logits"] = teacher(noisy).logits.detach()
        return result

    # -- loss ----------------------------------------------------------------------------------------
    def _probs(self, logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
        return torch.sigmoid(logits.float()) if multilabel else torch.softmax(logits.float(), dim=1)

    def _pseudo_targets(
        self, probs: torch.Tensor, batch: dict[str, torch.Tensor], unlabeled: torch.Tensor, multilabel: bool
    ) -> torch.Tensor:
        """Engine-format targets from probabilities for unlabeled samples (others: all unknown)."""
        probs = probs.detach()
        if "tags" in batch and "has_tags" in batch:
            # a class the image is tagged without cannot be there (background always can)
            allowed = batch["tags"].float().clone()
            if not multilabel:
                allowed[:, 0] = 1.0
            allowed = torch.where(batch["has_tags"][:, None], allowed, torch.ones_like(allowed))
            probs = probs * allowed.reshape(*allowed.shape, *([1] * (probs.ndim - 2)))
        if multilabel:
            target = (probs > 0.5).to(torch.uint8)
            fill = torch.full_like(target, MULTILABEL_IGNORE)
            mask = unlabeled.reshape(-1, *([1] * (target.ndim - 1)))
        else:
            target = probs.argmax(dim=1)
            fill = torch.full_like(target, IGNORE_INDEX)
            mask = unlabeled.reshape(-1, *([1] * (target.ndim - 1)))
        return torch.where(mask, target, fill)

    def loss(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, Any], ctx: MethodContext
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        out, heads, n = outputs["net"], outputs["heads"], outputs["n"]
        multilabel = ctx.multilabel
        logits = out.logits[:n]
        target = batch["target"]
        if multilabel:
            main = losses.bce_with_ignore(logits, target)
            dice = losses.soft_dice_loss_multilabel(logits, target)
            known = (target != MULTILABEL_IGNORE).flatten(1).any(dim=1)
        else:
            main = losses.cross_entropy(logits, target)
            dice = losses.soft_dice_loss(logits, target)
            known = (target != IGNORE_INDEX).flatten(1).any(dim=1)
        total = main + float(self.params["dice_weight"]) * dice
        terms: dict[str, torch.Tensor | float] = {"ce": main.detach(), "dice": dice.detach()}

        sample_heads = [h[:n] for h in heads]
        sizes = [h.shape[2:] for h in sample_heads]
        lam_ds = float(self.params["lambda_ds"])
        if lam_ds > 0:
            ds = deep_supervision_loss(sample_heads, pool_mask_targets(target, ctx.num_classes, sizes, multilabel))
            total = total + lam_ds * ds
            terms["ds"] = ds.detach()

        ramp = sigmoid_rampup(ctx.progress, float(self.params["rampup"]))
        mode = self.params["unlabeled"]
        unlabeled = ~known
        if mode != "none" and float(self.params["lambda_unlabeled"]) > 0 and bool(unlabeled.any()):
            source = outputs["teacher_logits"] if mode == "mean-teacher" else logits.detach()
            pseudo = self._pseudo_targets(self._probs(source, multilabel), batch, unlabeled, multilabel)
            un = deep_supervision_loss(sample_heads, pool_mask_targets(pseudo, ctx.num_classes, sizes, multilabel))
            total = total + float(self.params["lambda_unlabeled"]) * ramp * un
            terms["ds_unlabeled"] = un.detach()
        if mode == "mean-teacher" and float(self.params["consistency"]) > 0:
            mse = F.mse_loss(self._probs(logits, multilabel), self._probs(outputs["teacher_logits"], multilabel))
            total = total + float(self.params["consistency"]) * ramp * mse
            terms["consistency"] = mse.detach()

        tagged = outputs.get("tagged")
        lam_img = float(self.params["lambda_image"])
        if tagged is not None and lam_img > 0:
            img = image_level_loss([h[n:] for h in heads], tagged[1], tagged[2])
            total = total + lam_img * img
            terms["image"] = img.detach()
        return total, terms

    # -- hooks ---------------------------------------------------------------------------------------
    def on_iteration(self, ctx: MethodContext) -> None:
        if self.uses_teacher:
            # the early teacher follows the student closely (true average of the weights so far)
            decay = min(1.0 - 1.0 / (ctx.iteration + 1), float(self.params["ema"]))
            ema_update(ctx.models["teacher"], ctx.models["net"], decay)


@register_method
class MLDSMeanTeacher(MLDS):
    """MLDS with an EMA mean teacher for unlabeled images (``unlabeled="self"`` for Self-Taught)."""

    name = "mlds-mt"
    description = "MLDS + unlabeled images through an EMA mean teacher (or self-taught)"
    params_spec = MLDS.params_spec.with_changes("unlabeled", default="mean-teacher").with_changes("ema", important=True)
