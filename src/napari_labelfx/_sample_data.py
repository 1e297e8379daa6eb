"""Synthetic sample data: fluorescence-like nuclei (2D) and blobs (3D) with every kind of annotation.

Deterministic for a given seed, offline, numpy/scipy/scikit-image only. The arrays follow the label
value convention of :mod:`napari_labelfx.annotations` (one foreground class, ``"nucleus"``):

* ``strong`` and ``noisy`` are instance masks: 0 = background, every other id = one nucleus;
* ``scribbles`` use scribble values: 1 = background stroke, 2 = nucleus stroke, 0 = not painted;
* the 3D ``strong`` mask is painted on 3 slices only; the other slices are unpainted, hence unknown.

The npe2 sample functions (``sample_nuclei_2d``, ``sample_volume_3d``) return napari LayerData tuples
whose Labels layers carry ``metadata={"labelfx_kind": ...}`` and whose image layer carries the class
table (``metadata={"labelfx_class_table": ...}``) so the Annotate panel shows the ``nucleus`` class.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from .annotations.class_table import ClassTable
from .annotations.kinds import LabelKind
from .annotations.layers import CLASS_TABLE_KEY

#: The class of every sample; scribble value 2 paints it, 1 paints background.
SAMPLE_CLASS = "nucleus"

LayerData = tuple[Any, dict[str, Any], str]


def sample_class_table() -> ClassTable:
    """The class table of the samples: background (0) and ``nucleus`` (1)."""
    return ClassTable([SAMPLE_CLASS])


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Dense ids 1..N in order of first appearance value, dropping ids with no pixel left."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]


def _place_nuclei(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """Paint ``count`` non-overlapping-ish rotated ellipses; returns int32 instance ids."""
    from skimage.draw import ellipse

    labels = np.zeros((size, size), dtype=np.int32)
    placed: list[tuple[float, float, float]] = []
    attempts = 0
    while len(placed) < count and attempts < count * 60:
        attempts += 1
        major = rng.uniform(5.0, 12.0)
        minor = major * rng.uniform(0.6, 1.0)
        cy, cx = rng.uniform(major + 2, size - major - 2, size=2)
        # centres closer than ~0.85 of the summed radii would hide one nucleus behind the other;
        # allowing a little overlap keeps touching pairs that a threshold merges (noisy labels)
        if any(np.hypot(cy - y, cx - x) < 0.85 * (major + r) for y, x, r in placed):
            continue
        rr, cc = ellipse(cy, cx, major, minor, shape=labels.shape, rotation=rng.uniform(0, np.pi))
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = len(placed) + 1
        placed.append((cy, cx, major))
    return _relabel(labels)


def _render(rng: np.random.Generator, instances: np.ndarray, blur: float) -> np.ndarray:
    """Blurred bright objects with texture on a dim, slightly uneven, noisy background (float32)."""
    n = int(instances.max())
    brightness = np.concatenate([[0.0], rng.uniform(0.45, 1.0, size=n)])
    texture = ndimage.gaussian_filter(rng.normal(size=instances.shape), 1.5)
    texture /= texture.std() + 1e-8
    fg = brightness[instances] * (1.0 + 0.12 * texture)
    img = ndimage.gaussian_filter(fg, blur)
    # uneven illumination along the last axis, as from a widefield lamp
    ramp = np.linspace(0.0, 1.0, instances.shape[-1])
    img += 0.08 + 0.03 * ramp
    noise_sd = 0.02 + 0.03 * np.sqrt(np.clip(img, 0.0, None))
    img += rng.normal(size=img.shape) * noise_sd
    return img.astype(np.float32)


def _stroke(
    rng: np.random.Generator, start: np.ndarray, length: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a straight stroke from ``start`` in a random direction, clipped to the image."""
    from skimage.draw import line

    angle = rng.uniform(0, np.pi)
    end = start + length * np.array([np.sin(angle), np.cos(angle)])
    end = np.clip(np.round(end), 0, np.array(shape) - 1).astype(int)
    return line(int(start[0]), int(start[1]), int(end[0]), int(end[1]))


def _scribbles(rng: np.random.Generator, instances: np.ndarray) -> np.ndarray:
    """A few short strokes inside some nuclei (value 2) and on background (value 1)."""
    shape = instances.shape
    out = np.zeros(shape, dtype=np.int32)
    ids = np.arange(1, int(instances.max()) + 1)
    chosen = rng.choice(ids, size=max(3, int(0.4 * ids.size)), replace=False) if ids.size >= 3 else ids
    inner = ndimage.binary_erosion(instances > 0, iterations=1)
    centroids = ndimage.center_of_mass(np.ones(shape), instances, chosen)
    for lab, c in zip(chosen, centroids):
        area = np.count_nonzero(instances == lab)
        half = 0.5 * np.sqrt(area / np.pi)
        rr, cc = _stroke(rng, np.asarray(c) - half * 0.5, 2 * half, shape)
        keep = (instances[rr, cc] == lab) & inner[rr, cc]
        out[rr[keep], cc[keep]] = 2
    # background strokes keep a margin from nuclei, as a careful annotator would
    far = ndimage.distance_transform_edt(instances == 0) > 4
    candidates = np.argwhere(far)
    n_bg = 6 + int(rng.integers(0, 3))
    for _ in range(n_bg):
        if candidates.size == 0:
            break
        start = candidates[rng.integers(0, len(candidates))].astype(float)
        rr, cc = _stroke(rng, start, rng.uniform(15, 35), shape)
        keep = far[rr, cc]
        out[rr[keep], cc[keep]] = 1
    # strokes of a 2-3 px brush: grow each class inside its allowed region
    grown_fg = ndimage.binary_dilation(out == 2) & inner & (instances > 0)
    grown_bg = ndimage.binary_dilation(out == 1) & far
    out[grown_bg] = 1
    out[grown_fg] = 2
    return out


def _noisy_mask(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A classical label: Otsu threshold of the smoothed image, then a few objects dropped or jittered.

    Smoothing merges touching nuclei and the threshold misses dim ones; dropping ~10% of objects and
    growing/shrinking others by a pixel mimics the errors of a quick classical pipeline.
    """
    from skimage.filters import threshold_otsu

    smooth = ndimage.gaussian_filter(image, 2.0)
    mask = smooth > threshold_otsu(smooth)
    lab, n = ndimage.label(mask)
    out = np.zeros(image.shape, dtype=np.int32)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, np.arange(1, n + 1))
    next_id = 1
    for i in range(1, n + 1):
        if sizes[i - 1] < 15 or rng.random() < 0.1:
            continue  # specks and missed objects
        obj = lab == i
        r = rng.random()
        if r < 0.3:
            obj = ndimage.binary_dilation(obj, iterations=int(rng.integers(1, 3)))
        elif r < 0.5:
            eroded = ndimage.binary_erosion(obj)
            obj = eroded if eroded.any() else obj
        out[obj & (out == 0)] = next_id
        next_id += 1
    return out


def make_nuclei_2d(seed: int = 0, size: int = 256) -> dict[str, np.ndarray]:
    """A 2D fluorescence-like nuclei image with true instances and strong/scribble/noisy labels.

    Parameters
    ----------
    seed : random seed; the same seed gives identical arrays.
    size : image side in pixels (>= 64); ~30-60 nuclei per 256 x 256.

    Returns
    -------
    dict with ``image`` (float32, Y X), ``instances`` (int32 true ids), ``strong`` (int32 instance
    mask, equal to the truth), ``scribbles`` (int32, 1 = background, 2 = nucleus, 0 = unpainted) and
    ``noisy`` (int32 instance mask from a classical threshold: merged, missed and jittered nuclei).
    """
    if int(size) < 64:
        raise ValueError(f"make_nuclei_2d: size must be >= 64 pixels, got {size}")
    size = int(size)
    rng = np.random.default_rng(seed)
    count = max(3, int(round(rng.integers(30, 61) * (size / 256) ** 2)))
    instances = _place_nuclei(rng, size, count)
    image = _render(rng, instances, blur=1.2)
    return {
        "image": image,
        "instances": instances,
        "strong": instances.copy(),
        "scribbles": _scribbles(rng, instances),
        "noisy": _noisy_mask(rng, image),
    }


def make_volume_3d(seed: int = 0, shape: tuple[int, int, int] = (32, 128, 128)) -> dict[str, Any]:
    """A 3D volume of blobs whose strong mask is painted on 3 slices only.

    Returns
    -------
    dict with ``image`` (float32, Z Y X), ``instances`` (int32 true ids), ``strong`` (int32: the true
    ids on ``annotated_slices``, 0 elsewhere, i.e. unknown) and ``annotated_slices`` (list of 3 ints).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] < 8 or min(shape[1:]) < 32:
        raise ValueError(f"make_volume_3d: shape must be (Z >= 8, Y >= 32, X >= 32), got {shape}")
    rng = np.random.default_rng(seed)
    zz, yy, xx = shape
    count = max(4, int(round(20 * (zz * yy * xx) / (32 * 128 * 128))))
    instances = np.zeros(shape, dtype=np.int32)
    placed: list[tuple[np.ndarray, float]] = []
    attempts = 0
    while len(placed) < count and attempts < count * 60:
        attempts += 1
        radii = np.array([rng.uniform(2.5, 4.5), rng.uniform(5.0, 10.0), rng.uniform(5.0, 10.0)])
        radii = np.minimum(radii, (np.array(shape) - 1) / 2.0)  # small volumes: blobs must fit
        center = np.array([rng.uniform(r, s - 1 - r) for r, s in zip(radii, shape)])
        if any(np.linalg.norm((center - c) / [0.5, 1, 1]) < 0.9 * (radii[1:].mean() + r) for c, r in placed):
            continue
        lo = np.maximum(np.floor(center - radii).astype(int), 0)
        hi = np.minimum(np.ceil(center + radii).astype(int) + 1, shape)
        grid = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0
        box = instances[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        box[inside & (box == 0)] = len(placed) + 1
        placed.append((center, radii[1:].mean()))
    instances = _relabel(instances)
    image = _render(rng, instances, blur=1.0)
    # annotate the slices nearest to Z/4, Z/2, 3Z/4 that contain a blob: an all-background
    # slice with no painted pixel would read as unknown under the partial-volume rule
    has_obj = np.flatnonzero(instances.reshape(zz, -1).any(axis=1))
    slices: list[int] = []
    for frac in (0.25, 0.5, 0.75):
        want = int(round(frac * (zz - 1)))
        order = has_obj[np.argsort(np.abs(has_obj - want), kind="stable")]
        pick = next((int(z) for z in order if int(z) not in slices), want)
        slices.append(pick)
    slices.sort()
    strong = np.zeros_like(instances)
    strong[slices] = instances[slices]
    return {"image": image, "instances": instances, "strong": strong, "annotated_slices": slices}


def _image_metadata() -> dict[str, Any]:
    return {CLASS_TABLE_KEY: sample_class_table().to_dict()}


def _labels_kwargs(name: str, kind: LabelKind, **extra: Any) -> dict[str, Any]:
    meta = {"labelfx_kind": kind.value}
    meta.update(extra.pop("metadata", {}))
    return {"name": name, "metadata": meta, **extra}


def sample_nuclei_2d() -> list[LayerData]:
    """npe2 sample: nuclei image with strong, scribble and noisy Labels layers."""
    d = make_nuclei_2d()
    table = sample_class_table()
    scribble_colors: dict[Any, Any] = {**table.label_colors(scribble=True), None: "transparent"}
    return [
        (d["image"], {"name": "nuclei", "colormap": "gray", "metadata": _image_metadata()}, "image"),
        (d["noisy"], _labels_kwargs("nuclei noisy", LabelKind.NOISY, visible=False, opacity=0.5), "labels"),
        (d["strong"], _labels_kwargs("nuclei strong", LabelKind.STRONG, visible=False, opacity=0.5), "labels"),
        (d["scribbles"], _labels_kwargs("nuclei scribbles", LabelKind.SCRIBBLE, colormap=scribble_colors), "labels"),
    ]


def sample_volume_3d() -> list[LayerData]:
    """npe2 sample: a blob volume with a strong mask on 3 slices (the other slices unknown)."""
    d = make_volume_3d()
    return [
        (d["image"], {"name": "blobs 3d", "colormap": "gray", "metadata": _image_metadata()}, "image"),
        (
            d["strong"],
            _labels_kwargs(
                "blobs strong (3 slices)",
                LabelKind.STRONG,
                opacity=0.6,
                metadata={"labelfx_partial": list(d["annotated_slices"])},
            ),
            "labels",
        ),
    ]
