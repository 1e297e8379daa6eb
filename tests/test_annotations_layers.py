import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from napari_labelfx.annotations import AnnotationError, ClassTable, LabelKind, ShapeMismatchError
from napari_labelfx.annotations.layers import (
    KIND_KEY,
    annotation_set_from_layers,
    get_kind,
    get_layer_class,
    image_layer_axes,
    set_kind,
    set_layer_class,
)

T = ClassTable(["a", "b"])


def _ns(**kw):
    kw.setdefault("metadata", {})
    return SimpleNamespace(**kw)


def test_core_does_not_import_napari_or_qt():
    code = (
        "import sys, napari_labelfx.annotations, napari_labelfx.annotations.layers, napari_labelfx._sample_data;"
        "bad = [m for m in sys.modules if m == 'napari' or m.startswith(('napari.', 'qtpy', 'PyQt', 'torch'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_get_set_kind_and_class_via_metadata():
    layer = _ns(name="m")
    assert get_kind(layer) is None and get_layer_class(layer) is None
    set_kind(layer, "scribble")
    assert layer.metadata == {KIND_KEY: "scribble"} and get_kind(layer) is LabelKind.SCRIBBLE
    set_kind(layer, LabelKind.WEAK)
    assert get_kind(layer) is LabelKind.WEAK
    set_layer_class(layer, "b")
    assert get_layer_class(layer) == "b"
    set_layer_class(layer, None)
    assert get_layer_class(layer) is None
    layer.metadata[KIND_KEY] = "bogus"
    with pytest.raises(AnnotationError, match="layer 'm': metadata labelfx_kind='bogus' is not a label kind"):
        get_kind(layer)
    with pytest.raises(ValueError):
        set_kind(layer, "bogus")


def test_set_from_duck_typed_layers():
    img = _ns(name="cells", data=np.zeros((8, 8), np.uint8), rgb=False)
    strong = _ns(name="mask", data=np.zeros((8, 8), np.int32), metadata={KIND_KEY: "strong", "labelfx_class": "b"})
    strong.data[1, 1] = 5
    scr = _ns(name="scr", data=np.zeros((8, 8), np.uint8), metadata={KIND_KEY: "scribble"})
    scr.data[7, 7] = 2
    boxes = _ns(
        name="boxes",
        data=[np.array([[2, 2], [2, 4], [4, 4], [4, 2]], float)],
        shape_type=["ellipse"],
        metadata={},
    )
    aset = annotation_set_from_layers(img, [strong, scr], [boxes], T, {"a"})
    im = aset.images[0]
    assert im.name == "cells" and im.axes == "YX" and im.tags == {None: {"a"}}
    kinds = [(la.name, la.kind, la.class_name) for la in im.layers]
    assert kinds == [
        ("mask", LabelKind.STRONG, "b"),
        ("scr", LabelKind.SCRIBBLE, None),
        ("boxes", LabelKind.WEAK, None),
    ]
    item = aset.training_items()[0]
    assert item.target[1, 1] == 2 and item.kind is LabelKind.STRONG


def test_rgb_and_multiscale_and_axes_override():
    rgb = _ns(name="he", data=np.zeros((6, 6, 3), np.uint8), rgb=True)
    assert image_layer_axes(rgb) == "YXS"
    pyramid = _ns(name="big", data=[np.zeros((8, 8)), np.zeros((4, 4))], multiscale=True, rgb=False)
    aset = annotation_set_from_layers(pyramid, [], [], T, None)
    assert aset.images[0].image.shape == (8, 8)
    chans = _ns(name="c", data=np.zeros((2, 5, 6, 6)), rgb=False, metadata={"labelfx_axes": "CZYX"})
    assert image_layer_axes(chans) == "CZYX"
    with pytest.raises(AnnotationError, match="image 'hyper' has 4 dimensions"):
        image_layer_axes(_ns(name="hyper", data=np.zeros((2, 5, 6, 6)), rgb=False))


def test_errors_name_the_layer():
    img = _ns(name="cells", data=np.zeros((8, 8)), rgb=False)
    bad = _ns(name="wrong size", data=np.zeros((8, 9), int), metadata={KIND_KEY: "strong"})
    with pytest.raises(ShapeMismatchError, match="label layer 'wrong size' has shape"):
        annotation_set_from_layers(img, [bad], [], T)
    unmarked = _ns(name="plain", data=np.zeros((8, 8), int))
    with pytest.raises(AnnotationError, match="layer 'plain' has no label kind"):
        annotation_set_from_layers(img, [unmarked], [], T, default_kind=None)
    assert annotation_set_from_layers(img, [unmarked], [], T).images[0].layers[0].kind is LabelKind.STRONG


def test_real_napari_layers():
    pytest.importorskip("napari")
    from napari.layers import Image, Labels, Shapes

    img = Image(np.random.default_rng(0).random((2, 16, 16)).astype(np.float32), name="vol")
    lab = Labels(np.zeros((2, 16, 16), np.int32), name="m", metadata={KIND_KEY: "strong"})
    lab.data[1, 3:6, 3:6] = 1
    shp = Shapes(
        [np.array([[0, 8, 8], [0, 8, 12], [0, 12, 12], [0, 12, 8]], float)],
        shape_type="rectangle",
        name="boxes",
        features={"labelfx_class": ["b"]},
    )
    set_kind(shp, "weak")
    assert shp.metadata[KIND_KEY] == "weak"
    aset = annotation_set_from_layers(img, [lab], [shp], T, {1: {"a"}})
    im = aset.images[0]
    assert im.axes == "ZYX" and im.layers[1].shape_classes == ["b"]
    item = aset.training_items()[0]
    assert item.image.shape == (1, 2, 16, 16)
    assert item.target[1, 4, 4] == 1 and item.target[0, 10, 10] == 2  # weak box on slice 0, class b
    assert item.instances[0, 10, 10] == 1 and item.extra["slice_tags"][1].tolist() == [0, 1, 0]
