"""The Train panel's run control: the engine configuration its settings describe, starting a run, and
what must be cleaned up when the panel goes away.

Functions take the panel (its attributes keep their names: ``panel.runner``, ``panel.progress``, ...).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import _layers

#: Interval at which new strokes reach a live forest (ms).
LIVE_REFRESH_MS = 400


class RunGuard:
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


def training_config(panel: Any) -> dict:
    """The engine configuration the panel's settings describe (a new temporary run folder included)."""
    from ..engine import TrainConfig

    spatial = panel.spatial_combo.currentText()
    sizes: dict[str, Any] = {"patch_size": (panel.patch_spin.value(),) * 2, "batch_size": panel.batch_spin.value(),
                             "model": {}, "log_every": 10}
    if spatial == "3d":
        # a cube of the 2D patch edge takes minutes per step on a CPU: sizes for the machine, and a
        # progress report every (slow) step
        from ..engine.sizing import sized_3d

        shape = _layers.image_spatial_shape(panel.image_layer) if panel.image_layer is not None else None
        sizes = {**sized_3d(panel.patch_spin.value(), panel.batch_spin.value(), panel.device_combo.currentText(),
                            shape, panel.preset_combo.currentText()), "log_every": 1}
    cfg = TrainConfig(
        method=panel.method_combo.currentText(),
        preset=panel.preset_combo.currentText(),
        spatial=spatial,
        iterations=panel.iters_spin.value(),
        lr=panel.lr_spin.value(),
        device=panel.device_combo.currentText(),
        preview_every_s=panel.refresh_spin.value(),
        output_dir=str(new_output_dir()),
        method_params=panel.method_params.values(),
        time_budget_s=float(panel.budget_spin.value()) or None,
        **sizes,
    )
    if panel.stain_aug_check.isChecked():
        cfg.augment = {**cfg.augment, "hed": True}
    return cfg.to_dict()


def new_output_dir() -> Path:
    """A new temporary run folder (unsaved folders of sessions that ended are removed first)."""
    import tempfile

    from ..engine.model_folder import clean_stale_runs, new_run_folder

    root = Path(tempfile.gettempdir()) / "labelfx-runs"
    # unsaved runs of sessions that ended (a crash, kill -9) over a day ago: say what went where
    removed = clean_stale_runs(root)
    if removed:
        from napari.utils.notifications import show_info

        show_info(f"LabelFX: removed {len(removed)} unsaved run folder(s) of ended sessions from {root}")
    return new_run_folder(root)


def start_run(panel: Any) -> None:
    """Collect the annotations ("Train on"), warn about doubtful data, and start the runner."""
    from napari.utils.notifications import show_error, show_info

    from ..engine.runner import TrainingJob, TrainingRunner, default_num_threads

    if panel.runner is not None and panel.runner.running:
        show_info("Training is already running.")
        return
    from ._multi import collect_run

    try:  # this image, every annotated image or a project (the "Train on" choice)
        run = collect_run(panel)
    except ValueError as exc:
        show_error(f"LabelFX: {exc}")
        return
    items, class_names, multilabel, layers = run.items, run.class_names, run.multilabel, run.watched
    # the previous run's temporary folder can no longer be saved from this panel once a new run
    # replaces it: remove it now rather than let runs pile up under the temp folder
    panel._guard.stop_runner()
    panel._guard.drop_run_dir()
    panel.best_dir = panel.last_dir = None
    cfg = panel.training_config()
    panel._guard.run_dir = Path(cfg["output_dir"])
    _warn_about_data(cfg["method"], items, class_names)
    job = TrainingJob(cfg, items, class_names, multilabel, num_threads=default_num_threads())
    panel.runner = TrainingRunner(job, mode=panel.runner_mode)
    panel.plot.clear()
    panel.progress.setMaximum(cfg["iterations"])
    panel.progress.setValue(0)
    panel.first_preview_s = None
    panel.preview_count = 0
    panel._t_start = time.monotonic()
    panel._watch_layers(layers)
    panel._dirty = False
    panel.runner.start()
    panel._guard.runner = panel.runner
    panel._run = run
    for shown in {id(im): im for im in run.images if im is not None}.values():
        _layers.ensure_result_layers(panel.viewer, shown)
    panel._last_region = panel._last_target = None
    panel._run_spatial = cfg["spatial"]
    panel._request_preview()
    panel._set_running(True)
    panel.pause_btn.setText("Pause")
    panel.status.setText(f"Starting {cfg['method']} training on {run.description} ...")
    panel.showing.setText("")
    panel._source = panel._forest_dice = panel._net_dice = None
    panel._poll_timer.start()
    # the forest refits after each stroke (ilastik's live update): send new strokes at once
    live = cfg["method"] in ("forest", "auto")
    panel._refresh_timer.start(LIVE_REFRESH_MS if live else int(panel.refresh_spin.value() * 1000))


def _warn_about_data(method: str, items: list, class_names: list[str]) -> None:
    """A method that does not fit the label kinds, or doubtful labels: training goes on, but not silently."""
    from napari.utils.notifications import show_warning

    from ..data.label_warnings import training_data_warnings
    from ..methods.suitability import item_kinds, kind_mismatch

    mismatch = kind_mismatch(method, item_kinds(items))
    if mismatch:  # the person may know better
        show_warning(f"LabelFX: {mismatch}")
    for warning in training_data_warnings(items, class_names):
        show_warning(f"LabelFX: {warning}")


def finish_run(panel: Any, message: str) -> None:
    """The run ended (finished, stopped or failed): timers off, buttons back, ``message`` shown."""
    panel._poll_timer.stop()
    panel._refresh_timer.stop()
    panel._set_running(False)
    panel.pause_btn.setText("Pause")
    panel.status.setText(message)
