"""What every segmentation model returns."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SegOutput:
    """Outputs of one forward pass.

    Attributes
    ----------
    logits : (B, num_classes, *spatial) segmentation logits at input resolution.
    features : (B, F, *spatial) per-pixel features that ``model.head`` maps to ``logits``.
    decoder : depth + 1 decoder maps [f0 = bottleneck at 1/2**depth, ..., f_depth at full resolution];
        map i covers ``ceil(size / 2**(depth - i))`` pixels per axis (the valid part of the input).
    image_logits : (B, num_classes) image-level logits, or None without an image head.
    """

    logits: torch.Tensor
    features: torch.Tensor
    decoder: list[torch.Tensor]
    image_logits: torch.Tensor | None = None
