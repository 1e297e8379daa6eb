"""Review bookkeeping: the diff finds added/removed/reshaped objects, accept/reject/undo change exactly
the right pixels, rejections survive in layer metadata as protected pixels."""
import numpy as np
import pytest

from napari_labelfx.annotations.review import REVIEW_KEY, ReviewError, ReviewSession, diff_labels, protected_mask


def _pair():
    initial = np.zeros((30, 40), np.int32)
    initial[2:8, 2:8] = 1  # kept as is
    initial[2:8, 20:26] = 2  # removed by the correction
    initial[15:20, 5:10] = 3  # grown on two sides
    corrected = np.zeros((30, 40), np.int64)
    corrected[2:8, 2:8] = 1
    corrected[14:21, 5:10] = 1
    corrected[20:26, 30:36] = 1  # a missing cell, added
    return initial, corrected


def test_diff_finds_each_kind_once():
    initial, corrected = _pair()
    changes = diff_labels(initial, corrected)
    kinds = sorted(c.kind for c in changes)
    assert kinds == ["added", "removed", "reshaped"]
    by = {c.kind: c for c in changes}
    assert by["added"].size == 36 and by["added"].bbox == [[20, 26], [30, 36]]
    assert by["removed"].size == 36 and by["removed"].label == 2 and (by["removed"].values == 0).all()
    assert by["reshaped"].size == 10  # rows 14 and 20, five pixels each: one change, not two
    assert by["added"].centre == (22.5, 32.5)
    assert diff_labels(corrected, corrected) == []
    with pytest.raises(ReviewError, match="shape"):
        diff_labels(initial, corrected[:5])


def test_accept_reject_undo_write_exactly_the_right_pixels():
    initial, corrected = _pair()
    training = initial.copy()
    s = ReviewSession(initial, corrected, training)
    by = {c.kind: c for c in s.changes}
    before = training.copy()
    assert s.accept(by["added"].index) == 36
    diff = training != before
    assert diff.sum() == 36 and diff[20:26, 30:36].all()
    assert training[20:26, 30:36].min() == 4  # a new instance id in an instance mask
    s.accept(by["reshaped"].index)
    assert (training[14:21, 5:10] == 3).all()  # the grown object keeps its instance id
    assert (training != before).sum() == 46
    s.reject(by["removed"].index)
    assert (training[2:8, 20:26] == 2).all()
    assert s.counts() == {"pending": 0, "accepted": 2, "rejected": 1}
    record = s.rejection_record()
    mask = protected_mask({REVIEW_KEY: record}, training.shape)
    assert mask.sum() == 36 and mask[2:8, 20:26].all()
    assert s.undo() == by["removed"].index and by["removed"].status == "pending"
    assert s.undo() == by["reshaped"].index
    assert s.undo() == by["added"].index
    assert np.array_equal(training, before) and s.undo() is None
    assert initial[20:26, 30:36].max() == 0  # the person's labels are never touched
    # rejecting an accepted change restores what was there before the accept
    s.accept(by["removed"].index)
    assert training[2:8, 20:26].max() == 0
    s.reject(by["removed"].index)
    assert np.array_equal(training, before)


def test_semantic_labels_and_accept_all():
    initial = np.zeros((10, 10), np.int64)
    initial[1:4, 1:4] = 2
    corrected = initial.copy()
    corrected[1:4, 1:4] = 1  # class swap: reshaped, written with the corrected class
    corrected[6:9, 6:9] = 2
    training = initial.copy()
    s = ReviewSession(initial, corrected, training, initial_is_instances=False)
    assert s.accept_all() == 18
    assert np.array_equal(training, corrected)
    assert protected_mask({}, (10, 10)) is None
    with pytest.raises(ReviewError, match="outside"):
        protected_mask({REVIEW_KEY: {"rejected": [{"pixels": [100]}]}}, (10, 10))


def test_volumes_diff_per_object():
    initial = np.zeros((4, 12, 12), np.uint16)
    initial[1:3, 1:5, 1:5] = 1
    initial[1:3, 7:11, 7:11] = 2
    corrected = (initial > 0).astype(np.int64)
    corrected[1:3, 7:11, 7:11] = 0
    s = ReviewSession(initial, corrected, initial.copy())
    assert [c.kind for c in s.changes] == ["removed"] and s.changes[0].bbox == [[1, 3], [7, 11], [7, 11]]
    s.accept(0)
    assert s.training[1:3, 7:11, 7:11].max() == 0 and s.training[1:3, 1:5, 1:5].min() == 1
