"""dii-dcr through the Train panel: weak instances painted as a Labels layer, weights shown as layers."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_labelfx._sample_data import make_nuclei_2d  # noqa: E402
from napari_labelfx.engine.updates import UpdateKind  # noqa: E402


def test_train_widget_trains_dii_dcr_and_shows_weak_weights(make_napari_viewer, qtbot):
    from napari_labelfx.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    d = make_nuclei_2d(seed=0, size=96)
    viewer.add_image(d["image"], name="img")
    weak = d["instances"].astype(np.int32)  # each nucleus is one weak instance
    viewer.add_labels(weak.copy(), name="weak", metadata={"labelfx_kind": "weak"})
    w = TrainWidget(viewer, runner_mode="thread")
    viewer.window.add_dock_widget(w)
    w.iters_spin.setValue(2)
    w.patch_spin.setValue(64)
    w.batch_spin.setValue(2)
    w.device_combo.setCurrentText("cpu")
    w.refresh_spin.setValue(0.5)
    w.method_combo.setCurrentText("dii-dcr")
    assert w.method_combo.currentText() == "dii-dcr"
    seen = []
    orig = w.apply_update
    w.apply_update = lambda u: (seen.append(u.kind), orig(u))[1]
    w.start()
    try:
        qtbot.waitUntil(lambda: w.runner is not None and not w.runner.running and UpdateKind.FINISHED in seen,
                        timeout=180_000)
    except Exception as exc:
        raise AssertionError(f"status {w.status.text()!r}, updates {seen}") from exc
    assert UpdateKind.FAILED not in seen, w.status.text()
    assert UpdateKind.RESULT in seen
    weights = viewer.layers["img weak weights"]
    assert weights.data.shape == (96, 96)
    inside = weak > 0
    assert np.all(np.isnan(np.asarray(weights.data)[~inside]))
    values = np.asarray(weights.data)[inside]
    shown = values[~np.isnan(values)]  # pixels held out for validation carry no instance id
    assert shown.size > 0.5 * values.size and np.all((shown >= 0) & (shown <= 1))
    trust = viewer.layers["img weak trust"]
    assert "gamma" in trust.features.columns
    # background row + one per instance with training pixels (validation may hold one out entirely)
    assert 3 <= len(trust.features) <= len(np.unique(weak))
    assert np.all((trust.features["gamma"][1:] >= 0) & (trust.features["gamma"][1:] <= 1))
