"""Streaming prediction: slab-by-slab reads, Zarr output equal to the in-memory prediction."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr
from torch import nn

from napari_labelfx.inference import (
    InferenceError,
    Predictor,
    predict_to_zarr,
    probabilities_to_labels,
    sliding_window_predict,
    stream_probabilities,
)
from napari_labelfx.models import ModelConfig, build_model

torch.set_num_threads(1)


def _unet(dims=3, **kw) -> nn.Module:
    torch.manual_seed(0)
    cfg = dict(spatial_dims=dims, depth=2, width=4, num_classes=3)
    cfg.update(kw)
    return build_model(ModelConfig(**cfg)).eval()


class RecordingArray:
    """Array-like that records which rows of the first spatial axis each read asks for."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.rows_read: list[int] = []

    def __getitem__(self, key):
        rows = np.arange(self.shape[1])[key[1]] if isinstance(key, tuple) and len(key) > 1 else np.arange(self.shape[1])
        self.rows_read.append(len(rows))
        return self.data[key]


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1, 23, 21, 18)).astype(np.float32)


@pytest.mark.parametrize("roi,overlap,tta,rows", [((8, 12, 12), 0.25, False, 8), ((5, 16, 10), 0.5, True, 1)])
def test_stream_blocks_equal_in_memory(volume, roi, overlap, tta, rows):
    model = _unet()
    ref = sliding_window_predict(model, volume, roi, overlap=overlap, tta=tta, batch_size=3)
    src = RecordingArray(volume)
    blocks = list(stream_probabilities(model, src, roi, overlap=overlap, tta=tta, batch_size=3, block_rows=rows))
    assert max(b.shape[1] for _, b in blocks) <= rows
    starts = [z for z, _ in blocks]
    assert starts == sorted(starts) and starts[0] == 0
    got = np.concatenate([b for _, b in blocks], axis=1)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # the volume is read one window depth at a time, never whole
    assert max(src.rows_read) <= roi[0] < volume.shape[1]
    assert not torch.is_inference_mode_enabled()


def test_predict_to_zarr_equals_in_memory_prediction(tmp_path, volume):
    raw = (volume * 300 + 1000).astype(np.uint16)
    model = _unet()
    pred = Predictor(model, {"model": model.config.to_dict(), "classes": ["bg", "a", "b"]}, roi_size=(8, 12, 12))
    expected = pred(raw)
    store = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=raw.shape, chunks=(1, 4, 8, 8), dtype=np.uint16)
    store[...] = raw
    out = pred.predict_to_zarr(zarr.open_array(str(tmp_path / "in.zarr"), mode="r"), tmp_path / "labels.zarr",
                               confidence_path=tmp_path / "conf.zarr", chunks=(4, 8, 8), scale=(2.0, 0.5, 0.5))
    labels = zarr.open_array(str(out), mode="r")
    conf = zarr.open_array(str(tmp_path / "conf.zarr"), mode="r")
    assert labels.dtype == np.uint8 and labels.shape == raw.shape[1:] and labels.chunks == (4, 8, 8)
    # labels agree except where the top two classes tie (dead ReLUs give exactly uniform softmax
    # outputs here, and float rounding then decides the argmax)
    top2 = np.sort(expected.probabilities, axis=0)[-2:]
    decided = top2[1] - top2[0] > 1e-5
    assert decided.mean() > 0.5
    np.testing.assert_array_equal(labels[...][decided], expected.labels[decided])
    np.testing.assert_allclose(conf[...], expected.confidence, atol=1e-5)
    attrs = dict(labels.attrs)
    assert attrs["labelfx_labels"] is True and attrs["axes"] == "ZYX" and attrs["scale"] == [2.0, 0.5, 0.5]
    assert attrs["labelfx"]["num_classes"] == 3 and attrs["labelfx"]["class_names"] == ["bg", "a", "b"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_predict_to_zarr_dask_2d_multilabel_and_tiff_confidence(tmp_path):
    model = _unet(2, multilabel=True, num_classes=2)
    image = np.random.default_rng(1).normal(size=(1, 45, 30)).astype(np.float32)
    lazy = da.from_array(image, chunks=(1, 16, 30))
    out = predict_to_zarr(model, lazy, tmp_path / "ml.zarr", (16, 16), overlap=0.25,
                          confidence_path=tmp_path / "conf.tif")
    ref = sliding_window_predict(model, image, (16, 16), overlap=0.25)
    labels, conf = probabilities_to_labels(ref, multilabel=True)
    got = zarr.open_array(str(out), mode="r")
    assert got.shape == (2, 45, 30) and dict(got.attrs)["axes"] == "CYX"
    np.testing.assert_array_equal(got[...], labels)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "conf.tif"), conf, atol=1e-5)


def test_volume_thinner_than_roi(tmp_path):
    model = _unet()
    image = np.random.default_rng(2).normal(size=(1, 3, 20, 20)).astype(np.float32)
    ref = sliding_window_predict(model, image, (8, 16, 16))
    got = np.concatenate([b for _, b in stream_probabilities(model, image, (8, 16, 16))], axis=1)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_many_classes_use_uint16(tmp_path):
    model = _unet(2, num_classes=300, width=2, depth=1)
    out = predict_to_zarr(model, np.zeros((1, 8, 8), np.float32), tmp_path / "l.zarr", (8, 8))
    assert zarr.open_array(str(out), mode="r").dtype == np.uint16


def test_failure_leaves_no_output(tmp_path, volume):
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0
            self.inner = _unet()

        def forward(self, x):
            self.calls += 1
            if self.calls > 3:
                raise RuntimeError("boom")
            return self.inner(x)

    with pytest.raises(RuntimeError, match="boom"):
        predict_to_zarr(Failing(), volume, tmp_path / "out.zarr", (8, 12, 12), batch_size=1,
                        confidence_path=tmp_path / "c.zarr")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path, volume):
    model = _unet()
    with pytest.raises(InferenceError, match=r"\.zarr, \.tif or \.tiff"):
        predict_to_zarr(model, volume, tmp_path / "o.zarr", 8, confidence_path=tmp_path / "c.png")
    with pytest.raises(InferenceError, match="axes"):
        predict_to_zarr(model, volume, tmp_path / "o.zarr", 8, axes="YX")
    with pytest.raises(InferenceError, match="1 channel"):
        predict_to_zarr(model, np.zeros((2, 4, 4, 4), np.float32), tmp_path / "o.zarr", 4)
