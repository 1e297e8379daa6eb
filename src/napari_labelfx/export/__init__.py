"""Models that leave the plugin: ONNX, TorchScript and bioimage.io packages, and packages brought back in.

* :func:`export_model` (``labelfx export MODEL_DIR OUT --format onnx|torchscript|bioimageio``)
* :func:`~napari_labelfx.export.bioimageio_import.resolve_model` (``labelfx predict --model PACKAGE.zip``,
  the Train panel's *Load model*): a labelfx-made package becomes a labelfx model folder again; a
  foreign one predicts through bioimageio.core.

The libraries this needs (bioimageio.spec/core, onnx, onnxruntime) are the optional extra
``napari-labelfx[export]``; a missing one raises :class:`MissingExtraError` saying what to install.
Random-forest pixel classifiers cannot be exported (:class:`ExportError` says so).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from napari_labelfx.export._common import FORMATS, INSTALL_HINT, TOLERANCE, ExportError, MissingExtraError


def export_model(model_dir: str | os.PathLike, out: str | os.PathLike, fmt: str, **kwargs: Any) -> Path:
    """Export a model folder to ``fmt`` (``"onnx"``, ``"torchscript"`` or ``"bioimageio"``).

    ``kwargs`` go to the format's exporter: :func:`~napari_labelfx.export.formats.export_onnx`,
    :func:`~napari_labelfx.export.formats.export_torchscript` or
    :func:`~napari_labelfx.export.bioimageio_export.export_bioimageio` (which needs ``sample_image``).
    """
    from napari_labelfx.export._common import check_exportable

    check_exportable(model_dir, fmt)
    if fmt == "onnx":
        from napari_labelfx.export.formats import export_onnx

        return export_onnx(model_dir, out, **kwargs)
    if fmt == "torchscript":
        from napari_labelfx.export.formats import export_torchscript

        return export_torchscript(model_dir, out, **kwargs)
    from napari_labelfx.export.bioimageio_export import export_bioimageio

    return export_bioimageio(model_dir, out, **kwargs)


__all__ = ["FORMATS", "INSTALL_HINT", "TOLERANCE", "ExportError", "MissingExtraError", "export_model"]
