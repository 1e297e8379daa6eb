"""Benchmark 7a/7b: event-loop stalls of napari while the Train panel trains, and time to first prediction.

Run under a (virtual) display:  xvfb-run -a .venv/bin/python benchmarks/ui_stall.py [--seconds 60]

For each runner mode (process, thread) the Train panel trains the scribble method on a 512x512 sample
while a 10 ms QTimer records how late each tick fires (the stall). The reference is the same training run
on the main thread, one step per event-loop turn, in the same run. Prints JSON: p50/p99/max stall (ms),
training iterations per second, their ratio to the main-thread reference, and seconds from Start to the
first prediction layer update.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _setup_viewer(size: int):
    import napari

    from napari_labelfx._sample_data import make_nuclei_2d

    d = make_nuclei_2d(seed=0, size=size)
    viewer = napari.Viewer(show=True)
    viewer.add_image(d["image"], name="nuclei")
    viewer.add_labels(d["scribbles"], name="scribbles", metadata={"labelfx_kind": "scribble"})
    return viewer


class StallMeter:
    """A 10 ms QTimer; stall = actual interval - 10 ms.

    With ``trace=True`` a watchdog thread samples the main thread's Python stack whenever the timer has
    not fired for ``trace_after_ms``; ``stop()`` then names where the long stalls were spent.
    """

    def __init__(self, trace: bool = False, trace_after_ms: float = 120.0) -> None:
        from qtpy.QtCore import QTimer

        self.intervals: list[float] = []
        self.times: list[float] = []
        self._last = None
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self._trace = trace
        self._trace_after = trace_after_ms / 1000
        self._samples: list[tuple[float, list[str]]] = []  # (tick time the stall started after, stack)
        self._watch_stop = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.intervals.append(now - self._last)
            self.times.append(now)
        self._last = now

    def start(self) -> None:
        self._last = None
        self.timer.start()
        if self._trace:
            import threading

            self._watch_stop = threading.Event()
            main = threading.main_thread().ident
            threading.Thread(target=self._watch, args=(main,), daemon=True, name="stall-tracer").start()

    def pause(self) -> None:
        """Stop measuring while the benchmark itself blocks the loop (a screenshot); ``resume`` goes on."""
        self.timer.stop()
        self._last = None

    def resume(self) -> None:
        self.timer.start()

    def _watch(self, main_ident: int) -> None:
        import traceback

        while not self._watch_stop.wait(0.02):
            last = self._last
            if last is None or time.perf_counter() - last < self._trace_after:
                continue
            frame = sys._current_frames().get(main_ident)
            if frame is None:
                continue
            stack = [f"{Path(fs.filename).name}:{fs.lineno} {fs.name}" for fs in traceback.extract_stack(frame)]
            self._samples.append((last, stack[-14:]))

    def stop(self, after: float | None = None, top: int = 5) -> dict:
        """Stall statistics; with ``after`` (a perf_counter time) also those of ticks after it; with tracing,
        the ``top`` longest stalls with the stack most often sampled in each."""
        self.timer.stop()
        if self._watch_stop is not None:
            self._watch_stop.set()
        out = self._stats(np.asarray(self.intervals))
        if after is not None:
            keep = np.asarray(self.times) > after
            out["after_start"] = self._stats(np.asarray(self.intervals)[keep])
        if self._trace:
            out["traced"] = self._traced(top)
        return out

    def _traced(self, top: int) -> list[dict]:
        """The longest stalls, each with its most frequent sampled stack (innermost frame last)."""
        from collections import Counter

        starts = np.asarray(self.times) - np.asarray(self.intervals)
        by_stall: dict[float, Counter] = {}
        for last, stack in self._samples:
            by_stall.setdefault(last, Counter())[tuple(stack)] += 1
        longest = sorted(by_stall, key=lambda s: -float(np.asarray(self.intervals)[np.isclose(starts, s)].max(initial=0)))
        out = []
        for s in longest[:top]:
            hit = np.isclose(starts, s)
            ms = float(np.asarray(self.intervals)[hit].max(initial=0)) * 1000 - 10
            stack, n = by_stall[s].most_common(1)[0]
            out.append({"stall_ms": round(ms, 1), "samples": int(sum(by_stall[s].values())), "stack": list(stack),
                        "share_of_samples": round(n / sum(by_stall[s].values()), 2)})
        return out

    @staticmethod
    def _stats(intervals: np.ndarray) -> dict:
        st = np.maximum(intervals - 0.010, 0.0) * 1000
        if st.size == 0:
            return {"p50_ms": None, "p99_ms": None, "max_ms": None, "ticks": 0}
        return {"p50_ms": round(float(np.percentile(st, 50)), 2), "p99_ms": round(float(np.percentile(st, 99)), 2),
                "max_ms": round(float(st.max()), 2), "ticks": int(st.size)}


def _wait(app, seconds: float, cond=None) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        app.processEvents()
        if cond is not None and cond():
            return
        time.sleep(0.002)


def run_widget(mode: str, seconds: float, size: int, iters: int, trace: bool = False) -> dict:
    from qtpy.QtWidgets import QApplication

    from napari_labelfx.engine.updates import UpdateKind
    from napari_labelfx.widgets.train import TrainWidget

    viewer = _setup_viewer(size)
    app = QApplication.instance()
    w = TrainWidget(viewer, runner_mode=mode)
    viewer.window.add_dock_widget(w, name="Train")
    w.method_combo.setCurrentText("scribble")
    w.iters_spin.setValue(iters)
    w.patch_spin.setValue(128)
    w.batch_spin.setValue(4)
    w.refresh_spin.setValue(3.0)
    progress: list[tuple[float, int]] = []
    orig = w.apply_update

    def spy(upd):
        if upd.kind == UpdateKind.PROGRESS:
            progress.append((time.monotonic(), upd.iteration))
        orig(upd)

    w.apply_update = spy
    _wait(app, 1.0)
    meter = StallMeter(trace=trace)
    meter.start()
    t0 = time.monotonic()
    w.start()
    t_started = time.perf_counter() + 2.0  # the Start click itself (process start, result layers)
    _wait(app, seconds)
    stalls = meter.stop(after=t_started)
    first = w.first_preview_s
    w.runner.terminate(timeout=10)
    # iterations/s over the steady part (after the first logged iteration)
    its = None
    if len(progress) >= 2:
        (ta, ia), (tb, ib) = progress[0], progress[-1]
        its = (ib - ia) / max(tb - ta, 1e-9)
    viewer.close()
    return {"mode": mode, **stalls, "its_per_s": its, "first_prediction_s": first,
            "previews": w.preview_count, "seconds": round(time.monotonic() - t0, 1)}


def run_main_thread(seconds: float, size: int, iters: int) -> dict:
    """Reference: the same trainer stepped on the GUI thread, one step per event-loop turn."""
    from qtpy.QtWidgets import QApplication

    from napari_labelfx.engine import TrainConfig, Trainer
    from napari_labelfx.engine.updates import UpdateKind
    from napari_labelfx.widgets import _layers

    viewer = _setup_viewer(size)
    app = QApplication.instance()
    items, names, ml = _layers.collect_items(viewer, viewer.layers["nuclei"], [viewer.layers["scribbles"]])
    cfg = TrainConfig(method="scribble", preset="small", iterations=iters, patch_size=(128, 128), batch_size=4,
                      preview_every_s=3.0)
    trainer = Trainer(cfg, items, names, multilabel=ml)
    gen = trainer.updates()
    progress: list[tuple[float, int]] = []
    meter = StallMeter()
    _wait(app, 1.0)
    meter.start()
    t0 = time.monotonic()
    first = None
    while time.monotonic() - t0 < seconds:
        try:
            upd = next(gen)
        except StopIteration:
            break
        if upd.kind == UpdateKind.PROGRESS:
            progress.append((time.monotonic(), upd.iteration))
        if upd.kind == UpdateKind.PREVIEW:
            _layers.apply_preview(viewer, viewer.layers["nuclei"], upd.labels, upd.confidence, upd.region)
            if first is None:
                first = time.monotonic() - t0
        app.processEvents()
    trainer.control.stop()
    stalls = meter.stop()
    its = None
    if len(progress) >= 2:
        (ta, ia), (tb, ib) = progress[0], progress[-1]
        its = (ib - ia) / max(tb - ta, 1e-9)
    viewer.close()
    return {"mode": "main-thread", **stalls, "its_per_s": its, "first_prediction_s": first}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=100000, help="large: training runs for the whole window")
    ap.add_argument("--modes", default="process,thread")
    ap.add_argument("--trace", action="store_true", help="name the stacks of the longest stalls (panel runs)")
    args = ap.parse_args()
    if not os.environ.get("DISPLAY"):
        print("run under a display, e.g. xvfb-run -a", file=sys.stderr)
        return 2
    results = [run_main_thread(args.seconds, args.size, args.iters)]
    ref = results[0]["its_per_s"]
    for mode in args.modes.split(","):
        r = run_widget(mode, args.seconds, args.size, args.iters, args.trace)
        r["its_ratio_vs_main_thread"] = round(r["its_per_s"] / ref, 3) if (ref and r["its_per_s"]) else None
        results.append(r)
    out = {"benchmark": "ui_stall", "image": f"{args.size}x{args.size}", "seconds": args.seconds,
           "cpu_count": os.cpu_count(), "targets": {"p99_ms": 50, "max_ms": 250, "its_ratio": 0.8,
                                                    "first_prediction_s": 10}, "results": results}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
