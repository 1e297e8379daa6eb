"""Issue 13 item 7, the person's path: two annotated images trained together in the Train panel (both
reach the trainer, a model is written), both predicted at once, a folder of files predicted into
another folder (never over the inputs), and an annotation project of several images trained on."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari")

from napari_labelfx.engine.updates import UpdateKind  # noqa: E402
from napari_labelfx.inference.batch import plan_folder_prediction  # noqa: E402


def _discs(seed: int, shape=(64, 64)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.uint16)
    for _ in range(4):
        cy, cx = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 1
    img = (mask * 0.8 + rng.normal(0, 0.05, shape)).astype(np.float32)
    return img, mask


def _panels(viewer):
    from napari_labelfx.widgets.annotate import AnnotateWidget
    from napari_labelfx.widgets.train import TrainWidget

    ann = AnnotateWidget(viewer)
    w = TrainWidget(viewer, runner_mode="thread")
    viewer.window.add_dock_widget(ann)
    viewer.window.add_dock_widget(w)
    w.iters_spin.setValue(4)
    w.patch_spin.setValue(32)
    w.batch_spin.setValue(2)
    w.device_combo.setCurrentText("cpu")
    w.method_combo.setCurrentText("supervised")
    return ann, w


def _annotate(viewer, ann, name: str, mask: np.ndarray):
    """The person's path: choose the image in Annotate, New labels layer (strong), paint."""
    ann.image_combo.setCurrentText(name)
    layer = ann.new_annotation_layer("strong")
    layer.data = mask.copy()
    return layer


def _notifications(monkeypatch):
    import napari.utils.notifications as nt

    got = {"error": [], "warning": [], "info": []}
    for kind in got:
        monkeypatch.setattr(nt, f"show_{kind}", lambda m, k=kind: got[k].append(m))
    return got


def test_two_images_train_together_then_predict_both(make_napari_viewer, qtbot, monkeypatch):
    got = _notifications(monkeypatch)
    import napari_labelfx.engine.runner as runner_mod

    jobs = []
    real_job = runner_mod.TrainingJob
    monkeypatch.setattr(runner_mod, "TrainingJob", lambda *a, **k: (jobs.append(a), real_job(*a, **k))[1])
    viewer = make_napari_viewer()
    (img_a, mask_a), (img_b, mask_b) = _discs(1), _discs(2)
    viewer.add_image(img_a, name="cells-a")
    viewer.add_image(img_b, name="cells-b")
    ann, w = _panels(viewer)
    lab_a = _annotate(viewer, ann, "cells-a", mask_a)
    lab_b = _annotate(viewer, ann, "cells-b", mask_b)
    # same shape: each layer still belongs to its own image only
    w.image_combo.setCurrentText("cells-b")
    listed = [w.annotation_list.item(i).data(256) for i in range(w.annotation_list.count())]
    assert listed == [lab_b.name]
    w.train_on_combo.setCurrentText("all annotated images")
    seen = []
    orig = w.apply_update
    w.apply_update = lambda u: (seen.append(u), orig(u))[1]
    w.start()
    assert jobs, got["error"]
    items = jobs[0][1]
    assert [it.name for it in items] == ["cells-b", "cells-a"]  # the image in view first: its preview
    np.testing.assert_array_equal(items[1].target, mask_a.astype(np.int64))
    np.testing.assert_array_equal(items[0].target, mask_b.astype(np.int64))
    qtbot.waitUntil(lambda: not w.runner.running and any(u.kind in (UpdateKind.FINISHED, UpdateKind.FAILED)
                                                         for u in seen), timeout=120_000)
    assert not [u for u in seen if u.kind == UpdateKind.FAILED]
    assert w.model_dir is not None and (w.model_dir / "model.safetensors").is_file()
    assert not got["error"], got["error"]

    worker = w.predict_all()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    for name in ("cells-a", "cells-b"):
        pred = viewer.layers[f"{name} prediction"]
        assert pred.data.shape == (64, 64) and pred.metadata.get("labelfx_result")
        assert f"{name} objects" in viewer.layers
    assert w.status.text() == "Prediction done: 2 images."
    assert w.predict_btn.isEnabled() and w.predict_all_btn.isEnabled()
    np.testing.assert_array_equal(lab_a.data, mask_a)  # the person's layers are never written


def test_same_shaped_images_pair_by_name_or_are_left_out(make_napari_viewer, monkeypatch):
    from napari_labelfx.widgets import _multi

    got = _notifications(monkeypatch)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="img1")
    viewer.add_image(np.zeros((32, 32), np.float32), name="img10")
    viewer.add_image(np.zeros((16, 16), np.float32), name="small")
    meta = {"labelfx_kind": "strong"}
    mask = np.zeros((32, 32), np.uint8)
    mask[4:8, 4:8] = 1
    viewer.add_labels(mask, name="img10 labels", metadata=dict(meta))
    viewer.add_labels(mask, name="mystery", metadata=dict(meta))  # two 32x32 images: whose?
    small = np.zeros((16, 16), np.uint8)
    small[2:5, 2:5] = 1
    viewer.add_labels(small, name="anything", metadata=dict(meta))  # one 16x16 image: its own
    pairs, unpaired = _multi.annotated_pairs(viewer)
    assert {im.name: [ly.name for ly in lys] for im, lys in pairs} == {"img10": ["img10 labels"],
                                                                        "small": ["anything"]}
    assert unpaired == ["mystery"]
    from napari_labelfx.widgets.train import TrainWidget

    w = TrainWidget(viewer, runner_mode="thread")
    w.train_on_combo.setCurrentText("all annotated images")
    run = _multi.collect_run(w)
    assert len(run.items) == 2 and run.description == "2 images"
    assert any("mystery" in m for m in got["warning"])
    # different class tables: refused in one line, never trained with values meaning other classes
    from napari_labelfx.annotations.class_table import default_class_table
    from napari_labelfx.widgets import _layers

    _layers.set_class_table(viewer.layers["img10"], default_class_table(["nucleus"]))
    _layers.set_class_table(viewer.layers["small"], default_class_table(["cell", "membrane"]))
    with pytest.raises(ValueError, match="same classes"):
        _multi.collect_run(w)


def _tiny_model(path):
    import torch

    from napari_labelfx.models import ModelConfig, build_model
    from napari_labelfx.models.checkpoint import save_model

    torch.manual_seed(0)
    save_model(path, build_model(ModelConfig(spatial_dims=2, depth=2, width=4, num_classes=2, in_channels=1)))
    return path


def test_predict_folder_writes_one_output_per_image(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    got = _notifications(monkeypatch)
    src = tmp_path / "in"
    src.mkdir()
    for i in (1, 2):
        tifffile.imwrite(src / f"cell{i}.tif", _discs(i)[0])
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    viewer = make_napari_viewer()
    _, w = _panels(viewer)
    w.load_model(str(_tiny_model(tmp_path / "model")))
    out = tmp_path / "out"
    worker = w.predict_folder(str(src), str(out))
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert not got["error"], got["error"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cell1_labels.tif", "cell1_objects.tif", "cell2_labels.tif", "cell2_objects.tif"]
    from napari_labelfx.io.reader import read_image

    assert np.asarray(read_image(out / "cell2_labels.tif").data).shape == (64, 64)
    assert w.status.text().startswith("Folder prediction done: 2 images")
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # inputs untouched
    # the input folder as output, or a foreign file in the way: refused before any prediction
    assert w.predict_folder(str(src), str(src)) is None
    assert "other than the input folder" in got["error"][-1]
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "cell1_labels.tif").write_bytes(b"someone's file")
    assert w.predict_folder(str(src), str(tmp_path / "out2")) is None
    assert "not written by labelfx" in got["error"][-1]
    assert (tmp_path / "out2" / "cell1_labels.tif").read_bytes() == b"someone's file"


def test_plan_folder_prediction_names_and_refusals(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        plan_folder_prediction(src, tmp_path / "out")
    tifffile.imwrite(src / "a.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(src / "a.ome.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="same output"):
        plan_folder_prediction(src, tmp_path / "out")
    (src / "a.ome.tif").unlink()
    jobs = plan_folder_prediction(src, tmp_path / "out", objects=True)
    assert [sorted(p.name for p in j.outputs.values()) for j in jobs] == [["a_labels.tif", "a_objects.tif"]]
    with pytest.raises(ValueError, match="other than the input folder"):
        plan_folder_prediction(src, src)


def test_train_on_an_annotation_project_of_two_images(make_napari_viewer, monkeypatch, tmp_path):
    from napari_labelfx.annotations.class_table import default_class_table
    from napari_labelfx.annotations.model import AnnotatedImage, AnnotationLayer, AnnotationSet
    from napari_labelfx.annotations.project import save_project
    from napari_labelfx.widgets import _multi
    from napari_labelfx.widgets.train import TrainWidget

    imgs = [_discs(i) for i in (3, 4)]
    aset = AnnotationSet(default_class_table(["foreground"]), [
        AnnotatedImage(name=f"p{i}", image=img, axes="YX", layers=[AnnotationLayer("m", "strong", mask)])
        for i, (img, mask) in enumerate(imgs)])
    save_project(aset, tmp_path / "proj")
    viewer = make_napari_viewer()
    viewer.add_image(imgs[1][0], name="p1")  # one of them is open: it shows the live preview
    w = TrainWidget(viewer, runner_mode="thread")
    w.train_on_combo.setCurrentText(_multi.PROJECT)
    with pytest.raises(ValueError, match="choose an annotation project"):
        _multi.collect_run(w)
    _multi.choose_project(w, str(tmp_path / "proj"))
    run = _multi.collect_run(w)
    assert [it.name for it in run.items] == ["p0", "p1"]
    assert run.images[0] is None and run.images[1] is viewer.layers["p1"]
    w._run = run
    assert _multi.preview_target(w) == (1, viewer.layers["p1"])
