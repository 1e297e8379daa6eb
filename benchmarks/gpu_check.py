"""The prepared GPU check (issue 16): one short run that tells whether labelfx works and is fast on a GPU.

Steps, each timed and recorded in one JSON summary (printed last; also written to ``$OUT/gpu_check.json``
when ``OUT`` is set, or to ``--json``):

1. ``environment``: Python, torch, CUDA, the GPU(s), which optional packages import.
2. ``train_supervised`` and ``train_mean_teacher``: CUDA training with mixed precision (``supervised``;
   ``mlds-mt``: a student, deep-supervision heads and an EMA teacher) on synthetic nuclei images;
   iterations per second, losses, peak GPU memory, and the model folder loaded back.
3. ``inference_vs_monai``: our tiled predictor against MONAI's ``sliding_window_inference`` on the same
   network, the same normalised image, window, overlap, batch, Gaussian blending and float16 autocast;
   seconds, megapixels per second, ratio, and the share of equal labels.
4. ``distributed_prediction``: ``inference.distributed.predict_distributed`` with one dask worker per GPU
   on a Zarr image, against the single-process predictor (time; labels equal?).

A step that cannot run (a package that does not import, no CUDA) is recorded as ``skipped`` with the
reason; one that fails as ``failed`` with the error; the next step runs either way. ``--budget-s`` skips
the steps that would start after that many seconds. ``benchmarks/gpu_check.sh`` picks the Python with
CUDA torch and installs carried wheels first; ``--device cpu --quick`` is the small CPU run the test makes.

    bash benchmarks/gpu_check.sh                          # on the GPU machine, about 2-3 minutes
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run as a script from anywhere: the working tree's napari_labelfx
    sys.path.insert(0, str(ROOT / "src"))

#: Packages whose absence skips a step (and what for).
OPTIONAL = {"monai": "inference_vs_monai", "dask": "distributed_prediction", "distributed": "distributed_prediction",
            "zarr": "distributed_prediction"}

#: Sizes of the full run (one GPU) and of ``--quick`` (the CPU test).
SIZES = {
    "full": {"preset": "medium", "model": {}, "images": 4, "size": 512, "iters": 300, "iters_mt": 150, "batch": 16,
             "patch": 256, "infer": 4096, "dist": 4096, "block": 2048},
    "quick": {"preset": "small", "model": {"depth": 2, "width": 8}, "images": 2, "size": 64, "iters": 3,
              "iters_mt": 3, "batch": 2, "patch": 32, "infer": 96, "dist": 96, "block": 64},
}


def _log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _version(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any import failure means the step that needs it is skipped
        return None
    return str(getattr(module, "__version__", "?"))


class Skip(Exception):
    """A step that cannot run here; the message says why."""


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- data ----------------------------------------------------------------------------------------
def _items(n: int, size: int, unlabelled: int = 0) -> list[Any]:
    """Synthetic nuclei images (normalised) with their full masks; ``unlabelled`` more without a mask."""
    from napari_labelfx._sample_data import make_nuclei_2d
    from napari_labelfx.annotations import LabelKind, TrainingItem
    from napari_labelfx.core.normalize import percentile_normalise

    items = []
    for i in range(n + unlabelled):
        d = make_nuclei_2d(seed=i, size=size)
        image = percentile_normalise(d["image"][None].astype(np.float32))
        target = (d["strong"] > 0).astype(np.int64) if i < n else None
        items.append(TrainingItem(image, target, LabelKind.STRONG if target is not None else LabelKind.NONE,
                                  name=f"nuclei{i}"))
    return items


def _big_image(side: int, seed: int = 100) -> np.ndarray:
    """A (1, side, side) normalised image: synthetic nuclei tiles (a few distinct tiles, repeated)."""
    from napari_labelfx._sample_data import make_nuclei_2d
    from napari_labelfx.core.normalize import percentile_normalise

    tile = min(side, 512)
    tiles = [make_nuclei_2d(seed=seed + k, size=tile)["image"] for k in range(4)]
    reps = -(-side // tile)
    rows = [np.concatenate([tiles[(r + c) % 4] for c in range(reps)], axis=1) for r in range(reps)]
    image = np.concatenate(rows, axis=0)[:side, :side]
    return percentile_normalise(image[None].astype(np.float32))


# -- steps ---------------------------------------------------------------------------------------
def environment(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
        "packages": {name: _version(name) for name in ("numpy", "monai", "dask", "distributed", "zarr", "tifffile")},
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None
    info["missing"] = sorted(name for name in OPTIONAL if info["packages"].get(name) is None)
    try:  # the library itself needs zarr and dask (core dependencies)
        importlib.import_module("napari_labelfx.inference")
        importlib.import_module("napari_labelfx.engine.trainer")
    except ImportError as exc:
        raise RuntimeError(f"napari_labelfx does not import with {sys.executable}: {exc}; on the GPU machine "
                           "carry the wheels it lacks (bash benchmarks/gpu_check_wheels.sh here, then "
                           "run(carry=['.whl'], ...))") from None
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available to this Python (a CPU-only torch, or no GPU): "
                           f"{sys.executable} has torch {torch.__version__}")
    return info


def _train(args: argparse.Namespace, state: dict[str, Any], method: str, iters: int, unlabelled: int) -> dict[str, Any]:
    import torch

    from napari_labelfx.engine import TrainConfig
    from napari_labelfx.engine.factory import make_trainer
    from napari_labelfx.engine.updates import UpdateKind
    from napari_labelfx.inference import Predictor

    s = state["sizes"]
    out = Path(state["tmp"]) / f"model_{method}"
    cfg = TrainConfig(method=method, preset=s["preset"], model=dict(s["model"]), iterations=iters,
                      batch_size=s["batch"], patch_size=(s["patch"],) * 2, device=args.device, amp=True,
                      val_fraction=0.1 if not args.quick else 0.0, val_every=max(1, iters // 2),
                      log_every=max(1, iters // 10), preview_every_s=0, output_dir=str(out), seed=0)
    items = _items(s["images"], s["size"], unlabelled)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer = make_trainer(cfg, items, ["background", "nucleus"])
    t0 = time.perf_counter()
    amp = None
    for upd in trainer.updates():
        if upd.kind == UpdateKind.STARTED:
            amp = bool(upd.amp)
        elif upd.kind == UpdateKind.FAILED:
            raise RuntimeError(upd.reason)
    _sync(args.device)
    seconds = time.perf_counter() - t0
    result = trainer.result
    train = [h for h in result.history if h["kind"] == "train"]
    its = [h["its_per_s"] for h in train[1:]] or [h["its_per_s"] for h in train]  # the first window holds warm-up
    folder = result.best_dir or result.last_dir
    Predictor.from_folder(folder, device=args.device)  # the model folder loads back
    state.setdefault("models", {})[method] = str(folder)
    row = {"method": method, "networks": sorted(trainer.models), "amp": amp, "device": str(trainer.device),
           "iterations": result.iterations, "batch": s["batch"], "patch": s["patch"], "seconds": round(seconds, 2),
           "its_per_s_median": round(float(np.median(its)), 2) if its else None,
           "loss_first": train[0]["loss"] if train else None, "loss_last": train[-1]["loss"] if train else None,
           "best_val_loss": result.best_val_loss, "model_folder": str(folder)}
    if args.device.startswith("cuda"):
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if args.device.startswith("cuda") and not amp:
        raise RuntimeError("mixed precision was not used on CUDA")
    return row


def train_supervised(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    return _train(args, state, "supervised", state["sizes"]["iters"], 0)


def train_mean_teacher(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    return _train(args, state, "mlds-mt", state["sizes"]["iters_mt"], 1)


def _model_folder(state: dict[str, Any]) -> str:
    folder = (state.get("models") or {}).get("supervised")
    if folder is None:
        raise Skip("no model: train_supervised did not finish")
    return folder


def inference_vs_monai(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    if _version("monai") is None:
        raise Skip("monai does not import here (pip install 'napari-labelfx[bench]', or carry its wheel: "
                   "benchmarks/gpu_check_wheels.sh)")
    import torch
    from monai.inferers import sliding_window_inference

    from napari_labelfx.inference import Predictor

    predictor = Predictor.from_folder(_model_folder(state), device=args.device, tta=False)
    side = state["sizes"]["infer"]
    image = _big_image(side)
    roi = tuple(int(r) for r in predictor.roi_for(image.shape[1:]))
    net = predictor.model
    dev = torch.device(args.device)
    use_amp = dev.type == "cuda"

    def ours(img: np.ndarray) -> np.ndarray:
        return predictor(img, normalise=False, tta=False).labels

    def monai(img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(img)[None].to(dev)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            logits = sliding_window_inference(x, roi, predictor.batch_size, lambda t: net(t).logits,
                                              overlap=predictor.overlap, mode="gaussian")
        return logits.float().softmax(1).argmax(1)[0].to(torch.uint8).cpu().numpy()

    net.eval()
    warm = image[:, : min(side, 2 * roi[0]), : min(side, 2 * roi[1])]
    ours(warm), monai(warm)  # CUDA context, cuDNN autotuning, allocator: not part of the timing
    times: dict[str, list[float]] = {"ours": [], "monai": []}
    labels: dict[str, np.ndarray] = {}
    for _ in range(1 if args.quick else 3):
        for name, fn in (("ours", ours), ("monai", monai)):
            _sync(args.device)
            t0 = time.perf_counter()
            labels[name] = fn(image)
            _sync(args.device)
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    mpix = side * side / 1e6
    return {"image": [side, side], "roi": list(roi), "overlap": predictor.overlap, "batch": predictor.batch_size,
            "amp": use_amp, "repeats": len(times["ours"]),
            "seconds_ours": round(best["ours"], 3), "seconds_monai": round(best["monai"], 3),
            "mpix_per_s_ours": round(mpix / best["ours"], 2), "mpix_per_s_monai": round(mpix / best["monai"], 2),
            "ratio_ours_over_monai_time": round(best["ours"] / best["monai"], 3),
            "equal_labels": round(float(np.mean(labels["ours"].astype(np.int64) == labels["monai"])), 5),
            "monai": _version("monai")}


def distributed_prediction(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    if not (ROOT / "src" / "napari_labelfx" / "inference" / "distributed.py").is_file():
        raise Skip("not available: napari_labelfx/inference/distributed.py is not in this tree")
    missing = [n for n in ("dask", "distributed", "zarr") if _version(n) is None]
    if missing:
        raise Skip(f"{', '.join(missing)} do(es) not import here (carry the wheels: benchmarks/gpu_check_wheels.sh)")
    try:
        from napari_labelfx.inference.distributed import predict_distributed
    except ImportError as exc:
        raise Skip(f"not available: {exc}") from None
    import torch
    import zarr

    from napari_labelfx.inference import Predictor

    folder = _model_folder(state)
    side = state["sizes"]["dist"]
    image = _big_image(side, seed=200)[0]
    src = Path(state["tmp"]) / "dist_input.zarr"
    chunk = min(side, 1024)
    arr = zarr.create_array(str(src), shape=image.shape, chunks=(chunk, chunk), dtype="float32")
    arr[:] = image
    workers = max(1, torch.cuda.device_count()) if args.device.startswith("cuda") else 1
    # the single-process predictor on the same (already normalised) pixels: the reference
    predictor = Predictor.from_folder(folder, device=args.device, tta=False)
    _sync(args.device)
    t0 = time.perf_counter()
    reference = predictor(image, normalise=True, tta=False).labels
    _sync(args.device)
    t_single = time.perf_counter() - t0
    out = Path(state["tmp"]) / "dist_labels.zarr"
    t0 = time.perf_counter()
    # a local cluster of worker processes, one per GPU (the quick CPU run: threads, for speed)
    info = predict_distributed(folder, str(src), str(out), axes="YX", workers=workers, processes=not args.quick,
                               device=args.device, tta=False, block=state["sizes"]["block"])
    t_dist = time.perf_counter() - t0
    labels = np.asarray(zarr.open_array(str(out), mode="r")[:])
    return {"image": [side, side], "workers": workers, "processes": not args.quick, "block": state["sizes"]["block"],
            "seconds_distributed": round(t_dist, 2), "seconds_single_process": round(t_single, 2),
            "blocks": info.get("blocks"), "labels_equal_single_process": bool(np.array_equal(labels, reference)),
            "equal_fraction": round(float(np.mean(labels == reference)), 6)}


STEPS: list[tuple[str, Callable[[argparse.Namespace, dict[str, Any]], dict[str, Any]]]] = [
    ("environment", environment),
    ("train_supervised", train_supervised),
    ("train_mean_teacher", train_mean_teacher),
    ("inference_vs_monai", inference_vs_monai),
    ("distributed_prediction", distributed_prediction),
]


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """Run every step (see the module docstring); the summary dict."""
    t_start = time.perf_counter()
    summary: dict[str, Any] = {"check": "gpu_check", "device": args.device, "quick": bool(args.quick),
                               "budget_s": args.budget_s, "steps": {}}
    with tempfile.TemporaryDirectory(prefix="labelfx_gpu_check_") as tmp:
        state: dict[str, Any] = {"tmp": tmp, "sizes": SIZES["quick" if args.quick else "full"]}
        for name, step in STEPS:
            elapsed = time.perf_counter() - t_start
            if args.only and name not in args.only and name != "environment":
                continue
            if elapsed > args.budget_s:
                summary["steps"][name] = {"status": "skipped", "reason": f"time budget: {elapsed:.0f} s gone"}
                continue
            _log(f"{name} ...")
            t0 = time.perf_counter()
            try:
                row = {"status": "ok", **step(args, state)}
            except Skip as exc:
                row = {"status": "skipped", "reason": str(exc)}
            except Exception as exc:  # noqa: BLE001 - record it and go on with the next step
                row = {"status": "failed", "error": f"{exc.__class__.__name__}: {exc}",
                       "traceback": traceback.format_exc(limit=8)}
            row["step_seconds"] = round(time.perf_counter() - t0, 2)
            summary["steps"][name] = row
            _log(f"{name}: {row['status']} ({row['step_seconds']} s)")
            if name == "environment" and row["status"] != "ok":
                break  # no usable torch/CUDA: nothing else can run
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    statuses = [r["status"] for r in summary["steps"].values()]
    summary["ok"] = "failed" not in statuses
    summary["skipped"] = [n for n, r in summary["steps"].items() if r["status"] == "skipped"]
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    p.add_argument("--budget-s", type=float, default=240.0, help="no step starts after this many seconds")
    p.add_argument("--only", nargs="*", default=None, help="run only these steps (and environment)")
    p.add_argument("--json", default=None, help="also write the summary here (default: $OUT/gpu_check.json)")
    args = p.parse_args(argv)
    if not args.device.startswith("cuda"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(1)
    summary = run_check(args)
    text = json.dumps(summary, indent=1, default=str)
    target = args.json or (str(Path(os.environ["OUT"]) / "gpu_check.json") if os.environ.get("OUT") else None)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text + "\n")
    print(text)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
