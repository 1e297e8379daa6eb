"""Issue 13 item 8: two saturated bright nuclei must not dim every other nucleus (robust white point),
and intensity augmentation covers dimmer objects."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_labelfx.core.normalize import channel_percentiles, percentile_normalise
from napari_labelfx.data.augment import AugmentConfig
from napari_labelfx.inference import Predictor
from napari_labelfx.models import ModelConfig, SegOutput


def _nuclei(saturated: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 12-bit 512x512 image of dim nuclei (and two saturated mitotic ones), and the dim nuclei mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:512, :512]
    mask = np.zeros((512, 512), bool)
    for cy in range(32, 512, 64):
        for cx in range(32, 512, 64):
            mask |= (yy - cy - rng.integers(-8, 9)) ** 2 + (xx - cx - rng.integers(-8, 9)) ** 2 <= 9**2
    image = 100 + 800 * mask + rng.normal(0, 20, mask.shape)
    if saturated:
        for cy, cx in ((96, 160), (352, 416)):
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= 13**2
            image[blob] = 4095
            mask &= ~blob
    return np.clip(image, 0, 4095).astype(np.uint16), mask


def test_robust_white_point_ignores_two_saturated_nuclei():
    clean, _ = _nuclei(False)
    bright, mask = _nuclei(True)
    plain_hi = channel_percentiles(bright[None].astype(np.float32))[1][0]
    robust_hi = channel_percentiles(bright[None].astype(np.float32), robust=True)[1][0]
    clean_hi = channel_percentiles(clean[None].astype(np.float32), robust=True)[1][0]
    assert plain_hi > 3000  # the plain 99.8th percentile sits on the saturated nuclei
    assert abs(robust_hi - clean_hi) < 0.1 * clean_hi
    # an image without outliers keeps its plain white point
    assert channel_percentiles(clean[None].astype(np.float32))[1][0] == clean_hi
    dim = percentile_normalise(bright[None])[0][mask].mean()
    dim_plain = percentile_normalise(bright[None], robust=False)[0][mask].mean()
    assert dim > 0.8 and dim_plain < 0.3


class Threshold(nn.Module):
    """Stands for a model trained on clean images: nucleus where the normalised image exceeds 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.config = ModelConfig(spatial_dims=2, depth=2, width=4, num_classes=2)
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        fg = (x[:, :1] - 0.5) * self.scale
        return SegOutput(logits=torch.cat([-fg, fg], dim=1), features=x, decoder=[x])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def test_prediction_still_finds_the_dim_nuclei():
    bright, mask = _nuclei(True)
    robust = Predictor(Threshold(), {"normalisation": {"low": 1.0, "high": 99.8, "robust": True}},
                       device="cpu", channels_last=False)
    old = Predictor(Threshold(), {"normalisation": {"low": 1.0, "high": 99.8}}, device="cpu", channels_last=False)
    assert robust.robust and not old.robust  # models saved before keep their normalisation
    found = robust(bright, roi_size=(256, 256)).labels == 1
    assert _dice(found & ~(bright >= 4095), mask) > 0.9
    assert _dice(old(bright, roi_size=(256, 256)).labels == 1, mask) < 0.2


def test_intensity_augmentation_covers_dimmer_objects():
    cfg = AugmentConfig()
    assert cfg.intensity and cfg.gain[0] <= 0.6 and cfg.gain[1] >= 1.6
