"""Issue 13, the person's path through the panels (napari under xvfb): a volume trained on a few
slices and predicted whole, slice by slice, with objects (items 1, 4); the preview following the
slice in view (item 1); and the smaller things of item 13 (active layer kept at Start, visible
background scribbles, method/label-kind warning, first loss point, Generate's object diameter)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_labelfx._sample_data import make_nuclei_2d  # noqa: E402
from napari_labelfx.engine.updates import UpdateKind  # noqa: E402


def _train_widget(viewer, iters=4, patch=32):
    from napari_labelfx.widgets.train import TrainWidget

    w = TrainWidget(viewer, runner_mode="thread")
    viewer.window.add_dock_widget(w)
    w.iters_spin.setValue(iters)
    w.patch_spin.setValue(patch)
    w.batch_spin.setValue(2)
    w.device_combo.setCurrentText("cpu")
    w.refresh_spin.setValue(0.5)
    return w


def _record(w):
    seen = []
    orig = w.apply_update
    w.apply_update = lambda u: (seen.append(u), orig(u))[1]
    return seen


def _wait_training(qtbot, w, seen):
    qtbot.waitUntil(lambda: w.runner is not None and not w.runner.running and
                    any(u.kind in (UpdateKind.FINISHED, UpdateKind.FAILED) for u in seen), timeout=120_000)
    failed = [u for u in seen if u.kind == UpdateKind.FAILED]
    assert not failed, failed


def _notifications(monkeypatch):
    import napari.utils.notifications as nt

    got = {"error": [], "warning": [], "info": []}
    monkeypatch.setattr(nt, "show_error", lambda m: got["error"].append(m))
    monkeypatch.setattr(nt, "show_warning", lambda m: got["warning"].append(m))
    monkeypatch.setattr(nt, "show_info", lambda m: got["info"].append(m))
    return got


def test_sample_volume_trained_on_slices_predicted_whole_with_objects(make_napari_viewer, qtbot, monkeypatch):
    """Item 1 + 4: the plugin's 3D sample, a 2D model trained on its 3 annotated slices; Predict fills
    every slice (the one in view first), then an objects layer; the preview follows the slice."""
    got = _notifications(monkeypatch)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-labelfx", "volume3d")
    image = viewer.layers["blobs 3d"]
    strong = viewer.layers["blobs strong (3 slices)"]
    painted = np.asarray(strong.data).copy()
    w = _train_widget(viewer, iters=6)
    w.method_combo.setCurrentText("supervised")
    w.image_combo.setCurrentText("blobs 3d")
    assert w.spatial_combo.currentText() == "2d"
    viewer.layers.selection.active = strong  # the person is painting
    seen = _record(w)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w.start()
    # Start keeps the person's layer active (the new result layers do not take the brush), through
    # napari's public API only (napari warns when a plugin touches its private attributes)
    assert viewer.layers.selection.active is strong
    assert list(viewer.layers.selection) == [strong]
    assert not [c for c in caught if "Private attribute access" in str(c.message)], [str(c.message) for c in caught]
    # the preview follows the slice in view
    depth = image.data.shape[0]
    viewer.dims.set_current_step(0, 5)
    qtbot.waitUntil(lambda: w._last_region is not None and w._last_region[0] == (5, 6), timeout=10_000)
    _wait_training(qtbot, w, seen)
    previews = [u.region[0] for u in seen if u.kind == UpdateKind.PREVIEW]
    assert (5, 6) in [tuple(r) for r in previews]
    assert viewer.layers.selection.active is strong

    # Predict: the whole stack, slice by slice, starting at the slice in view
    viewer.dims.set_current_step(0, 20)
    viewer.layers.remove("blobs 3d prediction")
    order = []
    import napari_labelfx.widgets._layers as lay

    orig_apply = lay.apply_preview
    monkeypatch.setattr(lay, "apply_preview",
                        lambda v, im, labels, conf, region=None: (order.append(region),
                                                                  orig_apply(v, im, labels, conf, region))[1])
    worker = w.predict()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: w.predict_btn.isEnabled(), timeout=10_000)
    assert not got["error"], got["error"]
    assert len(order) == depth and order[0][0] == (20, 21)
    assert sorted(r[0][0] for r in order) == list(range(depth))
    pred = viewer.layers["blobs 3d prediction"]
    assert pred.data.shape == image.data.shape
    assert "blobs 3d objects" in viewer.layers
    objects = viewer.layers["blobs 3d objects"]
    assert objects.data.shape == image.data.shape and objects.metadata.get("labelfx_result") == "objects"
    assert w.status.text().startswith("Prediction done")
    np.testing.assert_array_equal(strong.data, painted)  # never writes into the person's layer


def test_predict_failure_is_one_notification_and_a_status(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    """Item 1: a prediction that fails says so once, and the status does not stay at 'Predicting ...'."""
    import torch

    from napari_labelfx.models import ModelConfig, build_model
    from napari_labelfx.models.checkpoint import save_model

    got = _notifications(monkeypatch)
    raw = []  # errors napari would relay as a second, raw pop-up
    from napari.utils.notifications import notification_manager

    monkeypatch.setattr(notification_manager, "receive_error", lambda *a, **k: raw.append(a))
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="stack")
    torch.manual_seed(0)
    save_model(tmp_path / "m", build_model(ModelConfig(spatial_dims=2, depth=2, width=4, num_classes=2, in_channels=3)))
    w = _train_widget(viewer)
    w.load_model(str(tmp_path / "m"))
    worker = w.predict()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: w.predict_btn.isEnabled(), timeout=10_000)
    assert len(got["error"]) == 1 and "3 channel" in got["error"][0]
    assert not raw
    assert w.status.text().startswith("Prediction failed")


def test_adele_on_scribbles_warns_and_loss_plot_shows_first_point(make_napari_viewer, qtbot, monkeypatch):
    """Item 13: a method made for other labels warns at Start; the first loss shows as a point."""
    got = _notifications(monkeypatch)
    viewer = make_napari_viewer()
    d = make_nuclei_2d(seed=0, size=64)
    viewer.add_image(d["image"], name="img")
    viewer.add_labels(d["scribbles"].copy(), name="scribbles", metadata={"labelfx_kind": "scribble"})
    w = _train_widget(viewer, iters=2)
    w.method_combo.setCurrentText("adele")
    seen = _record(w)
    w.start()
    assert any("adele" in m and "noisy" in m and "scribble" in m for m in got["warning"]), got["warning"]
    _wait_training(qtbot, w, seen)
    w.plot.clear()
    w.plot.add_train(1, 0.7)
    line = w.plot.ax.lines[0]
    assert line.get_marker() == "o" and len(line.get_xdata()) == 1


def test_background_scribbles_have_a_visible_colour(make_napari_viewer):
    """Item 13: background scribbles (value 1) are not grey, in the sample and in a new scribble layer."""
    from matplotlib.colors import to_rgb

    from napari_labelfx.annotations.class_table import BACKGROUND_COLOR
    from napari_labelfx.widgets.annotate import AnnotateWidget

    r, g, b = to_rgb(BACKGROUND_COLOR)
    assert max(r, g, b) - min(r, g, b) > 0.5  # saturated, not a grey
    viewer = make_napari_viewer()
    viewer.open_sample("napari-labelfx", "nuclei2d")
    scribbles = viewer.layers["nuclei scribbles"]
    np.testing.assert_allclose(scribbles.colormap.map(np.array([1]))[0][:3], (r, g, b), atol=0.02)
    w = AnnotateWidget(viewer)
    w.image_combo.setCurrentText("nuclei") if hasattr(w, "image_combo") else None
    layer = w.new_annotation_layer("scribble")
    np.testing.assert_allclose(layer.colormap.map(np.array([1]))[0][:3], (r, g, b), atol=0.02)


def test_generate_labels_measures_the_object_diameter(make_napari_viewer, monkeypatch):
    """Item 13: 'auto' diameter is measured on the image; a featureless image warns."""
    from napari_labelfx.widgets.generate_labels import GenerateLabelsWidget

    got = _notifications(monkeypatch)
    viewer = make_napari_viewer()
    yy, xx = np.mgrid[:160, :160]
    img = np.zeros((160, 160), np.float32)
    for cy, cx in [(30, 30), (30, 100), (100, 40), (110, 115)]:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 20**2] = 1.0  # 40 px wide: the old 20 px default fragments
    img += np.random.default_rng(0).normal(0, 0.02, img.shape).astype(np.float32)
    viewer.add_image(img, name="cells")
    viewer.add_image(np.zeros((64, 64), np.float32), name="flat")
    w = GenerateLabelsWidget(viewer)
    assert w.diameter.value() == 0  # 'auto'
    w.image_combo.setCurrentText("cells")
    layer = w.generate()
    assert int(np.asarray(layer.data).max()) == 4
    assert "measured" in w.status.text()
    diameter, _ = w.diameter_for(viewer.layers["cells"])
    assert 32 <= diameter <= 48
    w.image_combo.setCurrentText("flat")
    w.generate()
    assert any("could not measure" in m for m in got["warning"])


def test_png_opens_through_the_plugin(make_napari_viewer, tmp_path):
    """Item 12: PNG files open through the plugin's reader."""
    from PIL import Image

    path = tmp_path / "dna.png"
    Image.fromarray((np.arange(48 * 64) % 200).astype(np.uint8).reshape(48, 64)).save(path)
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-labelfx")
    assert layers and layers[0].data.shape == (48, 64)
    assert layers[0].metadata.get("labelfx_format") is not None


def test_preview_covers_the_whole_visible_field_of_view(make_napari_viewer, qtbot):
    """Item 6: an image wider than the old 1024-pixel window is previewed edge to edge when it is all
    in view (in tiles), and only the visible part when zoomed in."""
    from napari_labelfx.widgets import _layers

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    img = rng.random((64, 1300)).astype(np.float32)
    image = viewer.add_image(img, name="wide")
    scrib = np.zeros((64, 1300), np.int32)
    scrib[10:14, 20:1280] = 1
    scrib[40:44, 20:1280] = 2
    viewer.add_labels(scrib, name="s", metadata={"labelfx_kind": "scribble"})
    viewer.reset_view()
    assert _layers.visible_region(viewer, image) == ((0, 64), (0, 1300))
    viewer.camera.zoom = viewer.camera.zoom * 10
    viewer.camera.center = (32, 650)
    y, x = _layers.visible_region(viewer, image)
    assert x[0] > 0 and x[1] < 1300 and x[0] <= 650 < x[1]
    viewer.reset_view()
    w = _train_widget(viewer, iters=3, patch=32)
    w.method_combo.setCurrentText("scribble")
    seen = _record(w)
    w.start()
    _wait_training(qtbot, w, seen)
    regions = [u.region for u in seen if u.kind == UpdateKind.PREVIEW]
    assert regions and [tuple(r) for r in regions[-1]] == [(0, 64), (0, 1300)]
    conf = np.asarray(viewer.layers["wide confidence"].data)
    assert conf[:, -1].min() > 0 and conf[:, 0].min() > 0  # both edges predicted


def test_3d_defaults_fit_a_cpu_and_report_from_the_first_step(make_napari_viewer, qtbot):
    """Item 3: 3D on a CPU gets a small patch, batch and network, a progress report from the first
    iteration, and no preview of the untrained network."""
    from napari_labelfx._sample_data import make_volume_3d
    from napari_labelfx.engine.sizing import MIN_PREVIEW_ITERATIONS_3D

    viewer = make_napari_viewer()
    v = make_volume_3d(seed=0, shape=(12, 48, 48))
    viewer.add_image(v["image"], name="vol")
    viewer.add_labels(v["strong"], name="strong", metadata={"labelfx_kind": "strong"})
    w = _train_widget(viewer, iters=3, patch=128)  # the 'small' preset's patch edge
    w.batch_spin.setValue(4)
    w.method_combo.setCurrentText("supervised")
    w.spatial_combo.setCurrentText("3d")
    cfg = w.training_config()
    assert cfg["patch_size"][0] <= 16 and max(cfg["patch_size"]) <= 64
    assert cfg["batch_size"] <= 2 and cfg["model"]["width"] <= 8 and cfg["log_every"] == 1
    seen = _record(w)
    w.start()
    qtbot.waitUntil(lambda: any(u.kind == UpdateKind.PROGRESS for u in seen), timeout=120_000)
    first = next(u for u in seen if u.kind == UpdateKind.PROGRESS)
    assert first.iteration == 1 and w.progress.value() >= 1
    _wait_training(qtbot, w, seen)
    assert any(u.kind == UpdateKind.PREVIEW for u in seen)
    assert 3 < MIN_PREVIEW_ITERATIONS_3D and w.preview_count == 0
    assert not np.asarray(viewer.layers["vol prediction"].data).any()  # nothing flooded the slice


def test_loss_plot_draws_a_burst_of_points_once(qtbot, monkeypatch):
    """Item 9: a redraw renders every label on the main thread; points arriving together draw once at the
    end of the interval, and a point after a quiet spell is drawn at once."""
    from napari_labelfx.widgets import _plot

    monkeypatch.setattr(_plot, "REDRAW_MS", 200)
    plot = _plot.LossPlot()
    qtbot.addWidget(plot)
    draws = []
    real = plot._draw_now
    monkeypatch.setattr(plot, "_draw_now", lambda: (draws.append(len(plot.train)), real()))
    plot.clear()
    for i in range(20):
        plot.add_train(i, 1.0 / (i + 1))
    assert draws == [0, 1]  # the cleared plot, then the first point at once
    qtbot.waitUntil(lambda: draws[-1] == 20, timeout=3000)  # the rest together, once
    assert draws == [0, 1, 20]
    qtbot.wait(400)
    plot.add_train(21, 0.01)  # after a quiet spell: drawn at once
    assert draws[-1] == 21 and len(plot.ax.lines[0].get_xdata()) == 21
