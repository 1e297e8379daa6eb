"""Screenshots of the everyday workflow at a laptop's 1366x768, driven through the panels as a person would.

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshots.py [--only NAME ...]

Writes (docs/img/, palette PNGs of a few hundred KB):

* ``gui_volume.png``: the plugin's 3D sample, a 2D network trained on its three annotated slices and
  Predict run on the whole stack (a slice that was never annotated is shown);
* ``gui_objects.png``: the 2D nuclei sample, Predict's ``objects`` layer (one id, one colour, per nucleus);
* ``gui_two_images.png``: two images, each with its own scribbles, trained together ("Train on: all
  annotated images") and both predicted with "Predict all images".

Annotate, Train and Generate labels are docked in each, as on a laptop: the labelling panels share a
tabbed dock, Train has its own below. Training runs on the CPU with one thread and a few hundred
iterations (about a minute per shot on 2 cores). The numbers shown are whatever this run reached.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"
SIZE = (1366, 768)


def _app() -> Any:
    from qtpy.QtWidgets import QApplication

    return QApplication.instance()


def settle(seconds: float = 0.5) -> None:
    """Let Qt and napari process events for ``seconds``."""
    app = _app()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def wait_until(cond: Any, timeout: float, what: str) -> None:
    app = _app()
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"screenshots: timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def make_viewer() -> tuple[Any, dict[str, Any]]:
    """A maximised napari window with Annotate, Train and Generate labels docked (laptop arrangement)."""
    import napari

    from napari_labelfx.widgets.annotate import AnnotateWidget
    from napari_labelfx.widgets.generate_labels import GenerateLabelsWidget
    from napari_labelfx.widgets.train import TrainWidget

    viewer = napari.Viewer(show=True)
    window = viewer.window._qt_window
    screen = window.screen().size()
    if (screen.width(), screen.height()) != SIZE:
        print(f"warning: the screen is {screen.width()}x{screen.height()}, not {SIZE[0]}x{SIZE[1]}; run under "
              f'xvfb-run -a -s "-screen 0 {SIZE[0]}x{SIZE[1]}x24"', file=sys.stderr)
    window.resize(*SIZE)
    window.showMaximized()
    panels: dict[str, Any] = {}
    for key, cls, name in (("annotate", AnnotateWidget, "Annotate"), ("train", TrainWidget, "Train"),
                           ("generate", GenerateLabelsWidget, "Generate labels")):
        w = cls(viewer)
        panels[key] = w
        panels[key + "_dock"] = viewer.window.add_dock_widget(w, name=name, area="right")
        settle(0.3)
    panels["annotate_dock"].raise_()
    t = panels["train"]
    t.device_combo.setCurrentText("cpu")
    settle(0.5)
    return viewer, panels


def train(viewer: Any, w: Any, method: str, iterations: int, patch: int = 96) -> None:
    """Press Start with the panel's settings and wait for the end of training."""
    from napari_labelfx.engine.updates import UpdateKind

    w.method_combo.setCurrentText(method)
    w.iters_spin.setValue(iterations)
    w.patch_spin.setValue(patch)
    w.batch_spin.setValue(4)
    ends: list[Any] = []
    orig = w.apply_update

    def record(upd: Any) -> None:
        if upd.kind in (UpdateKind.FINISHED, UpdateKind.FAILED):
            ends.append(upd)
        orig(upd)

    w.apply_update = record
    w.start()
    wait_until(lambda: bool(ends) and not w.runner.running, 900, "training")
    w.apply_update = orig
    if ends[-1].kind == UpdateKind.FAILED:
        raise RuntimeError(f"training failed: {ends[-1].reason}")
    settle(0.5)


def run_worker(worker: Any, what: str) -> None:
    done: list[bool] = []
    worker.finished.connect(lambda: done.append(True))
    wait_until(lambda: bool(done), 900, what)
    settle(0.5)


def save(viewer: Any, name: str) -> Path:
    """Grab the whole window and write it as a palette PNG (small, exact colours of the UI)."""
    from PIL import Image

    settle(1.0)
    window = viewer.window._qt_window
    path = OUT / name
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    window.grab().save(str(tmp))
    with Image.open(tmp) as im:
        im.convert("RGB").quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    tmp.unlink()
    print(f"{path}  {window.width()}x{window.height()}  {path.stat().st_size // 1024} KB", flush=True)
    return path


def hide(viewer: Any, *names: str) -> None:
    for n in names:
        if n in viewer.layers:
            viewer.layers[n].visible = False


def shot_volume() -> None:
    viewer, p = make_viewer()
    viewer.open_sample("napari-labelfx", "volume3d")
    w = p["train"]
    w.image_combo.setCurrentText("blobs 3d")
    train(viewer, w, "supervised", 150, patch=64)
    annotated = set(int(z) for z in np.flatnonzero(np.asarray(viewer.layers["blobs strong (3 slices)"].data)
                                                  .reshape(viewer.layers["blobs 3d"].data.shape[0], -1).any(1)))
    z = next(z for z in (13, 14, 12, 15, 11) if z not in annotated)  # a slice nobody painted
    viewer.dims.set_current_step(0, z)
    run_worker(w.predict(), "prediction")
    hide(viewer, "blobs 3d objects", "blobs 3d confidence")
    viewer.layers.selection.active = viewer.layers["blobs 3d prediction"]
    viewer.reset_view()
    w.status.setText(w.status.text() + f"  Shown: slice {z}, not annotated (annotated: "
                     f"{', '.join(map(str, sorted(annotated)))}).")
    save(viewer, "gui_volume.png")
    viewer.close()


def shot_objects() -> None:
    viewer, p = make_viewer()
    viewer.open_sample("napari-labelfx", "nuclei2d")
    w = p["train"]
    w.image_combo.setCurrentText("nuclei")
    for i in range(w.annotation_list.count()):  # train on the strong mask only
        item = w.annotation_list.item(i)
        from qtpy.QtCore import Qt

        keep = "strong" in item.text()
        item.setCheckState(Qt.CheckState.Checked if keep else Qt.CheckState.Unchecked)
    train(viewer, w, "supervised", 200, patch=96)
    run_worker(w.predict(), "prediction")
    hide(viewer, "nuclei prediction", "nuclei confidence", "nuclei noisy", "nuclei strong", "nuclei scribbles")
    viewer.layers.selection.active = viewer.layers["nuclei objects"]
    viewer.reset_view()
    save(viewer, "gui_objects.png")
    viewer.close()


def shot_two_images() -> None:
    from napari_labelfx._sample_data import make_nuclei_2d

    viewer, p = make_viewer()
    ann, w = p["annotate"], p["train"]
    for i, seed in enumerate((3, 7)):
        d = make_nuclei_2d(seed=seed, size=192)
        name = f"nuclei {i + 1}"
        # side by side: the second image is moved right by its width and a gap
        viewer.add_image(d["image"], name=name, translate=(0, i * 208))
        ann.image_combo.setCurrentText(name)
        layer = ann.new_annotation_layer("scribble")
        layer.data = d["scribbles"].astype(layer.data.dtype)
    w.image_combo.setCurrentText("nuclei 1")
    w.train_on_combo.setCurrentText("all annotated images")
    train(viewer, w, "scribble", 200, patch=96)
    run_worker(w.predict_all([viewer.layers["nuclei 1"], viewer.layers["nuclei 2"]]), "prediction of both images")
    hide(viewer, "nuclei 1 objects", "nuclei 2 objects", "nuclei 1 confidence", "nuclei 2 confidence")
    viewer.layers.selection.active = viewer.layers["nuclei 2 prediction"]
    viewer.reset_view()
    save(viewer, "gui_two_images.png")
    viewer.close()


SHOTS = {"volume": shot_volume, "objects": shot_objects, "two_images": shot_two_images}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SHOTS), default=sorted(SHOTS))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    for name in args.only:
        t0 = time.monotonic()
        SHOTS[name]()
        print(f"{name}: {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
