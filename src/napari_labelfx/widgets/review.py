"""The review panel: step through the label corrections proposed by ``adele``/``sissi`` and decide.

A thin view over :mod:`napari_labelfx.annotations.review`. Choose the corrected labels (the Train panel's
``"<image> corrected labels"`` layer) and the person's noisy layer, then "Compare": the list shows
each change (added / removed / reshaped object); selecting one centres the view on it. Accepted
changes are written into a separate training-labels layer (a copy of the noisy layer, marked with
the noisy layer's kind; the person's layer is never modified); "Undo" reverts the last decision.
Rejected changes are stored in that layer's metadata (``labelfx_review``) so the next training run
keeps them out of the correction (see :func:`napari_labelfx.annotations.review.protected_mask`). "Show boxes"
adds the changes as rectangles in a Shapes layer, coloured by kind.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..annotations.kinds import LabelKind
from ..annotations.layers import KIND_KEY, get_kind, set_kind
from ..annotations.review import REVIEW_KEY, ReviewSession

KIND_COLOURS = {"added": "lime", "removed": "red", "reshaped": "yellow"}
SOURCE_KEY = "labelfx_review_source"  # on the training-labels layer: the noisy layer it copies


class ReviewWidget(QWidget):
    """Dock widget: list, visit, accept or reject the proposed label corrections."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: ReviewSession | None = None
        self.training_layer: Any = None
        self._rejected_before: list[dict] = []
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.corrected_combo = QComboBox()
        self.noisy_combo = QComboBox()
        form.addRow("Corrected labels", self.corrected_combo)
        form.addRow("Noisy (your) labels", self.noisy_combo)
        layout.addLayout(form)
        self.compare_btn = QPushButton("Compare")
        self.compare_btn.clicked.connect(self.compare)
        layout.addWidget(self.compare_btn)
        self.list = QListWidget()
        self.list.currentRowChanged.connect(self._on_row)
        layout.addWidget(self.list)
        row = QHBoxLayout()
        self.prev_btn, self.next_btn = QPushButton("< Previous"), QPushButton("Next >")
        self.prev_btn.clicked.connect(lambda: self.step(-1))
        self.next_btn.clicked.connect(lambda: self.step(1))
        row.addWidget(self.prev_btn)
        row.addWidget(self.next_btn)
        layout.addLayout(row)
        row = QHBoxLayout()
        self.accept_btn, self.reject_btn = QPushButton("Accept"), QPushButton("Reject")
        self.accept_all_btn, self.undo_btn = QPushButton("Accept all"), QPushButton("Undo")
        self.accept_btn.clicked.connect(self.accept_current)
        self.reject_btn.clicked.connect(self.reject_current)
        self.accept_all_btn.clicked.connect(self.accept_all)
        self.undo_btn.clicked.connect(self.undo)
        for b in (self.accept_btn, self.reject_btn, self.accept_all_btn, self.undo_btn):
            row.addWidget(b)
        layout.addLayout(row)
        self.boxes_btn = QPushButton("Show boxes")
        self.boxes_btn.clicked.connect(self.show_boxes)
        layout.addWidget(self.boxes_btn)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    # -- layer choices -------------------------------------------------------------------------------
    def _refresh(self, *_: Any) -> None:
        labels = [la for la in self.viewer.layers if la.__class__.__name__ == "Labels"]
        corrected = [la.name for la in labels if "corrected" in la.name]
        people = [la.name for la in labels if la.metadata.get(KIND_KEY) and not la.metadata.get(SOURCE_KEY)
                  and "corrected" not in la.name]
        for combo, names in ((self.corrected_combo, corrected), (self.noisy_combo, people)):
            current = combo.currentText()
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)

    def _training_layer_for(self, noisy: Any) -> Any:
        """The training-labels copy of ``noisy`` (created once, then reused across rounds)."""
        for la in self.viewer.layers:
            if la.__class__.__name__ == "Labels" and la.metadata.get(SOURCE_KEY) == noisy.name:
                return la
        layer = self.viewer.add_labels(np.asarray(noisy.data).copy(), name=f"{noisy.name} training labels",
                                       scale=tuple(noisy.scale), translate=tuple(noisy.translate),
                                       metadata={SOURCE_KEY: noisy.name})
        set_kind(layer, get_kind(noisy) or LabelKind.NOISY)
        noisy.visible = False  # train on the copy; the person's layer stays as it was
        return layer

    # -- actions -------------------------------------------------------------------------------------
    def compare(self) -> int:
        """Diff the chosen layers; returns the number of changes."""
        cname, nname = self.corrected_combo.currentText(), self.noisy_combo.currentText()
        if not cname or not nname:
            self.status.setText("Choose the corrected labels and your noisy labels.")
            return 0
        corrected, noisy = self.viewer.layers[cname], self.viewer.layers[nname]
        if np.shape(corrected.data) != np.shape(noisy.data):
            self.status.setText(f"{cname!r} {np.shape(corrected.data)} and {nname!r} {np.shape(noisy.data)} "
                                "differ in shape.")
            return 0
        self.training_layer = self._training_layer_for(noisy)
        self._rejected_before = list((self.training_layer.metadata.get(REVIEW_KEY) or {}).get("rejected", []))
        training = np.asarray(self.training_layer.data)
        self.session = ReviewSession(np.asarray(noisy.data), np.asarray(corrected.data), training)
        self.training_layer.data = training  # the session writes into this very array
        self._fill_list()
        if self.session.changes:
            self.list.setCurrentRow(0)
        return len(self.session.changes)

    def _label(self, i: int) -> str:
        c = self.session.changes[i]
        mark = {"pending": " ", "accepted": "✓", "rejected": "✗"}[c.status]
        return f"{mark} {i + 1}. {c.kind} (label {c.label}, {c.size} px)"

    def _fill_list(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for i in range(len(self.session.changes)):
            self.list.addItem(self._label(i))
        self.list.blockSignals(False)
        self._status()

    def _status(self) -> None:
        n = self.session.counts() if self.session else {"pending": 0, "accepted": 0, "rejected": 0}
        self.status.setText(f"{n['pending']} pending, {n['accepted']} accepted, {n['rejected']} rejected")

    def _on_row(self, row: int) -> None:
        if self.session is None or not 0 <= row < len(self.session.changes):
            return
        self.centre_on(row)

    def centre_on(self, index: int) -> None:
        """Centre the view on change ``index`` (world coordinates of the training layer)."""
        ch = self.session.changes[index]
        layer = self.training_layer
        world = np.asarray(layer.data_to_world(ch.centre))
        nd = len(ch.centre)
        if self.viewer.dims.ndisplay == 2 and nd > 2:
            self.viewer.dims.set_point(range(self.viewer.dims.ndim - nd, self.viewer.dims.ndim - 2), world[:-2])
        from ._layers import viewer_camera

        viewer_camera(self.viewer).center = tuple(world[-self.viewer.dims.ndisplay:])

    def step(self, delta: int) -> None:
        """Go to the next (``delta=1``) or previous pending-or-not change."""
        if self.session is None or not self.session.changes:
            return
        row = (self.list.currentRow() + delta) % len(self.session.changes)
        self.list.setCurrentRow(row)

    def _after_decision(self, index: int | None) -> None:
        self.training_layer.refresh()
        if index is not None:
            self.list.item(index).setText(self._label(index))
        self.training_layer.metadata[REVIEW_KEY] = {
            "rejected": self._rejected_before + self.session.rejection_record()["rejected"]}
        self._status()

    def accept_current(self) -> None:
        """Accept the selected change into the training labels."""
        i = self.list.currentRow()
        if self.session is None or i < 0:
            return
        self.session.accept(i)
        self._after_decision(i)
        self.step(1)

    def reject_current(self) -> None:
        """Reject the selected change (remembered for later rounds)."""
        i = self.list.currentRow()
        if self.session is None or i < 0:
            return
        self.session.reject(i)
        self._after_decision(i)
        self.step(1)

    def accept_all(self) -> None:
        """Accept every pending change."""
        if self.session is None:
            return
        self.session.accept_all()
        for i in range(len(self.session.changes)):
            self.list.item(i).setText(self._label(i))
        self._after_decision(None)

    def undo(self) -> None:
        """Undo the last accept/reject."""
        if self.session is None:
            return
        i = self.session.undo()
        self._after_decision(i)
        if i is not None:
            self.list.setCurrentRow(i)

    def show_boxes(self) -> Any:
        """The changes' bounding boxes as a Shapes layer (2D images; the last two axes of volumes)."""
        if self.session is None or not self.session.changes:
            return None
        rects, colours = [], []
        for c in self.session.changes:
            (y0, y1), (x0, x1) = c.bbox[-2], c.bbox[-1]
            lead = [float(a) for a, _ in c.bbox[:-2]]  # a volume's box is drawn on its first slice
            rects.append(np.array([[*lead, y0, x0], [*lead, y0, x1], [*lead, y1, x1], [*lead, y1, x0]], float))
            colours.append(KIND_COLOURS[c.kind])
        name = f"{self.training_layer.name} changes"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_shapes(rects, shape_type="rectangle", edge_color=colours, face_color="transparent",
                                       edge_width=1, name=name, scale=tuple(self.training_layer.scale),
                                       translate=tuple(self.training_layer.translate))
        return layer
