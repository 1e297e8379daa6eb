"""``scribble``: partial cross-entropy on painted pixels only (unpainted pixels are unknown).

Multi-label scribbles use BCE on the painted (pixel, class) entries.
"""
from __future__ import annotations

from typing import Any

import torch

from . import losses
from .base import Method, MethodContext, Param, ParamSpec
from .registry import register_method


@register_method
class Scribble(Method):
    """Partial cross-entropy; optionally each painted class weighs the same."""

    name = "scribble"
    description = "scribbles: partial cross-entropy on painted pixels only"
    params_spec = ParamSpec((
        Param("class_balanced", "bool", True,
              "every painted class weighs the same, however many pixels it has", important=True),
    ))
    supports_input_scale = True  # only the logits are used

    def loss(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, Any], ctx: MethodContext
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        logits = outputs[self.inference_model].logits
        target = batch["target"]
        if ctx.multilabel:
            loss = losses.bce_with_ignore(logits, target)
            return loss, {"pbce": loss.detach()}
        loss = losses.partial_cross_entropy(logits, target, class_balanced=bool(self.params["class_balanced"]))
        return loss, {"pce": loss.detach()}
