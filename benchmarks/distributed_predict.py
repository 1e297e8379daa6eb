"""Distributed prediction of a large Zarr volume: dask workers against the single-process streamer.

Cases, each in a fresh process, one after the other in one invocation (the ratios compare runs made
on the same machine minutes apart; the load average before and after each is recorded):

* ``single``: ``Predictor.predict_to_zarr`` (what ``labelfx predict`` does without ``--workers``),
  torch threads = ``--threads-single`` (default: all cores);
* ``dask1``: ``predict_distributed`` on a local cluster of 1 worker process (``--workers 1``), the
  worker using all cores (the same cores as ``single``: this is the dask overhead);
* ``dask2``: 2 worker processes, cores / 2 torch threads each;
* ``kill2`` (``--kill``): as ``dask2``, and one worker process is killed (SIGKILL) after a quarter of
  the blocks; the job must finish with the same output.

For each: wall seconds, voxels per second, peak resident memory (the process; for dask, each worker's
``ru_maxrss``), and whether labels equal the single-process labels and the confidence is within 1e-5.

The volume is synthetic (uint16 noise with bright blobs, written once to ``--workdir``), the model a
3D network of the default architecture with seeded random weights (speed does not depend on what the
weights learnt; equality is what is checked).

    .venv/bin/python benchmarks/distributed_predict.py --gb 4 --kill      # the issue's case
    .venv/bin/python benchmarks/distributed_predict.py --gb 0.25          # a quicker look
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _shape_for(gb: float) -> tuple[int, int, int]:
    """A Z, Y, X uint16 volume of about ``gb`` gigabytes (Y = X = 1024, Z grows)."""
    yx = 1024
    z = max(16, int(round(gb * 2**30 / (2 * yx * yx))))
    return z, yx, yx


def make_volume(path: Path, shape: tuple[int, int, int], chunks: tuple[int, int, int] = (16, 256, 256)) -> None:
    """Write a synthetic uint16 volume (noise + blobs) to a Zarr array, one Z slab at a time."""
    import zarr
    from scipy import ndimage

    arr = zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype=np.uint16, overwrite=True)
    rng = np.random.default_rng(0)
    for z0 in range(0, shape[0], chunks[0]):
        z1 = min(shape[0], z0 + chunks[0])
        slab = np.zeros((z1 - z0, *shape[1:]), np.float32)
        n = int(slab.size / 4000)
        idx = tuple(rng.integers(0, s, n) for s in slab.shape)
        slab[idx] = 1.0
        slab = ndimage.gaussian_filter(slab, (1.5, 3, 3)) * 4000
        arr[z0:z1] = np.clip(slab + rng.normal(400, 60, slab.shape), 0, 65535).astype(np.uint16)


def make_model(path: Path) -> None:
    """A 3D network of the default architecture with seeded random weights, as a model folder."""
    import torch

    from napari_labelfx.models import ModelConfig, build_model
    from napari_labelfx.models.checkpoint import save_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(spatial_dims=3, num_classes=2))
    save_model(path, model, {"classes": ["background", "nuclei"], "inference": {"roi_size": [32, 128, 128]}})


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    """One case in this (fresh) process; returns its record."""
    import torch

    from napari_labelfx.inference import Predictor

    work = Path(args.workdir)
    inp, model = work / "volume.zarr", work / "model"
    out = work / f"{args.case}_labels.zarr"
    conf = work / f"{args.case}_confidence.zarr"
    for p in (out, conf):
        shutil.rmtree(p, ignore_errors=True)
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"case": args.case}
    if args.case == "single":
        torch.set_num_threads(args.threads_single or cores)
        pred = Predictor.from_folder(model, device="cpu")
        pred.predict_to_zarr(_lazy(inp), out, confidence_path=conf)
        rec["peak_rss_bytes"] = {"process": _peak_rss()}
    else:
        from distributed import Client

        from napari_labelfx.inference.distributed import local_cluster, peak_memory_per_worker, predict_distributed

        workers = 1 if args.case == "dask1" else 2
        threads = max(1, cores // workers)
        with local_cluster(workers) as cluster, Client(cluster) as client:
            killed: list[int] = []
            pids = list(client.run(os.getpid).values())

            def progress(done: int, total: int) -> None:
                if args.case == "kill2" and not killed and done >= max(1, total // 4):
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])

            summary = predict_distributed(str(model), str(inp), out, client=client, threads=threads, device="cpu",
                                          confidence=conf, block=args.block, progress=progress)
            rec["peak_rss_bytes"] = peak_memory_per_worker(client)
            rec["peak_rss_bytes"]["client"] = _peak_rss()
            rec["blocks"] = summary.get("blocks")
            rec["killed_worker"] = bool(killed)
        rec["workers"] = workers
        rec["threads_per_worker"] = threads
    rec["seconds"] = time.perf_counter() - t0
    return rec


def _lazy(path: Path) -> Any:
    """The input as the CLI opens it: a lazy (dask) array with a channel axis."""
    from napari_labelfx.io.reader import read_image

    img = read_image(str(path), eager_limit=0)
    data = img.data[0] if img.multiscale else img.data
    return data[None]


def compare(work: Path, case: str) -> dict[str, Any]:
    """Labels equal to ``single``'s, and the largest confidence difference, slab by slab."""
    import zarr

    def _arr(p: Path) -> Any:
        node = zarr.open(str(p), mode="r")
        return node["0"] if isinstance(node, zarr.Group) else node

    a, b = _arr(work / "single_labels.zarr"), _arr(work / f"{case}_labels.zarr")
    ca, cb = _arr(work / "single_confidence.zarr"), _arr(work / f"{case}_confidence.zarr")
    differ, max_conf = 0, 0.0
    step = 32
    for z0 in range(0, a.shape[0], step):
        la, lb = a[z0:z0 + step], b[z0:z0 + step]
        fa, fb = ca[z0:z0 + step], cb[z0:z0 + step]
        # a label may differ only where two classes tie within rounding (confidence ~ 0.5)
        bad = (la != lb) & (np.abs(fa.astype(np.float64) - 0.5) > 1e-5)
        differ += int(bad.sum())
        max_conf = max(max_conf, float(np.abs(fa.astype(np.float64) - fb).max()))
    return {"labels_differ": differ, "max_confidence_diff": max_conf}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gb", type=float, default=4.0, help="input volume size in GB (uint16)")
    p.add_argument("--block", default=None, help="block edge(s), Z,Y,X (default: the library's)")
    p.add_argument("--kill", action="store_true", help="also run kill2 (a worker killed mid-run)")
    p.add_argument("--threads-single", type=int, default=None, help="torch threads of the single process")
    p.add_argument("--workdir", default=None, help="where the volume and outputs go (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--out", default=str(RESULTS / "distributed_predict.json"))
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.block is not None:
        sizes = tuple(int(v) for v in args.block.split(","))
        args.block = sizes[0] if len(sizes) == 1 else sizes
    if args.case:  # a child: one case, JSON on stdout
        print("RESULT " + json.dumps(run_case(args)))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="labelfx-dist-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    shape = _shape_for(args.gb)
    t0 = time.perf_counter()
    if not (work / "volume.zarr").exists():
        make_volume(work / "volume.zarr", shape)
    make_model(work / "model")
    report: dict[str, Any] = {"shape": list(shape), "dtype": "uint16", "gb": float(np.prod(shape)) * 2 / 2**30,
                              "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                              "volume_write_s": time.perf_counter() - t0, "cases": {}}
    cases = ["single", "dask1", "dask2"] + (["kill2"] if args.kill else [])
    for case in cases:
        cmd = [sys.executable, __file__, "--case", case, "--workdir", str(work)]
        if args.block is not None:
            cmd += ["--block", ",".join(map(str, np.atleast_1d(args.block)))]
        if args.threads_single:
            cmd += ["--threads-single", str(args.threads_single)]
        load0 = os.getloadavg()
        res = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if res.returncode != 0 or line is None:
            raise SystemExit(f"case {case} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        rec = json.loads(line[len("RESULT "):])
        rec["load_before"], rec["load_after"] = list(load0), list(os.getloadavg())
        rec["voxels_per_s"] = float(np.prod(shape)) / rec["seconds"]
        if case != "single":
            rec.update(compare(work, case))
        report["cases"][case] = rec
        print(json.dumps({case: rec}), flush=True)
    c = report["cases"]
    report["ratios"] = {
        "dask1_over_single_seconds": c["dask1"]["seconds"] / c["single"]["seconds"],
        "dask2_over_dask1_speed": c["dask1"]["seconds"] / c["dask2"]["seconds"],
    }
    report["target_overhead_at_most_10pct"] = report["ratios"]["dask1_over_single_seconds"] <= 1.10
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"]))
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
