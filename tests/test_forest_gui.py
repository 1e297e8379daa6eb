"""The Train panel's live forest: a prediction right after Start, and again after each stroke."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
from napari_labelfx._sample_data import make_nuclei_2d  # noqa: E402
from napari_labelfx.engine.updates import UpdateKind  # noqa: E402


def _panel(viewer, method):
    from napari_labelfx.widgets.train import TrainWidget

    w = TrainWidget(viewer, runner_mode="thread")
    viewer.window.add_dock_widget(w)
    w.device_combo.setCurrentText("cpu")
    w.method_combo.setCurrentText(method)
    return w


def test_live_forest_updates_after_each_stroke(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    d = make_nuclei_2d(seed=0, size=96)
    viewer.add_image(d["image"], name="img")
    first = np.zeros_like(d["scribbles"])
    first[:, :48] = d["scribbles"][:, :48]  # strokes on the left half only
    scrib = viewer.add_labels(first.copy(), name="scribbles", metadata={"labelfx_kind": "scribble"})
    w = _panel(viewer, "forest")
    assert w.method_params.values() == {}  # live is on by default in the panel
    w.method_params._editors["n_trees"][0].setValue(8)
    seen = []
    orig = w.apply_update
    w.apply_update = lambda u: (seen.append(u), orig(u))[1]
    w.start()
    qtbot.waitUntil(lambda: "img prediction" in viewer.layers and w.preview_count >= 1, timeout=60_000)
    assert "forest" in w.showing.text()
    # a quick forest may answer first and be refined at once; wait for the full one and its preview
    fits = lambda: sum(u.kind == UpdateKind.PROGRESS and not u.quick for u in seen)  # noqa: E731

    def refined_and_shown() -> bool:
        idx = [i for i, u in enumerate(seen) if u.kind == UpdateKind.PROGRESS and not u.quick]
        return bool(idx) and any(u.kind == UpdateKind.PREVIEW for u in seen[idx[0] + 1:])

    qtbot.waitUntil(refined_and_shown, timeout=60_000)
    assert fits() == 1
    before = viewer.layers["img prediction"].data.copy()
    previews = w.preview_count
    scrib.data = d["scribbles"].copy()  # the person paints the rest of the strokes
    qtbot.waitUntil(lambda: fits() >= 2 and w.preview_count > previews, timeout=60_000)
    after = viewer.layers["img prediction"].data
    assert not np.array_equal(before, after)  # the new strokes changed the prediction
    np.testing.assert_array_equal(scrib.data, d["scribbles"])  # painting is never overwritten
    assert w.runner.running  # live: it waits for more strokes until Stop
    w.stop()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=30_000)
    assert seen[-1].kind == UpdateKind.FINISHED
    assert w.model_dir is not None and (w.model_dir / "forest.npz").is_file()
    truth = d["strong"] > 0
    pred = after.astype(bool)
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.7


def test_default_path_in_the_panel_names_the_shown_learner(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    d = make_nuclei_2d(seed=1, size=160)
    viewer.add_image(d["image"], name="img")
    viewer.add_labels(d["scribbles"].copy(), name="scribbles", metadata={"labelfx_kind": "scribble"})
    w = _panel(viewer, "auto")
    assert w.method_combo.itemText(0) == "auto"
    w.iters_spin.setValue(6)
    w.patch_spin.setValue(64)
    w.batch_spin.setValue(2)
    w.method_params._editors["n_trees"][0].setValue(8)
    seen = []
    orig = w.apply_update
    w.apply_update = lambda u: (seen.append(u), orig(u))[1]
    w.start()
    qtbot.waitUntil(lambda: any(u.kind == UpdateKind.FINISHED for u in seen) and not w.runner.running,
                    timeout=120_000)
    assert not any(u.kind == UpdateKind.FAILED for u in seen), [u for u in seen if u.kind == UpdateKind.FAILED]
    first_preview = next(u for u in seen if u.kind == UpdateKind.PREVIEW)
    assert first_preview.source == "forest"
    assert "Showing:" in w.showing.text()
    if any(u.kind == UpdateKind.VALIDATION for u in seen):  # held-out pixels to compare on
        assert "Dice" in w.showing.text()
    winner = seen[-1].winner
    assert w.model_dir is not None and w.model_dir.name == ("forest" if winner == "forest" else "best")
