"""Grad-CAM on models whose answer is known; thresholds and pseudo-masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.models import ModelConfig, build_model
from napari_labelfx.tools.gradcam import (
    GradCamError,
    best_thresholds,
    grad_cam,
    normalise_maps,
    pseudo_mask,
    unet_grad_cam,
)

torch.set_num_threads(1)


def _known_head():
    # image logits = W @ global-average(features): class 0 reads channel 0, class 1 channel 1,
    # class 2 channel 0 minus channel 1
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    return lambda a: a.flatten(2).mean(2) @ w.T


def test_grad_cam_known_answer():
    a = torch.zeros(1, 2, 8, 8)
    a[0, 0, :, :4] = 1.0  # channel 0 fires on the left half
    a[0, 1, :, 4:] = 2.0  # channel 1 on the right half
    maps = grad_cam(a, _known_head(), [0, 1, 2])
    n = 64.0
    assert torch.allclose(maps[0, 0], a[0, 0] / n)  # alpha = (1/64, 0)
    assert torch.allclose(maps[0, 1], a[0, 1] / n)
    # class 2: ReLU(A0 - A1) / 64: the right half is negative evidence and vanishes
    assert torch.allclose(maps[0, 2], torch.relu(a[0, 0] - a[0, 1]) / n)
    up = grad_cam(a, _known_head(), [0], size=(16, 16))
    assert up.shape == (1, 1, 16, 16) and float(up[0, 0, :, :7].min()) > 0 and float(up[0, 0, :, 9:].max()) == 0
    with pytest.raises(GradCamError, match="out of range"):
        grad_cam(a, _known_head(), [3])


def test_unet_grad_cam_matches_direct_computation_and_needs_a_head():
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=2, width=4, num_classes=2, image_head=True))
    image = np.random.default_rng(0).normal(size=(1, 20, 12)).astype(np.float32)
    maps, probs = unet_grad_cam(model, image, [1])
    assert maps.shape == (1, 20, 12) and probs.shape == (2,) and (maps >= 0).all()
    model.eval()
    feats = model.encode(torch.from_numpy(image)[None])
    direct = grad_cam(feats, model.classify, [1], size=(20, 12))[0].numpy()
    np.testing.assert_allclose(maps, direct, rtol=1e-5, atol=1e-6)
    plain = build_model(ModelConfig(depth=2, width=4, num_classes=2))
    with pytest.raises(GradCamError, match="no image-level head"):
        unet_grad_cam(plain, image)


def test_best_threshold_and_pseudo_mask():
    ramp = np.tile(np.linspace(0, 1, 21, dtype=np.float32), (5, 1))[None]  # (1, 5, 21)
    truth = ramp >= 0.6
    thr, iou = best_thresholds([ramp], [truth], fill_holes=False)
    assert thr[0] == pytest.approx(0.6) and iou[0] == pytest.approx(1.0)
    # a ring-shaped map: the pseudo-mask fills the hole
    ring = np.zeros((1, 9, 9), np.float32)
    ring[0, 2:7, 2:7] = 1.0
    ring[0, 4, 4] = 0.0
    filled = pseudo_mask(ring, [0.5])
    assert filled[4, 4] == 1 and filled.sum() == 25
    # two classes overlapping: the higher map wins; an absent tag removes a class
    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, :, :3] = 0.9
    maps[1, :, 2:] = 1.0
    seg = pseudo_mask(maps, [0.5, 0.5], fill_holes=False)
    assert seg[:, :2].tolist() == [[1, 1]] * 4 and (seg[:, 2:] == 2).all()
    assert (pseudo_mask(maps, [0.5, 0.5], present=[True, False], fill_holes=False)[:, 2] == 1).all()
    ml = pseudo_mask(maps, [0.5, 0.5], multilabel=True, fill_holes=False)
    assert ml.dtype == np.uint8 and ml[:, 0, 2].tolist() == [1, 1]  # overlap kept in multi-label
    norm = normalise_maps(np.stack([maps[0] * 4, np.zeros((4, 4), np.float32)]))
    assert norm[0].max() == 1.0 and norm[1].max() == 0.0
