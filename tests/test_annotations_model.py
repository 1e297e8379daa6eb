import pickle

import numpy as np
import pytest

from napari_labelfx.annotations import (
    IGNORE_INDEX as IG,
)
from napari_labelfx.annotations import (
    MULTILABEL_IGNORE as MI,
)
from napari_labelfx.annotations import (
    PRECEDENCE,
    AnnotatedImage,
    AnnotationLayer,
    AnnotationSet,
    ClassTable,
    ImageError,
    LabelKind,
)
from napari_labelfx.annotations.model import to_channels_first

T = ClassTable(["a", "b"])
IMG = np.arange(36, dtype=np.uint16).reshape(6, 6)


def _item(layers, table=T, image=IMG, axes="YX", tags=None, normalise=True):
    im = AnnotatedImage("img", image, axes, layers, tags or {})
    return AnnotationSet(table, [im]).training_items(normalise=normalise)[0]


def test_precedence_order_is_documented():
    assert PRECEDENCE == (LabelKind.NOISY, LabelKind.WEAK, LabelKind.SCRIBBLE, LabelKind.STRONG)


def test_merge_precedence_strong_over_scribble_over_weak_over_noisy():
    noisy = np.ones((6, 6), int)  # says "a" everywhere
    weak = np.zeros((6, 6), int)
    weak[0:3, 0:3] = 2  # weak box of class b
    scr = np.zeros((6, 6), int)
    scr[1, 1] = 1  # background scribble inside the weak box
    scr[5, 5] = 3  # class b scribble in noisy area
    it = _item(
        [
            AnnotationLayer("strong", "strong", np.where(np.arange(36).reshape(6, 6) == 0, 2, 0)),  # 2D: full
            AnnotationLayer("noisy", "noisy", noisy),
            AnnotationLayer("weak", "weak", weak),
            AnnotationLayer("scr", "scribble", scr),
        ]
    )
    # the 2D strong mask is known everywhere (unpainted = background), so it wins everywhere
    assert it.kind is LabelKind.STRONG
    assert it.target[0, 0] == 2 and np.all(it.target.ravel()[1:] == 0)
    assert it.instances is None and it.extra["sources"] == ["strong"]


def test_merge_without_strong():
    noisy = np.ones((6, 6), int)
    weak = np.zeros((6, 6), int)
    weak[0:3, 0:3] = 2
    weak[4:6, 0:2] = 2  # second weak component
    scr = np.zeros((6, 6), int)
    scr[1, 1] = 1
    scr[5, 5] = 3
    it = _item(
        [
            AnnotationLayer("scr", "scribble", scr),
            AnnotationLayer("weak", "weak", weak),
            AnnotationLayer("noisy", "noisy", noisy),
        ]
    )
    t = it.target
    assert it.kind is LabelKind.SCRIBBLE and it.extra["sources"] == ["noisy", "weak", "scribble"]
    assert t[1, 1] == 0 and t[5, 5] == 2  # scribbles win
    assert t[0, 0] == 2 and t[2, 2] == 2  # weak over noisy
    assert t[3, 5] == 1  # noisy elsewhere
    inst = it.instances
    assert inst.dtype == np.int32 and inst.shape == (6, 6)
    assert inst[0, 0] > 0 and inst[4, 0] > 0 and inst[0, 0] != inst[4, 0]
    assert inst[1, 1] == 0  # the pixel came from the scribble, not the weak box
    assert inst[3, 5] == 0 and sorted(np.unique(inst)) == [0, 1, 2]


def test_weak_only_and_shapes_layers_share_instance_ids():
    weak = np.zeros((6, 6), int)
    weak[0, 0:2] = 7
    shapes = [(np.array([[3, 3], [3, 5], [5, 5], [5, 3]], float), "rectangle")]
    it = _item([AnnotationLayer("w", "weak", weak), AnnotationLayer("boxes", "weak", shapes=shapes, class_name="b")])
    assert it.kind is LabelKind.WEAK
    assert it.target[0, 0] == 1 and it.target[4, 4] == 2 and it.target[2, 2] == IG
    assert set(np.unique(it.instances)) == {0, 1, 2}
    assert it.instances[0, 0] != it.instances[4, 4]


def test_later_layer_of_same_kind_wins():
    s1 = np.full((6, 6), 2)
    s2 = np.zeros((6, 6), int)
    s2[0, 0] = 3
    it = _item([AnnotationLayer("s1", "scribble", s1), AnnotationLayer("s2", "scribble", s2)])
    assert it.target[0, 0] == 2 and it.target[1, 1] == 1


def test_partial_volume_strong_falls_back_to_lower_layers():
    vol = np.zeros((3, 4, 4), np.float32)
    strong = np.zeros((3, 4, 4), int)
    strong[1, 0, 0] = 1
    scr = np.zeros((3, 4, 4), int)
    scr[2, 3, 3] = 3
    it = _item(
        [AnnotationLayer("m", "strong", strong), AnnotationLayer("s", "scribble", scr)], image=vol, axes="ZYX"
    )
    assert it.image.shape == (1, 3, 4, 4) and it.target.shape == (3, 4, 4)
    assert np.all(it.target[0] == IG)
    assert it.target[1, 0, 0] == 1 and it.target[1, 2, 2] == 0
    assert it.target[2, 3, 3] == 2 and it.target[2, 0, 0] == IG
    # explicit slices: slice 0 annotated as all background
    it = _item([AnnotationLayer("m", "strong", strong, partial=[0, 1])], image=vol, axes="ZYX")
    assert np.all(it.target[0] == 0) and np.all(it.target[2] == IG)


def test_multilabel_merge_per_channel():
    table = ClassTable(["lung", "heart"], multilabel=True)
    lung = np.zeros((6, 6), int)
    lung[0:3] = 1
    heart = np.zeros((6, 6), int)
    heart[2:4] = 1  # overlaps the lung on row 2
    it = _item(
        [
            AnnotationLayer("lung", "strong", lung, class_name="lung"),
            AnnotationLayer("heart", "strong", heart, class_name="heart"),
        ],
        table=table,
    )
    t = it.target
    assert t.dtype == np.uint8 and t.shape == (3, 6, 6)
    np.testing.assert_array_equal(t[:, 2, 0], [0, 1, 1])  # both classes: overlap kept
    np.testing.assert_array_equal(t[:, 0, 0], [0, 1, 0])
    np.testing.assert_array_equal(t[:, 5, 0], [1, 0, 0])  # neither: background derived
    assert it.kind is LabelKind.STRONG
    # a scribble over a partial multi-label annotation leaves other channels unknown
    scr = np.zeros((6, 6), int)
    scr[5, 5] = 3  # heart stroke
    layers = [AnnotationLayer("lung", "strong", lung, class_name="lung"), AnnotationLayer("s", "scribble", scr)]
    it = _item(layers, table=table)
    np.testing.assert_array_equal(it.target[:, 5, 5], [0, 0, 1])
    np.testing.assert_array_equal(it.target[:, 5, 0], [MI, 0, MI])


def test_image_conversion_channels_and_normalisation():
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 4), dtype=np.uint8)
    x = to_channels_first(rgb, "YXS", normalise=False)
    assert x.shape == (3, 5, 7) and x.dtype == np.float32
    np.testing.assert_array_equal(x[1], rgb[..., 1])
    cz = np.zeros((2, 3, 5, 7))
    assert to_channels_first(cz, "ZCYX", normalise=False).shape == (3, 2, 5, 7)
    assert to_channels_first(np.zeros((1, 2, 5, 7)), "TZYX", normalise=False).shape == (1, 2, 5, 7)
    ramp = np.linspace(0, 1000, 1000, dtype=np.float64).reshape(1, 20, 50)
    n = to_channels_first(ramp, "CYX")
    assert n.dtype == np.float32
    assert abs(np.percentile(n, 1)) < 1e-3 and abs(np.percentile(n, 99.8) - 1) < 1e-3
    with pytest.raises(ImageError, match="time series"):
        AnnotationSet(T, [AnnotatedImage("t", np.zeros((2, 4, 4)), "TYX")]).validate()


def test_training_item_fields_tags_and_pickle():
    scr = np.zeros((6, 6), int)
    scr[0, 0] = 2
    it = _item([AnnotationLayer("s", "scribble", scr)], tags={"b"})
    assert it.name == "img" and it.image.shape == (1, 6, 6) and it.spatial_shape == (6, 6)
    assert it.tags.tolist() == [0, 0, 1] and "slice_tags" not in it.extra
    again = pickle.loads(pickle.dumps(it))
    np.testing.assert_array_equal(again.target, it.target)


def test_image_level_only_and_unlabelled():
    it = _item([], tags={"a"})
    assert it.kind is LabelKind.IMAGE_LEVEL and it.target is None and it.tags.tolist() == [0, 1, 0]
    im1 = AnnotatedImage("tagged", IMG, tags={"a"})
    im2 = AnnotatedImage("plain", IMG)
    items = AnnotationSet(T, [im1, im2]).training_items()
    assert items[1].kind is LabelKind.NONE and items[1].target is None and items[1].tags is None


def test_volume_slice_tags():
    vol = np.zeros((4, 5, 5), np.float32)
    it = _item([], image=vol, axes="ZYX", tags={None: {"a"}, 2: {"b"}, 0: set()})
    st = it.extra["slice_tags"]
    assert sorted(st) == [0, 2] and st[2].tolist() == [0, 0, 1] and st[0].tolist() == [0, 0, 0]
    assert it.tags.tolist() == [0, 1, 1]  # the volume has every class tagged on any slice
    assert AnnotatedImage("v", vol, "ZYX", tags={"2": ["b"]}).tags == {2: {"b"}}  # keys from JSON
    with pytest.raises(ValueError, match="tag key 'top' must be None"):
        AnnotatedImage("v", vol, "ZYX", tags={"top": ["b"]})


def test_annotation_set_helpers():
    aset = AnnotationSet(T)
    aset.add(AnnotatedImage("x", IMG))
    with pytest.raises(ValueError, match="already in the annotation set"):
        aset.add(AnnotatedImage("x", IMG))
    assert aset.image("x").name == "x" and len(aset) == 1
    with pytest.raises(ValueError, match="no image named 'y'"):
        aset.image("y")
