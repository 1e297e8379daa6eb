"""The Train panel's Predict on a dask/Zarr-backed image: block-wise on a local cluster, into a chosen Zarr,
shown lazily."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

pytest.importorskip("napari")
pytest.importorskip("distributed")

from napari_labelfx.models import ModelConfig, build_model  # noqa: E402
from napari_labelfx.models.checkpoint import save_model  # noqa: E402


def test_predict_on_a_zarr_backed_layer_runs_blockwise_and_shows_the_result_lazily(
        make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import dask.array as da

    from napari_labelfx.inference import Predictor
    from napari_labelfx.widgets import _predict_distributed
    from napari_labelfx.widgets.train import TrainWidget

    torch.manual_seed(0)
    model = build_model(ModelConfig(spatial_dims=2, depth=2, width=4, num_classes=2))
    with torch.no_grad():  # large random weights: both classes appear, so there are objects to find
        for p in model.parameters():
            p.normal_(0, 0.5)
    save_model(tmp_path / "model", model, {"classes": ["bg", "cell"], "inference": {"roi_size": [32, 32]}})
    raw = (np.random.default_rng(0).normal(size=(96, 80)) * 300 + 1000).astype(np.uint16)
    store = zarr.create_array(store=str(tmp_path / "img.zarr"), shape=raw.shape, chunks=(32, 32), dtype=np.uint16)
    store[...] = raw
    viewer = make_napari_viewer()
    viewer.add_image(da.from_zarr(str(tmp_path / "img.zarr")), name="img")
    w = TrainWidget(viewer)
    w.device_combo.setCurrentText("cpu")
    w.load_model(str(tmp_path / "model"))
    out = tmp_path / "chosen.zarr"
    # the file dialog, answered; one in-process worker (a process cluster is covered by the library's tests)
    monkeypatch.setattr(_predict_distributed, "ask_output_path", lambda panel, image: str(out))
    real_source = _predict_distributed._source
    monkeypatch.setattr(_predict_distributed, "_source", lambda *a: (*real_source(*a)[:2], False))
    worker = w.predict()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: "img objects" in viewer.layers, timeout=10_000)
    assert "Prediction done" in w.status.text(), w.status.text()
    layer = viewer.layers["img prediction"]
    data = layer.data[0] if layer.multiscale else layer.data
    assert isinstance(data, da.Array)  # read from the Zarr chunk by chunk, never loaded whole
    written = zarr.open_group(str(out), mode="r")["0"][...]
    np.testing.assert_array_equal(np.asarray(data), written)
    expected = Predictor.from_folder(tmp_path / "model", device="cpu")(raw)
    top2 = np.sort(expected.probabilities, axis=0)[-2:]
    decided = top2[1] - top2[0] > 1e-5
    np.testing.assert_array_equal(written[decided], expected.labels[decided])
    objects = viewer.layers["img objects"].data
    assert isinstance(objects, da.Array) and int(objects.max()) >= 1
    assert w.predict_btn.isEnabled()
