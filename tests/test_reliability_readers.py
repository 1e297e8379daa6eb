"""Issue 14, items 9, 11, 15: malformed Zarr/OME-Zarr metadata, absurd shapes and unusable dtypes
or scales are refused in one line naming the file (and the field), fast, never a traceback."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tifffile
import zarr

from napari_labelfx.cli import main
from napari_labelfx.io import LabelfxIOError, read_image


def _ome(tmp_path, name="img.zarr", **ms_updates):
    """A valid 2-level OME-Zarr 0.4 image whose multiscales entry is then edited."""
    path = tmp_path / name
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=np.zeros((16, 16), np.uint8), chunks=(8, 8))
    group.create_array("1", data=np.zeros((8, 8), np.uint8), chunks=(8, 8))
    ms = {"version": "0.4", "axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                                     {"name": "x", "type": "space", "unit": "micrometer"}],
          "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]},
                       {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 2.0]}]}]}
    ms.update(ms_updates)
    group.attrs["multiscales"] = [ms]
    return path


def test_valid_ome_zarr_still_reads(tmp_path):
    assert read_image(_ome(tmp_path)).shape == (16, 16)


@pytest.mark.parametrize("updates, field", [
    ({"axes": [1, 2]}, r"axes\[0\]"),
    ({"axes": [{"name": "y", "unit": 7}, {"name": "x"}]}, r"axes\[0\]\.unit"),
    ({"coordinateTransformations": "scale"}, "coordinateTransformations"),
    ({"datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0, -1]}]}]}, "scale"),
    ({"datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": ["a", 1]}]}]}, "scale"),
    ({"datasets": "0"}, "datasets"),
    ({"axes": 5}, "axes"),
])
def test_malformed_ome_metadata_names_field_and_file(tmp_path, updates, field):
    path = _ome(tmp_path, **updates)
    with pytest.raises(LabelfxIOError, match=field) as info:
        read_image(path)
    assert ".zattrs" in str(info.value) or "img.zarr" in str(info.value)


def test_multiscales_of_strings_is_refused(tmp_path):
    path = _ome(tmp_path)
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["multiscales"] = ["0", "1"]
    (path / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(LabelfxIOError, match="img.zarr"):
        read_image(path)


@pytest.mark.parametrize("attrs, field", [({"axes": 5}, "axes"), ({"scale": "big"}, "scale"),
                                          ({"scale": [0, 1]}, "scale"), ({"unit": 7}, "unit")])
def test_malformed_plain_zarr_attributes(tmp_path, attrs, field):
    path = tmp_path / "a.zarr"
    zarr.create_array(str(path), shape=(8, 8), dtype=np.uint8, zarr_format=3, attributes=attrs)
    with pytest.raises(LabelfxIOError, match=field) as info:
        read_image(path)
    assert "zarr.json" in str(info.value)


@pytest.mark.parametrize("shape, chunks", [((10**21,) * 3, (1, 1, 1)), ((10**24,) * 3, (1, 512, 512)),
                                           ((2**40, 2**20), (1, 1))])
def test_absurd_shapes_are_refused_fast(tmp_path, shape, chunks, capsys):
    path = tmp_path / "huge.zarr"
    path.mkdir()
    meta = {"zarr_format": 3, "node_type": "array", "shape": list(shape), "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0, "codecs": [{"name": "bytes"}], "attributes": {}}
    (path / "zarr.json").write_text(json.dumps(meta))
    assert (path / "zarr.json").stat().st_size < 1024
    t0 = time.monotonic()
    with pytest.raises(LabelfxIOError, match="more than any real|damaged|more than labelfx"):
        read_image(path)
    assert main(["info", str(path)]) == 2
    assert "huge.zarr" in capsys.readouterr().err
    assert time.monotonic() - t0 < 10


def test_complex_and_string_dtypes_are_refused(tmp_path):
    c = tmp_path / "complex.tif"
    tifffile.imwrite(c, np.zeros((8, 8), np.complex64))
    with pytest.raises(LabelfxIOError, match="complex64.*integer, float or bool"):
        read_image(c)
    s = tmp_path / "str.zarr"
    zarr.create_array(str(s), shape=(4, 4), dtype="<U3", zarr_format=2)
    with pytest.raises(LabelfxIOError, match="str.zarr"):
        read_image(s)


def test_napari_reader_gives_the_path(tmp_path):
    from napari_labelfx._reader import napari_get_reader

    path = _ome(tmp_path, axes=[1, 2])
    reader = napari_get_reader(str(path))
    if reader is None:  # the reader may decline; then napari never sees the file
        return
    with pytest.raises(LabelfxIOError, match="img.zarr"):
        reader(str(path))
