"""The forest against the default path (forest first, network behind it) at equal wall-clock cost.

One case = one dataset folder, one label kind and one seed, on the split and derived labels of
``labelfx eval``. In one process it

1. trains the pixel forest alone on every label (what an ilastik user gets) and scores it;
2. runs the default path (``method="auto"``) for ``--budget`` seconds and, when the training clock
   passes each ``--snapshots`` time, keeps the network trained so far and which learner the default
   path showed then (by held-out Dice); after training, every snapshot is scored on the test images.

So one run gives the curve at 30, 120 and 600 s instead of three runs. Scoring time is not training
time. The machine's load average is recorded at the start and end (these machines are shared).

    python benchmarks/vs_forest.py --dataset ../shared/data/nuclei_fluo_nih3t3 --labels strong --seed 0 \\
        --budget 600 --out results/vs_forest/nih3t3_strong_0.json
    python benchmarks/vs_forest.py --table results/vs_forest/*.json --png docs/vs_forest.png

Output: JSON (one case), or with ``--table`` a Markdown table of several cases and a PNG plot of test
Dice and AP50 against training seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _case(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from napari_labelfx.engine import TrainConfig
    from napari_labelfx.engine.factory import make_trainer
    from napari_labelfx.engine.updates import UpdateKind
    from napari_labelfx.evaluation.harness import prepare_eval, score_predictor, write_json
    from napari_labelfx.inference import Predictor

    # One torch thread: on a shared 2-core machine two OpenMP threads collapse whenever another process
    # runs (measured 1.7 s against 0.5 s per step with a niced test job beside it); see docs/benchmarks.md
    torch.set_num_threads(args.threads)
    strong, others = (args.strong, "none") if args.labels == "strong" else (0, "scribble")
    ds, split, samples, items, class_names, _ = prepare_eval(args.dataset, strong=strong, others=others, seed=args.seed)
    nd = len(next(iter(samples.values())).spatial_shape)
    instance_split = "watershed" if (ds.task == "instance" and args.watershed) else "none"
    report: dict[str, Any] = {
        "dataset": str(ds.root), "labels": args.labels, "strong": strong, "others": others, "seed": args.seed,
        "budget_s": args.budget, "snapshots_s": args.snapshots, "task": ds.task,
        "split": split.sizes(), "load_start": os.getloadavg(), "cpu_count": os.cpu_count(),
        "torch_threads": args.threads, "auto_params": dict(args.param),
    }

    scored: dict[str, dict[str, Any]] = {}

    def score(folder: Path) -> dict[str, Any]:
        if str(folder) not in scored:  # the default path's forest is scored once for all snapshots
            pred = Predictor.from_folder(folder, device="cpu")
            metrics, _, _, _ = score_predictor(ds, split, samples, items, pred, instance_split=instance_split)
            keep = ("mean_dice", "mean_iou", "AP50", "AP", "AR")
            scored[str(folder)] = {k: metrics[k] for k in keep if k in metrics}
        return scored[str(folder)]

    with tempfile.TemporaryDirectory(prefix="labelfx-vs-forest-") as tmp:
        tmp = Path(tmp)
        base = dict(device="cpu", seed=args.seed, preview_every_s=0.0, patch_size=(128,) * nd if nd == 2 else None,
                    spatial="2d" if nd == 2 else "3d")
        # -- 1. the forest alone, on every label
        t0 = time.perf_counter()
        forest = make_trainer(TrainConfig(method="forest", output_dir=str(tmp / "forest"), val_fraction=0.0, **base),
                              items, class_names, multilabel=ds.multilabel)
        forest.run()
        report["forest"] = {"train_s": time.perf_counter() - t0, **score(tmp / "forest" / "best")}
        print(f"forest: {report['forest']}", file=sys.stderr, flush=True)

        # -- 2. the default path, snapshots on the training clock
        auto = make_trainer(TrainConfig(method="auto", output_dir=str(tmp / "auto"), iterations=10_000_000,
                                        method_params=dict(args.param),
                                        time_budget_s=float(args.budget), val_every=args.val_every, log_every=10,
                                        **base), items, class_names, multilabel=ds.multilabel)
        pending = sorted(args.snapshots)
        snaps: list[dict[str, Any]] = []
        t_train = 0.0
        t_mark = time.perf_counter()
        finished = None
        for upd in auto.updates():
            t_train += time.perf_counter() - t_mark
            if upd.kind == UpdateKind.FAILED:
                raise RuntimeError(upd.reason)
            if upd.kind == UpdateKind.FINISHED:
                finished = upd
            while pending and t_train >= pending[0] and upd.kind in (UpdateKind.PROGRESS, UpdateKind.VALIDATION):
                folder = tmp / f"snap_{pending[0]}"
                info = auto.snapshot(folder)
                info.update(t=pending.pop(0), train_s=t_train, folder=str(folder) if folder.exists() else None)
                snaps.append(info)
                print(f"snapshot {info['t']} s: {info['winner']} (net it {info['iterations']})", file=sys.stderr,
                      flush=True)
            t_mark = time.perf_counter()
        for t in pending:  # the budget ran out first (or the loop ended): the final state
            folder = tmp / f"snap_{t}"
            info = auto.snapshot(folder)
            info.update(t=t, train_s=t_train, folder=str(folder) if folder.exists() else None)
            snaps.append(info)
        for info in snaps:
            info["network"] = score(Path(info["folder"])) if info["folder"] else None
            # what the default path showed then: the forest (of its own split) or the network
            info["shown"] = info["network"] if info["winner"] == "network" and info["network"] else \
                score(tmp / "auto" / "forest")
            print(f"scored {info['t']} s: shown {info['winner']} {info['shown']}", file=sys.stderr, flush=True)
        report["default"] = snaps
        report["final"] = {"winner": finished and finished.winner, "scale": auto.scale,
                           "diameter": auto.diameter, "iterations": auto.iteration}
    report["load_end"] = os.getloadavg()
    if args.out:
        write_json(args.out, report)
    return report


def _table(paths: list[str], png: str | None) -> str:
    rows = [json.loads(Path(p).read_text()) for p in paths]
    lines = ["| set | labels | seed | forest Dice / AP50 (train s) | default path at " +
             " | ".join(f"{t:g} s" for t in rows[0]["snapshots_s"]) + " | network alone at the end | net iterations |",
             "|---|---|---|---|" + "---|" * len(rows[0]["snapshots_s"]) + "---|---|"]

    def fmt(m: dict | None) -> str:
        if not m:
            return "-"
        d = m.get("mean_dice")
        ap = m.get("AP50")
        return f"{d:.3f}" + (f" / {ap:.3f}" if ap is not None else "")

    for r in rows:
        f = r["forest"]
        cells = [fmt(s["shown"]) + f" ({s['winner'][0]})" for s in r["default"]]
        lines.append(f"| {Path(r['dataset']).name} | {r['labels']} | {r['seed']} | {fmt(f)} ({f['train_s']:.0f} s) | "
                     + " | ".join(cells) + f" | {fmt(r['default'][-1]['network'])} | {r['final']['iterations']} |")
    if png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for r in rows:
            name = f"{Path(r['dataset']).name} {r['labels']} s{r['seed']}"
            for ax, key in zip(axes, ("mean_dice", "AP50")):
                ts = [s["train_s"] for s in r["default"]]
                ys = [s["shown"].get(key, np.nan) for s in r["default"]]
                if all(np.isnan(ys)):
                    continue
                line, = ax.plot(ts, ys, "o-", label=name)
                net = [(s["train_s"], s["network"].get(key, np.nan)) for s in r["default"] if s.get("network")]
                if net:
                    ax.plot(*zip(*net), "x--", color=line.get_color(), alpha=0.7)
                fy = r["forest"].get(key)
                if fy is not None:
                    ax.plot([r["forest"]["train_s"]], [fy], "s", color=line.get_color(), markerfacecolor="none")
        for ax, key in zip(axes, ("test Dice", "test AP50")):
            ax.set_xscale("log")
            ax.set_xlabel("training seconds (2 CPU cores)")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        axes[0].set_title("default path (o), its network alone (x), forest alone (square)", fontsize=9)
        fig.tight_layout()
        fig.savefig(png, dpi=110)
    return "\n".join(lines)


def _rescored(r: dict[str, Any], snap: dict[str, Any], margin: float) -> dict[str, Any]:
    """What the default path would show at ``snap`` with ``tie_margin=margin`` (from the recorded
    held-out scores; the forest's test scores are those it showed at the first snapshot)."""
    forest_shown = r["default"][0]["shown"]
    nd, fd = snap.get("network_dice"), snap.get("forest_dice")
    if snap.get("network") and nd is not None and fd is not None and nd >= fd - margin:
        return snap["network"]
    return snap["shown"] if snap["winner"] == "forest" else forest_shown


def _means(paths: list[str], margin: float) -> str:
    """Mean over seeds per (set, labels) at the last snapshot, and the targets of issue 12."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in paths:
        r = json.loads(Path(p).read_text())
        groups.setdefault((Path(r["dataset"]).name, r["labels"]), []).append(r)

    def mean(vals: list[float | None]) -> float | None:
        v = [x for x in vals if x is not None]
        return float(np.mean(v)) if len(v) == len(vals) and v else None

    def fmt(d: float | None, ap: float | None) -> str:
        return "-" if d is None else f"{d:.3f}" + (f" / {ap:.3f}" if ap is not None else "")

    last = json.loads(Path(paths[0]).read_text())["snapshots_s"][-1]
    lines = [f"| set | labels | seeds | forest | network at {last:g} s "
             "| network - forest | target (+0.02 Dice, +0.03 AP50) | default path as run | "
             f"default path, tie_margin {margin:g} | lowest (shown - forest) over snapshots |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (name, labels), rs in sorted(groups.items()):
        fd = mean([r["forest"]["mean_dice"] for r in rs])
        fa = mean([r["forest"].get("AP50") for r in rs])
        nets = [r["default"][-1].get("network") or {} for r in rs]
        nd, na = mean([n.get("mean_dice") for n in nets]), mean([n.get("AP50") for n in nets])
        sd = mean([r["default"][-1]["shown"]["mean_dice"] for r in rs])
        sa = mean([r["default"][-1]["shown"].get("AP50") for r in rs])
        re_ = [_rescored(r, r["default"][-1], margin) for r in rs]
        rd, ra = mean([x["mean_dice"] for x in re_]), mean([x.get("AP50") for x in re_])
        gap_d = None if nd is None or fd is None else nd - fd
        gap_a = None if na is None or fa is None else na - fa
        if fd is not None and fd >= 0.95:
            target = "n/a (forest >= 0.95)"
        elif gap_d is None:
            target = "-"
        else:
            target = "met" if gap_d >= 0.02 and (gap_a is None or gap_a >= 0.03) else "not met"
        lowest = min(_rescored(r, s, margin)["mean_dice"] - r["forest"]["mean_dice"] for r in rs for s in r["default"])
        lines.append(f"| {name} | {labels} | {','.join(str(r['seed']) for r in sorted(rs, key=lambda r: r['seed']))} "
                     f"| {fmt(fd, fa)} | {fmt(nd, na)} | {fmt(gap_d, gap_a)} | {target} | {fmt(sd, sa)} "
                     f"| {fmt(rd, ra)} | {lowest:+.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset")
    p.add_argument("--labels", choices=("strong", "scribble"), default="strong")
    p.add_argument("--strong", type=int, default=3, help="full masks in the 'strong' case (3; polyp_kvasir: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=float, default=600.0)
    p.add_argument("--snapshots", type=lambda s: [float(x) for x in s.split(",")], default=[30.0, 120.0, 600.0])
    p.add_argument("--val-every", type=int, default=25, help="network iterations between comparisons (25)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the network (1)")
    p.add_argument("--param", action="append", default=[], type=lambda kv: (kv.split("=", 1)[0], json.loads(kv.split("=", 1)[1])),
                   metavar="KEY=VALUE", help="parameter of the default path (JSON value), repeatable")
    p.add_argument("--watershed", action="store_true", help="instance sets: split touching objects (watershed)")
    p.add_argument("--out")
    p.add_argument("--table", nargs="+", help="JSON files of earlier cases: print a Markdown table")
    p.add_argument("--png", help="with --table: write the Dice/AP50-against-seconds plot here")
    p.add_argument("--means", nargs="+", help="JSON files of earlier cases: means over seeds and the targets")
    p.add_argument("--margin", type=float, default=0.01, help="with --means: the tie_margin to re-score with")
    args = p.parse_args(argv)
    if args.means:
        print(_means(args.means, args.margin))
        return 0
    if args.table:
        print(_table(args.table, args.png))
        return 0
    if not args.dataset:
        p.error("--dataset is required (or --table)")
    report = _case(args)
    print(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
