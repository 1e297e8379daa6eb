"""Patch sampling for training: 2D images, annotated slices of volumes, and 3D patches.

Half of the patches (``annotated_fraction``) are centred on a random annotated pixel so that sparse
scribbles are seen often; the rest are placed at random (in volumes, on a slice drawn in proportion to
its number of annotated pixels, so unannotated slices of a partially labelled volume are never used).
Centre pixels are drawn class-balanced by default: first a class, then one of its pixels, which keeps
rare classes from being drowned by background strokes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE, TrainingItem
from .checks import known_mask
from .crop import crop_pad
from .errors import TrainingDataError

#: At most this many pixel positions are remembered per class and item (drawn at random); enough to
#: centre patches everywhere without keeping millions of indices for large strong masks.
MAX_POOL = 65536


@dataclass
class _ItemIndex:
    """What the sampler precomputes for one item."""

    index: int  # position in the caller's item list
    pools: dict[int, np.ndarray]  # class key -> flat spatial indices (subsample) of its pixels
    counts: dict[int, int]  # class key -> number of such pixels (before subsampling)
    slice_weights: np.ndarray | None  # volumes: annotated pixels per Z slice
    known_pixels: int


class PatchSampler:
    """Draw batches of patches (image, target, instances, tags) from training items.

    Parameters
    ----------
    items : checked training items (see :func:`~napari_labelfx.data.checks.check_items`).
    patch_size : (Y, X) in ``"2d"`` mode, (Z, Y, X) in ``"3d"`` mode.
    mode : ``"2d"`` samples 2D patches from images and from annotated slices of volumes; ``"3d"``
        samples 3D patches from volumes.
    multilabel : targets are (K, ...) uint8 with 255 = unknown.
    num_classes : classes (multi-class incl. background) or channels (multi-label).
    annotated_fraction : share of patches centred on an annotated pixel.
    class_balanced : draw the centre pixel's class uniformly among the classes present.
    rng : seed or generator.
    require_target : skip items without annotated pixels (methods that learn only from labels).

    Raises
    ------
    TrainingDataError
        When no item has an annotated pixel (and ``require_target``) or the patch does not fit the mode.
    """

    def __init__(
        self,
        items: Sequence[TrainingItem],
        patch_size: Sequence[int],
        mode: str = "2d",
        multilabel: bool = False,
        num_classes: int = 2,
        annotated_fraction: float = 0.5,
        class_balanced: bool = True,
        rng: int | np.random.Generator | None = 0,
        require_target: bool = True,
    ) -> None:
        if mode not in ("2d", "3d"):
            raise TrainingDataError(f"sampling mode must be '2d' or '3d', got {mode!r}")
        self.patch_size = tuple(int(p) for p in patch_size)
        want = 2 if mode == "2d" else 3
        if len(self.patch_size) != want or min(self.patch_size) < 1:
            raise TrainingDataError(f"{mode} sampling needs a patch size of {want} positive sizes, got {patch_size}")
        if not 0.0 <= annotated_fraction <= 1.0:
            raise TrainingDataError(f"annotated_fraction must be in [0, 1], got {annotated_fraction}")
        self.mode = mode
        self.multilabel = multilabel
        self.num_classes = num_classes
        self.annotated_fraction = float(annotated_fraction)
        self.class_balanced = class_balanced
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.items = list(items)
        self._index: list[_ItemIndex] = []
        for i, item in enumerate(self.items):
            if mode == "3d" and item.image.ndim != 4:
                raise TrainingDataError(f"training item {i} ({item.name!r}) is not a volume; 3D patches need (C, Z, Y, X)")
            entry = self._index_item(i, item)
            if entry.known_pixels > 0 or not require_target:
                self._index.append(entry)
        if not self._index:
            raise TrainingDataError("no training item has an annotated pixel: paint some labels first")
        self._has_instances = any(it.instances is not None for it in self.items)
        self._has_tags = any(it.tags is not None for it in self.items)
        keys = sorted({k for e in self._index for k, c in e.counts.items() if c > 0})
        self._keys = keys
        # item weights per class key (for annotated-centred patches)
        self._key_weights = {
            k: np.array([e.counts.get(k, 0) for e in self._index], dtype=np.float64) for k in keys
        }
        self._key_totals = np.array([self._key_weights[k].sum() for k in keys], dtype=np.float64)
        # item weights for random patches: annotated area for targets, plain size for unlabelled items
        area = []
        for e in self._index:
            item = self.items[e.index]
            if e.slice_weights is not None and e.known_pixels > 0:
                nz = int(np.count_nonzero(e.slice_weights))
                area.append(nz * int(np.prod(item.image.shape[-2:])))
            else:
                area.append(int(np.prod(item.image.shape[1:])))
        self._area = np.asarray(area, dtype=np.float64)

    # -- precomputation ------------------------------------------------------------------------------
    def _index_item(self, i: int, item: TrainingItem) -> _ItemIndex:
        spatial = item.image.shape[1:]
        if item.target is None:
            return _ItemIndex(i, {}, {}, None, 0)
        target = item.target
        known = known_mask(target, self.multilabel)
        pools: dict[int, np.ndarray] = {}
        counts: dict[int, int] = {}
        if self.multilabel:
            # one pool per class (pixels where it is present) plus key K: known pixels with no class
            masks = [target[k] == 1 for k in range(target.shape[0])]
            none = known & ~np.any(target == 1, axis=0)
            masks.append(none)
        else:
            masks = [target == c for c in range(self.num_classes)]
        for k, m in enumerate(masks):
            flat = np.flatnonzero(m)
            counts[k] = int(flat.size)
            if flat.size > MAX_POOL:
                flat = self.rng.choice(flat, MAX_POOL, replace=False)
            if flat.size:
                pools[k] = flat.astype(np.int64)
        slice_weights = None
        if len(spatial) == 3:
            slice_weights = known.reshape(spatial[0], -1).sum(axis=1).astype(np.float64)
        return _ItemIndex(i, pools, counts, slice_weights, int(known.sum()))

    # -- sampling ------------------------------------------------------------------------------------
    @property
    def item_indices(self) -> list[int]:
        """Indices (in the caller's list) of the items patches are drawn from."""
        return [e.index for e in self._index]

    def epoch_length(self, batch_size: int) -> int:
        """Iterations that show about as many pixels as the sampled items' annotated area holds."""
        pixels = float(self._area.sum())
        per_batch = float(np.prod(self.patch_size)) * max(1, batch_size)
        return max(1, int(np.ceil(pixels / per_batch)))

    def _draw_centre(self) -> tuple[int, tuple[int, ...]]:
        """(entry position, spatial centre) of an annotated-centred patch."""
        if self.class_balanced:
            k = self._keys[self.rng.integers(len(self._keys))]
        else:
            k = self._keys[self.rng.choice(len(self._keys), p=self._key_totals / self._key_totals.sum())]
        w = self._key_weights[k]
        pos = int(self.rng.choice(len(self._index), p=w / w.sum()))
        e = self._index[pos]
        pool = e.pools[k]
        flat = int(pool[self.rng.integers(pool.size)])
        centre = np.unravel_index(flat, self.items[e.index].image.shape[1:])
        return pos, tuple(int(c) for c in centre)

    def _draw_random(self) -> tuple[int, tuple[int, ...]]:
        """(entry position, spatial centre) of a randomly placed patch."""
        pos = int(self.rng.choice(len(self._index), p=self._area / self._area.sum()))
        e = self._index[pos]
        spatial = self.items[e.index].image.shape[1:]
        centre = [int(self.rng.integers(d)) for d in spatial]
        if e.slice_weights is not None and e.known_pixels > 0:
            centre[0] = int(self.rng.choice(spatial[0], p=e.slice_weights / e.slice_weights.sum()))
        return pos, tuple(centre)

    def _window(self, centre: Sequence[int], spatial: Sequence[int], size: Sequence[int]) -> tuple[int, ...]:
        """Window start so the centre pixel lands at a random place inside it, clamped to the image."""
        start = []
        for c, d, s in zip(centre, spatial, size):
            st = c - int(self.rng.integers(s))
            if d >= s:
                st = min(max(st, 0), d - s)
            else:  # image smaller than the patch: pad, at a random offset
                st = int(self.rng.integers(d - s, 1))
            start.append(st)
        return tuple(start)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """Draw a batch.

        Returns
        -------
        dict
            ``image`` (B, C, *patch) float32; ``target`` (B, *patch) int64 or (B, K, *patch) uint8;
            ``instances`` (B, *patch) int32 when any item has instances; ``tags`` (B, K) float32 and
            ``has_tags`` (B,) bool when any item has tags; ``item_index`` (B,) int64 (caller's
            indices); ``origin`` (B, item spatial dims) int64, the patch start in item coordinates
            (in 2D mode on a volume the first entry is the slice).
        """
        images, targets, instances, tags, has_tags, index, origins = [], [], [], [], [], [], []
        for _ in range(batch_size):
            if self._keys and self.rng.random() < self.annotated_fraction:
                pos, centre = self._draw_centre()
            else:
                pos, centre = self._draw_random()
            item = self.items[self._index[pos].index]
            spatial = item.image.shape[1:]
            volume_slices = self.mode == "2d" and len(spatial) == 3
            size = (1, *self.patch_size) if volume_slices else self.patch_size
            if volume_slices:
                start = (centre[0], *self._window(centre[1:], spatial[1:], self.patch_size))
            else:
                start = self._window(centre, spatial, size)
            img = crop_pad(item.image, start, size, 0.0)
            tgt = self._crop_target(item, start, size)
            ins = None
            if self._has_instances:
                ins = (
                    crop_pad(item.instances, start, size, 0)
                    if item.instances is not None
                    else np.zeros(size, np.int32)
                )
            if volume_slices:  # drop the singleton slice axis
                img = img[:, 0]
                tgt = tgt[:, 0] if self.multilabel else tgt[0]
                ins = None if ins is None else ins[0]
            images.append(img)
            targets.append(tgt)
            if ins is not None:
                instances.append(ins)
            if self._has_tags:
                has_tags.append(item.tags is not None)
                tags.append(item.tags if item.tags is not None else np.zeros(self.num_classes, np.float32))
            index.append(self._index[pos].index)
            origins.append(start)
        batch = {
            "image": np.stack(images).astype(np.float32, copy=False),
            "target": np.stack(targets),
            "item_index": np.asarray(index, dtype=np.int64),
            "origin": np.asarray(origins, dtype=np.int64),
        }
        if instances:
            batch["instances"] = np.stack(instances).astype(np.int32, copy=False)
        if tags:
            batch["tags"] = np.stack(tags).astype(np.float32, copy=False)
            batch["has_tags"] = np.asarray(has_tags, dtype=bool)
        return batch

    def _crop_target(self, item: TrainingItem, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        if item.target is None:  # unlabelled item: everything unknown
            if self.multilabel:
                return np.full((self.num_classes, *size), MULTILABEL_IGNORE, np.uint8)
            return np.full(tuple(size), IGNORE_INDEX, np.int64)
        fill = MULTILABEL_IGNORE if self.multilabel else IGNORE_INDEX
        return crop_pad(item.target, start, size, fill)
