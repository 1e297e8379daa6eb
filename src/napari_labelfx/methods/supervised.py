"""``supervised``: strong (full) masks with cross-entropy + soft Dice.

Multi-label targets use sigmoid BCE + soft Dice per class. Unknown pixels (unpainted pixels of
partial volumes, held-out validation pixels) are ignored by both terms.
"""
from __future__ import annotations

from typing import Any

import torch

from . import losses
from .base import Method, MethodContext, Param, ParamSpec
from .registry import register_method


@register_method
class Supervised(Method):
    """Cross-entropy + Dice on every known pixel."""

    name = "supervised"
    description = "strong masks: cross-entropy + soft Dice (BCE + Dice per class when multi-label)"
    params_spec = ParamSpec((
        Param("ce_weight", "float", 1.0, "weight of the cross-entropy (BCE) term", min=0),
        Param("dice_weight", "float", 1.0, "weight of the soft Dice term", min=0),
        Param("dice_include_background", "bool", False, "Dice also over the background class"),
    ))
    supports_input_scale = True  # only the logits are used

    def loss(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, Any], ctx: MethodContext
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        logits = outputs[self.inference_model].logits
        target = batch["target"]
        if ctx.multilabel:
            ce = losses.bce_with_ignore(logits, target)
            dice = losses.soft_dice_loss_multilabel(logits, target)
            names = ("bce", "dice")
        else:
            ce = losses.cross_entropy(logits, target)
            dice = losses.soft_dice_loss(
                logits, target, include_background=bool(self.params["dice_include_background"])
            )
            names = ("ce", "dice")
        total = float(self.params["ce_weight"]) * ce + float(self.params["dice_weight"]) * dice
        return total, {names[0]: ce.detach(), names[1]: dice.detach()}
