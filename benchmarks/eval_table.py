"""Markdown tables (mean and spread over seeds) from ``labelfx eval`` result files.

Each ``--row NAME=GLOB`` names one table row and the result files (one per seed) that feed it.
Columns: the per-class IoU (or Dice) of every class, their mean, the instance metrics when present, the
AP50/AR of the training labels (``initial``, ``corrected``) for noisy-label runs, and the mean training
seconds. Cells are ``mean ± sample standard deviation (n)``; with one file, the value.

Usage::

    .venv/bin/python benchmarks/eval_table.py --metric iou \\
        --row supervised='/tmp/R6/cxr_st3_supervised_s*.json' --row rpg='/tmp/R6/cxr_st3_rpg_s*.json'
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import statistics
import sys
from typing import Any


def _cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def collect(files: list[str], metric: str) -> dict[str, list[float]]:
    """Per column, the values of every file (seed)."""
    cols: dict[str, list[float]] = {}
    for path in files:
        with open(path, encoding="utf-8") as fh:
            rep: dict[str, Any] = json.load(fh)
        m = rep["metrics"]
        for cls, v in m[metric].items():
            cols.setdefault(cls, []).append(float(v))
        cols.setdefault(f"mean {metric}", []).append(float(m[f"mean_{metric}"]))
        for key in ("AP50", "AP75", "AP", "AR"):
            if key in m and m[key] is not None and not math.isnan(float(m[key])):
                cols.setdefault(key, []).append(float(m[key]))
        # noisy-label runs: how good the training labels were before and after correction
        for view, lab in (m.get("training_labels") or {}).items():
            if isinstance(lab, dict) and "AP50" in lab:
                for key in ("AP50", "AR"):
                    cols.setdefault(f"labels {key} {view}", []).append(float(lab[key]))
        cols.setdefault("train s", []).append(float(rep["seconds"]["train"]))
        cols.setdefault("seeds", []).append(float(rep["seed"]))
    return cols


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", action="append", required=True, metavar="NAME=GLOB")
    ap.add_argument("--metric", default="iou", choices=("iou", "dice"))
    args = ap.parse_args(argv)
    rows = []
    header: list[str] = []
    for spec in args.row:
        name, _, pattern = spec.partition("=")
        files = sorted(glob.glob(pattern))
        if not files:  # a typo or a run not made: say so rather than print an empty row
            print(f"eval_table: no file matches {pattern!r}; row {name!r} left out", file=sys.stderr)
            continue
        cols = collect(files, args.metric)
        for key in cols:
            if key not in header and key != "seeds":
                header.append(key)
        rows.append((name, cols, len(files)))
    if "train s" in header:  # last, whatever the first file held
        header.append(header.pop(header.index("train s")))
    print("| method | n | " + " | ".join(header) + " |")
    print("|---|---|" + "---|" * len(header))
    for name, cols, n in rows:
        cells = [_cell(cols.get(h, []), 0 if h == "train s" else 3) for h in header]
        print(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
