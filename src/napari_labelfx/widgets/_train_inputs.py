"""The Train panel's inputs: the image list and the tickable list of its annotation layers.

Functions take the panel (its attributes keep their names: ``panel.image_combo``, ``panel._unticked``, ...).
"""
from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidgetItem

from . import _layers


def refresh_layer_lists(panel: Any) -> None:
    """Refill the image list (keeping the chosen image) and its annotation list."""
    current = panel.image_combo.currentText()
    panel.image_combo.blockSignals(True)
    panel.image_combo.clear()
    for layer in panel.viewer.layers:
        if layer.__class__.__name__ == "Image" and not layer.metadata.get(_layers.RESULT_KEY):
            panel.image_combo.addItem(layer.name)
    idx = panel.image_combo.findText(current)
    if idx >= 0:
        panel.image_combo.setCurrentIndex(idx)
    panel.image_combo.blockSignals(False)
    refresh_annotation_list(panel)


def refresh_annotation_list(panel: Any) -> None:
    """List the chosen image's annotation layers, ticked unless the person unticked them."""
    # keep what the person unticked when layers come and go (e.g. result layers being added)
    for i in range(panel.annotation_list.count()):
        it = panel.annotation_list.item(i)
        name = it.data(Qt.ItemDataRole.UserRole)
        if it.checkState() == Qt.CheckState.Unchecked:
            panel._unticked.add(name)
        else:
            panel._unticked.discard(name)
    panel.annotation_list.clear()
    image = panel.image_layer
    if image is None:
        return
    for layer in _layers.annotation_layers_for(panel.viewer, image):
        item = QListWidgetItem(f"{layer.name}  [{layer.metadata.get(_layers.KIND_KEY)}]")
        item.setData(Qt.ItemDataRole.UserRole, layer.name)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        unticked = layer.name in panel._unticked
        item.setCheckState(Qt.CheckState.Unchecked if unticked else Qt.CheckState.Checked)
        panel.annotation_list.addItem(item)


def selected_annotation_layers(panel: Any) -> list[Any]:
    """The ticked annotation layers that are still in the viewer."""
    out = []
    for i in range(panel.annotation_list.count()):
        it = panel.annotation_list.item(i)
        name = it.data(Qt.ItemDataRole.UserRole)
        if it.checkState() == Qt.CheckState.Checked and name in panel.viewer.layers:
            out.append(panel.viewer.layers[name])
    return out
