"""The ``labelfx`` command line end to end on tiny synthetic data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_labelfx._sample_data import make_nuclei_2d
from napari_labelfx.cli import main


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("info", "train", "predict", "eval", "demo"):
        assert cmd in out
    assert main(["--version"]) == 0


def test_info_tiff_and_corrupt(tmp_path, capsys):
    path = tmp_path / "vol.tif"
    tifffile.imwrite(path, np.zeros((4, 32, 48), np.uint16), imagej=True, metadata={"axes": "ZYX", "spacing": 2.0},
                     resolution=(1 / 0.5, 1 / 0.5))
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert tuple(info["shape"]) == (4, 32, 48)
    assert "Z" in info["axes"]
    bad = tmp_path / "bad.tif"
    bad.write_bytes(path.read_bytes()[:200])
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.tif" in err and "error" in err


@pytest.fixture
def tiny_files(tmp_path):
    d = make_nuclei_2d(seed=3, size=64)
    img, lab = tmp_path / "img.tif", tmp_path / "lab.tif"
    tifffile.imwrite(img, (d["image"] * 1000).astype(np.uint16))
    tifffile.imwrite(lab, d["strong"].astype(np.uint16))
    return img, lab


def test_train_then_predict(tiny_files, tmp_path, capsys):
    img, lab = tiny_files
    out = tmp_path / "model"
    rc = main(["train", "--images", str(img), "--labels", str(lab), "--kind", "strong", "--out", str(out),
               "--iters", "4", "--patch", "32", "--batch", "2", "--device", "cpu"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model_dir = res["best"] if res["best"] != "None" else res["last"]
    pred_tif = tmp_path / "pred.tif"
    assert main(["predict", "--model", model_dir, str(img), str(pred_tif), "--confidence",
                 str(tmp_path / "conf.tif"), "--device", "cpu"]) == 0
    pred = tifffile.imread(pred_tif)
    assert pred.shape == (64, 64)
    pred_zarr = tmp_path / "pred.zarr"
    assert main(["predict", "--model", model_dir, str(img), str(pred_zarr), "--device", "cpu"]) == 0
    from napari_labelfx.io.reader import read_image

    z = read_image(pred_zarr)
    assert tuple(z.shape) == (64, 64)
    np.testing.assert_array_equal(np.asarray(z.data), pred)


def test_train_bad_input_is_clear(tmp_path, tiny_files, capsys):
    img, _ = tiny_files
    rc = main(["train", "--images", str(img), "--labels", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "m")])
    assert rc == 2
    assert "missing.tif" in capsys.readouterr().err


def test_demo_headless_tiny(tmp_path, capsys):
    rc = main(["demo", "--headless", "--iters", "3", "--out", str(tmp_path / "demo"), "--device", "cpu"])
    assert rc == 0
    for name in ("prediction.tif", "overlay.png", "metrics.json"):
        assert (tmp_path / "demo" / name).exists()
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert 0.0 <= metrics["mean_dice"] <= 1.0
