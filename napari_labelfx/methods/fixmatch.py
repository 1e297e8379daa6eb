"""``fixmatch`` and ``rpg+``: confidence-thresholded pseudo-labels from a weak view, learnt on a strong view.

The weak view of an unlabelled patch (random flips) gives the pseudo-label: the arg-max class where
the top softmax probability exceeds ``tau`` (multi-label: ``round(p)`` per class where
``|p - 0.5| > |0.5 - tau|``), unknown elsewhere. The strong view (RandAugment-style ops + CutOut,
``data/strong_augment.py``) moves the pseudo-label with its geometry and makes CutOut squares
background; the network must predict that label on the strong view (CE over the unlabelled pixels,
unconfident ones contributing zero, as in FixMatch).

* ``fixmatch``: supervised CE + Dice on the labelled patches + ``fixmatch_weight`` x the strong-view loss.
* ``rpg+`` (RPG+): the ``rpg`` loss + the FixMatch loss (METHODS.md section 4).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE
from ..data.strong_augment import StrongAugmentConfig, strong_augment
from .base import MethodContext, Param, ParamSpec
from .registry import register_method
from .rpg import RPG


def confident_pseudo_label(logits: torch.Tensor, tau: float, multilabel: bool) -> torch.Tensor:
    """Pseudo-label of weak-view logits (B, K, *spatial): unknown where the network is not confident.

    Returns (B, *spatial) int64 with IGNORE_INDEX, or (B, K, *spatial) uint8 with MULTILABEL_IGNORE.
    """
    with torch.no_grad():
        if multilabel:
            p = torch.sigmoid(logits.float())
            sure = (p - 0.5).abs() > abs(0.5 - tau)
            hard = (p > 0.5).to(torch.uint8)
            return torch.where(sure, hard, torch.full_like(hard, MULTILABEL_IGNORE))
        prob = torch.softmax(logits.float(), dim=1)
        conf, cls = prob.max(dim=1)
        return torch.where(conf > tau, cls, torch.full_like(cls, IGNORE_INDEX))


class _FixMatchMixin:
    """The strong-view forward pass shared by ``fixmatch`` and ``rpg+``."""

    params: dict[str, Any]
    name: str
    _rng: np.random.Generator

    def _fixmatch_forward(self, net: Any, weak_logits: torch.Tensor, unl_t: dict[str, torch.Tensor],
                          ctx: MethodContext) -> dict[str, Any]:
        tau = float(self.params["tau"])
        pseudo = confident_pseudo_label(weak_logits, tau, ctx.multilabel)
        query = unl_t["query"]
        # only unknown pixels get pseudo-labels; known (painted) ones are trained by the labelled batch
        if ctx.multilabel:
            pseudo = torch.where(query[:, None], pseudo, torch.full_like(pseudo, MULTILABEL_IGNORE))
        else:
            pseudo = torch.where(query, pseudo, torch.full_like(pseudo, IGNORE_INDEX))
        cfg = StrongAugmentConfig(n_ops=int(self.params["n_ops"]), magnitude=float(self.params["magnitude"]),
                                  cutout=float(self.params["cutout"]))
        view = strong_augment(unl_t["image"], pseudo, ctx.multilabel, self._rng, cfg,
                              weight=query.float())
        strong = net(view.image.to(unl_t["image"].dtype))
        # the mean runs over the strong view's unlabelled pixels (+ CutOut squares, now background)
        mask = (view.weight > 0.5) | view.cutout.reshape(view.weight.shape[:1] + (1,) * (view.weight.ndim - 3)
                                                        + view.cutout.shape[1:]).expand_as(view.weight)
        return {"strong_logits": strong.logits, "strong_target": view.target,
                "strong_weight": torch.ones_like(view.weight), "strong_mask": mask,
                "fixmatch_confident": _confident_share(pseudo, query, ctx.multilabel)}


def _confident_share(pseudo: torch.Tensor, query: torch.Tensor, multilabel: bool) -> torch.Tensor:
    known = (pseudo != MULTILABEL_IGNORE).all(dim=1) if multilabel else pseudo != IGNORE_INDEX
    return (known & query).float().sum() / query.float().sum().clamp_min(1.0)


FIXMATCH_PARAMS = ParamSpec((
    Param("tau", "float", 0.95, "confidence threshold of the weak-view pseudo-label", min=0, max=1,
          min_open=True, max_open=True, important=True),
    Param("fixmatch_weight", "float", 1.0, "weight of the strong-view (FixMatch) loss", min=0),
    Param("n_ops", "int", 2, "strong view: RandAugment operations per sample", min=0),
    Param("magnitude", "float", 1.0, "strong view: largest strength of each operation", min=0, max=1),
    Param("cutout", "float", 0.5, "strong view: largest CutOut edge as a share of the patch edge", min=0, max=1),
))


def _check_fixmatch(params: dict[str, Any], name: str) -> None:
    StrongAugmentConfig(int(params["n_ops"]), float(params["magnitude"]), float(params["cutout"]))


@register_method
class FixMatch(_FixMatchMixin, RPG):
    """Supervised loss + FixMatch consistency on unlabelled pixels (no reference pool)."""

    name = "fixmatch"
    description = "FixMatch: confident weak-view pseudo-labels learnt on a strong (RandAugment + CutOut) view"
    params_spec = (RPG.params_spec.with_changes("pool", default=1, important=False)
                   .with_changes("rpg_weight", default=0.0).with_changes("k", important=False)
                   .with_changes("grid", important=False).with_changes("unlabelled_batch", important=True)
                   + FIXMATCH_PARAMS)
    use_rpg = False
    use_fixmatch = True

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        _check_fixmatch(self.params, self.name)

    def loss(self, batch: dict[str, torch.Tensor], outputs: dict[str, Any], ctx: MethodContext
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        total, terms = super().loss(batch, outputs, ctx)
        if "fixmatch_confident" in outputs:
            terms["confident"] = outputs["fixmatch_confident"].detach()
        return total, terms


@register_method
class RPGPlus(_FixMatchMixin, RPG):
    """RPG + FixMatch (RPG+)."""

    name = "rpg+"
    description = "RPG+: reference-guided pseudo-labels plus FixMatch on a strongly augmented view"
    params_spec = RPG.params_spec.with_changes("grid", important=False) + FIXMATCH_PARAMS
    use_rpg = True
    use_fixmatch = True

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        _check_fixmatch(self.params, self.name)

    def loss(self, batch: dict[str, torch.Tensor], outputs: dict[str, Any], ctx: MethodContext
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        total, terms = super().loss(batch, outputs, ctx)
        if "fixmatch_confident" in outputs:
            terms["confident"] = outputs["fixmatch_confident"].detach()
        return total, terms
