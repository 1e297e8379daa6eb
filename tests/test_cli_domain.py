"""CLI hooks of the domain tools: skin-tone on a folder, stain-normalize on a file, debias errors."""
from __future__ import annotations

import argparse
import csv

import cv2
import numpy as np
import pytest

from napari_labelfx.cli import debias, skin_tone, stain_normalize
from napari_labelfx.tools.stain.lab import lab_to_rgb_uint8


def _skin(l_value: float, b_value: float, size: int = 96) -> np.ndarray:
    """Uniform skin of a given CIELAB L and b with a dark central lesion (uint8 RGB)."""
    lab = np.zeros((size, size, 3), np.float64)
    lab[..., 0], lab[..., 1], lab[..., 2] = l_value, 12.0, b_value
    rgb = np.ascontiguousarray(lab_to_rgb_uint8(lab))
    cv2.circle(rgb, (size // 2, size // 2), size // 6, (60, 30, 20), -1)
    return rgb


def _parse(add, argv):
    return add(argparse.ArgumentParser()).parse_args(argv)


def test_skin_tone_folder_writes_csv_and_histogram(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    # ITA = atan((L - 50) / b): L 80, b 10 -> 71.6 deg (type I); L 45, b 20 -> -14 deg (type VI)
    for name, (l_value, b_value) in {"light.png": (80, 10), "dark.png": (45, 20)}.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(_skin(l_value, b_value), cv2.COLOR_RGB2BGR))
    out, hist = tmp_path / "t.csv", tmp_path / "h.png"
    assert skin_tone.run(_parse(skin_tone.add_arguments, [str(folder), "--out", str(out), "--hist", str(hist)])) == 0
    rows = {r["file"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"light.png", "dark.png"}
    assert rows["light.png"]["fitzpatrick"] == "1" and rows["dark.png"]["fitzpatrick"] == "6"
    assert hist.stat().st_size > 1000 and hist.read_bytes()[:4] == b"\x89PNG"


def test_skin_tone_on_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    code = skin_tone.run(_parse(skin_tone.add_arguments, [str(tmp_path / "nope"), "--out", str(tmp_path / "t.csv")]))
    assert code == 2 and "not a folder" in capsys.readouterr().err


def _he(stains: np.ndarray, seed: int = 0, size: int = 64) -> np.ndarray:
    """Synthetic two-stain image (Beer-Lambert): background, pure H, pure E and mixtures per pixel."""
    rng = np.random.default_rng(seed)
    he = stains / np.linalg.norm(stains, axis=0)
    kind = rng.integers(0, 4, size * size)
    c = np.zeros((size * size, 2))
    c[kind == 1, 0] = rng.uniform(0.4, 1.6, (kind == 1).sum())
    c[kind == 2, 1] = rng.uniform(0.4, 1.1, (kind == 2).sum())
    c[kind == 3] = rng.uniform(0.2, 1.0, ((kind == 3).sum(), 2))
    rgb = 240 * np.exp(-(c @ he.T)) - 1.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(size, size, 3)


SRC = np.array([[0.60, 0.30], [0.75, 0.85], [0.28, 0.43]])
REF = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_stain_normalize_writes_the_normalised_image(tmp_path, method):
    src, ref, dst = tmp_path / "in.png", tmp_path / "ref.png", tmp_path / f"out_{method}.png"
    img, reference = _he(SRC, 0), _he(REF, 1)
    cv2.imwrite(str(src), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(ref), cv2.cvtColor(reference, cv2.COLOR_RGB2BGR))
    args = _parse(stain_normalize.add_arguments, [str(src), str(dst), "--method", method, "--reference", str(ref)])
    assert stain_normalize.run(args) == 0
    out = cv2.cvtColor(cv2.imread(str(dst)), cv2.COLOR_BGR2RGB)
    assert out.shape == img.shape and not np.array_equal(out, img)
    # the mean colour moves towards the reference's
    target = reference.reshape(-1, 3).mean(0)
    assert np.linalg.norm(out.reshape(-1, 3).mean(0) - target) < 0.5 * np.linalg.norm(img.reshape(-1, 3).mean(0) - target)


def test_stain_normalize_reinhard_without_reference_and_bad_input_fail_clearly(tmp_path, capsys):
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), _he(SRC, 0))
    assert stain_normalize.run(_parse(stain_normalize.add_arguments,
                                      [str(src), str(tmp_path / "o.png"), "--method", "reinhard"])) == 2
    assert "needs --reference" in capsys.readouterr().err
    grey = tmp_path / "grey.tif"
    import tifffile

    tifffile.imwrite(grey, np.zeros((16, 16), np.uint8))
    assert stain_normalize.run(_parse(stain_normalize.add_arguments, [str(grey), str(tmp_path / "o.png")])) == 2
    assert "RGB" in capsys.readouterr().err


def test_debias_reports_a_missing_column(tmp_path, capsys):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(2):
        cv2.imwrite(str(root / "images" / f"im{i}.png"), _skin(70, 15, 64))
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), np.zeros((64, 64), np.uint8))
    (root / "meta.json").write_text('{"task": "semantic", "classes": ["background", "lesion"]}')
    (root / "labels.csv").write_text("image,diagnosis\nim0,a\nim1,b\n")
    args = _parse(debias.add_arguments, ["--dataset", str(root), "--label-column", "nope", "--iters", "1"])
    assert debias.run(args) == 2 and "no column 'nope'" in capsys.readouterr().err
