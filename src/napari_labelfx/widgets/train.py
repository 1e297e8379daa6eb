"""The Train panel: pick data and method, start/pause/stop, watch losses and live predictions.

The panel is thin: training runs in a :class:`~napari_labelfx.engine.runner.TrainingRunner` (a thread by
default, a separate process as an advanced setting; see docs/benchmarks.md for the measurements behind
that choice); a QTimer on the main thread drains its updates and writes them to the plugin's
own result layers. Annotations painted while training are sent to the trainer every refresh interval.

This module builds the panel and keeps its state; the work is in modules named for it: ``_train_form``
(the settings and buttons), ``_train_inputs`` (image and annotation lists), ``_train_run`` (the engine
configuration, starting a run, clean-up), ``_train_live`` (strokes and the view to the trainer, updates
back), ``_train_updates`` (one handler per update type), ``_train_models`` (save, load, accept results).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QListWidget, QProgressBar, QPushButton, QWidget
from superqt import QCollapsible

from . import _layers, _train_inputs, _train_live, _train_models, _train_run
from ._params import MethodParamsForm
from ._plot import LossPlot

PRESET_DEFAULTS = {
    "small": {"iterations": 400, "batch_size": 4, "patch": 128},
    "medium": {"iterations": 1500, "batch_size": 8, "patch": 192},
    "large": {"iterations": 4000, "batch_size": 8, "patch": 256},
}


class TrainWidget(QWidget):
    """Dock widget: train a model on the current image's annotations with live predictions."""

    def __init__(self, napari_viewer: Any, runner_mode: str = "thread") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._initial_runner_mode = runner_mode
        self.runner: Any = None
        self.best_dir: Path | None = None
        self.last_dir: Path | None = None
        self.loaded_model_dir: Path | None = None
        self._dirty = False
        self._connected_layers: set[int] = set()
        self._t_start = 0.0
        self.first_preview_s: float | None = None
        self.preview_count = 0
        self._unticked: set[str] = set()
        # training stops and unsaved run folders go when the panel is removed, the viewer closes
        # (the panel is then deleted) or the application quits
        self._guard = _train_run.RunGuard()
        self.destroyed.connect(self._guard.shutdown)
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._guard.shutdown)
        self._build_ui()
        from ..engine.forest_trainer import warm_up_imports

        warm_up_imports()  # the first live forest prediction should not wait for scikit-learn's import
        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(100)
        self._poll_timer.timeout.connect(self._drain_updates)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.timeout.connect(self._send_refresh)
        self.viewer.layers.events.inserted.connect(self._refresh_layer_lists)
        self.viewer.layers.events.removed.connect(self._refresh_layer_lists)
        self._dims_timer = QTimer(self)
        self._dims_timer.setSingleShot(True)
        self._dims_timer.timeout.connect(self._request_preview)
        self.viewer.dims.events.current_step.connect(self._on_dims_step)
        # features for a live forest are computed before Start (the person is choosing settings)
        self._prefetch_timer = QTimer(self)
        self._prefetch_timer.setSingleShot(True)
        self._prefetch_timer.timeout.connect(self._prefetch)
        camera = _layers.viewer_camera(self.viewer)
        for signal in (self.image_combo.currentIndexChanged, self.method_combo.currentTextChanged,
                       camera.events.center, camera.events.zoom):
            signal.connect(lambda *_: self._prefetch_timer.start(400))
        self._refresh_layer_lists()
        self._prefetch_timer.start(400)

    # -- UI ------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        from ..engine.factory import training_methods
        from ._layout import follow_content, scroll_body, wrapping_label
        from ._train_form import add_model_buttons, build_advanced_form

        lay = scroll_body(self, main=True)  # the content scrolls: the panel fits a laptop screen next to others
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self._refresh_annotation_list)
        form.addRow("Image", self.image_combo)
        from ._multi import TRAIN_ON, choose_project

        self.train_on_combo = QComboBox()
        self.train_on_combo.addItems(TRAIN_ON)
        self.train_on_combo.setToolTip("this image: its ticked annotation layers; all annotated images: every open "
                                       "image with annotation layers, one training; annotation project: every "
                                       "image of a project folder (Annotate panel > Save)")
        self.train_project: str | None = None
        self.project_label = wrapping_label("")
        self.project_label.setVisible(False)
        self.train_on_combo.textActivated.connect(
            lambda text: choose_project(self) if text == TRAIN_ON[-1] else None)
        form.addRow("Train on", self.train_on_combo)
        form.addRow("", self.project_label)
        self.annotation_list = QListWidget()
        self.annotation_list.setMaximumHeight(90)
        form.addRow("Annotations", self.annotation_list)
        self.method_combo = QComboBox()
        # "auto" (the default path: forest at once, network behind it) and "forest" come first
        self.method_combo.addItems(training_methods())
        self.method_combo.setCurrentText("auto")
        form.addRow("Method", self.method_combo)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESET_DEFAULTS))
        self.preset_combo.currentTextChanged.connect(self._apply_preset)
        form.addRow("Model size", self.preset_combo)
        lay.addLayout(form)
        # Start and the run's status come before the (folded) settings: on a laptop screen they are
        # in view without scrolling
        row = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.pause_btn = QPushButton("Pause")
        self.stop_btn = QPushButton("Stop")
        self.start_btn.clicked.connect(self.start)
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.stop_btn.clicked.connect(self.stop)
        for b in (self.start_btn, self.pause_btn, self.stop_btn):
            row.addWidget(b)
        lay.addLayout(row)
        self.progress = QProgressBar()
        lay.addWidget(self.progress)
        self.status = wrapping_label("Paint labels, then press Start.")
        lay.addWidget(self.status)
        self.showing = wrapping_label("")  # which learner's prediction the person is looking at
        lay.addWidget(self.showing)

        adv = build_advanced_form(self)
        self.advanced = follow_content(QCollapsible("Advanced settings"))
        self.advanced.addWidget(adv)
        lay.addWidget(self.advanced)
        self.method_params = MethodParamsForm()
        self.method_settings = follow_content(QCollapsible("Method settings"))
        self.method_settings.addWidget(self.method_params)
        self.method_settings.expand(animate=False)  # the few important settings show; the rest fold
        lay.addWidget(self.method_settings)
        self.method_combo.currentTextChanged.connect(self.method_params.set_method)
        self.method_params.set_method(self.method_combo.currentText())
        self._apply_preset(self.preset_combo.currentText())
        self.runner_combo.setCurrentText(self._initial_runner_mode)

        self.plot = LossPlot()
        lay.addWidget(self.plot)

        add_model_buttons(self, lay)
        self._accepted: list[str] = []
        lay.addStretch(1)
        self._set_running(False)

    def _apply_preset(self, name: str) -> None:
        d = PRESET_DEFAULTS.get(name, PRESET_DEFAULTS["small"])
        self.iters_spin.setValue(d["iterations"])
        self.batch_spin.setValue(d["batch_size"])
        self.patch_spin.setValue(d["patch"])

    def _refresh_layer_lists(self, *_: Any) -> None:
        _train_inputs.refresh_layer_lists(self)

    def _refresh_annotation_list(self, *_: Any) -> None:
        _train_inputs.refresh_annotation_list(self)

    @property
    def runner_mode(self) -> str:
        """Where training runs: "thread" or "process" (the advanced setting)."""
        return self.runner_combo.currentText()

    @property
    def image_layer(self) -> Any:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def selected_annotation_layers(self) -> list[Any]:
        """The ticked annotation layers of the chosen image."""
        return _train_inputs.selected_annotation_layers(self)

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.pause_btn.setEnabled(running)
        self.stop_btn.setEnabled(running)
        self.predict_btn.setEnabled(not running)
        self.predict_all_btn.setEnabled(not running)
        self.predict_folder_btn.setEnabled(not running)
        self.load_btn.setEnabled(not running)
        self.export_btn.setEnabled(not running)

    # -- training ------------------------------------------------------------------------------------
    def training_config(self) -> dict:
        """The engine configuration the panel's settings describe."""
        return _train_run.training_config(self)

    def start(self) -> None:
        """Collect annotations and start training in the background (errors become notifications)."""
        from napari.utils.notifications import show_error

        try:
            self._start()
        except Exception as exc:  # GUI boundary: e.g. an unwritable temp folder, a bad setting
            show_error(f"LabelFX: training not started: {exc}")
            self._set_running(False)

    def _start(self) -> None:
        _train_run.start_run(self)

    def toggle_pause(self) -> None:
        if self.runner is None:
            return
        if self.pause_btn.text() == "Pause":
            self.runner.pause()
            self.pause_btn.setText("Resume")
        else:
            self.runner.resume()
            self.pause_btn.setText("Pause")

    def stop(self) -> None:
        """Stop training; the trainer keeps and reports the best model."""
        if self.runner is not None:
            self.runner.stop()
            self.status.setText("Stopping: saving the best model ...")

    def _watch_layers(self, layers: list[Any]) -> None:
        _train_live.watch_layers(self, layers)

    def _mark_dirty(self, *_: Any) -> None:
        self._dirty = True

    def _request_preview(self) -> None:
        _train_live.request_preview(self)

    def _prefetch(self) -> None:
        from ._prefetch import prefetch_for_panel

        self._prefetch_thread = prefetch_for_panel(self)

    def _on_dims_step(self, *_: Any) -> None:
        """The person moved to another slice: the live preview follows it (a short delay groups the
        events of one scroll)."""
        if self.runner is not None and self.runner.running:
            self._dims_timer.start(150)

    def _send_refresh(self) -> None:
        _train_live.send_refresh(self)

    def _drain_updates(self) -> None:
        _train_live.drain_updates(self)

    def _set_progress_share(self, share: float) -> None:
        _train_live.set_progress_share(self, share)

    def apply_update(self, upd: Any) -> None:
        """Apply one trainer update to the panel and the result layers (main thread)."""
        from ._train_updates import apply_update

        apply_update(self, upd)

    def _finish(self, message: str) -> None:
        _train_run.finish_run(self, message)

    # -- models --------------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path | None:
        return self.best_dir or self.last_dir or self.loaded_model_dir

    def save_model(self, folder: str | None = None) -> Path | None:
        """Copy the best model folder to ``folder`` (asks with a dialog when not given)."""
        return _train_models.save_model(self, folder)

    def load_model(self, folder: str | None = None) -> None:
        """Use a saved model folder for Predict."""
        _train_models.load_model(self, folder)

    def export_model(self, out: str | None = None, fmt: str | None = None) -> Any:
        """Export the current model (bioimage.io / ONNX / TorchScript) in a worker; see ``_export``."""
        from ._export import export_model_from_panel

        return export_model_from_panel(self, out, fmt)

    def predict(self) -> Any:
        """Predict the whole image, or a volume slice by slice (the slice in view first), in a worker
        thread; results fill the result layers as they come, then the "objects" layer (see ``_predict``)."""
        from ._predict import predict_in_panel

        return predict_in_panel(self)

    def predict_all(self, images: list[Any] | None = None) -> Any:
        """Predict several image layers (the selected ones, else all) in one worker; see ``_multi``."""
        from ._multi import predict_layers

        return predict_layers(self, images)

    def predict_folder(self, in_dir: str | None = None, out_dir: str | None = None) -> Any:
        """Predict every image file of a folder into an output folder (never replacing inputs)."""
        from ._multi import predict_folder

        return predict_folder(self, in_dir, out_dir)

    def accept_result(self, layer: Any = None, kind: str = "strong") -> Any:
        """Copy a plugin result Labels layer into a new annotation layer the person can edit."""
        return _train_models.accept_result(self, layer, kind)

    def undo_accept(self) -> None:
        """Remove the most recently accepted layer (the person's own layers are never touched)."""
        _train_models.undo_accept(self)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self._guard.shutdown()
        super().closeEvent(event)

    def event(self, ev: Any) -> bool:
        # napari removes a dock widget by taking its parent away (no close event): stop training
        from qtpy.QtCore import QEvent

        if ev.type() == QEvent.Type.ParentChange and self.parent() is None and self._guard.runner is not None:
            self._guard.shutdown()
        return super().event(ev)
