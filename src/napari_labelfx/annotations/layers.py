"""Helpers between napari layers and the annotation model (duck-typed: napari is never imported).

Layers are read through their public attributes only (``name``, ``data``, ``metadata``, ``rgb``,
``multiscale``, ``shape_type``, ``features``, ``source``), so any object with those attributes works
(tests use ``types.SimpleNamespace``). Metadata keys the plugin writes on layers:

* ``labelfx_kind``: the :class:`LabelKind` value of an annotation layer;
* ``labelfx_class``: the layer's class name (painted values are instances of it);
* ``labelfx_partial``: 3D full masks: True/False or a list of annotated slice indices;
* ``labelfx_axes``: an image layer's axes when they cannot be inferred (e.g. ``"CZYX"``);
* ``labelfx_class_table``: on an image layer, its class table (``ClassTable.to_dict()``);
* ``labelfx_tags``: on an image layer, its tags ``{None | slice index: set of class names}``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .class_table import ClassTable
from .errors import AnnotationError
from .kinds import LabelKind
from .model import AnnotatedImage, AnnotationLayer, AnnotationSet
from .validate import check_axes, infer_axes

KIND_KEY = "labelfx_kind"
CLASS_KEY = "labelfx_class"
PARTIAL_KEY = "labelfx_partial"
AXES_KEY = "labelfx_axes"
CLASS_TABLE_KEY = "labelfx_class_table"
TAGS_KEY = "labelfx_tags"
#: Column of a Shapes layer's ``features`` table holding each shape's class name.
SHAPE_CLASS_FEATURE = "labelfx_class"


def _metadata(layer: Any) -> dict:
    md = getattr(layer, "metadata", None)
    return md if isinstance(md, dict) else {}


def _layer_name(layer: Any) -> str:
    return str(getattr(layer, "name", "layer"))


def get_kind(layer: Any) -> LabelKind | None:
    """The layer's label kind from ``metadata["labelfx_kind"]``, or None when not set."""
    value = _metadata(layer).get(KIND_KEY)
    if value is None:
        return None
    try:
        return LabelKind(value)
    except ValueError:
        raise AnnotationError(
            f"layer {_layer_name(layer)!r}: metadata {KIND_KEY}={value!r} is not a label kind "
            f"({', '.join(k.value for k in LabelKind)})"
        ) from None


def set_kind(layer: Any, kind: LabelKind | str) -> None:
    """Mark a layer with a label kind (stored as its string value in ``layer.metadata``)."""
    _set_metadata(layer, KIND_KEY, LabelKind(kind).value)


def get_layer_class(layer: Any) -> str | None:
    """The layer's class name (``metadata["labelfx_class"]``), or None."""
    value = _metadata(layer).get(CLASS_KEY)
    return None if value in (None, "") else str(value)


def set_layer_class(layer: Any, class_name: str | None) -> None:
    """Set (or clear, with None) the class of a layer's painted values."""
    _set_metadata(layer, CLASS_KEY, class_name)


def _set_metadata(layer: Any, key: str, value: Any) -> None:
    # assign a new dict: napari emits its metadata event on assignment, not on in-place edits
    md = dict(_metadata(layer))
    if value is None:
        md.pop(key, None)
    else:
        md[key] = value
    layer.metadata = md


def image_layer_data(layer: Any) -> Any:
    """Full-resolution data of an image layer (level 0 of a multiscale pyramid)."""
    data = layer.data
    if getattr(layer, "multiscale", False) or (isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape")):
        data = data[0]
    return data


def image_layer_axes(layer: Any) -> str:
    """Axes of an image layer: ``metadata["labelfx_axes"]`` if set, else inferred from ``rgb``/ndim."""
    data = image_layer_data(layer)
    axes = _metadata(layer).get(AXES_KEY)
    name = _layer_name(layer)
    if axes:
        return check_axes(str(axes), len(data.shape), name=name)
    return infer_axes(data.shape, getattr(layer, "rgb", None), name=name)


def _layer_source(layer: Any) -> str | None:
    src = getattr(layer, "source", None)
    path = getattr(src, "path", None)
    return str(path) if path else None


def annotation_layer_from_labels(layer: Any, default_kind: LabelKind | None = LabelKind.STRONG) -> AnnotationLayer:
    """An :class:`AnnotationLayer` from a napari Labels layer (kind from metadata)."""
    kind = get_kind(layer) or default_kind
    if kind is None:
        raise AnnotationError(
            f"layer {_layer_name(layer)!r} has no label kind; mark it strong, scribble, weak or noisy"
        )
    partial = _metadata(layer).get(PARTIAL_KEY)
    return AnnotationLayer(
        name=_layer_name(layer),
        kind=kind,
        data=np.asarray(layer.data),
        class_name=get_layer_class(layer),
        partial=partial,
    )


def annotation_layer_from_shapes(layer: Any) -> AnnotationLayer:
    """A weak :class:`AnnotationLayer` from a napari Shapes layer (one weak instance per shape)."""
    kind = get_kind(layer) or LabelKind.WEAK
    data = list(layer.data)
    types = getattr(layer, "shape_type", None)
    if types is None:
        raise AnnotationError(f"shapes layer {_layer_name(layer)!r} has no shape_type")
    types = [types] * len(data) if isinstance(types, str) else list(types)
    shape_classes = None
    features = getattr(layer, "features", None)
    if features is not None and SHAPE_CLASS_FEATURE in getattr(features, "columns", ()):
        col = [_class_cell(v) for v in features[SHAPE_CLASS_FEATURE]]
        if any(c is not None for c in col):
            fallback = get_layer_class(layer)
            shape_classes = _fill_classes([c if c is not None else fallback for c in col], _layer_name(layer))
    return AnnotationLayer(
        name=_layer_name(layer),
        kind=kind,
        shapes=list(zip(data, types)),
        class_name=get_layer_class(layer),
        shape_classes=shape_classes,
    )


def _class_cell(value: Any) -> str | None:
    """A features-table cell as a class name; empty cells (None, NaN, "") mean "no class"."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return None
    return str(value)


def _fill_classes(classes: list[str | None], layer_name: str) -> list[str]:
    if any(c is None for c in classes):
        raise AnnotationError(
            f"shapes layer {layer_name!r}: some shapes have a class and others do not, and the layer has "
            f"no class to fall back on; set {CLASS_KEY} on the layer or a class for every shape"
        )
    return [str(c) for c in classes]


def annotated_image_from_layers(
    image_layer: Any,
    label_layers: Sequence[Any] = (),
    shapes_layers: Sequence[Any] = (),
    tags: Any = None,
    *,
    default_kind: LabelKind | None = LabelKind.STRONG,
) -> AnnotatedImage:
    """An :class:`AnnotatedImage` from an image layer and its annotation layers."""
    layers = [annotation_layer_from_labels(la, default_kind) for la in label_layers]
    layers += [annotation_layer_from_shapes(sh) for sh in shapes_layers]
    return AnnotatedImage(
        name=_layer_name(image_layer),
        image=image_layer_data(image_layer),
        axes=image_layer_axes(image_layer),
        layers=layers,
        tags=tags or {},
        source=_layer_source(image_layer),
    )


def annotation_set_from_layers(
    image_layer: Any,
    label_layers: Iterable[Any],
    shapes_layers: Iterable[Any],
    class_table: ClassTable,
    tags: Any = None,
    *,
    default_kind: LabelKind | None = LabelKind.STRONG,
    validate: bool = True,
) -> AnnotationSet:
    """Build a one-image :class:`AnnotationSet` from napari layer objects.

    Parameters
    ----------
    image_layer : napari Image layer (or any object with ``name``, ``data``, ``rgb``, ``metadata``).
    label_layers : Labels layers annotating it; kind from ``metadata["labelfx_kind"]``.
    shapes_layers : Shapes layers (weak rectangles/ellipses/polygons; per-shape class from
        ``features["labelfx_class"]``, else the layer's ``labelfx_class``).
    class_table : the class table.
    tags : whole-image tags (set/list of class names) or ``{None | slice index: set}``.
    default_kind : kind of Labels layers without metadata; None = refuse them with an error.
    validate : check shapes, dtypes, values and tags now (errors name the layer).
    """
    image = annotated_image_from_layers(
        image_layer, list(label_layers), list(shapes_layers), tags, default_kind=default_kind
    )
    aset = AnnotationSet(class_table, [image])
    if validate:
        aset.validate()
    return aset
