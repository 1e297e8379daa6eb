"""How the Train panel shows each trainer update: one handler per ``UpdateKind``, picked from a table.

The engine's updates carry a kind and a data dict (``engine/updates.py``); each handler here reads the
keys of its kind and changes the panel (status line, progress bar, loss plot, "Showing:" line) or the
result layers (through ``_layers``). The panel's state they use (``best_dir``, ``preview_count``,
``_t_start``, ...) stays on the panel.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.updates import Update, UpdateKind
from . import _layers


def _started(panel: Any, upd: Update) -> None:
    d = upd.data
    panel.status.setText(f"Training {d.get('method', '')} on {d.get('device', '?')} ...")


def _progress(panel: Any, upd: Update) -> None:
    d = upd.data
    if d.get("source") == "forest":
        show_forest_fit(panel, d)
        return
    if panel.budget_spin.value():  # a time limit: the bar follows whichever ends first
        panel._set_progress_share(upd.iteration / max(upd.total, 1))
    else:
        panel.progress.setValue(min(upd.iteration, panel.progress.maximum()))
    panel.plot.add_train(upd.iteration, float(d.get("loss", np.nan)))
    # the rate the person sees (previews and validation included), not the bare step rate
    its = d.get("wall_its_per_s") or d.get("its_per_s")
    panel.status.setText(
        f"iteration {upd.iteration}/{upd.total}  loss {d.get('loss', float('nan')):.4f}"
        + (f"  {its:.2f} it/s" if its else "")
    )


def _validation(panel: Any, upd: Update) -> None:
    d = upd.data
    if d.get("source") != "forest":
        panel.plot.add_val(upd.iteration, float(d.get("val_loss", np.nan)))
    show_comparison(panel, d)


def _preview(panel: Any, upd: Update) -> None:
    from ..engine.sizing import MIN_PREVIEW_ITERATIONS_3D
    from ._multi import run_image

    d = upd.data
    image = run_image(panel, int(d.get("image_index", 0)))
    if (getattr(panel, "_run_spatial", "2d") == "3d" and d.get("source") != "forest"
            and upd.iteration < MIN_PREVIEW_ITERATIONS_3D):
        return  # an untrained 3D network's prediction floods the slice: wait until it has learnt
    if image is None:
        return
    _layers.apply_preview(panel.viewer, image, d)
    show_source(panel, d.get("source"))
    panel.preview_count += 1
    if panel.first_preview_s is None:
        panel.first_preview_s = time.monotonic() - panel._t_start


def _checkpoint(panel: Any, upd: Update) -> None:
    d = upd.data
    if d.get("which") == "best":
        panel.best_dir = Path(d["path"])
    elif d.get("which") == "last":
        panel.last_dir = Path(d["path"])


def _paused(panel: Any, upd: Update) -> None:
    panel.status.setText(f"Paused at iteration {upd.iteration}.")


def _log(panel: Any, upd: Update) -> None:
    panel.status.setText(str(upd.data.get("message", "")))


def _result(panel: Any, upd: Update) -> None:
    from ._multi import run_image

    d = upd.data
    image = run_image(panel, int(d.get("image_index", 0)))
    if image is not None:
        _layers.apply_result(panel.viewer, image, d)
    for it, label in d.get("markers", []):
        panel.plot.add_marker(int(it), str(label))
    for name, curve in d.get("curves", {}).items():
        panel.plot.set_curve(name, curve["x"], curve["y"])
    if d.get("message"):
        panel.status.setText(str(d["message"]))


def _finished(panel: Any, upd: Update) -> None:
    from napari.utils.notifications import show_info

    d = upd.data
    if d.get("best_path"):
        panel.best_dir = Path(d["best_path"])
    if d.get("last_path"):
        panel.last_dir = Path(d["last_path"])
    if d.get("reason") in ("done", "time-budget"):  # finished as planned: a full bar
        panel.progress.setValue(panel.progress.maximum())
    panel._finish(f"Training finished ({d.get('reason', 'done')}). Best model: {panel.best_dir} "
                  "(temporary: use Save model to keep it)")
    show_info("LabelFX: training finished.")


def _failed(panel: Any, upd: Update) -> None:
    from napari.utils.notifications import show_error

    reason = upd.data.get("reason", "unknown error")
    panel._finish(f"Training failed: {reason}")
    show_error(f"LabelFX training failed: {reason}")


#: The handler of each update kind (kinds not listed change nothing in the panel).
HANDLERS: dict[UpdateKind, Callable[[Any, Update], None]] = {
    UpdateKind.STARTED: _started,
    UpdateKind.PROGRESS: _progress,
    UpdateKind.VALIDATION: _validation,
    UpdateKind.PREVIEW: _preview,
    UpdateKind.CHECKPOINT: _checkpoint,
    UpdateKind.PAUSED: _paused,
    UpdateKind.LOG: _log,
    UpdateKind.RESULT: _result,
    UpdateKind.FINISHED: _finished,
    UpdateKind.FAILED: _failed,
}


def apply_update(panel: Any, upd: Update) -> None:
    """Show one trainer update in the Train panel (main thread)."""
    handler = HANDLERS.get(upd.kind)
    if handler is not None:
        handler(panel, upd)


# -- the "Showing:" line ----------------------------------------------------------------------------
def show_forest_fit(panel: Any, d: dict) -> None:
    """A forest fit: say how long it took; the forest alone fills the progress bar."""
    live = panel.method_combo.currentText() == "forest"
    if live:
        panel.progress.setMaximum(1)
        panel.progress.setValue(1)
    panel.status.setText(f"forest fitted in {d.get('fit_s', 0.0):.1f} s on {d.get('n_samples', 0)} labelled pixels"
                         + (" (live: paint more, it refits)" if live else ""))


def show_source(panel: Any, source: str | None) -> None:
    """Remember which learner the preview layers show, and say so."""
    if source is None:
        return
    panel._source = source
    panel.showing.setText(showing_text(panel))


def show_comparison(panel: Any, d: dict) -> None:
    """A held-out score (forest or network, with the forest's beside it): update the "Showing:" line."""
    if d.get("source") == "forest":
        panel._forest_dice = d.get("dice_mean")
    else:
        panel._net_dice = d.get("dice_mean")
        forest = d.get("forest") or {}
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
