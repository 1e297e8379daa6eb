"""What live previews cost training on a large image; prints (and writes) one JSON object.

The engine promises that timed previews take at most ~15 % of the training time, whatever the image
size (it stretches the interval when a preview is slow). This measures it as a person sees it: the
iterations per wall-clock second of a run that previews the whole 1344 x 1024 image (what the Train
panel asks for when the image is in view) against runs without previews, in one process, one after
the other (A, B, A: a load change during the run shows as a difference between the two A runs, which
the JSON reports). Interleaving the runs step by step would not do: the preview schedule runs on wall
time, so the other runs' steps would count as time between previews.

    python benchmarks/preview_overhead.py --threads 1 --out benchmarks/results/preview_overhead.json
    python benchmarks/preview_overhead.py --image ../shared/data/nuclei_fluo_nih3t3/images/dna-0.png
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_labelfx.annotations import LabelKind, TrainingItem  # noqa: E402
from napari_labelfx.core.normalize import percentile_normalise  # noqa: E402
from napari_labelfx.engine import TrainConfig, Trainer, UpdateKind  # noqa: E402


def make_item(path: str | None, shape: tuple[int, int]) -> TrainingItem:
    """A real image with its mask (``masks/<stem>.tif`` beside ``images/``), or synthetic disks."""
    if path:
        import tifffile
        from skimage.io import imread

        img = np.asarray(imread(path), np.float32)
        img = img if img.ndim == 2 else img[..., :3].mean(-1)
        p = Path(path)
        mask = (tifffile.imread(p.parent.parent / "masks" / f"{p.stem}.tif") > 0).astype(np.int64)
        return TrainingItem(percentile_normalise(img[None]), mask, LabelKind.STRONG, name=p.stem)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.int64)
    for _ in range(shape[0] * shape[1] // 3000):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(6, 20)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    image = (0.2 + 0.6 * mask + rng.normal(0, 0.15, shape)).astype(np.float32)[None]
    return TrainingItem(image, mask, LabelKind.STRONG, name="synthetic")


def run(item: TrainingItem, iterations: int, preview_every_s: float) -> dict:
    """Train ``iterations`` steps; wall-clock rate, the engine's own preview share, previews made."""
    cfg = TrainConfig(method="supervised", iterations=iterations, device="cpu", val_fraction=0.0,
                      log_every=10, preview_every_s=preview_every_s)
    trainer = Trainer(cfg, [item], ["background", "object"])
    if preview_every_s > 0:
        # the whole image, as the panel requests it when the image is in view
        trainer.request_preview(0, tuple(slice(0, d) for d in item.image.shape[1:]))
    t0, t_first, previews, last = time.perf_counter(), None, 0, None
    for upd in trainer.updates():
        if upd.kind == UpdateKind.PROGRESS:
            if t_first is None:  # from the first report on: model build and first steps are not previews
                t_first, it_first = time.perf_counter(), upd.iteration
            last = upd
        elif upd.kind == UpdateKind.PREVIEW:
            previews += 1
        elif upd.kind == UpdateKind.FAILED:
            raise RuntimeError(upd.reason)
    t_end = time.perf_counter()
    return {"iterations": iterations, "seconds": t_end - t0, "previews": previews,
            "wall_its_per_s": (iterations - it_first) / max(t_end - t_first, 1e-9),
            "engine_preview_share": getattr(last, "preview_share", None),
            "panel_its_per_s": getattr(last, "wall_its_per_s", None), "step_its_per_s": getattr(last, "its_per_s", None)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default=None, help="a dataset image (default: synthetic disks)")
    p.add_argument("--shape", type=int, nargs=2, default=(1024, 1344), help="synthetic image shape (Y X)")
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--every", type=float, default=3.0, help="preview interval of the previewing run (s)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    item = make_item(args.image, tuple(args.shape))
    runs = {"no_preview_1": run(item, args.iterations, 0.0),
            "preview": run(item, args.iterations, args.every),
            "no_preview_2": run(item, args.iterations, 0.0)}
    base = np.mean([runs["no_preview_1"]["wall_its_per_s"], runs["no_preview_2"]["wall_its_per_s"]])
    report = {
        "image": args.image or f"synthetic {args.shape[0]}x{args.shape[1]}", "shape": list(item.image.shape),
        "preview_every_s": args.every, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()), "python": platform.python_version(), "runs": runs,
        "ratio": float(runs["preview"]["wall_its_per_s"] / base),
        "baseline_drift": float(runs["no_preview_2"]["wall_its_per_s"] / runs["no_preview_1"]["wall_its_per_s"]),
        "target": "ratio >= 0.85 (previews take at most 15 % of training time)",
    }
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
