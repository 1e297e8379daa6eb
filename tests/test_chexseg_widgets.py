"""Saliency panel and CheXseg/MLDS through the Train panel (run under xvfb-run -a)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.engine import TrainConfig, Trainer, UpdateKind
from napari_labelfx.tools.gradcam import GradCamError, saliency_from_model

from .test_chexseg import _items

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def chexseg_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("chexseg")
    cfg = TrainConfig(method="chexseg", iterations=4, batch_size=2, patch_size=(32, 32), device="cpu",
                      val_fraction=0.0, preview_every_s=0, log_every=2, output_dir=str(out),
                      method_params={"classifier_fraction": 0.5})
    Trainer(cfg, _items(), ["background", "lesion"]).run()
    return out / "last"


def test_saliency_from_model_folder(chexseg_model, tmp_path):
    raw = (np.random.default_rng(0).random((1, 40, 36)) * 200).astype(np.uint8)
    res = saliency_from_model(str(chexseg_model), raw, threshold=0.5)
    assert res["class_names"] == ["lesion"] and res["maps"].shape == (1, 40, 36)
    assert res["mask"].shape == (40, 36) and res["mask"].dtype == np.int64
    assert 0 <= res["maps"].min() and res["maps"].max() <= 1 and res["thresholds"] == [0.5]
    with pytest.raises(GradCamError, match="2D image"):
        saliency_from_model(str(chexseg_model), raw[0])


def test_saliency_widget_shows_maps_and_pseudo_mask(make_napari_viewer, chexseg_model):
    from napari_labelfx.widgets.saliency import SaliencyWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).random((40, 36)).astype(np.float32), name="img")
    w = SaliencyWidget(viewer)
    assert w.compute() == [] and "model folder" in w.status.text()
    w.model_edit.setText(str(chexseg_model))
    layers = w.compute()
    assert {ly.name for ly in layers} == {"img saliency lesion", "img pseudo-mask"}
    assert viewer.layers["img pseudo-mask"].data.shape == (40, 36)
    assert viewer.layers["img pseudo-mask"].metadata.get("labelfx_result") == "pseudo-mask"
    w.model_edit.setText(str(chexseg_model.parent / "missing"))
    assert w.compute() == [] and "failed" in w.status.text()


@pytest.mark.parametrize("method", ["mlds-mt", "chexseg"])
def test_methods_train_through_train_panel(make_napari_viewer, qtbot, method):
    from napari_labelfx.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    img = np.random.default_rng(0).random((48, 48)).astype(np.float32)
    mask = np.zeros((48, 48), np.uint8)
    mask[10:30, 12:34] = 1
    img[mask == 1] += 1.0
    viewer.add_image(img, name="img")
    viewer.add_labels(mask, name="strong", metadata={"labelfx_kind": "strong"})
    w = TrainWidget(viewer, runner_mode="thread")
    viewer.window.add_dock_widget(w)
    w.iters_spin.setValue(3)
    w.patch_spin.setValue(32)
    w.batch_spin.setValue(2)
    w.device_combo.setCurrentText("cpu")
    w.method_combo.setCurrentText(method)
    assert w.method_combo.currentText() == method  # listed automatically
    seen = []
    orig = w.apply_update
    w.apply_update = lambda u: (seen.append(u.kind), orig(u))[1]
    w.start()
    qtbot.waitUntil(lambda: w.runner is not None and not w.runner.running and UpdateKind.FINISHED in seen,
                    timeout=120_000)
    assert UpdateKind.FAILED not in seen, w.status.text()
