"""The Train panel while a run is live: new strokes and the region in view go to the trainer, its
updates come back to the panel.

Functions take the panel (its attributes keep their names: ``panel.runner``, ``panel._dirty``, ...).
"""
from __future__ import annotations

import time
from typing import Any

from . import _layers


def watch_layers(panel: Any, layers: list[Any]) -> None:
    """Mark the panel dirty when any of these annotation layers is painted or replaced."""
    for layer in layers:
        if id(layer) in panel._connected_layers:
            continue
        panel._connected_layers.add(id(layer))
        for ev in ("paint", "data", "set_data"):
            emitter = getattr(layer.events, ev, None)
            if emitter is not None:
                emitter.connect(panel._mark_dirty)


def request_preview(panel: Any) -> None:
    """Tell the trainer which region is in view, when it changed: the trainer previews it after
    the current step, then on its own schedule (within its preview time budget)."""
    from ._multi import preview_target

    target = preview_target(panel) if panel.runner is not None else None
    if target is None:
        return
    index, image = target  # with several images: the one chosen in the panel, when it is trained on
    region = _layers.visible_region(panel.viewer, image)
    if (index, region) == getattr(panel, "_last_target", None):
        return
    panel._last_region, panel._last_target = region, (index, region)
    panel.runner.request_preview(index, tuple(slice(a, b) for a, b in region))


def send_refresh(panel: Any) -> None:
    """Every refresh interval: send newer annotations and the region in view to the trainer."""
    if panel.runner is None or not panel.runner.running:
        return
    panel._request_preview()
    if not panel._dirty:
        return
    panel._dirty = False
    from ._multi import refresh_items

    try:
        items = refresh_items(panel)
    except ValueError as exc:
        from napari.utils.notifications import show_warning

        show_warning(f"LabelFX: new annotations not sent: {exc}")
        return
    if items is not None:
        panel.runner.send_items(items)


def drain_updates(panel: Any) -> None:
    """Show the updates that arrived since the last tick (the poll timer's slot)."""
    if panel.runner is None:
        panel._poll_timer.stop()
        return
    for upd in panel.runner.poll(max_items=200):
        panel.apply_update(upd)
    budget = panel.budget_spin.value()
    if budget and panel.runner is not None and panel.runner.running:
        # a time limit: the bar moves with the clock too (a slow first step sends no progress)
        set_progress_share(panel, (time.monotonic() - panel._t_start) / budget)


def set_progress_share(panel: Any, share: float) -> None:
    """Move the progress bar forward to ``share`` (0..1) of its range; it never goes back."""
    top = panel.progress.maximum()
    panel.progress.setValue(max(panel.progress.value(), min(int(share * top), top)))
