"""Image folders as lazy Z stacks, and single PNG/JPEG files."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_labelfx.io import LabelfxIOError, read_image
from napari_labelfx.io.folder import natural_key

RNG = np.random.default_rng(2)


def test_natural_key_orders_numbers_by_value():
    names = ["img10.png", "img2.png", "img1.png", "IMG3.png"]
    assert sorted(names, key=natural_key) == ["img1.png", "img2.png", "IMG3.png", "img10.png"]


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_folder_stack_in_natural_order(tmp_path, ext):
    planes = [RNG.integers(0, 255, (20, 24), dtype=np.uint8) for _ in range(11)]
    for i, p in enumerate(planes):
        if ext == ".png":
            Image.fromarray(p).save(tmp_path / f"slice{i}{ext}")
        else:
            tifffile.imwrite(tmp_path / f"slice{i}{ext}", p)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    for limit in (2**40, 0):
        img = read_image(tmp_path, eager_limit=limit)
        assert img.axes == "ZYX" and img.shape == (11, 20, 24) and img.lazy == (limit == 0)
        assert img.metadata["files"][:3] == [f"slice0{ext}", f"slice1{ext}", f"slice2{ext}"]
        np.testing.assert_array_equal(np.asarray(img.data), np.stack(planes))


def test_rgb_folder_and_lazy_reads_one_file(tmp_path):
    planes = [RNG.integers(0, 255, (16, 18, 3), dtype=np.uint8) for _ in range(3)]
    for i, p in enumerate(planes):
        Image.fromarray(p).save(tmp_path / f"{i:03d}.png")
    img = read_image(tmp_path, eager_limit=0)
    assert img.axes == "ZYXS" and img.rgb
    (tmp_path / "000.png").unlink()  # only the file that is touched gets read
    np.testing.assert_array_equal(np.asarray(img.data[2]), planes[2])


def test_folder_with_different_sizes_is_an_error(tmp_path):
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tmp_path / "a1.png")
    Image.fromarray(np.zeros((20, 25), np.uint8)).save(tmp_path / "a2.png")
    with pytest.raises(LabelfxIOError, match="a2.png.*same size"):
        read_image(tmp_path)


def test_folder_mixing_grey_and_rgb_is_an_error(tmp_path):
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tmp_path / "a1.png")
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "a2.png")
    with pytest.raises(LabelfxIOError, match="a2.png"):
        read_image(tmp_path)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(LabelfxIOError, match="no images"):
        read_image(tmp_path)


def test_single_png_grey16_and_rgb(tmp_path):
    grey = RNG.integers(0, 65535, (20, 30), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.axes == "YX" and img.dtype == np.uint16
    np.testing.assert_array_equal(img.data, grey)
    rgb = RNG.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    img = read_image(tmp_path / "c.png", eager_limit=0)
    assert img.axes == "YXS" and img.lazy
    np.testing.assert_array_equal(np.asarray(img.data), rgb)


def test_truncated_png_raises(tmp_path):
    Image.fromarray(RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    raw = (tmp_path / "p.png").read_bytes()
    (tmp_path / "p.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(LabelfxIOError, match="p.png.*cannot decode"):
        read_image(tmp_path / "p.png")
