"""The Annotate panel's image-level tags: one tick box per foreground class, tags of the whole image or of
one slice of a volume, kept in the image layer's metadata (``labelfx_tags``: slice or None -> class names).

Functions take the panel (its attributes keep their names: ``panel.tag_boxes``, ``panel.tags_label``, ...).
"""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QCheckBox

from ..annotations.layers import TAGS_KEY
from . import _layers


def rebuild_tag_boxes(panel: Any, table: Any) -> None:
    """One tick box per foreground class of ``table`` (none without a table)."""
    for box in panel.tag_boxes.values():
        box.setParent(None)
    panel.tag_boxes = {}
    if table is None:
        return
    for e in table.foreground:
        box = QCheckBox(e.name)
        panel.tag_checks_layout.addWidget(box)
        panel.tag_boxes[e.name] = box


def image_tags(panel: Any) -> dict:
    """The chosen image's tags (created empty in its metadata); ``{}`` without an image."""
    image = panel.image_layer
    if image is None:
        return {}
    return image.metadata.setdefault(TAGS_KEY, {})


def current_slice(panel: Any) -> int | None:
    """The slice of the chosen volume in view (None for a 2D image)."""
    image = panel.image_layer
    if image is None or len(_layers.image_spatial_shape(image)) < 3:
        return None
    try:
        z_world = list(panel.viewer.dims.point)
        z = image.world_to_data(z_world)[-3]
        return int(round(float(z)))
    except Exception:  # noqa: BLE001 - fall back to the dims step
        return int(panel.viewer.dims.current_step[-3])


def apply_tags(panel: Any, per_slice: bool = False) -> None:
    """Tag the whole image (or the current slice of a volume) with the ticked classes."""
    image = panel.image_layer
    if image is None:
        return
    chosen = {name for name, box in panel.tag_boxes.items() if box.isChecked()}
    # a 2D image has no slices: per-slice tags go to the image
    key = current_slice(panel) if per_slice else None
    tags = image_tags(panel)
    tags[key] = set(chosen)
    show_tags(panel)


def show_tags(panel: Any) -> None:
    """Write the image's tags on the panel's tag line."""
    tags = image_tags(panel)
    if not tags:
        panel.tags_label.setText("No tags yet.")
        return
    parts = []
    for key, names in sorted(tags.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)):
        where = "image" if key is None else f"slice {key}"
        parts.append(f"{where}: {', '.join(sorted(names)) or '(no class)'}")
    panel.tags_label.setText("; ".join(parts))
