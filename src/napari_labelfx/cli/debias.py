"""``labelfx debias``: an image-level classifier with a skin-type debiasing head, scored per skin type."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .errors import check_report_paths, fail

NAME = "debias"
HELP = "train an image-level classifier with a skin-type debiasing head (LNTL, TABE, CLGR)"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``labelfx debias --dataset DIR --label-column COL --scheme tabe ...``."""
    parser.add_argument("--dataset", required=True, help="dataset folder with images/ and labels.csv")
    parser.add_argument("--label-column", required=True, help="labels.csv column with the image-level class")
    parser.add_argument("--positive", default=None, help="value counted as positive (default: least frequent)")
    parser.add_argument("--skin-column", default=None,
                        help="labels.csv column with Fitzpatrick types 1..6 or I..VI (default: estimate by ITA)")
    parser.add_argument("--scheme", default="tabe", choices=["none", "lntl", "tabe", "clgr"])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="images are resized to this square side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    return parser


def format_debias_report(report: dict[str, Any]) -> str:
    """A small text table: overall and per skin type AUC / accuracy on the held-out images."""
    test = report["test"]
    lines = [f"scheme {report['config']['scheme']}, positive = {report['positive']!r}, skin types from "
             f"{report['skin_source']}; train {report['n_train']}, test {report['n_test']} images",
             f"{'group':<10}{'n':>4}{'AUC':>8}{'acc':>8}",
             f"{'all':<10}{test['n']:>4}{test['auc']:>8.3f}{test['accuracy']:>8.3f}"]
    for t, m in test["per_skin_type"].items():
        lines.append(f"{'type ' + t:<10}{m['n']:>4}{m['auc']:>8.3f}{m['accuracy']:>8.3f}")
    lines.append("AUC is nan where a group holds one class only; a few dozen images cannot show a fairness gain.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Train the debiased image-level classifier and print AUC/accuracy per skin type."""
    import torch

    from ..evaluation.debias_classifier import ClassifierConfig, load_classification_data, train_and_evaluate
    from ..io import atomic_path

    try:
        check_report_paths(args.out)  # before training, not after it
        config = ClassifierConfig(scheme=args.scheme, iterations=args.iters, batch_size=args.batch,
                                  seed=args.seed, device=args.device)
        data = load_classification_data(args.dataset, args.label_column, args.positive, args.skin_column, args.size)
    except ValueError as exc:
        return fail(NAME, str(exc))
    torch.manual_seed(args.seed)
    report = train_and_evaluate(data, config, log=lambda m: print(m, flush=True))
    print(format_debias_report(report))
    if args.out:
        with atomic_path(Path(args.out)) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    return 0
