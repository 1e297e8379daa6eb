"""Multi-label deep supervision (MLDS, Reiss et al. 2021): heads on the UNet decoder maps f0..fD.

Each decoder map gets a small head (1x1 conv to 64 channels, BN, ReLU, 1x1 conv to C). Its targets
are the one-hot mask (background included) max-pooled to the map's size: a coarse cell is positive
for every class present anywhere in its footprint, so the heads solve a multi-label problem at every
scale. Image-level tags supervise the global AVERAGE of each head's logits (average beat max pooling
in the paper, and all heads beat the last one alone).

Unknown pixels: a cell is positive for a class when any known pixel of its footprint has the class
(that is certain), negative only when its whole footprint is known and lacks the class; otherwise the
(cell, class) entry is ignored.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE
from ..models.blocks import conv_nd

__all__ = [
    "DeepSupervisionHeads",
    "TaggedImageSampler",
    "patch_tags",
    "deep_supervision_loss",
    "image_level_loss",
    "onehot_with_unknown",
    "pool_mask_targets",
]


class DeepSupervisionHeads(nn.Module):
    """One head per decoder map: 1x1 conv (``hidden``) -> BN -> ReLU -> 1x1 conv (``num_classes``).

    Parameters
    ----------
    channels : channels of the decoder maps f0..fD (``UNet.decoder_channels``).
    num_classes : output channels of every head.
    spatial_dims : 2 or 3.
    hidden : width of the hidden 1x1 layer (64 in the paper's code).
    """

    def __init__(self, channels: Sequence[int], num_classes: int, spatial_dims: int = 2, hidden: int = 64) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"deep supervision heads need spatial_dims 2 or 3, got {spatial_dims}")
        conv = conv_nd(spatial_dims)
        bn = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        self.heads = nn.ModuleList(
            nn.Sequential(conv(int(c), hidden, 1), bn(hidden), nn.ReLU(inplace=True), conv(hidden, num_classes, 1))
            for c in channels
        )

    def forward(self, decoder: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits (B, C, *map size) of each head, coarsest (f0) first."""
        if len(decoder) != len(self.heads):
            raise ValueError(f"expected {len(self.heads)} decoder maps, got {len(decoder)}")
        return [head(f) for head, f in zip(self.heads, decoder)]


def onehot_with_unknown(
    target: torch.Tensor, num_classes: int, multilabel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and unknown indicators (B, C, *spatial), float, from an engine target.

    Multi-class targets are (B, *spatial) int64 with ``IGNORE_INDEX``; multi-label targets are
    (B, C, *spatial) uint8 with ``MULTILABEL_IGNORE``. For multi-class targets the unknown indicator
    has one channel (broadcast over classes).
    """
    if multilabel:
        if target.ndim < 3 or target.shape[1] != num_classes:
            raise ValueError(f"multi-label target must be (B, {num_classes}, ...), got {tuple(target.shape)}")
        unknown = target == MULTILABEL_IGNORE
        positive = (target == 1) & ~unknown
        return positive.float(), unknown.float()
    target = target.long()
    unknown = target == IGNORE_INDEX
    safe = torch.where(unknown, torch.zeros_like(target), target)
    positive = F.one_hot(safe, num_classes).movedim(-1, 1).float() * (~unknown).unsqueeze(1).float()
    return positive, unknown.unsqueeze(1).float()


def _adaptive_max(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    pool = F.adaptive_max_pool2d if len(size) == 2 else F.adaptive_max_pool3d
    return pool(x, size)


def pool_mask_targets(
    target: torch.Tensor, num_classes: int, sizes: Sequence[Sequence[int]], multilabel: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Max-pooled multi-hot targets and their weights at each size.

    Parameters
    ----------
    target : engine target (see :func:`onehot_with_unknown`).
    num_classes : C.
    sizes : spatial size of each head's output (e.g. the decoder map sizes, coarsest first).
    multilabel : target is (B, C, *spatial) uint8.

    Returns
    -------
    list of (target, weight), each (B, C, *size) float: target 1 where the class occurs in the
    cell's footprint; weight 1 where that is known (positive, or fully known footprint).
    """
    positive, unknown = onehot_with_unknown(target, num_classes, multilabel)
    out = []
    for size in sizes:
        pos = _adaptive_max(positive, size)
        unk = _adaptive_max(unknown, size)
        weight = torch.maximum(pos, 1.0 - unk).expand_as(pos)
        out.append((pos, weight.contiguous()))
    return out


def _weighted_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return (bce * weight).sum() / weight.sum().clamp_min(1.0)


def deep_supervision_loss(
    head_logits: Sequence[torch.Tensor], targets: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Sum over heads of the sigmoid BCE, averaged over known (cell, class) entries.

    A head without known entries adds a zero that keeps the graph (the step never breaks).
    """
    if len(head_logits) != len(targets):
        raise ValueError(f"{len(head_logits)} heads but {len(targets)} pooled targets")
    total = head_logits[0].float().sum() * 0.0
    for logits, (t, w) in zip(head_logits, targets):
        if logits.shape != t.shape:
            raise ValueError(f"head logits {tuple(logits.shape)} do not match pooled target {tuple(t.shape)}")
        total = total + _weighted_bce(logits, t, w)
    return total


def image_level_loss(head_logits: Sequence[torch.Tensor], tags: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Sum over heads of BCE between each head's globally AVERAGE-pooled logits and the tags.

    Parameters
    ----------
    head_logits : (B, C, *spatial) per head.
    tags : (B, C) multi-hot image-level labels.
    weight : (B, C) 1 where the tag counts (0 for samples without tags, or for uncertain entries).
    """
    total = head_logits[0].float().sum() * 0.0
    for logits in head_logits:
        pooled = logits.float().flatten(2).mean(dim=2)
        total = total + _weighted_bce(pooled, tags.float(), weight.float())
    return total


class TaggedImageSampler:
    """Whole images with image-level tags, resized to the patch size (for image-level losses).

    The engine's patches of a tagged image are crops that may miss a tagged class, so a positive
    tag only holds for the whole image: this sampler draws tagged items from ``ctx.items`` and
    resizes each whole image (area interpolation) to the patch shape. For a 2D patch of a volume
    it takes one random slice, where a tag of the volume proves nothing about presence: there only
    the negative tags (class absent from the whole volume) count.

    Parameters
    ----------
    seed : seed of the sampler's random stream.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self._items_id: int | None = None
        self._tagged: list[int] = []

    def tagged_indices(self, items: Sequence) -> list[int]:
        """Indices of items that carry tags (cached per items list)."""
        if self._items_id != id(items):
            self._items_id = id(items)
            self._tagged = [i for i, it in enumerate(items) if getattr(it, "tags", None) is not None]
        return self._tagged

    def sample(
        self, items: Sequence, n: int, patch_shape: Sequence[int], device: torch.device, flip: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``n`` resized tagged images: (images (n, C, *patch), tags (n, K), weights (n, K)), or None."""
        tagged = self.tagged_indices(items)
        if n <= 0 or not tagged:
            return None
        patch_shape = tuple(int(s) for s in patch_shape)
        images, tags, weights = [], [], []
        for _ in range(n):
            item = items[tagged[int(self.rng.integers(len(tagged)))]]
            img = np.asarray(item.image, dtype=np.float32)
            tag = np.asarray(item.tags, dtype=np.float32)
            weight = np.ones_like(tag)
            if img.ndim - 1 > len(patch_shape):  # a slice of a volume: positives are not certain
                img = img[:, int(self.rng.integers(img.shape[1]))]
                weight = (tag == 0).astype(np.float32)
            t = torch.from_numpy(np.ascontiguousarray(img))[None]
            t = F.interpolate(t, size=patch_shape, mode="area") if tuple(t.shape[2:]) != patch_shape else t
            if flip:
                for axis in range(2, t.ndim):
                    if self.rng.random() < 0.5:
                        t = t.flip(axis)
            images.append(t[0])
            tags.append(torch.from_numpy(tag))
            weights.append(torch.from_numpy(weight))
        return (torch.stack(images).to(device), torch.stack(tags).to(device), torch.stack(weights).to(device))


def patch_tags(target: torch.Tensor, num_classes: int, multilabel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-level tags (B, C) of annotated patches and their weights.

    A class is present when a known pixel has it; absent (weight 1) only when the whole patch is
    known; samples without known pixels get weight 0 everywhere.
    """
    positive, unknown = onehot_with_unknown(target, num_classes, multilabel)
    pos = positive.flatten(2).amax(dim=2)
    any_unknown = unknown.flatten(2).amax(dim=2).expand_as(pos)
    weight = torch.maximum(pos, 1.0 - any_unknown)
    return pos, weight
