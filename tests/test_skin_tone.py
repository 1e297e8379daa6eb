"""Skin tone: ITA, Fitzpatrick boundaries, hair removal, border patches, folder batch."""
from __future__ import annotations

import csv
import math

import cv2
import numpy as np
import pytest

from napari_labelfx.tools.skin_tone import (
    FITZPATRICK_ITA_THRESHOLDS,
    SkinToneInputError,
    border_patch_boxes,
    estimate_folder,
    estimate_skin_tone,
    fitzpatrick_counts,
    fitzpatrick_from_ita,
    hair_mask,
    ita,
    plot_fitzpatrick_histogram,
    remove_hair,
    write_csv,
)
from napari_labelfx.tools.stain.lab import lab_to_rgb, rgb_to_lab

#: One ITA well inside each type's interval, for types I..VI.
MID_ITA = (65.0, 48.0, 34.5, 23.5, 14.5, 0.0)


def lab_for_ita(angle: float, b: float = 16.0, a: float = 12.0) -> np.ndarray:
    return np.array([50.0 + b * math.tan(math.radians(angle)), a, b])


def skin_rgb(angle: float) -> np.ndarray:
    rgb = lab_to_rgb(lab_for_ita(angle)[None, :].astype(np.float32))[0]
    return np.rint(rgb * 255).astype(np.uint8)


def skin_image(angle: float, h: int = 200, w: int = 240) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = skin_rgb(angle)
    cv2.ellipse(img, (w // 2, h // 2), (w // 5, h // 5), 0, 0, 360, (70, 40, 30), -1)  # dark lesion
    return img


def with_hair(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    for k in range(6):
        cv2.line(out, (0, 10 + 35 * k), (out.shape[1] - 1, 40 + 30 * k), (25, 20, 15), 2)
    return out


def test_ita_formula_and_zero_b_guard():
    assert ita(50.0, 10.0) == 0.0
    assert ita(60.0, 10.0) == pytest.approx(45.0)
    assert ita(40.0, 10.0) == pytest.approx(-45.0)
    assert ita(70.0, -20.0) == pytest.approx(-45.0)  # arctan, not atan2
    assert ita(70.0, 0.0) == 90.0 and ita(30.0, 0.0) == -90.0 and ita(50.0, 0.0) == 0.0
    vals = ita(np.array([60.0, 70.0]), np.array([10.0, 0.0]))
    np.testing.assert_allclose(vals, [45.0, 90.0])


def test_fitzpatrick_types_at_every_threshold_boundary():
    # on a boundary the darker type; just above it the lighter one
    for k, t in enumerate(FITZPATRICK_ITA_THRESHOLDS):
        assert fitzpatrick_from_ita(t) == k + 2
        assert fitzpatrick_from_ita(np.nextafter(t, np.inf)) == k + 1
    assert fitzpatrick_from_ita(-60.0) == 6 and fitzpatrick_from_ita(90.0) == 1
    # the same through ITA of synthetic CIELAB values (L, b) built to sit on each boundary
    for k, t in enumerate(FITZPATRICK_ITA_THRESHOLDS):
        light, _, b = lab_for_ita(t)
        assert ita(light, b) == pytest.approx(t, abs=1e-9)
        assert fitzpatrick_from_ita(ita(*lab_for_ita(t + 0.01)[[0, 2]])) == k + 1
        assert fitzpatrick_from_ita(ita(*lab_for_ita(t - 0.01)[[0, 2]])) == k + 2
    np.testing.assert_array_equal(fitzpatrick_from_ita(np.array(MID_ITA)), [1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="NaN"):
        fitzpatrick_from_ita(float("nan"))


@pytest.mark.parametrize("ftype", [1, 2, 3, 4, 5, 6])
def test_each_type_from_synthetic_skin_image(ftype):
    res = estimate_skin_tone(skin_image(MID_ITA[ftype - 1]))
    assert res.fitzpatrick == ftype
    assert res.ita == pytest.approx(MID_ITA[ftype - 1], abs=1.5)
    assert res.fitzpatrick_roman == ("I", "II", "III", "IV", "V", "VI")[ftype - 1]


def test_patch_layout_at_256_and_scaled():
    boxes = border_patch_boxes(256, 256)
    assert boxes == [
        (0, 118, 20, 138), (236, 118, 256, 138), (118, 0, 138, 20), (118, 236, 138, 256),
        (32, 32, 52, 52), (32, 204, 52, 224), (204, 32, 224, 52), (204, 204, 224, 224),
    ]
    big = border_patch_boxes(512, 768)
    assert big[0] == (0, 354, 40, 414) and big[1] == (472, 354, 512, 414)
    assert all(0 <= y0 < y1 <= 512 and 0 <= x0 < x1 <= 768 for y0, x0, y1, x1 in big)


def test_lightest_patch_wins_over_dark_corner_and_lesion():
    img = skin_image(MID_ITA[2])
    img[:70, :80] = skin_rgb(MID_ITA[5])  # a shadowed corner
    res = estimate_skin_tone(img, hair_removal=False)
    assert res.fitzpatrick == 3
    assert res.patch_itas[res.chosen_index] == max(res.patch_itas)
    assert min(res.patch_itas) < 10  # the corner patch saw the shadow
    assert len(res.patch_boxes) == len(res.patch_itas) == 8


def test_hair_removal_removes_thin_dark_lines_and_keeps_skin():
    clean = np.empty((120, 160, 3), np.uint8)
    clean[:] = skin_rgb(MID_ITA[1])
    hairy = with_hair(clean)
    lines = np.any(hairy != clean, axis=-1)
    mask = hair_mask(hairy)
    assert mask[lines].mean() > 0.9 and mask[~lines].mean() < 0.05
    fixed = remove_hair(hairy)
    err = np.abs(fixed.astype(int) - clean.astype(int))
    assert err[lines].mean() < 3 and err.max() <= 12
    np.testing.assert_array_equal(fixed[~mask], clean[~mask])
    # the skin tone of a hairy image matches the clean one after hair removal
    lesion = skin_image(MID_ITA[1], 160, 200)
    clean_ita = estimate_skin_tone(lesion, hair_removal=False).ita
    assert estimate_skin_tone(with_hair(lesion)).ita == pytest.approx(clean_ita, abs=1.0)
    lab = rgb_to_lab(fixed[~lines]).mean(axis=0)
    assert fitzpatrick_from_ita(ita(lab[0], lab[2])) == 2


def test_bad_input():
    with pytest.raises(SkinToneInputError, match="lesion.png.*RGB"):
        estimate_skin_tone(np.zeros((50, 50), np.uint8), name="lesion.png")
    with pytest.raises(SkinToneInputError, match="uint8"):
        estimate_skin_tone(np.zeros((50, 50, 3), np.float32))


def test_folder_batch_csv_and_histogram(tmp_path):
    folder = tmp_path / "derm"
    folder.mkdir()
    for i, ftype in enumerate((1, 3, 3, 6)):
        rgb = skin_image(MID_ITA[ftype - 1], 96, 128)
        assert cv2.imwrite(str(folder / f"img{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "zz_grey.png"), np.zeros((40, 40), np.uint8))
    with pytest.raises(SkinToneInputError, match="zz_grey.png"):
        estimate_folder(folder)
    rows = estimate_folder(folder, on_error="record")
    assert [r["file"] for r in rows] == ["img0.png", "img1.png", "img2.png", "img3.png", "zz_grey.png"]
    assert [r["fitzpatrick"] for r in rows[:4]] == [1, 3, 3, 6]
    assert rows[4]["error"] and rows[4]["fitzpatrick"] == ""
    out_csv = write_csv(rows, tmp_path / "out" / "skin.csv")
    with open(out_csv, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert back[1]["fitzpatrick_roman"] == "III" and float(back[1]["ita_patch_0"]) > 28
    np.testing.assert_array_equal(fitzpatrick_counts(r["fitzpatrick"] for r in rows), [1, 0, 2, 0, 0, 1])
    png = plot_fitzpatrick_histogram([r["fitzpatrick"] for r in rows], tmp_path / "hist.png")
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["derm", "hist.png", "out"]  # no temp files left
