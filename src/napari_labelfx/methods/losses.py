"""Losses that skip unknown pixels: CE, soft Dice, BCE (multi-label) and partial CE for scribbles.

All functions take raw logits ``(B, K, *spatial)`` and compute in float32 (safe under autocast).
Unknown pixels are ``IGNORE_INDEX`` (-1) in int64 class targets ``(B, *spatial)`` and
``MULTILABEL_IGNORE`` (255) in uint8 multi-label targets ``(B, K, *spatial)``. A batch without any
known pixel gives a zero loss that still carries the graph, so the training step never breaks.
None of them synchronise with the GPU (no ``.item()``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE


def _check(logits: torch.Tensor, target: torch.Tensor, multilabel: bool) -> None:
    if multilabel:
        if target.shape != logits.shape:
            raise ValueError(f"multi-label target shape {tuple(target.shape)} != logits shape {tuple(logits.shape)}")
    elif target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"class-index target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)} "
            "(expected logits without the class axis)"
        )


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy averaged over known pixels (weighted mean with ``class_weights``)."""
    _check(logits, target, False)
    target = target.long()
    known = target != ignore_index
    safe = torch.where(known, target, torch.zeros_like(target))
    ce = F.cross_entropy(logits.float(), safe, reduction="none")
    w = known.float()
    if class_weights is not None:
        w = w * class_weights.to(logits.device, torch.float32)[safe]
    return (ce * w).sum() / w.sum().clamp_min(1e-12)


def partial_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    class_balanced: bool = False,
) -> torch.Tensor:
    """Partial cross-entropy for scribbles: CE on painted pixels only.

    With ``class_balanced`` each class present among the painted pixels contributes equally
    (mean CE per class, then mean over classes), so a long background stroke does not swamp a
    short foreground one.
    """
    if not class_balanced:
        return cross_entropy(logits, target, ignore_index)
    _check(logits, target, False)
    target = target.long()
    k = logits.shape[1]
    known = target != ignore_index
    safe = torch.where(known, target, torch.zeros_like(target))
    ce = F.cross_entropy(logits.float(), safe, reduction="none")
    onehot = F.one_hot(safe, k).float() * known.unsqueeze(-1).float()  # (B, *spatial, K)
    per_class_sum = (ce.unsqueeze(-1) * onehot).flatten(0, -2).sum(0)
    per_class_n = onehot.flatten(0, -2).sum(0)
    present = per_class_n > 0
    per_class = per_class_sum / per_class_n.clamp_min(1)
    return (per_class * present).sum() / present.sum().clamp_min(1)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    include_background: bool = False,
    smooth: float = 1e-5,
    batch_dice: bool = True,
) -> torch.Tensor:
    """Soft Dice loss on softmax probabilities, over known pixels only.

    Dice per class is ``(2 sum p t + smooth) / (sum p + sum t + smooth)`` with p and t zeroed at
    unknown pixels; the loss is ``1 - mean Dice`` over the classes present in the (known) target, so
    a class missing from a sparse patch neither rewards nor punishes (cross-entropy handles it).

    Parameters
    ----------
    include_background : also average class 0 (always when there is a single class).
    batch_dice : sum over the whole batch (stabler with small patches) instead of per sample.
    """
    _check(logits, target, False)
    target = target.long()
    k = logits.shape[1]
    known = (target != ignore_index).unsqueeze(1).float()
    safe = torch.where(target != ignore_index, target, torch.zeros_like(target))
    probs = torch.softmax(logits.float(), dim=1) * known
    onehot = F.one_hot(safe, k).movedim(-1, 1).float() * known
    return _dice_from(probs, onehot, include_background or k == 1, smooth, batch_dice)


def _dice_from(
    probs: torch.Tensor, onehot: torch.Tensor, include_first: bool, smooth: float, batch_dice: bool
) -> torch.Tensor:
    dims = (0, *range(2, probs.ndim)) if batch_dice else tuple(range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    present = onehot.sum(dims) > 0
    if not include_first:
        dice, present = dice[..., 1:], present[..., 1:]
    present = present.float()
    return ((1 - dice) * present).sum() / present.sum().clamp_min(1)


def bce_with_ignore(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_value: int = MULTILABEL_IGNORE,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sigmoid binary cross-entropy per class, averaged over known (pixel, class) entries."""
    _check(logits, target, True)
    known = target != ignore_value
    y = torch.where(known, target, torch.zeros_like(target)).float()
    pw = None
    if pos_weight is not None:
        pw = pos_weight.to(logits.device, torch.float32).reshape((1, -1) + (1,) * (logits.ndim - 2))
    bce = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none", pos_weight=pw)
    known = known.float()
    return (bce * known).sum() / known.sum().clamp_min(1)


def soft_dice_loss_multilabel(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_value: int = MULTILABEL_IGNORE,
    smooth: float = 1e-5,
    batch_dice: bool = True,
) -> torch.Tensor:
    """Soft Dice per class on sigmoid probabilities over known entries; mean over present classes."""
    _check(logits, target, True)
    known = (target != ignore_value).float()
    y = torch.where(target != ignore_value, target, torch.zeros_like(target)).float() * known
    probs = torch.sigmoid(logits.float()) * known
    return _dice_from(probs, y, True, smooth, batch_dice)


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, multilabel: bool
) -> torch.Tensor:
    """The plain per-pixel loss: CE over known pixels, or BCE over known entries when multi-label."""
    return bce_with_ignore(logits, target) if multilabel else cross_entropy(logits, target)
