"""Geometry of block-wise prediction: the global tile grid split into blocks without changing the blend.

The single-process predictors place windows on one global grid (``tile_starts`` per axis over the
padded image) and blend every pixel as the weighted mean of all windows covering it. Block-wise
prediction keeps that grid: each window is *owned* by the block that contains its start corner, is
predicted once, by that block's task, and its weighted probabilities are added into an accumulator
that covers the block and spills past its far end (by less than one window). The spill-over parts
("pieces") belong to the blocks after it along each axis; a block is finished once its own windows
and the pieces of the (up to 2^d - 1) blocks before it are summed, and divided by the same global
per-axis weight sums the single-process Blender uses. So every pixel sums the same windows with the
same weights: the result equals the single-process prediction up to float summation order.

A window spans at most two blocks per axis when every block but the last is at least one window
long; :class:`BlockPlan` enforces that.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_labelfx.inference.errors import InferenceError
from napari_labelfx.inference.tiling import importance_profiles, tile_starts, weight_sums

Index = tuple[int, ...]
Region = tuple[tuple[int, int], ...]


def block_bounds(size: int, block: int) -> list[int]:
    """``[0, block, 2*block, ..., size]``: block boundaries along one axis."""
    bounds = list(range(0, size, block)) + [size]
    return bounds


@dataclass
class BlockPlan:
    """Blocks of a channels-first image's spatial axes and the windows each block predicts.

    Parameters
    ----------
    spatial : spatial shape of the image (``(Z, Y, X)`` or ``(Y, X)``).
    roi : window size per spatial axis (a 2D model on a volume: ``(1, ry, rx)``).
    overlap : window overlap fraction, as in the single-process predictors.
    block : block size per spatial axis; every block but the last along an axis is at least ``roi``.
    blend : ``"gaussian"`` or ``"constant"``.
    """

    spatial: tuple[int, ...]
    roi: tuple[int, ...]
    overlap: float
    block: tuple[int, ...]
    blend: str = "gaussian"
    padded: tuple[int, ...] = field(init=False)
    axis_starts: list[list[int]] = field(init=False)
    bounds: list[list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.spatial = tuple(int(s) for s in self.spatial)
        self.roi = tuple(int(r) for r in self.roi)
        self.block = tuple(int(b) for b in self.block)
        if not (len(self.spatial) == len(self.roi) == len(self.block)):
            raise InferenceError(f"block plan: shape {self.spatial}, roi {self.roi} and block {self.block} differ in length")
        for s, r, b in zip(self.spatial, self.roi, self.block):
            if s < 1 or r < 1:
                raise InferenceError(f"block plan: empty image or window (shape {self.spatial}, roi {self.roi})")
            if b < min(r, s):
                raise InferenceError(f"block {self.block} must be at least one window {self.roi} long on every axis")
        self.padded = tuple(max(s, r) for s, r in zip(self.spatial, self.roi))
        self.axis_starts = [tile_starts(p, r, self.overlap) for p, r in zip(self.padded, self.roi)]
        self.bounds = [block_bounds(s, b) for s, b in zip(self.spatial, self.block)]

    # -- blocks --------------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.spatial)

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of blocks per axis."""
        return tuple(len(b) - 1 for b in self.bounds)

    def blocks(self) -> list[Index]:
        """All block indices, first axis slowest (the order windows are predicted in)."""
        return list(itertools.product(*(range(n) for n in self.grid)))

    def linear(self, idx: Index) -> int:
        """Position of a block in :meth:`blocks`."""
        return int(np.ravel_multi_index(idx, self.grid))

    def name(self, idx: Index) -> str:
        return "-".join(str(i) for i in idx)

    def valid(self, idx: Sequence[int]) -> bool:
        return all(0 <= i < n for i, n in zip(idx, self.grid))

    def region(self, idx: Index) -> Region:
        """``((lo, hi), ...)`` of the block in image coordinates."""
        return tuple((b[i], b[i + 1]) for b, i in zip(self.bounds, idx))

    def block_shape(self, idx: Index) -> tuple[int, ...]:
        return tuple(hi - lo for lo, hi in self.region(idx))

    # -- windows -------------------------------------------------------------------------------------
    def owned_starts(self, idx: Index) -> list[list[int]]:
        """Per axis, the window starts that lie in the block (the windows this block predicts)."""
        return [[s for s in starts if lo <= s < hi] for starts, (lo, hi) in zip(self.axis_starts, self.region(idx))]

    def n_windows(self, idx: Index) -> int:
        return int(np.prod([len(s) for s in self.owned_starts(idx)]))

    def extent(self, idx: Index) -> Region:
        """The block plus the part of its windows that spills past its far end (clipped to the image)."""
        owned_starts = self.owned_starts(idx)
        none = any(not o for o in owned_starts)  # no window at all (the grid is a product)
        out = []
        for (lo, hi), owned, r, s in zip(self.region(idx), owned_starts, self.roi, self.spatial):
            end = hi if none else max(hi, owned[-1] + r)
            out.append((lo, min(end, s)))
        return tuple(out)

    def read_region(self, idx: Index) -> Region | None:
        """The image region the block's windows read (None when it owns no window)."""
        owned = self.owned_starts(idx)
        if any(not o for o in owned):
            return None
        return tuple((o[0], min(o[-1] + r, s)) for o, r, s in zip(owned, self.roi, self.spatial))

    # -- pieces between blocks -----------------------------------------------------------------------
    def offsets(self) -> list[Index]:
        """The non-zero offsets in {0, 1}^d: neighbours after a block along one or more axes."""
        return [e for e in itertools.product((0, 1), repeat=self.ndim) if any(e)]

    def piece_region(self, src: Index, e: Index) -> Region | None:
        """Region (image coordinates) of the piece block ``src`` hands to block ``src + e``; None if empty."""
        dest = tuple(i + d for i, d in zip(src, e))
        if not self.valid(dest):
            return None
        out = []
        for d, (lo, hi), (_, end) in zip(e, self.region(src), self.extent(src)):
            if d:
                if end <= hi:
                    return None
                out.append((hi, end))
            else:
                out.append((lo, hi))
        return tuple(out)

    def incoming(self, dest: Index) -> list[tuple[Index, Index, Region]]:
        """``(src, e, region)`` of every piece block ``dest`` receives from the blocks before it."""
        out = []
        for e in self.offsets():
            src = tuple(i - d for i, d in zip(dest, e))
            if not self.valid(src):
                continue
            region = self.piece_region(src, e)
            if region is not None:
                out.append((src, e, region))
        return out

    def sources(self, dest: Index) -> list[Index]:
        """Blocks before ``dest`` whose windows reach into it."""
        return [src for src, _, _ in self.incoming(dest)]

    # -- blending weights ----------------------------------------------------------------------------
    def weights(self) -> np.ndarray:
        """One window's weight map, float32, built exactly as the single-process Blender builds it."""
        w = np.ones((), np.float64)
        for profile in importance_profiles(self.roi, self.blend):
            w = np.multiply.outer(w, profile)
        return w.astype(np.float32)

    def inverse_weights(self, idx: Index) -> list[np.ndarray]:
        """Per axis, ``1 / (sum of window weights)`` over the block's range (float32, as the Blender)."""
        out = []
        for n, r, starts, prof, (lo, hi) in zip(self.padded, self.roi, self.axis_starts,
                                                importance_profiles(self.roi, self.blend), self.region(idx)):
            out.append((1.0 / weight_sums(n, r, starts, prof)).astype(np.float32)[lo:hi])
        return out


def iter_window_starts(owned: Sequence[Sequence[int]]) -> Iterator[tuple[int, ...]]:
    """Window start tuples of a block, first axis slowest (the global grid's order)."""
    return itertools.product(*owned)


def default_block(spatial: Sequence[int], chunks: Sequence[int], roi: Sequence[int],
                  target_voxels: int = 2**24) -> tuple[int, ...]:
    """A block of about ``target_voxels`` (16 M: a 4096^2 plane or 64 x 512 x 512) made of whole chunks."""
    nd = len(spatial)
    if nd == 2:
        base = [4096, 4096]
    else:
        base = [64, 512, 512]
    return align_block(spatial, base, chunks, roi)


def align_block(spatial: Sequence[int], block: Sequence[int], chunks: Sequence[int],
                roi: Sequence[int]) -> tuple[int, ...]:
    """Round a requested block up to whole output chunks and to at least one window per axis.

    Whole chunks: two tasks never write the same chunk. At least one window: a window spans at most
    two blocks per axis (see :class:`BlockPlan`).
    """
    if len(block) != len(spatial):
        raise InferenceError(f"block {tuple(block)} needs one size per spatial axis of {tuple(spatial)}")
    out = []
    for s, b, c, r in zip(spatial, block, chunks, roi):
        if int(b) < 1:
            raise InferenceError(f"block sizes must be positive, got {tuple(block)}")
        want = max(int(b), min(int(r), int(s)))
        want = -(-want // int(c)) * int(c)
        out.append(min(want, -(-int(s) // int(c)) * int(c)))
    return tuple(out)
