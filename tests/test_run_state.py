"""The training loop's bookkeeping: loss window, preview schedule, best model."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from napari_labelfx.engine.run_state import PREVIEW_TIME_SHARE, BestModel, LossWindow, PreviewSchedule


def test_loss_window_means_and_excluded_time():
    w = LossWindow(t_start=0.0)
    w.add(torch.tensor(1.0), {"ce": torch.tensor(0.5), "dice": 0.25})
    w.add(torch.tensor(3.0), {"ce": torch.tensor(1.5), "dice": 0.75})
    w.exclude(1.0)  # e.g. a validation: not training time
    mean, terms, its = w.close(now=3.0)
    assert mean == pytest.approx(2.0) and terms == pytest.approx({"ce": 1.0, "dice": 0.5})
    assert its == pytest.approx(2 / 2.0)
    assert w.n == 0 and w.loss is None and w.t_start == 3.0


def test_preview_schedule_first_after_progress_then_stretched():
    s = PreviewSchedule(every_s=1.0, last=0.0, first_due=True, gap=1.0)
    assert not s.due(now=0.5, progress_sent=False)
    assert s.due(now=0.5, progress_sent=True)
    s.done(t_before=0.5, t_after=1.0)  # a 0.5 s preview: the next waits so previews stay a small share
    assert s.gap == pytest.approx(0.5 / PREVIEW_TIME_SHARE)
    assert not s.due(now=2.0, progress_sent=True) and s.due(now=1.0 + s.gap, progress_sent=True)
    assert not PreviewSchedule.start(0.0).due(now=1e9, progress_sent=True)  # timed previews off


def test_best_model_keeps_the_best_weights_and_counts_bad_validations():
    net = nn.Linear(2, 1)
    best = BestModel()
    assert best.record(1.0, {"net": net})
    kept = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    assert not best.record(2.0, {"net": net}) and best.bad_validations == 1 and best.last_val == 2.0
    best.restore({"net": net})
    assert torch.equal(net.weight, kept)
    best.reset()
    assert math.isinf(best.best_val) and best.bad_validations == 0 and best.best_or_none is None


def test_wall_rate_counts_previews_but_not_pauses():
    w = LossWindow(t_start=0.0)
    for _ in range(10):
        w.add(torch.tensor(1.0), {})
    w.exclude(5.0)  # a preview: not training, but the person waited for it
    w.exclude(100.0, waited=False)  # a pause: neither
    _, _, its = w.close(now=115.0)
    assert its == pytest.approx(1.0)  # 10 steps in 10 s of training
    assert w.wall_its_per_s == pytest.approx(10 / 15)  # what the progress bar shows advancing
    assert w.work_s == 0.0  # the next window starts clean
