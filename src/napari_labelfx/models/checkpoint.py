"""Model folders: ``model.safetensors`` (weights) + ``config.json`` (architecture and metadata).

Loading never unpickles arbitrary objects: weights come from safetensors, or from a ``.pt``/``.pth``
state_dict read with ``torch.load(weights_only=True)``; the architecture is always rebuilt from the
JSON config through the model registry.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from napari_labelfx.core.device import select_device
from napari_labelfx.io.atomic import atomic_path
from napari_labelfx.io.errors import LabelfxIOError
from napari_labelfx.models import ModelConfig, build_model
from napari_labelfx.models.budget import check_model_size

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_TORCH_SUFFIXES = (".pt", ".pth")
#: Model folders inside a training run's output folder, in the order a run folder is resolved.
RUN_SUBFOLDERS = ("best", "last")


class CheckpointError(LabelfxIOError):
    """A model folder or weights file cannot be written or read (the message names the path)."""


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for model folders: numpy values, paths and sets as plain JSON."""
    # numpy scalars/arrays and paths show up in training configs and metrics
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def save_model(folder: str | os.PathLike, model: nn.Module, extra: dict[str, Any] | None = None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json``, each atomically.

    Parameters
    ----------
    folder : output folder (created if missing; existing files are replaced).
    model : a network built by :func:`napari_labelfx.models.build_model` (it has ``model.config``).
    extra : JSON-serialisable metadata merged into config.json next to ``"model"`` (class table,
        normalisation, training config, metrics ...).

    Returns
    -------
    Path : the folder.
    """
    folder = Path(folder)
    extra = dict(extra or {})
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ModelConfig):
        raise CheckpointError(folder, "the model has no ModelConfig in model.config; build it with build_model()")
    if "model" in extra:
        raise CheckpointError(folder, "extra metadata must not contain the reserved key 'model'")
    try:
        text = json.dumps({"model": cfg.to_dict(), **extra}, indent=2, default=json_default)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(folder / CONFIG_FILE, f"metadata is not JSON serialisable: {exc}") from exc
    # safetensors refuses tensors sharing storage and non-contiguous views: store independent copies
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MODEL_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "model": cfg.name})
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return folder


def _locate(path: Path) -> tuple[Path, Path]:
    """(weights file, config.json) for a model folder, a weights file, or a config.json."""
    if path.is_dir():
        config = path / CONFIG_FILE
        for name in (MODEL_FILE, "model.pt", "model.pth"):
            if (path / name).is_file():
                return path / name, config
        # a training run's output folder: take its best model (by validation loss), else its last one
        for sub in RUN_SUBFOLDERS:
            if any((path / sub / name).is_file() for name in (MODEL_FILE, "model.pt", "model.pth")):
                return _locate(path / sub)
        raise CheckpointError(
            path, f"no {MODEL_FILE} (or model.pt / model.pth) in this model folder, nor in its best/ or last/ folder"
        )
    if not path.exists():
        raise CheckpointError(path, "no such model folder or file")
    if path.suffix == ".json":
        weights, _ = _locate(path.parent)
        return weights, path
    if path.suffix == ".safetensors" or path.suffix in _TORCH_SUFFIXES:
        return path, path.parent / CONFIG_FILE
    raise CheckpointError(
        path, "unsupported model file; expected a model folder, a .safetensors file or a .pt/.pth state_dict"
    )


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of a model folder (or of the folder holding a weights file)."""
    _, config_path = _locate(Path(path))
    if not config_path.is_file():
        raise CheckpointError(
            config_path, "missing config.json: the architecture of the weights beside it is unknown"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(config_path, f"cannot read JSON: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(config_path, "config.json has no 'model' section describing the architecture")
    return config


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pt``/``.pth`` state_dict (``weights_only=True``)."""
    path = Path(path)
    if path.suffix in _TORCH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                path,
                "refusing to unpickle this file: it holds Python objects, not just tensors "
                f"(only plain state_dicts are loaded, with weights_only=True). Details: {exc}",
            ) from exc
        except Exception as exc:  # torch raises RuntimeError/EOFError/... for corrupt archives
            raise CheckpointError(path, f"cannot read weights: {type(exc).__name__}: {exc}") from exc
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
        ):
            raise CheckpointError(path, "this file does not hold a state_dict (a dict of name -> tensor)")
        return obj
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"cannot read safetensors weights: {exc}") from exc


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a model folder (or a weights file with config.json beside it).

    A training run's output folder (holding ``best/`` and ``last/``) gives its best model.

    Returns
    -------
    (model, config) : the network in eval mode on ``device`` (``"auto"`` or a name, see
        ``core.device.select_device``), and the whole config.json dict.
    """
    path = Path(path)
    if (path / "forest.npz").is_file():
        raise CheckpointError(
            path, "this model folder holds a pixel forest, not a network: open it with "
            "napari_labelfx.inference.Predictor.from_folder (or napari_labelfx.forest.load_forest)"
        )
    weights_path, _ = _locate(path)
    config = read_config(path)
    try:
        model_cfg = ModelConfig.from_dict(config["model"])
        check_model_size(model_cfg)  # before building: a damaged config must not exhaust memory
        model = build_model(model_cfg)
    except ValueError as exc:
        raise CheckpointError(weights_path.parent / CONFIG_FILE, f"invalid model section: {exc}") from exc
    state = load_state_dict(weights_path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            weights_path,
            f"weights do not match the architecture in config.json (missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})",
        )
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(
            weights_path,
            f"tensor {k!r} has shape {tuple(state[k].shape)}, the architecture needs {tuple(expected[k].shape)}",
        )
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:  # a diverged run: every prediction would be NaN, shown as a silent background
        raise CheckpointError(weights_path, f"weights hold NaN or infinite values (in {broken[0]!r}"
                                            f"{' and others' if len(broken) > 1 else ''}); the training diverged")
    model.load_state_dict(state, strict=True)
    return model.to(select_device(device)).eval(), config
