"""``labelfx eval``: train and test a method on a dataset folder with derived label kinds."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..evaluation.harness import DEFAULT_ITERATIONS
from .errors import parse_key_values, parse_method_params

NAME = "eval"
HELP = "train and test a method on a dataset folder with derived label kinds"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``labelfx eval`` options to ``parser`` (returns it)."""
    parser.add_argument("--dataset", required=True, metavar="DIR", help="dataset folder (images/, masks/, meta.json)")
    parser.add_argument("--method", default="auto", metavar="NAME",
                        help="training method: auto (forest + network, the better one; default), forest, supervised, ...")
    parser.add_argument("--strong", type=int, default=3, metavar="N", help="training images with full masks (3)")
    parser.add_argument(
        "--others", default="none", metavar="KIND",
        help="label kind of the other training images: none, image-level, scribble, box, ellipse, "
        "noisy-classical, noisy-drop:F (none)",
    )
    parser.add_argument("--test", type=int, default=None, metavar="N", help="test images (max(2, 30%%))")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="split/derivation/training seed (0)")
    parser.add_argument("--iters", type=int, default=None, metavar="N", help=f"iterations ({DEFAULT_ITERATIONS})")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="train for this many wall-clock seconds instead of an iteration count")
    parser.add_argument("--device", default="auto", metavar="D", help="auto, cpu, cuda, cuda:N, mps (auto)")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the result JSON here")
    parser.add_argument("--preset", default="small", metavar="P", help="model preset: small, medium, large")
    parser.add_argument("--patch", type=int, default=None, metavar="N", help="patch edge in pixels (128; 3D 16x64x64)")
    parser.add_argument("--batch", type=int, default=None, metavar="N", help="patches per step")
    parser.add_argument(
        "--scale", type=float, default=1.0, metavar="F",
        help="train and predict at this fraction of the image size, score at full size (1.0)",
    )
    parser.add_argument(
        "--augment", action="append", default=[], metavar="KEY=VALUE",
        help="engine augmentation switch, e.g. flip=false rot90=false (repeatable)",
    )
    parser.add_argument(
        "--instance-split", choices=("none", "watershed"), default="none",
        help="instance sets: how predicted foreground becomes instances (connected components: none)",
    )
    parser.add_argument(
        "--max-dets", type=int, default=1000, metavar="N", help="instance sets: detections kept per image (1000)",
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="method parameter (repeatable; VALUE parsed as JSON when possible)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``labelfx eval`` from parsed arguments; print the result JSON. Returns the exit code.

    Bad input (dataset, options, training data) prints one message to stderr and returns 2; a
    training failure returns 1.
    """
    from ..engine import TrainingFailed
    from ..evaluation.harness import RunSpec, evaluate

    try:
        if args.out is not None:  # fail before the run, not after minutes of training
            from ..io.errors import LabelfxIOError
            from ..io.safety import check_writable

            check_writable(args.out)
            if Path(args.out).is_dir():
                raise LabelfxIOError(args.out, "is a folder; --out names the result JSON file")
        params = parse_method_params(args.method, getattr(args, "param", []) or [])
        bar = None
        try:
            from tqdm import tqdm

            total = args.iters if args.iters is not None else DEFAULT_ITERATIONS
            bar = tqdm(total=total, desc="training", unit="it", file=sys.stderr, disable=not sys.stderr.isatty())
        except ImportError:  # tqdm is a dependency, but progress is optional
            pass
        try:
            spec = RunSpec(
                args.dataset, args.method, strong=args.strong, others=args.others, test=args.test, seed=args.seed,
                iters=args.iters, device=args.device, out=args.out, preset=args.preset, patch=args.patch,
                batch=args.batch, scale=args.scale,
                augment=parse_key_values(getattr(args, "augment", []) or [], "--augment"),
                instance_split=getattr(args, "instance_split", "none"), max_dets=getattr(args, "max_dets", 1000),
                time_budget=getattr(args, "time_budget", None), method_params=params,
            )
            report = evaluate(spec, progress=bar)
        finally:
            if bar is not None:
                bar.close()
    except TrainingFailed as exc:
        print(f"labelfx eval: {exc.reason}", file=sys.stderr)
        return 1
    except ValueError as exc:  # all input errors of the library are ValueError subclasses
        print(f"labelfx eval: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0
