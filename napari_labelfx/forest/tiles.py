"""Features of training items tile by tile, cached, and forest probabilities of any region.

A 4k x 4k image or a volume is never turned into features whole: features are computed per tile (with
the filter bank's halo) when a tile is needed, and kept in a byte-bounded LRU cache so the live mode's
refits after each stroke reuse them.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from .classifier import PixelForest
from .features import FilterBank, tile_grid

#: Tile edge per spatial dimensionality (pixels / voxels).
TILE = {2: (512, 512), 3: (32, 128, 128)}
#: Whole images whose features take at most this many bytes are computed in one pass.
WHOLE_IMAGE_BYTES = 1_200_000_000
#: Bytes of features the cache keeps by default.
CACHE_BYTES = 1_500_000_000


def image_digest(image: np.ndarray) -> str:
    """A cheap fingerprint of an image (shape, dtype and a strided subsample) to key cached features."""
    arr = np.asarray(image)
    h = hashlib.sha1(repr((arr.shape, str(arr.dtype))).encode())
    step = max(1, int(round((arr.size / 200_000) ** (1.0 / max(arr.ndim, 1)))))
    h.update(np.ascontiguousarray(arr[tuple(slice(None, None, step) for _ in range(arr.ndim))]).tobytes())
    return h.hexdigest()


class FeatureCache:
    """LRU cache of feature tiles keyed by (image fingerprint, tile), bounded in bytes."""

    def __init__(self, bank: FilterBank, max_bytes: int = CACHE_BYTES) -> None:
        self.bank = bank
        self.max_bytes = int(max_bytes)
        self._tiles: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def features(self, image: Any, region: tuple[slice, ...], digest: str | None = None) -> np.ndarray:
        """Features (F, *region) of ``region`` of ``image``; cached when ``digest`` names the image."""
        if digest is None:
            return self.bank.compute_region(image, region)
        key = (digest, tuple((s.start, s.stop) for s in region))
        hit = self._tiles.get(key)
        if hit is not None:
            self._tiles.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        feats = self.bank.compute_region(image, region)
        if feats.nbytes <= self.max_bytes:
            self._tiles[key] = feats
            self._bytes += feats.nbytes
            while self._bytes > self.max_bytes and self._tiles:
                _, old = self._tiles.popitem(last=False)
                self._bytes -= old.nbytes
        return feats

    def clear(self) -> None:
        self._tiles.clear()
        self._bytes = 0


def labelled_mask(target: np.ndarray, multilabel: bool) -> np.ndarray:
    """Pixels with a known label (multi-label: known for at least one class)."""
    from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE

    if multilabel:
        return np.any(target != MULTILABEL_IGNORE, axis=0)
    return target != IGNORE_INDEX


def sample_training_pixels(
    items: Sequence[Any], cache: FeatureCache, num_classes: int, multilabel: bool, max_samples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``X`` (N, F) and labels ``y`` of painted pixels of training items, subsampled.

    Each class keeps at least ``max_samples / (2 K)`` pixels when that many are painted (or all of
    them), the rest is drawn in proportion to what is painted. Only tiles holding a chosen pixel are
    turned into features.
    """
    per_item = []
    for it in items:
        if it.target is None:
            continue
        known = labelled_mask(it.target, multilabel)
        idx = np.flatnonzero(known)
        if idx.size:
            per_item.append((it, idx))
    if not per_item:
        raise ValueError("no painted pixels to train the forest on")
    # class of each candidate (multi-label: the first known positive class, else background bucket)
    labels = []
    for it, idx in per_item:
        if multilabel:
            t = it.target.reshape(it.target.shape[0], -1)[:, idx]
            pos = (t == 1)
            labels.append(np.where(pos.any(0), pos.argmax(0) + 1, 0))
        else:
            labels.append(it.target.reshape(-1)[idx])
    all_labels = np.concatenate(labels)
    total = all_labels.size
    chosen = np.zeros(total, bool)
    classes, counts = np.unique(all_labels, return_counts=True)
    floor = max_samples // (2 * max(len(classes), 1))
    for c, n in zip(classes, counts):
        quota = int(min(n, max(floor, round(max_samples * n / total))))
        where = np.flatnonzero(all_labels == c)
        chosen[where if quota >= n else rng.choice(where, quota, replace=False)] = True
    xs, ys = [], []
    start = 0
    for (it, idx), lab in zip(per_item, labels):
        sel = idx[chosen[start:start + idx.size]]
        start += idx.size
        if sel.size == 0:
            continue
        spatial = it.target.shape[-len(it.image.shape[1:]):]
        coords = np.unravel_index(sel, spatial)
        digest = image_digest(it.image)
        tile = TILE[len(spatial)]
        grid = tuple(-(-d // t) for d, t in zip(spatial, tile))
        tile_id = np.ravel_multi_index(tuple(c // t for c, t in zip(coords, tile)), grid)
        for tid in np.unique(tile_id):
            m = tile_id == tid
            pix = [c[m] for c in coords]
            origin = [int(i) * t for i, t in zip(np.unravel_index(int(tid), grid), tile)]
            region = tuple(slice(o, min(o + t, d)) for o, t, d in zip(origin, tile, spatial))
            feats = cache.features(it.image, region, digest)
            local = tuple(p - o for p, o in zip(pix, origin))
            xs.append(feats[(slice(None), *local)].T)
            flat = np.ravel_multi_index(tuple(pix), spatial)
            if multilabel:
                ys.append(it.target.reshape(it.target.shape[0], -1)[:, flat].T)
            else:
                ys.append(it.target.reshape(-1)[flat])
    x = np.concatenate(xs).astype(np.float32, copy=False)
    y = np.concatenate(ys)
    return x, y


def predict_region_probabilities(
    forest: PixelForest, image: Any, region: Sequence[slice] | None = None, cache: FeatureCache | None = None,
    bank: FilterBank | None = None, digest: str | None = None, progress: Any = None,
) -> np.ndarray:
    """Class probabilities (K, *region) of the forest on a region (None: all) of a ``(C, *spatial)`` image.

    Works tile by tile (features of one tile at a time), so memory follows the tile, not the image.
    """
    spatial = tuple(int(s) for s in image.shape[1:])
    if region is None:
        region = tuple(slice(0, d) for d in spatial)
    region = tuple(slice(0 if r.start is None else int(r.start), d if r.stop is None else int(r.stop))
                   for r, d in zip(region, spatial))
    if cache is None:
        if bank is None:
            raise ValueError("give a FeatureCache or a FilterBank")
        cache = FeatureCache(bank, max_bytes=0)
        digest = None
    shape = tuple(r.stop - r.start for r in region)
    out = np.empty((forest.num_classes, *shape), np.float32)
    tile = TILE[len(spatial)]
    whole = all(r.start == 0 and r.stop == d for r, d in zip(region, spatial))
    n_feat = cache.bank.n_features(int(image.shape[0]))
    if digest is None and whole and int(np.prod(spatial)) * n_feat * 4 <= WHOLE_IMAGE_BYTES:
        # nothing to cache and the features fit: one pass over the whole image (no halo recomputed)
        feats = cache.bank.compute(np.asarray(image, np.float32))
        flat = feats.reshape(n_feat, -1)
        probs = out.reshape(forest.num_classes, -1)
        step = 262_144
        for i in range(0, flat.shape[1], step):
            probs[:, i:i + step] = forest.predict_proba(np.ascontiguousarray(flat[:, i:i + step].T)).T
        return out
    # tiles of the image's own grid (not the region's), so cached features serve any view
    for t in tile_grid(spatial, tile):
        inter = tuple(slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(t, region))
        if any(s.stop <= s.start for s in inter):
            continue
        feats = cache.features(image, t, digest)
        feats = feats[(slice(None), *(slice(i.start - a.start, i.stop - a.start) for i, a in zip(inter, t)))]
        flat = np.ascontiguousarray(feats.reshape(feats.shape[0], -1).T)
        probs = forest.predict_proba(flat)
        dest = tuple(slice(i.start - r.start, i.stop - r.start) for i, r in zip(inter, region))
        out[(slice(None), *dest)] = probs.T.reshape(forest.num_classes, *feats.shape[1:])
        if progress is not None:
            progress.update(1)
    return out
