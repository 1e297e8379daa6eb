"""The plugin's panels in a real napari viewer (under xvfb): manifest, Annotate, Train."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
from npe2 import PluginManifest  # noqa: E402

from napari_labelfx._sample_data import make_nuclei_2d, make_volume_3d  # noqa: E402
from napari_labelfx.engine.updates import UpdateKind  # noqa: E402


def test_manifest_validates():
    pm = PluginManifest.from_distribution("napari-labelfx")
    assert pm.name == "napari-labelfx"
    widgets = {w.display_name for w in pm.contributions.widgets}
    assert {"Annotate", "Train"} <= widgets
    ids = {c.id for c in pm.contributions.commands}
    for r in pm.contributions.readers:
        assert r.command in ids


def test_widgets_and_samples_through_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-labelfx", "nuclei2d")
    names = [ly.name for ly in viewer.layers]
    assert len(names) >= 4
    kinds = {ly.metadata.get("labelfx_kind") for ly in viewer.layers}
    assert {"strong", "scribble", "noisy"} <= kinds
    _, annotate = viewer.window.add_plugin_dock_widget("napari-labelfx", "Annotate")
    _, train = viewer.window.add_plugin_dock_widget("napari-labelfx", "Train")
    # the Annotate panel lists every annotation layer with its kind
    shown = {annotate.layer_table.item(r, 0).text(): annotate.layer_table.cellWidget(r, 2).currentText()
             for r in range(annotate.layer_table.rowCount())}
    for ly in viewer.layers:
        if ly.metadata.get("labelfx_kind"):
            assert shown[ly.name] == ly.metadata["labelfx_kind"]
    assert train.annotation_list.count() >= 3
    viewer.open_sample("napari-labelfx", "volume3d")


def test_annotate_kinds_classes_tags(make_napari_viewer):
    viewer = make_napari_viewer()
    from napari_labelfx.widgets.annotate import AnnotateWidget

    d = make_nuclei_2d(seed=1, size=64)
    viewer.add_image(d["image"], name="img")
    w = AnnotateWidget(viewer)
    layer = w.new_annotation_layer("scribble")
    assert layer.metadata["labelfx_kind"] == "scribble"
    assert layer.data.shape == (64, 64)
    w.add_class("mitosis")
    from napari_labelfx.widgets._layers import get_class_table

    table = get_class_table(viewer.layers["img"])
    assert "mitosis" in table.names
    w.set_layer_kind(layer, "noisy")
    assert layer.metadata["labelfx_kind"] == "noisy"
    # the table shows the kind set from code, and choosing one there sets the layer's kind
    combo = w.layer_table.cellWidget(0, 2)
    assert combo.currentText() == "noisy"
    combo.setCurrentText("strong")
    assert layer.metadata["labelfx_kind"] == "strong"
    w.tag_boxes["mitosis"].setChecked(True)
    w.apply_tags(per_slice=False)
    assert viewer.layers["img"].metadata["labelfx_tags"][None] == {"mitosis"}


def test_annotate_project_roundtrip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    from napari_labelfx.widgets.annotate import AnnotateWidget

    d = make_nuclei_2d(seed=2, size=64)
    viewer.add_image(d["image"], name="img")
    w = AnnotateWidget(viewer)
    layer = w.new_annotation_layer("strong")
    layer.data[10:20, 10:20] = 1
    folder = tmp_path / "proj"
    assert w.save_project(str(folder))
    viewer2 = make_napari_viewer()
    w2 = AnnotateWidget(viewer2)
    w2.open_project(str(folder))
    labels = [ly for ly in viewer2.layers if ly.metadata.get("labelfx_kind") == "strong"]
    assert len(labels) == 1
    np.testing.assert_array_equal(labels[0].data, layer.data)


def _train_widget(viewer, mode="thread", iters=6):
    from napari_labelfx.widgets.train import TrainWidget

    w = TrainWidget(viewer, runner_mode=mode)
    viewer.window.add_dock_widget(w)
    w.iters_spin.setValue(iters)
    w.patch_spin.setValue(64)
    w.batch_spin.setValue(2)
    w.device_combo.setCurrentText("cpu")
    w.refresh_spin.setValue(0.5)
    return w


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_train_widget_trains_and_predicts(make_napari_viewer, qtbot, mode):
    viewer = make_napari_viewer()
    d = make_nuclei_2d(seed=0, size=96)
    viewer.add_image(d["image"], name="img")
    scrib = viewer.add_labels(d["scribbles"].copy(), name="scribbles", metadata={"labelfx_kind": "scribble"})
    before = scrib.data.copy()
    w = _train_widget(viewer, mode=mode)
    w.method_combo.setCurrentText("scribble")
    seen = []
    orig = w.apply_update
    w.apply_update = lambda u: (seen.append(u.kind), orig(u))[1]
    w.start()
    qtbot.waitUntil(lambda: w.runner is not None and not w.runner.running and UpdateKind.FINISHED in seen,
                    timeout=120_000)
    assert UpdateKind.FAILED not in seen, w.status.text()
    assert "img prediction" in viewer.layers and "img confidence" in viewer.layers
    assert viewer.layers["img prediction"].data.shape == (96, 96)
    assert w.preview_count >= 1
    assert w.model_dir is not None and (w.model_dir / "config.json").exists()
    np.testing.assert_array_equal(scrib.data, before)  # the person's painting is untouched
    if mode == "thread":
        viewer.layers.remove("img prediction")
        worker = w.predict()
        with qtbot.waitSignal(worker.finished, timeout=60_000):
            pass
        qtbot.waitUntil(lambda: "img prediction" in viewer.layers, timeout=10_000)
        saved = w.save_model(str(w.model_dir.parent / "saved"))
        assert (saved / "model.safetensors").exists()
        w.load_model(str(saved))
        assert w.model_dir == saved


def test_train_widget_without_annotations_reports(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.rand(32, 32).astype(np.float32), name="img")
    w = _train_widget(viewer)
    w.start()  # a notification, no crash, no runner
    assert w.runner is None
    assert w.start_btn.isEnabled()


def test_train_widget_worker_failure_keeps_layers(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    d = make_nuclei_2d(seed=0, size=64)
    viewer.add_image(d["image"], name="img")
    scrib = viewer.add_labels(d["scribbles"].copy(), name="s", metadata={"labelfx_kind": "scribble"})
    before = scrib.data.copy()
    import napari_labelfx.engine.runner as runner_mod

    class Boom(runner_mod.TrainingJob):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.trainer_factory = "tests._fake_trainers:FailingTrainer"

    monkeypatch.setattr(runner_mod, "TrainingJob", Boom)
    w = _train_widget(viewer)
    w.start()
    qtbot.waitUntil(lambda: "failed" in w.status.text().lower(), timeout=30_000)
    assert "out of GPU memory" in w.status.text()
    assert w.start_btn.isEnabled()
    np.testing.assert_array_equal(scrib.data, before)


def test_train_widget_volume_preview_slice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    v = make_volume_3d(seed=0, shape=(8, 48, 48))
    viewer.add_image(v["image"], name="vol")
    viewer.add_labels(v["strong"], name="strong", metadata={"labelfx_kind": "strong"})
    w = _train_widget(viewer, iters=4)
    w.method_combo.setCurrentText("supervised")
    w.patch_spin.setValue(32)
    seen = []
    orig = w.apply_update
    w.apply_update = lambda u: (seen.append(u), orig(u))[1]
    w.start()
    qtbot.waitUntil(lambda: w.runner is not None and not w.runner.running and
                    any(u.kind in (UpdateKind.FINISHED, UpdateKind.FAILED) for u in seen), timeout=120_000)
    assert not any(u.kind == UpdateKind.FAILED for u in seen), [u for u in seen if u.kind == UpdateKind.FAILED]
    assert viewer.layers["vol prediction"].data.shape == (8, 48, 48)


def test_file_open_through_plugin_and_corrupt_files(make_napari_viewer, tmp_path):
    """napari's File > Open path: our reader opens TIFF and Zarr; corrupt files give a clear error."""
    import tifffile
    import zarr

    viewer = make_napari_viewer()
    tif = tmp_path / "vol.tif"
    tifffile.imwrite(tif, np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16), imagej=True,
                     metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"}, resolution=(2.0, 2.0))
    layers = viewer.open(str(tif), plugin="napari-labelfx")
    assert layers[0].data.shape == (4, 16, 16)
    assert tuple(np.round(layers[0].scale, 3)) == (2.0, 0.5, 0.5)
    zpath = tmp_path / "img.zarr"
    z = zarr.create_array(str(zpath), shape=(32, 32), chunks=(16, 16), dtype="uint8")
    z[:] = 7
    layers = viewer.open(str(zpath), plugin="napari-labelfx")
    assert layers[0].data.shape == (32, 32)

    bad = tmp_path / "bad.tif"
    bad.write_bytes(tif.read_bytes()[: len(tif.read_bytes()) // 2])
    with pytest.raises(Exception) as exc:
        viewer.open(str(bad), plugin="napari-labelfx")
    assert "bad.tif" in str(exc.value)
    (zpath / "zarr.json").write_text("{ not json")
    with pytest.raises(Exception) as exc:
        viewer.open(str(zpath), plugin="napari-labelfx")
    assert "img.zarr" in str(exc.value)
    # the viewer keeps working and keeps its layers
    assert len(viewer.layers) == 2
    viewer.add_image(np.zeros((8, 8)))
    assert len(viewer.layers) == 3


def test_method_settings_show_the_important_ones_and_fold_the_rest(make_napari_viewer):
    from napari_labelfx.widgets.train import TrainWidget

    w = TrainWidget(make_napari_viewer())
    form = w.method_params
    w.method_combo.setCurrentText("rpg+")
    shown = [form._form.itemAt(i, form._form.LabelRole).widget().text() for i in range(form._form.rowCount())]
    folded = [form._more_form.itemAt(i, form._more_form.LabelRole).widget().text()
              for i in range(form._more_form.rowCount())]
    assert shown == ["pool", "k", "tau"]
    assert "grid" in folded and "cutout" in folded and not set(shown) & set(folded)
    assert form.more.isVisibleTo(w) or not w.isVisible()
    # values() still covers every parameter, shown or folded
    form._editors["cutout"][0].setValue(0.25)
    form._editors["pool"][0].setValue(5)
    assert form.values() == {"cutout": 0.25, "pool": 5}
    w.method_combo.setCurrentText("supervised")
    assert form._form.rowCount() == 0 and form._more_form.rowCount() == 3


def test_method_form_editors_follow_the_declared_types(make_napari_viewer):
    """RPG's k takes a fraction, chexseg's threshold a word or a number, ranges bound the boxes."""
    from qtpy.QtWidgets import QComboBox, QDoubleSpinBox

    from napari_labelfx.core.params import ParamError
    from napari_labelfx.widgets.train import TrainWidget

    w = TrainWidget(make_napari_viewer())
    form = w.method_params
    w.method_combo.setCurrentText("rpg")
    k = form._editors["k"][0]
    assert isinstance(k, QDoubleSpinBox) and "fraction" in k.toolTip()
    k.setValue(0.05)
    assert form.values() == {"k": 0.05}
    k.setValue(500)
    assert form.values() == {"k": 500} and isinstance(form.values()["k"], int)
    pool = form._editors["pool"][0]
    pool.setValue(0)
    assert pool.value() == 1  # the declared minimum
    w.method_combo.setCurrentText("chexseg")
    thr = form._editors["threshold"][0]
    assert isinstance(thr, QComboBox) and thr.isEditable() and thr.currentText() == "auto"
    thr.setCurrentText("otsu")
    assert form.values() == {"threshold": "otsu"}
    thr.setCurrentText("0.4")
    assert form.values() == {"threshold": 0.4}
    thr.setCurrentText("median")
    with pytest.raises(ParamError, match="method 'chexseg': threshold must be 'auto' or 'otsu' or a number"):
        form.values()
    w.method_combo.setCurrentText("mlds")
    assert isinstance(form._editors["unlabeled"][0], QComboBox) and not form._editors["unlabeled"][0].isEditable()
