"""Helpers (no tests): tiny synthetic dataset folders in the evaluation layout, written into tmp dirs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image


def blob_mask(rng: np.random.Generator, size: int = 64, n: int = 5, radius: int = 5) -> np.ndarray:
    from skimage.draw import disk

    mask = np.zeros((size, size), np.uint16)
    for j in range(1, n + 1):
        c = rng.integers(radius + 3, size - radius - 3, 2)
        rr, cc = disk(tuple(c), radius, shape=mask.shape)
        mask[rr, cc] = j
    return mask


def make_dataset(
    root: Path, task: str = "instance", n: int = 6, size: int = 64, seed: int = 0, rgb: bool = False,
    labels_csv: bool = False,
) -> Path:
    """Write ``n`` blob images with masks encoded for ``task``; returns the folder."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    classes = {"instance": ["background", "nucleus"], "semantic": ["background", "a", "b"],
               "multilabel": ["a", "b"]}[task]
    (root / "meta.json").write_text(json.dumps({"task": task, "classes": classes}))
    rows = ["image,diagnosis"]
    for i in range(n):
        inst = blob_mask(rng, size)
        img = 40 + 150 * (inst > 0) + rng.normal(0, 10, inst.shape)
        img = img.clip(0, 255).astype(np.uint8)
        if rgb:
            f = img / 255.0
            img = np.stack([235 - 150 * f, 200 - 160 * f, 225 - 60 * f], -1).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        if task == "instance":
            mask = inst
        elif task == "semantic":
            mask = np.where(inst == 0, 0, np.where(inst % 2 == 1, 1, 2)).astype(np.uint8)
        else:
            mask = np.stack([inst > 0, inst >= 3]).astype(np.uint8)
        tifffile.imwrite(root / "masks" / f"im{i}.tif", mask)
        rows.append(f"im{i},{'melanoma' if i % 2 else 'nevus'}")
    if labels_csv:
        (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
