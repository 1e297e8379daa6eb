"""Glue between napari layers and the library (no Qt here): collect annotations, show results.

Widgets call these functions; they only read layer attributes and write to the plugin's own result
layers (never to a layer a person painted).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..annotations.kinds import LabelKind
from ..core.results import ResultLayer

CLASS_TABLE_KEY = "labelfx_class_table"
KIND_KEY = "labelfx_kind"
RESULT_KEY = "labelfx_result"  # marks layers the plugin owns (predictions, confidence, pseudo-labels)
IMAGE_KEY = "labelfx_image"  # on an annotation layer: the name of the image layer it annotates


def image_spatial_shape(layer: Any) -> tuple[int, ...]:
    """Spatial shape of an Image layer (drops the RGB axis; level 0 of multiscale data)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def image_axes(layer: Any) -> str:
    """Axes string of an Image layer's data as the annotation model expects it."""
    from ..annotations.layers import image_layer_axes

    return image_layer_axes(layer)


def get_class_table(image_layer: Any):
    """The class table attached to an image layer (created with one foreground class if missing)."""
    from ..annotations.class_table import ClassTable, default_class_table

    stored = image_layer.metadata.get(CLASS_TABLE_KEY)
    if stored:
        return ClassTable.from_dict(stored)
    table = default_class_table(["foreground"])
    image_layer.metadata[CLASS_TABLE_KEY] = table.to_dict()
    return table


def set_class_table(image_layer: Any, table: Any) -> None:
    image_layer.metadata[CLASS_TABLE_KEY] = table.to_dict()


def annotation_layers_for(viewer: Any, image_layer: Any) -> list[Any]:
    """Labels and Shapes layers that carry a label kind and match the image's spatial shape."""
    shape = image_spatial_shape(image_layer)
    out = []
    for layer in viewer.layers:
        if layer is image_layer or layer.metadata.get(RESULT_KEY):
            continue
        kind = layer.metadata.get(KIND_KEY)
        if kind is None:
            continue
        owner = layer.metadata.get(IMAGE_KEY)
        if owner and owner != image_layer.name and owner in viewer.layers:
            continue  # it annotates another open image (of the same shape)
        ltype = layer.__class__.__name__
        if ltype == "Labels" and tuple(layer.data.shape) == shape:
            out.append(layer)
        elif ltype == "Shapes":
            out.append(layer)
    return out


def collect_items(viewer: Any, image_layer: Any, layers: list[Any]) -> tuple[list, list[str], bool]:
    """Build engine items from an image layer and its annotation layers.

    Returns ``(items, class_names, multilabel)``. Raises the annotation model's errors (ValueError
    subclasses with clear messages) for bad input.
    """
    from ..annotations.layers import annotation_set_from_layers

    table = get_class_table(image_layer)
    labels = [ly for ly in layers if ly.__class__.__name__ == "Labels"]
    shapes = [ly for ly in layers if ly.__class__.__name__ == "Shapes"]
    tags = image_layer.metadata.get("labelfx_tags", {})
    aset = annotation_set_from_layers(image_layer, labels, shapes, table, tags)
    items = aset.training_items()
    # corrections the person rejected in the Review panel stay out of later correction rounds
    from ..annotations.review import protected_mask

    shape = image_spatial_shape(image_layer)
    protected = None
    for layer in labels:
        mask = protected_mask(layer.metadata, shape)
        if mask is not None:
            protected = mask if protected is None else (protected | mask)
    if protected is not None and items:
        items[0].extra["protected"] = protected
    return items, list(table.names), bool(getattr(table, "multilabel", False))


def add_keeping_selection(viewer: Any, add: Any, *args: Any, **kwargs: Any) -> Any:
    """``add(*args, **kwargs)`` (a ``viewer.add_*``) without changing which layer is active.

    napari makes a new layer the active one; a result layer appearing while the person paints
    would otherwise take their brush to a layer they never chose.
    """
    layers = viewer.layers
    selection = layers.selection
    active, selected = selection.active, list(selection)
    if active is None:
        return add(*args, **kwargs)
    # napari selects each inserted layer, and the layer controls follow the selection's events: switching
    # them to the new layer and back cost a third of the 1.5 s Start spent creating the result layers on
    # software OpenGL. With the selection's events held, the selection goes back before anyone is told.
    with selection.events.blocker_all():
        layer = add(*args, **kwargs)
        selection.clear()
        selection.update([ly for ly in selected if ly in layers])
        selection.active = active
    return layer


def _result_layer(viewer: Any, name: str, kind: str, shape: tuple[int, ...], dtype: Any, like: Any, **kwargs: Any) -> Any:
    """Find the plugin's result layer ``name`` or create it with zeros matching ``like``'s geometry."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        if tuple(layer.data.shape) == shape:
            return layer
        viewer.layers.remove(layer)
    data = np.zeros(shape, dtype=dtype)
    scale = tuple(like.scale)[-len(shape):]
    translate = tuple(like.translate)[-len(shape):]
    meta = {RESULT_KEY: kind}
    add = viewer.add_labels if kind == "prediction" else viewer.add_image
    return add_keeping_selection(viewer, add, data, name=name, scale=scale, translate=translate, metadata=meta,
                                 **kwargs)


def ensure_result_layers(viewer: Any, image_layer: Any) -> tuple[Any, Any]:
    """Create the (empty) prediction and confidence layers now.

    Creating a napari layer costs up to a second on software OpenGL; doing it when the person presses
    Start keeps that pause out of the training period, when they are painting.
    """
    shape = image_spatial_shape(image_layer)
    base = image_layer.name
    pred = _result_layer(viewer, f"{base} prediction", "prediction", shape, np.uint8, image_layer, opacity=0.5)
    conf = _result_layer(viewer, f"{base} confidence", "confidence", shape, np.float32, image_layer,
                         colormap="magma", contrast_limits=(0.0, 1.0), visible=False, blending="additive")
    return pred, conf


def apply_preview(viewer: Any, image_layer: Any, labels: Any, confidence: Any,
                  region: Sequence[tuple[int, int]] | None = None) -> tuple[Any, Any]:
    """Write a prediction (labels + confidence of ``region``, (start, stop) per spatial axis; None: the
    whole image) into the image's prediction and confidence layers (a PREVIEW update, Predict's slices)."""
    shape = image_spatial_shape(image_layer)
    labels = np.asarray(labels)
    conf = np.asarray(confidence, dtype=np.float32)
    base = image_layer.name
    dtype = np.uint16 if labels.max(initial=0) > 255 else np.uint8
    pred = _result_layer(viewer, f"{base} prediction", "prediction", shape, dtype, image_layer, opacity=0.5)
    if np.dtype(pred.data.dtype).itemsize < np.dtype(dtype).itemsize:
        viewer.layers.remove(pred)
        pred = _result_layer(viewer, f"{base} prediction", "prediction", shape, dtype, image_layer, opacity=0.5)
    confl = _result_layer(viewer, f"{base} confidence", "confidence", shape, np.float32, image_layer,
                          colormap="magma", contrast_limits=(0.0, 1.0), visible=False, blending="additive")
    sl = tuple(slice(*s) for s in region) if region else tuple(slice(None) for _ in shape)
    if labels.ndim == 3 and len(shape) == 2:  # multi-label (K, Y, X): show the union, coloured by first class
        labels = np.argmax(np.concatenate([np.zeros_like(labels[:1]), labels], 0), 0)
    pred.data[sl] = labels.reshape(pred.data[sl].shape).astype(pred.data.dtype, copy=False)
    confl.data[sl] = conf.reshape(confl.data[sl].shape)
    pred.refresh()
    confl.refresh()
    return pred, confl


def napari_style(result: ResultLayer) -> dict[str, Any]:
    """The napari ``add_*`` keyword arguments (and layer attributes) that give a result layer its look.

    Only what the result sets is returned, so napari's defaults stay in force for the rest (and an
    updated layer keeps what the person changed, e.g. a layer they made visible again).
    """
    style: dict[str, Any] = {}
    if result.opacity is not None:
        style["opacity"] = result.opacity
    if result.colormap is not None:
        style["colormap"] = result.colormap
    if result.value_range is not None:
        style["contrast_limits"] = list(result.value_range)
    if result.additive:
        style["blending"] = "additive"
    if not result.visible:
        style["visible"] = False
    if result.table is not None:
        style["features"] = {k: list(v) for k, v in result.table.items()}
    if result.shape_type is not None:
        style["shape_type"] = result.shape_type
    if result.outline_color is not None:
        style["edge_color"] = result.outline_color
    if result.outline_width is not None:
        style["edge_width"] = result.outline_width
    if result.fill_color is not None:
        style["face_color"] = result.fill_color
    return style


def apply_result(viewer: Any, image_layer: Any, layers: Iterable[ResultLayer]) -> list[Any]:
    """Show result layers (pseudo-labels, weights, saliency, corrections, ...) beside ``image_layer``.

    Each becomes (or updates) the plugin-owned layer ``"<image> <name>"``; one with a ``region``
    writes into that part of a layer the size of the image.
    """
    out = []
    shape = image_spatial_shape(image_layer)
    nd = len(shape)
    for result in layers:
        ltype = result.kind
        name = f"{image_layer.name} {result.name}"
        kwargs = napari_style(result)
        data = result.data
        meta = {RESULT_KEY: result.name}
        if ltype in ("shapes", "points"):
            if name in viewer.layers:
                viewer.layers.remove(name)
            add = getattr(viewer, f"add_{ltype}")
            layer = add_keeping_selection(viewer, add, data, name=name, scale=tuple(image_layer.scale)[-nd:],
                                          translate=tuple(image_layer.translate)[-nd:], metadata=meta, **kwargs)
            out.append(layer)
            continue
        arr = np.asarray(data)
        region = result.region
        if region is None and tuple(arr.shape) == shape:
            if name in viewer.layers and tuple(viewer.layers[name].data.shape) == shape:
                layer = viewer.layers[name]
                layer.data = arr
                for k, v in kwargs.items():
                    try:
                        setattr(layer, k, v)
                    except (AttributeError, ValueError, TypeError):
                        pass
            else:
                if name in viewer.layers:
                    viewer.layers.remove(name)
                add = viewer.add_labels if ltype == "labels" else viewer.add_image
                layer = add_keeping_selection(viewer, add, arr, name=name, scale=tuple(image_layer.scale)[-nd:],
                                              translate=tuple(image_layer.translate)[-nd:], metadata=meta, **kwargs)
        else:
            dtype = arr.dtype if ltype == "labels" else np.float32
            layer = _result_layer(viewer, name, "prediction" if ltype == "labels" else result.name, shape, dtype,
                                  image_layer, **kwargs)
            layer.metadata[RESULT_KEY] = result.name
            sl = tuple(slice(a, b) for a, b in region) if region else tuple(slice(None) for _ in shape)
            layer.data[sl] = arr.reshape(layer.data[sl].shape)
            layer.refresh()
        out.append(layer)
    return out


def accept_result_layer(viewer: Any, layer: Any, kind: str = "strong") -> Any:
    """Copy a plugin result Labels layer into a new, editable annotation layer of ``kind``."""
    from ..annotations.kinds import LabelKind

    data = np.asarray(layer.data).copy()
    name = f"accepted {layer.name}"
    i = 2
    while name in viewer.layers:
        name = f"accepted {layer.name} ({i})"
        i += 1
    return viewer.add_labels(data, name=name, scale=layer.scale, translate=layer.translate,
                             metadata={KIND_KEY: LabelKind(kind).value})


#: Largest edge of a previewed region: what a screen can show at once, several times over.
MAX_PREVIEW_SIDE = 4096


def viewer_camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    return getattr(getattr(viewer, "scene", None), "camera", None) or viewer.camera


def _view_box(viewer: Any, image_layer: Any, nd: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Data coordinates (last two axes) of the canvas's top-left and bottom-right corners, or None
    when the canvas size is unknown (no window yet)."""
    if getattr(viewer.dims, "ndisplay", 2) != 2:
        return None  # a 3D rendering shows no plane: use the centre window
    camera = viewer_camera(viewer)
    canvas = getattr(viewer, "canvas", None)
    size = getattr(canvas, "size", None) if canvas is not None else None
    if size is None:
        size = getattr(viewer, "_canvas_size", None)
    if size is None or min(size) <= 0 or camera.zoom <= 0:
        return None
    half = np.asarray(size[-2:], float) / float(camera.zoom) / 2.0  # world units on each side
    centre = np.asarray(list(camera.center)[-2:], float)
    corners = []
    for sign in (-1.0, 1.0):
        world = list(viewer.dims.point)
        world[-2:] = list(centre + sign * half)
        corners.append(np.asarray(image_layer.world_to_data(world), float)[-2:])
    lo, hi = np.minimum(*corners), np.maximum(*corners)
    return lo, hi


def visible_region(viewer: Any, image_layer: Any, max_side: int = MAX_PREVIEW_SIDE) -> tuple[tuple[int, int], ...]:
    """The region of the image a person is looking at, as (start, stop) per spatial axis.

    In the image plane this is the part of the image inside the canvas (the whole image when it is
    all in view, whatever its size: the preview predicts it in tiles), at most ``max_side`` per axis
    around the view centre. For volumes the current slice of the first axis is used, which is what
    the 2D canvas shows.
    """
    shape = image_spatial_shape(image_layer)
    nd = len(shape)
    try:
        center_world = list(viewer_camera(viewer).center)[-2:]
        full_world = list(viewer.dims.point)
        full_world[-2:] = center_world
        center = np.asarray(image_layer.world_to_data(full_world))[-nd:]
    except Exception:  # noqa: BLE001 - any camera oddity: fall back to the image centre
        center = np.asarray(shape, float) / 2
    try:
        box = _view_box(viewer, image_layer, nd)
    except Exception:  # noqa: BLE001 - no canvas (headless) or an odd transform: centre window
        box = None
    region = []
    for ax, size in enumerate(shape):
        if nd == 3 and ax == 0:
            z = int(np.clip(round(float(center[0])), 0, size - 1))
            region.append((z, z + 1))
            continue
        plane_ax = ax - (nd - 2)
        if box is not None:
            lo = int(np.clip(np.floor(box[0][plane_ax]), 0, size))
            hi = int(np.clip(np.ceil(box[1][plane_ax]) + 1, 0, size))
            if hi - lo >= 1 and hi - lo <= max_side:
                region.append((lo, hi))
                continue
        if size <= max_side:
            region.append((0, size))
            continue
        c = int(np.clip(round(float(center[ax])), 0, size - 1))
        half = max_side // 2
        lo = int(np.clip(c - half, 0, size - max_side))
        region.append((lo, lo + max_side))
    return tuple(region)


def kind_of(layer: Any) -> LabelKind | None:
    value = layer.metadata.get(KIND_KEY)
    return LabelKind(value) if value else None
