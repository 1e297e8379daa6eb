"""TIFF / OME-TIFF / ImageJ reading: axes, scale, eager and lazy paths, damaged files."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_labelfx.io import LabelfxIOError, read_image

RNG = np.random.default_rng(0)


def _both(path):
    """Read eagerly and lazily (eager_limit=0 forces the dask path) and check they agree."""
    eager = read_image(path)
    lazy = read_image(path, eager_limit=0)
    assert not eager.lazy and lazy.lazy
    np.testing.assert_array_equal(np.asarray(lazy.data), eager.data)
    assert (lazy.axes, lazy.scale, lazy.dtype) == (eager.axes, eager.scale, eager.dtype)
    return eager


def test_plain_2d_grey(tmp_path):
    a = RNG.integers(0, 4000, (40, 50), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "grey.tif", a)
    img = _both(tmp_path / "grey.tif")
    assert img.axes == "YX" and img.scale == (1.0, 1.0) and img.name == "grey"
    np.testing.assert_array_equal(img.data, a)
    assert img.metadata["format"] == "tiff" and not img.is_labels


def test_rgb(tmp_path):
    a = RNG.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", a, photometric="rgb")
    img = _both(tmp_path / "rgb.tif")
    assert img.axes == "YXS" and img.rgb and img.channel_axis is None
    np.testing.assert_array_equal(img.data, a)


def test_multichannel_cyx_from_ome_axes(tmp_path):
    a = RNG.integers(0, 255, (3, 30, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "cyx.ome.tif", a, ome=True, metadata={"axes": "CYX"})
    img = _both(tmp_path / "cyx.ome.tif")
    assert img.axes == "CYX" and img.channel_axis == 0 and not img.rgb
    assert img.name == "cyx" and img.metadata["format"] == "ome-tiff"
    np.testing.assert_array_equal(img.data, a)


def test_volume_without_metadata_is_zyx(tmp_path):
    a = RNG.integers(0, 255, (7, 20, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "vol.tif", a, photometric="minisblack", metadata=None)
    img = _both(tmp_path / "vol.tif")
    assert img.axes == "ZYX" and img.scale == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(img.data, a)


def test_imagej_hyperstack_z_c_spacing(tmp_path):
    a = RNG.integers(0, 60000, (5, 2, 24, 32), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "hs.tif", a, imagej=True, resolution=(1 / 0.4, 1 / 0.4),
        metadata={"axes": "ZCYX", "spacing": 2.5, "unit": "um"},
    )
    img = _both(tmp_path / "hs.tif")
    assert img.axes == "ZCYX" and img.metadata["format"] == "imagej-tiff"
    assert img.scale == pytest.approx((2.5, 0.4, 0.4)) and img.metadata["unit"] == "um"
    assert img.spatial_scale == pytest.approx((2.5, 0.4, 0.4))
    np.testing.assert_array_equal(img.data, a)


def test_imagej_units_in_nanometres_become_micrometres(tmp_path):
    a = np.zeros((3, 8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "nm.tif", a, imagej=True, resolution=(1 / 100.0, 1 / 100.0),
                     metadata={"axes": "ZYX", "spacing": 300.0, "unit": "nm"})
    assert read_image(tmp_path / "nm.tif").scale == pytest.approx((0.3, 0.1, 0.1))


def test_ome_tiff_physical_sizes_and_axis_order(tmp_path):
    # OME stores T, C, Z in any order; the reader reorders to canonical TZCYX
    a = RNG.integers(0, 255, (2, 3, 4, 16, 20), dtype=np.uint8)  # T C Z Y X
    tifffile.imwrite(
        tmp_path / "img.ome.tiff", a, ome=True,
        metadata={"axes": "TCZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.35, "PhysicalSizeZ": 1.2,
                  "PhysicalSizeZUnit": "µm", "Channel": {"Name": ["dapi", "gfp", "rfp"]}},
    )
    img = _both(tmp_path / "img.ome.tiff")
    assert img.axes == "TZCYX"
    assert img.scale == pytest.approx((1.0, 1.2, 0.35, 0.3))  # T, Z, Y, X
    assert img.metadata["channel_names"] == ["dapi", "gfp", "rfp"]
    np.testing.assert_array_equal(img.data, a.transpose(0, 2, 1, 3, 4))


def test_ome_pyramid_is_multiscale(tmp_path):
    a = RNG.integers(0, 255, (64, 64), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "pyr.ome.tif") as tw:
        tw.write(a, subifds=1, tile=(32, 32), metadata={"axes": "YX"})
        tw.write(a[::2, ::2], subfiletype=1, tile=(32, 32))
    img = read_image(tmp_path / "pyr.ome.tif")
    assert img.multiscale and [lv.shape for lv in img.levels] == [(64, 64), (32, 32)]
    np.testing.assert_array_equal(np.asarray(img.data[1]), a[::2, ::2])


def test_tiled_large_chunks_are_merged(tmp_path):
    a = RNG.integers(0, 255, (256, 256), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "tiled.tif", a, tile=(32, 32))
    img = read_image(tmp_path / "tiled.tif", eager_limit=0)
    assert img.chunks == (32, 32)  # storage chunking reported as is
    assert img.data.chunksize == (256, 256)  # small tiles grouped into bigger dask chunks
    np.testing.assert_array_equal(np.asarray(img.data), a)


@pytest.mark.parametrize("kwargs", [
    {},
    {"imagej": True, "metadata": {"axes": "ZYX"}},
    {"ome": True, "metadata": {"axes": "ZYX"}},
    {"compression": "zlib"},
    {"tile": (16, 16), "compression": "zlib"},
])
def test_truncated_tiff_raises_naming_file(tmp_path, kwargs):
    a = RNG.integers(0, 60000, (6, 32, 40), dtype=np.uint16)
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, a, photometric="minisblack", **kwargs)
    cut = tmp_path / "cut.tif"
    raw = full.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    for limit in (2**40, 0):
        with pytest.raises(LabelfxIOError, match="cut.tif") as info:
            read_image(cut, eager_limit=limit)
        assert isinstance(info.value, ValueError)


def test_truncated_single_page(tmp_path):
    full = tmp_path / "one.tif"
    tifffile.imwrite(full, RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8), photometric="rgb")
    raw = full.read_bytes()
    (tmp_path / "one_cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(LabelfxIOError, match="truncated"):
        read_image(tmp_path / "one_cut.tif")


def test_garbage_tiff_raises(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(LabelfxIOError, match="bad.tif.*not a readable TIFF"):
        read_image(bad)


def test_corrupt_compressed_strip_fails_on_read(tmp_path):
    a = RNG.integers(0, 255, (4, 64, 64), dtype=np.uint8)
    path = tmp_path / "zl.tif"
    tifffile.imwrite(path, a, photometric="minisblack", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[2].dataoffsets[0], tif.pages[2].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[offset: offset + count] = b"\xff" * count  # destroy the deflate stream of page 2
    path.write_bytes(bytes(raw))
    lazy = read_image(path, eager_limit=0)
    np.testing.assert_array_equal(np.asarray(lazy.data[0]), a[0])  # intact pages still read
    with pytest.raises(LabelfxIOError, match="zl.tif"):
        np.asarray(lazy.data[2])
    with pytest.raises(LabelfxIOError, match="zl.tif"):
        read_image(path)
