"""The annotation model: images with their annotation layers and tags, and their training items.

Several layers on one image are merged into one target, pixel by pixel, with the precedence

    strong > scribble > weak > noisy

wherever a layer is known (a higher kind overrides a lower one only where it says something; an
unknown pixel of a scribble layer leaves the weak or noisy value underneath). Layers of the same kind
are applied in list order, later ones on top. In multi-label tables the precedence applies per class
channel. The item's ``kind`` is the highest kind that contributed a pixel; ``instances`` holds the
weak instance ids of the pixels whose value came from a weak layer.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .class_table import ClassTable
from .convert import (
    class_map_to_multilabel,
    derive_background,
    labels_to_class_map,
    labels_to_instances,
    shapes_to_weak,
    tags_to_vector,
)
from .errors import AnnotationError, ShapesError
from .kinds import IGNORE_INDEX, MULTILABEL_IGNORE, LabelKind, TrainingItem
from .validate import check_has_annotation, check_image, check_label_shape, spatial_shape

#: Merge order, lowest first: a later kind overrides an earlier one where it is known.
PRECEDENCE: tuple[LabelKind, ...] = (LabelKind.NOISY, LabelKind.WEAK, LabelKind.SCRIBBLE, LabelKind.STRONG)
_RANK = {k: i + 1 for i, k in enumerate(PRECEDENCE)}

Tags = dict[int | None, set[str]]


@dataclass
class AnnotationLayer:
    """One annotation layer of an image.

    Attributes
    ----------
    name : layer name (used in messages and as its key in a project).
    kind : strong, scribble, weak or noisy.
    data : integer label array with the image's spatial shape (Labels layers), or None.
    shapes : ``[(vertices, shape_type), ...]`` (Shapes layers; weak kind only), or None.
    class_name : the layer's class (napari ``metadata["labelfx_class"]``). When set, every painted
        value of a strong/weak/noisy layer is this class (one-class instance masks).
    partial : 3D full masks: True/False or a list of annotated slices (see ``labels_to_target``).
    shape_classes : class name per shape (defaults to ``class_name`` or the first foreground class).
    """

    name: str
    kind: LabelKind | str
    data: Any = None
    shapes: list[tuple[np.ndarray, str]] | None = None
    class_name: str | None = None
    partial: bool | list[int] | None = None
    shape_classes: list[str] | None = None

    def __post_init__(self) -> None:
        try:
            self.kind = LabelKind(self.kind)
        except ValueError:
            raise AnnotationError(
                f"layer {self.name!r}: unknown label kind {self.kind!r}; use one of "
                + ", ".join(k.value for k in LabelKind)
            ) from None
        if self.kind in (LabelKind.IMAGE_LEVEL, LabelKind.NONE):
            raise AnnotationError(
                f"layer {self.name!r} is marked {self.kind.value!r}; annotation layers are strong, "
                "scribble, weak or noisy (image-level labels are the image's tags)"
            )
        if (self.data is None) == (self.shapes is None):
            raise AnnotationError(f"layer {self.name!r}: give either label data or shapes, not both/neither")
        if self.shapes is not None:
            if self.kind is not LabelKind.WEAK:
                raise ShapesError(
                    f"shapes layer {self.name!r} is marked {self.kind.value!r}; shapes are weak annotations"
                )
            self.shapes = [(np.asarray(v, dtype=np.float64), str(t).lower()) for v, t in self.shapes]
            if self.shape_classes is not None and len(self.shape_classes) != len(self.shapes):
                raise ShapesError(
                    f"shapes layer {self.name!r}: {len(self.shape_classes)} classes for {len(self.shapes)} shapes"
                )
        if isinstance(self.partial, (list, tuple, np.ndarray)):
            self.partial = [int(z) for z in self.partial]

    @property
    def is_shapes(self) -> bool:
        return self.shapes is not None


def _normalise_tags(tags: Any, name: str) -> Tags:
    if tags is None:
        return {}
    if isinstance(tags, str):
        return {None: {tags}}
    if not isinstance(tags, dict):
        return {None: {str(t) for t in tags}}
    out: Tags = {}
    for key, val in tags.items():
        if isinstance(key, str) and key.strip().isdigit():
            key = int(key)  # slice keys that went through JSON come back as strings
        if key is not None:
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
                raise AnnotationError(f"image {name!r}: tag key {key!r} must be None (whole image) or a slice index")
            key = int(key)
        out[key] = {val} if isinstance(val, str) else {str(t) for t in val}
    return out


@dataclass
class AnnotatedImage:
    """An image (any array-like, with its ``axes``), its annotation layers and its tags.

    ``tags`` maps None (whole image) or a slice index (volumes) to a set of class names; a plain set
    or list is taken as whole-image tags. ``source`` is the file the image came from, if any (a
    project then references the file instead of copying the pixels).
    """

    name: str
    image: Any
    axes: str = "YX"
    layers: list[AnnotationLayer] = field(default_factory=list)
    tags: Tags = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        self.axes = str(self.axes).upper()
        self.layers = list(self.layers)
        self.tags = _normalise_tags(self.tags, self.name)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return spatial_shape(tuple(getattr(self.image, "shape", None) or np.shape(self.image)), self.axes)

    @property
    def is_volume(self) -> bool:
        return "Z" in self.axes

    def validate(self, class_table: ClassTable, *, check_pixels: bool = True) -> None:
        """Check the image, every layer's shape and the tags; raise an :class:`AnnotationError`."""
        check_image(self.image, self.axes, name=self.name, check_finite=check_pixels)
        sp = self.spatial_shape
        names = [layer.name for layer in self.layers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise AnnotationError(f"image {self.name!r}: layer names {dup} are used twice")
        for layer in self.layers:
            if layer.data is not None:
                check_label_shape(np.shape(layer.data), sp, layer_name=layer.name, image_name=self.name)
        for key, names_ in self.tags.items():
            if key is not None:
                if not self.is_volume:
                    raise AnnotationError(f"image {self.name!r} is 2D; per-slice tags (slice {key}) need a volume")
                if not 0 <= key < sp[0]:
                    raise AnnotationError(
                        f"image {self.name!r}: tags for slice {key}, outside the volume (0..{sp[0] - 1})"
                    )
            tags_to_vector(names_, class_table)

    def channels_first(self, normalise: bool = True) -> np.ndarray:
        """The image as float32 ``(C, Y, X)`` / ``(C, Z, Y, X)``; RGBA loses alpha; optional
        per-channel percentile (1, 99.8) normalisation. Shared and read-only: the same image gives the same
        array while its source array is unchanged (a live session asks after every stroke)."""
        from ._image_cache import cached_view

        return cached_view(self.image, self.axes, normalise,
                           lambda: to_channels_first(self.image, self.axes, normalise=normalise))

    def merge_targets(
        self, class_table: ClassTable
    ) -> tuple[np.ndarray | None, LabelKind, np.ndarray | None, list[str]]:
        """Merge the layers into one target (see the module docstring for the precedence).

        Returns ``(target or None, dominant kind, weak instances or None, contributing kinds)``.
        """
        return merge_layers(self.layers, self.spatial_shape, class_table, image_name=self.name)

    def training_item(self, class_table: ClassTable, normalise: bool = True) -> TrainingItem:
        """Validate and convert this image into a :class:`TrainingItem`."""
        self.validate(class_table)
        target, kind, instances, sources = self.merge_targets(class_table)
        tags_vec, slice_tags = self._tag_vectors(class_table)
        if target is None and tags_vec is not None:
            kind = LabelKind.IMAGE_LEVEL
        extra: dict[str, Any] = {"sources": sources, "axes": self.axes}
        if slice_tags:
            extra["slice_tags"] = slice_tags
        return TrainingItem(
            image=self.channels_first(normalise),
            target=target,
            kind=kind,
            instances=instances,
            tags=tags_vec,
            name=self.name,
            extra=extra,
        )

    def _tag_vectors(self, class_table: ClassTable) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
        if not self.tags:
            return None, {}
        slice_tags = {
            z: tags_to_vector(t, class_table) for z, t in sorted(kv for kv in self.tags.items() if kv[0] is not None)
        }
        # a class tagged on any slice is present in the volume, so the volume's vector is the union
        vec = tags_to_vector(self.tags.get(None, set()), class_table)
        for v in slice_tags.values():
            vec = np.maximum(vec, v)
        return vec, slice_tags


def to_channels_first(image: Any, axes: str, *, normalise: bool = True) -> np.ndarray:
    """Reorder an image to float32 ``(C, [Z,] Y, X)``; C = 1 without a channel axis.

    RGBA images keep their 3 colour channels (alpha is transparency, not signal); a size-1 ``T``
    axis is dropped.
    """
    arr = np.asarray(image)
    ax = axes.upper()
    if "T" in ax:  # a single time point (validated): drop the axis
        arr = np.take(arr, 0, axis=ax.index("T"))
        ax = ax.replace("T", "")
    order = [ax.index(a) for a in "CSZYX" if a in ax]
    arr = np.transpose(arr, order)
    if "C" not in ax and "S" not in ax:
        arr = arr[None]
    elif "S" in ax and arr.shape[0] == 4:
        arr = arr[:3]
    arr = arr.astype(np.float32, copy=False)
    if not normalise:
        return np.ascontiguousarray(arr)
    # imported here: the data package pulls in torch, which the annotation model does not need
    from ..core.normalize import percentile_normalise

    return percentile_normalise(arr)


def merge_layers(
    layers: Sequence[AnnotationLayer],
    shape: tuple[int, ...],
    class_table: ClassTable,
    *,
    image_name: str = "image",
) -> tuple[np.ndarray | None, LabelKind, np.ndarray | None, list[str]]:
    """Merge annotation layers of one image into a target with the kind precedence.

    Returns ``(target, kind, instances, sources)``; target is None when no pixel is known.
    """
    multilabel = class_table.multilabel
    k = class_table.num_classes
    if multilabel:
        target = np.full((k,) + tuple(shape), MULTILABEL_IGNORE, dtype=np.uint8)
    else:
        target = np.full(shape, IGNORE_INDEX, dtype=np.int64)
    source = np.zeros(shape, dtype=np.uint8)
    instances = np.zeros(shape, dtype=np.int64)
    next_id = 0
    order = sorted(range(len(layers)), key=lambda i: (_RANK[LabelKind(layers[i].kind)], i))
    for i in order:
        layer = layers[i]
        kind = LabelKind(layer.kind)
        class_map, inst = _layer_class_map(layer, shape, class_table, image_name)
        if multilabel:
            covered = None
            if layer.class_name is not None and kind.unpainted_is_background:
                covered = [class_table.index_of(layer.class_name)]
            t = class_map_to_multilabel(class_map, kind, k, covered)
            known_ch = t != MULTILABEL_IGNORE
            known_ch[0] = False  # background is derived after the merge
            target[known_ch] = t[known_ch]
            known = known_ch.any(axis=0)
        else:
            known = class_map != IGNORE_INDEX
            target[known] = class_map[known]
        source[known] = _RANK[kind]
        if inst is not None and inst.any():
            sel = (inst > 0) & known
            instances[sel] = inst[sel] + next_id
            next_id += int(inst.max())
    if not source.any():
        return None, LabelKind.NONE, None, []
    if multilabel:
        derive_background(target)
    present = sorted({int(r) for r in np.unique(source) if r > 0})
    kind = PRECEDENCE[present[-1] - 1]
    sources = [PRECEDENCE[r - 1].value for r in present]
    instances[source != _RANK[LabelKind.WEAK]] = 0
    inst_out = None
    if instances.any():
        # dense ids 1..N: weak instances hidden by stronger layers leave no gaps for per-instance weights
        ids, inv = np.unique(instances, return_inverse=True)
        offset = 0 if ids[0] == 0 else 1
        inst_out = (inv.reshape(shape) + offset).astype(np.int32)
    return target, kind, inst_out, sources


def _layer_class_map(
    layer: AnnotationLayer, shape: tuple[int, ...], class_table: ClassTable, image_name: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class-index map and (weak kinds) instance ids of one layer."""
    kind = LabelKind(layer.kind)
    if layer.shapes is not None:
        classes = layer.shape_classes
        if classes is None and layer.class_name is not None:
            classes = [layer.class_name] * len(layer.shapes)
        return shapes_to_weak(
            [v for v, _ in layer.shapes],
            [t for _, t in layer.shapes],
            shape,
            class_values=classes,
            class_table=class_table,
            layer_name=layer.name,
        )
    check_label_shape(np.shape(layer.data), shape, layer_name=layer.name, image_name=image_name)
    single = layer.class_name is not None
    class_map = labels_to_class_map(
        layer.data,
        kind,
        class_table,
        layer_name=layer.name,
        partial_slices=layer.partial,
        default_class=layer.class_name,
        single_class=single,
    )
    inst = None
    if kind is LabelKind.WEAK:
        inst = labels_to_instances(layer.data, kind, class_table, layer_name=layer.name, single_class=single)
    return class_map, inst


@dataclass
class AnnotationSet:
    """A class table and the annotated images that refer to it."""

    class_table: ClassTable
    images: list[AnnotatedImage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = list(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        return iter(self.images)

    def add(self, image: AnnotatedImage) -> AnnotatedImage:
        """Append an image (names must be unique)."""
        if any(im.name == image.name for im in self.images):
            raise AnnotationError(f"an image named {image.name!r} is already in the annotation set")
        self.images.append(image)
        return image

    def image(self, name: str) -> AnnotatedImage:
        for im in self.images:
            if im.name == name:
                return im
        raise AnnotationError(f"no image named {name!r} in the annotation set")

    def validate(self) -> None:
        """Validate every image and layer (shapes, dtypes, finiteness, tags)."""
        names = [im.name for im in self.images]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise AnnotationError(f"image names {dup} are used twice")
        for im in self.images:
            im.validate(self.class_table)

    def training_items(self, normalise: bool = True, *, require_annotation: bool = True) -> list[TrainingItem]:
        """One :class:`TrainingItem` per image (unlabelled images included, kind ``none``).

        Raises :class:`EmptyAnnotationError` when ``require_annotation`` and nothing is annotated.
        """
        names = [im.name for im in self.images]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise AnnotationError(f"image names {dup} are used twice")
        items = [im.training_item(self.class_table, normalise=normalise) for im in self.images]
        if require_annotation:
            check_has_annotation(items)
        return items


def kinds_in(images: Iterable[AnnotatedImage]) -> set[LabelKind]:
    """The set of layer kinds (plus image-level when tagged) present in some images."""
    out: set[LabelKind] = set()
    for im in images:
        out.update(LabelKind(layer.kind) for layer in im.layers)
        if any(im.tags.values()):
            out.add(LabelKind.IMAGE_LEVEL)
    return out
