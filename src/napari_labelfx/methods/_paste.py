"""Foreground paste and mixed pseudo-targets for dual-network co-regularization (DCR).

For a pair (i, j): pick a foreground class c present in sample i's label, B = [y_i == c];
``x_m = B * x_i + (1 - B) * x_j`` and the mixed target of a network is
``B * yhat_i + (1 - B) * yhat_j`` from its (detached, argmax) predictions on the unmixed images.
Works for 2D and 3D batches alike.
"""
from __future__ import annotations

import torch

from ..annotations.kinds import IGNORE_INDEX

__all__ = ["foreground_masks", "mixed_target", "pair_permutation", "paste"]


def pair_permutation(batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Partner index j for every sample i, never i itself when the batch has two or more samples.

    A random order shifted by one is a single cycle, hence a permutation without fixed points.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    order = torch.randperm(batch_size, generator=generator)
    perm = torch.empty_like(order)
    perm[order] = order.roll(1)
    return perm


def foreground_masks(
    target: torch.Tensor, generator: torch.Generator | None = None, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """One foreground class per sample, drawn uniformly among the classes > 0 in its label, and its mask.

    Parameters
    ----------
    target : (B, *spatial) class indices, ``ignore_index`` unknown.

    Returns
    -------
    (mask, classes): bool (B, *spatial) pixels of the chosen class; int64 (B,) the class, -1 (and an
    empty mask) for a sample whose label has no foreground pixel.
    """
    b = target.shape[0]
    mask = torch.zeros_like(target, dtype=torch.bool)
    classes = torch.full((b,), -1, dtype=torch.int64)
    for i in range(b):
        t = target[i]
        present = torch.unique(t[(t != ignore_index) & (t > 0)])
        if present.numel() == 0:
            continue
        c = present[torch.randint(present.numel(), (1,), generator=generator).item()]
        classes[i] = int(c)
        mask[i] = t == c
    return mask, classes.to(target.device)


def paste(x_i: torch.Tensor, x_j: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * x_i + (1 - mask) * x_j`` for images (B, C, *spatial) and a mask (B, *spatial)."""
    if x_i.shape != x_j.shape or mask.shape != x_i.shape[:1] + x_i.shape[2:]:
        raise ValueError(f"cannot paste images {tuple(x_i.shape)}/{tuple(x_j.shape)} with mask {tuple(mask.shape)}")
    return torch.where(mask.unsqueeze(1), x_i, x_j)


def mixed_target(pred_i: torch.Tensor, pred_j: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * pred_i + (1 - mask) * pred_j`` for class-index maps (B, *spatial)."""
    if pred_i.shape != pred_j.shape or pred_i.shape != mask.shape:
        raise ValueError(f"mixed target needs equal shapes, got {tuple(pred_i.shape)}, {tuple(pred_j.shape)}, "
                         f"{tuple(mask.shape)}")
    return torch.where(mask, pred_i, pred_j)
