"""Derived label kinds: targets in the engine data contract, with the right ignore semantics."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_labelfx.annotations import IGNORE_INDEX, MULTILABEL_IGNORE, LabelKind
from napari_labelfx.evaluation import DeriveError, DeriveParams, derive_item, derive_target, parse_kind
from napari_labelfx.evaluation.derive import item_rng
from tests.test_evaluation_helpers import blob_mask


@pytest.fixture
def inst():
    return blob_mask(np.random.default_rng(3), size=96, n=8, radius=7)


def derive(mask, task, kind, seed=0, **kw):
    return derive_target(mask, task, kind, item_rng(seed, "img"), **kw)


def test_parse_kind():
    assert str(parse_kind("noisy-drop:0.5")) == "noisy-drop:0.5"
    assert parse_kind("noisy-drop").fraction == 0.3
    assert parse_kind(" Box ").name == "box"
    for bad in ("boxes", "noisy-drop:1.5", "noisy-drop:x", "scribble:3"):
        with pytest.raises(DeriveError):
            parse_kind(bad)


def test_strong_none_and_image_level(inst):
    d = derive(inst, "instance", "strong")
    assert d["kind"] is LabelKind.STRONG and d["target"].dtype == np.int64
    np.testing.assert_array_equal(d["target"], (inst > 0).astype(np.int64))
    d = derive(inst, "instance", "none")
    assert d["kind"] is LabelKind.NONE and d["target"] is None and d["tags"] is None
    d = derive(inst, "instance", "image-level")
    assert d["kind"] is LabelKind.IMAGE_LEVEL and d["target"] is None
    assert d["tags"].tolist() == [1.0, 1.0] and d["tags"].dtype == np.float32
    sem = np.zeros((20, 20), np.uint8)
    sem[2:5, 2:5] = 2
    assert derive(sem, "semantic", "image-level", num_classes=3)["tags"].tolist() == [1.0, 0.0, 1.0]


def test_scribble_marks_few_true_pixels_inside_objects_and_background(inst):
    d = derive(inst, "instance", "scribble")
    t = d["target"]
    assert d["kind"] is LabelKind.SCRIBBLE and t.dtype == np.int64
    known = t != IGNORE_INDEX
    truth = (inst > 0).astype(np.int64)
    np.testing.assert_array_equal(t[known], truth[known])  # strokes state the truth
    assert (t == 1).any() and (t == 0).any()
    assert known.mean() < 0.15  # sparse
    # foreground strokes stay off object borders; background strokes keep a margin from objects
    border = (inst > 0) & ~ndi.binary_erosion(inst > 0)
    assert not (known & border).any()
    near = ndi.binary_dilation(inst > 0, iterations=3) & (inst == 0)
    assert not (known & near).any()
    # about half of the objects get a stroke (at least one)
    touched = np.unique(inst[(t == 1)])
    assert 2 <= touched.size <= 6
    # deterministic per seed and name, different for another seed
    np.testing.assert_array_equal(t, derive(inst, "instance", "scribble")["target"])
    assert not np.array_equal(t, derive(inst, "instance", "scribble", seed=1)["target"])


def test_scribble_every_object_when_asked(inst):
    p = DeriveParams(scribble_object_fraction=1.0, scribble_length=5, scribble_background_strokes=0)
    t = derive(inst, "instance", "scribble", params=p)["target"]
    assert np.unique(inst[t == 1]).size == 8
    assert not (t == 0).any()


@pytest.mark.parametrize("shape_kind", ["box", "ellipse"])
def test_weak_shapes_leave_outside_unknown(inst, shape_kind):
    d = derive(inst, "instance", shape_kind)
    t, w = d["target"], d["instances"]
    assert d["kind"] is LabelKind.WEAK and w.dtype == np.int32
    # the weak rule: pixels outside every shape are unknown, never background
    assert not (t == 0).any()
    assert set(np.unique(t).tolist()) == {IGNORE_INDEX, 1}
    np.testing.assert_array_equal(t == 1, w > 0)
    assert len(np.unique(w[w > 0])) == 8
    # each true object lies (almost entirely) inside shapes
    assert np.mean(t[inst > 0] == 1) > 0.95
    if shape_kind == "box":
        for sl in ndi.find_objects(inst):
            assert (t[sl] == 1).all()


def test_ellipse_fits_rotated_ellipses():
    from skimage.draw import ellipse

    mask = np.zeros((100, 100), np.uint16)
    rr, cc = ellipse(50, 50, 30, 10, shape=mask.shape, rotation=np.deg2rad(35))
    mask[rr, cc] = 1
    t = derive(mask, "instance", "ellipse")["target"]
    inter = np.count_nonzero((t == 1) & (mask > 0))
    union = np.count_nonzero((t == 1) | (mask > 0))
    assert inter / union > 0.9
    box = derive(mask, "instance", "box")["target"]
    assert np.count_nonzero(box == 1) > 1.3 * np.count_nonzero(t == 1)


def test_noisy_drop_removes_and_jitters_objects(inst):
    d = derive(inst, "instance", "noisy-drop:0.5")
    t = d["target"]
    assert d["kind"] is LabelKind.NOISY and set(np.unique(t).tolist()) <= {0, 1}
    noisy = d["extra"]["noisy_instances"]
    assert noisy.max() == 4  # 8 objects, half dropped
    truth = inst > 0
    assert not np.array_equal(t == 1, truth)
    # kept objects are jittered by at most 3 px: everything painted is within 3 px of a true object
    assert not ((t == 1) & ~ndi.binary_dilation(truth, iterations=3)).any()
    none_dropped = derive(inst, "instance", "noisy-drop:0")["extra"]["noisy_instances"]
    assert none_dropped.max() == 8
    p = DeriveParams(jitter_min=0, jitter_max=0)
    np.testing.assert_array_equal(derive(inst, "instance", "noisy-drop:0", params=p)["target"], truth)


def test_noisy_classical_from_the_raw_image(inst):
    rng = np.random.default_rng(0)
    raw = (40 + 150 * (inst > 0) + rng.normal(0, 8, inst.shape)).clip(0, 255).astype(np.uint8)
    d = derive(inst, "instance", "noisy-classical", raw=raw)
    t = d["target"]
    assert d["kind"] is LabelKind.NOISY and set(np.unique(t).tolist()) == {0, 1}
    inter = np.count_nonzero((t == 1) & (inst > 0))
    assert inter / np.count_nonzero((t == 1) | (inst > 0)) > 0.7
    with pytest.raises(DeriveError, match="raw image"):
        derive(inst, "instance", "noisy-classical")
    with pytest.raises(DeriveError, match="one foreground class"):
        derive(np.stack([inst > 0, inst > 3]).astype(np.uint8), "multilabel", "noisy-classical", raw=raw)


def test_semantic_classes_keep_their_index():
    sem = np.zeros((40, 40), np.uint8)
    sem[5:15, 5:15] = 1
    sem[20:35, 20:35] = 2
    box = derive(sem, "semantic", "box", num_classes=3)
    assert set(np.unique(box["target"]).tolist()) == {IGNORE_INDEX, 1, 2}
    scr = derive(sem, "semantic", "scribble", num_classes=3)["target"]
    assert {1, 2} <= set(np.unique(scr).tolist())
    drop = derive(sem, "semantic", "noisy-drop:0", num_classes=3, params=DeriveParams(jitter_min=0, jitter_max=0))
    np.testing.assert_array_equal(drop["target"], sem)


def test_multilabel_targets_have_a_derived_background_channel():
    ml = np.zeros((2, 40, 40), np.uint8)
    ml[0, 5:30, 5:30] = 1
    ml[1, 10:20, 10:20] = 1  # overlaps channel 0
    strong = derive(ml, "multilabel", "strong")["target"]
    assert strong.shape == (3, 40, 40) and strong.dtype == np.uint8
    np.testing.assert_array_equal(strong[1:], ml)
    np.testing.assert_array_equal(strong[0], (ml.max(0) == 0).astype(np.uint8))
    box = derive(ml, "multilabel", "box")["target"]
    assert set(np.unique(box).tolist()) == {0, 1, MULTILABEL_IGNORE}
    assert (box[:, 0, 0] == MULTILABEL_IGNORE).all()  # outside every box: unknown on all channels
    assert box[2, 15, 15] == 1 and box[1, 15, 15] == 1 and box[0, 15, 15] == 0
    assert box[2, 25, 25] == MULTILABEL_IGNORE  # inside channel 0's box only: channel 1 unknown
    scr = derive(ml, "multilabel", "scribble")["target"]
    known = (scr != MULTILABEL_IGNORE).all(axis=0)
    np.testing.assert_array_equal(scr[:, known], strong[:, known])
    assert derive(ml, "multilabel", "image-level")["tags"].tolist() == [1.0, 1.0, 1.0]


def test_derive_item_normalises_and_names():
    inst = blob_mask(np.random.default_rng(1), size=48)
    image = (inst[None] > 0).astype(np.float32) * 200 + 10
    item = derive_item(image, inst, "instance", "box", seed=3, name="x")
    assert item.name == "x" and item.kind is LabelKind.WEAK and item.image.dtype == np.float32
    assert item.image.max() == pytest.approx(1.0, abs=0.05) and item.image.min() == pytest.approx(0.0, abs=0.05)
    assert item.extra["normalisation"] == {"low": 1.0, "high": 99.8, "robust": True}
    assert item.extra["derived_kind"] == "box"
