"""Patch sampling: annotated slices of partial volumes, padding, multi-label, 3D, instances."""
from __future__ import annotations

import numpy as np
import pytest

from napari_labelfx.annotations import IGNORE_INDEX, MULTILABEL_IGNORE, LabelKind, TrainingItem
from napari_labelfx.data import PatchSampler, TrainingDataError, check_items, crop_pad


def _partial_volume() -> TrainingItem:
    """A 12-slice volume whose only annotated slices are 3 and 8; the image encodes the slice index."""
    z, y, x = 12, 40, 40
    image = np.broadcast_to(np.arange(z, dtype=np.float32)[:, None, None], (z, y, x))[None].copy()
    target = np.full((z, y, x), IGNORE_INDEX, np.int64)
    target[3, 5:15, 5:15] = 1
    target[3, 20:30, 20:30] = 0
    target[8, 10:12, 10:30] = 1  # a thin scribble
    return TrainingItem(image, target, LabelKind.SCRIBBLE, name="vol")


def test_2d_sampling_only_uses_annotated_slices_of_a_partial_volume():
    items = check_items([_partial_volume()], num_classes=2)
    sampler = PatchSampler(items, (16, 16), mode="2d", num_classes=2, rng=0)
    seen = set()
    for _ in range(30):
        batch = sampler.sample(4)
        assert batch["image"].shape == (4, 1, 16, 16)
        assert batch["target"].shape == (4, 16, 16)
        # every patch comes from one slice: its image value is the slice index
        slices = batch["image"][:, 0].reshape(4, -1)
        assert np.all(slices == slices[:, :1])
        seen.update(int(s) for s in slices[:, 0])
        assert np.array_equal(batch["origin"][:, 0], slices[:, 0].astype(int))
    assert seen == {3, 8}


def test_annotated_patches_contain_the_sparse_scribble():
    items = check_items([_partial_volume()], num_classes=2)
    sampler = PatchSampler(items, (16, 16), mode="2d", num_classes=2, annotated_fraction=1.0, rng=1)
    batch = sampler.sample(64)
    assert np.all((batch["target"] != IGNORE_INDEX).reshape(64, -1).any(axis=1))


def test_small_image_is_padded_and_3d_mode_works():
    vol = _partial_volume()
    items = check_items([vol], num_classes=2, mode="3d")
    sampler = PatchSampler(items, (16, 48, 48), mode="3d", num_classes=2, rng=0)
    batch = sampler.sample(3)
    assert batch["image"].shape == (3, 1, 16, 48, 48)
    assert batch["target"].shape == (3, 16, 48, 48)
    # the volume is 12 x 40 x 40: padding is unknown in the target and zero in the image
    assert (batch["target"] == IGNORE_INDEX).any()
    assert (batch["target"] != IGNORE_INDEX).any()


def test_multilabel_targets_and_instances_travel_together():
    rng = np.random.default_rng(0)
    image = rng.random((2, 30, 30)).astype(np.float32)
    target = np.full((3, 30, 30), MULTILABEL_IGNORE, np.uint8)
    target[:, :10, :10] = 0
    target[1, 2:6, 2:6] = 1
    instances = np.zeros((30, 30), np.int32)
    instances[2:6, 2:6] = 7
    tags = np.array([0, 1, 0], np.float32)
    items = check_items([TrainingItem(image, target, LabelKind.WEAK, instances, tags)], 3, multilabel=True)
    sampler = PatchSampler(items, (8, 8), multilabel=True, num_classes=3, annotated_fraction=1.0, rng=0)
    batch = sampler.sample(16)
    assert batch["target"].shape == (16, 3, 8, 8) and batch["target"].dtype == np.uint8
    assert batch["instances"].shape == (16, 8, 8)
    assert batch["tags"].shape == (16, 3) and batch["has_tags"].all()
    # wherever the instance id is present, class 1 is present too (same crop)
    assert np.all(batch["target"][:, 1][batch["instances"] == 7] == 1)


def test_no_annotation_is_a_clear_error():
    item = TrainingItem(np.zeros((1, 8, 8), np.float32), np.full((8, 8), IGNORE_INDEX), LabelKind.SCRIBBLE)
    with pytest.raises(TrainingDataError, match="no training item has an annotated pixel"):
        PatchSampler(check_items([item], 2), (8, 8), num_classes=2)


@pytest.mark.parametrize(
    "item, match",
    [
        (TrainingItem(np.zeros((8, 8), np.float32)), "must be \\(C, Y, X\\)"),
        (TrainingItem(np.zeros((1, 8, 8), np.float32), np.zeros((8, 9), np.int64), name="b"), "'b'.*target shape"),
        (TrainingItem(np.zeros((1, 8, 8), np.float32), np.full((8, 8), 5), name="c"), "'c'.*class indices 0..1"),
        (TrainingItem(np.full((1, 8, 8), np.nan, np.float32), name="d"), "'d'.*NaN"),
    ],
)
def test_check_items_names_the_item_and_problem(item, match):
    with pytest.raises(TrainingDataError, match=match):
        check_items([item], num_classes=2)


def test_crop_pad_fills_outside():
    a = np.arange(16).reshape(1, 4, 4)
    out = crop_pad(a, (-1, 2), (3, 3), fill=-9)
    expected = np.array([[-9, -9, -9], [2, 3, -9], [6, 7, -9]])
    assert np.array_equal(out[0], expected)
    assert np.array_equal(crop_pad(a, (1, 1), (2, 2))[0], [[5, 6], [9, 10]])
