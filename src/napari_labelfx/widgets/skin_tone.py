"""Skin-tone panel: ITA and Fitzpatrick type of an RGB layer, the eight patches, and a folder batch.

Thin Qt layer over :mod:`napari_labelfx.tools.skin_tone`. The patches become the plugin-owned
Shapes layer ``"<image> skin patches"`` (chosen, lightest patch in red and thicker); the folder batch
writes a CSV and draws the histogram of types in the panel (matplotlib canvas).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QCheckBox, QComboBox, QFileDialog, QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ._worker import WorkerPanelMixin
from .stain import layer_rgb, rgb_layers


def patch_rectangles(result: Any) -> list[np.ndarray]:
    """The result's patch boxes as napari rectangles (4 corner vertices in (row, col) order)."""
    rects = []
    for y0, x0, y1, x1 in result.patch_boxes:
        rects.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=np.float64))
    return rects


class HistogramCanvas(FigureCanvasQTAgg):
    """Bar chart of Fitzpatrick types inside the panel."""

    def __init__(self) -> None:
        self.figure = Figure(figsize=(3.2, 2.2), dpi=90, tight_layout=True)
        super().__init__(self.figure)
        self.ax = self.figure.add_subplot(111)
        self.counts = np.zeros(6, np.int64)
        self.setMinimumHeight(170)

    def show_types(self, types: list[Any], title: str) -> None:
        from ..tools.skin_tone import draw_fitzpatrick_histogram

        self.ax.clear()
        self.counts = draw_fitzpatrick_histogram(self.ax, types, title)
        self.draw_idle()


class SkinToneWidget(WorkerPanelMixin, QWidget):
    """Panel: pick an RGB layer, estimate ITA / Fitzpatrick type; batch a folder to CSV + histogram."""

    _worker_label = "LabelFX skin tone"

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._worker: Any = None
        self.last_result: Any = None
        self.last_rows: list[dict[str, Any]] = []
        self.image_combo = QComboBox()
        self.hair = QCheckBox("remove hair first")
        self.hair.setChecked(True)
        self.estimate_btn = QPushButton("Estimate skin tone")
        self.result_label = QLabel("ITA: -   Fitzpatrick type: -")
        self.batch_btn = QPushButton("Folder batch... (CSV + histogram)")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.histogram = HistogramCanvas()
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.hair)
        lay.addWidget(self.estimate_btn)
        lay.addWidget(self.result_label)
        lay.addWidget(self.batch_btn)
        lay.addWidget(self.histogram)
        lay.addWidget(self.status)
        self.estimate_btn.clicked.connect(self.estimate)
        self.batch_btn.clicked.connect(self._ask_folder)
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        """Refill the image menu, keeping the current choice when it still exists."""
        current = self.image_combo.currentText()
        names = [ly.name for ly in rgb_layers(self.viewer)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)

    # -- worker plumbing -----------------------------------------------------------------------------
    def _busy_buttons(self) -> list[Any]:
        return [self.estimate_btn, self.batch_btn]

    # -- single image --------------------------------------------------------------------------------
    def estimate(self) -> None:
        """Estimate the chosen layer's skin tone in a worker and show patches, ITA and type."""
        from ..tools.skin_tone import SkinToneInputError, estimate_skin_tone

        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            self._failed(SkinToneInputError("choose an RGB image layer (open a dermoscopy image first)"))
            return
        layer = self.viewer.layers[name]
        rgb = np.asarray(layer_rgb(layer))
        hair = self.hair.isChecked()

        def work() -> Any:
            return estimate_skin_tone(rgb, hair_removal=hair, name=name)

        self._run(work, lambda res: self._show_result(layer, res), "estimating skin tone")

    def _show_result(self, layer: Any, res: Any) -> None:
        self.last_result = res
        self.result_label.setText(f"ITA: {res.ita:.1f} deg   Fitzpatrick type: {res.fitzpatrick_roman}")
        n = len(res.patch_boxes)
        edge = ["red" if i == res.chosen_index else "yellow" for i in range(n)]
        width = [4.0 if i == res.chosen_index else 1.5 for i in range(n)]
        features = {"ita": np.round(res.patch_itas, 2), "chosen": [i == res.chosen_index for i in range(n)]}
        key = f"{layer.name} skin patches"
        if key in self.viewer.layers:
            self.viewer.layers.remove(key)  # plugin-owned: replaced on every run
        self.viewer.add_shapes(
            patch_rectangles(res), shape_type="rectangle", name=key, edge_color=edge, edge_width=width,
            face_color="transparent", features=features, scale=layer.scale[-2:], translate=layer.translate[-2:],
        )
        self.status.setText(f"lightest patch: #{res.chosen_index} (red)")

    # -- folder batch --------------------------------------------------------------------------------
    def _ask_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of RGB images")
        if not folder:
            return
        out, _ = QFileDialog.getSaveFileName(self, "Write the table", str(Path(folder) / "skin_tone.csv"), "CSV (*.csv)")
        if out:
            self.run_folder(folder, out)

    def run_folder(self, folder: str | Path, out_csv: str | Path, hist_png: str | Path | None = None) -> None:
        """Estimate every image of ``folder`` in a worker, write the CSV (and PNG), draw the histogram."""
        from ..tools.skin_tone import estimate_folder, plot_fitzpatrick_histogram, write_csv

        hair = self.hair.isChecked()
        title = "Skin types"  # short: the panel is narrow; the folder shows in the status line

        def work() -> list[dict[str, Any]]:
            rows = estimate_folder(folder, on_error="record", hair_removal=hair)
            write_csv(rows, out_csv)
            if hist_png is not None:
                plot_fitzpatrick_histogram([r["fitzpatrick"] for r in rows], hist_png, title)
            return rows

        def done(rows: list[dict[str, Any]]) -> None:
            self.last_rows = rows
            self.histogram.show_types([r["fitzpatrick"] for r in rows], title)
            failed = sum(1 for r in rows if r.get("error"))
            self.status.setText(f"{len(rows) - failed} image(s) measured, {failed} failed -> {out_csv}")

        self._run(work, done, f"measuring images in {folder}")
