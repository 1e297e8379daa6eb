"""Strong augmentation: geometry moves labels exactly, CutOut is background, outside is unknown."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE
from napari_labelfx.data.errors import AugmentationError
from napari_labelfx.data.strong_augment import (
    StrongAugmentConfig,
    affine_theta,
    strong_augment,
    warp,
    warp_target,
)

torch.set_num_threads(1)


def _labels(b: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (b, size, size), generator=g)


def test_integer_translation_shifts_labels_exactly():
    t = _labels(1)
    theta = torch.from_numpy(affine_theta(0.0, 0.0, 0.0, 3, -2, (16, 16)))[None]
    out = warp_target(t, theta, False)
    # content moves 3 px right and 2 px up; what comes from outside is unknown
    np.testing.assert_array_equal(out[0, :14, 3:].numpy(), t[0, 2:, :13].numpy())
    assert (out[0, :, :3] == IGNORE_INDEX).all() and (out[0, 14:, :] == IGNORE_INDEX).all()


def test_quarter_turn_equals_rot90():
    t = _labels(1)
    theta = torch.from_numpy(affine_theta(90.0, 0.0, 0.0, 0, 0, (16, 16)))[None]
    out = warp_target(t, theta, False)[0].numpy()
    rotations = [np.rot90(t[0].numpy(), k) for k in (1, 3)]
    assert any(np.array_equal(out, r) for r in rotations)


def test_image_and_labels_move_together_under_random_geometry():
    rng = np.random.default_rng(1)
    t = _labels(4, 24, seed=2)
    for _ in range(5):
        theta = torch.from_numpy(np.stack([affine_theta(float(rng.uniform(-30, 30)), float(rng.uniform(-0.3, 0.3)),
                                                        float(rng.uniform(-0.3, 0.3)), int(rng.integers(-5, 6)),
                                                        int(rng.integers(-5, 6)), (24, 24)) for _ in range(4)]))
        labels = warp_target(t, theta, False)
        # an "image" that is the label map, sampled the same way (nearest), gives the same labels
        img = warp(t[:, None].float() + 1.0, theta, "nearest")[:, 0]
        inside = labels != IGNORE_INDEX
        assert inside.any()
        np.testing.assert_array_equal((img[inside] - 1).long().numpy(), labels[inside].numpy())
        assert (img[~inside] == 0).all()


def test_strong_augment_multilabel_geometry_cutout_and_ignore():
    rng = np.random.default_rng(3)
    hot = (torch.rand(3, 2, 20, 20, generator=torch.Generator().manual_seed(4)) > 0.5).to(torch.uint8)
    image = hot.float().sum(1, keepdim=True)
    view = strong_augment(image, hot, True, rng, StrongAugmentConfig(n_ops=3, magnitude=1.0, cutout=0.5))
    assert view.image.shape == image.shape and view.target.shape == hot.shape
    assert set(view.target.unique().tolist()) <= {0, 1, MULTILABEL_IGNORE}
    cut = view.cutout[:, None].expand_as(view.target)
    assert (view.target[cut] == 0).all()  # CutOut = no class
    assert view.cutout.any()
    # outside pixels are unknown in every class at once, and have weight 0
    unknown = (view.target == MULTILABEL_IGNORE)
    assert torch.equal(unknown.all(1), unknown.any(1))
    assert (view.weight[unknown.any(1)] == 0).all()


def test_strong_augment_cutout_is_background_multiclass():
    rng = np.random.default_rng(5)
    t = torch.full((2, 16, 16), 2, dtype=torch.int64)
    view = strong_augment(torch.rand(2, 1, 16, 16), t, False, rng,
                          StrongAugmentConfig(n_ops=0, cutout=0.6))
    assert view.cutout.any()
    assert (view.target[view.cutout] == 0).all()
    assert (view.target[~view.cutout] == 2).all()
    assert (view.weight == 1).all()


def test_intensity_only_keeps_labels_and_changes_image():
    rng = np.random.default_rng(6)
    t = _labels(3)
    image = torch.rand(3, 2, 16, 16)
    view = strong_augment(image, t, False, rng, StrongAugmentConfig(n_ops=4, geometric=False, cutout=0.0))
    assert torch.equal(view.target, t)
    assert all(op not in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y") for ops in view.ops for op in ops)
    assert torch.isfinite(view.image).all()


def test_volume_patches_and_bad_input():
    rng = np.random.default_rng(7)
    t = torch.randint(0, 3, (2, 3, 12, 12))
    view = strong_augment(torch.rand(2, 1, 3, 12, 12), t, False, rng)
    assert view.image.shape == (2, 1, 3, 12, 12) and view.target.shape == t.shape
    with pytest.raises(AugmentationError, match="does not fit"):
        strong_augment(torch.rand(2, 1, 12, 12), torch.zeros(2, 10, 12, dtype=torch.int64), False, rng)
    with pytest.raises(AugmentationError, match="magnitude"):
        StrongAugmentConfig(magnitude=2.0)
