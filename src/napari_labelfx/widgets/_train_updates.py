"""How the Train panel shows each trainer update: one handler per update type, picked from a table.

The engine's updates are typed (``engine/updates.py``: ``Progress``, ``Preview``, ...); each handler here
reads the fields of its type and changes the panel (status line, progress bar, loss plot, "Showing:" line)
or the result layers (through ``_layers``). The panel's state they use (``best_dir``, ``preview_count``,
``_t_start``, ...) stays on the panel.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.updates import (
    Checkpoint,
    Failed,
    Finished,
    Log,
    Paused,
    Preview,
    Progress,
    Result,
    Started,
    Update,
    Validation,
)
from . import _layers


def _started(panel: Any, upd: Started) -> None:
    panel.status.setText(f"Training {upd.method} on {upd.device or '?'} ...")


def _progress(panel: Any, upd: Progress) -> None:
    if upd.source == "forest":
        show_forest_fit(panel, upd)
        return
    if panel.budget_spin.value():  # a time limit: the bar follows whichever ends first
        panel._set_progress_share(upd.iteration / max(upd.total, 1))
    else:
        panel.progress.setValue(min(upd.iteration, panel.progress.maximum()))
    panel.plot.add_train(upd.iteration, float(upd.loss))
    # the rate the person sees (previews and validation included), not the bare step rate
    its = upd.wall_its_per_s or upd.its_per_s
    panel.status.setText(
        f"iteration {upd.iteration}/{upd.total}  loss {upd.loss:.4f}"
        + (f"  {its:.2f} it/s" if its else "")
    )


def _validation(panel: Any, upd: Validation) -> None:
    if upd.source != "forest":
        panel.plot.add_val(upd.iteration, float(upd.val_loss if upd.val_loss is not None else np.nan))
    show_comparison(panel, upd)


def _preview(panel: Any, upd: Preview) -> None:
    from ..engine.sizing import MIN_PREVIEW_ITERATIONS_3D
    from ._multi import run_image

    image = run_image(panel, upd.image_index)
    if (getattr(panel, "_run_spatial", "2d") == "3d" and upd.source != "forest"
            and upd.iteration < MIN_PREVIEW_ITERATIONS_3D):
        return  # an untrained 3D network's prediction floods the slice: wait until it has learnt
    if image is None:
        return
    _layers.apply_preview(panel.viewer, image, upd.labels, upd.confidence, upd.region)
    show_source(panel, upd.source)
    panel.preview_count += 1
    if panel.first_preview_s is None:
        panel.first_preview_s = time.monotonic() - panel._t_start


def _checkpoint(panel: Any, upd: Checkpoint) -> None:
    if upd.which == "best":
        panel.best_dir = Path(upd.path)
    elif upd.which == "last":
        panel.last_dir = Path(upd.path)


def _paused(panel: Any, upd: Paused) -> None:
    panel.status.setText(f"Paused at iteration {upd.iteration}.")


def _log(panel: Any, upd: Log) -> None:
    panel.status.setText(upd.message)


def _result(panel: Any, upd: Result) -> None:
    from ._multi import run_image

    # each layer goes beside the training image it belongs to (image 0 unless the method says otherwise)
    for index in sorted({layer.image_index for layer in upd.layers}):
        image = run_image(panel, index)
        if image is not None:
            _layers.apply_result(panel.viewer, image, [ly for ly in upd.layers if ly.image_index == index])
    for it, label in upd.markers:
        panel.plot.add_marker(int(it), str(label))
    for name, curve in upd.curves.items():
        panel.plot.set_curve(name, curve.x, curve.y)
    if upd.message:
        panel.status.setText(upd.message)


def _finished(panel: Any, upd: Finished) -> None:
    from napari.utils.notifications import show_info

    if upd.best_path:
        panel.best_dir = Path(upd.best_path)
    if upd.last_path:
        panel.last_dir = Path(upd.last_path)
    if upd.reason in ("done", "time-budget"):  # finished as planned: a full bar
        panel.progress.setValue(panel.progress.maximum())
    panel._finish(f"Training finished ({upd.reason}). Best model: {panel.best_dir} "
                  "(temporary: use Save model to keep it)")
    show_info("LabelFX: training finished.")


def _failed(panel: Any, upd: Failed) -> None:
    from napari.utils.notifications import show_error

    panel._finish(f"Training failed: {upd.reason}")
    show_error(f"LabelFX training failed: {upd.reason}")


#: The handler of each update type (types not listed, such as ``Resumed``, change nothing in the panel).
HANDLERS: dict[type[Update], Callable[[Any, Any], None]] = {
    Started: _started,
    Progress: _progress,
    Validation: _validation,
    Preview: _preview,
    Checkpoint: _checkpoint,
    Paused: _paused,
    Log: _log,
    Result: _result,
    Finished: _finished,
    Failed: _failed,
}


def apply_update(panel: Any, upd: Update) -> None:
    """Show one trainer update in the Train panel (main thread)."""
    handler = HANDLERS.get(type(upd))
    if handler is not None:
        handler(panel, upd)


# -- the "Showing:" line ----------------------------------------------------------------------------
def show_forest_fit(panel: Any, upd: Progress) -> None:
    """A forest fit: say how long it took; the forest alone fills the progress bar."""
    live = panel.method_combo.currentText() == "forest"
    if live:
        panel.progress.setMaximum(1)
        panel.progress.setValue(1)
    panel.status.setText(f"forest fitted in {upd.fit_s or 0.0:.1f} s on {upd.n_samples or 0} labelled pixels"
                         + (" (live: paint more, it refits)" if live else ""))


def show_source(panel: Any, source: str | None) -> None:
    """Remember which learner the preview layers show, and say so."""
    if source is None:
        return
    panel._source = source
    panel.showing.setText(showing_text(panel))


def show_comparison(panel: Any, upd: Validation) -> None:
    """A held-out score (forest or network, with the forest's beside it): update the "Showing:" line."""
    if upd.source == "forest":
        panel._forest_dice = upd.dice_mean
    else:
        panel._net_dice = upd.dice_mean
        forest = upd.forest or {}
        panel._forest_dice = forest.get("dice_mean", getattr(panel, "_forest_dice", None))
    panel.showing.setText(showing_text(panel))


def showing_text(panel: Any) -> str:
    """"Showing: forest  (held-out Dice: forest 0.912, network 0.934)"."""
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    src = getattr(panel, "_source", None)
    forest, net = getattr(panel, "_forest_dice", None), getattr(panel, "_net_dice", None)
    text = f"Showing: {src}" if src else ""
    scores = [f"forest {fmt(forest)}"]
    if net is not None:
        scores.append(f"network {fmt(net)}")
    return text + (f"  (held-out Dice: {', '.join(scores)})" if forest is not None or net is not None else "")
