"""Shared pieces of the exporters: errors, the optional-extra check, loading an exportable model."""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_labelfx.export.standalone_unet import LabelfxUNet
from napari_labelfx.models.checkpoint import CONFIG_FILE, MODEL_FILE, load_model, read_config

#: Formats ``labelfx export`` writes.
FORMATS = ("onnx", "torchscript", "bioimageio")
#: How to get the optional libraries the exporters and the bioimage.io import need.
INSTALL_HINT = "pip install 'napari-labelfx[export]'"
#: ONNX/TorchScript outputs must equal PyTorch's within this (max absolute difference of probabilities).
TOLERANCE = 1e-4
#: Architecture kwargs of the standalone UNet (the rest of ModelConfig only matters for training).
ARCH_KEYS = ("spatial_dims", "in_channels", "num_classes", "depth", "width", "norm", "upsample",
             "multilabel", "image_head")
#: config.json model names that are not PyTorch networks (the pixel classifier's random forest).
FOREST_MODELS = ("pixel_forest",)


class ExportError(ValueError):
    """A model cannot be exported or imported (the message says why and what to do)."""


class MissingExtraError(ExportError, ImportError):
    """An optional library of the ``export`` extra is not installed."""


def require(module: str, purpose: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the Python package {module.split('.')[0]!r} ({exc}); install it with: {INSTALL_HINT}"
        ) from exc


def check_exportable(model_dir: str | os.PathLike, fmt: str = "any") -> dict[str, Any]:
    """The config.json of a model folder, after refusing folders the PyTorch exporters cannot hold."""
    folder = Path(model_dir)
    if folder.is_file() and folder.name == CONFIG_FILE:
        folder = folder.parent
    if not folder.exists():
        raise ExportError(f"{folder}: no such model folder")
    config_path = folder / CONFIG_FILE if folder.is_dir() else folder.parent / CONFIG_FILE
    if config_path.is_file():
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ExportError(f"{config_path}: cannot read JSON: {exc}") from exc
        name = (raw.get("model") or {}).get("name") if isinstance(raw, dict) else None
        if name in FOREST_MODELS or (folder.is_dir() and not (folder / MODEL_FILE).exists()
                                     and any(folder.glob("*.npz"))):
            raise ExportError(
                f"{folder}: a random-forest pixel classifier ({name or 'trees in .npz'}) cannot be exported: "
                f"none of {', '.join(FORMATS)} can hold it here (they hold PyTorch networks); "
                f"share the model folder itself, which labelfx predict reads"
            )
    config = read_config(folder)
    name = config["model"].get("name")
    if name != "unet":
        raise ExportError(f"{folder}: export supports the 'unet' architecture, this model is {name!r}")
    if fmt != "any" and fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return config


def load_exportable(model_dir: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """(labelfx network in eval mode on the CPU, config.json) of a model folder that can be exported."""
    check_exportable(model_dir)
    return load_model(model_dir, device="cpu")


def arch_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`LabelfxUNet` for a model folder's config.json."""
    model = config["model"]
    return {k: model[k] for k in ARCH_KEYS if k in model}


def standalone(model: nn.Module, config: dict[str, Any], exact_size: bool) -> LabelfxUNet:
    """The self-contained probability network with the weights of ``model`` (CPU, eval mode)."""
    net = LabelfxUNet(**arch_kwargs(config), exact_size=exact_size)
    net.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, strict=True)
    return net.eval()


@torch.no_grad()
def reference_probabilities(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Class probabilities of the labelfx network for a normalised batch ``x`` (the ground truth)."""
    logits = model(x).logits.float()
    probs = torch.sigmoid(logits) if model.config.multilabel else torch.softmax(logits, dim=1)
    return probs.numpy()


def example_input(config: dict[str, Any], seed: int = 0) -> torch.Tensor:
    """A deterministic normalised batch ``(1, C, *spatial)`` whose sizes are multiples of the divisor."""
    model = config["model"]
    div = 2 ** int(model["depth"])
    dims = int(model["spatial_dims"])
    edge = max(64 if dims == 2 else 16, div)
    shape = (1, int(model["in_channels"])) + ((edge + div,) + (edge,) * (dims - 1))
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen)


def metadata(config: dict[str, Any]) -> dict[str, str]:
    """String metadata embedded in ONNX and TorchScript files: how to feed and read the network."""
    model = config["model"]
    norm = config.get("normalisation") or {"low": 1.0, "high": 99.8}
    return {
        "producer": "napari-labelfx",
        "labelfx_config": json.dumps(config, default=str),
        "class_names": json.dumps(config.get("class_names")),
        "input": f"float32 (batch, channel={model['in_channels']}, {'z, ' if model['spatial_dims'] == 3 else ''}y, x); "
                 f"spatial sizes multiples of {2 ** int(model['depth'])}",
        "preprocessing": f"per channel: (x - p{norm.get('low', 1.0)}) / (p{norm.get('high', 99.8)} - p{norm.get('low', 1.0)}) "
                         "with percentiles of the whole image",
        "output": "sigmoid probability per class" if model.get("multilabel") else "softmax probabilities over classes",
    }
