"""The Train panel's longer groups of settings and buttons, built onto the panel (its attributes keep
their names: ``panel.iters_spin``, ``panel.predict_btn``, ...)."""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QWidget,
)


def build_advanced_form(panel: Any) -> QWidget:
    """The folded "Advanced settings": iterations, time limit, optimiser, patch, device, runner, ..."""
    adv = QWidget()
    aform = QFormLayout(adv)
    panel.iters_spin = QSpinBox(maximum=1_000_000, minimum=1)
    panel.lr_spin = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=1.0, singleStep=1e-4)
    panel.lr_spin.setValue(1e-3)
    panel.batch_spin = QSpinBox(minimum=1, maximum=256)
    panel.patch_spin = QSpinBox(minimum=16, maximum=1024, singleStep=16)
    panel.spatial_combo = QComboBox()
    panel.spatial_combo.addItems(["2d", "3d"])
    panel.device_combo = QComboBox()
    panel.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
    panel.refresh_spin = QDoubleSpinBox(minimum=0.5, maximum=600.0, decimals=1)
    panel.refresh_spin.setValue(3.0)
    panel.refresh_spin.setSuffix(" s")
    aform.addRow("Iterations", panel.iters_spin)
    # train for a wall-clock time instead of a step count (the learning rate follows the time)
    panel.budget_spin = QSpinBox(minimum=0, maximum=7 * 24 * 3600, singleStep=30)
    panel.budget_spin.setSpecialValueText("none")
    panel.budget_spin.setSuffix(" s")
    panel.budget_spin.setToolTip("stop after this many seconds of training (none: after the iterations); "
                                "the iterations are then an upper limit")
    aform.addRow("Time limit", panel.budget_spin)
    aform.addRow("Learning rate", panel.lr_spin)
    aform.addRow("Batch size", panel.batch_spin)
    aform.addRow("Patch size", panel.patch_spin)
    aform.addRow("2D / 3D", panel.spatial_combo)
    aform.addRow("Device", panel.device_combo)
    aform.addRow("Refresh every", panel.refresh_spin)
    panel.runner_combo = QComboBox()
    panel.runner_combo.addItems(["thread", "process"])
    panel.runner_combo.setToolTip(
        "thread: fastest and smoothest viewer in our measurements (docs/benchmarks.md); "
        "process: a crash or out-of-memory kill of training cannot take the viewer down"
    )
    aform.addRow("Run training in", panel.runner_combo)
    panel.stain_aug_check = QCheckBox("stain augmentation (HED jitter, for H&E)")
    aform.addRow("", panel.stain_aug_check)
    panel.objects_check = QCheckBox("Predict also splits objects (one id per nucleus/cell)")
    panel.objects_check.setChecked(True)
    aform.addRow("", panel.objects_check)
    return adv


def add_model_buttons(panel: Any, lay: Any) -> None:
    """Predict / Save / Load / Export, Predict all images / folder, Accept / Undo accept, onto ``lay``."""
    row2 = QHBoxLayout()
    panel.predict_btn = QPushButton("Predict")
    panel.save_btn = QPushButton("Save model")
    panel.load_btn = QPushButton("Load model")
    panel.predict_btn.clicked.connect(panel.predict)
    panel.save_btn.clicked.connect(lambda: panel.save_model())
    panel.load_btn.clicked.connect(lambda: panel.load_model())
    panel.export_btn = QPushButton("Export model...")
    panel.export_btn.setToolTip("Save the model as a bioimage.io package (.zip), ONNX (.onnx) or TorchScript (.pt)")
    panel.export_btn.clicked.connect(lambda: panel.export_model())
    for b in (panel.predict_btn, panel.save_btn, panel.load_btn, panel.export_btn):
        row2.addWidget(b)
    lay.addLayout(row2)
    row_many = QHBoxLayout()
    panel.predict_all_btn = QPushButton("Predict all images")
    panel.predict_all_btn.setToolTip("Predict the image layers selected in the layer list (two or more), "
                                    "else every open image")
    panel.predict_all_btn.clicked.connect(lambda: panel.predict_all())
    panel.predict_folder_btn = QPushButton("Predict folder...")
    panel.predict_folder_btn.setToolTip("Predict every image file of a folder into another folder: "
                                       "<name>_labels.tif (and <name>_objects.tif) per image")
    panel.predict_folder_btn.clicked.connect(lambda: panel.predict_folder())
    row_many.addWidget(panel.predict_all_btn)
    row_many.addWidget(panel.predict_folder_btn)
    lay.addLayout(row_many)
    row3 = QHBoxLayout()
    panel.accept_btn = QPushButton("Accept selected result")
    panel.accept_btn.setToolTip(
        "Copy the selected prediction / pseudo-label layer into a new editable annotation layer "
        "(kind strong). Undo removes that layer again."
    )
    panel.undo_accept_btn = QPushButton("Undo accept")
    panel.accept_btn.clicked.connect(lambda: panel.accept_result())
    panel.undo_accept_btn.clicked.connect(panel.undo_accept)
    row3.addWidget(panel.accept_btn)
    row3.addWidget(panel.undo_accept_btn)
    lay.addLayout(row3)
