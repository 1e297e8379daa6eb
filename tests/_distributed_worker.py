"""The rank side of tests/test_distributed_train.py (a module of its own: spawned ranks import only this)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from napari_labelfx.annotations import LabelKind, TrainingItem
from napari_labelfx.engine import ConfigError, TrainConfig

TINY = {"depth": 2, "width": 8}
WORLD = 2


def _items() -> list[TrainingItem]:
    """Two labelled images of bright disks and one unlabelled one (for the mean teacher)."""
    out = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:48, :48]
        mask = np.zeros((48, 48), np.int64)
        for cy, cx in rng.integers(8, 40, (3, 2)):
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 30] = 1
        image = (mask + rng.normal(0, 0.35, mask.shape)).astype(np.float32)[None]
        target = None if seed == 2 else mask
        out.append(TrainingItem(image, target, LabelKind.STRONG if target is not None else LabelKind.NONE,
                                name=f"disks{seed}"))
    return out


#: (name, method, params, validation fraction) of the runs each pair of ranks trains, one after the other
RUNS = [
    ("supervised", "supervised", {}, 0.25),
    ("mean_teacher", "mlds-mt", {}, 0.0),  # net + deep heads + EMA teacher
    ("dual", "dii-dcr", {"dii": False}, 0.0),  # two networks trained together (DCR)
    ("rpg", "rpg", {}, 0.0),  # a reference pool and unlabelled patches through the network in each step
]


def rank_main(rank: int, port: int, folder: str) -> None:
    """One rank: join the group, train every run of ``RUNS``, save what the test compares."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    if os.path.exists("/sys/class/net/lo"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    from napari_labelfx.data import sampling
    from napari_labelfx.engine import distributed
    from napari_labelfx.engine.trainer import Trainer

    origins: list[np.ndarray] = []
    original = sampling.PatchSampler.sample

    def recording(self, batch_size):  # the first batch of every run: which patches this rank drew
        batch = original(self, batch_size)
        if len(origins) < 1:
            origins.append(np.asarray(batch["origin"]).copy())
        return batch

    sampling.PatchSampler.sample = recording
    run = distributed.init_from_env("cpu", timeout_s=60)
    assert run is not None and run.backend == "gloo"
    out = Path(folder)
    try:
        for name, method, params, val_fraction in RUNS:
            origins.clear()
            cfg = TrainConfig(method=method, method_params=params, iterations=6, batch_size=2, patch_size=(32, 32),
                              device="cpu", model=dict(TINY), log_every=2, val_every=3, preview_every_s=0,
                              val_fraction=val_fraction, val_block=8, output_dir=str(out / name), lr=3e-3)
            trainer = Trainer(cfg, _items(), ["background", "fg"])
            result = trainer.run()
            torch.save({"models": {n: m.state_dict() for n, m in trainer.models.items()},
                        "origins": origins[0], "best_dir": str(result.best_dir), "last_dir": str(result.last_dir),
                        "losses": [h["loss"] for h in result.history if h["kind"] == "train"],
                        "val": [h for h in result.history if h["kind"] == "val"]},
                       out / f"{name}_rank{rank}.pt")
        try:  # a method that cannot train in several processes: refused at start, by name
            Trainer(TrainConfig(method="dii-dcr", device="cpu", model=dict(TINY), patch_size=(32, 32)),
                    _items(), ["background", "fg"])
            message = ""
        except ConfigError as exc:
            message = str(exc)
        (out / f"refusal_rank{rank}.txt").write_text(message)
    finally:
        distributed.shutdown()


