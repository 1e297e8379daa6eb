"""ONNX and TorchScript export of a labelfx model folder, checked against PyTorch.

Both files take a normalised float32 batch ``(B, C, [Z,] Y, X)`` whose spatial sizes are multiples of
the network's divisor ``2**depth`` (batch and spatial sizes are free: nothing is baked into the graph)
and return class probabilities of the same spatial size. The percentile normalisation is not part of
the graph; it is written into the files' metadata (ONNX ``metadata_props``, TorchScript extra file
``labelfx.json``) and into bioimage.io packages as preprocessing.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_labelfx.export._common import (
    TOLERANCE,
    ExportError,
    example_input,
    load_exportable,
    metadata,
    reference_probabilities,
    require,
    standalone,
)
from napari_labelfx.io.atomic import atomic_path

#: ONNX opset: supported by every onnxruntime of the last years, and has everything the UNet uses.
OPSET = 17


def _dynamic_axes(spatial_dims: int) -> dict[str, dict[int, str]]:
    names = {0: "batch", **{2 + i: a for i, a in enumerate(("z", "y", "x")[3 - spatial_dims:])}}
    return {"input": names, "output": names}


def write_onnx(net: nn.Module, example: torch.Tensor, out: str | os.PathLike,
               meta: dict[str, str] | None = None) -> Path:
    """Export an exact-size network to ONNX with dynamic batch and spatial axes."""
    require("onnx", "ONNX export")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spatial_dims = example.ndim - 2
    with atomic_path(out) as tmp, warnings.catch_warnings():
        # the TorchScript-based exporter is deprecated but needs no extra package and handles the
        # UNet's size-free graph; the torch.export-based one needs onnxscript
        warnings.simplefilter("ignore")
        kwargs = dict(input_names=["input"], output_names=["output"], dynamic_axes=_dynamic_axes(spatial_dims),
                      opset_version=OPSET, do_constant_folding=True)
        try:
            torch.onnx.export(net, (example,), str(tmp), dynamo=False, **kwargs)
        except TypeError:  # a torch without the legacy exporter
            require("onnxscript", "ONNX export with this torch version")
            torch.onnx.export(net, (example,), str(tmp), dynamo=True, **kwargs)
        if meta:
            import onnx

            proto = onnx.load(str(tmp))
            for key, value in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(proto, str(tmp))
    return out


def write_torchscript(net: nn.Module, example: torch.Tensor, out: str | os.PathLike,
                      meta: dict[str, str] | None = None) -> Path:
    """Trace an exact-size network to a TorchScript archive (sizes stay dynamic, see the module doc)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints: none reaches the graph
        traced = torch.jit.trace(net, (example,), check_trace=False)
    with atomic_path(out) as tmp:
        extra = {"labelfx.json": json.dumps(meta or {})}
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return out


def onnx_outputs(path: str | os.PathLike, x: np.ndarray) -> np.ndarray:
    """Run an exported ONNX file on ``x`` with ONNX Runtime (CPU)."""
    ort = require("onnxruntime", "Running ONNX models")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.asarray(x, np.float32)})[0]


def torchscript_outputs(path: str | os.PathLike, x: np.ndarray) -> np.ndarray:
    """Run an exported TorchScript file on ``x`` (CPU)."""
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def check_against_pytorch(reference: np.ndarray, other: np.ndarray, what: str) -> float:
    """Max absolute difference; raises :class:`ExportError` above :data:`TOLERANCE`."""
    if reference.shape != other.shape:
        raise ExportError(f"{what}: output shape {other.shape} differs from PyTorch's {reference.shape}")
    diff = float(np.max(np.abs(reference - other)))
    if not diff <= TOLERANCE:
        raise ExportError(f"{what}: outputs differ from PyTorch by {diff:.2e} (allowed {TOLERANCE:.0e})")
    return diff


def export_onnx(model_dir: str | os.PathLike, out: str | os.PathLike, check: bool = True) -> Path:
    """Write ``out`` (.onnx) from a model folder; with ``check``, compare with PyTorch in ONNX Runtime."""
    model, config = load_exportable(model_dir)
    example = example_input(config)
    path = write_onnx(standalone(model, config, exact_size=True), example, out, metadata(config))
    if check:
        bigger = example_input(config, seed=1).repeat(2, 1, *([2] * (example.ndim - 2)))  # other sizes too
        for x in (example, bigger):
            check_against_pytorch(reference_probabilities(model, x), onnx_outputs(path, x.numpy()), f"{path}")
    return path


def export_torchscript(model_dir: str | os.PathLike, out: str | os.PathLike, check: bool = True) -> Path:
    """Write ``out`` (.pt TorchScript) from a model folder; with ``check``, compare with PyTorch."""
    model, config = load_exportable(model_dir)
    example = example_input(config)
    path = write_torchscript(standalone(model, config, exact_size=True), example, out, metadata(config))
    if check:
        bigger = example_input(config, seed=1).repeat(2, 1, *([2] * (example.ndim - 2)))
        for x in (example, bigger):
            check_against_pytorch(reference_probabilities(model, x), torchscript_outputs(path, x.numpy()), f"{path}")
    return path
