"""The demo behind ``labelfx demo``: a sample image with pre-drawn scribbles, trained live in napari (or headless)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

DEMO_SIZE = 256
#: Seconds of training in the demo window (about 90 s from launch to the finished model on 2 cores).
DEMO_SECONDS = 60


def demo_data(seed: int = 0) -> dict:
    """The demo's sample: fluorescence-like nuclei, their true instances and a few scribbles."""
    from ._sample_data import make_nuclei_2d

    return make_nuclei_2d(seed=seed, size=DEMO_SIZE)


def _overlay_png(image: np.ndarray, labels: np.ndarray, truth: np.ndarray | None, path: Path) -> None:
    """Image in grey, predicted foreground outlined in yellow, true outlines in cyan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    img = image.astype(np.float32)
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
    rgb = np.stack([img] * 3, -1)
    pred_b = find_boundaries(labels > 0, mode="inner")
    rgb[pred_b] = (1.0, 0.9, 0.0)
    if truth is not None:
        true_b = find_boundaries(truth > 0, mode="outer")
        rgb[true_b & ~pred_b] = (0.0, 0.8, 1.0)
    fig = plt.figure(figsize=(6, 6), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(rgb)
    ax.set_axis_off()
    fig.savefig(path)
    plt.close(fig)


def run_headless(out: str | Path, iters: int | None = None, device: str = "auto", seed: int = 0) -> dict:
    """Train the scribble method on the demo sample without a screen; write prediction, overlay, metrics."""
    from tqdm import tqdm

    from .annotations.class_table import default_class_table
    from .annotations.model import AnnotatedImage, AnnotationLayer, AnnotationSet
    from .engine import TrainConfig, Trainer
    from .inference import Predictor
    from .io.writer import write_labels
    from .tools.metrics import semantic_metrics

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = demo_data(seed)
    table = default_class_table(["nucleus"])
    aset = AnnotationSet(
        table,
        [AnnotatedImage(name="demo", image=d["image"], axes="YX",
                        layers=[AnnotationLayer(name="scribbles", kind="scribble", data=d["scribbles"])])],
    )
    items = aset.training_items()
    cfg = TrainConfig(method="scribble", preset="small", iterations=iters or 300, patch_size=(128, 128),
                      batch_size=4, device=device, seed=seed, output_dir=str(out / "model"),
                      preview_every_s=1e9)
    t0 = time.time()
    trainer = Trainer(cfg, items, list(table.names))
    with tqdm(total=cfg.iterations, desc="labelfx demo (scribble)", unit="it") as bar:
        result = trainer.run(progress=bar)
    train_s = time.time() - t0
    model_dir = result.best_dir or result.last_dir
    pred = Predictor.from_folder(model_dir, device=device)
    prediction = pred(items[0].image)
    labels = np.asarray(prediction.labels).astype(np.uint8)
    write_labels(out / "prediction.tif", labels)
    _overlay_png(d["image"], labels, d["instances"], out / "overlay.png")
    truth = (d["instances"] > 0).astype(np.int64)
    scores = semantic_metrics([truth], [labels.astype(np.int64)], list(table.names))
    metrics = {"method": "scribble", "iterations": cfg.iterations, "train_seconds": round(train_s, 1),
               "device": str(pred.device), "model": str(model_dir), **scores}
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=float))
    tmp.replace(out / "metrics.json")
    return metrics


def _window_screenshot(viewer: Any, path: Path) -> None:
    from skimage.io import imsave

    img = viewer.screenshot(canvas_only=False, flash=False)
    imsave(str(path), img, check_contrast=False)


def setup_demo(viewer: Any, args: argparse.Namespace) -> Any:
    """Put the sample, its scribbles and the Annotate and Train panels in ``viewer``; return the Train panel.

    The Train panel is set to the default path (``auto``) with a time limit of ``args.seconds``
    (default :data:`DEMO_SECONDS`), or to ``args.iters`` iterations when given.
    """
    from qtpy.QtCore import Qt

    from ._sample_data import sample_nuclei_2d

    for data, kwargs, ltype in sample_nuclei_2d():
        name = kwargs.get("name", "")
        if ltype == "labels" and "scribble" not in name.lower():
            kwargs = {**kwargs, "visible": False}
        getattr(viewer, f"add_{ltype}")(data, **kwargs)
    viewer.window.add_plugin_dock_widget("napari-labelfx", "Annotate")
    _, train = viewer.window.add_plugin_dock_widget("napari-labelfx", "Train")
    # the default path: the forest's prediction within a second or two, a network behind it that
    # takes over when it scores better, and a finished model after the time limit (the whole story)
    train.method_combo.setCurrentText("auto")
    train.method_params.set_values({"network": "scribble"})
    if args.iters:
        train.iters_spin.setValue(args.iters)
    else:
        train.iters_spin.setValue(5000)  # a cap: the time limit ends the demo
        train.budget_spin.setValue(int(round(args.seconds or DEMO_SECONDS)))
    train.device_combo.setCurrentText(args.device)
    train.refresh_spin.setValue(2.0)
    # only the scribble layer trains the demo; the strong and noisy layers are there to look at
    for i in range(train.annotation_list.count()):
        it = train.annotation_list.item(i)
        name = it.data(Qt.ItemDataRole.UserRole)
        it.setCheckState(Qt.CheckState.Checked if "scribble" in name.lower() else Qt.CheckState.Unchecked)
    return train


def run_gui(args: argparse.Namespace) -> int:
    """Open napari with the sample, scribbles, the Annotate and Train panels, and start training."""
    try:
        import napari
        from qtpy.QtCore import QTimer
    except ImportError as exc:  # a headless install: say what to install instead of a traceback
        raise ValueError(f"the demo window needs the GUI extra (pip install 'napari-labelfx[gui]'): {exc}; "
                         "or run 'labelfx demo --headless'") from None

    viewer = napari.Viewer(title="napari-labelfx demo")
    train = setup_demo(viewer, args)
    QTimer.singleShot(500, train.start)

    if args.screenshots:
        shots = Path(args.screenshots)
        shots.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        limit = (args.seconds or DEMO_SECONDS) + 60.0  # a safety net: the demo ends when training does
        counter = {"n": 0}
        timeline: list[dict] = []

        def _shoot() -> None:
            elapsed = time.monotonic() - t0
            path = shots / f"demo_{counter['n']:02d}_{int(elapsed):03d}s.png"
            _window_screenshot(viewer, path)
            counter["n"] += 1
            timeline.append({"t": round(elapsed, 1), "status": train.status.text(), "showing": train.showing.text(),
                             "progress": train.progress.value() / max(train.progress.maximum(), 1)})
            done = train.runner is not None and not train.runner.running
            if elapsed > limit or (done and counter["n"] > 2):
                timer.stop()
                if train.runner is not None:
                    train.runner.terminate(timeout=5.0)
                report = {"screenshots": str(shots), "count": counter["n"], "first_preview_s": train.first_preview_s,
                          "previews": train.preview_count, "timeline": timeline}
                (shots / "timeline.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
                print(json.dumps(report, default=float))
                viewer.close()

        timer = QTimer()
        timer.setInterval(5000)
        timer.timeout.connect(_shoot)
        timer.start()
        napari.run()
        return 0
    napari.run()
    return 0
