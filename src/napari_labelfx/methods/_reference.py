"""Memory-bounded nearest-reference search for reference-guided pseudo-labels (RPG, METHODS.md 4).

Every query pixel takes the label of its nearest annotated reference pixel in feature space, and a
weight W in [0, 1] that says how unambiguous its k nearest references are:

* distance ``D = 1 - max(cos, 0)`` (features L2-normalised with eps 1e-8),
* ``delta_j`` = smallest distance to a class-j reference, or 1 when no class-j reference is among
  the k nearest,
* ``P_j = (1 - delta_j + eps) / sum_j' (1 - delta_j' + eps)`` and ``W = 1 + sum_j P_j log P_j / log c``.

The search never builds the full (queries x references) matrix: queries are processed in chunks whose
size follows a fixed element budget, so memory does not grow with the pool size p or with k. Being
"among the k nearest" is decided by counting the references strictly closer than each class's nearest
one (no k-th value selection, no gather of k labels), and most counts are settled by bounds from
sub-block maxima and minima instead of a count. Multi-label references may belong to several
classes; a reference with no class belongs to an extra "no label" class (see :func:`membership`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE

#: eps of the cosine normalisation and of the class probabilities P_j.
EPS = 1e-8
#: Default element budget of one chunk of the similarity matrix (float32: 16 MiB; smaller chunks stay
#: in cache for the passes after the product, measured faster than 64 MiB ones).
DEFAULT_CHUNK_ELEMENTS = 1 << 22


class ReferenceSearchError(ValueError):
    """Invalid input to the reference search (shapes, k, empty pool)."""


@dataclass
class ReferenceResult:
    """Pseudo-labels of the queries.

    Attributes
    ----------
    nearest : (Nq,) int64 index of each query's nearest reference.
    weight : (Nq,) float32 W in [0, 1].
    """

    nearest: torch.Tensor
    weight: torch.Tensor


# -- pool sampling --------------------------------------------------------------------------------------
def class_presence(targets: Sequence[np.ndarray | None], num_classes: int, multilabel: bool) -> np.ndarray:
    """(n_items, c) bool: which classes occur among the known pixels of each target.

    Multi-class: c = num_classes. Multi-label: c = num_classes + 1, the last column being "known pixel
    with no class". Items without a target have an all-False row.
    """
    c = num_classes + 1 if multilabel else num_classes
    out = np.zeros((len(targets), c), dtype=bool)
    for i, t in enumerate(targets):
        if t is None:
            continue
        if multilabel:
            known = t != MULTILABEL_IGNORE
            out[i, :num_classes] = np.any((t == 1) & known, axis=tuple(range(1, t.ndim)))
            anyknown = np.all(known, axis=0) & ~np.any(t == 1, axis=0)
            out[i, num_classes] = bool(anyknown.any())
        else:
            present = np.unique(t[t != IGNORE_INDEX])
            present = present[(present >= 0) & (present < num_classes)]
            out[i, present.astype(np.int64)] = True
    return out


def sample_pool(presence: np.ndarray, p: int, rng: np.random.Generator) -> list[int]:
    """Indices of ``p`` labelled items that together cover every class any labelled item has.

    Greedy: in random order, repeatedly take the item covering most still-missing classes (ties
    broken at random), then fill up with random items. With fewer than ``p`` labelled items, items
    repeat. Rows that are all False (unlabelled items) are never chosen.

    Raises
    ------
    ReferenceSearchError
        When no item has a labelled class or ``p < 1``.
    """
    if p < 1:
        raise ReferenceSearchError(f"reference pool size p must be >= 1, got {p}")
    labelled = np.flatnonzero(presence.any(axis=1))
    if labelled.size == 0:
        raise ReferenceSearchError("no training item has annotated pixels to serve as references")
    order = rng.permutation(labelled)
    missing = presence[labelled].any(axis=0).copy()
    chosen: list[int] = []
    while missing.any() and len(chosen) < p:
        gain = (presence[order] & missing).sum(axis=1)
        best = int(order[int(np.argmax(gain))])  # argmax takes the first maximum of a random order
        if gain.max() == 0:
            break
        chosen.append(best)
        missing &= ~presence[best]
    rest = [int(i) for i in order if int(i) not in chosen]
    while len(chosen) < p:
        if not rest:
            rest = [int(i) for i in rng.permutation(labelled)]
        chosen.append(rest.pop(0))
    return chosen


# -- grid ------------------------------------------------------------------------------------------------
def nearest_indices(size_in: int, size_out: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Source index of each of ``size_out`` positions for nearest resizing of an axis of ``size_in``."""
    idx = torch.div(torch.arange(size_out, device=device) * size_in, size_out, rounding_mode="floor")
    return idx.clamp_max(size_in - 1)


def resize_nearest(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-resize the trailing ``len(size)`` axes of ``t`` (any dtype; labels stay exact)."""
    n = len(size)
    for axis, s in zip(range(t.ndim - n, t.ndim), size):
        if t.shape[axis] != s:
            t = t.index_select(axis, nearest_indices(t.shape[axis], int(s), t.device))
    return t


def grid_size(spatial: Sequence[int], s: int) -> tuple[int, ...]:
    """Search grid for a patch: ``s`` per axis in 2D (never above the patch size); ``s // 2`` per
    axis in 3D so a volume pool stays near the size of a 2D one."""
    edge = s if len(spatial) <= 2 else max(1, s // 2)
    return tuple(min(int(d), edge) for d in spatial)


def membership(labels: torch.Tensor, num_classes: int, multilabel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-reference class membership from reference labels, and which references are usable.

    Parameters
    ----------
    labels : (N,) int64 class indices (IGNORE_INDEX = unknown) or (N, K) uint8 multi-hot
        (MULTILABEL_IGNORE = unknown).

    Returns
    -------
    member : (N, c) bool; multi-label: c = K + 1, the last column "no class".
    valid : (N,) bool, references whose label is fully known.
    """
    if multilabel:
        if labels.ndim != 2 or labels.shape[1] != num_classes:
            raise ReferenceSearchError(f"multi-label reference labels must be (N, {num_classes}), got {tuple(labels.shape)}")
        valid = (labels != MULTILABEL_IGNORE).all(dim=1)
        hot = labels == 1
        member = torch.cat([hot, ~hot.any(dim=1, keepdim=True)], dim=1)
    else:
        if labels.ndim != 1:
            raise ReferenceSearchError(f"class-index reference labels must be (N,), got {tuple(labels.shape)}")
        valid = (labels >= 0) & (labels < num_classes)
        member = F.one_hot(labels.clamp(0, num_classes - 1), num_classes).bool()
    return member & valid[:, None], valid


# -- search ----------------------------------------------------------------------------------------------
def _normalise(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / x.norm(dim=1, keepdim=True).clamp_min(EPS)


def entropy_weight(delta: torch.Tensor) -> torch.Tensor:
    """W = 1 + sum_j P_j log P_j / log c from (N, c) smallest class distances ``delta``."""
    c = delta.shape[1]
    if c < 2:
        return torch.ones(delta.shape[0], dtype=torch.float32, device=delta.device)
    sim = (1.0 - delta) + EPS
    prob = sim / sim.sum(dim=1, keepdim=True)
    return (1.0 + (prob * prob.log()).sum(dim=1) / math.log(c)).clamp(0.0, 1.0)


def resolve_k(k: float | int, n_refs: int) -> int:
    """Number of nearest references: an int >= 1, or a fraction in (0, 1] of the pool; capped at the pool."""
    if isinstance(k, float) and 0 < k <= 1:
        kk = int(round(k * n_refs))
    else:
        kk = int(k)
    if kk < 1:
        raise ReferenceSearchError(f"k must be a positive count or a fraction in (0, 1], got {k}")
    return max(1, min(kk, n_refs))


#: References per sub-block of the search: sub-block maxima bound how many references can be closer
#: than a class's nearest one, which settles most "among the k nearest" tests without a counting pass.
SUB_BLOCK = 32


@dataclass
class _PoolLayout:
    """References grouped by membership pattern, each group padded to whole sub-blocks.

    Padding rows are zero vectors: their similarity is exactly 0, so they never count as "strictly
    closer" than a clipped (>= 0) class similarity and never raise a clipped maximum.
    """

    refs_t: torch.Tensor  # (F, Np) padded, L2-normalised references, transposed
    patterns: torch.Tensor  # (P, c) bool membership of each group, ordered by first occurrence
    first_index: torch.Tensor  # (P,) original index of each group's first reference
    group_blocks: list[tuple[int, int]]  # sub-block range of each group
    block_sizes: torch.Tensor  # (Nsub,) float32 real references per sub-block


#: Buckets along the first principal direction in the within-group ordering of references.
ORDER_BUCKETS = 64


def _similarity_order_key(r: torch.Tensor) -> torch.Tensor:
    """A key in [0, 1 + 1/ORDER_BUCKETS) per reference: its bucket along the first principal direction
    of the features, then its position along the second (a two-level sweep, like reading a page).

    The principal directions come from the exact eigen-decomposition of the F x F covariance
    (deterministic, unlike randomised PCA, which would draw from the global random generator).
    """
    x = r.double()
    if x.shape[0] < 2 or x.shape[1] < 2:
        return torch.zeros(x.shape[0], dtype=torch.float64, device=r.device)
    x = x - x.mean(dim=0, keepdim=True)
    _, vecs = torch.linalg.eigh(x.t() @ x)
    p1, p2 = x @ vecs[:, -1], x @ vecs[:, -2]

    def unit(v: torch.Tensor) -> torch.Tensor:
        span = (v.max() - v.min()).clamp_min(1e-12)
        return ((v - v.min()) / span).clamp(0.0, 1.0 - 1e-9)

    return (torch.floor(unit(p1) * ORDER_BUCKETS) + unit(p2)) / ORDER_BUCKETS


def _layout(r: torch.Tensor, member: torch.Tensor, g: int) -> _PoolLayout:
    n, c = member.shape
    if c <= 62:  # pack each membership row into one integer: a 1-D unique is much cheaper than dim=0
        weights = torch.pow(2, torch.arange(c, device=member.device, dtype=torch.int64))
        codes, inverse = torch.unique(member.long() @ weights, return_inverse=True)
        patterns = (codes[:, None] & weights[None, :]) != 0
    else:
        patterns, inverse = torch.unique(member, dim=0, return_inverse=True)
    first = torch.full((patterns.shape[0],), n, dtype=torch.long, device=member.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=member.device), reduce="amin")
    # group order = order of first occurrence, so a tie between groups goes to the earliest reference
    # (as an argmin over the original order would)
    rank = torch.empty_like(first)
    by_first = torch.argsort(first)
    rank[by_first] = torch.arange(by_first.numel(), device=member.device)
    group = rank[inverse]
    # inside a group, order the references along their two main feature directions, so the
    # references of one sub-block are alike and its minimum and maximum bound each member tightly
    key = _similarity_order_key(r)
    order = torch.argsort(group.double() * 4.0 + key)
    counts = torch.bincount(group, minlength=patterns.shape[0]).tolist()
    chunks, blocks, sizes = [], [], []
    start, sub = 0, 0
    for cnt in counts:
        nb = -(-cnt // g)
        part = r[order[start:start + cnt]]
        pad = nb * g - cnt
        if pad:
            part = torch.cat([part, part.new_zeros(pad, r.shape[1])])
        chunks.append(part)
        blocks.append((sub, sub + nb))
        sizes.extend([g] * (nb - 1) + [cnt - (nb - 1) * g])
        start += cnt
        sub += nb
    refs = torch.cat(chunks)
    return _PoolLayout(
        refs_t=refs.t().contiguous(), patterns=patterns[by_first], first_index=first[by_first],
        group_blocks=blocks, block_sizes=torch.tensor(sizes, dtype=torch.float32, device=r.device),
    )


def _exclude_far_classes(sim: torch.Tensor, block_max: torch.Tensor, smax: torch.Tensor, delta: torch.Tensor,
                         present: torch.Tensor, lay: _PoolLayout, kk: int) -> None:
    """Set ``delta[i, j] = 1`` where at least ``kk`` references are closer to query i than class j's nearest.

    ``sim`` (n_q, Np) similarities of one chunk, ``block_max`` (n_q, n_sub) their sub-block maxima,
    ``smax`` (n_q, c) each class's nearest similarity. Bounds from sub-block maxima (and minima, when many
    pairs stay open) settle most pairs; the rest are counted exactly.
    """
    n_q, c = smax.shape
    n_sub = block_max.shape[1]
    g = sim.shape[1] // n_sub
    # delta_j counts iff fewer than k references are strictly closer than class j's nearest.
    # Every reference of a sub-block whose maximum exceeds that similarity may be closer: the
    # sum of such sub-blocks' sizes bounds the count from above.
    # First the farthest present class of each row: when even its bound stays below k, every
    # class of the row is among the k nearest (the usual case for k above ~half the pool).
    far = torch.where(present, smax, torch.full_like(smax, 2.0)).amin(dim=1, keepdim=True)
    open_rows = torch.nonzero((block_max > far).float() @ lay.block_sizes >= kk).flatten()
    sub_max = block_max.index_select(0, open_rows)
    sub_min = None
    for j in range(c):
        if not bool(present[j]) or open_rows.numel() == 0:
            continue
        thr = smax.index_select(0, open_rows)[:, j:j + 1]
        undecided = (sub_max > thr).float() @ lay.block_sizes >= kk
        n_open = int(undecided.sum())
        if n_open == 0:
            continue
        if n_open > n_q // 16:
            # many open pairs: a lower bound settles most of them for one more pass. Every
            # reference of a sub-block whose minimum exceeds the similarity is closer (padding
            # has similarity 0 and only lowers a minimum, so the bound stays safe).
            if sub_min is None:
                sub_min = sim.view(n_q, n_sub, g).amin(dim=2).index_select(0, open_rows)
            surely_out = (sub_min > thr).float() @ lay.block_sizes >= kk
            delta[open_rows[surely_out], j] = 1.0
            undecided &= ~surely_out
        rows = open_rows[undecided]
        if rows.numel() > n_q // 2:  # mostly undecided: count in place, copying no rows
            closer = torch.gt(sim, smax[:, j:j + 1]).view(torch.uint8).sum(dim=1, dtype=torch.int32)
            delta[rows[closer.index_select(0, rows) >= kk], j] = 1.0
        elif rows.numel():
            closer = torch.gt(sim.index_select(0, rows), smax.index_select(0, rows)[:, j:j + 1])
            closer = closer.view(torch.uint8).sum(dim=1, dtype=torch.int32)
            delta[rows[closer >= kk], j] = 1.0


@torch.no_grad()
def nearest_reference(
    queries: torch.Tensor,
    refs: torch.Tensor,
    member: torch.Tensor,
    k: float | int,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    sub_block: int = SUB_BLOCK,
) -> ReferenceResult:
    """Nearest reference and class-entropy weight W for every query (chunked; see module docstring).

    References are grouped by their class-membership pattern (all references of a group carry the
    same label), so the nearest label is the group with the largest similarity and ``nearest`` is that
    group's first reference. Within each chunk of queries one pass over the similarities gives the
    maximum of every sub-block of ``sub_block`` references (references ordered so that a sub-block
    holds similar features); from these follow each class's nearest similarity and an upper bound on
    the number of references closer than it. Pairs the upper bound leaves open get a lower bound from
    sub-block minima when there are many of them; only the (query, class) pairs both bounds leave open
    are counted exactly.

    Parameters
    ----------
    queries : (Nq, F) query features.
    refs : (Nr, F) reference features (only usable references: filter with ``membership``'s valid).
    member : (Nr, c) bool class membership of each reference.
    k : neighbours for W (count, or fraction of Nr when a float in (0, 1]).
    chunk_elements : budget of one similarity chunk (queries per chunk = budget // Nr, at least 1).
    sub_block : references per sub-block (bounds only; the result does not depend on it).

    Raises
    ------
    ReferenceSearchError
        When there is no reference or the feature sizes differ.
    """
    if refs.ndim != 2 or queries.ndim != 2 or refs.shape[1] != queries.shape[1]:
        raise ReferenceSearchError(
            f"queries {tuple(queries.shape)} and references {tuple(refs.shape)} must be (N, F) with the same F"
        )
    n_refs = refs.shape[0]
    if n_refs == 0:
        raise ReferenceSearchError("the reference pool holds no annotated pixel")
    if member.shape[0] != n_refs:
        raise ReferenceSearchError(f"membership has {member.shape[0]} rows for {n_refs} references")
    kk = resolve_k(k, n_refs)
    g = max(int(sub_block), 1)
    lay = _layout(_normalise(refs), member.bool(), g)
    n_pad = lay.refs_t.shape[1]
    n_sub = n_pad // g
    c = member.shape[1]
    present = member.any(dim=0)
    # class j's similarity = max over the groups whose pattern contains j
    class_groups = [torch.nonzero(lay.patterns[:, j]).flatten() for j in range(c)]
    step = max(1, int(chunk_elements) // n_pad)
    nearest, weight = [], []
    for start in range(0, queries.shape[0], step):
        q = _normalise(queries[start:start + step])
        sim = q @ lay.refs_t  # (chunk, Np); clipping to >= 0 is applied to the maxima below
        block_max = sim.view(q.shape[0], n_sub, g).amax(dim=2)  # the one full pass after the product
        group_max = torch.stack([block_max[:, b0:b1].amax(dim=1) for b0, b1 in lay.group_blocks], dim=1)
        group_max.clamp_min_(0.0)
        smax = torch.zeros(q.shape[0], c, dtype=torch.float32, device=q.device)
        for j in range(c):
            if class_groups[j].numel():
                smax[:, j] = group_max.index_select(1, class_groups[j]).amax(dim=1)
        delta = 1.0 - smax
        if kk < n_refs:
            _exclude_far_classes(sim, block_max, smax, delta, present, lay, kk)
        delta[:, ~present] = 1.0
        best = group_max.argmax(dim=1)  # first maximum: the earliest group on ties
        nearest.append(lay.first_index[best])
        weight.append(entropy_weight(delta))
        del sim, block_max
    return ReferenceResult(torch.cat(nearest), torch.cat(weight))


@torch.no_grad()
def brute_force_reference(queries: torch.Tensor, refs: torch.Tensor, member: torch.Tensor, k: float | int) -> ReferenceResult:
    """The same result from the full distance matrix and an explicit gather of the k nearest labels.

    For tests and the cost benchmark only: memory grows as Nq x Nr.
    """
    kk = resolve_k(k, refs.shape[0])
    dist = 1.0 - (_normalise(queries) @ _normalise(refs).t()).clamp_min(0.0)
    knn_d, knn_i = dist.topk(kk, dim=1, largest=False)
    knn_member = member[knn_i]  # (Nq, k, c): the gather the chunked search avoids
    masked = torch.where(knn_member, knn_d[:, :, None], torch.ones_like(knn_d[:, :, None]))
    delta = masked.min(dim=1).values
    return ReferenceResult(dist.argmin(dim=1), entropy_weight(delta))


@torch.no_grad()
def pseudo_label_grid(
    query_features: torch.Tensor,
    ref_features: torch.Tensor,
    ref_labels: torch.Tensor,
    num_classes: int,
    multilabel: bool,
    s: int = 64,
    k: float | int = 7000,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-labels and weights of query images from reference images, computed on the s x s grid.

    Parameters
    ----------
    query_features : (Bq, F, *spatial) features of the images to label.
    ref_features : (Bp, F, *spatial_r) features of the reference (pool) images.
    ref_labels : (Bp, *spatial_r) int64 (IGNORE_INDEX unknown) or (Bp, K, *spatial_r) uint8 multi-hot.
    s : grid edge: features and labels are nearest-resized to it before the search, and the results
        nearest-upsampled back to the query size.

    Returns
    -------
    labels : (Bq, *spatial) int64, or (Bq, K, *spatial) uint8 multi-hot.
    weight : (Bq, *spatial) float32.
    """
    q_spatial = tuple(query_features.shape[2:])
    r_spatial = tuple(ref_features.shape[2:])
    gq, gr = grid_size(q_spatial, s), grid_size(r_spatial, s)
    rf = resize_nearest(ref_features, gr).movedim(1, -1).reshape(-1, ref_features.shape[1])
    if multilabel:
        rl = resize_nearest(ref_labels, gr).movedim(1, -1).reshape(-1, ref_labels.shape[1])
    else:
        rl = resize_nearest(ref_labels, gr).reshape(-1)
    member, valid = membership(rl, num_classes, multilabel)
    rf, rl, member = rf[valid], rl[valid], member[valid]
    qf = resize_nearest(query_features, gq)
    bq = qf.shape[0]
    qflat = qf.movedim(1, -1).reshape(-1, qf.shape[1])
    res = nearest_reference(qflat, rf, member, k, chunk_elements)
    labels = rl[res.nearest]
    if multilabel:
        labels = labels.reshape(bq, *gq, num_classes).movedim(-1, 1)
    else:
        labels = labels.reshape(bq, *gq)
    weight = res.weight.reshape(bq, *gq)
    return resize_nearest(labels, q_spatial), resize_nearest(weight, q_spatial)
