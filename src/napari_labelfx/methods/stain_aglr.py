"""``stain-aglr``: stain-agnostic learning with consistency and regeneration (METHODS.md section 7).

Every training batch gets a stain-jittered copy ``x_hat`` (HED-light: each haematoxylin, eosin and
DAB channel ``v -> v (1 + sigma) + beta`` with ``sigma, beta ~ U(-0.05, 0.05)``). Both copies go
through the segmentation network in one forward pass and the loss is

    L = task(x) + reg_weight * L_Reg + cons_weight * L_Cons      (0.1 and 10 by default)

* ``task``: cross-entropy + soft Dice on the raw image's prediction (BCE + Dice when multi-label),
* ``L_Cons = KL(P(y|x) || P(y|x_hat))`` per pixel, with ``P(y|x)`` detached, so the jittered
  prediction is pulled towards the raw one and not the other way round,
* ``L_Reg``: a small regeneration head (separate module ``"regen"``) maps the jittered image's
  full-resolution decoder features back to the *raw* image (MSE): the features must keep the
  tissue structure while being stain-agnostic.

Only the segmentation network (``"net"``) is the inference model; the regeneration head is saved
with the training state but never runs at prediction time. Needs 3-channel (RGB) images.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.stain_augment import HEDJitter
from ..models.blocks import conv_nd
from . import losses
from .base import Method, MethodContext, MethodError, Param, ParamSpec
from .registry import register_method


class RegenerationHead(nn.Module):
    """Small conv head: decoder features (B, F, *spatial) -> reconstructed image (B, C, *spatial).

    Parameters
    ----------
    in_features : channels of the decoder map it reads.
    out_channels : image channels to reconstruct.
    spatial_dims : 2 or 3.
    hidden : channels of its one hidden layer.
    """

    def __init__(self, in_features: int, out_channels: int, spatial_dims: int = 2, hidden: int = 16) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.body = nn.Sequential(
            conv(in_features, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            conv(hidden, out_channels, kernel_size=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


def consistency_kl(raw_logits: torch.Tensor, jit_logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Mean per-pixel ``KL(P(y|x) || P(y|x_hat))``; the raw prediction is detached.

    Parameters
    ----------
    raw_logits, jit_logits : (B, K, *spatial) logits of the raw and the jittered image.
    multilabel : per-class Bernoulli KL (sigmoid) instead of the softmax categorical KL.
    """
    raw = raw_logits.detach().float()
    jit = jit_logits.float()
    if multilabel:
        # Bernoulli KL per class: p log(p/q) + (1-p) log((1-p)/(1-q)), in log-sigmoid form
        lp, lq = F.logsigmoid(raw), F.logsigmoid(jit)
        lp1, lq1 = F.logsigmoid(-raw), F.logsigmoid(-jit)
        kl = lp.exp() * (lp - lq) + lp1.exp() * (lp1 - lq1)
        return kl.sum(dim=1).mean()
    log_p = F.log_softmax(raw, dim=1)
    log_q = F.log_softmax(jit, dim=1)
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1).mean()


@register_method
class StainAgLr(Method):
    """Task loss + 0.1 x regeneration MSE + 10 x consistency KL between raw and HED-jittered copies."""

    name = "stain-aglr"
    description = "stain-agnostic training (H&E): HED-jitter consistency + feature regeneration; strong masks"
    params_spec = ParamSpec((
        Param("reg_weight", "float", 0.1, "weight of the regeneration loss", min=0, important=True),
        Param("cons_weight", "float", 10.0, "weight of the consistency loss", min=0, important=True),
        Param("hed_sigma", "float", 0.05, "HED jitter: range of the scale", min=0),
        Param("hed_bias", "float", 0.05, "HED jitter: range of the shift", min=0),
        Param("regen_hidden", "int", 16, "channels of the regeneration head", min=1),
        Param("dice_weight", "float", 1.0, "weight of the soft Dice term", min=0),
    ))

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.jitter = HEDJitter(sigma=float(self.params["hed_sigma"]), bias=float(self.params["hed_bias"]))
        self._rng: np.random.Generator | None = None

    def build_models(self, model_config: Any) -> dict[str, nn.Module]:
        from ..models import build_model

        if int(model_config.in_channels) != 3:
            raise MethodError(
                f"stain-aglr needs RGB (3-channel) images for the HED stain jitter, got {model_config.in_channels} channels"
            )
        net = build_model(model_config)
        feat = int(getattr(net, "feature_channels", model_config.width))
        regen = RegenerationHead(feat, int(model_config.in_channels), int(model_config.spatial_dims),
                                 int(self.params["regen_hidden"]))
        return {"net": net, "regen": regen}

    def _generator(self) -> np.random.Generator:
        if self._rng is None:
            # the trainer seeds torch from TrainConfig.seed, so the jitter is reproducible per run
            self._rng = np.random.default_rng(int(torch.initial_seed()) % (2**63))
        return self._rng

    def forward(self, models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor], ctx: MethodContext) -> dict[str, Any]:
        x = batch["image"]
        if x.shape[1] != 3:
            raise MethodError(f"stain-aglr needs RGB (3-channel) patches, got {x.shape[1]} channels")
        # the jitter is colour arithmetic in optical density: keep it in float32 even under AMP
        with torch.autocast(device_type=x.device.type, enabled=False):
            x_hat = self.jitter(x.detach().float(), self._generator()).to(x.dtype)
        b = x.shape[0]
        out = models["net"](torch.cat([x, x_hat], dim=0))
        recon = models["regen"](out.decoder[-1][b:])
        return {
            "net": type(out)(logits=out.logits[:b], features=out.features[:b],
                             decoder=[d[:b] for d in out.decoder],
                             image_logits=None if out.image_logits is None else out.image_logits[:b]),
            "jittered_logits": out.logits[b:],
            "reconstruction": recon,
        }

    def loss(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, Any], ctx: MethodContext
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        logits = outputs["net"].logits
        target = batch["target"]
        dice_w = float(self.params["dice_weight"])
        if ctx.multilabel:
            task = losses.bce_with_ignore(logits, target) + dice_w * losses.soft_dice_loss_multilabel(logits, target)
        else:
            task = losses.cross_entropy(logits, target) + dice_w * losses.soft_dice_loss(logits, target)
        cons = consistency_kl(logits, outputs["jittered_logits"], multilabel=ctx.multilabel)
        reg = F.mse_loss(outputs["reconstruction"].float(), batch["image"].detach().float())
        total = task + float(self.params["reg_weight"]) * reg + float(self.params["cons_weight"]) * cons
        return total, {"task": task.detach(), "reg": reg.detach(), "cons": cons.detach()}
