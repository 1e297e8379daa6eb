"""Zarr v2/v3 arrays, groups and OME-Zarr multiscale images; broken stores."""
from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from napari_labelfx.io import LabelfxIOError, read_image, write_labels

RNG = np.random.default_rng(1)


@pytest.mark.parametrize("fmt", [2, 3])
def test_plain_array_v2_v3(tmp_path, fmt):
    a = RNG.integers(0, 4000, (5, 30, 40), dtype=np.uint16)
    z = zarr.create_array(str(tmp_path / "vol.zarr"), shape=a.shape, chunks=(1, 16, 16), dtype=a.dtype,
                          zarr_format=fmt)
    z[...] = a
    for limit in (2**40, 0):
        img = read_image(tmp_path / "vol.zarr", eager_limit=limit)
        assert img.axes == "ZYX" and img.name == "vol" and img.metadata["format"] == f"zarr-v{fmt}"
        assert img.chunks == (1, 16, 16) and img.lazy == (limit == 0)
        np.testing.assert_array_equal(np.asarray(img.data), a)


def test_v3_dimension_names_give_axes(tmp_path):
    a = RNG.integers(0, 255, (2, 20, 30), dtype=np.uint8)
    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=a.shape, dtype=a.dtype,
                          dimension_names=["c", "y", "x"])
    z[...] = a
    img = read_image(tmp_path / "c.zarr")
    assert img.axes == "CYX" and img.scale == (1.0, 1.0)


def test_v2_xarray_dimensions_reordered(tmp_path):
    a = RNG.integers(0, 255, (20, 30, 4), dtype=np.uint8)  # y x z
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=a.shape, dtype=a.dtype, zarr_format=2)
    z[...] = a
    z.attrs["_ARRAY_DIMENSIONS"] = ["y", "x", "z"]
    img = read_image(tmp_path / "x.zarr")
    assert img.axes == "ZYX"
    np.testing.assert_array_equal(img.data, a.transpose(2, 0, 1))


@pytest.mark.parametrize("fmt", [2, 3])
def test_group_with_single_array(tmp_path, fmt):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=fmt)
    arr = g.create_array("data", shape=(12, 14), dtype="u1")
    arr[...] = 7
    img = read_image(tmp_path / "g.zarr")
    assert img.axes == "YX" and img.metadata["array_path"] == "data"
    assert int(np.asarray(img.data).min()) == 7


def test_group_with_many_arrays_is_an_error(tmp_path):
    g = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    g.create_array("a", shape=(4, 4), dtype="u1")
    g.create_array("b", shape=(4, 4), dtype="u1")
    with pytest.raises(LabelfxIOError, match="two.zarr.*2 arrays"):
        read_image(tmp_path / "two.zarr")


def _write_ngff(root, a, version):
    """A small 2-level OME-Zarr (c, z, y, x) image written by hand."""
    fmt = 2 if version == "0.4" else 3
    g = zarr.open_group(str(root), mode="w", zarr_format=fmt)
    levels = [a, a[:, :, ::2, ::2]]
    datasets = []
    for i, lv in enumerate(levels):
        arr = g.create_array(str(i), shape=lv.shape, dtype=lv.dtype, chunks=(1, 1, 16, 16),
                             **({"chunk_key_encoding": {"name": "v2", "separator": "/"}} if fmt == 2 else {}))
        arr[...] = lv
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 2.0, 0.5 * 2**i, 0.5 * 2**i]},
            {"type": "translation", "translation": [0.0, 10.0, 0.0, 0.0]}]})
    ms = [{
        "version": version, "name": "img",
        "axes": [{"name": "c", "type": "channel"}, {"name": "z", "type": "space", "unit": "micrometer"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": datasets,
    }]
    omero = {"channels": [{"label": "dna"}, {"label": "actin"}]}
    if version == "0.4":
        g.attrs.update({"multiscales": ms, "omero": omero})
    else:
        del ms[0]["version"]
        g.attrs.update({"ome": {"version": "0.5", "multiscales": ms, "omero": omero}})


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_multiscale(tmp_path, version):
    a = RNG.integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    _write_ngff(tmp_path / "ome.zarr", a, version)
    img = read_image(tmp_path / "ome.zarr")
    assert img.multiscale and len(img.data) == 2 and img.lazy
    assert img.axes == "ZCYX"  # canonical order; the file stores c, z, y, x
    assert img.scale == pytest.approx((2.0, 0.5, 0.5)) and img.metadata["unit"] == "um"
    assert img.metadata["translate"] == pytest.approx((10.0, 0.0, 0.0))
    assert img.metadata["channel_names"] == ["dna", "actin"]
    assert img.metadata["format"] == f"ome-zarr-{version}"
    assert [lv.shape for lv in img.levels] == [(3, 2, 32, 32), (3, 2, 16, 16)]
    np.testing.assert_array_equal(np.asarray(img.data[0]), a.transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(np.asarray(img.data[1]), a[:, :, ::2, ::2].transpose(1, 0, 2, 3))


def test_bioformats2raw_layout_descends_into_series_0(tmp_path):
    a = RNG.integers(0, 255, (1, 2, 32, 32), dtype=np.uint8)
    g = zarr.open_group(str(tmp_path / "b2r.zarr"), mode="w", zarr_format=2)
    g.attrs["bioformats2raw.layout"] = 3
    _write_ngff(tmp_path / "b2r.zarr" / "0", a, "0.4")
    img = read_image(tmp_path / "b2r.zarr")
    assert img.multiscale and img.metadata["array_path"] == "0"


@pytest.mark.parametrize("meta_file", ["zarr.json", ".zarray"])
def test_broken_metadata_raises(tmp_path, meta_file):
    fmt = 3 if meta_file == "zarr.json" else 2
    z = zarr.create_array(str(tmp_path / "b.zarr"), shape=(8, 8), dtype="u1", zarr_format=fmt)
    z[...] = 1
    (tmp_path / "b.zarr" / meta_file).write_text('{"zarr_format": ')
    with pytest.raises(LabelfxIOError, match="b.zarr.*broken Zarr metadata"):
        read_image(tmp_path / "b.zarr")


def test_folder_without_zarr_metadata(tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(LabelfxIOError, match="not a Zarr store"):
        read_image(tmp_path / "empty.zarr")


def test_deleted_chunk_of_our_labels_is_detected(tmp_path):
    labels = np.zeros((40, 2100), np.uint16)  # two chunks along X, the second all background
    labels[:, :10] = 3
    write_labels(tmp_path / "lab.zarr", labels)
    chunk_files = sorted(p for p in (tmp_path / "lab.zarr").rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(chunk_files) == 3  # write_empty_chunks: even all-zero chunks are on disk
    chunk_files[-1].unlink()
    with pytest.raises(LabelfxIOError, match="lab.zarr.*1 of 3 chunk files are missing"):
        read_image(tmp_path / "lab.zarr")


def test_corrupt_chunk_raises_on_read(tmp_path):
    a = RNG.integers(0, 255, (4, 16, 16), dtype=np.uint8)
    z = zarr.create_array(str(tmp_path / "cc.zarr"), shape=a.shape, chunks=(1, 16, 16), dtype=a.dtype)
    z[...] = a
    (tmp_path / "cc.zarr" / "c" / "2" / "0" / "0").write_bytes(b"garbage")
    lazy = read_image(tmp_path / "cc.zarr", eager_limit=0)
    np.testing.assert_array_equal(np.asarray(lazy.data[1]), a[1])
    with pytest.raises(LabelfxIOError, match="cc.zarr.*cannot read pixel data"):
        np.asarray(lazy.data[2])
    with pytest.raises(LabelfxIOError, match="cc.zarr"):
        read_image(tmp_path / "cc.zarr")


def test_multiscale_level_missing(tmp_path):
    a = RNG.integers(0, 255, (1, 2, 32, 32), dtype=np.uint8)
    _write_ngff(tmp_path / "m.zarr", a, "0.4")
    meta = json.loads((tmp_path / "m.zarr" / ".zattrs").read_text())
    meta["multiscales"][0]["datasets"].append({"path": "9", "coordinateTransformations": []})
    (tmp_path / "m.zarr" / ".zattrs").write_text(json.dumps(meta))
    with pytest.raises(LabelfxIOError, match="m.zarr.*level missing"):
        read_image(tmp_path / "m.zarr")
