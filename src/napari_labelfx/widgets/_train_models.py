"""The Train panel's models and results: saving and loading model folders, accepting a result layer as
an annotation (and undoing that).

Functions take the panel (its attributes keep their names: ``panel.best_dir``, ``panel._accepted``, ...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _layers


def save_model(panel: Any, folder: str | None = None) -> Path | None:
    """Copy the panel's model folder to ``folder`` (asks with a dialog when not given)."""
    from napari.utils.notifications import show_error, show_info

    if panel.model_dir is None:
        show_error("LabelFX: no model yet: train or load one first.")
        return None
    if folder is None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(panel, "Save model to folder")
        if not folder:
            return None
    from ..engine.model_folder import copy_model_folder

    # never deletes the person's files: a non-empty folder that is not a model gets a subfolder
    try:
        dest = copy_model_folder(panel.model_dir, folder)
    except Exception as exc:  # GUI boundary: a notification, never an escaped exception
        show_error(f"LabelFX: model not saved: {exc}")
        return None
    run_dir = panel._guard.run_dir
    if run_dir is not None and (dest == run_dir or run_dir in dest.parents):
        panel._guard.saved = True  # saved inside the run folder: it is the person's now
    show_info(f"LabelFX: model saved to {dest}")
    return dest


def load_model(panel: Any, folder: str | None = None) -> None:
    """Use a saved model folder (or a bioimage.io package) for Predict."""
    from napari.utils.notifications import show_error, show_info

    from ..models.checkpoint import load_model as load_model_folder

    if folder is None:
        from ._export import model_source_dialog

        folder = model_source_dialog(panel)  # a model folder or a bioimage.io package
        if not folder:
            return
    try:
        from ._export import panel_model_source

        folder, foreign = panel_model_source(folder)
        if not foreign:
            load_model_folder(folder)
    except Exception as exc:  # GUI boundary: any failure (even out of memory) is a notification
        show_error(f"LabelFX: cannot load model from {folder}: {exc}")
        return
    panel.loaded_model_dir = Path(folder)
    panel.best_dir = panel.last_dir = None
    show_info(f"LabelFX: model loaded from {folder}")
    panel.status.setText(f"Model: {folder}")


def accept_result(panel: Any, layer: Any = None, kind: str = "strong") -> Any:
    """Copy a plugin result Labels layer (the selected one by default) into a new annotation layer."""
    from napari.utils.notifications import show_error

    layer = layer or panel.viewer.layers.selection.active
    if layer is None or layer.__class__.__name__ != "Labels" or not layer.metadata.get(_layers.RESULT_KEY):
        show_error("LabelFX: select a prediction or pseudo-label layer (a Labels layer made by LabelFX).")
        return None
    new = _layers.accept_result_layer(panel.viewer, layer, kind)
    panel._accepted.append(new.name)
    panel._refresh_annotation_list()
    return new


def undo_accept(panel: Any) -> None:
    """Remove the most recently accepted layer (the person's own layers are never touched)."""
    while panel._accepted:
        name = panel._accepted.pop()
        if name in panel.viewer.layers:
            panel.viewer.layers.remove(name)
            break
