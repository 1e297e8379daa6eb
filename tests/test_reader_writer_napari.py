"""npe2 adapters: napari_get_reader / read_layers and the Labels writers (no Qt)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_labelfx._reader import napari_get_reader, read_layers
from napari_labelfx._writer import write_labels_tiff, write_labels_zarr
from napari_labelfx.io import LabelfxIOError, read_labels, write_labels

RNG = np.random.default_rng(4)


@pytest.fixture(scope="module")
def viewer_model():
    components = pytest.importorskip("napari.components")
    return components.ViewerModel


def _add(viewer_model, layer_data):
    """Build real napari layers from LayerData, so wrong kwargs fail here, not in the GUI."""
    viewer = viewer_model()
    layers = []
    for data, kwargs, layer_type in layer_data:
        out = viewer._add_layer_from_data(data, dict(kwargs), layer_type)
        layers.extend(out if isinstance(out, list) else [out])
    return layers


def test_get_reader_returns_none_for_foreign(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert napari_get_reader(str(tmp_path / "a.txt")) is None
    assert napari_get_reader([str(tmp_path / "a.txt")]) is None
    assert napari_get_reader([]) is None
    tifffile.imwrite(tmp_path / "i.tif", np.zeros((4, 4), np.uint8))
    assert napari_get_reader(str(tmp_path / "i.tif")) is read_layers
    assert napari_get_reader([str(tmp_path / "i.tif"), str(tmp_path / "a.txt")]) is None


def test_channels_become_layers_with_scale(tmp_path, viewer_model):
    a = RNG.integers(0, 255, (4, 2, 16, 20), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "hs.tif", a, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZCYX", "spacing": 3.0, "unit": "um"})
    (data, kwargs, kind), = read_layers(str(tmp_path / "hs.tif"))
    assert kind == "image" and kwargs["channel_axis"] == 1
    assert kwargs["name"] == ["hs [0]", "hs [1]"] and kwargs["scale"] == pytest.approx((3.0, 0.5, 0.5))
    layers = _add(viewer_model, [(data, kwargs, kind)])
    assert [layer.name for layer in layers] == ["hs [0]", "hs [1]"]
    assert layers[1].data.shape == (4, 16, 20)
    np.testing.assert_array_equal(np.asarray(layers[1].data), a[:, 1])
    np.testing.assert_allclose(layers[0].scale, (3.0, 0.5, 0.5))


def test_rgb_is_one_layer(tmp_path, viewer_model):
    a = RNG.integers(0, 255, (16, 20, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", a, photometric="rgb")
    layer_data = read_layers(str(tmp_path / "rgb.tif"))
    assert layer_data[0][1]["rgb"] is True and "channel_axis" not in layer_data[0][1]
    (layer,) = _add(viewer_model, layer_data)
    assert layer.rgb and layer.data.shape == (16, 20, 3)


def test_ome_zarr_opens_multiscale(tmp_path, viewer_model):
    g = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=2)
    a = RNG.integers(0, 255, (32, 32), dtype=np.uint8)
    for i, lv in enumerate([a, a[::2, ::2]]):
        g.create_array(str(i), shape=lv.shape, dtype=lv.dtype)[...] = lv
    g.attrs["multiscales"] = [{"version": "0.4",
                               "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                               "datasets": [{"path": str(i), "coordinateTransformations": [
                                   {"type": "scale", "scale": [0.5 * 2**i] * 2}]} for i in range(2)]}]
    (data, kwargs, kind), = read_layers(str(tmp_path / "img.zarr"))
    assert kind == "image" and kwargs["multiscale"] is True and len(data) == 2
    assert kwargs["scale"] == (0.5, 0.5) and kwargs["name"] == "img"
    (layer,) = _add(viewer_model, [(data, kwargs, kind)])
    assert layer.multiscale


def test_labels_written_by_us_open_as_labels(tmp_path, viewer_model):
    lab = RNG.integers(0, 5, (3, 16, 20)).astype(np.uint32)
    write_labels(tmp_path / "objects.zarr", lab, scale=(2.0, 0.5, 0.5))
    write_labels(tmp_path / "objects.tif", lab, scale=(2.0, 0.5, 0.5))
    for p in ("objects.zarr", "objects.tif"):
        (data, kwargs, kind), = read_layers(str(tmp_path / p))
        assert kind == "labels" and kwargs["scale"] == pytest.approx((2.0, 0.5, 0.5))
        (layer,) = _add(viewer_model, [(data, kwargs, kind)])
        np.testing.assert_array_equal(np.asarray(layer.data), lab)


def test_corrupt_file_raises_labelfx_error(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", RNG.integers(0, 255, (6, 32, 32), dtype=np.uint8))
    raw = (tmp_path / "c.tif").read_bytes()
    (tmp_path / "c.tif").write_bytes(raw[: len(raw) // 3])
    reader = napari_get_reader(str(tmp_path / "c.tif"))
    assert reader is not None
    with pytest.raises(LabelfxIOError, match="c.tif"):
        reader(str(tmp_path / "c.tif"))


@pytest.mark.parametrize("writer,ext", [(write_labels_tiff, ".tif"), (write_labels_zarr, ".zarr")])
def test_writers_keep_scale_and_add_extension(tmp_path, writer, ext):
    lab = RNG.integers(0, 7, (5, 12, 14)).astype(np.uint16)
    meta = {"name": "cells", "scale": [2.0, 0.25, 0.25], "translate": [0, 0, 0],
            "metadata": {"labelfx_kind": "scribble", "not_json": object()}}
    written = writer(str(tmp_path / "out"), lab, meta)
    assert written == [str(tmp_path / f"out{ext}")]
    b, scale, md = read_labels(written[0])
    np.testing.assert_array_equal(b, lab)
    assert scale == (2.0, 0.25, 0.25) and md["name"] == "cells"
    assert md["layer_metadata"] == {"labelfx_kind": "scribble"}  # non-JSON entries are dropped
    # and the written file comes back as a Labels layer
    assert read_layers(written[0])[0][2] == "labels"


def test_writer_takes_level_zero_of_multiscale(tmp_path):
    lab = np.arange(64, dtype=np.uint8).reshape(8, 8)
    (path,) = write_labels_tiff(str(tmp_path / "m.tiff"), [lab, lab[::2, ::2]], {"scale": [1.0, 1.0]})
    assert path.endswith("m.tiff")
    np.testing.assert_array_equal(read_labels(path)[0], lab)
