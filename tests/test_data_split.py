"""Validation split: held-out pixels never reach training; stable blocks; too little data."""
from __future__ import annotations

import numpy as np

from napari_labelfx.annotations import IGNORE_INDEX, MULTILABEL_IGNORE, LabelKind, TrainingItem
from napari_labelfx.data import check_items, split_validation


def _item(shape=(1, 160, 160), seed=0) -> TrainingItem:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 3, shape[1:]).astype(np.int64)
    return TrainingItem(rng.random(shape).astype(np.float32), target, LabelKind.STRONG)


def _held_out(split, index):
    item = split.source_items[index]
    held = np.zeros(item.image.shape[1:], bool)
    for w in split.windows:
        if w.item_index != index:
            continue
        for pos in np.argwhere(w.mask):
            held[tuple(np.asarray(w.start) + pos)] = True
    return held


def test_validation_pixels_never_overlap_training_pixels():
    items = check_items([_item(seed=0), _item(seed=1)], num_classes=3)
    split = split_validation(items, 0.25, (64, 64), block=16, seed=3)
    assert split.enabled and split.message is None
    total_val = 0
    for i, (src, train) in enumerate(zip(split.source_items, split.train_items)):
        held = _held_out(split, i)
        total_val += held.sum()
        assert np.all(train.target[held] == IGNORE_INDEX)  # held out: unknown for training
        assert np.array_equal(train.target[~held], src.target[~held])  # the rest untouched
    assert total_val == split.n_val_pixels
    assert split.n_train_pixels + split.n_val_pixels == 2 * 160 * 160
    # every held-out pixel is scored once: window masks do not overlap
    assert sum(int(w.mask.sum()) for w in split.windows) == split.n_val_pixels
    # the windows' targets carry exactly the held-out labels
    w = split.windows[0]
    image, target = split.window_arrays(w)
    assert image.shape == (1, 64, 64) and np.all((target != IGNORE_INDEX) == w.mask)


def test_split_is_stable_when_annotations_grow():
    base = _item()
    partial = TrainingItem(base.image, base.target.copy(), LabelKind.SCRIBBLE)
    partial.target[:, 80:] = IGNORE_INDEX
    a = split_validation(check_items([partial], 3), 0.3, (64, 64), block=16, seed=5)
    b = split_validation(check_items([base], 3), 0.3, (64, 64), block=16, seed=5)
    held_a, held_b = _held_out(a, 0), _held_out(b, 0)
    # pixels held out with the partial annotation stay held out once more is annotated
    assert held_a.any() and np.all(held_b[held_a])


def test_too_few_annotated_pixels_train_on_all_with_a_message():
    target = np.full((64, 64), IGNORE_INDEX, np.int64)
    target[10, 10:20] = 1
    target[40, 10:20] = 0
    item = TrainingItem(np.zeros((1, 64, 64), np.float32), target, LabelKind.SCRIBBLE)
    split = split_validation(check_items([item], 2), 0.2, (32, 32), block=32)
    assert not split.enabled and "too few annotated pixels" in split.message
    assert split.train_items[0] is not None and np.array_equal(split.train_items[0].target, target)


def test_volume_slices_and_multilabel():
    rng = np.random.default_rng(0)
    target = np.full((2, 40, 64, 64), MULTILABEL_IGNORE, np.uint8)
    target[:, ::4] = rng.integers(0, 2, (2, 10, 64, 64))  # every fourth slice annotated
    item = TrainingItem(rng.random((1, 40, 64, 64)).astype(np.float32), target, LabelKind.STRONG)
    items = check_items([item], 2, multilabel=True)
    split = split_validation(items, 0.3, (32, 32), mode="2d", multilabel=True, block=16, seed=0)
    assert split.enabled
    held = _held_out(split, 0)
    assert np.all(split.train_items[0].target[:, held] == MULTILABEL_IGNORE)
    for w in split.windows:
        assert w.on_slice and w.size[0] == 1 and w.start[0] % 4 == 0
        image, tgt = split.window_arrays(w)
        assert image.shape == (1, 32, 32) and tgt.shape == (2, 32, 32)
