"""Filter features of the chosen image computed while the person sets up the Train panel.

A live forest needs the filter features of the painted tiles and of the view before its first
prediction; computing them takes most of that first second. The panel knows the image and the
method before Start, so it starts them in the background then (a debounced request whenever the
image, the method or the view changes) and the trainer finds them in the shared feature cache.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

#: Images larger than this (pixels, all channels) are not prefetched: normalising a copy of them
#: costs memory the person did not ask for, and Start reads them tile by tile anyway.
MAX_PREFETCH_PIXELS = 40_000_000


def prefetch_for_panel(panel: Any) -> threading.Thread | None:
    """Start computing the features the panel's live method will need first (None: nothing to do)."""
    from ..engine.forest_trainer import live_filter_bank
    from . import _layers

    layer = panel.image_layer
    if layer is None or panel.runner is not None and panel.runner.running:
        return None
    method = panel.method_combo.currentText()
    try:
        params = panel.method_params.values()
    except ValueError:
        return None
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if int(np.prod(data.shape)) > MAX_PREFETCH_PIXELS:
        return None
    shape = _layers.image_spatial_shape(layer)
    bank = live_filter_bank(method, params, len(shape))
    if bank is None:
        return None
    region = tuple(slice(a, b) for a, b in _layers.visible_region(panel.viewer, layer))

    def _run() -> None:
        from ..annotations.layers import annotated_image_from_layers
        from ..forest.tiles import prefetch_features

        try:
            # the same conversion and normalisation as Start, so the cached features' key matches
            image = annotated_image_from_layers(layer, [], [], None).channels_first()
        except Exception:  # noqa: BLE001 - a layer Start would refuse: Start says why
            return
        if image.ndim - 1 != bank.spatial_dims:
            return
        prefetch_features(image, bank, region).join()

    thread = threading.Thread(target=_run, daemon=True, name="labelfx-prefetch")
    thread.start()
    return thread
