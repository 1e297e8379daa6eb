"""The Train panel's Predict: the whole image, or a volume slice by slice, shown as it is predicted.

A 2D model predicts a volume one Z slice at a time, starting with the slice the person is looking
at and always continuing with the not-yet-predicted slice nearest to the one in view, so the slice
on screen is filled first even when the person moves while prediction runs. Every finished slice is
written into the plugin's result layers right away. Objects ("<image> objects", one id per object)
follow once the whole image is known. Errors are caught in the worker and shown once, as one
notification, with the status line saying what happened.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..core.results import ResultLayer
from . import _layers


def open_panel_predictor(model_dir: Any, device: str) -> Any:
    """A predictor for a model folder (or, when the export module is present, a bioimage.io package)."""
    try:
        from ..export.bioimageio_import import open_predictor
    except ImportError:  # the export package is optional
        from ..inference import Predictor

        return Predictor.from_folder(model_dir, device=device)
    return open_predictor(model_dir, device=device)


def _union(labels: np.ndarray, spatial_ndim: int) -> np.ndarray:
    """Multi-label (K, *spatial) 0/1 -> one label image (first positive class), else unchanged."""
    if labels.ndim == spatial_ndim + 1:
        return np.argmax(np.concatenate([np.zeros_like(labels[:1]), labels], 0), 0)
    return labels


def _foreground(pred: Any, probabilities: np.ndarray) -> np.ndarray:
    """Per-pixel object score: any foreground class (multi-label: the most likely class)."""
    from ..inference.objects import foreground_probability

    if getattr(pred, "multilabel", False):
        return probabilities.max(axis=0)
    return foreground_probability(probabilities)


def next_slice(done: np.ndarray, wanted: int) -> int:
    """The not-yet-predicted slice nearest to ``wanted`` (ties: the one after it); -1 when all are done."""
    todo = np.flatnonzero(~done)
    if todo.size == 0:
        return -1
    dist = np.abs(todo - wanted) * 2 + (todo < wanted)
    return int(todo[np.argmin(dist)])


def prediction_steps(
    pred: Any, data: Any, axes: str, want_z: Callable[[], int], objects: bool
) -> Iterator[dict[str, Any]]:
    """Run a prediction; yield ``{"z", "labels", "confidence"}`` per slice (volumes through a 2D model)
    or once for the whole image, then ``{"objects": ids}`` when asked, and finally ``{"done": True}``.

    Any error ends the steps with ``{"error": message}`` (the worker never raises: napari would show
    a second, raw pop-up).
    """
    try:
        chw = pred.to_channels_first(np.asarray(data), axes)
        slicewise = bool(getattr(pred, "is_slicewise", lambda _x: False)(chw))
        if slicewise and hasattr(pred, "normalisation_for"):
            from ..core.normalize import apply_normalisation

            # one normalisation for the whole volume, as in training
            lo, hi = pred.normalisation_for(chw)
            depth = int(chw.shape[1])
            done = np.zeros(depth, bool)
            labels_all: list[Any] = [None] * depth
            fg_slices: list[Any] = [None] * depth
            while True:
                z = next_slice(done, int(want_z()))
                if z < 0:
                    break
                res = pred(apply_normalisation(np.asarray(chw[:, z]), lo, hi), normalise=False)
                done[z] = True
                lab = _union(np.asarray(res.labels), 2)
                labels_all[z] = lab
                fg_slices[z] = _foreground(pred, np.asarray(res.probabilities))  # not all K maps: memory
                yield {"z": z, "labels": lab, "confidence": np.asarray(res.confidence), "done_slices": int(done.sum()),
                       "depth": depth}
            labels = np.stack(labels_all)
            foreground = np.stack(fg_slices)
        else:
            res = pred(chw)
            labels = _union(np.asarray(res.labels), np.asarray(res.confidence).ndim)
            foreground = _foreground(pred, np.asarray(res.probabilities))
            yield {"z": None, "labels": labels, "confidence": np.asarray(res.confidence)}
        if objects:
            from ..inference.objects import objects_from_labels

            yield {"objects": objects_from_labels(labels, foreground=foreground)}
        yield {"done": True}
    except Exception as exc:  # noqa: BLE001 - the GUI boundary: one clear notification, never a raw traceback
        from ..engine.trainer import describe_failure

        yield {"error": describe_failure(exc)}


def report_failure(panel: Any, reason: Any) -> None:
    """A prediction that failed: say why in the panel's status line and in one notification."""
    from napari.utils.notifications import show_error

    panel.status.setText(f"Prediction failed: {reason}")
    show_error(f"LabelFX prediction failed: {reason}")


def predict_in_panel(panel: Any) -> Any:
    """Start Predict for the Train panel ``panel``; returns the napari worker (or None when refused)."""
    from napari.qt.threading import thread_worker
    from napari.utils.notifications import show_error, show_info

    viewer = panel.viewer
    image = panel.image_layer
    if image is None or panel.model_dir is None:
        show_error("LabelFX: choose an image and train or load a model first.")
        return None
    model_dir = panel.model_dir
    data = image.data[0] if image.multiscale else image.data
    from ._predict_distributed import is_lazy, predict_distributed_in_panel

    if is_lazy(data):  # too large for memory: block-wise on a local dask cluster, into a Zarr
        return predict_distributed_in_panel(panel)
    axes = _layers.image_axes(image)
    device = panel.device_combo.currentText()
    shape = _layers.image_spatial_shape(image)
    want_objects = bool(getattr(panel, "objects_check", None) is None or panel.objects_check.isChecked())

    # the slice in view, read on the main thread (dims events) and only looked up by the worker
    state = {"z": 0}

    def _follow(*_: Any) -> None:
        if len(shape) == 3:
            try:
                state["z"] = int(_layers.visible_region(viewer, image)[0][0])
            except Exception:  # noqa: BLE001 - a layer removed meanwhile: keep the last slice
                pass

    _follow()
    viewer.dims.events.current_step.connect(_follow)

    def current_z() -> int:
        return state["z"]

    @thread_worker
    def _run() -> Iterator[dict[str, Any]]:
        try:
            pred = open_panel_predictor(model_dir, device)
        except Exception as exc:  # noqa: BLE001 - shown once by the main thread
            yield {"error": f"cannot load the model: {exc}"}
            return
        yield from prediction_steps(pred, data, axes, current_z, want_objects)

    def _step(msg: dict[str, Any]) -> None:
        try:
            if "error" in msg:
                report_failure(panel, msg["error"])
            elif "labels" in msg:
                z = msg["z"]
                region = None if z is None else ((z, z + 1), *((0, s) for s in shape[1:]))
                _layers.apply_preview(viewer, image, msg["labels"], msg["confidence"], region)
                if z is not None:
                    panel.status.setText(f"Predicting ... slice {z} done ({msg['done_slices']}/{msg['depth']})")
            elif "objects" in msg:
                ids = msg["objects"]
                _layers.apply_result(viewer, image, [ResultLayer(name="objects", kind="labels", data=ids)])
                panel.status.setText(f"Prediction done: {int(ids.max(initial=0))} objects.")
            elif msg.get("done"):
                if not panel.status.text().startswith("Prediction done"):
                    panel.status.setText("Prediction done.")
                show_info("LabelFX: prediction done.")
        except Exception as exc:  # noqa: BLE001 - e.g. the image layer was removed meanwhile
            report_failure(panel, exc)

    worker = _run()
    worker.yielded.connect(_step)

    def _finished() -> None:
        viewer.dims.events.current_step.disconnect(_follow)
        panel._set_running(False)

    worker.finished.connect(_finished)
    panel.predict_btn.setEnabled(False)
    panel.status.setText("Predicting ...")
    worker.start()
    return worker
