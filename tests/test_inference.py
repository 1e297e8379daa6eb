"""Sliding-window inference: tiling, blending, TTA, edge padding, Predictor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_labelfx.core.device import select_device
from napari_labelfx.inference import (
    InferenceError,
    Prediction,
    Predictor,
    importance_map,
    probabilities_to_labels,
    sliding_window_predict,
    tile_grid,
    tile_starts,
)
from napari_labelfx.models import ModelConfig, SegOutput, build_model
from napari_labelfx.models.checkpoint import save_model

torch.set_num_threads(1)


def _unet(dims=2, **kw) -> nn.Module:
    torch.manual_seed(0)
    cfg = dict(spatial_dims=dims, depth=2, width=4, num_classes=3)
    cfg.update(kw)
    return build_model(ModelConfig(**cfg)).eval()


def _direct(model, image: np.ndarray, multilabel=False) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.from_numpy(image[None])).logits[0]
    return (torch.sigmoid(logits) if multilabel else torch.softmax(logits, 0)).numpy()


class Pointwise(nn.Module):
    """Per-pixel model (1x1 convs): its output on a tile does not depend on the tile's context."""

    def __init__(self, dims=2, cin=1, k=3):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        torch.manual_seed(1)
        self.a, self.b = conv(cin, 8, 1), conv(8, k, 1)

    def forward(self, x):
        return SegOutput(logits=self.b(torch.tanh(self.a(x))), features=x, decoder=[x])


class TileMean(nn.Module):
    """Context-dependent model: each pixel's logits mix the pixel and the mean of its tile."""

    def forward(self, x):
        mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        return torch.cat([x, 2 * mean, -x], dim=1)


class SymmetricBlur(nn.Module):
    """Flip-equivariant by construction: a mirror-symmetric 3x3 kernel with zero padding, then 1x1."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
        self.register_buffer("kernel", k[None, None])
        self.mix = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.mix(torch.relu(F.conv2d(x, self.kernel, padding=1) * 5 - 1))


# -- tiling ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,roi,overlap", [(100, 32, 0.25), (64, 64, 0.5), (65, 16, 0.0), (7, 3, 0.9)])
def test_tile_starts_cover_and_stay_inside(size, roi, overlap):
    starts = tile_starts(size, roi, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        assert 0 <= s <= size - roi
        covered[s : s + roi] = True
    assert covered.all() and starts[0] == 0 and starts[-1] == size - roi
    step = max(1, int(roi * (1 - overlap)))
    assert len(starts) == int(np.ceil((size - roi) / step)) + 1  # same count as MONAI's scan


def test_tile_starts_errors():
    with pytest.raises(InferenceError, match="roi <= size"):
        tile_starts(10, 20, 0.25)
    with pytest.raises(InferenceError, match="overlap"):
        tile_starts(100, 20, 1.0)
    assert issubclass(InferenceError, ValueError)


def test_importance_map():
    w = importance_map((16, 24))
    assert w.shape == (16, 24) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0, abs=0.01) and w.min() > 0
    np.testing.assert_array_equal(w, w[::-1, ::-1])  # symmetric: the same for mirrored tiles
    assert w[8, 12] > w[3, 12] > w[3, 3] > 0
    np.testing.assert_array_equal(importance_map((4, 5, 6), "constant"), np.ones((4, 5, 6), np.float32))
    with pytest.raises(InferenceError, match="blend"):
        importance_map((4, 4), "max")


# -- sliding window --------------------------------------------------------------------------------
@pytest.mark.parametrize("dims,shape", [(2, (1, 24, 20)), (3, (1, 8, 12, 12))])
def test_single_tile_equals_direct_forward(dims, shape):
    model = _unet(dims)
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    for blend in ("gaussian", "constant"):
        probs = sliding_window_predict(model, image, shape[1:], blend=blend)
        assert probs.dtype == np.float32 and probs.shape == (3, *shape[1:])
        np.testing.assert_allclose(probs, _direct(model, image), atol=1e-5)


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_blending_is_weighted_mean_of_overlapping_tiles(blend):
    """Reference: explicit loop over windows, weighted mean of each pixel's tile probabilities."""
    model = TileMean()
    image = np.random.default_rng(1).random((1, 30, 23)).astype(np.float32)
    roi = (12, 10)
    weight = importance_map(roi, blend).astype(np.float64)
    probs = sliding_window_predict(model, image, roi, overlap=0.4, blend=blend, batch_size=3, multilabel=False)
    total = np.zeros((3, 30, 23))
    count = np.zeros((30, 23))
    ys = range(0, 30 - roi[0] + 1)
    xs = range(0, 23 - roi[1] + 1)
    starts = tile_grid((30, 23), roi, 0.4)
    assert {s[0] for s in starts} <= set(ys) and {s[1] for s in starts} <= set(xs)
    for y, x in starts:
        tile = image[:, y : y + roi[0], x : x + roi[1]]
        logits = np.concatenate([tile, 2 * np.full_like(tile, tile.mean()), -tile])
        e = np.exp(logits - logits.max(0))
        total[:, y : y + roi[0], x : x + roi[1]] += weight * e / e.sum(0)
        count[y : y + roi[0], x : x + roi[1]] += weight
    assert count.min() > 0 and (blend == "gaussian" or count.max() > 1)  # tiles really overlap
    np.testing.assert_allclose(probs, total / count, atol=1e-5)
    # a context-dependent model is NOT equal to its direct forward pass: the test above is not vacuous
    direct = sliding_window_predict(model, image, (30, 23), blend=blend)
    assert np.abs(direct - probs).max() > 1e-3


@pytest.mark.parametrize("dims", [2, 3])
def test_tiled_pointwise_model_equals_direct_forward(dims):
    model = Pointwise(dims)
    shape = (1, 37, 29) if dims == 2 else (1, 11, 13, 9)
    image = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    roi = (16, 8) if dims == 2 else (4, 6, 5)
    for blend in ("gaussian", "constant"):
        probs = sliding_window_predict(model, image, roi, overlap=0.5, blend=blend, batch_size=3)
        np.testing.assert_allclose(probs, _direct(model, image), atol=1e-5)


def test_image_smaller_than_roi_is_mirror_padded():
    model = _unet(2)
    image = np.random.default_rng(3).normal(size=(1, 10, 30)).astype(np.float32)
    probs = sliding_window_predict(model, image, (16, 16), overlap=0.25)
    assert probs.shape == (3, 10, 30)
    padded = np.pad(image, ((0, 0), (0, 6), (0, 0)), mode="reflect")
    ref = sliding_window_predict(model, padded, (16, 16), overlap=0.25)[:, :10]
    np.testing.assert_allclose(probs, ref, atol=1e-6)
    # a 1-pixel axis is repeated, not an error
    assert sliding_window_predict(model, image[:, :1], (4, 8)).shape == (3, 1, 30)


def test_tta_flip_equivariant_model_is_unchanged():
    model = SymmetricBlur()
    image = np.random.default_rng(4).random((1, 26, 19)).astype(np.float32)
    plain = sliding_window_predict(model, image, (12, 12), overlap=0.25)
    tta = sliding_window_predict(model, image, (12, 12), overlap=0.25, tta=True)
    np.testing.assert_allclose(tta, plain, atol=1e-6)


def test_tta_is_mean_of_deflipped_predictions():
    model = _unet(2)
    image = np.random.default_rng(5).normal(size=(1, 16, 24)).astype(np.float32)
    tta = sliding_window_predict(model, image, (16, 24), tta=True)
    expected = np.mean(
        [np.flip(_direct(model, np.ascontiguousarray(np.flip(image, axes))), axes)
         for axes in [(), (1,), (2,), (1, 2)]], axis=0)
    np.testing.assert_allclose(tta, expected, atol=1e-5)
    assert np.abs(tta - _direct(model, image)).max() > 1e-4  # the UNet is not flip-equivariant


def test_tta_3d_runs_eight_flips():
    calls = []

    class Counting(Pointwise):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    model = Counting(3)
    image = np.random.default_rng(6).random((1, 6, 6, 6)).astype(np.float32)
    tta = sliding_window_predict(model, image, (6, 6, 6), tta=True)
    assert len(calls) == 8
    np.testing.assert_allclose(tta, _direct(model, image), atol=1e-5)


def test_multilabel_probabilities_and_labels():
    model = _unet(2, multilabel=True, num_classes=4)
    image = np.random.default_rng(7).normal(size=(1, 20, 20)).astype(np.float32)
    probs = sliding_window_predict(model, image, (20, 20))  # multilabel read from model.config
    np.testing.assert_allclose(probs, _direct(model, image, multilabel=True), atol=1e-5)
    assert not np.allclose(probs.sum(0), 1.0)
    labels, conf = probabilities_to_labels(probs, multilabel=True)
    assert labels.shape == (4, 20, 20) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, (probs >= 0.5).astype(np.uint8))
    assert conf.min() >= 0.5 and conf.max() <= 1.0


def test_model_mode_and_statistics_are_restored():
    model = _unet(2)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sliding_window_predict(model, np.ones((1, 20, 20), np.float32), (16, 16))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_progress_and_errors():
    model = _unet(2)
    image = np.zeros((1, 40, 40), np.float32)
    seen = []
    sliding_window_predict(model, image, (16, 16), overlap=0.0, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (9, 9) and len(seen) == 3

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    sliding_window_predict(model, image, (16, 16), overlap=0.0, progress=bar)
    assert bar.n == 9
    with pytest.raises(InferenceError, match="2 channel"):
        sliding_window_predict(_unet(2, in_channels=2), image, (16, 16))
    with pytest.raises(InferenceError, match="channels-first 2D"):
        sliding_window_predict(model, image[0], (16, 16))
    with pytest.raises(InferenceError, match="num_classes=5"):
        sliding_window_predict(model, image, (16, 16), num_classes=5)
    with pytest.raises(InferenceError, match="roi_size"):
        sliding_window_predict(model, image, (16, 16, 16))
    with pytest.raises(ValueError, match="unknown device|not available"):
        sliding_window_predict(model, image, (16, 16), device="tpu")


# -- Predictor -------------------------------------------------------------------------------------
def test_predictor_from_folder_normalises_raw_input(tmp_path):
    model = _unet(2, num_classes=2)
    save_model(tmp_path, model, {"normalisation": {"low": 1.0, "high": 99.8}, "classes": ["background", "cell"],
                                 "train_config": {"patch_size": [32, 32]}})
    pred = Predictor.from_folder(tmp_path)  # device="auto": CPU on the test machine
    assert pred.class_names == ["background", "cell"] and pred.device == select_device("auto")
    raw = (np.random.default_rng(8).random((40, 36)) * 4000 + 100).astype(np.uint16)
    out = pred(raw)  # (Y, X) accepted for a one-channel model
    assert isinstance(out, Prediction)
    assert out.labels.shape == (40, 36) and out.labels.dtype == np.uint8
    assert out.probabilities.shape == (2, 40, 36) and out.confidence.dtype == np.float32
    np.testing.assert_array_equal(out.labels, out.probabilities.argmax(0))
    np.testing.assert_allclose(out.confidence, out.probabilities.max(0))
    lo, hi = np.percentile(raw, [1.0, 99.8])
    normalised = ((raw - lo) / (hi - lo)).astype(np.float32)[None]
    ref = sliding_window_predict(pred.model, normalised, pred.roi_for((40, 36)))
    np.testing.assert_allclose(out.probabilities, ref, atol=1e-5)
    # the raw image is not what the model sees
    assert np.abs(pred(raw, normalise=False).probabilities - ref).max() > 1e-3


def test_predictor_roi_choice():
    model = _unet(3)
    assert Predictor(model).roi_for((100, 500, 500)) == (32, 128, 128)
    assert Predictor(model).roi_for((10, 50, 500)) == (10, 50, 128)
    trained_big = Predictor(model, {"model": {}, "train_config": {"patch_size": [48, 64, 256]}})
    assert trained_big.roi_for((100, 500, 500)) == (48, 128, 256)
    assert Predictor(model, roi_size=40).roi_for((100, 500, 500)) == (40, 40, 40)
    stored = Predictor(model, {"model": {}, "inference": {"roi_size": [8, 16, 16]}})
    assert stored.roi_for((100, 500, 500)) == (8, 16, 16)


def test_predictor_to_channels_first():
    import dask.array as da

    pred = Predictor(_unet(3, in_channels=2))
    zcyx = da.zeros((5, 2, 7, 9), chunks=(1, 2, 7, 9))
    out = pred.to_channels_first(zcyx, "ZCYX")
    assert isinstance(out, da.Array) and out.shape == (2, 5, 7, 9)
    assert pred.to_channels_first(np.zeros((1, 5, 7, 9, 2)), "TZYXS").shape == (2, 5, 7, 9)
    with pytest.raises(InferenceError, match="axis T of size 3"):
        pred.to_channels_first(np.zeros((3, 5, 2, 7, 9)), "TZCYX")
    with pytest.raises(InferenceError, match="lacks Z"):
        pred.to_channels_first(np.zeros((2, 7, 9)), "CYX")
    with pytest.raises(InferenceError, match="2 channel"):
        pred.to_channels_first(np.zeros((5, 7, 9)), "ZYX")
    one = Predictor(_unet(2))
    assert one.to_channels_first(np.zeros((1, 7, 9)), "ZYX").shape == (1, 7, 9)
    # a 2D model takes (C, Z, Y, X) volumes slice by slice; the channel count is still checked
    with pytest.raises(InferenceError, match="expects 1 channel"):
        one(np.zeros((2, 3, 7, 9), np.float32))
    with pytest.raises(InferenceError, match="channels-first 2D"):
        one(np.zeros((2, 2, 3, 7, 9), np.float32))


def test_predictor_channels_last_gives_same_probabilities():
    import copy

    model = _unet(3)
    image = np.random.default_rng(9).normal(size=(1, 9, 20, 20)).astype(np.float32)
    ref = sliding_window_predict(copy.deepcopy(model), image, (8, 16, 16))
    pred = Predictor(model, roi_size=(8, 16, 16))  # channels_last=True by default
    second = pred.model.inc[1][0].weight  # 4 input channels: the layouts differ
    assert second.is_contiguous(memory_format=torch.channels_last_3d) and not second.is_contiguous()
    np.testing.assert_allclose(pred(image, normalise=False).probabilities, ref, atol=1e-5)
