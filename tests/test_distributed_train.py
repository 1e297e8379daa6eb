"""Training in several processes (engine/distributed.py, ``labelfx train --nproc``): 2 gloo ranks on 127.0.0.1.

The ranks run in spawned processes (``_distributed_worker.rank_main``) that write what they end with
(weights, first patches, results) to files; every process is joined with a timeout and killed when it
overruns.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_labelfx._sample_data import make_nuclei_2d
from napari_labelfx.cli import main
from napari_labelfx.engine import ConfigError, TrainConfig
from napari_labelfx.engine.distributed import check_config, distributed_problem, local_launch_command
from napari_labelfx.methods import create_method

from ._distributed_worker import RUNS, WORLD, rank_main

JOIN_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=rank_main, args=(r, port, str(folder))) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(JOIN_TIMEOUT_S)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    assert [p.exitcode for p in procs] == [0] * WORLD, "a rank failed (see its output above)"
    return folder


def _load(folder: Path, name: str, rank: int) -> dict:
    return torch.load(folder / f"{name}_rank{rank}.pt", weights_only=False)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", [r[0] for r in RUNS])
def test_every_rank_ends_with_the_same_weights(two_ranks, name):
    r0, r1 = _load(two_ranks, name, 0), _load(two_ranks, name, 1)
    # each rank drew its own patches ...
    assert not np.array_equal(r0["origins"], r1["origins"])
    # ... and yet every network (teacher, heads, second network) is the same on both ranks
    assert r0["models"].keys() == r1["models"].keys() and len(r0["models"]) >= 1
    if name != "supervised":  # (the supervised run validates: rank 0 ends with its best weights, compared below)
        for net in r0["models"]:
            _assert_same_weights(r0["models"][net], r1["models"][net])
    # the reported loss is the mean over the ranks: the same numbers on both
    assert r0["losses"] == r1["losses"] and all(np.isfinite(r0["losses"]))


def test_extra_networks_train_on_every_rank(two_ranks):
    teacher = _load(two_ranks, "mean_teacher", 0)["models"]
    assert {"net", "ds_heads", "teacher"} <= set(teacher)
    dual = _load(two_ranks, "dual", 0)["models"]
    assert {"net", "net2"} <= set(dual)
    assert not all(torch.equal(dual["net"][k], dual["net2"][k]) for k in dual["net"])  # two networks, not one


def test_rank_zero_validates_and_writes_the_model_folder(two_ranks):
    from safetensors.torch import load_file

    from napari_labelfx.inference import Predictor

    r0, r1 = _load(two_ranks, "supervised", 0), _load(two_ranks, "supervised", 1)
    assert r0["val"] and not r1["val"]  # validation on rank 0 only
    assert r1["best_dir"] == "None" and r1["last_dir"] == "None"  # rank 1 writes nothing
    last = Path(r0["last_dir"])
    assert last == two_ranks / "supervised" / "last"
    # rank 0's last checkpoint holds the weights every rank ended with (rank 0 then took its best ones)
    _assert_same_weights(load_file(last / "model.safetensors"), r1["models"]["net"])
    predictor = Predictor.from_folder(two_ranks / "supervised", device="cpu")
    pred = predictor(np.random.default_rng(0).random((40, 40), dtype=np.float32))
    assert pred.labels.shape == (40, 40)


def test_a_refused_method_is_named_on_every_rank(two_ranks):
    for rank in range(WORLD):
        message = (two_ranks / f"refusal_rank{rank}.txt").read_text()
        assert "dii-dcr" in message and "dii=false" in message


def test_forest_auto_and_refused_methods_are_clear_before_any_process_starts(tmp_path, capsys):
    for method in ("forest", "auto"):
        with pytest.raises(ConfigError, match=f"method '{method}' cannot train in 2 processes"):
            check_config(TrainConfig(method=method), 2)
    check_config(TrainConfig(method="forest"), 1)  # one process: nothing to refuse
    assert distributed_problem(create_method("dii-dcr")) and not distributed_problem(create_method("mlds-mt"))
    with pytest.raises(ConfigError, match="time_budget_s"):
        check_config(TrainConfig(time_budget_s=10.0), 2)
    rc = main(["train", "--images", "a.tif", "--labels", "b.tif", "--out", str(tmp_path / "m"), "--nproc", "2",
               "--method", "forest"])
    assert rc == 2 and "method 'forest' cannot train in 2 processes" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    assert main(["train", "--images", "a.tif", "--labels", "b.tif", "--out", str(tmp_path / "m"),
                 "--nproc", "0"]) == 2


def test_local_launch_command_uses_torchrun_on_the_loopback():
    cmd = local_launch_command(3, ["train", "--out", "m"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--nproc-per-node=3" in cmd and "--local-addr=127.0.0.1" in cmd
    assert cmd[-5:] == ["-m", "napari_labelfx", "train", "--out", "m"]


def test_labelfx_train_nproc_2_writes_a_loadable_model_folder(tmp_path):
    from napari_labelfx.inference import Predictor

    d = make_nuclei_2d(seed=3, size=64)
    img, lab = tmp_path / "img.tif", tmp_path / "lab.tif"
    tifffile.imwrite(img, (d["image"] * 1000).astype(np.uint16))
    tifffile.imwrite(lab, d["strong"].astype(np.uint16))
    out = tmp_path / "model"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "napari_labelfx", "train", "--images", str(img), "--labels", str(lab), "--out",
         str(out), "--iters", "4", "--patch", "32", "--batch", "2", "--device", "cpu", "--nproc", "2"],
        capture_output=True, text=True, timeout=JOIN_TIMEOUT_S, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # rank 0 reports, rank 1 is silent
    assert (out / "last" / "model.safetensors").is_file()
    predictor = Predictor.from_folder(out, device="cpu")
    assert predictor(d["image"]).labels.shape == (64, 64)
