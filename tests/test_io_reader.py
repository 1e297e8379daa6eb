"""can_read sniffing, describe(), label detection by name or metadata."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_labelfx.io import LabelfxIOError, can_read, describe, label_name_hint, read_image


def test_can_read_accepts_ours(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    zarr.create_array(str(tmp_path / "z.zarr"), shape=(4, 4), dtype="u1")
    zarr.create_array(str(tmp_path / "noext"), shape=(4, 4), dtype="u1", zarr_format=2)
    stack = tmp_path / "stack"
    stack.mkdir()
    tifffile.imwrite(stack / "0.tif", np.zeros((4, 4), np.uint8))
    for p in ("a.tif", "z.zarr", "noext", "stack"):
        assert can_read(tmp_path / p), p


def test_can_read_rejects_foreign(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    np.save(tmp_path / "arr.npy", np.zeros(3))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("x")
    for p in ("notes.txt", "table.csv", "arr.npy", "docs", "missing.tif"):
        assert not can_read(tmp_path / p), p
    assert not can_read(12345)  # not a path at all


def test_read_image_unsupported_and_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LabelfxIOError, match="notes.txt.*unsupported"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(LabelfxIOError, match="nope.tif.*no such"):
        read_image(tmp_path / "nope.tif")


def test_describe_reads_no_pixels(tmp_path):
    a = np.zeros((3, 2, 40, 50), np.uint16)
    tifffile.imwrite(tmp_path / "d.tif", a, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZCYX", "spacing": 3.0, "unit": "um"})
    info = describe(tmp_path / "d.tif")
    json.dumps(info)  # plain JSON for `labelfx info`
    assert info["shape"] == [3, 2, 40, 50] and info["axes"] == "ZCYX" and info["dtype"] == "uint16"
    assert info["scale"] == pytest.approx([3.0, 0.5, 0.5]) and info["unit"] == "um"
    assert info["levels"] == [[3, 2, 40, 50]] and info["nbytes"] == a.nbytes
    assert info["size_on_disk"] == (tmp_path / "d.tif").stat().st_size
    assert info["lazy"] is False and info["multiscale"] is False and info["chunks"] == [1, 1, 40, 50]


def test_describe_large_store_without_reading(tmp_path):
    # 2 GB of declared pixels but no chunk written: describe must not touch the data
    zarr.create_array(str(tmp_path / "big.zarr"), shape=(32, 8192, 4096), chunks=(1, 1024, 1024),
                      dtype="u2")
    info = describe(tmp_path / "big.zarr")
    assert info["lazy"] is True and info["nbytes"] == 32 * 8192 * 4096 * 2
    assert info["chunks"] == [1, 1024, 1024]


@pytest.mark.parametrize("name,expected", [
    ("cell_masks.tif", True), ("nuclei-seg.zarr", True), ("Labels.tif", True),
    ("img_gt.png", True), ("masked_image.tif", False), ("image.tif", False),
    ("masks/img01.tif", True), ("images/img01.tif", False),
])
def test_label_name_hint(name, expected):
    assert label_name_hint(name) is expected


def test_label_by_name_needs_integer_data(tmp_path):
    tifffile.imwrite(tmp_path / "x_labels.tif", np.zeros((4, 4), np.uint16))
    tifffile.imwrite(tmp_path / "y_labels.tif", np.zeros((4, 4), np.float32))
    img = read_image(tmp_path / "x_labels.tif")
    assert img.is_labels and img.metadata["labels_from"] == "name"
    assert not read_image(tmp_path / "y_labels.tif").is_labels


def test_ngff_image_label_group_is_labels(tmp_path):
    g = zarr.open_group(str(tmp_path / "nuclei.zarr"), mode="w", zarr_format=2)
    g.create_array("0", shape=(16, 16), dtype="u4")
    g.attrs.update({
        "multiscales": [{"version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                         "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}],
        "image-label": {"version": "0.4"},
    })
    img = read_image(tmp_path / "nuclei.zarr")
    assert img.is_labels and not img.multiscale and img.axes == "YX"
