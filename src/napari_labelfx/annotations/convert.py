"""From painted layers, shapes and tags to training targets.

Label value convention (value 0 always means "nothing painted"):

* full-mask kinds (``strong``, ``noisy``): 0 = background; a value listed in the class table = that
  class; any other nonzero value = an instance id of the layer's class (``metadata["labelfx_class"]``,
  default the first foreground class), so instance masks and 0/1 masks work as they are. When the
  layer names its class explicitly (``single_class=True``), every nonzero value is that class, so an
  instance mask whose ids collide with other classes' values is still read as one class.
* ``scribble``: painted value v = class index v - 1 (1 = background, 2 = first foreground class, ...);
  0 = unknown.
* ``weak``: like full masks, but 0 = unknown; each painted object is one weak instance.

Targets are int64 class indices with ``IGNORE_INDEX`` for unknown pixels (multi-class tables) or uint8
``(K, ...)`` 0/1 maps with ``MULTILABEL_IGNORE`` (multi-label tables, channel 0 = background, derived:
1 where every foreground channel is 0, 0 where any is 1).

Volumes: axis 0 of a 3D layer is Z. With ``partial_slices=True`` (the default for 3D strong masks) a
slice without any painted pixel is unknown instead of background, because people annotate a few
slices of a volume. An explicit list of slice indices marks exactly those slices as annotated (so an
annotated slice that really contains only background can be said so).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .class_table import ClassTable
from .errors import LabelValueError, ShapeMismatchError, ShapesError, format_values
from .kinds import IGNORE_INDEX, MULTILABEL_IGNORE, LabelKind

#: Shape types that can be rasterised into weak instances.
SUPPORTED_SHAPES = ("rectangle", "ellipse", "polygon")

#: Largest label value mapped through a lookup table; larger values go through ``np.unique``.
_MAX_LUT = 1 << 20

PartialSlices = bool | Sequence[int] | None


def as_label_array(data: Any, *, layer_name: str) -> np.ndarray:
    """Return label data as a non-negative integer numpy array, or raise a clear error.

    Boolean masks become uint8; float arrays are accepted when every value is a whole number (masks
    saved by some tools as float), anything else is refused.
    """
    arr = np.asarray(data)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise LabelValueError(
                f"layer {layer_name!r}: label data of dtype {arr.dtype} holds non-integer values; "
                "labels must be whole numbers"
            )
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise LabelValueError(f"layer {layer_name!r}: label data of dtype {arr.dtype} is not integer")
    if arr.ndim not in (2, 3):
        raise LabelValueError(
            f"layer {layer_name!r}: label data has {arr.ndim} dimensions with shape {arr.shape}; "
            "expected 2 (Y, X) or 3 (Z, Y, X)"
        )
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        neg = np.unique(arr[arr < 0])
        raise LabelValueError(f"layer {layer_name!r}: negative label values {format_values(neg)}")
    return arr


def _resolve_default_index(class_table: ClassTable, default_class: str | None, layer_name: str) -> int:
    if default_class is not None:
        idx = class_table.index_of(default_class)
        if idx == 0:
            raise LabelValueError(
                f"layer {layer_name!r}: its class is 'background'; a layer's class must be a foreground class"
            )
        return idx
    if class_table.num_classes < 2:
        raise LabelValueError(
            f"layer {layer_name!r}: the class table has no foreground class to assign painted values to"
        )
    return 1


def _map_values(data: np.ndarray, mapping: dict[int, int], fallback: int) -> np.ndarray:
    """Map label values to class indices: ``mapping[v]`` if present, else ``fallback`` (v > 0)."""
    vmax = int(data.max()) if data.size else 0
    if vmax <= _MAX_LUT:
        lut = np.full(vmax + 1, fallback, dtype=np.int64)
        for v, idx in mapping.items():
            if 0 <= v <= vmax:
                lut[v] = idx
        return lut[data]
    # huge ids (e.g. hashed instance ids): map through the unique values instead of a giant table
    uniq, inv = np.unique(data, return_inverse=True)
    lut = np.array([mapping.get(int(v), fallback) for v in uniq], dtype=np.int64)
    return lut[inv].reshape(data.shape)


def _annotated_slices(
    data: np.ndarray, partial: PartialSlices, kind: LabelKind, layer_name: str
) -> np.ndarray | None:
    """Boolean (Z,) of annotated slices for a full-mask volume, or None when all slices count."""
    if data.ndim != 3 or not kind.unpainted_is_background:
        if data.ndim != 3 and partial not in (None, True, False):
            raise LabelValueError(f"layer {layer_name!r}: a list of annotated slices needs a 3D layer")
        return None
    if partial is None:
        partial = kind is LabelKind.STRONG
    if partial is False:
        return None
    if partial is True:
        return data.reshape(data.shape[0], -1).any(axis=1)
    sl = np.asarray(list(partial), dtype=np.int64)
    bad = sl[(sl < 0) | (sl >= data.shape[0])]
    if bad.size:
        raise LabelValueError(
            f"layer {layer_name!r}: annotated slices {format_values(bad)} are outside 0..{data.shape[0] - 1}"
        )
    mask = np.zeros(data.shape[0], dtype=bool)
    mask[sl] = True
    return mask


def labels_to_class_map(
    data: Any,
    kind: LabelKind | str,
    class_table: ClassTable,
    *,
    layer_name: str = "labels",
    partial_slices: PartialSlices = None,
    default_class: str | None = None,
    single_class: bool = False,
) -> np.ndarray:
    """Int64 class indices per pixel with ``IGNORE_INDEX`` for unknown pixels (ignores multi-label).

    See :func:`labels_to_target` for the parameters; this is the multi-class core it builds on.
    """
    kind = LabelKind(kind)
    if kind in (LabelKind.IMAGE_LEVEL, LabelKind.NONE):
        raise LabelValueError(
            f"layer {layer_name!r} is marked {kind.value!r}; painted layers must be strong, scribble, "
            "weak or noisy (image-level labels are tags)"
        )
    arr = as_label_array(data, layer_name=layer_name)
    if kind is LabelKind.SCRIBBLE:
        # scribble value v paints class index v - 1; 0 stays unknown
        vmax = int(arr.max()) if arr.size else 0
        if vmax > class_table.num_classes:
            bad = np.unique(arr[arr > class_table.num_classes])
            raise LabelValueError(
                f"scribble layer {layer_name!r}: values {format_values(bad)} have no class; scribble "
                f"values are 1..{class_table.num_classes} (class index + 1: "
                + ", ".join(f"{i + 1} = {n}" for i, n in enumerate(class_table.names))
                + ")"
            )
        out = arr.astype(np.int64) - 1
        out[arr == 0] = IGNORE_INDEX
    else:
        needs_class = default_class is not None or bool(arr.any())
        default_idx = _resolve_default_index(class_table, default_class, layer_name) if needs_class else 1
        mapping: dict[int, int] = {}
        if not single_class:
            mapping = {e.value: i for i, e in enumerate(class_table.entries) if i > 0}
        mapping[0] = 0 if kind.unpainted_is_background else IGNORE_INDEX
        out = _map_values(arr, mapping, default_idx)
    annotated = _annotated_slices(arr, partial_slices, kind, layer_name)
    if annotated is not None:
        out[~annotated] = IGNORE_INDEX
    return out


def class_map_to_multilabel(
    class_map: np.ndarray,
    kind: LabelKind | str,
    num_classes: int,
    covered: Iterable[int] | None = None,
) -> np.ndarray:
    """Expand a class-index map into uint8 ``(K, ...)`` 0/1 maps with ``MULTILABEL_IGNORE``.

    A painted pixel of class c says "c is here"; other foreground classes stay unknown there, since
    classes may overlap. Full-mask kinds also say "absent" for the classes they cover (``covered``:
    all foreground classes by default, or the single class of a one-class layer) wherever the pixel
    is known and not that class. Channel 0 (background) is derived by :func:`derive_background`.
    """
    kind = LabelKind(kind)
    k = int(num_classes)
    out = np.full((k,) + class_map.shape, MULTILABEL_IGNORE, dtype=np.uint8)
    known = class_map != IGNORE_INDEX
    if kind.unpainted_is_background:
        cov = range(1, k) if covered is None else [int(c) for c in covered]
        for c in cov:
            out[c][known] = 0
    elif kind is LabelKind.SCRIBBLE:
        # a background scribble says that no foreground class is present
        bg = class_map == 0
        out[1:, bg] = 0
    for c in range(1, k):
        out[c][class_map == c] = 1
    return derive_background(out)


def derive_background(target: np.ndarray) -> np.ndarray:
    """Set channel 0 of a multi-label target: 1 if all foreground channels are 0, 0 if any is 1.

    Pixels where no foreground class is 1 and some are unknown stay unknown. Modifies in place.
    """
    fg = target[1:]
    if fg.shape[0] == 0:
        target[0] = 1
        return target
    any_one = (fg == 1).any(axis=0)
    all_zero = (fg == 0).all(axis=0)
    bg = np.full(target.shape[1:], MULTILABEL_IGNORE, dtype=np.uint8)
    bg[all_zero] = 1
    bg[any_one] = 0
    target[0] = bg
    return target


def labels_to_target(
    data: Any,
    kind: LabelKind | str,
    class_table: ClassTable,
    *,
    layer_name: str = "labels",
    partial_slices: PartialSlices = None,
    default_class: str | None = None,
    single_class: bool = False,
) -> np.ndarray:
    """Convert one painted layer into a training target.

    Parameters
    ----------
    data : (Y, X) or (Z, Y, X) integer label array (bool and whole-number floats accepted).
    kind : the layer's :class:`LabelKind` (strong, scribble, weak or noisy).
    class_table : the class table the values refer to.
    layer_name : named in error messages.
    partial_slices : 3D full-mask layers only: True = slices without painted pixels are unknown,
        False = every slice is annotated, a list of ints = exactly these slices are annotated.
        None = True for strong volumes, False otherwise.
    default_class : class name of painted values that are not class values (instance ids);
        None = the first foreground class.
    single_class : every nonzero value is ``default_class`` (a one-class layer).

    Returns
    -------
    int64 array of class indices with ``IGNORE_INDEX`` (multi-class table), or uint8 ``(K, ...)``
    0/1 maps with ``MULTILABEL_IGNORE`` (``class_table.multilabel``).
    """
    class_map = labels_to_class_map(
        data,
        kind,
        class_table,
        layer_name=layer_name,
        partial_slices=partial_slices,
        default_class=default_class,
        single_class=single_class,
    )
    if not class_table.multilabel:
        return class_map
    covered = None
    if single_class and LabelKind(kind) is not LabelKind.SCRIBBLE:
        covered = [_resolve_default_index(class_table, default_class, layer_name)]
    return class_map_to_multilabel(class_map, kind, class_table.num_classes, covered)


def labels_to_instances(
    data: Any,
    kind: LabelKind | str,
    class_table: ClassTable,
    *,
    layer_name: str = "labels",
    single_class: bool = False,
) -> np.ndarray:
    """Int32 instance ids (0 = none, then 1..N) of the painted objects of a layer.

    Painted values that are class values (semantic painting) are split into connected components,
    one instance each; other values are instance ids as painted (an id painted in two pieces stays
    one instance). Scribble strokes are split into connected components per class. Used to give
    each weak object its own weight.
    """
    kind = LabelKind(kind)
    arr = as_label_array(data, layer_name=layer_name)
    out = np.zeros(arr.shape, dtype=np.int32)
    if not arr.any():
        return out
    if kind is LabelKind.SCRIBBLE:
        semantic_values = [int(v) for v in np.unique(arr) if v > 0]
    elif single_class:
        semantic_values = []
    else:
        present = set(np.unique(arr).tolist())
        semantic_values = [v for v in class_table.values[1:] if v in present]
    next_id = 1
    semantic_mask = np.zeros(arr.shape, dtype=bool)
    for v in semantic_values:
        m = arr == v
        semantic_mask |= m
        comp, n = ndimage.label(m)
        out[m] = comp[m] + (next_id - 1)
        next_id += n
    rest = (arr > 0) & ~semantic_mask
    if rest.any():
        ids, inv = np.unique(arr[rest], return_inverse=True)
        out[rest] = inv.astype(np.int32) + next_id
    return out


# ---------------------------------------------------------------------- shapes


def _shape_vertices(
    vertices: Any, index: int, image_shape: tuple[int, ...], layer_name: str
) -> tuple[int | None, np.ndarray]:
    """Split shape vertices into (slice index or None, (N, 2) YX vertices)."""
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != len(image_shape):
        raise ShapesError(
            f"shapes layer {layer_name!r}: shape {index} has vertices of shape {v.shape}; expected "
            f"(N, {len(image_shape)}) for an image of shape {tuple(image_shape)}"
        )
    if not np.all(np.isfinite(v)):
        raise ShapesError(f"shapes layer {layer_name!r}: shape {index} has NaN/inf vertices")
    if len(image_shape) == 2:
        return None, v
    z = v[:, 0]
    if np.ptp(z) > 1e-6:
        raise ShapesError(
            f"shapes layer {layer_name!r}: shape {index} spans slices z={z.min():g}..{z.max():g}; only "
            "2D shapes drawn on one slice are supported"
        )
    zi = int(round(float(z[0])))
    if not 0 <= zi < image_shape[0]:
        raise ShapesError(
            f"shapes layer {layer_name!r}: shape {index} is on slice {zi}, outside the volume "
            f"(0..{image_shape[0] - 1})"
        )
    return zi, v[:, 1:]


def _rasterise_polygon(yx: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from skimage.draw import polygon, polygon_perimeter

    rr, cc = polygon(yx[:, 0], yx[:, 1], shape)
    if rr.size == 0:
        # thinner than a pixel: keep its outline so a tiny shape is not silently lost
        rr, cc = polygon_perimeter(np.round(yx[:, 0]), np.round(yx[:, 1]), shape, clip=False)
        keep = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        rr, cc = rr[keep], cc[keep]
    return rr, cc


def _rasterise_ellipse(corners: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centre lies inside the ellipse inscribed in a (possibly rotated) box."""
    center = corners.mean(axis=0)
    a = (corners[1] - corners[0]) / 2.0  # half-axis along the first edge
    b = (corners[3] - corners[0]) / 2.0  # half-axis along the second edge
    lo = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(corners.max(axis=0)).astype(int), np.array(shape) - 1)
    if np.any(hi < lo):
        return np.zeros(0, int), np.zeros(0, int)
    yy, xx = np.mgrid[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1]
    dy, dx = yy - center[0], xx - center[1]
    aa, bb = max(float(a @ a), 1e-12), max(float(b @ b), 1e-12)
    s = (dy * a[0] + dx * a[1]) / aa
    t = (dy * b[0] + dx * b[1]) / bb
    inside = s * s + t * t <= 1.0
    rr, cc = yy[inside], xx[inside]
    if rr.size == 0:
        r, c = np.round(center).astype(int)
        if 0 <= r < shape[0] and 0 <= c < shape[1]:
            rr, cc = np.array([r]), np.array([c])
    return rr, cc


def _box_corners(v: np.ndarray) -> np.ndarray:
    """Two opposite corners -> four corners in drawing order."""
    (y0, x0), (y1, x1) = v
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=np.float64)


def rasterise_shape(
    vertices: np.ndarray, shape_type: str, shape: tuple[int, int], *, label: str = "shape"
) -> tuple[np.ndarray, np.ndarray]:
    """Row/column indices of the pixels covered by one 2D shape (YX vertices).

    Rectangles and ellipses are given by their 4 box corners (napari's form, rotation allowed) or
    by 2 rows: opposite corners (rectangle) or centre and radii (ellipse).
    """
    st = str(shape_type).lower()
    if st == "rectangle":
        if len(vertices) == 2:
            vertices = _box_corners(vertices)
        if len(vertices) != 4:
            raise ShapesError(f"{label}: a rectangle needs 2 or 4 vertices, got {len(vertices)}")
        return _rasterise_polygon(vertices, shape)
    if st == "ellipse":
        if len(vertices) == 2:
            c, r = vertices
            vertices = _box_corners(np.array([c - np.abs(r), c + np.abs(r)]))
        if len(vertices) != 4:
            raise ShapesError(f"{label}: an ellipse needs 2 (centre, radii) or 4 vertices, got {len(vertices)}")
        return _rasterise_ellipse(vertices, shape)
    if st == "polygon":
        if len(vertices) < 3:
            raise ShapesError(f"{label}: a polygon needs at least 3 vertices, got {len(vertices)}")
        return _rasterise_polygon(vertices, shape)
    raise ShapesError(
        f"{label}: shape type {shape_type!r} cannot be a weak mask; use {', '.join(SUPPORTED_SHAPES)} "
        "(lines and paths enclose no area)"
    )


def _shape_classes(
    class_values: Sequence[Any] | None, n: int, class_table: ClassTable | None, layer_name: str
) -> list[int]:
    if class_values is None:
        return [1] * n
    vals = list(class_values)
    if len(vals) != n:
        raise ShapesError(f"shapes layer {layer_name!r}: {len(vals)} class values for {n} shapes")
    out = []
    for v in vals:
        if isinstance(v, str):
            if class_table is None:
                raise ShapesError(f"shapes layer {layer_name!r}: class name {v!r} given without a class table")
            idx = class_table.index_of(v)
        elif class_table is not None:
            idx = class_table.index_of_value(int(v))
        else:
            idx = int(v)
        if idx < 1 or (class_table is not None and idx >= class_table.num_classes):
            raise ShapesError(f"shapes layer {layer_name!r}: class {v!r} is not a foreground class")
        out.append(idx)
    return out


def shapes_to_weak(
    shapes_data: Sequence[Any],
    shape_types: Sequence[str] | str,
    image_shape: Sequence[int],
    class_values: Sequence[Any] | None = None,
    *,
    class_table: ClassTable | None = None,
    layer_name: str = "shapes",
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise rectangles, ellipses and polygons into a weak target and weak instances.

    Parameters
    ----------
    shapes_data : one ``(N, D)`` vertex array per shape (napari ``Shapes.data``), D = len(image_shape).
        On a volume, vertices carry Z first and all vertices of a shape must share it.
    shape_types : one type per shape (napari ``Shapes.shape_type``) or one type for all.
    image_shape : spatial shape (Y, X) or (Z, Y, X).
    class_values : class per shape. Without ``class_table``: class indices (1 = first foreground
        class). With it: label values, or class names. None = first foreground class for all.
    class_table : optional table to interpret ``class_values``.
    layer_name : named in error messages.

    Returns
    -------
    target : int64 class indices, ``IGNORE_INDEX`` outside every shape.
    instances : int32, shape i is instance i + 1, so a weight per instance maps back to its shape
        (later shapes cover earlier ones where they overlap, as napari draws them; a fully covered
        shape leaves its id unused).
    """
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) not in (2, 3):
        raise ShapeMismatchError(
            f"shapes layer {layer_name!r}: image shape {image_shape} is neither 2D nor 3D spatial"
        )
    shapes = list(shapes_data)
    types = [shape_types] * len(shapes) if isinstance(shape_types, str) else list(shape_types)
    if len(types) != len(shapes):
        raise ShapesError(f"shapes layer {layer_name!r}: {len(types)} shape types for {len(shapes)} shapes")
    classes = _shape_classes(class_values, len(shapes), class_table, layer_name)
    target = np.full(image_shape, IGNORE_INDEX, dtype=np.int64)
    instances = np.zeros(image_shape, dtype=np.int32)
    plane_shape = image_shape[-2:]
    for i, (verts, st, cls) in enumerate(zip(shapes, types, classes)):
        z, yx = _shape_vertices(verts, i, image_shape, layer_name)
        rr, cc = rasterise_shape(yx, st, plane_shape, label=f"shapes layer {layer_name!r}, shape {i}")
        idx = (rr, cc) if z is None else (np.full_like(rr, z), rr, cc)
        target[idx] = cls
        instances[idx] = i + 1
    return target, instances


# ---------------------------------------------------------------------- tags


def tags_to_vector(tags: Iterable[str] | str, class_table: ClassTable) -> np.ndarray:
    """Float32 multi-hot ``(K,)`` vector of the classes named in ``tags`` (index 0 = background)."""
    if isinstance(tags, str):
        tags = [tags]
    names = [str(t).strip() for t in tags]
    unknown = sorted({n for n in names if n not in class_table})
    if unknown:
        raise LabelValueError(
            f"unknown image tags {', '.join(map(repr, unknown))}; tags must be class names "
            f"({', '.join(class_table.names)})"
        )
    vec = np.zeros(class_table.num_classes, dtype=np.float32)
    for n in names:
        vec[class_table.index_of(n)] = 1.0
    return vec
