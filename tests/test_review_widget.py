"""The review panel and the "Generate initial labels" panel in a real napari viewer."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_labelfx.annotations.layers import KIND_KEY  # noqa: E402
from napari_labelfx.annotations.review import REVIEW_KEY, protected_mask  # noqa: E402
from napari_labelfx.widgets.generate_labels import GenerateLabelsWidget  # noqa: E402
from napari_labelfx.widgets.review import ReviewWidget  # noqa: E402


def _pair():
    initial = np.zeros((30, 40), np.int32)
    initial[2:8, 2:8] = 1
    initial[2:8, 20:26] = 2  # removed by the correction
    corrected = np.zeros((30, 40), np.int32)
    corrected[2:8, 2:8] = 1
    corrected[20:26, 30:36] = 1  # added
    return initial, corrected


def test_review_panel_accepts_and_rejects_exactly_the_right_pixels(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    initial, corrected = _pair()
    viewer.add_image(np.zeros((30, 40), np.float32), name="img")
    noisy = viewer.add_labels(initial.copy(), name="img noisy", metadata={KIND_KEY: "noisy"})
    viewer.add_labels(corrected, name="img corrected labels", metadata={"labelfx_result": "corrected labels"})
    w = ReviewWidget(viewer)
    qtbot.addWidget(w)
    w.corrected_combo.setCurrentText("img corrected labels")
    w.noisy_combo.setCurrentText("img noisy")
    assert w.compare() == 2
    training = w.training_layer
    assert training.name == "img noisy training labels" and training.metadata[KIND_KEY] == "noisy"
    kinds = [c.kind for c in w.session.changes]
    w.list.setCurrentRow(kinds.index("added"))
    assert np.allclose(viewer.camera.center[-2:], (22.5, 32.5))
    w.accept_current()
    diff = np.asarray(training.data) != initial
    assert diff.sum() == 36 and diff[20:26, 30:36].all()
    w.list.setCurrentRow(kinds.index("removed"))
    w.reject_current()
    assert (np.asarray(training.data)[2:8, 20:26] == 2).all()
    assert np.array_equal(np.asarray(noisy.data), initial)  # the person's layer is untouched
    mask = protected_mask(training.metadata, training.data.shape)
    assert mask.sum() == 36 and mask[2:8, 20:26].all()
    w.undo()
    w.undo()
    assert np.array_equal(np.asarray(training.data), initial)
    assert protected_mask(training.metadata, training.data.shape) is None
    w.accept_all()
    assert (np.asarray(training.data)[2:8, 20:26] == 0).all() and (np.asarray(training.data)[20:26, 30:36] > 0).all()
    shapes = w.show_boxes()
    assert len(shapes.data) == 2
    # a second round reuses the training layer and keeps earlier rejections
    training.metadata[REVIEW_KEY] = {"rejected": [{"pixels": [0, 1]}]}
    w.compare()
    assert w.training_layer is training
    w.reject_current() if w.session.changes else None
    assert protected_mask(training.metadata, training.data.shape)[0, :2].all()


def test_generate_panel_writes_a_noisy_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    yy, xx = np.mgrid[:96, :96]
    img = np.zeros((96, 96), np.float32)
    for cy, cx in [(20, 20), (20, 70), (70, 30), (70, 75)]:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] = 1.0
    img += np.random.default_rng(0).normal(0, 0.02, img.shape).astype(np.float32)
    viewer.add_image(img, name="cells")
    w = GenerateLabelsWidget(viewer)
    qtbot.addWidget(w)
    w.image_combo.setCurrentText("cells")
    w.diameter.setValue(20)
    layer = w.generate()
    assert layer.name == "cells noisy labels" and layer.metadata[KIND_KEY] == "noisy"
    assert int(np.asarray(layer.data).max()) == 4
    assert w.generate().name == "cells noisy labels 2"  # never overwrites
    viewer.add_labels(np.zeros((96, 96), np.int32), name="rough")
    viewer.layers.selection.active = viewer.layers["rough"]
    assert w.mark_selected_noisy().metadata[KIND_KEY] == "noisy"
