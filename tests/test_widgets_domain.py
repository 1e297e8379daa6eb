"""Stain and skin-tone panels in a real napari viewer (run under xvfb-run -a)."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

pytest.importorskip("napari")

from napari_labelfx.tools.stain import HE_REF  # noqa: E402
from napari_labelfx.tools.stain.lab import lab_to_rgb_uint8  # noqa: E402
from napari_labelfx.widgets.skin_tone import SkinToneWidget  # noqa: E402
from napari_labelfx.widgets.stain import REF_IMAGE, REF_SHAPES, StainWidget  # noqa: E402

SRC = np.array([[0.60, 0.30], [0.75, 0.85], [0.28, 0.43]])


def _he(stains: np.ndarray, seed: int = 0, size: int = 64) -> np.ndarray:
    """Two-stain Beer-Lambert image: background, pure H, pure E and mixtures per pixel (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    he = np.asarray(stains, float) / np.linalg.norm(stains, axis=0)
    kind = rng.integers(0, 4, size * size)
    c = np.zeros((size * size, 2))
    c[kind == 1, 0] = rng.uniform(0.4, 1.6, (kind == 1).sum())
    c[kind == 2, 1] = rng.uniform(0.4, 1.1, (kind == 2).sum())
    c[kind == 3] = rng.uniform(0.2, 1.0, ((kind == 3).sum(), 2))
    rgb = 240 * np.exp(-(c @ he.T)) - 1.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(size, size, 3)


def _skin(l_value: float, b_value: float, size: int = 96) -> np.ndarray:
    lab = np.zeros((size, size, 3))
    lab[..., 0], lab[..., 1], lab[..., 2] = l_value, 12.0, b_value
    rgb = np.ascontiguousarray(lab_to_rgb_uint8(lab))
    cv2.circle(rgb, (size // 2, size // 2), size // 6, (60, 30, 20), -1)
    return rgb


def _wait_layer(qtbot, viewer, name):
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=30000)
    return viewer.layers[name]


def test_stain_panel_normalizes_with_builtin_reference_and_separates(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_he(SRC, 0), name="he", rgb=True)
    w = StainWidget(viewer)
    assert w.image_combo.currentText() == "he"
    w.method_combo.setCurrentText("macenko")
    w.normalize()
    out = _wait_layer(qtbot, viewer, "he macenko")
    assert out.rgb and out.data.shape == (64, 64, 3) and out.data.dtype == np.uint8
    assert not np.array_equal(out.data, viewer.layers["he"].data)
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    w.separate()
    h = _wait_layer(qtbot, viewer, "he haematoxylin")
    e = _wait_layer(qtbot, viewer, "he eosin")
    assert h.data.shape == e.data.shape == (64, 64)
    assert float(h.data.max()) > 0 and float(e.data.max()) > 0


def test_stain_panel_reference_layer_and_rectangle(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_he(SRC, 0), name="src", rgb=True)
    viewer.add_image(_he(HE_REF, 1), name="ref", rgb=True)
    w = StainWidget(viewer)
    w.image_combo.setCurrentText("src")
    w.method_combo.setCurrentText("reinhard")
    w.ref_kind.setCurrentText(REF_IMAGE)
    w.ref_layer.setCurrentText("ref")
    w.normalize()
    out = _wait_layer(qtbot, viewer, "src reinhard")
    target = viewer.layers["ref"].data.reshape(-1, 3).mean(0)
    src = viewer.layers["src"].data.reshape(-1, 3).mean(0)
    assert np.linalg.norm(out.data.reshape(-1, 3).mean(0) - target) < 0.5 * np.linalg.norm(src - target)
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    # a rectangle on the source image itself is the reference region
    viewer.add_shapes([np.array([[0, 0], [0, 40], [40, 40], [40, 0]])], shape_type="rectangle", name="roi")
    w.image_combo.setCurrentText("src")
    w.method_combo.setCurrentText("macenko")
    w.ref_kind.setCurrentText(REF_SHAPES)
    assert w.ref_layer.currentText() == "roi"
    w.normalize()
    _wait_layer(qtbot, viewer, "src macenko")


def test_stain_panel_errors_are_notifications_not_crashes(make_napari_viewer, qtbot, monkeypatch):
    import napari.utils.notifications as notes

    shown = []
    monkeypatch.setattr(notes, "show_error", lambda msg: shown.append(msg))
    viewer = make_napari_viewer()
    w = StainWidget(viewer)
    w.normalize()  # no image layer at all
    assert shown and "choose an RGB image layer" in shown[-1]
    viewer.add_image(_he(SRC, 0), name="he", rgb=True)
    w.method_combo.setCurrentText("reinhard")  # built-in reference: Reinhard has none
    w.normalize()
    qtbot.waitUntil(lambda: len(shown) >= 2, timeout=30000)
    assert "Reinhard" in shown[-1]
    # an error inside the worker (a blank slide has no stain to separate) is a notification too
    viewer.add_image(np.full((32, 32, 3), 250, np.uint8), name="blank", rgb=True)
    w.image_combo.setCurrentText("blank")
    w.method_combo.setCurrentText("macenko")
    w.separate()
    qtbot.waitUntil(lambda: len(shown) >= 3, timeout=30000)
    assert "blank" in shown[-1]
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    assert w.separate_btn.isEnabled()


def test_skin_panel_shows_eight_patches_type_and_folder_histogram(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(_skin(80, 10), name="derm", rgb=True)
    w = SkinToneWidget(viewer)
    w.estimate()
    patches = _wait_layer(qtbot, viewer, "derm skin patches")
    assert len(patches.data) == 8 and set(patches.shape_type) == {"rectangle"}
    chosen = w.last_result.chosen_index
    assert list(patches.features["chosen"]).index(True) == chosen
    assert patches.edge_width[chosen] > max(wd for i, wd in enumerate(patches.edge_width) if i != chosen)
    assert "type: I" in w.result_label.text() and "ITA: 71" in w.result_label.text()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, lb in {"a.png": (80, 10), "b.png": (45, 20), "c.png": (70, 25)}.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(_skin(*lb), cv2.COLOR_RGB2BGR))
    out = tmp_path / "t.csv"
    w.run_folder(folder, out, tmp_path / "h.png")
    qtbot.waitUntil(lambda: len(w.last_rows) == 3, timeout=30000)
    assert len(list(csv.DictReader(out.open()))) == 3 and (tmp_path / "h.png").exists()
    assert int(w.histogram.counts.sum()) == 3 and w.histogram.counts[0] >= 1 and w.histogram.counts[5] == 1
