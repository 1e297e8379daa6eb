"""The Train panel's Predict on an image backed by dask/Zarr: block-wise on a local dask cluster.

An image too large for memory (napari holds it as a lazy dask array) is predicted with
:func:`napari_labelfx.inference.distributed.predict_distributed` in the background, on a local cluster
sized to the machine, into a Zarr the person chooses (an OME-Zarr pyramid); the viewer then opens the
result lazily as a Labels layer, and, when "Predict also splits objects" is on, the objects (merged
across blocks) beside it. Progress shows in the panel's status line. The same run started again
(same image, model and output) skips the blocks already written.
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import _layers


def is_lazy(data: Any) -> bool:
    """True for layer data (level 0) held lazily: a dask or zarr array rather than numpy in memory."""
    level = data[0] if isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape") else data
    mod = type(level).__module__
    return mod.startswith("dask.") or mod.startswith("zarr.")


def ask_output_path(panel: Any, image: Any) -> str | None:
    """Ask for the output Zarr (a save dialog); None when the person cancels."""
    from qtpy.QtWidgets import QFileDialog

    start = str(Path.home() / f"{image.name}_prediction.zarr")
    path, _ = QFileDialog.getSaveFileName(panel, "Write the prediction to a Zarr store", start, "Zarr (*.zarr)")
    if not path:
        return None
    return path if path.lower().endswith(".zarr") else path + ".zarr"


def _source(image: Any, data: Any, axes: str) -> tuple[Any, str | None, bool]:
    """(image argument, its axes or None for a path, whether worker processes can receive it).

    Data that pickles small (a Zarr-backed dask array) goes to worker processes; a file the layer was
    read from is reopened by path when its level 0 is the layer's data; anything else (e.g. a TIFF
    read through an open file handle) runs on threads in this process.
    """
    import cloudpickle

    try:
        if len(cloudpickle.dumps(data)) < 64 * 2**20:
            return data, axes, True
    except Exception:  # noqa: BLE001 - unpicklable (open file handles, locks): try the path, then threads
        pass
    path = getattr(getattr(image, "source", None), "path", None)
    if path:
        try:
            from ..io.reader import read_image

            img = read_image(path, eager_limit=0)
            level0 = img.data[0] if img.multiscale else img.data
            if tuple(level0.shape) == tuple(data.shape) and img.axes == axes:
                return str(path), None, True
        except Exception:  # noqa: BLE001 - unreadable: fall back to threads on the layer's data
            pass
    return data, axes, False


def predict_distributed_in_panel(panel: Any, output: str | os.PathLike | None = None,
                                 workers: int | None = None) -> Any:
    """Start a block-wise Predict of the panel's (lazy) image; returns the napari worker (None if refused)."""
    from napari.qt.threading import thread_worker
    from napari.utils.notifications import show_info

    from ..inference.distributed import Cancelled, machine_workers
    from ._predict import report_failure

    viewer = panel.viewer
    image = panel.image_layer
    model_dir = panel.model_dir
    data = image.data[0] if image.multiscale else image.data
    axes = _layers.image_axes(image)
    device = panel.device_combo.currentText()
    want_objects = bool(getattr(panel, "objects_check", None) is None or panel.objects_check.isChecked())
    out = str(output) if output is not None else ask_output_path(panel, image)
    if not out:
        panel.status.setText("Prediction cancelled: no output Zarr chosen.")
        return None
    objects_out = str(Path(out).with_name(Path(out).stem + "_objects.zarr")) if want_objects else None
    n_workers = int(workers or machine_workers())
    messages: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        messages.put({"progress": (done, total)})
        if cancel.is_set():
            raise Cancelled("cancelled")

    def job() -> None:
        try:
            from distributed import Client

            from ..inference._block_objects import objects_blockwise
            from ..inference.distributed import local_cluster, predict_distributed

            src, src_axes, processes = _source(image, data, axes)
            with local_cluster(n_workers, processes=processes) as cluster, Client(cluster) as client:
                summary = predict_distributed(
                    str(model_dir), src, out, axes=src_axes, client=client, device=device, pyramid=True,
                    progress=progress, threads=max(1, (os.cpu_count() or 1) // n_workers))
                if objects_out is not None:
                    messages.put({"objects_start": True})
                    multilabel = len(summary["shape"]) + 1 == _ndim_of(out)
                    summary["objects"] = objects_blockwise(str(Path(out) / "0"), objects_out, summary["block"],
                                                           client=client, multilabel=multilabel)
            messages.put({"done": summary})
        except Cancelled:
            messages.put({"cancelled": True})
        except Exception as exc:  # noqa: BLE001 - the GUI boundary: one clear notification
            from ..engine.trainer import describe_failure

            messages.put({"error": describe_failure(exc)})

    @thread_worker
    def _run() -> Iterator[dict[str, Any] | None]:
        thread = threading.Thread(target=job, name="labelfx-distributed-predict", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    msg = messages.get(timeout=0.2)
                except queue.Empty:
                    yield None  # lets napari stop the worker (quit) between messages
                    continue
                yield msg
                if {"done", "error", "cancelled"} & set(msg):
                    break
        finally:
            cancel.set()  # a quit worker stops the run at the next finished block; finished blocks stay
            thread.join(timeout=60)

    def _step(msg: dict[str, Any] | None) -> None:
        if not msg:
            return
        try:
            if "progress" in msg:
                done, total = msg["progress"]
                panel.status.setText(f"Predicting on {n_workers} worker(s) ... {done}/{total} blocks -> {out}")
            elif "objects_start" in msg:
                panel.status.setText("Prediction written; splitting objects across blocks ...")
            elif "error" in msg:
                report_failure(panel, msg["error"])
            elif "cancelled" in msg:
                panel.status.setText("Prediction stopped; Predict again to continue where it stopped.")
            elif "done" in msg:
                summary = msg["done"]
                show_lazy_result(viewer, image, out, "prediction")
                text = f"Prediction done ({summary['blocks']} blocks, {summary.get('skipped', 0)} from an earlier run)"
                if objects_out is not None:
                    show_lazy_result(viewer, image, objects_out, "objects")
                    text += f": {summary.get('objects', 0)} objects"
                panel.status.setText(text + f". Written to {out}.")
                show_info("LabelFX: prediction done.")
        except Exception as exc:  # noqa: BLE001 - e.g. the image layer was removed meanwhile
            report_failure(panel, exc)

    worker = _run()
    worker.yielded.connect(_step)
    worker.finished.connect(lambda: panel._set_running(False))
    worker.labelfx_cancel = cancel  # type: ignore[attr-defined]
    panel.predict_btn.setEnabled(False)
    panel.status.setText(f"Predicting on {n_workers} worker(s) ... starting the cluster")
    worker.start()
    return worker


def _ndim_of(path: str) -> int:
    import zarr

    node = zarr.open(path, mode="r")
    return len((node["0"] if isinstance(node, zarr.Group) else node).shape)


def show_lazy_result(viewer: Any, image: Any, path: str, key: str) -> Any:
    """Show a Zarr written by the distributed predictor as the Labels layer ``"<image> <key>"``, lazily
    (dask arrays: napari reads only the chunks in view)."""
    from ..io.reader import read_image

    img = read_image(path, eager_limit=0)
    data = img.data
    levels = data if img.multiscale else [data]
    if len(levels[0].shape) == len(_layers.image_spatial_shape(image)) + 1:  # multi-label: first positive class
        import dask.array as da

        levels = [da.argmax(da.concatenate([da.zeros_like(lv[:1]), lv], axis=0), axis=0).astype("uint8")
                  for lv in levels]
    nd = len(levels[0].shape)
    name = f"{image.name} {key}"
    if name in viewer.layers:
        viewer.layers.remove(name)
    return _layers.add_keeping_selection(
        viewer, viewer.add_labels, levels if len(levels) > 1 else levels[0], name=name,
        multiscale=len(levels) > 1, scale=tuple(image.scale)[-nd:], translate=tuple(image.translate)[-nd:],
        metadata={_layers.RESULT_KEY: key, "labelfx_path": str(path)}, opacity=0.5)
