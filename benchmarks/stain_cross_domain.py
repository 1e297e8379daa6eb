"""Cross-domain nuclei segmentation on H&E: train on one stain/magnification domain, test on the other.

The CPM-15 set (``he_nuclei_cpm15``) mixes two sources/magnifications. Its meta.json does not say
which image is which, so the domains are split by the measured median nucleus area of each mask
(``--area-split`` pixels): the lower-magnification images have nuclei about 3x smaller in area, and
their stain colours differ too (see docs/benchmarks.md, section "Domain tools"). For each direction (A -> B, B -> A)
the same seed and iterations train:

* ``vanilla``      supervised (CE + Dice), default augmentation (flips, rot90, intensity),
* ``hed``          supervised + HED-light stain jitter (``augment["hed"] = True``),
* ``macenko-test`` the vanilla model, test images Macenko-normalised to the training domain
                   (stain vectors fitted on pixels pooled from all training images),
* ``stain-aglr``   the stain-aglr method (consistency + regeneration, spec weights),

and reports pooled Dice/IoU of the nucleus class and AP50 (watershed-free connected components).

Usage::

    .venv/bin/python benchmarks/stain_cross_domain.py --dataset ../shared/data/he_nuclei_cpm15 \
        --iters 300 --out /tmp/F/cross.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("vanilla", "hed", "macenko-test", "stain-aglr")


def split_domains(ds: Any, area_split: float) -> tuple[list[str], list[str], dict[str, float]]:
    """Stems of domain A (median nucleus area < area_split) and B (the rest), and each median area."""
    areas: dict[str, float] = {}
    for stem in ds.stems:
        mask = ds.load(stem).mask
        _, counts = np.unique(mask[mask > 0], return_counts=True)
        areas[stem] = float(np.median(counts)) if counts.size else 0.0
    a = [s for s in ds.stems if areas[s] < area_split]
    b = [s for s in ds.stems if areas[s] >= area_split]
    return a, b, areas


def _pooled_reference(ds: Any, stems: list[str], per_image: int = 200_000, seed: int = 0) -> np.ndarray:
    """Pixels of all training images as one (N, 1, 3) uint8 "image" for fitting a normalizer."""
    rng = np.random.default_rng(seed)
    chunks = []
    for s in stems:
        raw = np.asarray(ds.load(s).raw)[..., :3].reshape(-1, 3)
        idx = rng.choice(raw.shape[0], size=min(per_image, raw.shape[0]), replace=False)
        chunks.append(raw[idx])
    return np.ascontiguousarray(np.concatenate(chunks)[:, None, :].astype(np.uint8))


def train_model(ds: Any, train: list[str], method: str, hed: bool, iters: int, seed: int, folder: Path,
                patch: int = 128, batch: int = 4, method_params: dict[str, Any] | None = None) -> Path:
    """Train ``method`` on the full masks of ``train``; returns the model folder."""
    import torch

    from napari_labelfx.engine import TrainConfig, Trainer
    from napari_labelfx.evaluation.derive import derive_item

    items = [derive_item(ds.load(s).image, ds.load(s).mask, ds.task, "strong", seed=seed, name=s,
                         raw=ds.load(s).raw, num_classes=2) for s in train]
    cfg = TrainConfig(method=method, preset="small", iterations=iters, patch_size=(patch, patch),
                      batch_size=batch, device="cpu", seed=seed, preview_every_s=0.0, output_dir=str(folder),
                      val_fraction=0.0, val_every=iters, log_every=max(iters // 10, 1),
                      method_params=dict(method_params or {}),
                      augment={"flip": True, "rot90": True, "intensity": True, "hed": bool(hed)})
    torch.manual_seed(seed)
    result = Trainer(cfg, items, ["background", "nucleus"]).run()
    if result.last_dir is None:
        raise RuntimeError("training wrote no model folder")
    return result.last_dir


def evaluate(ds: Any, folder: Path, test: list[str], normalizer: Any = None) -> dict[str, float]:
    """Pooled nucleus Dice/IoU and AP50 of a model folder on ``test`` (optionally stain-normalised)."""
    from napari_labelfx.evaluation.derive import class_map
    from napari_labelfx.inference import Predictor
    from napari_labelfx.tools.metrics import InstanceEvaluator, SemanticEvaluator, instances_from_semantic

    predictor = Predictor.from_folder(folder, device="cpu")
    sem = SemanticEvaluator(["background", "nucleus"])
    inst = InstanceEvaluator()
    for stem in test:
        smp = ds.load(stem)
        image = smp.image
        if normalizer is not None:
            rgb = normalizer.normalize(np.asarray(smp.raw)[..., :3].astype(np.uint8), name=stem)
            image = np.moveaxis(rgb, -1, 0)
        pred = predictor(image)
        labels = np.asarray(pred.labels)
        sem.add(class_map(smp.mask, ds.task), labels)
        found = instances_from_semantic(labels, conf=pred.probabilities[1], min_size=10)
        inst.add(smp.mask, found.labels, scores=found.scores)
    s, i = sem.summary(), inst.summary()
    return {"dice": s["dice"]["nucleus"], "iou": s["iou"]["nucleus"], "AP50": float(i["AP50"])}


def run(dataset: str, iters: int, seed: int, area_split: float, directions: list[str],
        out: str | None = None, variants: tuple[str, ...] = ("vanilla", "hed", "stain-aglr"),
        aglr_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """All variants for the requested directions (``"A->B"``, ``"B->A"``).

    With ``out``, the report is rewritten after every variant, so a run cut short keeps what it measured.
    """
    from napari_labelfx.evaluation.dataset import load_dataset
    from napari_labelfx.tools.stain import MacenkoNormalizer

    ds = load_dataset(dataset)
    dom_a, dom_b, areas = split_domains(ds, area_split)
    report: dict[str, Any] = {"dataset": str(ds.root), "iters": iters, "seed": seed, "area_split": area_split,
                              "domains": {"A": dom_a, "B": dom_b}, "median_area": areas, "results": {}}
    for direction in directions:
        train, test = (dom_a, dom_b) if direction == "A->B" else (dom_b, dom_a)
        res: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="labelfx-xdomain-") as tmp:
            for name in variants:
                variant = "stain-aglr" if name.startswith("stain-aglr") else name
                t0 = time.perf_counter()
                method = "stain-aglr" if variant == "stain-aglr" else "supervised"
                params = aglr_params if variant == "stain-aglr" else None
                folder = train_model(ds, train, method, variant == "hed", iters, seed, Path(tmp) / variant,
                                     method_params=params)
                variant = name
                res[variant] = {**evaluate(ds, folder, test), "seconds": time.perf_counter() - t0}
                if params:
                    res[variant]["method_params"] = dict(params)
                if variant == "vanilla":
                    t0 = time.perf_counter()
                    norm = MacenkoNormalizer().fit(_pooled_reference(ds, train, seed=seed), name="training domain")
                    res["macenko-test"] = {**evaluate(ds, folder, test, norm), "seconds": time.perf_counter() - t0}
                rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in res[variant].items()}
                print(direction, variant, rounded, flush=True)
                report["results"][direction] = res
                if out:
                    Path(out).write_text(json.dumps(report, indent=2) + "\n")
            if "macenko-test" in res:
                rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in res["macenko-test"].items()}
                print(direction, "macenko-test", rounded, flush=True)
        report["results"][direction] = res
    return report


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/data/he_nuclei_cpm15")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--area-split", type=float, default=300.0)
    parser.add_argument("--directions", default="A->B,B->A")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--variants", default="vanilla,hed,stain-aglr",
                        help="trained variants (macenko-test comes with vanilla); a name starting with "
                        "stain-aglr, e.g. stain-aglr-cons1, trains stain-aglr with --aglr-param")
    parser.add_argument("--aglr-param", action="append", default=[], metavar="KEY=VALUE",
                        help="stain-aglr parameter, e.g. cons_weight=1 (repeatable)")
    args = parser.parse_args()
    aglr = {k: json.loads(v) for k, _, v in (p.partition("=") for p in args.aglr_param)}
    torch.set_num_threads(args.threads)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report = run(args.dataset, args.iters, args.seed, args.area_split, args.directions.split(","), args.out,
                 tuple(args.variants.split(",")), aglr)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(json.dumps(report["results"], indent=2))


if __name__ == "__main__":
    main()
