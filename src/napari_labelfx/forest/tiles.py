"""Features of training items tile by tile, cached, and forest probabilities of any region.

A 4k x 4k image or a volume is never turned into features whole: features are computed per tile (with
the filter bank's halo) when a tile is needed, and kept in a byte-bounded LRU cache so the live mode's
refits after each stroke reuse them.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.fingerprint import image_digest
from .classifier import PixelForest
from .features import FilterBank, tile_grid

#: Tile edge per spatial dimensionality (pixels / voxels).
TILE = {2: (512, 512), 3: (32, 128, 128)}
#: Whole images whose features take at most this many bytes are computed in one pass.
WHOLE_IMAGE_BYTES = 1_200_000_000
#: Most feature tiles a fit reads painted pixels from (see ``sample_training_pixels``).
MAX_TILES = 24
#: Bytes of features the cache keeps by default.
CACHE_BYTES = 1_500_000_000


class FeatureCache:
    """LRU cache of feature tiles keyed by (image fingerprint, tile), bounded in bytes.

    Thread-safe: the panel's prefetch thread and a trainer may ask for the same tile at once; the
    second caller waits for the first one's result instead of computing the tile again.
    """

    def __init__(self, bank: FilterBank, max_bytes: int = CACHE_BYTES) -> None:
        self.bank = bank
        self.max_bytes = int(max_bytes)
        self._tiles: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._computing: dict[tuple, threading.Event] = {}
        self.hits = 0
        self.misses = 0

    def features(self, image: Any, region: tuple[slice, ...], digest: str | None = None) -> np.ndarray:
        """Features (F, *region) of ``region`` of ``image``; cached when ``digest`` names the image."""
        if digest is None:
            return self.bank.compute_region(image, region)
        key = (digest, tuple((s.start, s.stop) for s in region))
        while True:
            with self._lock:
                hit = self._tiles.get(key)
                if hit is not None:
                    self._tiles.move_to_end(key)
                    self.hits += 1
                    return hit
                busy = self._computing.get(key)
                if busy is None:
                    busy = self._computing[key] = threading.Event()
                    self.misses += 1
                    break
            busy.wait()  # another thread computes this tile; then it is in the cache (or too big)
            with self._lock:
                if key not in self._tiles:
                    break  # not kept (larger than the cache): compute it here
        try:
            whole = self._whole_image_tiles(image, region)
            if whole is None:
                whole = [(region, self.bank.compute_region(image, region))]
            mine = tuple((s.start, s.stop) for s in region)
            feats = next(f for tile, f in whole if tuple((s.start, s.stop) for s in tile) == mine)
            with self._lock:
                for tile, tile_feats in whole:
                    tile_key = (digest, tuple((s.start, s.stop) for s in tile))
                    if tile_feats.nbytes <= self.max_bytes and tile_key not in self._tiles:
                        self._tiles[tile_key] = tile_feats
                        self._bytes += tile_feats.nbytes
                if key in self._tiles:  # the tile asked for is the most recently used one
                    self._tiles.move_to_end(key)
                while self._bytes > self.max_bytes and self._tiles:
                    _, old = self._tiles.popitem(last=False)
                    self._bytes -= old.nbytes
        finally:
            with self._lock:
                done = self._computing.pop(key, None)
            if done is not None:
                done.set()
        return feats

    def _whole_image_tiles(self, image: Any, region: tuple[slice, ...]) -> list[tuple[tuple[slice, ...], np.ndarray]] | None:
        """Features of every cache tile of the image from one pass, when a tile's halo reaches over most of
        the image anyway (None otherwise).

        A 3D tile of 32x128x128 reads 154x250x250 voxels with the default halo (61): on a 60x256x256 volume
        every tile computed nearly the whole volume, eight times over. Only images whose features fit in
        the cache take this path. The tiles are views of the one result (no copy): its memory is freed
        when the last of them leaves the cache, so memory can exceed the cache's budget by at most one
        image's features.
        """
        spatial = tuple(int(s) for s in image.shape[1:])
        if len(region) != len(spatial) or any(s.start is None or s.stop is None for s in region) or any(
                s.start != t.start or s.stop != t.stop for s, t in zip(region, _tile_of(region, spatial))):
            return None  # not one of the cache's own tiles
        h = self.bank.halo
        wide = int(np.prod([min(d, s.stop + h) - max(0, s.start - h) for s, d in zip(region, spatial)]))
        n = int(np.prod(spatial))
        tiles = image_tiles(spatial)
        if len(tiles) < 2 or 2 * wide < n or self.bank.n_features(int(image.shape[0])) * n * 4 > self.max_bytes:
            return None
        feats = self.bank.compute_region(image, tuple(slice(0, d) for d in spatial))
        return [(tile, feats[(slice(None), *tile)]) for tile in tiles]

    def has(self, digest: str, region: tuple[slice, ...]) -> bool:
        """Whether the features of ``region`` of the image ``digest`` are cached."""
        with self._lock:
            return (digest, tuple((s.start, s.stop) for s in region)) in self._tiles

    def clear(self) -> None:
        with self._lock:
            self._tiles.clear()
            self._bytes = 0


_SHARED: dict[str, Any] = {"key": None, "cache": None}
_SHARED_LOCK = threading.Lock()


def shared_cache(bank: FilterBank) -> FeatureCache:
    """The process-wide feature cache for ``bank`` (live training and the panel's prefetch share it).

    One bank at a time: asking for another bank (other sigmas or filters) drops the old features.
    """
    key = repr(sorted(bank.to_dict().items()))
    with _SHARED_LOCK:
        if _SHARED["key"] != key:
            _SHARED["key"], _SHARED["cache"] = key, FeatureCache(bank)
        return _SHARED["cache"]


def drop_shared_cache() -> None:
    """Forget the process-wide features (e.g. when the panel closes)."""
    with _SHARED_LOCK:
        _SHARED["key"] = _SHARED["cache"] = None


def _tile_of(region: Sequence[slice], spatial: Sequence[int]) -> tuple[slice, ...]:
    """The cache tile that holds ``region``'s first pixel."""
    tile = TILE[len(spatial)]
    return tuple(slice((s.start // t) * t, min((s.start // t) * t + t, d)) for s, t, d in zip(region, tile, spatial))


def image_tiles(spatial: Sequence[int], region: Sequence[slice] | None = None) -> list[tuple[slice, ...]]:
    """The cache's tiles of an image of shape ``spatial`` that meet ``region`` (None: all tiles)."""
    tiles = tile_grid(spatial, TILE[len(spatial)])
    if region is None:
        return tiles
    return [t for t in tiles if all(a.start < (d if b.stop is None else b.stop) and (b.start or 0) < a.stop
                                    for a, b, d in zip(t, region, spatial))]


def prefetch_features(image: np.ndarray, bank: FilterBank, region: Sequence[slice] | None = None,
                      max_tiles: int = 4) -> threading.Thread:
    """Compute the features of ``region``'s tiles of a normalised ``(C, *spatial)`` image in the background.

    Live training starts from these features instead of computing them after Start (the time a person
    spends choosing settings is otherwise idle). At most ``max_tiles`` tiles, nearest the region's
    centre first; the result lands in :func:`shared_cache` under the image's digest.
    """
    cache = shared_cache(bank)
    spatial = tuple(int(d) for d in image.shape[1:])
    tiles = image_tiles(spatial, region)
    if region is not None:
        centre = [((r.start or 0) + (d if r.stop is None else r.stop)) / 2 for r, d in zip(region, spatial)]
        tiles.sort(key=lambda t: sum(((s.start + s.stop) / 2 - c) ** 2 for s, c in zip(t, centre)))
    tiles = tiles[:max_tiles]

    def _run() -> None:
        digest = image_digest(image)
        for t in tiles:
            cache.features(image, t, digest)

    thread = threading.Thread(target=_run, daemon=True, name="labelfx-prefetch-features")
    thread.start()
    return thread


def labelled_mask(target: np.ndarray, multilabel: bool) -> np.ndarray:
    """Pixels with a known label (multi-label: known for at least one class)."""
    from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE

    if multilabel:
        return np.any(target != MULTILABEL_IGNORE, axis=0)
    return target != IGNORE_INDEX


def sample_training_pixels(
    items: Sequence[Any], cache: FeatureCache, num_classes: int, multilabel: bool, max_samples: int,
    rng: np.random.Generator, max_tiles: int = MAX_TILES,
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``X`` (N, F) and labels ``y`` of painted pixels of training items, subsampled.

    Painted pixels are grouped by feature tile. When more than ``max_tiles`` tiles hold painted pixels
    (scribbles on dozens of images), a random subset is used, with at least one tile for every painted
    class: features cost far more than trees, and a few thousand pixels per class are plenty. Within
    the tiles, each class keeps at least ``max_samples / (2 K)`` pixels when that many are painted, the
    rest is drawn in proportion to what is painted.
    """
    tiles = []  # (item, digest, region, flat pixel indices, class bucket per pixel)
    for it in items:
        if it.target is None:
            continue
        spatial = tuple(it.image.shape[1:])
        idx = np.flatnonzero(labelled_mask(it.target, multilabel))
        if idx.size == 0:
            continue
        if multilabel:
            t = it.target.reshape(it.target.shape[0], -1)[:, idx]
            pos = t == 1
            bucket = np.where(pos.any(0), pos.argmax(0) + 1, 0)
        else:
            bucket = it.target.reshape(-1)[idx]
        tile = TILE[len(spatial)]
        grid = tuple(-(-d // t) for d, t in zip(spatial, tile))
        coords = np.unravel_index(idx, spatial)
        tile_id = np.ravel_multi_index(tuple(c // t for c, t in zip(coords, tile)), grid)
        order = np.argsort(tile_id, kind="stable")
        ids, starts = np.unique(tile_id[order], return_index=True)
        digest = image_digest(it.image)
        for tid, lo, hi in zip(ids, starts, [*starts[1:], order.size]):
            sel = order[lo:hi]
            origin = [int(i) * t for i, t in zip(np.unravel_index(int(tid), grid), tile)]
            region = tuple(slice(o, min(o + t, d)) for o, t, d in zip(origin, tile, spatial))
            tiles.append((it, digest, region, idx[sel], bucket[sel]))
    if not tiles:
        raise ValueError("no painted pixels to train the forest on")
    if len(tiles) > max_tiles:
        order = [int(j) for j in rng.permutation(len(tiles))]
        keep: list[int] = []
        counts = np.bincount(np.concatenate([t[4] for t in tiles]).astype(np.int64))
        for c in np.argsort(counts):  # the rarest painted class first
            if counts[c] == 0:
                continue
            j = next((j for j in order if j not in keep and np.any(tiles[j][4] == c)), None)
            if j is not None:
                keep.append(j)
        keep += [j for j in order if j not in keep][: max(0, max_tiles - len(keep))]
        tiles = [tiles[j] for j in sorted(keep)]
    all_buckets = np.concatenate([t[4] for t in tiles])
    total = all_buckets.size
    chosen = np.zeros(total, bool)
    classes, counts = np.unique(all_buckets, return_counts=True)
    floor = max_samples // (2 * max(len(classes), 1))
    for c, n in zip(classes, counts):
        quota = int(min(n, max(floor, round(max_samples * n / total))))
        where = np.flatnonzero(all_buckets == c)
        chosen[where if quota >= n else rng.choice(where, quota, replace=False)] = True
    xs, ys = [], []
    start = 0
    for it, digest, region, flat, _bucket in tiles:
        pick = flat[chosen[start:start + flat.size]]
        start += flat.size
        if pick.size == 0:
            continue
        spatial = tuple(it.image.shape[1:])
        feats = cache.features(it.image, region, digest)
        local = tuple(c - r.start for c, r in zip(np.unravel_index(pick, spatial), region))
        xs.append(feats[(slice(None), *local)].T)
        if multilabel:
            ys.append(it.target.reshape(it.target.shape[0], -1)[:, pick].T)
        else:
            ys.append(it.target.reshape(-1)[pick])
    return np.concatenate(xs).astype(np.float32, copy=False), np.concatenate(ys)


def _strided(part: Sequence[slice], region: Sequence[slice], step: int) -> tuple[tuple, tuple] | None:
    """The pixels of ``part`` (absolute) on the ``step`` grid that starts at ``region``'s start: their slices
    within ``part`` and their place in the strided output (None: no grid pixel falls in ``part``)."""
    within, dest = [], []
    for p, r in zip(part, region):
        first = r.start + -(-(p.start - r.start) // step) * step  # first grid pixel >= p.start
        if first >= p.stop:
            return None
        n = -(-(p.stop - first) // step)
        within.append(slice(first - p.start, p.stop - p.start, step))
        k = (first - r.start) // step
        dest.append(slice(k, k + n))
    return tuple(within), tuple(dest)


def predict_region_probabilities(
    forest: PixelForest, image: Any, region: Sequence[slice] | None = None, cache: FeatureCache | None = None,
    bank: FilterBank | None = None, digest: str | None = None, progress: Any = None, step: int = 1,
) -> np.ndarray:
    """Class probabilities (K, *region) of the forest on a region (None: all) of a ``(C, *spatial)`` image.

    Works tile by tile (features of one tile at a time), so memory follows the tile, not the image. With
    ``step`` > 1 only every ``step``-th pixel per axis from the region's start is classified (shape
    ``ceil(region / step)``): the features are the full-resolution ones, the trees see ``step**d`` times
    fewer pixels (pseudo-labels for a network that works at scale ``1/step``).
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
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
    shape = tuple(-(-(r.stop - r.start) // step) for r in region)
    out = np.empty((forest.num_classes, *shape), np.float32)
    tile = TILE[len(spatial)]
    whole = all(r.start == 0 and r.stop == d for r, d in zip(region, spatial))
    n_feat = cache.bank.n_features(int(image.shape[0]))
    if digest is None and whole and int(np.prod(spatial)) * n_feat * 4 <= WHOLE_IMAGE_BYTES:
        # nothing to cache and the features fit: one pass over the whole image (no halo recomputed)
        feats = cache.bank.compute(np.asarray(image, np.float32))
        if step > 1:
            feats = feats[(slice(None), *(slice(0, None, step) for _ in spatial))]
        flat = feats.reshape(n_feat, -1)
        probs = out.reshape(forest.num_classes, -1)
        step = 262_144
        for i in range(0, flat.shape[1], step):
            probs[:, i:i + step] = forest.predict_proba(np.ascontiguousarray(flat[:, i:i + step].T)).T
        return out
    if digest is None:
        # nothing cached: features of the region itself (with its halo), tile by tile of the region
        full = tuple(r.stop - r.start for r in region)
        for t in tile_grid(full, tile):
            absolute = tuple(slice(r.start + a.start, r.start + a.stop) for r, a in zip(region, t))
            picked = _strided(absolute, region, step)
            if picked is None:
                continue
            within, dest = picked
            feats = cache.bank.compute_region(image, absolute)[(slice(None), *within)]
            flat = np.ascontiguousarray(feats.reshape(feats.shape[0], -1).T)
            out[(slice(None), *dest)] = forest.predict_proba(flat).T.reshape(forest.num_classes, *feats.shape[1:])
            if progress is not None:
                progress.update(1)
        return out
    # tiles of the image's own grid (not the region's), so cached features serve any view
    for t in tile_grid(spatial, tile):
        inter = tuple(slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(t, region))
        if any(s.stop <= s.start for s in inter):
            continue
        picked = _strided(inter, region, step)
        if picked is None:
            continue
        within, dest = picked
        feats = cache.features(image, t, digest)
        feats = feats[(slice(None), *(slice(i.start - a.start + w.start, i.stop - a.start, step)
                                      for i, a, w in zip(inter, t, within)))]
        flat = np.ascontiguousarray(feats.reshape(feats.shape[0], -1).T)
        probs = forest.predict_proba(flat)
        out[(slice(None), *dest)] = probs.T.reshape(forest.num_classes, *feats.shape[1:])
        if progress is not None:
            progress.update(1)
    return out
