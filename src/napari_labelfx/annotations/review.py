"""Reviewing label corrections (Qt-free): what changed between initial and corrected labels, and
accept/reject bookkeeping that writes exactly the changed pixels into the training labels, with undo.

A *change* is one object's difference: ``added`` (an object the initial labels miss), ``removed``
(an initial object the correction dropped entirely) or ``reshaped`` (an object whose pixels
differ). Changed pixels are grouped by the objects they touch, so a cell grown on two sides is one
change. Accepting writes the corrected values of that change's pixels into the training labels
(new instance ids for added objects when the training labels are instance ids); rejecting leaves
them and records the pixels as *protected*.

Rejections reach the next training run through the training-labels layer's metadata: under
``layer.metadata["labelfx_review"]["rejected"]`` a list of ``{"kind", "label", "bbox", "pixels"}``
(flat pixel indices into the layer). :func:`protected_mask` turns them back into a boolean mask;
whoever builds the ``TrainingItem`` from that layer passes it as ``item.extra["protected"]`` and the
``adele``/``sissi`` correction never relabels those pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = ["REVIEW_KEY", "Change", "ReviewError", "ReviewSession", "diff_labels", "protected_mask"]

#: Metadata key of the review record on a training-labels layer.
REVIEW_KEY = "labelfx_review"


class ReviewError(ValueError):
    """Label images given to the review do not fit together."""


@dataclass
class Change:
    """One proposed change.

    Attributes
    ----------
    index : position in the list.
    kind : ``"added"``, ``"removed"`` or ``"reshaped"``.
    pixels : flat indices of the changed pixels.
    values : corrected label value of each of those pixels (0 where the correction removes).
    label : the object's label in the corrected labels (added/reshaped) or initial labels (removed).
    bbox : ``[[start, stop], ...]`` of the changed pixels (half-open, per axis).
    status : ``"pending"``, ``"accepted"`` or ``"rejected"``.
    """

    index: int
    kind: str
    pixels: np.ndarray
    values: np.ndarray
    label: int
    bbox: list[list[int]]
    status: str = "pending"
    before: np.ndarray | None = field(default=None, repr=False)  # training values before the accept

    @property
    def centre(self) -> tuple[float, ...]:
        """Centre of the bounding box (for centring the view)."""
        return tuple((a + b - 1) / 2.0 for a, b in self.bbox)

    @property
    def size(self) -> int:
        return int(self.pixels.size)


def _objects(labels: np.ndarray, instance_ids: bool) -> np.ndarray:
    """Object ids: the ids themselves for instance masks, else connected components per value."""
    if instance_ids:
        return labels.astype(np.int64)
    out = np.zeros(labels.shape, np.int64)
    nxt = 0
    structure = np.ones((3,) * labels.ndim, bool)
    for v in np.unique(labels):
        if v == 0:
            continue
        comp, n = ndi.label(labels == v, structure=structure)
        out[comp > 0] = comp[comp > 0] + nxt
        nxt += n
    return out


def diff_labels(
    initial: np.ndarray,
    corrected: np.ndarray,
    initial_is_instances: bool | None = None,
    instance_class: int = 1,
    min_pixels: int = 1,
) -> list[Change]:
    """The changes that turn ``initial`` into ``corrected``, grouped per object.

    Parameters
    ----------
    initial : the person's labels (class values, or instance ids of one class).
    corrected : corrected labels (class values, 0 = background).
    initial_is_instances : ``initial`` holds instance ids (of ``instance_class``); None: decide:
        instance ids when it holds more distinct values than ``corrected`` has classes and
        ``corrected`` has one foreground class.
    instance_class : the class of the instances.
    min_pixels : changes with fewer pixels are ignored (one-pixel border jitter).

    Returns
    -------
    list of :class:`Change`, largest first.
    """
    initial = np.asarray(initial)
    corrected = np.asarray(corrected)
    if initial.shape != corrected.shape:
        raise ReviewError(f"initial labels {initial.shape} and corrected labels {corrected.shape} differ in shape")
    corr_vals = np.unique(corrected[corrected > 0])
    if initial_is_instances is None:
        init_vals = np.unique(initial[initial > 0])
        initial_is_instances = corr_vals.size <= 1 and init_vals.size > 1
    init_cls = np.where(initial > 0, instance_class, 0) if initial_is_instances else initial.astype(np.int64)
    corrected = np.where(corrected < 0, 0, corrected).astype(np.int64)
    changed = init_cls != corrected
    if not changed.any():
        return []
    obj_i = _objects(initial, initial_is_instances)
    obj_c = _objects(corrected, False)
    comp, n = ndi.label(changed, structure=np.ones((3,) * changed.ndim, bool))
    # union-find over changed components that touch the same initial or corrected object
    parent = list(range(n + 1))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    owner: dict[tuple[str, int], int] = {}
    flat_comp = comp.ravel()
    idx = np.flatnonzero(flat_comp)
    for tag, obj in (("i", obj_i.ravel()), ("c", obj_c.ravel())):
        o = obj[idx]
        has = o > 0
        for cid, oid in set(zip(flat_comp[idx][has].tolist(), o[has].tolist())):
            key = (tag, oid)
            if key in owner:
                ra, rb = find(owner[key]), find(cid)
                if ra != rb:
                    parent[rb] = ra
            else:
                owner[key] = cid
    roots = np.array([find(c) for c in range(n + 1)])
    group = roots[flat_comp]
    group[flat_comp == 0] = 0
    changes: list[Change] = []
    order = np.argsort(group, kind="stable")
    g_sorted = group[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    bounds = np.r_[starts, g_sorted.size]
    flat_i, flat_c, flat_ic = obj_i.ravel(), obj_c.ravel(), init_cls.ravel()
    corr_flat = corrected.ravel()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if g_sorted[s] == 0:
            continue
        pix = np.sort(order[s:e])
        if pix.size < min_pixels:
            continue
        ids_i = np.unique(flat_i[pix][flat_i[pix] > 0])
        ids_c = np.unique(flat_c[pix][flat_c[pix] > 0])
        # an object is added/removed only when it has no pixel in common with the other labels
        c_overlaps = ids_c.size and (flat_ic[np.isin(flat_c, ids_c)] > 0).any()
        i_survives = ids_i.size and (corr_flat[np.isin(flat_i, ids_i)] > 0).any()
        if ids_i.size == 0 and not c_overlaps:
            kind, label = "added", int(np.bincount(corr_flat[pix]).argmax())
        elif ids_c.size == 0 and not i_survives:
            kind, label = "removed", int(np.bincount(initial.ravel()[pix].astype(np.int64)).argmax())
        else:
            kind = "reshaped"
            label = int(np.bincount(corr_flat[pix]).argmax()) if (corr_flat[pix] > 0).any() else int(
                np.bincount(initial.ravel()[pix].astype(np.int64)).argmax())
        coords = np.unravel_index(pix, corrected.shape)
        bbox = [[int(c.min()), int(c.max()) + 1] for c in coords]
        changes.append(Change(0, kind, pix, corr_flat[pix].copy(), label, bbox))
    changes.sort(key=lambda c: -c.size)
    for i, c in enumerate(changes):
        c.index = i
    return changes


def protected_mask(metadata: dict[str, Any] | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """Pixels of rejected changes recorded in a layer's metadata (None when nothing was rejected)."""
    record = (metadata or {}).get(REVIEW_KEY) or {}
    rejected = record.get("rejected") or []
    if not rejected:
        return None
    mask = np.zeros(int(np.prod(shape)), bool)
    for r in rejected:
        pix = np.asarray(r.get("pixels", []), np.int64)
        if pix.size and (pix.min() < 0 or pix.max() >= mask.size):
            raise ReviewError(f"a rejected change in the layer metadata lies outside the layer's shape {shape}")
        mask[pix] = True
    return mask.reshape(shape)


@dataclass
class _Undo:
    change: int
    pixels: np.ndarray
    old_values: np.ndarray | None
    old_status: str


@dataclass
class ReviewSession:
    """Accept/reject bookkeeping over :func:`diff_labels` changes.

    Parameters
    ----------
    initial : the person's labels (never modified).
    corrected : the corrected labels (never modified).
    training : the training labels written on accept (modified in place; pass a copy).
    initial_is_instances : see :func:`diff_labels`.
    min_pixels : see :func:`diff_labels`.
    """

    initial: np.ndarray
    corrected: np.ndarray
    training: np.ndarray
    initial_is_instances: bool | None = None
    min_pixels: int = 1
    changes: list[Change] = field(init=False)
    _undo: list[_Undo] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if np.shape(self.training) != np.shape(self.initial):
            raise ReviewError(f"training labels {np.shape(self.training)} and initial labels "
                              f"{np.shape(self.initial)} differ in shape")
        if self.initial_is_instances is None:
            vals = np.unique(np.asarray(self.corrected)[np.asarray(self.corrected) > 0])
            self.initial_is_instances = vals.size <= 1 and np.unique(self.initial[self.initial > 0]).size > 1
        self.changes = diff_labels(self.initial, self.corrected, self.initial_is_instances,
                                   min_pixels=self.min_pixels)

    # -- decisions -----------------------------------------------------------------------------------
    def _values_for(self, ch: Change) -> np.ndarray:
        """Values to write: corrected classes, or instance ids when the training labels are instances."""
        if not self.initial_is_instances:
            return ch.values.astype(self.training.dtype)
        flat = self.training.reshape(-1)
        out = np.zeros(ch.pixels.size, self.training.dtype)
        fg = ch.values > 0
        if ch.kind == "added":
            out[fg] = flat.max() + 1  # a new instance
        elif fg.any():
            # a reshaped object keeps the id of the initial instance it overlaps most
            init = np.asarray(self.initial).reshape(-1)
            near = init[ch.pixels][init[ch.pixels] > 0]
            if near.size == 0:
                obj = _objects(np.asarray(self.corrected), False).reshape(-1)
                ids = np.unique(obj[ch.pixels][fg])
                near = init[np.isin(obj, ids) & (init > 0)]
            out[fg] = np.bincount(near.astype(np.int64)).argmax() if near.size else flat.max() + 1
        return out

    def accept(self, index: int) -> int:
        """Write change ``index`` into the training labels; returns the number of pixels written."""
        ch = self._get(index)
        if ch.status == "accepted":
            return 0
        flat = self.training.reshape(-1)
        ch.before = flat[ch.pixels].copy()
        self._undo.append(_Undo(index, ch.pixels, ch.before, ch.status))
        flat[ch.pixels] = self._values_for(ch)
        ch.status = "accepted"
        return ch.size

    def reject(self, index: int) -> None:
        """Keep the training labels of change ``index`` and remember the rejection."""
        ch = self._get(index)
        if ch.status == "rejected":
            return
        old = None
        if ch.status == "accepted":  # rejecting an accepted change puts the old pixels back
            flat = self.training.reshape(-1)
            old = flat[ch.pixels].copy()
            flat[ch.pixels] = ch.before
        self._undo.append(_Undo(index, ch.pixels, old, ch.status))
        ch.status = "rejected"

    def accept_all(self) -> int:
        """Accept every pending change; returns the pixels written."""
        return sum(self.accept(c.index) for c in self.changes if c.status == "pending")

    def undo(self) -> int | None:
        """Undo the last decision; returns its change index (None when there is nothing to undo)."""
        if not self._undo:
            return None
        u = self._undo.pop()
        if u.old_values is not None:
            self.training.reshape(-1)[u.pixels] = u.old_values
        self.changes[u.change].status = u.old_status
        return u.change

    def _get(self, index: int) -> Change:
        if not 0 <= index < len(self.changes):
            raise ReviewError(f"no change number {index} (there are {len(self.changes)})")
        return self.changes[index]

    # -- records -------------------------------------------------------------------------------------
    def rejection_record(self) -> dict[str, Any]:
        """The metadata record of the rejected changes (store under ``REVIEW_KEY``)."""
        return {"rejected": [{"kind": c.kind, "label": int(c.label), "bbox": c.bbox,
                              "pixels": c.pixels.astype(np.int64).tolist()}
                             for c in self.changes if c.status == "rejected"]}

    def counts(self) -> dict[str, int]:
        """Number of changes per status."""
        out = {"pending": 0, "accepted": 0, "rejected": 0}
        for c in self.changes:
            out[c.status] += 1
        return out
