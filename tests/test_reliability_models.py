"""Issue 14, items 6, 13, 14: model configs are bounded before building, model folders are saved
without deleting anyone's files, and every training setting is checked in one clear line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_labelfx.cli import main
from napari_labelfx.engine.model_folder import copy_model_folder, is_model_folder
from napari_labelfx.io import LabelfxIOError
from napari_labelfx.models import ModelConfig, build_model
from napari_labelfx.models.budget import check_model_size
from napari_labelfx.models.checkpoint import CheckpointError, load_model, save_model
from napari_labelfx.models.config import ModelConfigError


@pytest.fixture
def model_dir(tmp_path):
    return save_model(tmp_path / "run" / "best", build_model(ModelConfig(width=4, depth=1)), {"classes": ["bg", "x"]})


def test_huge_model_config_is_refused_before_building(model_dir, tmp_path, capsys):
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["model"].update(width=4096, depth=6)
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json.*width 4096 and depth 6"):
        load_model(model_dir)
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.zeros((32, 32), np.uint8))
    assert main(["predict", "--model", str(model_dir), str(img), str(tmp_path / "out.tif"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "width 4096" in err and len(err.splitlines()) == 1
    with pytest.raises(ModelConfigError):
        check_model_size(ModelConfig(width=16, depth=4), memory=1000)  # nothing fits in 1 kB
    check_model_size(ModelConfig(width=16, depth=4))  # the default model fits


def test_save_model_never_deletes_foreign_files(model_dir, tmp_path):
    thesis = tmp_path / "thesis"
    (thesis / "best").mkdir(parents=True)
    (thesis / "best" / "my_thesis.docx").write_text("three years of work")
    (thesis / "notes.txt").write_text("mine")
    with pytest.raises(LabelfxIOError, match="not a labelfx model folder"):
        copy_model_folder(model_dir, thesis)  # thesis/best exists and is the person's
    assert (thesis / "best" / "my_thesis.docx").read_text() == "three years of work"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    dest = copy_model_folder(model_dir, other)  # a non-empty folder gets a subfolder
    assert dest == other / "best" and is_model_folder(dest) and (other / "notes.txt").exists()
    again = copy_model_folder(model_dir, dest)  # a model folder is replaced (atomically)
    assert again == dest and is_model_folder(dest)
    load_model(dest)
    assert sorted(p.name for p in other.iterdir()) == ["best", "notes.txt"]  # no temporaries left


def test_save_model_after_run_folder_removed(model_dir, tmp_path):
    import shutil

    shutil.rmtree(model_dir.parent)
    with pytest.raises(LabelfxIOError, match="no longer exists"):
        copy_model_folder(model_dir, tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


@pytest.fixture
def files(tmp_path):
    img, lab = tmp_path / "img.tif", tmp_path / "lab.tif"
    tifffile.imwrite(img, np.random.default_rng(0).random((64, 64)).astype(np.float32))
    tifffile.imwrite(lab, (np.arange(64 * 64).reshape(64, 64) % 3 == 0).astype(np.uint8))
    return img, lab


@pytest.mark.parametrize("flags, words", [
    (["--iters", "0"], "iterations"),
    (["--iters", "-5"], "iterations"),
    (["--lr", "-1"], "lr"),
    (["--lr", "0"], "lr"),
    (["--batch", "-2"], "batch_size"),
    (["--patch", "-8"], "patch_size"),
    (["--patch", "0"], "patch_size"),
    (["--param", "dice_weight=abc"], "dice_weight"),
    (["--param", "dice_weight=NaN"], "dice_weight"),
    (["--param", "nope=1"], "nope"),
])
def test_train_settings_are_validated(files, tmp_path, capsys, flags, words):
    img, lab = files
    out = tmp_path / "m"
    rc = main(["train", "--images", str(img), "--labels", str(lab), "--out", str(out), "--device", "cpu", *flags])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not out.exists()  # nothing written


def test_demo_iters_zero_is_refused(capsys):
    assert main(["demo", "--headless", "--iters", "0"]) == 2
    assert "--iters" in capsys.readouterr().err


def test_save_model_copies_a_forest_folder(tmp_path):
    src = tmp_path / "run" / "best"
    src.mkdir(parents=True)
    np.savez_compressed(src / "forest.npz", a=np.zeros(3))
    (src / "config.json").write_text(json.dumps({"model": {"name": "pixel_forest"}}))
    dest = copy_model_folder(src, tmp_path / "saved")
    assert is_model_folder(dest) and (dest / "forest.npz").is_file()
