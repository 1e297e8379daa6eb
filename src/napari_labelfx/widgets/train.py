"""The Train panel: pick data and method, start/pause/stop, watch losses and live predictions.

The panel is thin: training runs in a :class:`~napari_labelfx.engine.runner.TrainingRunner` (a thread by
default, a separate process as an advanced setting; see docs/benchmarks.md for the measurements behind
that choice); a QTimer on the main thread drains its updates and writes them to the plugin's
own result layers. Annotations painted while training are sent to the trainer every refresh interval.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QWidget,
)
from superqt import QCollapsible

from . import _layers
from ._params import MethodParamsForm
from ._plot import LossPlot

PRESET_DEFAULTS = {
    "small": {"iterations": 400, "batch_size": 4, "patch": 128},
    "medium": {"iterations": 1500, "batch_size": 8, "patch": 192},
    "large": {"iterations": 4000, "batch_size": 8, "patch": 256},
}


#: Interval at which new strokes reach a live forest (ms).
LIVE_REFRESH_MS = 400

class _RunGuard:
    """What must be cleaned up when the panel or the viewer goes away (holds no Qt object).

    napari does not call ``closeEvent`` of dock widgets when the viewer closes, and by the time
    the widget's ``destroyed`` signal fires, its Qt side is gone: so the runner and the temporary
    run folder are kept here, where a plain callback can reach them.
    """

    def __init__(self) -> None:
        self.runner: Any = None
        self.run_dir: Path | None = None
        self.saved = False

    def stop_runner(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.terminate(timeout=2.0)

    def drop_run_dir(self) -> None:
        """Remove the temporary run folder unless its model was saved elsewhere... or in place."""
        import shutil

        run_dir, self.run_dir = self.run_dir, None
        if run_dir is not None and not self.saved:
            shutil.rmtree(run_dir, ignore_errors=True)
        self.saved = False

    def shutdown(self, *_: Any) -> None:
        from ..forest.tiles import drop_shared_cache

        self.stop_runner()
        self.drop_run_dir()
        drop_shared_cache()  # the features kept for live refits (up to 1.5 GB) go with the panel


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
        self._guard = _RunGuard()
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
        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for layer in self.viewer.layers:
            if layer.__class__.__name__ == "Image" and not layer.metadata.get(_layers.RESULT_KEY):
                self.image_combo.addItem(layer.name)
        idx = self.image_combo.findText(current)
        if idx >= 0:
            self.image_combo.setCurrentIndex(idx)
        self.image_combo.blockSignals(False)
        self._refresh_annotation_list()

    def _refresh_annotation_list(self, *_: Any) -> None:
        # keep what the person unticked when layers come and go (e.g. result layers being added)
        for i in range(self.annotation_list.count()):
            it = self.annotation_list.item(i)
            name = it.data(Qt.ItemDataRole.UserRole)
            if it.checkState() == Qt.CheckState.Unchecked:
                self._unticked.add(name)
            else:
                self._unticked.discard(name)
        self.annotation_list.clear()
        image = self.image_layer
        if image is None:
            return
        for layer in _layers.annotation_layers_for(self.viewer, image):
            item = QListWidgetItem(f"{layer.name}  [{layer.metadata.get(_layers.KIND_KEY)}]")
            item.setData(Qt.ItemDataRole.UserRole, layer.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            unticked = layer.name in self._unticked
            item.setCheckState(Qt.CheckState.Unchecked if unticked else Qt.CheckState.Checked)
            self.annotation_list.addItem(item)

    @property
    def runner_mode(self) -> str:
        """Where training runs: "thread" or "process" (the advanced setting)."""
        return self.runner_combo.currentText()

    @property
    def image_layer(self) -> Any:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def selected_annotation_layers(self) -> list[Any]:
        out = []
        for i in range(self.annotation_list.count()):
            it = self.annotation_list.item(i)
            name = it.data(Qt.ItemDataRole.UserRole)
            if it.checkState() == Qt.CheckState.Checked and name in self.viewer.layers:
                out.append(self.viewer.layers[name])
        return out

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
        from ..engine import TrainConfig

        spatial = self.spatial_combo.currentText()
        sizes: dict[str, Any] = {"patch_size": (self.patch_spin.value(),) * 2, "batch_size": self.batch_spin.value(),
                                 "model": {}, "log_every": 10}
        if spatial == "3d":
            # a cube of the 2D patch edge takes minutes per step on a CPU: sizes for the machine, and a
            # progress report every (slow) step
            from ..engine.sizing import sized_3d

            shape = _layers.image_spatial_shape(self.image_layer) if self.image_layer is not None else None
            sizes = {**sized_3d(self.patch_spin.value(), self.batch_spin.value(), self.device_combo.currentText(),
                                shape, self.preset_combo.currentText()), "log_every": 1}
        cfg = TrainConfig(
            method=self.method_combo.currentText(),
            preset=self.preset_combo.currentText(),
            spatial=spatial,
            iterations=self.iters_spin.value(),
            lr=self.lr_spin.value(),
            device=self.device_combo.currentText(),
            preview_every_s=self.refresh_spin.value(),
            output_dir=str(self._output_dir()),
            method_params=self.method_params.values(),
            time_budget_s=float(self.budget_spin.value()) or None,
            **sizes,
        )
        if self.stain_aug_check.isChecked():
            cfg.augment = {**cfg.augment, "hed": True}
        return cfg.to_dict()

    def _output_dir(self) -> Path:
        import tempfile

        from ..engine.model_folder import clean_stale_runs, new_run_folder

        root = Path(tempfile.gettempdir()) / "labelfx-runs"
        # unsaved runs of sessions that ended (a crash, kill -9) over a day ago: say what went where
        removed = clean_stale_runs(root)
        if removed:
            from napari.utils.notifications import show_info

            show_info(f"LabelFX: removed {len(removed)} unsaved run folder(s) of ended sessions from {root}")
        return new_run_folder(root)

    def start(self) -> None:
        """Collect annotations and start training in the background (errors become notifications)."""
        from napari.utils.notifications import show_error

        try:
            self._start()
        except Exception as exc:  # GUI boundary: e.g. an unwritable temp folder, a bad setting
            show_error(f"LabelFX: training not started: {exc}")
            self._set_running(False)

    def _start(self) -> None:
        from napari.utils.notifications import show_error, show_info

        from ..engine.runner import TrainingJob, TrainingRunner, default_num_threads

        if self.runner is not None and self.runner.running:
            show_info("Training is already running.")
            return
        from ._multi import collect_run

        try:  # this image, every annotated image or a project (the "Train on" choice)
            run = collect_run(self)
        except ValueError as exc:
            show_error(f"LabelFX: {exc}")
            return
        items, class_names, multilabel, layers = run.items, run.class_names, run.multilabel, run.watched
        # the previous run's temporary folder can no longer be saved from this panel once a new run
        # replaces it: remove it now rather than let runs pile up under the temp folder
        self._guard.stop_runner()
        self._guard.drop_run_dir()
        self.best_dir = self.last_dir = None
        cfg = self.training_config()
        self._guard.run_dir = Path(cfg["output_dir"])
        from ..methods.suitability import item_kinds, kind_mismatch

        mismatch = kind_mismatch(cfg["method"], item_kinds(items))
        from napari.utils.notifications import show_warning

        if mismatch:  # trains anyway (the person may know better), but not silently
            show_warning(f"LabelFX: {mismatch}")
        from ..data.label_warnings import training_data_warnings

        for warning in training_data_warnings(items, class_names):  # trains anyway too, not silently
            show_warning(f"LabelFX: {warning}")
        job = TrainingJob(cfg, items, class_names, multilabel, num_threads=default_num_threads())
        self.runner = TrainingRunner(job, mode=self.runner_mode)
        self.plot.clear()
        self.progress.setMaximum(cfg["iterations"])
        self.progress.setValue(0)
        self.first_preview_s = None
        self.preview_count = 0
        self._t_start = time.monotonic()
        self._watch_layers(layers)
        self._dirty = False
        self.runner.start()
        self._guard.runner = self.runner
        self._run = run
        for shown in {id(im): im for im in run.images if im is not None}.values():
            _layers.ensure_result_layers(self.viewer, shown)
        self._last_region = self._last_target = None
        self._run_spatial = cfg["spatial"]
        self._request_preview()
        self._set_running(True)
        self.pause_btn.setText("Pause")
        self.status.setText(f"Starting {cfg['method']} training on {run.description} ...")
        self.showing.setText("")
        self._source = self._forest_dice = self._net_dice = None
        self._poll_timer.start()
        # the forest refits after each stroke (ilastik's live update): send new strokes at once
        live = cfg["method"] in ("forest", "auto")
        self._refresh_timer.start(LIVE_REFRESH_MS if live else int(self.refresh_spin.value() * 1000))

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
        for layer in layers:
            if id(layer) in self._connected_layers:
                continue
            self._connected_layers.add(id(layer))
            for ev in ("paint", "data", "set_data"):
                emitter = getattr(layer.events, ev, None)
                if emitter is not None:
                    emitter.connect(self._mark_dirty)

    def _mark_dirty(self, *_: Any) -> None:
        self._dirty = True

    def _request_preview(self) -> None:
        """Tell the trainer which region is in view, when it changed: the trainer previews it after
        the current step, then on its own schedule (within its preview time budget)."""
        from ._multi import preview_target

        target = preview_target(self) if self.runner is not None else None
        if target is None:
            return
        index, image = target  # with several images: the one chosen in the panel, when it is trained on
        region = _layers.visible_region(self.viewer, image)
        if (index, region) == getattr(self, "_last_target", None):
            return
        self._last_region, self._last_target = region, (index, region)
        self.runner.request_preview(index, tuple(slice(a, b) for a, b in region))

    def _prefetch(self) -> None:
        from ._prefetch import prefetch_for_panel

        self._prefetch_thread = prefetch_for_panel(self)

    def _on_dims_step(self, *_: Any) -> None:
        """The person moved to another slice: the live preview follows it (a short delay groups the
        events of one scroll)."""
        if self.runner is not None and self.runner.running:
            self._dims_timer.start(150)

    def _send_refresh(self) -> None:
        """Every refresh interval: send newer annotations and the region in view to the trainer."""
        if self.runner is None or not self.runner.running:
            return
        self._request_preview()
        if not self._dirty:
            return
        self._dirty = False
        from ._multi import refresh_items

        try:
            items = refresh_items(self)
        except ValueError as exc:
            from napari.utils.notifications import show_warning

            show_warning(f"LabelFX: new annotations not sent: {exc}")
            return
        if items is not None:
            self.runner.send_items(items)

    def _drain_updates(self) -> None:
        if self.runner is None:
            self._poll_timer.stop()
            return
        for upd in self.runner.poll(max_items=200):
            self.apply_update(upd)
        budget = self.budget_spin.value()
        if budget and self.runner is not None and self.runner.running:
            # a time limit: the bar moves with the clock too (a slow first step sends no progress)
            self._set_progress_share((time.monotonic() - self._t_start) / budget)

    def _set_progress_share(self, share: float) -> None:
        """Move the progress bar forward to ``share`` (0..1) of its range; it never goes back."""
        top = self.progress.maximum()
        self.progress.setValue(max(self.progress.value(), min(int(share * top), top)))

    def apply_update(self, upd: Any) -> None:
        """Apply one trainer update to the panel and the result layers (main thread)."""
        from ._train_updates import apply_update

        apply_update(self, upd)

    def _finish(self, message: str) -> None:
        self._poll_timer.stop()
        self._refresh_timer.stop()
        self._set_running(False)
        self.pause_btn.setText("Pause")
        self.status.setText(message)

    # -- models --------------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path | None:
        return self.best_dir or self.last_dir or self.loaded_model_dir

    def save_model(self, folder: str | None = None) -> Path | None:
        """Copy the best model folder to ``folder`` (asks with a dialog when not given)."""
        from napari.utils.notifications import show_error, show_info

        if self.model_dir is None:
            show_error("LabelFX: no model yet: train or load one first.")
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save model to folder")
            if not folder:
                return None
        from ..engine.model_folder import copy_model_folder

        # never deletes the person's files: a non-empty folder that is not a model gets a subfolder
        try:
            dest = copy_model_folder(self.model_dir, folder)
        except Exception as exc:  # GUI boundary: a notification, never an escaped exception
            show_error(f"LabelFX: model not saved: {exc}")
            return None
        run_dir = self._guard.run_dir
        if run_dir is not None and (dest == run_dir or run_dir in dest.parents):
            self._guard.saved = True  # saved inside the run folder: it is the person's now
        show_info(f"LabelFX: model saved to {dest}")
        return dest

    def load_model(self, folder: str | None = None) -> None:
        """Use a saved model folder for Predict."""
        from napari.utils.notifications import show_error, show_info

        from ..models.checkpoint import load_model

        if folder is None:
            from ._export import model_source_dialog

            folder = model_source_dialog(self)  # a model folder or a bioimage.io package
            if not folder:
                return
        try:
            from ._export import panel_model_source

            folder, foreign = panel_model_source(folder)
            if not foreign:
                load_model(folder)
        except Exception as exc:  # GUI boundary: any failure (even out of memory) is a notification
            show_error(f"LabelFX: cannot load model from {folder}: {exc}")
            return
        self.loaded_model_dir = Path(folder)
        self.best_dir = self.last_dir = None
        show_info(f"LabelFX: model loaded from {folder}")
        self.status.setText(f"Model: {folder}")

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
        from napari.utils.notifications import show_error

        layer = layer or self.viewer.layers.selection.active
        if layer is None or layer.__class__.__name__ != "Labels" or not layer.metadata.get(_layers.RESULT_KEY):
            show_error("LabelFX: select a prediction or pseudo-label layer (a Labels layer made by LabelFX).")
            return None
        new = _layers.accept_result_layer(self.viewer, layer, kind)
        self._accepted.append(new.name)
        self._refresh_annotation_list()
        return new

    def undo_accept(self) -> None:
        """Remove the most recently accepted layer (the person's own layers are never touched)."""
        while self._accepted:
            name = self._accepted.pop()
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
                break

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self._guard.shutdown()
        super().closeEvent(event)

    def event(self, ev: Any) -> bool:
        # napari removes a dock widget by taking its parent away (no close event): stop training
        from qtpy.QtCore import QEvent

        if ev.type() == QEvent.Type.ParentChange and self.parent() is None and self._guard.runner is not None:
            self._guard.shutdown()
        return super().event(ev)
