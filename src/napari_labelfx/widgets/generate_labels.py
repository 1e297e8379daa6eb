"""The "Generate initial labels" panel: the classical noisy-label generator as a Labels layer of kind noisy.

A thin view over :mod:`napari_labelfx.tools.classical`: pick the image, the image type and the
typical object diameter (the other parameters scale with it), adjust the main knobs, and generate.
The result is a new Labels layer ``"<image> noisy labels"`` marked ``noisy`` (its parameters are kept
in its metadata); it is never written over an existing layer. "Mark as noisy" marks an existing
Labels layer (e.g. rough labels loaded from disk) as noisy, so the ``adele``/``sissi`` methods treat it
as labels to correct.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..annotations.kinds import LabelKind
from ..annotations.layers import set_kind
from ..tools.classical import (
    MODALITY_DEFAULTS,
    ClassicalInputError,
    ClassicalParams,
    classical_instances,
    estimate_diameter,
)

PARAMS_KEY = "labelfx_classical_params"
THRESHOLDS = ["otsu+adaptive", "otsu", "adaptive", "otsu|adaptive"]
#: Object diameter (px) used when 'auto' finds nothing to measure.
DEFAULT_DIAMETER = 20.0


def generate_noisy_labels(data: np.ndarray, rgb: bool, params: ClassicalParams, name: str = "image") -> np.ndarray:
    """Instance labels of a 2D image (grey or RGB), or of each Z slice of a grey volume.

    Raises
    ------
    ClassicalInputError
        An image the classical generator cannot handle (named in the message).
    """
    data = np.asarray(data)
    spatial = data.ndim - (1 if rgb else 0)
    if spatial == 2:
        return classical_instances(data, params).astype(np.int32)
    if spatial == 3 and not rgb:
        # slice by slice: ids are offset so that objects of different slices never share an id
        out = np.zeros(data.shape, np.int32)
        offset = 0
        for z in range(data.shape[0]):
            lab = classical_instances(data[z], params).astype(np.int32)
            out[z] = np.where(lab > 0, lab + offset, 0)
            offset += int(lab.max())
        return out
    raise ClassicalInputError(f"image layer {name!r}: the classical generator needs a 2D grey/RGB image or a "
                              f"grey volume, got shape {data.shape}")


class GenerateLabelsWidget(QWidget):
    """Dock widget: classical initial (noisy) labels for the selected image."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        from ._layout import scroll_body, wrapping_label

        layout = scroll_body(self)  # scrolls when docked with other panels on a short screen
        form = QFormLayout()
        self.image_combo = QComboBox()
        form.addRow("Image", self.image_combo)
        self.modality = QComboBox()
        self.modality.addItems(sorted(MODALITY_DEFAULTS))
        self.modality.setCurrentText("fluorescence")
        form.addRow("Image type", self.modality)
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(0.0, 1000.0)
        # 0 = estimate from the image: a fixed default (20 px) silently fragments larger nuclei
        self.diameter.setSpecialValueText("auto (from the image)")
        self.diameter.setValue(0.0)
        self.diameter.setToolTip("typical object diameter in pixels: seeds, areas, thresholds scale with it; "
                                 "'auto' measures it on the image at Generate")
        form.addRow("Object diameter (px)", self.diameter)
        self.threshold = QComboBox()
        self.threshold.addItems(["(image type default)", *THRESHOLDS])
        form.addRow("Threshold", self.threshold)
        self.gamma = QDoubleSpinBox()
        self.gamma.setRange(0.1, 5.0)
        self.gamma.setSingleStep(0.1)
        self.gamma.setValue(1.0)
        form.addRow("Gamma", self.gamma)
        self.min_area = QSpinBox()
        self.min_area.setRange(0, 10_000_000)
        self.min_area.setSpecialValueText("(from diameter)")
        form.addRow("Min area (px)", self.min_area)
        self.hough = QCheckBox("add round cells (Hough circles)")
        form.addRow("", self.hough)
        layout.addLayout(form)
        self.generate_btn = QPushButton("Generate initial labels")
        self.generate_btn.clicked.connect(self.generate)
        layout.addWidget(self.generate_btn)
        self.mark_btn = QPushButton("Mark selected Labels layer as noisy")
        self.mark_btn.clicked.connect(self.mark_selected_noisy)
        layout.addWidget(self.mark_btn)
        self.status = wrapping_label("")
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    def _refresh(self, *_: Any) -> None:
        current = self.image_combo.currentText()
        self.image_combo.clear()
        names = [la.name for la in self.viewer.layers if la.__class__.__name__ == "Image"]
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    def params(self, diameter: float | None = None) -> ClassicalParams:
        """The parameters the panel's settings stand for (``diameter`` replaces an 'auto' setting)."""
        overrides: dict[str, Any] = {"gamma": float(self.gamma.value()), "hough": self.hough.isChecked()}
        if self.threshold.currentIndex() > 0:
            overrides["threshold"] = self.threshold.currentText()
        if self.min_area.value() > 0:
            overrides["min_area"] = int(self.min_area.value())
        d = float(diameter if diameter is not None else self.diameter.value() or DEFAULT_DIAMETER)
        p = ClassicalParams.for_diameter(d, modality=self.modality.currentText(),
                                         **overrides)
        if p.max_area is not None and p.max_area < p.min_area:
            p.max_area = None
        p.validate()
        return p

    def generate(self) -> Any:
        """Run the generator on the chosen image; returns the new Labels layer (None on error)."""
        from napari.utils.notifications import show_error

        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            self.status.setText("Choose an image layer first.")
            return None
        image = self.viewer.layers[name]
        try:
            diameter, note = self.diameter_for(image)
            params = self.params(diameter)
            labels = generate_noisy_labels(np.asarray(image.data), bool(image.rgb), params, name)
        except ClassicalInputError as exc:
            self.status.setText(str(exc))
            show_error(f"LabelFX: {exc}")
            return None
        nd = labels.ndim
        out_name = f"{name} noisy labels"
        i = 2
        while out_name in self.viewer.layers:  # never overwrite a layer a person may have edited
            out_name = f"{name} noisy labels {i}"
            i += 1
        layer = self.viewer.add_labels(labels, name=out_name, scale=tuple(image.scale)[-nd:],
                                       translate=tuple(image.translate)[-nd:],
                                       metadata={PARAMS_KEY: params.to_dict()})
        set_kind(layer, LabelKind.NOISY)
        self.status.setText(f"{int(labels.max())} objects in {out_name!r} (kind: noisy). {note}".strip())
        return layer

    def diameter_for(self, image: Any) -> tuple[float, str]:
        """The object diameter to use on ``image`` and a note for the status line.

        With 'auto' the diameter is measured on the image (the middle slice of a volume); when nothing
        stands out the default is used and a warning says so, since a wrong size fragments or merges
        objects without any error.
        """
        from napari.utils.notifications import show_warning

        set_value = float(self.diameter.value())
        if set_value > 0:
            return set_value, ""
        data = np.asarray(image.data[0] if getattr(image, "multiscale", False) else image.data)
        spatial = data.ndim - (1 if image.rgb else 0)
        plane = data[data.shape[0] // 2] if spatial == 3 else data
        estimate = estimate_diameter(plane, self.modality.currentText())
        if estimate is None:
            msg = (f"could not measure the object size on {image.name!r}; used {DEFAULT_DIAMETER:.0f} px. "
                   "Set 'Object diameter' if objects come out fragmented or merged.")
            show_warning(f"LabelFX: {msg}")
            return DEFAULT_DIAMETER, msg
        return estimate, f"Object diameter measured on the image: {estimate:.0f} px."

    def mark_selected_noisy(self) -> Any:
        """Mark the selected Labels layer as noisy (returns it, None when no Labels layer is selected)."""
        layer = self.viewer.layers.selection.active
        if layer is None or layer.__class__.__name__ != "Labels":
            self.status.setText("Select a Labels layer first.")
            return None
        set_kind(layer, LabelKind.NOISY)
        self.status.setText(f"{layer.name!r} is now a noisy label layer.")
        return layer
