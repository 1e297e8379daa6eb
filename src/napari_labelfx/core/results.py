"""What a method shows besides the prediction: result layers, plot markers and curves, a status message.

The terms are the project's own (a layer's kind, its image, region and look), not a viewer's keyword
arguments: methods build them without knowing napari, the process runner pickles them, and
``widgets/_layers.py`` alone turns them into napari layers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: What a result layer draws: class labels, a float image, shapes (one (N, D) vertex array each) or points.
LayerKind = Literal["labels", "image", "shapes", "points"]
LAYER_KINDS: tuple[str, ...] = ("labels", "image", "shapes", "points")

#: A vertical line on the Train panel's loss plot: (iteration, label).
Marker = tuple[int, str]


@dataclass(frozen=True, eq=False)
class Curve:
    """An extra series on the Train panel's loss plot (drawn on a second y axis)."""

    x: Sequence[float]
    y: Sequence[float]


# eq=False: ``data`` is usually a numpy array, whose == is element-wise.
@dataclass(frozen=True, eq=False, kw_only=True)
class ResultLayer:
    """One layer a method (or a panel) wants shown beside a training image.

    The Train panel shows it as the plugin-owned layer ``"<image name> <name>"`` on image ``image_index``
    of the run; a new result with the same name replaces (or, with a ``region``, updates) it. Style
    fields left at ``None`` keep the viewer's defaults.
    """

    name: str
    kind: LayerKind
    data: Any  # ndarray for labels/image (the whole image, or the region), list of vertex arrays for shapes
    image_index: int = 0
    region: tuple[tuple[int, int], ...] | None = None  # (start, stop) per spatial axis; None: the whole image
    opacity: float | None = None
    colormap: str | None = None  # a colour map name ("viridis", "inferno", "turbo", "magma", ...)
    value_range: tuple[float, float] | None = None  # the values mapped to the colour map's ends
    additive: bool = False  # blended additively over the image below it
    visible: bool = True  # False: created hidden (the person switches it on)
    table: Mapping[str, Sequence[Any]] | None = None  # values per label / shape, e.g. {"index": [...], "gamma": [...]}
    shape_type: str | None = None  # shapes: "rectangle", "polygon", ...
    outline_color: str | None = None  # shapes: edge colour
    outline_width: float | None = None  # shapes: edge width
    fill_color: str | None = None  # shapes: face colour ("transparent" draws outlines only)

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"result layer {self.name!r}: kind must be one of {', '.join(LAYER_KINDS)}, "
                             f"got {self.kind!r}")


@dataclass(frozen=True, eq=False)
class MethodResult:
    """What a method's ``result_layers()`` returns and ``ctx.emit_result`` sends (a RESULT update)."""

    layers: tuple[ResultLayer, ...] = ()
    markers: tuple[Marker, ...] = ()
    curves: Mapping[str, Curve] = field(default_factory=dict)
    message: str | None = None  # for the status line

    def __bool__(self) -> bool:
        """Whether there is anything to send (an empty result sends no update)."""
        return bool(self.layers or self.markers or self.curves or self.message)

    def by_name(self) -> dict[str, ResultLayer]:
        """The layers keyed by name."""
        return {layer.name: layer for layer in self.layers}

    def merged(self, other: MethodResult) -> MethodResult:
        """Both results in one: layers and markers of both, ``other``'s curves and message win on a clash."""
        return MethodResult(
            layers=self.layers + other.layers, markers=self.markers + other.markers,
            curves={**self.curves, **other.curves},
            message=other.message if other.message is not None else self.message,
        )


__all__ = ["LAYER_KINDS", "Curve", "LayerKind", "Marker", "MethodResult", "ResultLayer"]
