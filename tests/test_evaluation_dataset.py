"""Dataset folders and seeded splits of the evaluation harness."""
import json

import numpy as np
import pytest
import tifffile

from napari_labelfx.evaluation import DatasetError, SplitError, default_test_size, load_dataset, make_split
from tests.test_evaluation_helpers import make_dataset


def test_load_instance_dataset_lazily(tmp_path):
    root = make_dataset(tmp_path / "set", labels_csv=True)
    ds = load_dataset(root)
    assert ds.task == "instance" and ds.stems == [f"im{i}" for i in range(6)] and len(ds) == 6
    assert ds.class_names == ["background", "nucleus"] and ds.num_classes == 2
    assert ds.image_labels["im1"] == {"diagnosis": "melanoma"}
    smp = ds.load("im0")
    assert smp.image.shape == (1, 64, 64) and smp.mask.shape == (64, 64) and smp.raw.shape == (64, 64)
    assert smp.labels == {"diagnosis": "nevus"}


def test_rgb_and_multilabel_layouts(tmp_path):
    ds = load_dataset(make_dataset(tmp_path / "rgb", rgb=True))
    smp = ds.load("im2")
    assert smp.image.shape == (3, 64, 64) and smp.raw.shape == (64, 64, 3)
    np.testing.assert_array_equal(smp.image[0], smp.raw[..., 0])
    ml = load_dataset(make_dataset(tmp_path / "ml", task="multilabel"))
    assert ml.multilabel and ml.class_names == ["a", "b"]
    assert ml.load("im0").mask.shape == (2, 64, 64)


def test_volume_image_is_one_channel(tmp_path):
    root = make_dataset(tmp_path / "vol", n=1)
    (root / "images" / "im0.png").unlink()
    tifffile.imwrite(root / "images" / "im0.tif", np.zeros((3, 64, 64), np.uint16))  # a ZYX volume
    tifffile.imwrite(root / "masks" / "im0.tif", np.zeros((3, 64, 64), np.uint16))
    smp = load_dataset(root).load("im0")
    assert smp.image.shape == (1, 3, 64, 64)


def test_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nothing")
    root = make_dataset(tmp_path / "set")
    (root / "masks" / "im3.tif").unlink()
    with pytest.raises(DatasetError, match="no mask for image.*im3"):
        load_dataset(root)
    root = make_dataset(tmp_path / "task")
    (root / "meta.json").write_text(json.dumps({"task": "detection", "classes": ["a"]}))
    with pytest.raises(DatasetError, match="unknown task 'detection'"):
        load_dataset(root)
    (root / "meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match="meta.json"):
        load_dataset(root)
    root = make_dataset(tmp_path / "shape")
    tifffile.imwrite(root / "masks" / "im1.tif", np.zeros((32, 32), np.uint16))
    ds = load_dataset(root)
    with pytest.raises(DatasetError, match="im1.png.*does not match"):
        ds.load("im1")
    root = make_dataset(tmp_path / "sem", task="semantic")
    tifffile.imwrite(root / "masks" / "im0.tif", np.full((64, 64), 7, np.uint8))
    with pytest.raises(DatasetError, match="class index 7"):
        load_dataset(root).load("im0")
    root = make_dataset(tmp_path / "mlbad", task="multilabel")
    tifffile.imwrite(root / "masks" / "im0.tif", np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(DatasetError, match="multilabel mask"):
        load_dataset(root).load("im0")
    (root / "images" / "im1.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(root).load("im1")
    with pytest.raises(DatasetError, match="no image with stem"):
        load_dataset(make_dataset(tmp_path / "ok")).load("zzz")


def test_split_is_deterministic_disjoint_and_sized():
    stems = [f"s{i:02d}" for i in range(20)]
    a = make_split(stems, strong=3, seed=4)
    b = make_split(list(reversed(stems)), strong=3, seed=4)  # listing order does not matter
    assert a == b
    assert a.sizes() == {"strong": 3, "others": 11, "test": 6}
    parts = [set(a.strong), set(a.others), set(a.test)]
    assert sum(len(p) for p in parts) == 20 and set().union(*parts) == set(stems)
    assert make_split(stems, strong=3, seed=5).test != a.test
    assert make_split(stems, strong=2, test=4, seed=0).sizes() == {"strong": 2, "others": 14, "test": 4}
    # growing the strong set keeps the test set and extends the strong set from the same order
    more = make_split(stems, strong=6, seed=4)
    assert more.test == a.test and set(a.strong) <= set(more.strong)


def test_default_test_size_and_errors():
    assert [default_test_size(n) for n in (1, 5, 6, 10, 49)] == [2, 2, 2, 3, 15]
    assert default_test_size(5) == 2 and default_test_size(15) == 5  # 4.5 rounds up
    with pytest.raises(SplitError, match="training"):
        make_split(["a", "b"], strong=0)
    with pytest.raises(SplitError, match="strong=5"):
        make_split([str(i) for i in range(6)], strong=5)
    with pytest.raises(SplitError, match="unique"):
        make_split(["a", "a", "b", "c"], strong=1)


def test_rescale_sample_keeps_layouts_and_labels(tmp_path):
    from napari_labelfx.evaluation.dataset import rescale_sample

    rgb = load_dataset(make_dataset(tmp_path / "rgb", rgb=True)).load("im1")
    half = rescale_sample(rgb, 0.5)
    assert half.image.shape == (3, 32, 32) and half.raw.shape == (32, 32, 3) and half.mask.shape == (32, 32)
    assert half.image.dtype == rgb.image.dtype and half.mask.dtype == rgb.mask.dtype
    # nearest neighbour: no new instance ids appear
    assert set(np.unique(half.mask)) <= set(np.unique(rgb.mask))
    assert rescale_sample(rgb, 1.0) is rgb
    ml = load_dataset(make_dataset(tmp_path / "ml", task="multilabel")).load("im0")
    small = rescale_sample(ml, 0.25)
    assert small.mask.shape == (2, 16, 16) and set(np.unique(small.mask)) <= {0, 1}
    with pytest.raises(DatasetError, match="scale"):
        rescale_sample(ml, 0.0)
