"""The Train panel's model import/export helpers: "Export model..." and bioimage.io packages in "Load model".

Kept out of ``train.py`` so the panel only wires a button; the work runs in a napari worker thread
because exporting (and the bioimage.io model test) takes seconds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: File-dialog filters of the export formats, in the order shown.
EXPORT_FILTERS = {
    "bioimageio": "bioimage.io package (*.zip)",
    "onnx": "ONNX (*.onnx)",
    "torchscript": "TorchScript (*.pt)",
}


def format_for(path: str, selected_filter: str = "") -> str:
    """The export format a chosen file name (or the dialog's filter) asks for."""
    suffix = Path(path).suffix.lower()
    by_suffix = {".zip": "bioimageio", ".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    for fmt, flt in EXPORT_FILTERS.items():
        if flt == selected_filter:
            return fmt
    return "bioimageio"


def model_source_dialog(parent: Any) -> str | None:
    """Ask for a model folder, or (when the folder dialog is cancelled) a bioimage.io package file."""
    from qtpy.QtWidgets import QFileDialog

    folder = QFileDialog.getExistingDirectory(parent, "Load model folder (cancel to pick a bioimage.io .zip)")
    if folder:
        return folder
    path, _ = QFileDialog.getOpenFileName(parent, "Load bioimage.io model package", "",
                                          "bioimage.io package (*.zip *.yaml)")
    return path or None


def export_model_from_panel(widget: Any, out: str | None = None, fmt: str | None = None) -> Any:
    """Export the panel's current model; the selected image supplies the bioimage.io test tensors.

    Returns the worker (or None when nothing can be exported); ``out``/``fmt`` skip the file dialog.
    """
    from napari.qt.threading import thread_worker
    from napari.utils.notifications import show_error, show_info

    from .. import export as ex
    from . import _layers

    model_dir = widget.model_dir
    if model_dir is None:
        show_error("LabelFX: no model yet: train or load one first.")
        return None
    if out is None:
        from qtpy.QtWidgets import QFileDialog

        out, chosen = QFileDialog.getSaveFileName(widget, "Export model", "", ";;".join(EXPORT_FILTERS.values()))
        if not out:
            return None
        fmt = fmt or format_for(out, chosen)
    fmt = fmt or format_for(out)
    kwargs: dict[str, Any] = {}
    if fmt == "bioimageio":
        image = widget.image_layer
        if image is None:
            show_error("LabelFX: select the training image: the bioimage.io package's test data is cut from it.")
            return None
        data = image.data[0] if image.multiscale else image.data
        kwargs = {"sample_image": np.asarray(data), "axes": _layers.image_axes(image)}
        if not out.endswith(".zip"):
            out += ".zip"

    @thread_worker
    def _run() -> Path:
        return ex.export_model(model_dir, out, fmt, **kwargs)

    def _done(path: Path) -> None:
        widget.status.setText(f"Model exported ({fmt}): {path}")
        show_info(f"LabelFX: model exported to {path}")

    worker = _run()
    worker.returned.connect(_done)
    worker.errored.connect(lambda e: (show_error(f"LabelFX export failed: {e}"),
                                      widget.status.setText(f"Export failed: {e}")))
    widget.status.setText(f"Exporting model as {fmt} ...")
    worker.start()
    return worker


def panel_model_source(source: str) -> tuple[str, bool]:
    """(path Predict uses, foreign?) for a model folder or a bioimage.io package chosen in "Load model".

    A labelfx-made package is imported as a model folder (so it can be fine-tuned); a foreign package
    stays a package and predicts through bioimageio.core.
    """
    from ..export.bioimageio_import import is_bioimageio_package, labelfx_section, resolve_model

    if not is_bioimageio_package(source):
        return source, False
    if labelfx_section(source) is None:
        return source, True
    return str(resolve_model(source)), False
