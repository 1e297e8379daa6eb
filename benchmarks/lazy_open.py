"""Lazy-open benchmark: memory needed to open a large TIFF / Zarr compared to its size.

Creates a uint16 multi-page TIFF, a tiled single-page 2D TIFF and a chunked Zarr v3 array of
about ``--size-mb`` each (written piece by piece, so creating them stays bounded in memory), then,
for each, starts a fresh Python process that opens it through ``io.read_image`` and through the
napari adapter ``_reader.read_layers`` and reads one slice (one tile region for the 2D image).
Prints JSON: peak RSS increase over the RSS after imports, and its ratio to the file size.

    python benchmarks/lazy_open.py                    # ~2 GB files in a temp dir
    python benchmarks/lazy_open.py --size-mb 200 --dir /tmp/x --keep
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PLANE = 2048  # Y = X of the stack planes (8 MiB per uint16 plane)
TILE = 512


def _noise_plane(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    # 12-bit noise: realistic for microscopy, and compressible enough that Zarr writes stay quick
    return rng.integers(0, 4096, shape, dtype=np.uint16)


def make_stack_tiff(path: Path, n_planes: int) -> None:
    """Multi-page TIFF written one page at a time from a generator."""
    import tifffile

    rng = np.random.default_rng(0)
    pages = (_noise_plane(rng, (PLANE, PLANE)) for _ in range(n_planes))
    tifffile.imwrite(path, pages, shape=(n_planes, PLANE, PLANE), dtype=np.uint16,
                     photometric="minisblack", metadata={"axes": "ZYX"})


def make_tiled_tiff(path: Path, side: int) -> None:
    """Single-page tiled 2D TIFF written one tile at a time from a generator."""
    import tifffile

    rng = np.random.default_rng(1)
    n = side // TILE
    tiles = (_noise_plane(rng, (TILE, TILE)) for _ in range(n * n))
    tifffile.imwrite(path, tiles, shape=(side, side), dtype=np.uint16, tile=(TILE, TILE),
                     photometric="minisblack")


def make_zarr(path: Path, n_planes: int) -> None:
    """Zarr v3 array written one plane at a time."""
    import zarr

    rng = np.random.default_rng(2)
    z = zarr.create_array(str(path), shape=(n_planes, PLANE, PLANE), chunks=(1, 1024, 1024),
                          dtype=np.uint16, dimension_names=["z", "y", "x"])
    for i in range(n_planes):
        z[i] = _noise_plane(rng, (PLANE, PLANE))


def _file_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _current_rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # Linux without psutil
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


def _touch(data) -> int:
    """Read one slice (stacks) or one tile region (2D), as a viewer would; returns its bytes."""
    level0 = data[0] if isinstance(data, list) else data
    if level0.ndim >= 3:
        part = level0[level0.shape[0] // 2]
    else:
        part = level0[:TILE, :TILE]
    return int(np.asarray(part).nbytes)


def _warm_up(path: Path) -> None:
    """Open and touch a tiny file of the same kind through the same lazy code path."""
    from napari_labelfx._reader import read_layers
    from napari_labelfx.io import read_image

    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / path.name
        if path.suffix == ".zarr":
            import zarr

            z = zarr.create_array(str(small), shape=(2, 64, 64), chunks=(1, 32, 32), dtype=np.uint16)
            z[...] = 1
        else:
            import tifffile

            tifffile.imwrite(small, np.ones((2, 64, 64), np.uint16), photometric="minisblack")
        _touch(read_image(small, eager_limit=0).data)
        _touch(read_layers(str(small))[0][0])


def measure(path: Path) -> dict:
    """In this (fresh) process: open ``path`` both ways and report peak RSS growth."""
    import gc

    from napari_labelfx._reader import read_layers
    from napari_labelfx.io import read_image

    _warm_up(path)  # one-off costs (lazy imports, codec and thread pools) are not per-byte costs
    gc.collect()
    base = _current_rss()
    t0 = time.perf_counter()
    image = read_image(path)
    open_s = time.perf_counter() - t0
    touched = _touch(image.data)
    read_image_peak = _peak_rss() - base
    del image
    gc.collect()
    t0 = time.perf_counter()
    layer_data = read_layers(str(path))
    layers_open_s = time.perf_counter() - t0
    _touch(layer_data[0][0])
    read_layers_peak = _peak_rss() - base
    size = _file_size(path)
    worst = max(read_image_peak, read_layers_peak)
    return {
        "path": str(path),
        "file_bytes": size,
        "touched_bytes": touched,
        "open_s_read_image": round(open_s, 4),
        "open_s_read_layers": round(layers_open_s, 4),
        "rss_increase_read_image": read_image_peak,
        "rss_increase_read_layers": read_layers_peak,
        "ratio": round(worst / size, 5),  # peak RSS growth / file size; well below 1 means lazy
    }


def _measure_in_child(path: Path) -> dict:
    """Run `measure` in a new interpreter so earlier allocations do not mask the peak."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "--measure", str(path)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(size_mb: float, folder: Path, formats: list[str]) -> dict:
    """Create the files in ``folder`` and measure each in a child process."""
    n_planes = max(2, int(round(size_mb * 2**20 / (PLANE * PLANE * 2))))
    side = max(TILE, int(np.sqrt(size_mb * 2**20 / 2)) // TILE * TILE)
    makers = {
        "tiff_stack": ("stack.tif", lambda p: make_stack_tiff(p, n_planes)),
        "tiff_tiled_2d": ("tiled2d.tif", lambda p: make_tiled_tiff(p, side)),
        "zarr": ("stack.zarr", lambda p: make_zarr(p, n_planes)),
    }
    results: dict = {"size_mb_requested": size_mb, "cases": {}}
    for name in formats:
        filename, make = makers[name]
        path = folder / filename
        t0 = time.perf_counter()
        make(path)
        create_s = time.perf_counter() - t0
        case = _measure_in_child(path)
        case["create_s"] = round(create_s, 2)
        results["cases"][name] = case
    results["max_ratio"] = max(c["ratio"] for c in results["cases"].values())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=2048.0, help="approximate size of each file")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the files (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    parser.add_argument("--formats", nargs="+", default=["tiff_stack", "tiff_tiled_2d", "zarr"],
                        choices=["tiff_stack", "tiff_tiled_2d", "zarr"])
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return 0
    folder = Path(tempfile.mkdtemp(prefix="labelfx-lazy-", dir=args.dir))
    try:
        print(json.dumps(run(args.size_mb, folder, args.formats), indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
