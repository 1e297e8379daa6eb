"""Issue 13 item 8: a model trained on NIH3T3 dna-0, scored (Dice) on dna-1 and on dna-2, whose two
saturated mitotic nuclei move the plain 99.8th percentile, with the robust white point and without.

    .venv/bin/python benchmarks/robust_normalisation.py [DATASET]   # default ../shared/data/nuclei_fluo_nih3t3
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_labelfx.annotations.class_table import default_class_table
from napari_labelfx.annotations.model import AnnotatedImage, AnnotationLayer, AnnotationSet
from napari_labelfx.engine import TrainConfig, Trainer
from napari_labelfx.inference import Predictor
from napari_labelfx.io.reader import read_image


def load(folder: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """Image and instance mask of one NIH3T3 image."""
    image = np.asarray(read_image(folder / "images" / f"{stem}.png").data)
    return image, np.asarray(read_image(folder / "masks" / f"{stem}.tif").data)


def main() -> None:
    torch.set_num_threads(2)
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuclei_fluo_nih3t3"
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    out = tempfile.mkdtemp(prefix="labelfx-robust-")
    image, mask = load(folder, "dna-0")
    table = default_class_table(["nucleus"])
    aset = AnnotationSet(table, [AnnotatedImage("dna-0", image, "YX", [AnnotationLayer("m", "strong", mask)])])
    cfg = TrainConfig(method="supervised", iterations=250, patch_size=(128, 128), batch_size=4, device="cpu",
                      val_fraction=0.0, preview_every_s=0, output_dir=out, seed=0)
    t0 = time.time()
    Trainer(cfg, aset.training_items(), list(table.names)).run()
    print(f"trained on dna-0 in {time.time() - t0:.0f} s")
    for robust in (True, False):
        pred = Predictor.from_folder(out, device="cpu")
        pred.robust = robust
        scores = {}
        for stem in ("dna-1", "dna-2"):
            img, truth = load(folder, stem)
            found, true = pred(img).labels > 0, truth > 0
            scores[stem] = round(2 * float((found & true).sum()) / float(found.sum() + true.sum()), 3)
        print("robust" if robust else "plain ", scores)


if __name__ == "__main__":
    main()
