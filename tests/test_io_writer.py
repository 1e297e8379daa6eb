"""Label writers: exact round trips, atomic replacement, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_labelfx.io import (
    LabelfxIOError,
    atomic_path,
    read_image,
    read_labels,
    write_image,
    write_labels,
)

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("ext", [".tif", ".zarr"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32])
@pytest.mark.parametrize("shape,scale", [((20, 30), (0.5, 0.25)), ((4, 20, 30), (2.0, 0.3, 0.3))])
def test_labels_round_trip(tmp_path, ext, dtype, shape, scale):
    info = np.iinfo(dtype)
    a = RNG.integers(max(info.min, -1000), min(info.max, 70000), shape).astype(dtype)
    a.flat[0] = info.max  # the extreme value must survive too
    path = write_labels(tmp_path / f"lab{ext}", a, scale=scale, metadata={"classes": ["bg", "cell"]})
    b, s, md = read_labels(path)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(b, a)
    assert s == scale  # exact, not approximately: the JSON block is authoritative
    assert md["classes"] == ["bg", "cell"] and md["axes"] == ("YX" if len(shape) == 2 else "ZYX")
    img = read_image(path)
    assert img.is_labels and img.metadata["labels_from"] == "metadata"
    assert img.scale == pytest.approx(scale)


@pytest.mark.parametrize("ext", [".tif", ".zarr"])
@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_length_one_dimensions_survive(tmp_path, ext, dtype):
    # TIFF readers squeeze length-1 dimensions; a single-slice volume must stay (1, Y, X)
    a = RNG.integers(0, 9, (1, 12, 16)).astype(dtype)
    for lazy in (False, True):
        path = write_labels(tmp_path / f"one{ext}", a, scale=(3.0, 0.5, 0.5))
        b, s, md = read_labels(path)
        assert b.shape == (1, 12, 16) and s == (3.0, 0.5, 0.5) and md["axes"] == "ZYX"
        img = read_image(path, eager_limit=0 if lazy else 2**40)
        assert img.axes == "ZYX" and img.shape == (1, 12, 16) and img.chunks[0] == 1
        np.testing.assert_array_equal(np.asarray(img.data), a)


@pytest.mark.parametrize("ext", [".tif", ".zarr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_write_image_round_trip_not_labels(tmp_path, ext, dtype):
    a = RNG.random((3, 10, 12)).astype(dtype) if dtype != np.uint16 else RNG.integers(0, 9, (3, 10, 12)).astype(dtype)
    path = write_image(tmp_path / f"confidence_labels{ext}", a, scale=(2.0, 0.5, 0.5))
    img = read_image(path)
    assert img.dtype == dtype and img.axes == "ZYX" and img.scale == pytest.approx((2.0, 0.5, 0.5))
    # the file says it is an image, which wins over the word "labels" in its name
    assert not img.is_labels
    np.testing.assert_array_equal(np.asarray(img.data), a)


def test_write_image_rejects_complex(tmp_path):
    with pytest.raises(LabelfxIOError, match="c.tif.*cannot write complex"):
        write_image(tmp_path / "c.tif", np.zeros((4, 4), np.complex64))


def test_imagej_tiff_for_uint16_is_readable_by_imagej_conventions(tmp_path):
    a = RNG.integers(0, 1000, (3, 10, 12)).astype(np.uint16)
    write_labels(tmp_path / "ij.tif", a, scale=(2.0, 0.5, 0.5))
    with tifffile.TiffFile(tmp_path / "ij.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["spacing"] == 2.0
        assert tif.pages[0].resolution == pytest.approx((2.0, 2.0))
    # a foreign reader that only knows ImageJ metadata gets the same scale
    assert read_image(tmp_path / "ij.tif").scale == pytest.approx((2.0, 0.5, 0.5))


def test_plain_tiff_for_uint32_stores_resolution(tmp_path):
    a = np.arange(200, dtype=np.uint32).reshape(10, 20)
    write_labels(tmp_path / "u32.tif", a, scale=(0.25, 0.5))
    with tifffile.TiffFile(tmp_path / "u32.tif") as tif:
        assert not tif.is_imagej
        assert tif.pages[0].resolution == pytest.approx((1e4 / 0.5, 1e4 / 0.25))


def test_bool_labels_are_stored_as_uint8(tmp_path):
    a = RNG.random((10, 12)) > 0.5
    b, _, _ = read_labels(write_labels(tmp_path / "m.zarr", a))
    assert b.dtype == np.uint8
    np.testing.assert_array_equal(b, a.astype(np.uint8))


def test_dask_labels_written_to_zarr(tmp_path):
    da = pytest.importorskip("dask.array")
    a = RNG.integers(0, 5, (6, 40, 50)).astype(np.uint16)
    write_labels(tmp_path / "d.zarr", da.from_array(a, chunks=(2, 20, 25)), axes="ZYX")
    np.testing.assert_array_equal(read_labels(tmp_path / "d.zarr")[0], a)


def test_overwrite_replaces_existing_file_and_store(tmp_path):
    for ext in (".tif", ".zarr"):
        write_labels(tmp_path / f"x{ext}", np.ones((8, 8), np.uint8))
        write_labels(tmp_path / f"x{ext}", np.full((5, 6), 2, np.uint16))
        b, _, _ = read_labels(tmp_path / f"x{ext}")
        assert b.shape == (5, 6) and b.dtype == np.uint16 and (b == 2).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif", "x.zarr"]  # no temp leftovers


@pytest.mark.parametrize("bad,match", [
    (dict(data=np.zeros((4, 4), np.float32)), "integer dtype"),
    (dict(data=np.zeros(4, np.uint8)), "at least 2 dimensions"),
    (dict(data=np.zeros((4, 4), np.uint8), scale=(1.0,)), "one value per dimension"),
    (dict(data=np.zeros((4, 4), np.uint8), scale=(1.0, -2.0)), "positive"),
    (dict(data=np.zeros((4, 4), np.uint8), metadata={"x": object()}), "JSON"),
    (dict(data=np.zeros((4, 4), np.uint8), axes="XY"), "in that order"),
])
def test_bad_input_raises_and_writes_nothing(tmp_path, bad, match):
    with pytest.raises(LabelfxIOError, match=match):
        write_labels(tmp_path / "bad.tif", **bad)
    assert list(tmp_path.iterdir()) == []


def test_unknown_extension(tmp_path):
    with pytest.raises(LabelfxIOError, match="out.png.*use .tif"):
        write_labels(tmp_path / "out.png", np.zeros((4, 4), np.uint8))


def test_atomic_path_keeps_original_on_failure(tmp_path):
    dest = tmp_path / "keep.txt"
    dest.write_text("original")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert dest.read_text() == "original" and list(tmp_path.iterdir()) == [dest]
    with atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and not tmp.exists()
        tmp.write_text("new")
    assert dest.read_text() == "new"


def test_atomic_path_replaces_directory(tmp_path):
    dest = tmp_path / "store.zarr"
    dest.mkdir()
    (dest / "old").write_text("x")
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert [p.name for p in dest.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["store.zarr"]


def test_read_labels_of_foreign_files(tmp_path):
    lab = RNG.integers(0, 4, (3, 8, 10)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "mask.tif", lab, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 4.0, "unit": "um"})
    b, scale, md = read_labels(tmp_path / "mask.tif")
    np.testing.assert_array_equal(b, lab)
    assert scale == pytest.approx((4.0, 0.5, 0.5)) and md["axes"] == "ZYX" and md["unit"] == "um"
    tifffile.imwrite(tmp_path / "prob.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(LabelfxIOError, match="prob.tif.*not integer labels"):
        read_labels(tmp_path / "prob.tif")
