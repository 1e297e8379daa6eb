"""Fusing predictions of several augmented views (METHODS.md section 5).

* :func:`fuse_probabilities` (masks): mean of de-augmented probabilities, weighted per pixel by the
  share of views that agree with the mean's winning class.
* :func:`weighted_boxes_fusion` (boxes): per class, boxes sorted by score join the first cluster whose
  fused box overlaps them at IoU > ``iou_thr``; a fused box is the score-weighted mean of its members'
  coordinates and its score ``mean(s_i) * min(T, n) / T`` (``T`` views: a box seen in few views is
  penalised). :func:`filter_boxes` applies SISSI's keep-score, NMS and top-k.
* :func:`fuse_instances` (instance masks): the same clustering on instance masks matched across
  views at mask IoU > ``iou_thr``; the fused mask is the score-weighted vote of its members.

Boxes are half-open ``(min_0, .., min_d, max_0, .., max_d)`` as in :mod:`napari_labelfx.tools.metrics`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from .metrics import box_iou_matrix

__all__ = ["FusionError", "FusedBoxes", "FusedInstances", "fuse_probabilities", "weighted_boxes_fusion",
           "filter_boxes", "nms", "fuse_instances"]


class FusionError(ValueError):
    """Inputs to a fusion do not fit together."""


def fuse_probabilities(views: np.ndarray, multilabel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean probabilities over views and a per-pixel confidence weighted by agreement.

    Parameters
    ----------
    views : (V, K, *spatial) de-augmented probabilities.
    multilabel : sigmoid outputs (agreement per class on ``p > 0.5``) instead of softmax.

    Returns
    -------
    mean : (K, *spatial) mean probabilities.
    confidence : multi-class: (*spatial) mean probability of the winning class times the share of
        views whose own argmax is that class; multi-label: (K, *spatial) per class, the mean
        probability of the decided state (``p`` or ``1 - p``) times the share of views agreeing.
    """
    views = np.asarray(views, np.float32)
    if views.ndim < 3:
        raise FusionError(f"expected (views, classes, *spatial) probabilities, got shape {views.shape}")
    mean = views.mean(axis=0)
    if multilabel:
        on = mean > 0.5
        agree = ((views > 0.5) == on[None]).mean(axis=0)
        conf = np.where(on, mean, 1.0 - mean) * agree
        return mean, conf.astype(np.float32)
    win = mean.argmax(axis=0)
    agree = (views.argmax(axis=1) == win[None]).mean(axis=0)
    conf = np.take_along_axis(mean, win[None], axis=0)[0] * agree
    return mean, conf.astype(np.float32)


class FusedBoxes(NamedTuple):
    """Fused boxes (n, 2 d) float64, their scores (n,), class labels (n,) and member counts (n,)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    counts: np.ndarray


def _as_boxes(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64)
    if b.size == 0:
        return b.reshape(0, b.shape[-1] if b.ndim == 2 and b.shape[-1] else 4)
    if b.ndim != 2 or b.shape[1] % 2:
        raise FusionError(f"boxes must be (n, 2 * ndim), got shape {b.shape}")
    return b


def weighted_boxes_fusion(
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    labels: Sequence[np.ndarray] | None = None,
    iou_thr: float = 0.55,
    skip_box_thr: float = 0.01,
    n_views: int | None = None,
) -> FusedBoxes:
    """Weighted boxes fusion of several views' boxes.

    Parameters
    ----------
    boxes, scores, labels : per view, (n_v, 2 d) boxes, (n_v,) scores and (n_v,) class labels
        (labels None: one class).
    iou_thr : a box joins a cluster when its IoU with the cluster's fused box is above this
        (SISSI uses 0.5, the library default is 0.55).
    skip_box_thr : boxes scoring at most this are dropped before fusion.
    n_views : ``T`` of the view-count penalty (None: the number of views given).

    Returns
    -------
    FusedBoxes sorted by score, highest first.
    """
    if len(boxes) != len(scores) or (labels is not None and len(labels) != len(boxes)):
        raise FusionError("boxes, scores and labels must list the same number of views")
    t = int(n_views if n_views is not None else len(boxes))
    if t < 1:
        raise FusionError("weighted boxes fusion needs at least one view")
    all_b, all_s, all_l = [], [], []
    for v, (b, s) in enumerate(zip(boxes, scores)):
        b = _as_boxes(b)
        s = np.asarray(s, np.float64).ravel()
        lab = np.zeros(len(s), np.int64) if labels is None else np.asarray(labels[v], np.int64).ravel()
        if len(b) != len(s) or len(lab) != len(s):
            raise FusionError(f"view {v}: {len(b)} boxes, {len(s)} scores, {len(lab)} labels")
        keep = s > skip_box_thr
        all_b.append(b[keep]); all_s.append(s[keep]); all_l.append(lab[keep])  # noqa: E702
    dims = {b.shape[1] for b in all_b if len(b)}
    if len(dims) > 1:
        raise FusionError(f"boxes of different dimensionality across views: {sorted(dims)}")
    width = dims.pop() if dims else 4
    b = np.concatenate([x.reshape(-1, width) for x in all_b]) if all_b else np.zeros((0, width))
    s = np.concatenate(all_s) if all_s else np.zeros(0)
    lab = np.concatenate(all_l) if all_l else np.zeros(0, np.int64)
    out_b, out_s, out_l, out_n = [], [], [], []
    for cls in np.unique(lab):
        idx = np.flatnonzero(lab == cls)
        idx = idx[np.argsort(-s[idx], kind="stable")]
        fused: list[np.ndarray] = []  # fused box per cluster
        members: list[list[int]] = []
        for i in idx:
            if fused:
                iou = box_iou_matrix(b[i][None], np.stack(fused))[0]
                j = int(np.argmax(iou > iou_thr)) if (iou > iou_thr).any() else -1  # first matching cluster
            else:
                j = -1
            if j < 0:
                fused.append(b[i].copy()); members.append([i])  # noqa: E702
            else:
                members[j].append(i)
                m = np.asarray(members[j])
                fused[j] = (s[m, None] * b[m]).sum(axis=0) / s[m].sum()
        for f, m in zip(fused, members):
            n = len(m)
            out_b.append(f); out_l.append(int(cls)); out_n.append(n)  # noqa: E702
            out_s.append(float(s[m].mean()) * min(t, n) / t)
    order = np.argsort(-np.asarray(out_s), kind="stable") if out_s else np.zeros(0, np.int64)
    return FusedBoxes(np.asarray(out_b, np.float64).reshape(-1, width)[order], np.asarray(out_s)[order],
                      np.asarray(out_l, np.int64)[order], np.asarray(out_n, np.int64)[order])


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (highest score first)."""
    boxes = _as_boxes(boxes)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep: list[int] = []
    if len(order) == 0:
        return np.zeros(0, np.int64)
    iou = box_iou_matrix(boxes, boxes)
    suppressed = np.zeros(len(boxes), bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > iou_thr
    return np.asarray(keep, np.int64)


def filter_boxes(fused: FusedBoxes, keep_thr: float = 0.1, nms_thr: float = 0.2, top_k: int = 200) -> FusedBoxes:
    """SISSI's filters after fusion: score >= ``keep_thr``, per-class NMS at ``nms_thr``, best ``top_k``."""
    ok = np.flatnonzero(fused.scores >= keep_thr)
    kept: list[int] = []
    for cls in np.unique(fused.labels[ok]):
        idx = ok[fused.labels[ok] == cls]
        kept.extend(idx[nms(fused.boxes[idx], fused.scores[idx], nms_thr)].tolist())
    kept_arr = np.asarray(kept, np.int64)
    kept_arr = kept_arr[np.argsort(-fused.scores[kept_arr], kind="stable")][: int(top_k)]
    return FusedBoxes(*(x[kept_arr] for x in fused))


class FusedInstances(NamedTuple):
    """Fused instance mask (int32, 0 = background), score and member count per id 1..n."""

    labels: np.ndarray
    scores: np.ndarray
    counts: np.ndarray


def fuse_instances(
    views: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    iou_thr: float = 0.5,
    n_views: int | None = None,
    keep_thr: float = 0.1,
) -> FusedInstances:
    """Match instances across views at mask IoU > ``iou_thr`` and fuse them like boxes.

    Parameters
    ----------
    views : instance label images (same shape; 0 = background; ids 1..n_v).
    scores : per view, the score of each id (``scores[v][i - 1]`` for id ``i``).
    iou_thr : mask IoU above which an instance joins a cluster (compared with the cluster's
        current fused mask).
    n_views : ``T`` of the view-count penalty (None: ``len(views)``).
    keep_thr : fused instances scoring below this are dropped.

    Returns
    -------
    FusedInstances; a pixel claimed by two fused instances goes to the higher-scoring one.
    """
    if len(views) != len(scores) or not views:
        raise FusionError("fuse_instances needs one score array per view and at least one view")
    shape = np.asarray(views[0]).shape
    t = int(n_views if n_views is not None else len(views))
    cands = []  # (score, view, id, slices)
    for v, (lab, sc) in enumerate(zip(views, scores)):
        lab = np.asarray(lab)
        if lab.shape != shape:
            raise FusionError(f"view {v} has shape {lab.shape}, view 0 {shape}")
        sc = np.asarray(sc, np.float64).ravel()
        for i, sl in enumerate(ndi.find_objects(lab.astype(np.int64, copy=False)), start=1):
            if sl is not None:
                if i - 1 >= sc.size:
                    raise FusionError(f"view {v}: no score for instance id {i}")
                cands.append((float(sc[i - 1]), v, i, sl))
    cands.sort(key=lambda c: -c[0])
    owner = np.zeros(shape, np.int64)  # cluster id (1-based) of the fused mask covering each pixel
    acc: list[np.ndarray] = []  # score-weighted vote over the full image (float32), per cluster
    weight: list[float] = []
    member_scores: list[list[float]] = []
    for s, v, i, sl in cands:
        mask = np.asarray(views[v])[sl] == i
        hit = np.unique(owner[sl][mask])
        best, best_iou = -1, iou_thr
        for cid in hit[hit > 0]:
            fused = owner == cid
            inter = np.count_nonzero(fused[sl] & mask)
            union = np.count_nonzero(fused) + np.count_nonzero(mask) - inter
            iou = inter / union if union else 0.0
            if iou > best_iou:
                best, best_iou = int(cid), iou
        if best < 0:
            acc.append(np.zeros(shape, np.float32))
            weight.append(0.0)
            member_scores.append([])
            best = len(acc)
        k = best - 1
        acc[k][sl] += s * mask
        weight[k] += s
        member_scores[k].append(s)
        # refresh this cluster's fused mask: pixels with at least half of its members' score
        new = acc[k] >= 0.5 * weight[k]
        owner[(owner == best) & ~new] = 0
        owner[new & (owner == 0)] = best
    fused_scores = np.asarray([np.mean(m) * min(t, len(m)) / t for m in member_scores], np.float64)
    counts = np.asarray([len(m) for m in member_scores], np.int64)
    out = np.zeros(shape, np.int32)
    final_scores, final_counts = [], []
    claim = np.zeros(shape, bool)
    for k in np.argsort(-fused_scores, kind="stable"):
        if fused_scores[k] < keep_thr:
            continue
        m = (acc[k] >= 0.5 * weight[k]) & (acc[k] > 0) & ~claim
        if not m.any():
            continue
        final_scores.append(fused_scores[k]); final_counts.append(counts[k])  # noqa: E702
        out[m] = len(final_scores)
        claim |= m
    return FusedInstances(out, np.asarray(final_scores, np.float64), np.asarray(final_counts, np.int64))
