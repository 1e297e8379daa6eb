"""The Annotate panel: the image, each annotation layer's kind, the class table, tags, projects.

Everything here is a thin view over ``napari_labelfx.annotations``: the class table lives in the image
layer's metadata, each layer's kind in that layer's metadata, tags in the image layer's metadata.
Tags are handled in ``_annotate_tags``, project folders in ``_annotate_project``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..annotations.kinds import LabelKind
from . import _annotate_project, _annotate_tags, _layers

#: kinds a Labels/Shapes layer can have ("" = not an annotation layer)
LAYER_KINDS = ["", LabelKind.STRONG.value, LabelKind.SCRIBBLE.value, LabelKind.WEAK.value, LabelKind.NOISY.value]


class AnnotateWidget(QWidget):
    """Dock widget: choose the image, set layer kinds, edit classes, tag images, save/open projects."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._updating = False
        from ._layout import scroll_body

        # a scroll area keeps the groups from overlapping when the dock is short (a laptop screen)
        lay = scroll_body(self)

        row = QHBoxLayout()
        row.addWidget(QLabel("Image"))
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self._image_changed)
        row.addWidget(self.image_combo, 1)
        lay.addLayout(row)

        box = QGroupBox("Annotation layers")
        bl = QVBoxLayout(box)
        self.layer_table = QTableWidget(0, 3)
        self.layer_table.setHorizontalHeaderLabels(["layer", "type", "kind"])
        self.layer_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.layer_table.verticalHeader().setVisible(False)
        self.layer_table.setMinimumHeight(120)
        bl.addWidget(self.layer_table)
        row = QHBoxLayout()
        self.new_kind_combo = QComboBox()
        self.new_kind_combo.addItems(LAYER_KINDS[1:])
        self.new_layer_btn = QPushButton("New labels layer")
        self.new_layer_btn.clicked.connect(lambda: self.new_annotation_layer(self.new_kind_combo.currentText()))
        row.addWidget(self.new_kind_combo)
        row.addWidget(self.new_layer_btn)
        bl.addLayout(row)
        from ._layout import wrapping_label

        self.hint = wrapping_label()
        bl.addWidget(self.hint)
        lay.addWidget(box)

        box = QGroupBox("Classes")
        bl = QVBoxLayout(box)
        self.class_table_w = QTableWidget(0, 4)
        self.class_table_w.setHorizontalHeaderLabels(["name", "mask value", "scribble value", "colour"])
        self.class_table_w.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.class_table_w.verticalHeader().setVisible(False)
        self.class_table_w.setMinimumHeight(100)
        for col in (1, 2):
            self.class_table_w.horizontalHeader().setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.class_table_w.itemChanged.connect(self._class_item_changed)
        bl.addWidget(self.class_table_w)
        row = QHBoxLayout()
        self.class_name_edit = QLineEdit()
        self.class_name_edit.setPlaceholderText("new class name")
        add_btn = QPushButton("Add")
        add_btn.clicked.connect(lambda: self.add_class(self.class_name_edit.text()))
        rm_btn = QPushButton("Remove selected")
        rm_btn.clicked.connect(self.remove_selected_class)
        row.addWidget(self.class_name_edit, 1)
        row.addWidget(add_btn)
        row.addWidget(rm_btn)
        bl.addLayout(row)
        lay.addWidget(box)

        box = QGroupBox("Image-level tags")
        self.tags_layout = QVBoxLayout(box)
        self.tag_boxes: dict[str, QCheckBox] = {}
        self.tag_checks = QWidget()
        self.tag_checks_layout = QHBoxLayout(self.tag_checks)
        self.tag_checks_layout.setContentsMargins(0, 0, 0, 0)
        self.tags_layout.addWidget(self.tag_checks)
        row = QHBoxLayout()
        self.tag_image_btn = QPushButton("Tag whole image")
        self.tag_slice_btn = QPushButton("Tag current slice")
        self.tag_image_btn.clicked.connect(lambda: self.apply_tags(per_slice=False))
        self.tag_slice_btn.clicked.connect(lambda: self.apply_tags(per_slice=True))
        row.addWidget(self.tag_image_btn)
        row.addWidget(self.tag_slice_btn)
        self.tags_layout.addLayout(row)
        self.tags_label = QLabel()
        self.tags_label.setWordWrap(True)
        self.tags_layout.addWidget(self.tags_label)
        lay.addWidget(box)

        box = QGroupBox("Annotation project")
        bl = QHBoxLayout(box)
        self.project_edit = QLineEdit()
        self.project_edit.setPlaceholderText("folder")
        save_btn = QPushButton("Save")
        open_btn = QPushButton("Open")
        save_btn.clicked.connect(lambda: self.save_project())
        open_btn.clicked.connect(lambda: self.open_project())
        bl.addWidget(self.project_edit, 1)
        bl.addWidget(save_btn)
        bl.addWidget(open_btn)
        lay.addWidget(box)
        lay.addStretch(1)

        self.viewer.layers.events.inserted.connect(self.refresh)
        self.viewer.layers.events.removed.connect(self.refresh)
        self.viewer.dims.events.current_step.connect(self._show_tags)
        self.refresh()

    # -- helpers -------------------------------------------------------------------------------------
    @property
    def image_layer(self) -> Any:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _candidate_layers(self) -> list[Any]:
        out = []
        for layer in self.viewer.layers:
            if layer.metadata.get(_layers.RESULT_KEY):
                continue
            if layer.__class__.__name__ in ("Labels", "Shapes"):
                out.append(layer)
        return out

    def refresh(self, *_: Any) -> None:
        """Rebuild the lists from the viewer's layers."""
        self._updating = True
        try:
            current = self.image_combo.currentText()
            self.image_combo.blockSignals(True)
            self.image_combo.clear()
            for layer in self.viewer.layers:
                if layer.__class__.__name__ == "Image" and not layer.metadata.get(_layers.RESULT_KEY):
                    self.image_combo.addItem(layer.name)
            idx = self.image_combo.findText(current)
            self.image_combo.setCurrentIndex(idx if idx >= 0 else 0)
            self.image_combo.blockSignals(False)
            layers = self._candidate_layers()
            self._drop_kind_combos()
            self.layer_table.setRowCount(len(layers))
            for row, layer in enumerate(layers):
                name_item = QTableWidgetItem(layer.name)
                name_item.setFlags(name_item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.layer_table.setItem(row, 0, name_item)
                type_item = QTableWidgetItem(layer.__class__.__name__)
                type_item.setFlags(type_item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.layer_table.setItem(row, 1, type_item)
                combo = QComboBox()
                kinds = LAYER_KINDS if layer.__class__.__name__ == "Labels" else ["", LabelKind.WEAK.value]
                combo.addItems(kinds)
                combo.setCurrentText(layer.metadata.get(_layers.KIND_KEY, "") or "")
                combo.currentTextChanged.connect(lambda k, ly=layer: self.set_layer_kind(ly, k))
                self.layer_table.setCellWidget(row, 2, combo)
            self._fill_class_table()
        finally:
            self._updating = False
        self._update_hint()
        self._show_tags()

    def _drop_kind_combos(self) -> None:
        """Hide and drop the kind combos of the previous fill at once: a replaced cell widget is only
        deleted when the event loop next runs, and until then it is drawn at the table's top-left over
        the first layer's name (seen in screenshots taken while events were processed by hand)."""
        for row in range(self.layer_table.rowCount()):
            old = self.layer_table.cellWidget(row, 2)
            if old is not None:
                self.layer_table.removeCellWidget(row, 2)
                old.hide()
                old.deleteLater()

    def _image_changed(self, *_: Any) -> None:
        if not self._updating:
            self._fill_class_table()
            self._show_tags()

    def set_layer_kind(self, layer: Any, kind: str) -> None:
        """Mark a layer as an annotation of ``kind`` ("" removes the mark)."""
        if kind:
            layer.metadata[_layers.KIND_KEY] = LabelKind(kind).value
        else:
            layer.metadata.pop(_layers.KIND_KEY, None)
        # keep the table's kind column in step when the kind was set from code (scripts, other panels)
        for row in range(self.layer_table.rowCount()):
            item = self.layer_table.item(row, 0)
            combo = self.layer_table.cellWidget(row, 2)
            if item is not None and item.text() == layer.name and combo is not None and combo.currentText() != kind:
                combo.blockSignals(True)
                combo.setCurrentText(kind)
                combo.blockSignals(False)
        self._update_hint()

    def new_annotation_layer(self, kind: str) -> Any:
        """Add an empty Labels layer of ``kind`` matching the image's shape, scale and translation."""
        from napari.utils.notifications import show_error

        image = self.image_layer
        if image is None:
            show_error("LabelFX: add an image layer first.")
            return None
        shape = _layers.image_spatial_shape(image)
        nd = len(shape)
        extra: dict[str, Any] = {}
        if kind == LabelKind.SCRIBBLE.value:
            # the class table's colours, background (value 1) included, instead of napari's random ones
            table = _layers.get_class_table(image)
            extra["colormap"] = {**table.label_colors(scribble=True), None: "transparent"}
        layer = self.viewer.add_labels(
            np.zeros(shape, np.uint16), name=f"{kind} labels", scale=tuple(image.scale)[-nd:],
            translate=tuple(image.translate)[-nd:],
            metadata={_layers.KIND_KEY: LabelKind(kind).value, _layers.IMAGE_KEY: image.name}, **extra,
        )
        # scribbles paint class index + 1: start with the first foreground class selected
        layer.selected_label = 2 if kind == LabelKind.SCRIBBLE.value else 1
        self.refresh()
        return layer

    def _update_hint(self) -> None:
        table = self._table()
        if table is None:
            self.hint.setText("Add an image layer to start.")
            return
        fg = ", ".join(f"{e.name}={table.scribble_value(e.name)}" for e in table.foreground)
        self.hint.setText(
            "strong/noisy: 0 = background, mask values as in the class table, other ids = instances. "
            f"scribble: 0 = unknown, background=1, {fg}. weak: each id is one weak object."
        )

    # -- class table ---------------------------------------------------------------------------------
    def _table(self) -> Any:
        image = self.image_layer
        return _layers.get_class_table(image) if image is not None else None

    def _fill_class_table(self) -> None:
        table = self._table()
        self.class_table_w.blockSignals(True)
        self.class_table_w.setRowCount(0 if table is None else len(table.entries))
        if table is not None:
            for row, e in enumerate(table.entries):
                values = [e.name, str(e.value), str(table.scribble_value(e.name)), e.color]
                for col, text in enumerate(values):
                    item = QTableWidgetItem(text)
                    if col in (1, 2) or (row == 0 and col == 0):
                        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                    self.class_table_w.setItem(row, col, item)
        self.class_table_w.blockSignals(False)
        self._rebuild_tag_boxes(table)

    def _class_item_changed(self, item: QTableWidgetItem) -> None:
        from napari.utils.notifications import show_error

        table = self._table()
        if table is None:
            return
        entry = table.entries[item.row()]
        try:
            if item.column() == 0 and item.text() != entry.name:
                table.rename(entry.name, item.text())
            elif item.column() == 3 and item.text() != entry.color:
                table.recolor(entry.name, item.text())
        except ValueError as exc:
            show_error(f"LabelFX: {exc}")
        _layers.set_class_table(self.image_layer, table)
        self._fill_class_table()
        self._update_hint()

    def add_class(self, name: str) -> None:
        """Add a foreground class (value = next free label value)."""
        from napari.utils.notifications import show_error

        table = self._table()
        if table is None or not name.strip():
            return
        try:
            table.add(name.strip())
        except ValueError as exc:
            show_error(f"LabelFX: {exc}")
            return
        _layers.set_class_table(self.image_layer, table)
        self.class_name_edit.clear()
        self._fill_class_table()
        self._update_hint()

    def remove_selected_class(self) -> None:
        from napari.utils.notifications import show_error

        table = self._table()
        rows = sorted({i.row() for i in self.class_table_w.selectedItems()})
        if table is None or not rows:
            return
        for row in reversed(rows):
            try:
                table.remove(table.entries[row].name)
            except ValueError as exc:
                show_error(f"LabelFX: {exc}")
        _layers.set_class_table(self.image_layer, table)
        self._fill_class_table()
        self._update_hint()

    # -- tags (``_annotate_tags``) -------------------------------------------------------------------
    def _rebuild_tag_boxes(self, table: Any) -> None:
        _annotate_tags.rebuild_tag_boxes(self, table)

    def _tags(self) -> dict:
        return _annotate_tags.image_tags(self)

    def current_slice(self) -> int | None:
        """The slice of the chosen volume in view (None for a 2D image)."""
        return _annotate_tags.current_slice(self)

    def apply_tags(self, per_slice: bool = False) -> None:
        """Tag the whole image (or the current slice of a volume) with the ticked classes."""
        _annotate_tags.apply_tags(self, per_slice)

    def _show_tags(self, *_: Any) -> None:
        _annotate_tags.show_tags(self)

    # -- projects (``_annotate_project``) -----------------------------------------------------------
    def save_project(self, folder: str | None = None) -> str | None:
        """Save image, annotation layers, classes and tags as an annotation project folder."""
        return _annotate_project.save_project(self, folder)

    def open_project(self, folder: str | None = None) -> None:
        """Open an annotation project: adds its image and annotation layers to the viewer."""
        _annotate_project.open_project(self, folder)
