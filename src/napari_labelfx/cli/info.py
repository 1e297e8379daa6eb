"""``labelfx info``: describe image files and Zarr stores."""
from __future__ import annotations

import argparse
import json

NAME = "info"
HELP = "describe an image file or Zarr store (shape, axes, dtype, scale, chunks, levels)"


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``labelfx info``."""
    p.add_argument("files", nargs="+", help="TIFF/OME-TIFF/Zarr/OME-Zarr paths or image folders")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def run(args: argparse.Namespace) -> int:
    """Print what each file holds."""
    from ..io.reader import describe

    for path in args.files:
        info = describe(path)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
            continue
        print(f"{path}")
        for key, value in info.items():
            print(f"  {key:>10}: {value}")
    return 0
