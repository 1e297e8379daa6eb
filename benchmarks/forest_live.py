"""The live forest in the Train panel on a real image: time to the first prediction, stroke-to-prediction
latency, event-loop stalls, and screenshots at a laptop's screen size.

Run under a (virtual) display:

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python benchmarks/forest_live.py \\
        --image ../shared/data/nuclei_dsb_stardist/images/img2d.png --out out/forest_live

The image's mask (``masks/<stem>.tif`` beside ``images/``) gives scribbles the way ``labelfx eval``
derives them; the strokes on the left half are painted before Start, the others after the first
prediction (one "stroke" event), and the prediction is timed until it changes. A 10 ms QTimer measures
how late the event loop runs meanwhile (ui_stall.py's meter). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True)
    p.add_argument("--mask", default=None, help="the mask (default: ../masks/<stem>.tif)")
    p.add_argument("--method", default="forest", help="forest (live) or auto")
    p.add_argument("--out", default="out/forest_live")
    p.add_argument("--seconds", type=float, default=20.0, help="how long to keep the session after the stroke")
    p.add_argument("--setup-seconds", type=float, default=5.0,
                   help="most seconds between opening the panel and Start (Start comes earlier when the "
                        "panel's feature prefetch is done)")
    p.add_argument("--paint", choices=("strokes", "assign"), default="strokes",
                   help="strokes: the second batch is painted stroke by stroke through the layer's painting "
                        "API (history, paint events), as a person's brush does; assign: the whole label array "
                        "is replaced at once (the first protocol)")
    p.add_argument("--trace", action="store_true", help="sample the main thread's stack during stalls")
    args = p.parse_args(argv)

    import napari
    import tifffile
    from qtpy.QtWidgets import QApplication
    from skimage.io import imread, imsave

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ui_stall import StallMeter

    from napari_labelfx.evaluation.derive import DeriveParams, scribble_target
    from napari_labelfx.widgets.train import TrainWidget

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    img_path = Path(args.image)
    mask_path = Path(args.mask) if args.mask else img_path.parent.parent / "masks" / f"{img_path.stem}.tif"
    image = imread(img_path)
    mask = tifffile.imread(mask_path)
    target = scribble_target(mask, "instance", 2, np.random.default_rng(0), DeriveParams())
    strokes = np.where(target >= 0, target + 1, 0).astype(np.uint8)  # scribble layers: 1 = background
    first = strokes.copy()
    first[:, image.shape[1] // 2:] = 0

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    viewer.add_image(image, name=img_path.stem)
    layer = viewer.add_labels(first, name="scribbles", metadata={"labelfx_kind": "scribble"})
    w = TrainWidget(viewer, runner_mode="thread")
    viewer.window.add_dock_widget(w, name="Train", area="right")
    w.device_combo.setCurrentText("cpu")
    w.method_combo.setCurrentText(args.method)
    app = QApplication.instance()

    def pump(until: float, cond=lambda: False) -> bool:
        while time.perf_counter() < until:
            app.processEvents()
            if cond():
                return True
            time.sleep(0.005)
        return cond()

    meter = StallMeter(trace=args.trace)

    def shot(name: str) -> str:
        meter.pause()  # writing a PNG blocks the loop for a second: the benchmark's cost, not the panel's
        path = out / name
        imsave(str(path), viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
        meter.resume()
        return str(path)

    # the person opens the panel and looks at its settings for a few seconds before Start; the panel
    # computes the view's filter features meanwhile (prefetch). Start when they are ready, or after
    # --setup-seconds at most.
    t_setup = time.perf_counter()
    pump(t_setup + 0.5)
    pump(t_setup + args.setup_seconds, lambda: getattr(w, "_prefetch_thread", None) is not None
         and not w._prefetch_thread.is_alive())
    setup_s = time.perf_counter() - t_setup
    prefetched = getattr(w, "_prefetch_thread", None) is not None and not w._prefetch_thread.is_alive()
    meter.start()
    t_start = time.perf_counter()
    w.start()
    start_call_s = time.perf_counter() - t_start  # the click itself (reading the layers, creating result layers)
    got = pump(t_start + 60, lambda: w.first_preview_s is not None)
    first_s = time.perf_counter() - t_start if got else None
    pump(time.perf_counter() + 1.0)
    shots = [shot("1_first_strokes.png")]
    before = viewer.layers[f"{img_path.stem} prediction"].data.copy()
    count = w.preview_count
    def changed() -> bool:
        return w.preview_count > count and not np.array_equal(viewer.layers[f"{img_path.stem} prediction"].data,
                                                              before)

    stroke_s = None
    if args.paint == "assign":
        t_stroke = time.perf_counter()
        layer.data = strokes  # the whole second batch at once
        stroke_s = time.perf_counter() - t_stroke if pump(t_stroke + 60, changed) else None
    else:  # the person paints the strokes on the right half one by one
        from scipy import ndimage as ndi

        new = (strokes > 0) & (first == 0)
        comp, n = ndi.label(new)
        t_stroke = seen = None
        for k in range(1, n + 1):
            idx = np.nonzero(comp == k)
            order = np.argsort(idx[1] * image.shape[0] + idx[0])  # left to right, like a drag
            with layer.block_history():  # one stroke = one undo step and one paint event, as the brush
                for part in np.array_split(order, 4):
                    layer.data_setitem((idx[0][part], idx[1][part]), strokes[idx][part])
                    pump(time.perf_counter() + 0.02)
            if t_stroke is None:
                # the first stroke is finished: the next preview comes from a forest refitted with it (live
                # previews follow refits; the view does not move)
                t_stroke, seen = time.perf_counter(), w.preview_count
            pump(time.perf_counter() + 0.1)
            if stroke_s is None and w.preview_count > seen:
                stroke_s = time.perf_counter() - t_stroke
        if stroke_s is None and t_stroke is not None and pump(t_stroke + 60, lambda: w.preview_count > seen):
            stroke_s = time.perf_counter() - t_stroke
        pump(time.perf_counter() + 60, changed)  # and the prediction changes with the second batch
    pump(time.perf_counter() + 1.0)
    shots.append(shot("2_after_more_strokes.png"))
    pump(time.perf_counter() + args.seconds)
    # stalls of the whole session, and of the part after the Start click itself (Start collects the
    # layers on the main thread once, as every method does)
    stalls = meter.stop(after=t_start + 0.5)
    w.stop()
    pump(time.perf_counter() + 10, lambda: not w.runner.running)
    pred = viewer.layers[f"{img_path.stem} prediction"].data > 0
    truth = mask > 0
    report = {
        "image": str(img_path), "shape": list(image.shape), "method": args.method, "paint": args.paint,
        "setup_s": setup_s, "prefetched_before_start": prefetched, "load_average": list(os.getloadavg()),
        "start_call_s": start_call_s, "first_prediction_s": first_s, "stroke_to_prediction_s": stroke_s,
        "prediction_changed": changed(), "stall_ms": stalls,
        "dice_shown": float(2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1)),
        "screenshots": shots, "status": w.status.text(), "showing": w.showing.text(),
    }
    (out / "forest_live.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps(report, indent=2, default=float))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
