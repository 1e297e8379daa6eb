"""Seeded derivation of cheaper label kinds from true masks, for label-efficiency experiments.

Each kind becomes a :class:`~napari_labelfx.annotations.TrainingItem` target in the engine's data
contract (``IGNORE_INDEX`` = unknown in int64 class maps, ``MULTILABEL_IGNORE`` in uint8 multi-label
maps). Objects are the true instances (instance sets) or the connected components of each class
(semantic sets) or of each channel (multi-label sets). How each kind is made is documented in
``docs/evaluation.md``; in short:

* ``strong``: the true mask (unpainted = background).
* ``none``: no target (an unlabelled image).
* ``image-level``: no target; ``tags`` = multi-hot of the classes present (index 0 = background).
* ``scribble``: a short stroke along the skeleton of each object (of a share of the objects) eroded
  away from its border, and a few smooth random-walk strokes in the background away from objects;
  the true labels on stroke pixels, unknown elsewhere.
* ``box`` / ``ellipse``: each object's bounding box / moment-matched ellipse (ellipsoid in 3D) is
  one weak instance in ``instances``, the whole shape claims the object's class, outside is unknown
  (not background: the weak-kind rule).
* ``noisy-classical``: the classical generator's mask as a full noisy mask (unpainted = background).
* ``noisy-drop:F``: a share F of the objects removed, each kept object's border moved by a random
  dilation or erosion of 1-3 pixels; full noisy mask.

Multi-label targets follow the annotation layer convention: channel 0 is background (derived: 1
where every class channel is 0, 0 where any is 1) and channels 1..K are the dataset's classes.
"""
from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..annotations.dataset_items import class_map
from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE, LabelKind, TrainingItem
from ..core.normalize import DEFAULT_NORMALISATION
from ..tools.classical import ClassicalParams, classical_instances

#: Kinds ``derive_item`` understands (``noisy-drop`` takes ``:F``, the dropped share, default 0.3).
DERIVED_KINDS = ("strong", "none", "image-level", "scribble", "box", "ellipse", "noisy-classical", "noisy-drop")
DEFAULT_DROP = 0.3
NORMALISATION = DEFAULT_NORMALISATION  # the one default (core/normalize.py)


class DeriveError(ValueError):
    """A label kind is unknown or cannot be derived for this dataset."""


@dataclass(frozen=True)
class KindSpec:
    """A parsed derived-kind name, e.g. ``noisy-drop:0.5`` -> ``KindSpec("noisy-drop", 0.5)``."""

    name: str
    fraction: float | None = None

    def __str__(self) -> str:
        return self.name if self.fraction is None else f"{self.name}:{self.fraction:g}"


def parse_kind(spec: str) -> KindSpec:
    """Parse a kind name (``strong``, ``none``, ..., ``noisy-drop:F`` with 0 <= F < 1)."""
    text = str(spec).strip().lower()
    name, _, arg = text.partition(":")
    if name not in DERIVED_KINDS:
        raise DeriveError(f"unknown label kind {spec!r}; choose from {', '.join(DERIVED_KINDS)} (noisy-drop:F)")
    if name != "noisy-drop":
        if arg:
            raise DeriveError(f"label kind {name!r} takes no ':' parameter (got {spec!r})")
        return KindSpec(name)
    try:
        frac = float(arg) if arg else DEFAULT_DROP
    except ValueError:
        raise DeriveError(f"noisy-drop:F needs a number F, got {arg!r}") from None
    if not 0.0 <= frac < 1.0:
        raise DeriveError(f"noisy-drop:F needs 0 <= F < 1, got {frac}")
    return KindSpec(name, frac)


@dataclass
class DeriveParams:
    """Knobs of the derivations (all [A]: no paper fixes them; documented in docs/evaluation.md).

    Attributes
    ----------
    scribble_erode : strokes stay this many pixels inside an object's border (less for thin objects).
    scribble_length : stroke length in pixels (geodesic along the skeleton / random-walk steps);
        ``None`` = half of each object's equivalent diameter (at least 10), and for background
        strokes the mean of the object strokes' lengths: people draw longer strokes in larger objects.
    scribble_width : stroke half-width (pixels of dilation around the centre line).
    scribble_object_fraction : share of objects that get a stroke (at least one per class present).
    scribble_background_strokes : background strokes per image; ``None`` = as many as object
        strokes (at least 3), so both sides get similar amounts of paint.
    scribble_background_margin : background strokes keep this distance from every object.
    jitter_min, jitter_max : border jitter range (pixels) of ``noisy-drop``.
    classical : overrides of :class:`ClassicalParams` for ``noisy-classical``. Unset fields come from
        :meth:`ClassicalParams.for_diameter` with the median object diameter of the true mask (the
        value a person would type as "object size") and the modality (RGB: histology; grey:
        fluorescence).
    """

    scribble_erode: int = 3
    scribble_length: int | None = None
    scribble_width: int = 1
    scribble_object_fraction: float = 0.5
    scribble_background_strokes: int | None = None
    scribble_background_margin: int = 5
    jitter_min: int = 1
    jitter_max: int = 3
    classical: dict = field(default_factory=dict)


def item_rng(seed: int, name: str) -> np.random.Generator:
    """Generator seeded by the run seed and the image name (independent of listing order)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(name).encode("utf-8"))])


# ----------------------------------------------------------------------------------------------
# truth as class maps and objects


def num_target_classes(mask: np.ndarray, task: str, num_classes: int | None = None) -> int:
    if task == "multilabel":
        return int(np.shape(mask)[0]) + 1
    if num_classes is not None:
        return int(num_classes)
    return 2 if task == "instance" else int(np.max(mask)) + 1


@dataclass
class _Object:
    cls: int  # class index (multi-class) or channel index incl. background offset (multi-label)
    slices: tuple[slice, ...]
    mask: np.ndarray  # bool, inside ``slices``

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def iter_objects(mask: np.ndarray, task: str) -> Iterator[_Object]:
    """True objects: instances (instance sets) or connected components per class/channel."""
    mask = np.asarray(mask)
    if task == "instance":
        maps = [(1, mask)]
    elif task == "semantic":
        structure = np.ones((3,) * mask.ndim, bool)
        maps = [(int(c), ndi.label(mask == c, structure=structure)[0]) for c in np.unique(mask) if c != 0]
    else:
        structure = np.ones((3,) * (mask.ndim - 1), bool)
        maps = [(k + 1, ndi.label(mask[k] > 0, structure=structure)[0]) for k in range(mask.shape[0])]
    for cls, lab in maps:
        for i, sl in enumerate(ndi.find_objects(lab)):
            if sl is None:
                continue
            m = lab[sl] == i + 1
            if m.any():
                yield _Object(cls, sl, m)


def _tags(truth: np.ndarray, multilabel: bool, k: int) -> np.ndarray:
    tags = np.zeros(k, np.float32)
    if multilabel:
        tags[:] = truth.reshape(k, -1).max(axis=1) > 0
    else:
        present = np.unique(truth)
        tags[present[(present >= 0) & (present < k)]] = 1.0
    return tags


def _empty_target(shape: tuple[int, ...], multilabel: bool, k: int) -> np.ndarray:
    if multilabel:
        return np.full((k, *shape), MULTILABEL_IGNORE, np.uint8)
    return np.full(shape, IGNORE_INDEX, np.int64)


def _pad_slices(sl: tuple[slice, ...], pad: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl, shape))


# ----------------------------------------------------------------------------------------------
# scribbles


def _neighbours(ndim: int) -> np.ndarray:
    grid = np.stack(np.meshgrid(*([np.arange(-1, 2)] * ndim), indexing="ij"), -1).reshape(-1, ndim)
    return grid[np.any(grid != 0, axis=1)]


def _skeleton_stroke(obj_mask: np.ndarray, erode: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A connected piece of the skeleton of an eroded object, and the region strokes may widen into.

    Erosion keeps the stroke off the object's border (where a person's brush would also stay); for
    objects too thin for that, the erosion shrinks until something is left.
    """
    from skimage.morphology import skeletonize

    inner = obj_mask
    for e in range(max(int(erode), 0), -1, -1):
        inner = ndi.binary_erosion(obj_mask, iterations=e) if e > 0 else obj_mask
        if inner.any():
            break
    skel = skeletonize(inner)
    if not skel.any():
        skel = inner
    coords = np.argwhere(skel)
    index = {tuple(int(v) for v in c) for c in coords}
    start = coords[int(rng.integers(len(coords)))]
    # breadth-first walk along the skeleton up to ``length`` steps: a stroke along the object's axis
    start = tuple(int(c) for c in start)
    seen = {start: 0}
    queue = deque([start])
    offsets = [tuple(int(v) for v in off) for off in _neighbours(obj_mask.ndim)]
    while queue:
        p = queue.popleft()
        d = seen[p]
        if d >= length:
            continue
        for off in offsets:
            q = tuple(a + b for a, b in zip(p, off))
            if q in index and q not in seen:
                seen[q] = d + 1
                queue.append(q)
    stroke = np.zeros(obj_mask.shape, bool)
    stroke[tuple(np.array(list(seen)).T)] = True
    return stroke, inner


def _background_walk(
    allowed: np.ndarray, length: int, rng: np.random.Generator
) -> np.ndarray:
    """A smooth random walk (momentum on the direction) that stops where it would leave ``allowed``."""
    stroke = np.zeros(allowed.shape, bool)
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        return stroke
    pos = np.array(np.unravel_index(candidates[int(rng.integers(candidates.size))], allowed.shape), float)
    direction = rng.normal(size=allowed.ndim)
    direction /= np.linalg.norm(direction) + 1e-12
    for _ in range(int(length)):
        p = tuple(np.round(pos).astype(int))
        if any(c < 0 or c >= n for c, n in zip(p, allowed.shape)) or not allowed[p]:
            break
        stroke[p] = True
        direction = direction + 0.12 * rng.normal(size=allowed.ndim)  # gentle curves, like a hand stroke
        direction /= np.linalg.norm(direction) + 1e-12
        pos = pos + direction
    return stroke


def scribble_target(
    mask: np.ndarray, task: str, k: int, rng: np.random.Generator, params: DeriveParams
) -> np.ndarray:
    """Scribble target: true labels on stroke pixels, unknown elsewhere (see module docstring)."""
    truth = class_map(mask, task)
    multilabel = task == "multilabel"
    spatial = truth.shape[1:] if multilabel else truth.shape
    painted = np.zeros(spatial, bool)
    objects = list(iter_objects(mask, task))
    by_class: dict[int, list[int]] = {}
    for i, o in enumerate(objects):
        by_class.setdefault(o.cls, []).append(i)
    chosen: list[int] = []
    for idx in by_class.values():
        n = max(1, int(round(params.scribble_object_fraction * len(idx))))
        chosen.extend(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())
    lengths = []
    for i in sorted(chosen):
        o = objects[i]
        length = params.scribble_length
        if length is None:
            nd = o.mask.ndim
            diameter = 2 * np.sqrt(o.area / np.pi) if nd == 2 else 2 * (3 * o.area / (4 * np.pi)) ** (1 / 3)
            length = max(10, int(round(diameter / 2)))
        lengths.append(length)
        stroke, inner = _skeleton_stroke(o.mask, params.scribble_erode, int(length), rng)
        if params.scribble_width > 0:
            stroke = ndi.binary_dilation(stroke, iterations=int(params.scribble_width), mask=inner)
        painted[o.slices] |= stroke
    # background strokes, away from all objects (background = no class / no channel)
    background = (truth[0] > 0) if multilabel else (truth == 0)
    if background.any():
        margin = int(params.scribble_background_margin)
        # grow the objects by the margin (cheaper than a distance transform of a large volume)
        far = ~ndi.binary_dilation(~background, iterations=margin) if margin > 0 else background.copy()
        if not far.any():
            far = background
        n_bg = params.scribble_background_strokes
        n_bg = max(3, len(chosen)) if n_bg is None else int(n_bg)
        length = params.scribble_length or (int(np.mean(lengths)) if lengths else 40)
        strokes = np.zeros(spatial, bool)
        for _ in range(n_bg):
            strokes |= _background_walk(far, length, rng)
        if params.scribble_width > 0 and strokes.any():
            # widen only around the strokes: a dilation of the whole image would cost as much per stroke
            sl = _pad_slices(ndi.find_objects(strokes.astype(np.uint8))[0], int(params.scribble_width) + 1, spatial)
            strokes[sl] = ndi.binary_dilation(strokes[sl], iterations=int(params.scribble_width), mask=background[sl])
        painted |= strokes
    target = _empty_target(spatial, multilabel, k)
    # a person scribbling on a pixel states its whole label (for multi-label: every channel there)
    if multilabel:
        target[:, painted] = truth[:, painted]
    else:
        target[painted] = truth[painted]
    return target


# ----------------------------------------------------------------------------------------------
# weak shapes


def _ellipsoid(o: _Object, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Moment-matched ellipse (ellipsoid in 3D) of an object, as (slices, bool mask).

    A uniform n-D ellipsoid with semi-axis a has variance a^2 / (n + 2) along that axis, so the shape
    is ``(x - mu)^T C^-1 (x - mu) <= n + 2`` with C the covariance of the object's pixel centres plus
    1/12 per axis (each pixel is a unit cell), which keeps one-pixel-thin objects well defined.
    """
    nd = o.mask.ndim
    coords = np.argwhere(o.mask).astype(float) + np.array([s.start for s in o.slices], float)
    mu = coords.mean(axis=0)
    cov = np.cov(coords, rowvar=False).reshape(nd, nd) if len(coords) > 1 else np.zeros((nd, nd))
    cov = cov + np.eye(nd) / 12.0
    half = np.sqrt((nd + 2) * np.diag(cov))
    sl = tuple(
        slice(max(int(np.floor(m - h)), 0), min(int(np.ceil(m + h)) + 1, n)) for m, h, n in zip(mu, half, shape)
    )
    grids = np.meshgrid(*[np.arange(s.start, s.stop, dtype=float) - m for s, m in zip(sl, mu)], indexing="ij")
    x = np.stack(grids, -1)
    inv = np.linalg.inv(cov)
    d2 = np.einsum("...i,ij,...j->...", x, inv, x)
    return sl, d2 <= nd + 2


def weak_target(mask: np.ndarray, task: str, k: int, shape_kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Box or ellipse weak target and weak-instance map (outside every shape: unknown).

    Larger shapes are painted first so a small object inside a large one's box keeps its own shape.
    In multi-label sets only the object's channel is claimed; other channels stay unknown, and
    ``instances`` holds the last shape painted where shapes of different channels overlap.
    """
    multilabel = task == "multilabel"
    spatial = mask.shape[1:] if multilabel else mask.shape
    target = _empty_target(spatial, multilabel, k)
    instances = np.zeros(spatial, np.int32)
    objects = sorted(iter_objects(mask, task), key=lambda o: -o.area)
    for wid, o in enumerate(objects, start=1):
        if shape_kind == "box":
            sl, region = o.slices, np.ones(o.mask.shape, bool)
        else:
            sl, region = _ellipsoid(o, spatial)
        if multilabel:
            target[o.cls][sl][region] = 1
        else:
            target[sl][region] = o.cls
        instances[sl][region] = wid
    if multilabel:
        # background is known nowhere (outside a shape is unknown, not background); inside a shape
        # "background" is 0 because some class is claimed there
        target[0] = np.where((target[1:] == 1).any(axis=0), 0, MULTILABEL_IGNORE).astype(np.uint8)
    return target, instances


# ----------------------------------------------------------------------------------------------
# noisy masks


def _jitter(o: _Object, shape: tuple[int, ...], radius: int, grow: bool) -> tuple[tuple[slice, ...], np.ndarray]:
    """Move an object's border out (grow) or in by ``radius`` pixels (Euclidean ball)."""
    sl = _pad_slices(o.slices, radius + 1, shape)
    local = np.zeros(tuple(s.stop - s.start for s in sl), bool)
    inner = tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(o.slices, sl))
    local[inner] = o.mask
    if grow:
        return sl, ndi.distance_transform_edt(~local) <= radius
    return sl, ndi.distance_transform_edt(local) > radius


def drop_target(
    mask: np.ndarray, task: str, k: int, fraction: float, rng: np.random.Generator, params: DeriveParams
) -> tuple[np.ndarray, np.ndarray | None]:
    """Full noisy mask with a share of objects removed and borders jittered; and its instance map."""
    multilabel = task == "multilabel"
    spatial = mask.shape[1:] if multilabel else mask.shape
    objects = list(iter_objects(mask, task))
    n_drop = int(round(fraction * len(objects)))
    dropped = set(rng.choice(len(objects), size=n_drop, replace=False).tolist()) if n_drop else set()
    lo, hi = sorted((max(int(params.jitter_min), 0), max(int(params.jitter_max), 0)))
    if multilabel:
        target = np.zeros((k, *spatial), np.uint8)
    else:
        target = np.zeros(spatial, np.int64)
    inst = np.zeros(spatial, np.int32) if task == "instance" else None
    next_id = 1
    for i, o in enumerate(objects):
        radius = int(rng.integers(lo, hi + 1))
        grow = bool(rng.integers(2))
        if i in dropped:
            continue
        sl, region = _jitter(o, spatial, radius, grow)
        if multilabel:
            target[o.cls][sl] |= region.astype(np.uint8)
            continue
        # a grown object takes only unclaimed pixels: neighbours keep what they had
        free = target[sl] == 0
        target[sl][region & free] = o.cls
        if inst is not None:
            inst[sl][region & free] = next_id
            next_id += 1
    if multilabel:
        target[0] = (target[1:].max(axis=0) == 0).astype(np.uint8) if k > 1 else 1
    return target, inst


def _median_diameter(mask: np.ndarray, task: str) -> float:
    areas = [o.area for o in iter_objects(mask, task)]
    if not areas:
        raise DeriveError("the true mask holds no object: cannot size the classical generator")
    nd = mask.ndim - (1 if task == "multilabel" else 0)
    a = float(np.median(areas))
    return 2 * np.sqrt(a / np.pi) if nd == 2 else 2 * (3 * a / (4 * np.pi)) ** (1 / 3)


def classical_target(
    raw: np.ndarray, mask: np.ndarray, task: str, k: int, params: DeriveParams
) -> tuple[np.ndarray, np.ndarray]:
    """The classical generator's mask as a full noisy target (objects = class 1) and its instances."""
    if task == "multilabel" or k != 2:
        raise DeriveError(
            "noisy-classical makes one foreground class (nuclei/cells); it needs an instance set or a "
            f"semantic set with one foreground class, not task {task!r} with {k} classes"
        )
    raw = np.asarray(raw)
    rgb = raw.ndim == 3 and raw.shape[-1] in (3, 4) and raw.shape[:2] == mask.shape
    if raw.ndim != 2 and not rgb:
        raise DeriveError(f"noisy-classical works on 2D grey or RGB images, got shape {raw.shape}")
    overrides = dict(params.classical)
    diameter = overrides.pop("diameter", None) or _median_diameter(mask, task)
    modality = overrides.pop("modality", "histology" if rgb else "fluorescence")
    cp = ClassicalParams.for_diameter(diameter, modality=modality, **overrides)
    inst = classical_instances(raw, cp).astype(np.int32)
    return (inst > 0).astype(np.int64), inst


# ----------------------------------------------------------------------------------------------


def derive_target(
    mask: np.ndarray,
    task: str,
    kind: str | KindSpec,
    rng: np.random.Generator,
    raw: np.ndarray | None = None,
    num_classes: int | None = None,
    params: DeriveParams | None = None,
) -> dict:
    """Derive one image's target of a label kind from its true mask.

    Parameters
    ----------
    mask : the true mask in the dataset's encoding (instance ids, class indices, or (K, ...) 0/1).
    task : ``"instance"``, ``"semantic"`` or ``"multilabel"``.
    kind : a kind name (see :data:`DERIVED_KINDS`) or a :class:`KindSpec`.
    rng : random generator (see :func:`item_rng`).
    raw : the raw image as stored (needed by ``noisy-classical``).
    num_classes : classes of a semantic set (background included); multi-label sets add background.
    params : :class:`DeriveParams`.

    Returns
    -------
    dict with ``target``, ``kind`` (LabelKind), ``instances``, ``tags`` and ``extra``.
    """
    spec = kind if isinstance(kind, KindSpec) else parse_kind(kind)
    params = params or DeriveParams()
    mask = np.asarray(mask)
    multilabel = task == "multilabel"
    k = num_target_classes(mask, task, num_classes)
    truth = class_map(mask, task)
    out = {"target": None, "kind": LabelKind.NONE, "instances": None, "tags": None, "extra": {}}
    if spec.name == "strong":
        out.update(target=truth, kind=LabelKind.STRONG)
    elif spec.name == "none":
        pass
    elif spec.name == "image-level":
        out.update(kind=LabelKind.IMAGE_LEVEL, tags=_tags(truth, multilabel, k))
    elif spec.name == "scribble":
        out.update(target=scribble_target(mask, task, k, rng, params), kind=LabelKind.SCRIBBLE)
    elif spec.name in ("box", "ellipse"):
        target, instances = weak_target(mask, task, k, spec.name)
        out.update(target=target, kind=LabelKind.WEAK, instances=instances)
    elif spec.name == "noisy-classical":
        if raw is None:
            raise DeriveError("noisy-classical needs the raw image")
        target, inst = classical_target(raw, mask, task, k, params)
        out.update(target=target, kind=LabelKind.NOISY, extra={"noisy_instances": inst})
    elif spec.name == "noisy-drop":
        target, inst = drop_target(mask, task, k, spec.fraction or 0.0, rng, params)
        out.update(target=target, kind=LabelKind.NOISY, extra={} if inst is None else {"noisy_instances": inst})
    return out


def derive_item(
    image: np.ndarray,
    mask: np.ndarray,
    task: str,
    kind: str | KindSpec,
    seed: int = 0,
    name: str = "image",
    raw: np.ndarray | None = None,
    num_classes: int | None = None,
    params: DeriveParams | None = None,
) -> TrainingItem:
    """A :class:`TrainingItem` of a derived kind for one image.

    Parameters
    ----------
    image : raw pixels, channels first ``(C, *spatial)``; normalised here with
        :func:`~napari_labelfx.core.normalize.percentile_normalise` (1 - 99.8 %, robust white point).
    mask, task, kind, num_classes, params : see :func:`derive_target`.
    seed : run seed; combined with ``name`` so each image has its own stream.
    name : the image's name (its stem).
    raw : the image as stored (e.g. (Y, X, 3)); defaults to ``image`` for grey images.
    """
    # imported here: the data package pulls in torch, which listing and deriving do not need
    from ..core.normalize import percentile_normalise

    if raw is None:
        raw = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    d = derive_target(mask, task, kind, item_rng(seed, name), raw=raw, num_classes=num_classes, params=params)
    extra = {"normalisation": dict(NORMALISATION), "derived_kind": str(kind), **d["extra"]}
    return TrainingItem(
        image=percentile_normalise(image, NORMALISATION["low"], NORMALISATION["high"], robust=NORMALISATION["robust"]),
        target=d["target"],
        kind=d["kind"],
        instances=d["instances"],
        tags=d["tags"],
        name=str(name),
        extra=extra,
    )
