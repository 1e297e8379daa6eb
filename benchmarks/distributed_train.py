"""Distributed training on CPUs: 2 gloo processes against one process with the same total batch.

Runs (each in a fresh process, torch threads as named, on synthetic nuclei images, validation and previews
off so that only training is timed):

* ``1proc_1thread``: one process, one torch thread, batch ``2 * B``;
* ``2proc_1thread``: ``torchrun --standalone --nproc-per-node 2`` (what ``labelfx train --nproc 2`` starts),
  one thread each, batch ``B`` per process (``2 * B`` in all), DistributedDataParallel over gloo;
* ``1proc_2threads``: one process with two torch threads, batch ``2 * B`` (the same two cores as the
  two processes use).

For each: iterations per second of the training loop (rank 0's clock), samples per second, the loss curve
(the mean over ranks of each report window), and for the 2-process run whether both ranks ended with
identical weights (a hash of every tensor). This 2-core machine is shared: the load average before and
after is recorded, and the ratios are of runs made one after the other in the same invocation.

    .venv/bin/python benchmarks/distributed_train.py            # ~3 minutes; writes results/distributed_train.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _items(n: int, size: int) -> list[Any]:
    from napari_labelfx._sample_data import make_nuclei_2d
    from napari_labelfx.annotations import LabelKind, TrainingItem
    from napari_labelfx.core.normalize import percentile_normalise

    out = []
    for i in range(n):
        d = make_nuclei_2d(seed=i, size=size)
        out.append(TrainingItem(percentile_normalise(d["image"][None].astype(np.float32)),
                                (d["strong"] > 0).astype(np.int64), LabelKind.STRONG, name=f"nuclei{i}"))
    return out


def worker(args: argparse.Namespace) -> None:
    """One rank (or the single process): train, write ``rank<r>.json`` into ``args.out_dir``."""
    import torch

    torch.set_num_threads(args.threads)
    from napari_labelfx.engine import TrainConfig, distributed
    from napari_labelfx.engine.trainer import Trainer

    run = distributed.init_from_env("cpu")
    rank = 0 if run is None else run.rank
    try:
        cfg = TrainConfig(method="supervised", preset="small", iterations=args.iters, batch_size=args.batch,
                          patch_size=(args.patch, args.patch), device="cpu", val_fraction=0.0, preview_every_s=0,
                          log_every=args.log_every, val_every=10 * args.iters, seed=0, lr=1e-3)
        trainer = Trainer(cfg, _items(4, 256), ["background", "nucleus"])
        t0 = time.perf_counter()
        result = trainer.run()
        seconds = time.perf_counter() - t0
        digest = hashlib.sha1()
        for name in sorted(trainer.models):
            for key, value in sorted(trainer.models[name].state_dict().items()):
                digest.update(key.encode())
                digest.update(value.detach().cpu().numpy().tobytes())
        train = [h for h in result.history if h["kind"] == "train"]
        record = {"rank": rank, "world": 1 if run is None else run.world_size, "seconds": seconds,
                  "iterations": result.iterations, "weights_sha1": digest.hexdigest(),
                  "curve": [[h["iteration"], h["loss"]] for h in train],
                  "window_its_per_s": [h["its_per_s"] for h in train]}
        Path(args.out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        distributed.shutdown()


def _run(name: str, nproc: int, threads: int, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"labelfx_ddp_{name}_") as tmp:
        worker_args = [str(Path(__file__).resolve()), "--worker", "--out-dir", tmp, "--threads", str(threads),
                       "--batch", str(batch), "--iters", str(args.iters), "--patch", str(args.patch),
                       "--log-every", str(args.log_every)]
        if nproc == 1:
            cmd = [sys.executable, *worker_args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   "--local-addr=127.0.0.1", *worker_args]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        if os.path.exists("/sys/class/net/lo"):
            env["GLOO_SOCKET_IFNAME"] = "lo"
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, timeout=1800)
        wall = time.perf_counter() - t0
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(nproc)]
    main = ranks[0]
    its = main["iterations"] / main["seconds"]
    curve = main["curve"]
    return {
        "processes": nproc, "threads_per_process": threads, "batch_per_process": batch, "total_batch": batch * nproc,
        "iterations": main["iterations"], "train_seconds": round(main["seconds"], 2), "wall_seconds": round(wall, 2),
        "its_per_s": round(its, 3), "samples_per_s": round(its * batch * nproc, 2),
        # after the first report window (start-up: DDP's first traversal, allocations)
        "its_per_s_steady": round(float(np.median(main["window_its_per_s"][1:] or main["window_its_per_s"])), 3),
        "loss_curve": [[int(i), round(float(v), 4)] for i, v in curve],
        "final_loss": round(float(np.mean([v for _, v in curve[-3:]])), 4),
        "weights_identical_across_ranks": len({r["weights_sha1"] for r in ranks}) == 1 if nproc > 1 else None,
        "load_avg_1min_before": round(load_before[0], 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=4, help="batch per process of the 2-process run (B)")
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--json", default=str(RESULTS / "distributed_train.json"))
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    b = args.batch
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = os.getloadavg()
    runs = {}
    for name, nproc, threads, batch in (("1proc_1thread", 1, 1, 2 * b), ("2proc_1thread", 2, 1, b),
                                        ("1proc_2threads", 1, 2, 2 * b)):
        print(f"[distributed_train] {name} ...", file=sys.stderr, flush=True)
        runs[name] = _run(name, nproc, threads, batch, args)
        print(f"[distributed_train] {name}: {runs[name]['its_per_s']} it/s", file=sys.stderr, flush=True)
    import torch

    two = runs["2proc_1thread"]["its_per_s"]
    steady = {k: v["its_per_s_steady"] for k, v in runs.items()}
    summary = {
        "benchmark": "distributed_train", "started": started, "command": "benchmarks/distributed_train.py "
        + " ".join(sys.argv[1:]), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "machine_note": "a 2-core machine shared with other work: see the load averages",
        "load_avg_start": [round(x, 2) for x in load_start], "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "settings": {"method": "supervised", "preset": "small", "patch": args.patch, "iterations": args.iters,
                     "images": "4 synthetic nuclei images, 256 x 256", "validation": "off", "previews": "off"},
        "runs": runs,
        "ratios": {"its_2proc_over_1proc_1thread": round(two / runs["1proc_1thread"]["its_per_s"], 3),
                   "its_2proc_over_1proc_2threads": round(two / runs["1proc_2threads"]["its_per_s"], 3),
                   "steady_2proc_over_1proc_1thread": round(steady["2proc_1thread"] / steady["1proc_1thread"], 3),
                   "steady_2proc_over_1proc_2threads": round(steady["2proc_1thread"] / steady["1proc_2threads"], 3)},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary["ratios"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
