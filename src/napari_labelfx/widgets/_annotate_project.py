"""The Annotate panel's projects: saving the image with its annotation layers, classes and tags as an
annotation project folder, and opening one into the viewer.

Functions take the panel (its attributes keep their names: ``panel.project_edit``, ``panel.viewer``, ...).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..annotations.kinds import LabelKind
from ..annotations.layers import TAGS_KEY
from . import _layers


def _ask_folder(panel: Any, folder: str | None) -> str:
    """``folder``, else the panel's project field, else a folder dialog ("" when the person cancels)."""
    from qtpy.QtWidgets import QFileDialog

    return folder or panel.project_edit.text().strip() or QFileDialog.getExistingDirectory(panel, "Project folder")


def save_project(panel: Any, folder: str | None = None) -> str | None:
    """Save image, annotation layers, classes and tags as an annotation project folder."""
    from napari.utils.notifications import show_error, show_info

    from ..annotations.layers import annotation_set_from_layers
    from ..annotations.project import save_project as save_project_folder

    image = panel.image_layer
    if image is None:
        show_error("LabelFX: no image to save.")
        return None
    folder = _ask_folder(panel, folder)
    if not folder:
        return None
    layers = _layers.annotation_layers_for(panel.viewer, image)
    labels = [ly for ly in layers if ly.__class__.__name__ == "Labels"]
    shapes = [ly for ly in layers if ly.__class__.__name__ == "Shapes"]
    try:
        aset = annotation_set_from_layers(image, labels, shapes, panel._table(), panel._tags())
        save_project_folder(aset, folder)
    except Exception as exc:  # GUI boundary: a notification, never an escaped exception
        show_error(f"LabelFX: project not saved: {exc}")
        return None
    panel.project_edit.setText(str(folder))
    show_info(f"LabelFX: project saved to {folder}")
    return str(folder)


def open_project(panel: Any, folder: str | None = None) -> None:
    """Open an annotation project: adds its image and annotation layers to the viewer."""
    from napari.utils.notifications import show_error, show_info

    from ..annotations.project import load_project

    folder = _ask_folder(panel, folder)
    if not folder:
        return
    try:
        aset = load_project(folder)
    except Exception as exc:  # GUI boundary: a damaged project is a notification, never a crash
        show_error(f"LabelFX: cannot open project {folder}: {exc}")
        return
    viewer = panel.viewer
    for img in aset.images:
        data = np.asarray(img.image)
        rgb = img.axes.endswith("S")
        layer = viewer.add_image(data, name=img.name, rgb=rgb)
        _layers.set_class_table(layer, aset.class_table)
        layer.metadata[TAGS_KEY] = {k: set(v) for k, v in img.tags.items()}
        for ann in img.layers:
            # the layer names its image: a project of same-sized images trains each on its own labels
            meta = {_layers.KIND_KEY: LabelKind(ann.kind).value, _layers.IMAGE_KEY: layer.name}
            if getattr(ann, "shapes", None):
                verts = [np.asarray(v) for v, _ in ann.shapes]
                types = [t for _, t in ann.shapes]
                viewer.add_shapes(verts, shape_type=types, name=ann.name, metadata=meta,
                                  face_color="transparent", edge_color="yellow")
            else:
                viewer.add_labels(np.asarray(ann.data), name=ann.name, metadata=meta)
    panel.project_edit.setText(str(folder))
    panel.refresh()
    show_info(f"LabelFX: project opened from {folder}")
