"""The training loop: learning, control, failures, checkpoints and resume, 3D, previews, new items."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from napari_labelfx.annotations import IGNORE_INDEX, LabelKind, TrainingItem
from napari_labelfx.core.device import DeviceError, select_device
from napari_labelfx.engine import (
    ConfigError,
    TrainConfig,
    Trainer,
    TrainerControl,
    TrainingFailed,
    UpdateKind,
)
from napari_labelfx.engine.optim import AdamW, lr_factor
from napari_labelfx.methods import Method, losses, register_method

torch.set_num_threads(1)
TINY = {"depth": 2, "width": 8}


def _disks(seed: int, n: int = 48, sparse: bool = False) -> tuple[TrainingItem, np.ndarray]:
    """A noisy image of bright disks; the target is the full mask, or scribbles when ``sparse``
    (every fourth row through the disks as foreground, every eighth row elsewhere as background)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    mask = np.zeros((n, n), np.int64)
    for _ in range(3):
        cy, cx = rng.integers(8, n - 8, 2)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 30] = 1
    image = (mask + rng.normal(0, 0.35, (n, n))).astype(np.float32)[None]
    target = mask
    if sparse:  # a few strokes: the centre row of each disk (fg) and two background lines
        target = np.full((n, n), IGNORE_INDEX, np.int64)
        for cy in np.unique(np.argwhere(mask)[:, 0])[::4]:
            row = np.flatnonzero(mask[cy])
            target[cy, row] = 1
        near = np.zeros_like(mask, bool)  # background strokes keep 2 pixels away from the disks
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                near |= np.roll(mask, (dy, dx), axis=(0, 1)) > 0
        for r in range(2, n, 8):
            target[r, ~near[r]] = 0
    kind = LabelKind.SCRIBBLE if sparse else LabelKind.STRONG
    return TrainingItem(image, target, kind, name=f"disks{seed}"), mask


def _full_loss(model, items_and_masks) -> float:
    model.eval()
    with torch.no_grad():
        total = 0.0
        for item, mask in items_and_masks:
            logits = model(torch.from_numpy(item.image)[None]).logits
            total += losses.cross_entropy(logits, torch.from_numpy(mask)[None]).item()
    return total / len(items_and_masks)


def _cfg(**kw) -> TrainConfig:
    base = dict(iterations=8, patch_size=(32, 32), batch_size=4, device="cpu", model=dict(TINY),
                log_every=4, val_every=4, preview_every_s=0, val_fraction=0.0, lr=3e-3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("method, sparse", [("supervised", False), ("scribble", True)])
def test_a_few_iterations_lower_the_loss(method, sparse):
    data = [_disks(s, sparse=sparse) for s in range(2)]
    trainer = Trainer(_cfg(method=method, iterations=40, log_every=10), [d[0] for d in data], ["bg", "fg"])
    before = _full_loss(trainer.model, data)
    result = trainer.run()
    after = _full_loss(trainer.model, data)
    assert result.stopped_reason == "done" and result.iterations == 40
    assert after < 0.7 * before, (before, after)


def test_pause_resume_and_stop():
    item, _ = _disks(0)
    control = TrainerControl()
    trainer = Trainer(_cfg(iterations=10_000, log_every=2), [item], ["bg", "fg"], control=control)
    kinds = []
    timer = None
    for upd in trainer.updates():
        kinds.append(upd.kind)
        if upd.kind == UpdateKind.PROGRESS and UpdateKind.PAUSED not in kinds:
            control.pause()
            timer = threading.Timer(0.3, control.resume)  # another thread resumes
            timer.start()
        elif upd.kind == UpdateKind.RESUMED:
            stop_at = upd.iteration
            control.stop()
    timer.join()
    assert kinds.index(UpdateKind.PAUSED) < kinds.index(UpdateKind.RESUMED)
    assert kinds[-1] == UpdateKind.FINISHED
    assert trainer.result.stopped_reason == "stopped"
    assert trainer.result.iterations == stop_at  # stopped right after resuming, before another step


@register_method
class _Exploding(Method):
    name = "_test_exploding"
    defaults = {"message": "CUDA out of memory. Tried to allocate 2.00 GiB"}

    def loss(self, batch, outputs, ctx):
        if ctx.iteration >= 2:
            raise RuntimeError(self.params["message"])
        return losses.cross_entropy(outputs["net"].logits, batch["target"]), {}


def test_a_failing_step_yields_failed_with_a_reason():
    item, _ = _disks(0)
    trainer = Trainer(_cfg(method="_test_exploding", log_every=1), [item], ["bg", "fg"])
    ups = list(trainer.updates())
    assert ups[-1].kind == UpdateKind.FAILED
    assert ups[-1].reason == "out of GPU memory: reduce batch or patch size (or use a smaller model preset)"
    assert ups[-1].iteration == 2 and trainer.result.stopped_reason == "failed"
    other = Trainer(_cfg(method="_test_exploding", method_params={"message": "boom"}), [item], ["bg", "fg"])
    with pytest.raises(TrainingFailed, match="training failed at iteration 2: RuntimeError: boom"):
        other.run()


def test_checkpoints_best_and_last_and_resume_continues(tmp_path):
    data = [_disks(s) for s in range(2)]
    items = [d[0] for d in data]
    cfg = _cfg(iterations=8, val_fraction=0.2, val_every=4, output_dir=str(tmp_path / "run"), val_block=8)
    ups = list(Trainer(cfg, items, ["bg", "fg"]).updates())
    assert ups[-1].kind == UpdateKind.FINISHED, ups[-1]
    ckpts = [(u.iteration, u.which) for u in ups if u.kind == UpdateKind.CHECKPOINT]
    assert (4, "best") in ckpts and (8, "last") in ckpts
    assert any(u.kind == UpdateKind.VALIDATION for u in ups)
    for which in ("best", "last"):
        folder = tmp_path / "run" / which
        config = json.loads((folder / "config.json").read_text())
        for key in ("class_names", "multilabel", "train_config", "method", "normalisation", "history"):
            assert key in config
        assert config["class_names"] == ["bg", "fg"] and config["method"] == "supervised"
        state = torch.load(folder / "training_state.pt", weights_only=True)  # no pickled objects
        assert state["iteration"] in (4, 8)
    assert ups[-1].best_path.endswith("best") and ups[-1].last_path.endswith("last")

    resumed = Trainer(_cfg(iterations=12, resume_from=str(tmp_path / "run" / "last"), log_every=2,
                           output_dir=str(tmp_path / "run2")), items, ["bg", "fg"])
    ups = list(resumed.updates())
    assert ups[0].kind == UpdateKind.STARTED and ups[0].start_iteration == 8
    progress = [u.iteration for u in ups if u.kind == UpdateKind.PROGRESS]
    assert progress[0] == 10 and progress[-1] == 12
    assert resumed.result.iterations == 12
    saved = json.loads((tmp_path / "run2" / "last" / "config.json").read_text())
    assert saved["iteration"] == 12 and len(saved["history"]) > len(progress)  # history continues


def test_3d_patch_mode_runs_and_previews_a_slice():
    rng = np.random.default_rng(0)
    vol = np.zeros((12, 24, 24), np.int64)
    vol[3:9, 6:16, 6:16] = 1
    target = np.full_like(vol, IGNORE_INDEX)
    target[4] = vol[4]
    target[8] = vol[8]  # a partially annotated volume
    item = TrainingItem((vol + rng.normal(0, 0.3, vol.shape)).astype(np.float32)[None], target, LabelKind.STRONG)
    trainer = Trainer(_cfg(spatial="3d", patch_size=(8, 16, 16), iterations=4, log_every=2, preview_every_s=0.001),
                      [item], ["bg", "fg"])
    ups = list(trainer.updates())
    assert ups[-1].kind == UpdateKind.FINISHED, ups[-1]
    assert trainer.model.config.spatial_dims == 3
    previews = [u for u in ups if u.kind == UpdateKind.PREVIEW]
    assert previews and previews[0].region == ((8, 9), (0, 24), (0, 24))  # middle annotated slice
    assert previews[0].labels.shape == (1, 24, 24)
    labels, conf = trainer.predict_region(0, (slice(2, 10), slice(0, 12), slice(4, 20)))
    assert labels.shape == (8, 12, 16) and conf.shape == (8, 12, 16) and conf.min() >= 0.5 - 1e-6


def test_previews_come_early_follow_requests_and_new_items_apply():
    item, _ = _disks(0)
    other, _ = _disks(1)
    trainer = Trainer(_cfg(iterations=12, log_every=2, preview_every_s=1000), [item, other], ["bg", "fg"])
    gen = trainer.updates()
    kinds = []
    for upd in gen:
        kinds.append(upd.kind)
        if upd.kind == UpdateKind.PREVIEW:
            break
    # the first preview comes right after the first PROGRESS: default image 0, whole image
    assert kinds[-2:] == [UpdateKind.PROGRESS, UpdateKind.PREVIEW]
    assert upd.iteration == 2 and upd.image_index == 0 and upd.labels.shape == (48, 48)
    trainer.request_preview(1, (slice(10, 30), slice(0, 16)))
    nxt = next(u for u in gen if u.kind == UpdateKind.PREVIEW)
    assert nxt.iteration == 3 and nxt.image_index == 1 and nxt.labels.shape == (20, 16)
    trainer.set_items([item, other])  # the GUI re-sends unchanged annotations at every refresh: a no-op
    nxt = next(gen)
    assert nxt.kind != UpdateKind.LOG and trainer._pending_items is None
    scribbles = TrainingItem(item.image, np.full((48, 48), IGNORE_INDEX, np.int64), LabelKind.SCRIBBLE)
    scribbles.target[5, :] = 0
    trainer.set_items([scribbles, other])
    logs = [u.message for u in gen if u.kind == UpdateKind.LOG]
    assert sum("updated annotations" in m for m in logs) == 1
    assert trainer.result.stopped_reason == "done"
    assert trainer._sampler.items[0].target is not None and (trainer._sampler.items[0].target == 0).sum() == 48


def test_too_few_pixels_for_validation_is_logged():
    item, _ = _disks(0, sparse=True)
    item.target[item.target >= 0] = IGNORE_INDEX
    item.target[5, 5:10] = 1
    item.target[40, 5:10] = 0
    ups = list(Trainer(_cfg(iterations=2, val_fraction=0.2), [item], ["bg", "fg"]).updates())
    logs = [u.message for u in ups if u.kind == UpdateKind.LOG]
    assert any("too few annotated pixels" in m for m in logs)
    assert ups[-1].kind == UpdateKind.FINISHED


@register_method
class _Frozen(Method):
    """A loss without gradient: the weights stay put, so the validation loss never improves."""

    name = "_test_frozen"

    def loss(self, batch, outputs, ctx):
        return outputs["net"].logits.sum() * 0.0, {}


def test_early_stopping_on_a_flat_validation_loss():
    item, _ = _disks(0)
    cfg = _cfg(method="_test_frozen", iterations=50, val_fraction=0.3, val_every=1, early_stopping=2,
               weight_decay=0.0, val_block=8, model={**TINY, "norm": "group"})
    trainer = Trainer(cfg, [item], ["bg", "fg"])
    trainer.run()
    assert trainer.result.stopped_reason == "early-stopping" and trainer.result.iterations == 3


def test_multilabel_training_runs():
    rng = np.random.default_rng(0)
    target = (rng.random((2, 32, 32)) > 0.5).astype(np.uint8)
    target[:, :4] = 255
    item = TrainingItem(target.astype(np.float32), target, LabelKind.STRONG)
    trainer = Trainer(_cfg(iterations=4, preview_every_s=0.001, log_every=2), [item], ["a", "b"], multilabel=True)
    ups = list(trainer.updates())
    assert ups[-1].kind == UpdateKind.FINISHED, ups[-1]
    preview = next(u for u in ups if u.kind == UpdateKind.PREVIEW)
    assert preview.labels.shape == (2, 32, 32) and set(np.unique(preview.labels)) <= {0, 1}


def test_bad_settings_are_clear_errors():
    item, _ = _disks(0)
    with pytest.raises(ConfigError, match="patch_size must have 3 sizes"):
        TrainConfig(spatial="3d", patch_size=(32, 32))
    with pytest.raises(ConfigError, match="unknown training setting"):
        TrainConfig.from_dict({"iters": 3})
    with pytest.raises(ConfigError, match="unknown model preset"):
        Trainer(_cfg(preset="huge"), [item], ["bg", "fg"])
    with pytest.raises(ConfigError, match="in_channels=3 contradicts"):
        Trainer(_cfg(model={"in_channels": 3}), [item], ["bg", "fg"])
    with pytest.raises(ValueError, match="3D patch training needs volumes"):
        Trainer(_cfg(spatial="3d", patch_size=(8, 8, 8)), [item], ["bg", "fg"])
    cfg = _cfg(iterations=5, augment={"flip": False})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_select_device():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            select_device("cuda")


def test_adamw_matches_torch_and_schedule_shape():
    torch.manual_seed(0)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = AdamW([{"params": [a.weight], "weight_decay": 0.1}, {"params": [a.bias], "weight_decay": 0.0}], lr=0.01)
    ref = torch.optim.AdamW([{"params": [b.weight], "weight_decay": 0.1}, {"params": [b.bias], "weight_decay": 0.0}],
                            lr=0.01)
    x = torch.randn(8, 5)
    for _ in range(5):
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6) and torch.allclose(a.bias, b.bias, atol=1e-6)
    state = ours.state_dict()
    fresh = AdamW([{"params": [a.weight]}, {"params": [a.bias]}], lr=0.01)
    fresh.load_state_dict(state)
    assert fresh.state[a.weight]["step"] == 5
    assert lr_factor(0, 100, 10) == pytest.approx(0.1) and lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, floor=0.01) == pytest.approx(0.01)


def test_adamw_works_under_a_grad_scaler():
    # the CUDA mixed-precision path drives the optimizer through GradScaler; CPU scaling checks the duck typing
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 2)
    b = torch.nn.Linear(4, 2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(6, 4)
    for model, opt in ((a, AdamW(a.parameters(), lr=0.01, weight_decay=0.0)),
                       (b, torch.optim.AdamW(b.parameters(), lr=0.01, weight_decay=0.0))):
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        for _ in range(3):
            opt.zero_grad()
            scaler.scale(model(x).pow(2).mean()).backward()
            scaler.step(opt)
            scaler.update()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)


def test_a_bad_preview_request_falls_back_to_the_default_with_a_warning():
    item, _ = _disks(0)
    trainer = Trainer(_cfg(iterations=2, log_every=1), [item], ["bg", "fg"])
    trainer.request_preview(5, None)  # no such image
    ups = list(trainer.updates())
    warn = [u for u in ups if u.kind == UpdateKind.LOG and "out of range" in u.message]
    preview = [u for u in ups if u.kind == UpdateKind.PREVIEW]
    assert warn and preview and preview[0].image_index == 0
    with pytest.raises(ValueError, match="empty or outside the image"):
        trainer.predict_region(0, (slice(60, 70), slice(0, 5)))
