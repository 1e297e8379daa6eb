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


def _scribbled(shape=(1, 150, 170), seed=0) -> TrainingItem:
    item = _item(shape, seed)
    target = np.full(item.target.shape, IGNORE_INDEX, np.int64)
    target[..., 10:140, 20:30] = 1  # a stroke near the left edge and one crossing the right border
    target[..., 60:70, 100:170] = 2
    return TrainingItem(item.image, target, LabelKind.SCRIBBLE)


def test_whole_images_held_out_are_scored_once_and_never_trained_on():
    from napari_labelfx.data.split import count_painted, split_by_item

    items = [_scribbled(seed=s) for s in range(9)] + [TrainingItem(np.zeros((1, 40, 40), np.float32), None,
                                                                  LabelKind.SCRIBBLE)]
    assert count_painted(items) == 9
    split = split_by_item(items, 0.2, (64, 64), seed=1)
    assert split.enabled and len(split.held_items) == 2  # round(0.2 * 9) of the painted images
    for i, (train, source) in enumerate(zip(split.train_items, split.source_items)):
        if source.target is None:
            assert train.target is None
            continue
        painted = source.target >= 0
        if i in split.held_items:
            assert (train.target == IGNORE_INDEX).all()  # nothing of it trains
            held = _held_out(split, i)
            np.testing.assert_array_equal(held, painted)  # every painted pixel is scored ...
            n = sum(int(w.mask.sum()) for w in split.windows if w.item_index == i)
            assert n == int(painted.sum())  # ... exactly once
            for w in split.windows:  # the image is wider than a window: windows stay inside it
                assert all(0 <= s and s + z <= d for s, z, d in zip(w.start, w.size, painted.shape))
        else:
            np.testing.assert_array_equal(train.target, source.target)
            assert not any(w.item_index == i for w in split.windows)
    assert split.n_val_pixels + split.n_train_pixels == sum(int((it.target >= 0).sum()) for it in items[:9])
    # the same images stay held out when strokes are added, and one painted image always trains
    more = list(items)
    more[4] = TrainingItem(more[4].image, np.where(more[4].target < 0, 0, more[4].target), LabelKind.SCRIBBLE)
    assert split_by_item(more, 0.2, (64, 64), seed=1).held_items == split.held_items
    two = split_by_item(items[:2], 0.9, (64, 64), seed=1)
    assert len(two.held_items) == 1
    one = split_by_item(items[:1], 0.5, (64, 64))
    assert not one.enabled and "fewer than two" in one.message


def test_whole_volumes_held_out_in_2d_mode_are_scored_slice_by_slice():
    from napari_labelfx.data.split import split_by_item

    items = [_scribbled((1, 5, 80, 90), seed=s) for s in range(3)]
    split = split_by_item(items, 0.3, (48, 48), mode="2d", seed=0)
    (held,) = split.held_items
    assert all(w.on_slice and w.size == (1, 48, 48) for w in split.windows)
    np.testing.assert_array_equal(_held_out(split, held), items[held].target >= 0)
    split3 = split_by_item(items, 0.3, (4, 48, 48), mode="3d", seed=0)
    assert all(not w.on_slice and w.size == (4, 48, 48) for w in split3.windows)
    np.testing.assert_array_equal(_held_out(split3, held), items[held].target >= 0)
