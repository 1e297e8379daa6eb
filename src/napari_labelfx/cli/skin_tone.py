"""``labelfx skin-tone``: ITA and Fitzpatrick type of every image of a folder (CSV, histogram)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .errors import check_report_paths, fail

NAME = "skin-tone"
HELP = "estimate ITA and Fitzpatrick type for every image of a folder (CSV + histogram)"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``labelfx skin-tone FOLDER --out table.csv [--hist types.png]``."""
    parser.add_argument("folder", help="folder of RGB dermoscopy/clinical images (not recursive)")
    parser.add_argument("--out", required=True, help="CSV table to write (file, ita, fitzpatrick, patch ITAs)")
    parser.add_argument("--hist", default=None, help="also write a PNG histogram of the Fitzpatrick types")
    parser.add_argument("--no-hair-removal", action="store_true", help="skip black-hat hair removal")
    parser.add_argument("--skip-errors", action="store_true",
                        help="record unreadable images in the CSV's error column instead of stopping")
    return parser


def run(args: argparse.Namespace) -> int:
    """Estimate ITA and Fitzpatrick type of every image in a folder; write the CSV (and histogram)."""
    from ..tools.skin_tone import estimate_folder, plot_fitzpatrick_histogram, write_csv

    try:
        check_report_paths(args.out, args.hist)  # before measuring a whole folder
        rows = estimate_folder(args.folder, on_error="record" if args.skip_errors else "raise",
                               hair_removal=not args.no_hair_removal)
        out = write_csv(rows, args.out)
        types = [r["fitzpatrick"] for r in rows]
        if args.hist:
            plot_fitzpatrick_histogram(types, args.hist, title=f"Fitzpatrick types of {Path(args.folder).name}")
    except ValueError as exc:
        return fail(NAME, str(exc))
    failed = sum(1 for r in rows if r.get("error"))
    print(f"{len(rows) - failed} image(s) measured, {failed} failed -> {out}" + (f", histogram {args.hist}" if args.hist else ""))
    return 0
