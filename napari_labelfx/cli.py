"""The ``labelfx`` command line: info, train, predict, eval, demo.

Heavy imports (torch, napari) happen inside the subcommands so ``labelfx --help`` is instant.
Every user error ends with a one-line message on stderr and a non-zero exit code, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence


class CLIError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


# -- info ------------------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    from .io.reader import describe

    for path in args.files:
        info = describe(path)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
            continue
        print(f"{path}")
        for key, value in info.items():
            print(f"  {key:>10}: {value}")
    return 0


# -- train -----------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from .cli_train import run_train

    return run_train(args)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .cli_train import run_predict

    return run_predict(args)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.harness import main_eval

    return main_eval(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``labelfx`` (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog="labelfx",
        description="Label-efficient segmentation: train from strong, scribble, weak, image-level and "
        "noisy labels; predict; evaluate; demo.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="describe an image file or Zarr store (shape, axes, dtype, scale, chunks, levels)")
    p.add_argument("files", nargs="+", help="TIFF/OME-TIFF/Zarr/OME-Zarr paths or image folders")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_info)

    from .cli_train import add_predict_arguments, add_train_arguments

    p = sub.add_parser("train", help="train a model from images and label files or a dataset folder")
    add_train_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="apply a saved model to an image, volume or Zarr store")
    add_predict_arguments(p)
    p.set_defaults(func=_cmd_predict)

    from .evaluation.harness import add_eval_arguments

    p = sub.add_parser("eval", help="train and test a method on a dataset folder with derived label kinds")
    add_eval_arguments(p)
    p.set_defaults(func=_cmd_eval)

    from .cli_domain import (
        add_debias_arguments,
        add_skin_tone_arguments,
        add_stain_normalize_arguments,
        run_debias,
        run_skin_tone,
        run_stain_normalize,
    )

    p = sub.add_parser("skin-tone", help="estimate ITA and Fitzpatrick type for every image of a folder (CSV + histogram)")
    add_skin_tone_arguments(p)
    p.set_defaults(func=run_skin_tone)

    p = sub.add_parser("stain-normalize", help="normalize an H&E image's stains (Macenko, Reinhard, Vahadane)")
    add_stain_normalize_arguments(p)
    p.set_defaults(func=run_stain_normalize)

    p = sub.add_parser("debias", help="train an image-level classifier with a skin-type debiasing head (LNTL, TABE, CLGR)")
    add_debias_arguments(p)
    p.set_defaults(func=run_debias)

    from .cli_export import add_export_arguments, run_export

    p = sub.add_parser("export", help="export a model folder as ONNX, TorchScript or a bioimage.io package")
    add_export_arguments(p)
    p.set_defaults(func=run_export)

    p = sub.add_parser("demo", help="open napari with a sample, scribbles and the Train panel, and train live")
    p.add_argument("--headless", action="store_true", help="train without a screen; write prediction, overlay PNG and metrics")
    p.add_argument("--out", default="out/demo-headless", help="output folder for --headless (default: %(default)s)")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default: the preset's)")
    p.add_argument("--screenshots", default=None, help="save screenshots of the viewer during training to this folder and quit when done")
    p.add_argument("--seconds", type=float, default=None, help="with --screenshots: how long to train before quitting")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``labelfx`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("labelfx: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError) as exc:
        # ValueError covers the library's input errors (LabelfxIOError, AnnotationError, ...); OSError
        # a disk that fills up or turns read-only mid-run (never a traceback for those either)
        print(f"labelfx {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["main", "build_parser", "CLIError", "Path"]
