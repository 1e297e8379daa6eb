"""Issue 14 at the GUI boundary (xvfb): panel actions that fail become notifications, never
exceptions, and never delete the person's files (items 2, 6, 10, 13)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_labelfx.models import ModelConfig, build_model  # noqa: E402
from napari_labelfx.models.checkpoint import save_model  # noqa: E402


@pytest.fixture
def errors(monkeypatch):
    import napari.utils.notifications as notes

    shown: list[str] = []
    monkeypatch.setattr(notes, "show_error", lambda msg: shown.append(str(msg)))
    monkeypatch.setattr(notes, "show_info", lambda msg: None)
    return shown


@pytest.fixture
def train_widget(make_napari_viewer):
    from napari_labelfx.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    return TrainWidget(viewer)


def test_save_model_keeps_foreign_files_and_reports(train_widget, errors, tmp_path):
    w = train_widget
    w.loaded_model_dir = save_model(tmp_path / "run" / "best", build_model(ModelConfig(width=4, depth=1)))
    thesis = tmp_path / "thesis"
    (thesis / "best").mkdir(parents=True)
    (thesis / "best" / "my_thesis.docx").write_text("keep")
    assert w.save_model(str(thesis)) is None
    assert errors and "not a labelfx model folder" in errors[-1]
    assert (thesis / "best" / "my_thesis.docx").read_text() == "keep"
    shutil.rmtree(tmp_path / "run")  # the temporary run folder is gone
    assert w.save_model(str(tmp_path / "elsewhere")) is None
    assert "no longer exists" in errors[-1]


def test_load_model_errors_are_notifications(train_widget, errors, tmp_path, monkeypatch):
    w = train_widget
    folder = save_model(tmp_path / "m", build_model(ModelConfig(width=4, depth=1)))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"].update(width=4096, depth=6)
    (folder / "config.json").write_text(json.dumps(cfg))
    w.load_model(str(folder))
    assert "width 4096" in errors[-1] and w.loaded_model_dir is None

    import napari_labelfx.models.checkpoint as ckpt

    def boom(*_a, **_k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(ckpt, "load_model", boom)
    w.load_model(str(folder))  # any error, not just ValueError/OSError
    assert "out of memory" in errors[-1]


def test_annotate_open_tampered_project_is_a_notification(make_napari_viewer, errors, tmp_path):
    from napari_labelfx.annotations import AnnotatedImage, AnnotationLayer, AnnotationSet, ClassTable, save_project
    from napari_labelfx.widgets.annotate import AnnotateWidget

    aset = AnnotationSet(ClassTable([("cell", 1)]), [AnnotatedImage(
        "img", np.zeros((8, 8), np.float32), "YX", [AnnotationLayer("s", "strong", np.ones((8, 8), np.uint8))])])
    folder = save_project(aset, tmp_path / "p")
    doc = json.loads((folder / "project.json").read_text())
    doc["images"][0]["layers"] = ["a string"]
    (folder / "project.json").write_text(json.dumps(doc))
    viewer = make_napari_viewer()
    w = AnnotateWidget(viewer)
    w.open_project(str(folder))
    assert errors and "layers[0]" in errors[-1]
    assert len(viewer.layers) == 0


def test_start_errors_are_notifications(train_widget, errors, monkeypatch):
    w = train_widget

    def boom() -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(w, "_start", boom)
    w.start()
    assert "No space left" in errors[-1] and w.runner is None
