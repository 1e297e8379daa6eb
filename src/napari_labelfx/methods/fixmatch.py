"""``fixmatch`` and ``rpg+``: confidence-thresholded pseudo-labels from a weak view, learnt on a strong view.

The weak view of an unlabelled patch (random flips) gives the pseudo-label: the arg-max class where
the top softmax probability exceeds ``tau`` (multi-label: ``round(p)`` per class where
``|p - 0.5| > |0.5 - tau|``), unknown elsewhere. The strong view (RandAugment-style ops + CutOut,
``data/strong_augment.py``) moves the pseudo-label with its geometry and makes CutOut squares
background; the network must predict that label on the strong view (CE over the unlabelled pixels,
unconfident ones contributing zero, as in FixMatch).

* ``fixmatch``: supervised CE + Dice on the labelled patches + ``fixmatch_weight`` x the strong-view loss.
* ``rpg+`` (RPG+): the ``rpg`` loss + the FixMatch loss (METHODS.md section 4).

Both are :class:`~._unlabelled.UnlabelledBatchMethod` s: ``fixmatch`` with the
:class:`ConfidentStrongView` term, ``rpg+`` with RPG's :class:`~.rpg.ReferencePseudoLabels` and it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE
from ..data.strong_augment import StrongAugmentConfig, strong_augment
from ._unlabelled import UNLABELLED_PARAMS, UnlabelledBatchMethod, UnlabelledTerm, WeakStep, weighted_pseudo_loss
from .base import MethodContext, MethodError, Param, ParamSpec
from .registry import register_method
from .rpg import REFERENCE_PARAMS, ReferencePseudoLabels


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


class ConfidentStrongView(UnlabelledTerm):
    """The FixMatch term: the weak view's confident pseudo-label learnt on a strong view (module docstring)."""

    params_spec = FIXMATCH_PARAMS

    def __init__(self, params: dict[str, Any], method_name: str) -> None:
        super().__init__(params, method_name)
        try:
            self.augment = StrongAugmentConfig(int(params["n_ops"]), float(params["magnitude"]),
                                               float(params["cutout"]))
        except ValueError as exc:
            raise MethodError(f"method {method_name!r}: {exc}") from None

    @property
    def weight(self) -> float:
        return float(self.params["fixmatch_weight"])

    def forward(self, step: WeakStep, extra: dict[str, torch.Tensor] | None, ctx: MethodContext,
                rng: np.random.Generator) -> dict[str, Any]:
        unl_t = step.unl
        pseudo = confident_pseudo_label(step.out.logits[step.unlabelled].detach(), float(self.params["tau"]),
                                        ctx.multilabel)
        query = unl_t["query"]
        # only unknown pixels get pseudo-labels; known (painted) ones are trained by the labelled batch
        if ctx.multilabel:
            pseudo = torch.where(query[:, None], pseudo, torch.full_like(pseudo, MULTILABEL_IGNORE))
        else:
            pseudo = torch.where(query, pseudo, torch.full_like(pseudo, IGNORE_INDEX))
        view = strong_augment(unl_t["image"], pseudo, ctx.multilabel, rng, self.augment, weight=query.float())
        strong = step.net(view.image.to(unl_t["image"].dtype))
        # the mean runs over the strong view's unlabelled pixels (+ CutOut squares, now background)
        mask = (view.weight > 0.5) | view.cutout.reshape(view.weight.shape[:1] + (1,) * (view.weight.ndim - 3)
                                                        + view.cutout.shape[1:]).expand_as(view.weight)
        return {"strong_logits": strong.logits, "strong_target": view.target,
                "strong_weight": torch.ones_like(view.weight), "strong_mask": mask,
                "fixmatch_confident": _confident_share(pseudo, query, ctx.multilabel)}

    def loss(self, logits: torch.Tensor, outputs: dict[str, Any], ctx: MethodContext
             ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor | float]]:
        if "strong_logits" not in outputs:
            return None, {}
        lf = weighted_pseudo_loss(outputs["strong_logits"], outputs["strong_target"], outputs["strong_weight"],
                                  outputs["strong_mask"], ctx.multilabel)
        return lf, {"fixmatch": lf.detach(), "confident": outputs["fixmatch_confident"].detach()}


@register_method
class FixMatch(UnlabelledBatchMethod):
    """Supervised loss + FixMatch consistency on unlabelled pixels (no reference pool)."""

    name = "fixmatch"
    description = "FixMatch: confident weak-view pseudo-labels learnt on a strong (RandAugment + CutOut) view"
    # RPG's parameters, which fixmatch once carried unused, are still accepted from old configs
    params_spec = (UNLABELLED_PARAMS.with_changes("unlabelled_batch", important=True) + FIXMATCH_PARAMS).with_retired(
        "pool", "grid", "k", "chunk_elements", "rpg_weight", "result_every")
    term_types = (ConfidentStrongView,)


@register_method
class RPGPlus(UnlabelledBatchMethod):
    """RPG + FixMatch (RPG+): both terms on the same unlabelled patches."""

    name = "rpg+"
    description = "RPG+: reference-guided pseudo-labels plus FixMatch on a strongly augmented view"
    params_spec = REFERENCE_PARAMS.with_changes("grid", important=False) + UNLABELLED_PARAMS + FIXMATCH_PARAMS
    term_types = (ReferencePseudoLabels, ConfidentStrongView)
