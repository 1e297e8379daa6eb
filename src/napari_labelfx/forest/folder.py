"""Forest model folders: ``forest.npz`` (tree arrays, no pickle) + ``config.json``.

The config has the same shape as a network's (see ``models/checkpoint.py``): a ``model`` section
(here ``name: "pixel_forest"`` with the filter bank and the sizes), ``class_names``, ``multilabel``,
``normalisation`` and training metadata, so every tool that lists or predicts with model folders
treats both alike.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..models.checkpoint import json_default
from .classifier import ForestError, ForestSettings, PixelForest
from .features import FeatureError, FilterBank

FOREST_FILE = "forest.npz"
CONFIG_FILE = "config.json"
#: ``config["model"]["name"]`` of a forest folder.
FOREST_MODEL_NAME = "pixel_forest"


def is_forest_config(config: Any) -> bool:
    """True when a parsed config.json describes a pixel forest."""
    return isinstance(config, dict) and isinstance(config.get("model"), dict) and \
        config["model"].get("name") == FOREST_MODEL_NAME


def is_forest_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a forest (forest.npz)."""
    return (Path(path) / FOREST_FILE).is_file()


def forest_model_section(forest: PixelForest, bank: FilterBank, in_channels: int) -> dict[str, Any]:
    """The ``model`` section of config.json for a forest."""
    return {
        "name": FOREST_MODEL_NAME, "spatial_dims": bank.spatial_dims, "in_channels": int(in_channels),
        "num_classes": forest.num_classes, "multilabel": forest.multilabel, "filter_bank": bank.to_dict(),
        "n_features": forest.n_features, "settings": forest.settings.to_dict(),
    }


def save_forest(folder: str | os.PathLike, forest: PixelForest, bank: FilterBank, in_channels: int,
                extra: dict[str, Any] | None = None) -> Path:
    """Write ``folder/forest.npz`` and ``folder/config.json``, each atomically; returns the folder."""
    from ..io.atomic import atomic_path

    folder = Path(folder)
    if not forest.fitted:
        raise ForestError("cannot save a forest that is not trained")
    extra = dict(extra or {})
    if "model" in extra:
        raise ForestError("extra metadata must not contain the reserved key 'model'")
    text = json.dumps({"model": forest_model_section(forest, bank, in_channels), **extra}, indent=2,
                      default=json_default)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / FOREST_FILE) as tmp:
        with open(tmp, "wb") as fh:  # np.savez would append .npz to a temporary name without it
            np.savez_compressed(fh, **forest.to_arrays())
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return folder


def load_forest(folder: str | os.PathLike) -> tuple[PixelForest, FilterBank, dict[str, Any]]:
    """Read a forest folder: (forest, filter bank, whole config.json). Never unpickles.

    Raises
    ------
    ForestError
        With the path, when a file is missing, damaged or inconsistent.
    """
    folder = Path(folder)
    if folder.is_file() and folder.name in (FOREST_FILE, CONFIG_FILE):
        folder = folder.parent
    cfg_path, npz_path = folder / CONFIG_FILE, folder / FOREST_FILE
    if not npz_path.is_file():
        raise ForestError(f"{folder}: no {FOREST_FILE} in this model folder")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ForestError(f"{cfg_path}: missing config.json beside {FOREST_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ForestError(f"{cfg_path}: cannot read JSON: {exc}") from None
    if not is_forest_config(config):
        raise ForestError(f"{cfg_path}: the 'model' section does not describe a pixel forest")
    m = config["model"]
    try:
        bank = FilterBank.from_dict(m["filter_bank"])
        num_classes, multilabel = int(m["num_classes"]), bool(m["multilabel"])
        in_channels = int(m["in_channels"])
        settings = ForestSettings(**{k: v for k, v in (m.get("settings") or {}).items()
                                     if k in ForestSettings.__dataclass_fields__})
    except (KeyError, TypeError, ValueError, FeatureError) as exc:
        raise ForestError(f"{cfg_path}: invalid forest model section: {exc}") from None
    if bank.spatial_dims != int(m.get("spatial_dims", bank.spatial_dims)) or in_channels < 1:
        raise ForestError(f"{cfg_path}: inconsistent spatial_dims / in_channels")
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        # allow_pickle=False turns an object array (a pickle inside) into a ValueError: refused
        raise ForestError(f"{npz_path}: cannot read the forest arrays (only plain numeric arrays are loaded): "
                          f"{exc}") from None
    forest = PixelForest.from_arrays(arrays, num_classes, multilabel, settings)
    if forest.n_features != bank.n_features(in_channels):
        raise ForestError(
            f"{npz_path}: the trees use {forest.n_features} features, the filter bank gives "
            f"{bank.n_features(in_channels)} for {in_channels} channel(s)"
        )
    return forest, bank, config
