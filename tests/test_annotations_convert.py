import numpy as np
import pytest

from napari_labelfx.annotations import (
    IGNORE_INDEX as IG,
)
from napari_labelfx.annotations import (
    MULTILABEL_IGNORE as MI,
)
from napari_labelfx.annotations import (
    ClassTable,
    LabelValueError,
    ShapesError,
    labels_to_instances,
    labels_to_target,
    shapes_to_weak,
    tags_to_vector,
)

T2 = ClassTable(["a", "b"])  # values 1, 2


def test_strong_semantic_2d_unpainted_is_background():
    data = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    t = labels_to_target(data, "strong", T2, layer_name="m")
    assert t.dtype == np.int64
    np.testing.assert_array_equal(t, [[0, 1], [2, 0]])


def test_noisy_same_as_strong_for_full_masks():
    data = np.array([[0, 2], [1, 0]])
    np.testing.assert_array_equal(
        labels_to_target(data, "noisy", T2, layer_name="n"), labels_to_target(data, "strong", T2, layer_name="s")
    )


def test_instance_mask_values_outside_table_are_default_class():
    t1 = ClassTable(["nucleus"])
    data = np.array([[0, 1, 7], [300, 0, 7]], dtype=np.int32)
    np.testing.assert_array_equal(labels_to_target(data, "strong", t1, layer_name="i"), [[0, 1, 1], [1, 0, 1]])
    # values in the table keep their class, others go to the chosen default class
    t = labels_to_target(np.array([[2, 9, 0]]), "strong", T2, layer_name="i", default_class="b")
    np.testing.assert_array_equal(t, [[2, 2, 0]])
    t = labels_to_target(np.array([[1, 9, 0]]), "strong", T2, layer_name="i")
    np.testing.assert_array_equal(t, [[1, 1, 0]])


def test_single_class_layer_ignores_value_collisions():
    # an instance mask of class b whose ids 1 and 2 collide with the table's values
    data = np.array([[1, 2, 3, 0]])
    t = labels_to_target(data, "strong", T2, layer_name="cells", default_class="b", single_class=True)
    np.testing.assert_array_equal(t, [[2, 2, 2, 0]])


def test_huge_instance_ids_use_unique_path():
    data = np.array([[0, 2**40, 5]], dtype=np.int64)
    np.testing.assert_array_equal(labels_to_target(data, "strong", T2, layer_name="x"), [[0, 1, 1]])


def test_scribble_encoding_value_minus_one():
    data = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    np.testing.assert_array_equal(labels_to_target(data, "scribble", T2, layer_name="s"), [[IG, 0, 1, 2]])


def test_scribble_values_without_class_are_named():
    with pytest.raises(LabelValueError, match=r"scribble layer 's': values 4, 9 have no class.*1 = background"):
        labels_to_target(np.array([[4, 9, 1]]), "scribble", T2, layer_name="s")


def test_weak_unpainted_is_unknown():
    data = np.array([[0, 5], [5, 1]])
    np.testing.assert_array_equal(labels_to_target(data, "weak", T2, layer_name="w"), [[IG, 1], [1, 1]])


def test_bool_and_float_masks_accepted_other_errors():
    np.testing.assert_array_equal(labels_to_target(np.array([[True, False]]), "strong", T2, layer_name="b"), [[1, 0]])
    np.testing.assert_array_equal(labels_to_target(np.array([[2.0, 0.0]]), "strong", T2, layer_name="f"), [[2, 0]])
    with pytest.raises(LabelValueError, match="layer 'f': .*non-integer"):
        labels_to_target(np.array([[0.5, 0.0]]), "strong", T2, layer_name="f")
    with pytest.raises(LabelValueError, match="layer 'neg': negative label values -2"):
        labels_to_target(np.array([[-2, 0]]), "strong", T2, layer_name="neg")
    with pytest.raises(LabelValueError, match="layer '4d': label data has 4 dimensions"):
        labels_to_target(np.zeros((2, 2, 2, 2), int), "strong", T2, layer_name="4d")
    with pytest.raises(LabelValueError, match="marked 'image-level'"):
        labels_to_target(np.zeros((2, 2), int), "image-level", T2, layer_name="tags")
    with pytest.raises(LabelValueError, match="no foreground class"):
        labels_to_target(np.ones((2, 2), int), "strong", ClassTable(), layer_name="x")
    with pytest.raises(ValueError, match="no class named 'zzz'"):
        labels_to_target(np.ones((2, 2), int), "strong", T2, layer_name="x", default_class="zzz")


def test_volume_strong_partial_by_default():
    vol = np.zeros((4, 3, 3), dtype=np.int32)
    vol[1, 1, 1] = 1
    vol[3, 0, 0] = 2
    t = labels_to_target(vol, "strong", T2, layer_name="v")
    assert np.all(t[0] == IG) and np.all(t[2] == IG)
    assert t[1, 1, 1] == 1 and t[1, 0, 0] == 0 and t[3, 0, 0] == 2 and t[3, 2, 2] == 0
    # every slice annotated
    full = labels_to_target(vol, "strong", T2, layer_name="v", partial_slices=False)
    assert np.all(full[0] == 0)
    # noisy volumes are machine-made full masks: not partial by default
    assert np.all(labels_to_target(vol, "noisy", T2, layer_name="v")[0] == 0)
    # explicit annotated slices: slice 0 really is all background, slice 3 is not annotated
    ex = labels_to_target(vol, "strong", T2, layer_name="v", partial_slices=[0, 1])
    assert np.all(ex[0] == 0) and np.all(ex[3] == IG) and np.all(ex[2] == IG) and ex[1, 1, 1] == 1
    with pytest.raises(LabelValueError, match="annotated slices 7 are outside 0..3"):
        labels_to_target(vol, "strong", T2, layer_name="v", partial_slices=[7])
    with pytest.raises(LabelValueError, match="needs a 3D layer"):
        labels_to_target(vol[0], "strong", T2, layer_name="v", partial_slices=[0])


def test_volume_scribbles_3d():
    vol = np.zeros((2, 2, 2), dtype=np.uint8)
    vol[0, 0, 0] = 1
    vol[1, 1, 1] = 3
    t = labels_to_target(vol, "scribble", T2, layer_name="s")
    assert t[0, 0, 0] == 0 and t[1, 1, 1] == 2 and np.count_nonzero(t != IG) == 2


def test_multilabel_targets():
    t = ClassTable(["lung", "heart"], multilabel=True)
    sem = np.array([[0, 1, 2]])
    out = labels_to_target(sem, "strong", t, layer_name="m")
    assert out.dtype == np.uint8 and out.shape == (3, 1, 3)
    np.testing.assert_array_equal(out[:, 0], [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    # a one-class strong layer only speaks about its class; background is unknown where others are
    one = labels_to_target(np.array([[0, 1]]), "strong", t, layer_name="h", default_class="heart", single_class=True)
    np.testing.assert_array_equal(one[:, 0], [[MI, 0], [MI, MI], [0, 1]])
    # scribbles: a class stroke says "present", a background stroke says "no class"
    scr = labels_to_target(np.array([[0, 1, 3]]), "scribble", t, layer_name="s")
    np.testing.assert_array_equal(scr[:, 0], [[MI, 1, 0], [MI, 0, MI], [MI, 0, 1]])
    weak = labels_to_target(np.array([[0, 4]]), "weak", t, layer_name="w")
    np.testing.assert_array_equal(weak[:, 0], [[MI, 0], [MI, 1], [MI, MI]])


def test_instances_semantic_components_and_painted_ids():
    t1 = ClassTable(["nucleus"])
    data = np.zeros((5, 7), dtype=np.int32)
    data[0, 0:2] = 1  # semantic value: two separate components
    data[4, 0:2] = 1
    data[2, 3] = 40  # painted instance ids stay whole even when split in two pieces
    data[2, 6] = 40
    data[4, 6] = 41
    inst = labels_to_instances(data, "weak", t1)
    assert inst.dtype == np.int32
    assert inst[0, 0] == inst[0, 1] and inst[4, 0] != inst[0, 0]
    assert inst[2, 3] == inst[2, 6] and inst[4, 6] != inst[2, 3]
    assert sorted(np.unique(inst)) == [0, 1, 2, 3, 4]
    # one-class layer: every value is an id (1 is an instance id, not a class to split)
    single = labels_to_instances(data, "weak", t1, single_class=True)
    assert single[0, 0] == single[4, 0] and len(np.unique(single)) == 4
    # scribbles: connected strokes per class
    scr = labels_to_instances(np.array([[1, 1, 0, 2, 0, 2]]), "scribble", t1)
    np.testing.assert_array_equal(scr, [[1, 1, 0, 2, 0, 3]])
    assert not labels_to_instances(np.zeros((3, 3), int), "weak", t1).any()


def test_instances_3d():
    vol = np.zeros((3, 4, 4), dtype=np.uint8)
    vol[0, 0, 0] = vol[1, 0, 0] = 1  # connected across slices
    vol[2, 3, 3] = 1
    inst = labels_to_instances(vol, "weak", ClassTable(["x"]))
    assert inst[0, 0, 0] == inst[1, 0, 0] and inst[2, 3, 3] not in (0, inst[0, 0, 0])


def test_shapes_rectangle_ellipse_polygon_2d():
    rect = np.array([[2, 2], [2, 7], [5, 7], [5, 2]], dtype=float)
    ell = np.array([[10, 10], [10, 20], [16, 20], [16, 10]], dtype=float)  # box 6 x 10
    poly = np.array([[20, 2], [28, 2], [20, 10]], dtype=float)
    target, inst = shapes_to_weak([rect, ell, poly], ["rectangle", "ellipse", "polygon"], (32, 32))
    assert target.dtype == np.int64 and inst.dtype == np.int32
    assert np.count_nonzero(inst == 1) == 4 * 6  # rows 2..5, cols 2..7 inclusive
    n_ell = np.count_nonzero(inst == 2)
    assert abs(n_ell - np.pi * 3 * 5) < 0.2 * np.pi * 15  # area of the inscribed ellipse
    assert inst[13, 15] == 2 and inst[10, 10] == 0  # centre in, box corner out
    n_poly = np.count_nonzero(inst == 3)
    assert 30 <= n_poly <= 50  # triangle of legs 8: area 32 plus boundary pixels
    assert np.all(target[inst > 0] == 1) and np.all(target[inst == 0] == IG)


def test_shapes_two_point_forms_rotation_and_overlap():
    # napari's add_rectangles/add_ellipses forms: 2 corners, centre + radii
    target, inst = shapes_to_weak(
        [np.array([[1, 1], [3, 4]]), np.array([[10, 10], [2, 3]])], ["rectangle", "ellipse"], (20, 20)
    )
    assert np.count_nonzero(inst == 1) == 3 * 4
    assert inst[10, 10] == 2 and inst[10, 13] == 2 and inst[10, 14] == 0 and inst[12, 10] == 2
    # a 45-degree rotated square (diamond) and a later shape covering part of it
    diamond = np.array([[5, 10], [10, 15], [15, 10], [10, 5]], dtype=float)
    cover = np.array([[9, 9], [9, 20], [11, 20], [11, 9]], dtype=float)
    _, inst = shapes_to_weak([diamond, cover], "rectangle", (20, 20))
    assert inst[6, 10] == 1 and inst[5, 5] == 0 and inst[10, 10] == 2
    # rotated ellipse, half-axes (4, 4) along the diagonal and (1.5, -1.5) across it
    box = np.array([[4.5, 7.5], [12.5, 15.5], [15.5, 12.5], [7.5, 4.5]])
    _, inst = shapes_to_weak([box], ["ellipse"], (20, 20))
    assert inst[13, 13] == 1 and inst[7, 7] == 1 and inst[10, 10] == 1
    assert inst[13, 7] == 0 and inst[7, 13] == 0


def test_shapes_on_a_volume_go_to_their_slice():
    rect = np.array([[3, 1, 1], [3, 1, 4], [3, 4, 4], [3, 4, 1]], dtype=float)
    ell = np.array([[1.0, 5, 5], [1.0, 5, 9], [1.0, 9, 9], [1.0, 9, 5]])
    target, inst = shapes_to_weak([rect, ell], ["rectangle", "ellipse"], (5, 12, 12), class_values=[2, 1])
    assert np.all(inst[[0, 2, 4]] == 0)
    assert np.count_nonzero(inst[3] == 1) == 16 and np.all(target[3][inst[3] == 1] == 2)
    assert inst[1, 7, 7] == 2 and target[1, 7, 7] == 1


def test_shapes_class_values_with_table():
    table = ClassTable([("a", 5), ("b", 9)])
    sq = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], dtype=float)
    t, _ = shapes_to_weak([sq], ["polygon"], (3, 3), class_values=[9], class_table=table)
    assert t[0, 0] == 2
    t, _ = shapes_to_weak([sq], ["polygon"], (3, 3), class_values=["a"], class_table=table)
    assert t[0, 0] == 1
    with pytest.raises(ValueError, match="label value 3 is not in the class table"):
        shapes_to_weak([sq], ["polygon"], (3, 3), class_values=[3], class_table=table)


def test_tiny_shapes_are_not_lost():
    thin = np.array([[5, 5], [5, 5.2], [5.2, 5.2], [5.2, 5]])
    _, inst = shapes_to_weak([thin, thin], ["rectangle", "ellipse"], (10, 10))
    assert inst[5, 5] == 2  # the ellipse was drawn on top and covers the centre pixel


@pytest.mark.parametrize(
    "shapes, types, shape, match",
    [
        ([np.array([[0, 0], [3, 3]])], ["line"], (5, 5), "shape type 'line' cannot be a weak mask"),
        ([np.array([[0, 0, 0], [0, 3, 3], [1, 3, 0]])], ["polygon"], (2, 5, 5), "spans slices z=0..1"),
        ([np.array([[9, 0, 0], [9, 3, 3], [9, 3, 0]])], ["polygon"], (2, 5, 5), "slice 9, outside the volume"),
        ([np.array([[0, 0], [3, 3], [3, 0]])], ["polygon"], (2, 5, 5), r"expected \(N, 3\)"),
        ([np.array([[0, 0], [3, 3]])], ["polygon"], (5, 5), "at least 3 vertices"),
        ([np.array([[0, 0], [1, 1], [2, 2]])], ["rectangle"], (5, 5), "2 or 4 vertices"),
        ([np.array([[0, 0], [np.nan, 1], [2, 2]])], ["polygon"], (5, 5), "NaN/inf"),
        ([np.array([[0, 0], [1, 1], [2, 2]])], ["polygon", "polygon"], (5, 5), "2 shape types for 1 shapes"),
    ],
)
def test_shape_errors(shapes, types, shape, match):
    with pytest.raises(ShapesError, match=match):
        shapes_to_weak(shapes, types, shape, layer_name="boxes")


def test_empty_shapes():
    t, inst = shapes_to_weak([], [], (4, 4))
    assert np.all(t == IG) and not inst.any()


def test_tags_to_vector():
    t = ClassTable(["melanoma", "nevus"])
    v = tags_to_vector({"nevus"}, t)
    assert v.dtype == np.float32 and v.tolist() == [0, 0, 1]
    assert tags_to_vector(["melanoma", "nevus"], t).tolist() == [0, 1, 1]
    assert tags_to_vector("melanoma", t).tolist() == [0, 1, 0]
    assert tags_to_vector([], t).tolist() == [0, 0, 0]
    with pytest.raises(LabelValueError, match=r"unknown image tags 'cat', 'dog'; tags must be class names"):
        tags_to_vector(["dog", "cat", "nevus"], t)
