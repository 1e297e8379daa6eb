"""Issue 13 item 4: separate objects from a prediction (2D and 3D, library and ``labelfx predict
--objects``), and item 12: the napari reader claims PNG/JPEG."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from napari_labelfx.cli import main
from napari_labelfx.inference import InferenceError, Predictor, objects_from_labels
from napari_labelfx.inference.objects import object_class_indices
from napari_labelfx.io.reader import read_image
from napari_labelfx.models import ModelConfig, SegOutput


def _touching_discs_2d() -> np.ndarray:
    yy, xx = np.mgrid[:64, :96]
    img = np.zeros((64, 96), np.float32)
    for cy, cx in ((30, 24), (30, 41), (30, 75)):  # the first two touch
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 10**2] = 1.0
    return img


def _touching_balls_3d() -> np.ndarray:
    zz, yy, xx = np.mgrid[:20, :40, :56]
    vol = np.zeros((20, 40, 56), np.float32)
    for c in ((10, 20, 16), (10, 20, 31)):
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 8**2] = 1.0
    return vol


def test_objects_split_touching_nuclei_2d_and_3d():
    sem = (_touching_discs_2d() > 0).astype(np.uint8)
    from scipy import ndimage as ndi

    assert ndi.label(sem)[1] == 2  # the semantic mask merges the touching pair
    ids = objects_from_labels(sem)
    assert ids.dtype == np.int32 and ids.max() == 3
    assert set(np.unique(ids[sem > 0])) == {1, 2, 3}
    vol = (_touching_balls_3d() > 0).astype(np.uint8)
    ids3 = objects_from_labels(vol)
    assert ids3.shape == vol.shape and ids3.max() == 2
    assert objects_from_labels(np.zeros((8, 8), np.uint8)).max() == 0


def test_object_classes_by_name():
    names = ["background", "nucleus", "cytoplasm"]
    assert object_class_indices(names, None) is None
    assert object_class_indices(names, "nucleus") == [1]
    with pytest.raises(InferenceError, match="unknown object class"):
        object_class_indices(names, "cell")
    two = np.zeros((32, 32), np.uint8)
    two[2:10, 2:10] = 1
    two[20:30, 20:30] = 2
    assert objects_from_labels(two, classes=[1]).max() == 1


class Threshold(nn.Module):
    """A 'trained' 2D model: foreground wherever the normalised image is above 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.config = ModelConfig(spatial_dims=2, depth=2, width=4, num_classes=2)
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        fg = (x[:, :1] - 0.5) * self.scale
        return SegOutput(logits=torch.cat([-fg, fg], dim=1), features=x, decoder=[x])


def test_cli_predict_objects_2d_and_volume(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Predictor, "from_folder", classmethod(
        lambda cls, d, device="auto", **kw: cls(Threshold(), {"class_names": ["background", "nucleus"]},
                                                device="cpu", channels_last=False)))
    img2d = tmp_path / "nuclei.tif"
    tifffile.imwrite(img2d, (_touching_discs_2d() * 200 + 10).astype(np.uint8))
    out = tmp_path / "objects.tif"
    assert main(["predict", "--model", "unused", str(img2d), str(out), "--objects"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ids = np.asarray(read_image(out).data)
    assert res["objects"] == 3 and ids.max() == 3 and ids.shape == (64, 96)
    # a stack through the 2D model, objects connected in 3D
    vol = tmp_path / "stack.tif"
    tifffile.imwrite(vol, (_touching_balls_3d() * 200 + 10).astype(np.uint8), imagej=True, metadata={"axes": "ZYX"})
    out3 = tmp_path / "objects3d.zarr"
    assert main(["predict", "--model", "unused", str(vol), str(out3), "--objects"]) == 0
    ids3 = np.asarray(read_image(out3).data)
    assert ids3.shape == (20, 40, 56) and ids3.max() == 2
    assert main(["predict", "--model", "unused", str(img2d), str(tmp_path / "x.tif"), "--objects",
                 "--object-classes", "cell"]) == 2
    assert "unknown object class" in capsys.readouterr().err


def test_napari_reader_claims_png_and_jpeg(tmp_path):
    from npe2 import PluginManager
    from PIL import Image

    from napari_labelfx._reader import napari_get_reader

    png, jpg = tmp_path / "cells.png", tmp_path / "cells.jpg"
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(png)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(jpg)
    pm = PluginManager.instance()
    pm.discover()
    for path in (png, jpg):
        names = [r.plugin_name for r in pm.iter_compatible_readers([str(path)])]
        assert "napari-labelfx" in names, f"{path.suffix} not claimed: {names}"
        layers = napari_get_reader(str(path))(str(path))
        assert layers and layers[0][2] == "image"
