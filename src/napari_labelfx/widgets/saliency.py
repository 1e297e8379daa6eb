"""Saliency panel: Grad-CAM maps and thresholded pseudo-masks of an image from a classifier model.

Thin Qt layer over :func:`napari_labelfx.tools.gradcam.saliency_from_model`. The maps appear as
image layers ``"<image> saliency <class>"`` and the pseudo-mask as the Labels layer
``"<image> pseudo-mask"`` (plugin-owned result layers): the person inspects them, and the Train
panel's "Accept selected result" turns the pseudo-mask into an editable annotation layer to repaint
before training on it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.results import ResultLayer
from . import _layers


def layer_image_cyx(layer: Any) -> np.ndarray:
    """A 2D Image layer's data as (C, Y, X) (RGB last axis moved first; grey gets one channel)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    arr = np.asarray(data)
    if getattr(layer, "rgb", False):
        arr = np.moveaxis(arr, -1, 0)
        if arr.ndim != 3:
            raise ValueError(f"layer {layer.name!r}: saliency works on 2D images, got RGB data of shape {data.shape}")
        return arr
    if arr.ndim != 2:
        raise ValueError(f"layer {layer.name!r}: saliency works on 2D images, got shape {arr.shape}")
    return arr[None]


class SaliencyWidget(QWidget):
    """Compute Grad-CAM saliency and pseudo-masks of the chosen image with a trained model."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.image_combo = QComboBox()
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("model folder (trained with method chexseg)")
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 0.99)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(0.0)
        self.threshold.setSpecialValueText("Otsu")  # 0 means: Otsu's threshold per map
        self.run_btn = QPushButton("Compute saliency")
        self.run_btn.clicked.connect(lambda: self.compute())
        self.status = QLabel("")
        self.status.setWordWrap(True)

        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit)
        model_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Model", model_row)
        form.addRow("Threshold", self.threshold)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_btn)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    def _refresh(self, *_: Any) -> None:
        current = self.image_combo.currentText()
        names = [layer.name for layer in self.viewer.layers
                 if layer.__class__.__name__ == "Image" and not layer.metadata.get(_layers.RESULT_KEY)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.model_edit.setText(folder)

    def compute(self) -> list[Any]:
        """Run Grad-CAM on the chosen image; returns the layers shown (empty after an error)."""
        from ..tools.gradcam import saliency_from_model

        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            self.status.setText("Choose an image layer.")
            return []
        if not self.model_edit.text().strip():
            self.status.setText("Choose a model folder (a model trained with method chexseg).")
            return []
        layer = self.viewer.layers[name]
        thr = float(self.threshold.value())
        try:
            res = saliency_from_model(self.model_edit.text().strip(), layer_image_cyx(layer),
                                      threshold=thr if thr > 0 else None)
        except (ValueError, OSError) as exc:
            self.status.setText(f"Saliency failed: {exc}")
            return []
        layers = [ResultLayer(name=f"saliency {cname}", kind="image", data=m, colormap="inferno", opacity=0.5,
                              additive=True) for cname, m in zip(res["class_names"], res["maps"])]
        if res["multilabel"]:
            layers += [ResultLayer(name=f"pseudo-mask {cname}", kind="labels", data=ch.astype(np.int32), opacity=0.5)
                       for cname, ch in zip(res["class_names"], res["mask"])]
        else:
            layers.append(ResultLayer(name="pseudo-mask", kind="labels", data=res["mask"].astype(np.int32), opacity=0.5))
        shown = _layers.apply_result(self.viewer, layer, layers)
        probs = ", ".join(f"{c}: {p:.2f}" for c, p in zip(res["class_names"], res["probs"]))
        self.status.setText(f"Image-level probabilities: {probs}. Accept the pseudo-mask in the Train panel to repaint it.")
        return shown
