"""Engine overhead benchmark; prints one JSON object.

Iterations per second of :class:`~napari_labelfx.engine.Trainer` against a bare PyTorch loop on the
same model, batch size, patch size, device, optimizer (``torch.optim.AdamW``, same learning rate and
weight decay) and loss (cross-entropy + soft Dice). The bare loop feeds pre-cut patches that already
sit on the device, with no sampling, augmentation, scheduling or bookkeeping: what the engine adds
on top of that is its overhead. The loops run in the same process taking turns every 10 steps
(these machines are shared and noisy: a load change then hits all loops alike) and their total
times are compared; the target is ``ratio >= 0.9``.

The trainer is measured twice: without live previews (the pure engine) and with the default
preview every 3 s of a 512 x 512 image (what the GUI does).

Examples
--------
python benchmarks/engine_overhead.py                         # CPU or GPU, whichever "auto" picks
python benchmarks/engine_overhead.py --device cuda --iterations 300
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_labelfx.annotations import LabelKind, TrainingItem  # noqa: E402
from napari_labelfx.core.device import autocast_context, select_device  # noqa: E402
from napari_labelfx.engine import TrainConfig, Trainer, UpdateKind  # noqa: E402
from napari_labelfx.methods import losses  # noqa: E402
from napari_labelfx.models import build_model  # noqa: E402


def synthetic_item(size: int, seed: int = 0) -> TrainingItem:
    """A normalised image of random bright disks with its full mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), np.int64)
    for _ in range(size * size // 2000):
        cy, cx = rng.integers(0, size, 2)
        r = rng.integers(4, 12)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    image = (0.2 + 0.6 * mask + rng.normal(0, 0.15, (size, size))).astype(np.float32)[None]
    return TrainingItem(image, mask, LabelKind.STRONG, name="synthetic")


def trainer_steps(cfg: TrainConfig, item: TrainingItem) -> Iterator[int]:
    """Run the trainer; yield the iteration at every PROGRESS update (every ``log_every`` steps)."""
    trainer = Trainer(cfg, [item], ["background", "object"])
    for upd in trainer.updates():
        if upd.kind == UpdateKind.PROGRESS:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            yield upd.iteration
        elif upd.kind == UpdateKind.FAILED:
            raise RuntimeError(upd.reason)


def bare_steps(cfg: TrainConfig, model_config, item: TrainingItem) -> Iterator[int]:
    """A plain PyTorch loop on pre-cut device-resident patches; yields every ``log_every`` steps."""
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(model_config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    rng = np.random.default_rng(cfg.seed)
    ph, pw = cfg.patch_size
    h, w = item.image.shape[1:]
    batches = []
    for _ in range(8):  # a few distinct batches, cycled
        ys, xs = rng.integers(0, h - ph + 1, cfg.batch_size), rng.integers(0, w - pw + 1, cfg.batch_size)
        x = np.stack([item.image[:, y:y + ph, x0:x0 + pw] for y, x0 in zip(ys, xs)])
        t = np.stack([item.target[y:y + ph, x0:x0 + pw] for y, x0 in zip(ys, xs)])
        batches.append((torch.from_numpy(x).to(device), torch.from_numpy(t).to(device)))
    for it in range(cfg.iterations):
        x, t = batches[it % len(batches)]
        with autocast_context(device, amp):
            logits = model(x).logits
            loss = losses.cross_entropy(logits, t) + losses.soft_dice_loss(logits, t)
        opt.zero_grad(set_to_none=True)
        if amp:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if (it + 1) % cfg.log_every == 0:
            if device.type == "cuda":
                torch.cuda.synchronize()
            yield it + 1


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="small")
    p.add_argument("--iterations", type=int, default=None, help="per loop (default: 80 on CPU, 600 on GPU)")
    p.add_argument("--warmup", type=int, default=None, help="iterations excluded from timing")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, nargs=2, default=(128, 128))
    p.add_argument("--image", type=int, default=512, help="edge of the synthetic training image")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    gpu = device.type != "cpu"
    iterations = args.iterations or (600 if gpu else 80)
    warmup = args.warmup or (50 if gpu else 10)
    log_every = 10
    if iterations <= warmup or warmup % log_every or iterations % log_every:
        p.error("iterations and warmup must be multiples of 10 with iterations > warmup")
    item = synthetic_item(args.image)
    common = dict(method="supervised", preset=args.preset, iterations=iterations, batch_size=args.batch,
                  patch_size=tuple(args.patch), device=str(device), val_fraction=0.0, log_every=log_every,
                  warmup_iterations=5)
    engine_cfg = TrainConfig(**common, preview_every_s=0)
    preview_cfg = TrainConfig(**common, preview_every_s=3.0)
    model_config = Trainer(engine_cfg, [item], ["background", "object"]).model_config
    # The loops run side by side in chunks of ``log_every`` steps, taking turns, so that a change of
    # the machine's load hits all of them alike; each gets the sum of its chunks' times.
    loops = {
        "bare": bare_steps(engine_cfg, model_config, item),
        "trainer": trainer_steps(engine_cfg, item),
        "trainer_with_preview": trainer_steps(preview_cfg, item),
    }
    for loop in loops.values():  # warm-up (allocator, first kernels, first preview)
        for _ in range(warmup // log_every):
            next(loop)
    seconds = {k: 0.0 for k in loops}
    chunk_its: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range((iterations - warmup) // log_every):
        for name, loop in loops.items():
            t0 = time.perf_counter()
            next(loop)
            dt = time.perf_counter() - t0
            seconds[name] += dt
            chunk_its[name].append(log_every / dt)
    timed = iterations - warmup
    rate = {k: timed / v for k, v in seconds.items()}
    ratio = rate["trainer"] / rate["bare"]
    result = {
        "benchmark": "engine_overhead",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "preset": args.preset,
        "model": model_config.to_dict(),
        "batch": args.batch,
        "patch": list(args.patch),
        "iterations_per_loop": iterations,
        "timed_iterations": iterations - warmup,
        "its_per_s": {k: round(v, 3) for k, v in rate.items()},
        "chunk_its_per_s_min_max": {k: [round(min(v), 2), round(max(v), 2)] for k, v in chunk_its.items()},
        "ratio": round(ratio, 3),
        "ratio_with_preview": round(rate["trainer_with_preview"] / rate["bare"], 3),
        "target": 0.9,
        "met": bool(ratio >= 0.9),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
