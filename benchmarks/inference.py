"""Inference benchmark; prints one JSON object.

1. Throughput (voxels/s) of ``sliding_window_predict`` against MONAI's ``sliding_window_inference``
   on the same model, ROI, overlap, Gaussian blending and batch size, for a 2D and a 3D input; the
   ratio ours/monai (> 1: ours is faster). Both return softmax probabilities. MONAI is optional.
2. Peak resident memory of ``predict_to_zarr`` streaming a large uint16 Zarr volume (created chunk by
   chunk in a temporary folder), measured in a fresh child process (ru_maxrss), against a target.

Examples
--------
python benchmarks/inference.py                                   # defaults from the spec
python benchmarks/inference.py --size2d 256 --size3d 32 64 64 --volume 32 256 256   # quick run
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_labelfx.inference import sliding_window_predict  # noqa: E402
from napari_labelfx.models import build_model, config_from_preset  # noqa: E402


def _model(dims: int, preset: str, **overrides: int) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = config_from_preset(preset, spatial_dims=dims, num_classes=2, **overrides)
    return build_model(cfg).eval()


def _interleaved_times(fns: dict, repeats: int, warmup: int = 1) -> tuple[dict[str, float], dict]:
    """Median seconds per function (runs interleaved, so load changes on a shared machine hit all)
    and the last output of each."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {name: [] for name in fns}
    outputs: dict = {}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}, outputs


def throughput(dims: int, shape: tuple[int, ...], roi: tuple[int, ...], args: argparse.Namespace) -> dict:
    """Voxels/s of ours vs MONAI on one random image, per weight layout of the shared model."""
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    n = int(np.prod(shape))
    result: dict = {"shape": list(shape), "roi": list(roi), "overlap": args.overlap, "batch": args.batch}
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        sliding_window_inference = None
        result["monai"] = "monai not installed"
    for layout in args.layouts:
        model = _model(dims, args.preset)
        fmt = None
        if layout == "channels_last":
            # what Predictor does by default; sliding_window_predict feeds tiles in the model's layout
            fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
            model = model.to(memory_format=fmt)

        def run_ours(model=model) -> np.ndarray:
            return sliding_window_predict(model, image, roi, overlap=args.overlap, batch_size=args.batch,
                                          blend="gaussian")

        fns = {"ours": run_ours}
        if sliding_window_inference is not None:
            x = torch.from_numpy(image[None])

            def predictor(t: torch.Tensor, model=model, fmt=fmt) -> torch.Tensor:
                if fmt is not None:
                    t = t.contiguous(memory_format=fmt)
                return torch.softmax(model(t).logits, dim=1)

            def run_monai(predictor=predictor) -> np.ndarray:
                with torch.inference_mode():
                    out = sliding_window_inference(x, roi, args.batch, predictor, overlap=args.overlap,
                                                   mode="gaussian", sigma_scale=0.125)
                return out[0].numpy()

            fns["monai"] = run_monai
        t, outputs = _interleaved_times(fns, args.repeats, args.warmup)
        entry = {"ours_s": round(t["ours"], 3), "ours_voxels_per_s": round(n / t["ours"])}
        if "monai" in t:
            ours, theirs = outputs["ours"], outputs["monai"]
            entry.update({
                "monai_s": round(t["monai"], 3), "monai_voxels_per_s": round(n / t["monai"]),
                "ratio_ours_over_monai": round(t["monai"] / t["ours"], 3),
                # the Gaussian maps differ slightly (centre, floor): agreement, not identity
                "max_abs_prob_diff": round(float(np.abs(ours - theirs).max()), 4),
                "argmax_agreement": round(float((ours.argmax(0) == theirs.argmax(0)).mean()), 5),
            })
        result[layout] = entry
    return result


def _make_volume(path: Path, shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> None:
    """A (1, Z, Y, X) uint16 Zarr written chunk by chunk: never the whole volume in memory."""
    import zarr

    arr = zarr.create_array(store=str(path), shape=(1, *shape), chunks=(1, *chunks), dtype=np.uint16)
    rng = np.random.default_rng(0)
    for z in range(0, shape[0], chunks[0]):
        for y in range(0, shape[1], chunks[1]):
            for x in range(0, shape[2], chunks[2]):
                block = arr[0:1, z : z + chunks[0], y : y + chunks[1], x : x + chunks[2]]
                arr[0:1, z : z + chunks[0], y : y + chunks[1], x : x + chunks[2]] = rng.integers(
                    100, 4000, size=block.shape, dtype=np.uint16)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: stream the volume and report peak RSS."""
    import zarr

    from napari_labelfx.inference import Predictor

    torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("width", args.mem_width), ("depth", args.mem_depth)) if v}
    model = _model(3, args.preset, **overrides)
    image = zarr.open_array(args.child_input, mode="r")
    base = _rss_mb()
    pred = Predictor(model, roi_size=tuple(args.roi3d), batch_size=args.batch, overlap=args.overlap)
    t0 = time.perf_counter()
    pred.predict_to_zarr(image, args.child_output, confidence_path=args.child_output + ".conf.zarr")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rss_before_mb": round(base), "peak_rss_mb": round(peak), "seconds": round(seconds, 1)}))


def memory(args: argparse.Namespace) -> dict:
    shape = tuple(args.volume)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        src = Path(tmp) / "volume.zarr"
        t0 = time.perf_counter()
        _make_volume(src, shape, (32, 256, 256))
        create_s = time.perf_counter() - t0
        cmd = [sys.executable, __file__, "--child-input", str(src), "--child-output", str(Path(tmp) / "labels.zarr"),
               "--threads", str(args.threads), "--preset", args.preset, "--batch", str(args.batch),
               "--overlap", str(args.overlap), "--roi3d", *map(str, args.roi3d),
               "--mem-width", str(args.mem_width), "--mem-depth", str(args.mem_depth)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": proc.stderr[-2000:]}
        child = json.loads(proc.stdout.strip().splitlines()[-1])
    volume_mb = int(np.prod(shape)) * 2 / 2**20
    model = {"preset": args.preset, "width": args.mem_width or None, "depth": args.mem_depth or None}
    return {"volume_zyx": list(shape), "volume_mb": round(volume_mb), "model": model, "roi": args.roi3d,
            "batch": args.batch, "voxels_per_s": round(int(np.prod(shape)) / max(child["seconds"], 1e-9)),
            "create_s": round(create_s, 1), **child, "target_mb": 1536,
            "within_target": child["peak_rss_mb"] <= 1536}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size2d", type=int, default=1024, help="side of the square 2D image")
    p.add_argument("--size3d", type=int, nargs=3, default=[64, 256, 256], help="Z Y X of the 3D throughput image")
    p.add_argument("--volume", type=int, nargs=3, default=[256, 1024, 1024], help="Z Y X of the streamed volume")
    p.add_argument("--roi2d", type=int, nargs=2, default=[256, 256])
    p.add_argument("--roi3d", type=int, nargs=3, default=[32, 128, 128])
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--preset", default="small", help="model preset (small = width 16, depth 3)")
    p.add_argument("--mem-width", type=int, default=0, help="override the preset width in the memory run")
    p.add_argument("--mem-depth", type=int, default=0, help="override the preset depth in the memory run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each method before timing")
    p.add_argument("--layouts", nargs="+", default=["contiguous", "channels_last"],
                   choices=["contiguous", "channels_last"], help="weight layouts of the shared model")
    p.add_argument("--skip-2d", action="store_true")
    p.add_argument("--skip-3d", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--tmp", default=None, help="folder for the temporary volume")
    p.add_argument("--child-input", help=argparse.SUPPRESS)
    p.add_argument("--child-output", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_input:
        memory_child(args)
        return
    torch.set_num_threads(args.threads)
    report: dict = {"torch": torch.__version__, "threads": args.threads, "preset": args.preset}
    if not args.skip_throughput:
        if not args.skip_2d:
            report["throughput_2d"] = throughput(2, (args.size2d, args.size2d), tuple(args.roi2d), args)
        if not args.skip_3d:
            report["throughput_3d"] = throughput(3, tuple(args.size3d), tuple(args.roi3d), args)
    if not args.skip_memory:
        report["streaming_memory"] = memory(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
