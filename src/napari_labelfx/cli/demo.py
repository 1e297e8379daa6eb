"""``labelfx demo``: a sample image with pre-drawn scribbles, trained live in napari (or headless)."""
from __future__ import annotations

import argparse
import json

NAME = "demo"
HELP = "open napari with a sample, scribbles and the Train panel, and train live"


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``labelfx demo``."""
    p.add_argument("--headless", action="store_true", help="train without a screen; write prediction, overlay PNG and metrics")
    p.add_argument("--out", default="out/demo-headless", help="output folder for --headless (default: %(default)s)")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default: the preset's)")
    p.add_argument("--screenshots", default=None,
                   help="save screenshots of the viewer during training to this folder and quit when done")
    p.add_argument("--seconds", type=float, default=None,
                   help="training time of the demo window (default: 60; the demo quits after it with --screenshots)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace) -> int:
    """Check the settings, then train headless or open napari."""
    from .. import demo

    # checked here rather than falling back to a default: "--iters 0" must not mean 300
    if args.iters is not None and args.iters < 1:
        raise ValueError(f"--iters must be >= 1, got {args.iters}")
    if args.seconds is not None and not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    if args.headless:
        metrics = demo.run_headless(args.out, iters=args.iters, device=args.device, seed=args.seed)
        print(json.dumps(metrics, indent=2, default=float))
        return 0
    return demo.run_gui(args)
