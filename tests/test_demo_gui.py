"""The demo window tells the whole story: a forest prediction at once, a network behind it, a finished model."""
import argparse

import numpy as np
import pytest

pytest.importorskip("napari")


def test_demo_window_trains_to_a_finished_model_within_its_time_limit(make_napari_viewer, qtbot):
    from napari_labelfx.demo import setup_demo

    viewer = make_napari_viewer()
    args = argparse.Namespace(iters=None, seconds=4.0, device="cpu", screenshots=None)
    train = setup_demo(viewer, args)
    assert train.method_combo.currentText() == "auto" and train.budget_spin.value() == 4
    assert train.training_config()["time_budget_s"] == 4.0
    train.start()
    qtbot.waitUntil(lambda: train.runner is not None and not train.runner.running, timeout=120_000)
    qtbot.waitUntil(lambda: "finished" in train.status.text(), timeout=10_000)
    assert "time-budget" in train.status.text() or "done" in train.status.text(), train.status.text()
    assert train.progress.value() == train.progress.maximum()  # the bar ends full, not at 5 %
    assert train.best_dir is not None and train.best_dir.exists()
    pred = viewer.layers["nuclei prediction"].data
    assert np.count_nonzero(pred) > 0  # a whole-image prediction is showing
    assert train.first_preview_s is not None
