import numpy as np
import pytest

from napari_labelfx.annotations import (
    AnnotatedImage,
    AnnotationError,
    AnnotationLayer,
    AnnotationSet,
    ClassTable,
    EmptyAnnotationError,
    ImageError,
    LabelValueError,
    ShapeMismatchError,
    TrainingItem,
)
from napari_labelfx.annotations.validate import (
    check_axes,
    check_has_annotation,
    check_image,
    check_label_shape,
    check_label_values,
    infer_axes,
    spatial_shape,
)

T = ClassTable(["a", "b"])


def test_all_errors_are_value_errors():
    for cls in (AnnotationError, ImageError, LabelValueError, ShapeMismatchError, EmptyAnnotationError):
        assert issubclass(cls, ValueError)


def test_label_shape_mismatch_messages():
    check_label_shape((4, 5), (4, 5), layer_name="m", image_name="img")
    msg = r"label layer 'm' has shape \(4, 6\) but image 'img' has spatial shape \(4, 5\)"
    with pytest.raises(ShapeMismatchError, match=msg):
        check_label_shape((4, 6), (4, 5), layer_name="m", image_name="img")
    with pytest.raises(ShapeMismatchError, match="extra leading axis"):
        check_label_shape((3, 4, 5), (4, 5), layer_name="m", image_name="img")
    with pytest.raises(ShapeMismatchError, match="2D label layer on a volume"):
        check_label_shape((4, 5), (3, 4, 5), layer_name="m", image_name="img")


def test_label_values_missing_from_table():
    check_label_values(np.array([[0, 1, 3]]), "scribble", T, layer_name="s")
    msg = r"scribble layer 's': label values 4, 7 are not in the class table \(1 = background"
    with pytest.raises(LabelValueError, match=msg):
        check_label_values(np.array([[4, 7, 1]]), "scribble", T, layer_name="s")
    # strong masks accept instance ids unless the caller says values must be classes
    check_label_values(np.array([[0, 99]]), "strong", T, layer_name="m")
    with pytest.raises(LabelValueError, match=r"strong layer 'm': label values 5, 99 .*\(1 = a, 2 = b\)"):
        check_label_values(np.array([[0, 99, 5, 2]]), "strong", T, layer_name="m", values_are_classes=True)


def test_no_annotated_pixel():
    img = np.zeros((1, 4, 4), np.float32)
    empty = TrainingItem(img, np.full((4, 4), -1, np.int64), name="one")
    with pytest.raises(EmptyAnnotationError, match=r"no annotated pixel and no image tag in 'one', 'two'"):
        check_has_annotation([empty, TrainingItem(img, None, name="two")])
    with pytest.raises(EmptyAnnotationError, match="no image was given"):
        check_has_annotation([])
    check_has_annotation([empty, TrainingItem(img, np.zeros((4, 4), np.int64))])
    check_has_annotation([TrainingItem(img, None, tags=np.array([0, 1], np.float32))])
    check_has_annotation([TrainingItem(img, np.full((2, 4, 4), 255, np.uint8), extra={"slice_tags": {0: np.ones(2)}})])


def test_training_request_with_nothing_painted():
    im = AnnotatedImage("img", np.zeros((4, 4)), "YX", [AnnotationLayer("scr", "scribble", np.zeros((4, 4), int))])
    with pytest.raises(EmptyAnnotationError, match="nothing to train on.*'img'"):
        AnnotationSet(T, [im]).training_items()
    assert AnnotationSet(T, [im]).training_items(require_annotation=False)[0].target is None


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.array([[np.nan, 1.0], [np.inf, 0.0]]), "image 'img' contains 2 NaN/inf values"),
        (np.zeros((2, 2), np.complex64), r"dtype complex64 \(complex\) is not supported"),
        (np.array([[object(), 1], [2, 3]], dtype=object), r"dtype object \(object\) is not supported"),
        (np.array([["a", "b"], ["c", "d"]]), "string"),
    ],
)
def test_bad_image_content(arr, match):
    with pytest.raises(ImageError, match=match):
        check_image(arr, "YX", name="img")


def test_supported_image_dtypes():
    for dt in (bool, np.uint8, np.int16, np.uint16, np.int32, np.float16, np.float32, np.float64):
        assert check_image(np.zeros((3, 3), dtype=dt), "yx", name="ok") == "YX"


def test_axes_and_dimensionality():
    assert check_axes("cyx", 3, name="i") == "CYX"
    with pytest.raises(ImageError, match=r"image 'i' has 3 dimensions but axes 'YX' describe 2"):
        check_axes("YX", 3, name="i")
    with pytest.raises(ImageError, match="unknown letters"):
        check_axes("QYX", 3, name="i")
    with pytest.raises(ImageError, match="must contain Y and X"):
        check_axes("ZY", 2, name="i")
    with pytest.raises(ImageError, match="repeat a letter"):
        check_axes("YYX", 3, name="i")
    with pytest.raises(ImageError, match="both C and S"):
        check_axes("CYXS", 4, name="i")
    with pytest.raises(ImageError, match="RGB sample axis S has 5 entries"):
        check_image(np.zeros((4, 4, 5)), "YXS", name="i")
    with pytest.raises(ImageError, match="is empty"):
        check_image(np.zeros((0, 4)), "YX", name="i")


def test_infer_axes():
    assert infer_axes((5, 6)) == "YX"
    assert infer_axes((32, 32, 3)) == "YXS"
    assert infer_axes((10, 32, 32)) == "ZYX"
    assert infer_axes((10, 32, 3), rgb=False) == "ZYX"
    assert infer_axes((4, 32, 32, 3)) == "ZYXS"
    with pytest.raises(ImageError, match="image 'im' has 4 dimensions"):
        infer_axes((2, 4, 32, 32), name="im")
    with pytest.raises(ImageError, match="has 1 dimensions"):
        infer_axes((5,), name="im")
    assert spatial_shape((3, 8, 9), "CYX") == (8, 9)
    assert spatial_shape((8, 9, 3), "YXS") == (8, 9)
    assert spatial_shape((2, 5, 8, 9), "ZCYX") == (2, 8, 9)


def test_set_validation_names_the_layer_and_image():
    img = np.zeros((6, 6), np.float32)
    bad = AnnotatedImage("cells", img, "YX", [AnnotationLayer("mask", "strong", np.zeros((6, 7), int))])
    with pytest.raises(ShapeMismatchError, match="label layer 'mask' has shape .* image 'cells'"):
        AnnotationSet(T, [bad]).validate()
    with pytest.raises(ImageError, match="image 'rgb' has 3 dimensions but axes 'YX'"):
        AnnotationSet(T, [AnnotatedImage("rgb", np.zeros((6, 6, 3)), "YX")]).validate()
    with pytest.raises(AnnotationError, match="layer names \\['m'\\] are used twice"):
        AnnotationSet(
            T,
            [AnnotatedImage("x", img, "YX", [AnnotationLayer("m", "strong", np.zeros((6, 6), int))] * 2)],
        ).validate()
    with pytest.raises(AnnotationError, match="image 'x' is 2D; per-slice tags"):
        AnnotationSet(T, [AnnotatedImage("x", img, "YX", tags={3: {"a"}})]).validate()
    with pytest.raises(AnnotationError, match="tags for slice 9, outside the volume"):
        AnnotationSet(T, [AnnotatedImage("v", np.zeros((2, 3, 3)), "ZYX", tags={9: {"a"}})]).validate()
    with pytest.raises(LabelValueError, match="unknown image tags 'zebra'"):
        AnnotationSet(T, [AnnotatedImage("x", img, "YX", tags={"zebra"})]).validate()
    with pytest.raises(AnnotationError, match="image names \\['x'\\] are used twice"):
        AnnotationSet(T, [AnnotatedImage("x", img), AnnotatedImage("x", img)]).validate()


def test_layer_construction_errors():
    with pytest.raises(AnnotationError, match="layer 'l': unknown label kind 'fancy'"):
        AnnotationLayer("l", "fancy", np.zeros((2, 2)))
    with pytest.raises(AnnotationError, match="layer 'l' is marked 'image-level'"):
        AnnotationLayer("l", "image-level", np.zeros((2, 2)))
    with pytest.raises(AnnotationError, match="either label data or shapes"):
        AnnotationLayer("l", "weak")
    with pytest.raises(AnnotationError, match="shapes layer 'l' is marked 'strong'"):
        AnnotationLayer("l", "strong", shapes=[(np.zeros((4, 2)), "rectangle")])
