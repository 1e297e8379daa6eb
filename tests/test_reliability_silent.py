"""Issue 14, items 16, 17: results that used to be silently wrong are refused or warned about."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_labelfx._reader import read_layers
from napari_labelfx._writer import write_labels_tiff, write_labels_zarr
from napari_labelfx.annotations.kinds import LabelKind, TrainingItem
from napari_labelfx.cli import main
from napari_labelfx.data.label_warnings import training_data_warnings
from napari_labelfx.inference import Predictor
from napari_labelfx.models import ModelConfig, build_model
from napari_labelfx.models.checkpoint import CheckpointError, load_model, save_model


@pytest.fixture
def model_dir(tmp_path):
    return save_model(tmp_path / "m", build_model(ModelConfig(width=4, depth=1)), {"classes": ["bg", "fg"]})


def test_all_nan_image_is_refused(model_dir, tmp_path, capsys):
    img = tmp_path / "nan.tif"
    tifffile.imwrite(img, np.full((32, 32), np.nan, np.float32))
    out = tmp_path / "out.tif"
    assert main(["predict", "--model", str(model_dir), str(img), str(out), "--device", "cpu"]) == 2
    assert "no finite pixel values" in capsys.readouterr().err
    assert not out.exists()


def test_nan_weights_are_refused(model_dir):
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_dir / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(model_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_model(model_dir)


@pytest.mark.parametrize("edit, words", [
    ({"normalisation": {"low": "abc", "high": 99}}, "normalisation"),
    ({"normalisation": {"low": 50, "high": 10}}, "normalisation"),
    ({"inference": {"roi_size": ["x", 3]}}, "roi_size"),
])
def test_malformed_config_values_are_named(model_dir, edit, words):
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg.update(edit)
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"config.json.*{words}"):
        Predictor.from_folder(model_dir, device="cpu")


def _item(target, kind="strong"):
    return TrainingItem(image=np.zeros((1, 8, 8), np.float32), target=np.asarray(target, np.int64),
                        kind=LabelKind(kind), name="img")


def test_training_data_warnings():
    both = np.zeros((8, 8))
    both[:2] = 1
    assert training_data_warnings([_item(both)], ["background", "cell"]) == []
    empty = training_data_warnings([_item(np.zeros((8, 8)))], ["background", "cell"])
    assert any("nothing painted" in w for w in empty) and any("only 'background'" in w for w in empty)
    only_fg = np.full((8, 8), -1)
    only_fg[:2] = 1
    assert any("only 'cell'" in w for w in training_data_warnings([_item(only_fg, "scribble")],
                                                                   ["background", "cell"]))


def test_cli_train_warns_about_one_class(tmp_path, capsys):
    img, lab = tmp_path / "img.tif", tmp_path / "lab.tif"
    tifffile.imwrite(img, np.random.default_rng(0).random((64, 64)).astype(np.float32))
    tifffile.imwrite(lab, np.zeros((64, 64), np.uint8))  # a strong layer with nothing painted
    rc = main(["train", "--images", str(img), "--labels", str(lab), "--out", str(tmp_path / "m"), "--iters", "1",
               "--patch", "32", "--batch", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0 and "nothing painted" in err


@pytest.mark.parametrize("writer, name", [(write_labels_tiff, "lab.tif"), (write_labels_zarr, "lab.zarr")])
def test_labels_translate_round_trips(tmp_path, writer, name):
    path = tmp_path / name
    writer(str(path), np.ones((8, 9), np.uint8), {"name": "lab", "scale": (2.0, 3.0), "translate": (5.0, -7.5)})
    data, kwargs, kind = read_layers(str(path))[0]
    assert kind == "labels" and kwargs["translate"] == (5.0, -7.5) and tuple(kwargs["scale"]) == (2.0, 3.0)
