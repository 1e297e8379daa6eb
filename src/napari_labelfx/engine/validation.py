"""Validation on held-out annotated pixels: loss and Dice of the inference network."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE
from ..core.device import autocast_context
from ..data.split import ValidationSplit


def _logits(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


def evaluate_split(
    model: nn.Module,
    split: ValidationSplit,
    class_names: Sequence[str],
    multilabel: bool,
    device: torch.device,
    batch_size: int = 4,
    amp: bool = False,
) -> dict[str, Any]:
    """Loss and hard Dice on the held-out pixels of ``split``.

    The loss is method-independent (cross-entropy, or BCE when multi-label) so that validations
    stay comparable and early stopping means the same for every method.

    Returns
    -------
    dict
        ``val_loss``; ``dice`` {class name: Dice or None when the class is absent from both target
        and prediction}; ``dice_mean`` over foreground classes (all classes when multi-label) that
        have a value; ``accuracy``; ``n_pixels``.
    """
    k = len(class_names)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_known = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    inter = torch.zeros(k, dtype=torch.float64, device=device)
    psum = torch.zeros(k, dtype=torch.float64, device=device)
    tsum = torch.zeros(k, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            windows = split.windows
            for i in range(0, len(windows), batch_size):
                arrays = [split.window_arrays(w) for w in windows[i : i + batch_size]]
                x = torch.from_numpy(np.stack([a[0] for a in arrays])).to(device)
                t = torch.from_numpy(np.stack([a[1] for a in arrays])).to(device)
                with autocast_context(device, amp):
                    logits = _logits(model(x)).float()
                if multilabel:
                    known = t != MULTILABEL_IGNORE
                    y = torch.where(known, t, torch.zeros_like(t)).float()
                    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
                    loss_sum += bce[known].double().sum()
                    n_known += known.sum()
                    pred = logits > 0
                    correct += ((pred == (y > 0.5)) & known).sum()
                    dims = (0, *range(2, logits.ndim))
                    inter += (pred & (y > 0.5) & known).sum(dims)
                    psum += (pred & known).sum(dims)
                    tsum += ((y > 0.5) & known).sum(dims)
                else:
                    known = t != IGNORE_INDEX
                    safe = torch.where(known, t, torch.zeros_like(t))
                    ce = F.cross_entropy(logits, safe, reduction="none")
                    loss_sum += ce[known].double().sum()
                    n_known += known.sum()
                    pred = logits.argmax(1)
                    correct += ((pred == safe) & known).sum()
                    for c in range(k):
                        pc, tc = (pred == c) & known, (safe == c) & known
                        inter[c] += (pc & tc).sum()
                        psum[c] += pc.sum()
                        tsum[c] += tc.sum()
    finally:
        model.train(was_training)
    n = float(n_known)
    denom = (psum + tsum).cpu().numpy()
    dice_values = np.where(denom > 0, 2 * inter.cpu().numpy() / np.maximum(denom, 1), np.nan)
    first = 0 if multilabel else 1
    dice = {name: (None if math.isnan(v) else float(v)) for name, v in zip(class_names, dice_values)}
    fg = [v for v in dice_values[first:] if not math.isnan(v)]
    return {
        "val_loss": float(loss_sum) / max(n, 1.0),
        "dice": dice,
        "dice_mean": float(np.mean(fg)) if fg else None,
        "accuracy": float(correct) / max(n, 1.0),
        "n_pixels": int(n),
    }
