import numpy as np
import pytest

from napari_labelfx._sample_data import (
    make_nuclei_2d,
    make_volume_3d,
    sample_class_table,
    sample_nuclei_2d,
    sample_volume_3d,
)
from napari_labelfx.annotations import (
    IGNORE_INDEX,
    AnnotatedImage,
    AnnotationLayer,
    AnnotationSet,
    ClassTable,
    LabelKind,
    labels_to_target,
)


@pytest.fixture(scope="module")
def nuclei():
    return make_nuclei_2d(seed=0)


def test_nuclei_deterministic_and_seeded(nuclei):
    again = make_nuclei_2d(seed=0)
    for key in nuclei:
        np.testing.assert_array_equal(nuclei[key], again[key])
    other = make_nuclei_2d(seed=1, size=128)
    assert other["image"].shape == (128, 128)
    assert not np.array_equal(other["instances"][:64, :64], nuclei["instances"][:64, :64])


def test_nuclei_shapes_dtypes_and_counts(nuclei):
    assert set(nuclei) == {"image", "instances", "strong", "scribbles", "noisy"}
    assert nuclei["image"].dtype == np.float32 and nuclei["image"].shape == (256, 256)
    for key in ("instances", "strong", "scribbles", "noisy"):
        assert nuclei[key].dtype == np.int32 and nuclei[key].shape == (256, 256)
    inst = nuclei["instances"]
    n = int(inst.max())
    assert 30 <= n <= 60 and len(np.unique(inst)) == n + 1  # dense ids
    np.testing.assert_array_equal(nuclei["strong"], inst)


def test_nuclei_image_looks_like_fluorescence(nuclei):
    img, inst = nuclei["image"], nuclei["instances"]
    assert np.all(np.isfinite(img))
    assert img[inst > 0].mean() > 3 * img[inst == 0].mean()  # bright nuclei on dim background
    assert img[inst == 0].std() > 0.01  # noisy background


def test_scribbles_follow_the_encoding_and_the_truth(nuclei):
    scr, inst = nuclei["scribbles"], nuclei["instances"]
    assert set(np.unique(scr)) == {0, 1, 2}
    assert np.all(inst[scr == 2] > 0) and np.all(inst[scr == 1] == 0)
    assert len(np.unique(inst[scr == 2])) >= 5  # strokes in several nuclei
    assert 0 < np.count_nonzero(scr) < 0.1 * scr.size  # sparse
    t = labels_to_target(scr, "scribble", sample_class_table(), layer_name="scribbles")
    assert set(np.unique(t)) == {IGNORE_INDEX, 0, 1}


def test_noisy_mask_is_plausible_but_wrong(nuclei):
    noisy, inst = nuclei["noisy"] > 0, nuclei["instances"] > 0
    iou = np.count_nonzero(noisy & inst) / np.count_nonzero(noisy | inst)
    assert 0.4 < iou < 0.97
    assert 0 < nuclei["noisy"].max() < inst.sum()


def test_volume_partial_strong():
    v = make_volume_3d(seed=0)
    assert v["image"].shape == (32, 128, 128) and v["image"].dtype == np.float32
    assert v["instances"].dtype == np.int32 and v["strong"].dtype == np.int32
    sl = v["annotated_slices"]
    assert len(sl) == 3 and sl == sorted(sl)
    painted = [z for z in range(32) if v["strong"][z].any()]
    assert painted == sl
    for z in sl:
        np.testing.assert_array_equal(v["strong"][z], v["instances"][z])
    t = labels_to_target(v["strong"], "strong", sample_class_table(), layer_name="strong")
    known = [z for z in range(32) if np.any(t[z] != IGNORE_INDEX)]
    assert known == sl
    again = make_volume_3d(seed=0)
    np.testing.assert_array_equal(again["image"], v["image"])
    small = make_volume_3d(seed=2, shape=(8, 32, 40))
    assert small["image"].shape == (8, 32, 40) and small["instances"].max() >= 1


def test_bad_sizes():
    with pytest.raises(ValueError, match="size must be >= 64"):
        make_nuclei_2d(size=16)
    with pytest.raises(ValueError, match="shape must be"):
        make_volume_3d(shape=(4, 16, 16))


def test_npe2_layer_data_and_training_items():
    layers = sample_nuclei_2d()
    assert [t for _, _, t in layers] == ["image", "labels", "labels", "labels"]
    kinds = [meta["metadata"]["labelfx_kind"] for _, meta, t in layers if t == "labels"]
    assert kinds == ["noisy", "strong", "scribble"]
    image = layers[0][0]
    assert ClassTable.from_dict(layers[0][1]["metadata"]["labelfx_class_table"]) == sample_class_table()
    aset = AnnotationSet(
        sample_class_table(),
        [
            AnnotatedImage(
                "nuclei",
                image,
                "YX",
                [AnnotationLayer(meta["name"], meta["metadata"]["labelfx_kind"], data) for data, meta, t in layers[1:]],
            )
        ],
    )
    item = aset.training_items()[0]
    assert item.kind is LabelKind.STRONG and item.image.shape == (1, 256, 256)
    vol = sample_volume_3d()
    assert vol[1][1]["metadata"] == {"labelfx_kind": "strong", "labelfx_partial": make_volume_3d()["annotated_slices"]}


def test_layer_data_builds_napari_layers():
    pytest.importorskip("napari")
    from napari.layers import Image, Labels

    for data, meta, kind in sample_nuclei_2d() + sample_volume_3d():
        layer = (Image if kind == "image" else Labels)(data, **meta)
        assert layer.data.shape == data.shape
        if kind == "labels":
            assert layer.metadata["labelfx_kind"] in ("strong", "scribble", "noisy")
