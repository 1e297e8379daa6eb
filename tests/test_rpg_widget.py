"""``rpg`` trained from the Train panel: pseudo-label and weight layers appear and can be accepted."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
from napari_labelfx._sample_data import make_nuclei_2d  # noqa: E402
from napari_labelfx.engine.updates import UpdateKind  # noqa: E402


def test_rpg_from_train_panel(make_napari_viewer, qtbot):
    from napari_labelfx.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    d = make_nuclei_2d(seed=0, size=64)
    viewer.add_image(d["image"], name="img")
    scrib = viewer.add_labels(d["scribbles"].copy(), name="scribbles", metadata={"labelfx_kind": "scribble"})
    before = scrib.data.copy()
    w = TrainWidget(viewer, runner_mode="thread")
    viewer.window.add_dock_widget(w)
    w.iters_spin.setValue(4)
    w.patch_spin.setValue(32)
    w.batch_spin.setValue(2)
    w.device_combo.setCurrentText("cpu")
    w.method_combo.setCurrentText("rpg")
    assert w.method_combo.currentText() == "rpg"
    seen = []
    orig = w.apply_update
    w.apply_update = lambda u: (seen.append(u.kind), orig(u))[1]
    w.start()
    qtbot.waitUntil(lambda: w.runner is not None and not w.runner.running and UpdateKind.FINISHED in seen,
                    timeout=120_000)
    assert UpdateKind.FAILED not in seen, w.status.text()
    assert UpdateKind.RESULT in seen
    assert "img pseudo-label" in viewer.layers and "img pseudo-label weight" in viewer.layers
    pl = viewer.layers["img pseudo-label"]
    assert pl.data.shape == (64, 64) and pl.data.any()
    weight = np.asarray(viewer.layers["img pseudo-label weight"].data)
    assert weight.shape == (64, 64) and 0 <= weight.min() and weight.max() <= 1
    np.testing.assert_array_equal(scrib.data, before)  # the person's painting is untouched
    viewer.layers.selection.active = pl
    accepted = w.accept_result(pl)
    assert accepted is not None and accepted.name in viewer.layers
    np.testing.assert_array_equal(np.asarray(accepted.data), np.asarray(pl.data))
    w.undo_accept()
    assert accepted.name not in viewer.layers
