"""The ``labelfx`` parser and entry point: one subcommand per module of this package.

Each subcommand module holds ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``, and
imports its heavy dependencies (torch, the engine, napari) inside ``run``, so ``labelfx --help`` is instant.
Every user error ends with a one-line message on stderr and a non-zero exit code, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from . import debias, demo, export, info, predict, skin_tone, stain_normalize, train
from . import eval as eval_command
from .errors import CLIError

#: In the order ``labelfx --help`` lists them.
COMMANDS: tuple[ModuleType, ...] = (info, train, predict, eval_command, skin_tone, stain_normalize, debias, export,
                                    demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``labelfx`` (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog="labelfx",
        description="Label-efficient segmentation: train from strong, scribble, weak, image-level and "
        "noisy labels; predict; evaluate; demo.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
        sub.choices[command.NAME].set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``labelfx`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given (``labelfx train --nproc`` starts itself again with it)
    if args.version:
        from .. import __version__

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
