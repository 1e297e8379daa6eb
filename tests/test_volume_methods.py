"""Issue 13 item 2: every method that predicts whole items (adele, sissi, rpg, chexseg, mlds-mt,
dii-dcr) trains on a volume in 2D mode (slice by slice) and in 3D mode, or refuses at Start with a
clear message."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations.kinds import IGNORE_INDEX, LabelKind, TrainingItem
from napari_labelfx.engine import TrainConfig, Trainer
from napari_labelfx.engine.updates import UpdateKind

SHAPE = (8, 32, 32)


def _volume(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (1, Z, Y, X), class mask, instance ids) of two blobs."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    inst = np.zeros(SHAPE, np.int32)
    for i, (cz, cy, cx) in enumerate(((4, 10, 10), (4, 22, 21)), start=1):
        inst[((zz - cz) / 3) ** 2 + ((yy - cy) / 6) ** 2 + ((xx - cx) / 6) ** 2 <= 1] = i
    mask = (inst > 0).astype(np.int64)
    image = (mask + 0.2 * rng.standard_normal(SHAPE)).astype(np.float32)[None]
    return image, mask, inst


def _items(method: str) -> list[TrainingItem]:
    image, mask, inst = _volume(0)
    image2, mask2, _ = _volume(1)
    if method in ("adele", "sissi"):
        noisy = mask.copy()
        noisy[:, :, 26:] = 1  # a wrong band
        return [TrainingItem(image, noisy, LabelKind.NOISY, name="vol")]
    if method == "rpg":
        partial = np.full(SHAPE, IGNORE_INDEX, np.int64)
        partial[3:5] = mask[3:5]  # two annotated slices, the rest unknown
        return [TrainingItem(image, partial, LabelKind.STRONG, name="vol"),
                TrainingItem(image2, None, LabelKind.NONE, name="unlabelled")]
    if method in ("chexseg", "mlds-mt"):
        tags = np.array([1.0, 1.0], np.float32)
        return [TrainingItem(image, mask, LabelKind.STRONG, name="strong"),
                TrainingItem(image2, None, LabelKind.IMAGE_LEVEL, tags=tags, name="tagged"),
                TrainingItem(image2.copy(), None, LabelKind.NONE, name="unlabelled")]
    if method == "dii-dcr":
        weak = np.full(SHAPE, IGNORE_INDEX, np.int64)
        ids = np.zeros(SHAPE, np.int32)
        for i in (1, 2):
            z, y, x = np.nonzero(inst == i)
            box = (slice(z.min(), z.max() + 1), slice(y.min(), y.max() + 1), slice(x.min(), x.max() + 1))
            weak[box], ids[box] = 1, i
        return [TrainingItem(image, weak, LabelKind.WEAK, instances=ids, name="weak"),
                TrainingItem(image2, mask2, LabelKind.STRONG, name="strong")]
    raise AssertionError(method)


PARAMS = {
    "adele": {"tta_scales": [1.0], "tta_flips": False, "epoch_iters": 2, "min_start_epoch": 1, "threshold": 0.01},
    "sissi": {"tta_scales": [1.0], "tta_flips": False, "epoch_iters": 2, "min_start_epoch": 1, "threshold": 0.01,
              "blur_kernel": 5, "blur_sigma": 1.0, "synthetic_from_start": True},
    "rpg": {},
    "chexseg": {"classifier_fraction": 0.5, "tag_batch": 2},
    "mlds-mt": {"tag_batch": 2, "head_width": 8},
    "dii-dcr": {"tau": 2, "hyper_crop": 16, "strong_crops": 1},
}


@pytest.mark.parametrize("spatial", ["2d", "3d"])
@pytest.mark.parametrize("method", list(PARAMS))
def test_method_trains_on_a_volume_or_refuses_clearly(method, spatial):
    torch.set_num_threads(1)
    patch = (16, 16) if spatial == "2d" else (8, 16, 16)
    cfg = TrainConfig(method=method, spatial=spatial, iterations=6, patch_size=patch, batch_size=2, device="cpu",
                      model={"depth": 2, "width": 4}, val_fraction=0.0, preview_every_s=0, log_every=3,
                      amp=False, method_params=PARAMS[method])
    try:
        trainer = Trainer(cfg, _items(method), ["background", "nucleus"])
    except ValueError as exc:  # a refusal at Start: one clear line that names the method
        assert method in str(exc) and "\n" not in str(exc)
        pytest.skip(f"{method} refuses {spatial} volumes: {exc}")
    updates = list(trainer.updates())
    assert updates[-1].kind == UpdateKind.FINISHED, updates[-1]
    if method in ("adele", "sissi"):  # the whole volume was predicted at each epoch end
        assert len(trainer.method.scores) == 3
    # a preview of a slice the person looks at, with the trained network
    labels, conf = trainer.predict_region(0, (slice(4, 5), slice(0, 32), slice(0, 32)))
    assert labels.shape == (1, 32, 32)
