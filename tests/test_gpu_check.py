"""The prepared GPU check (benchmarks/gpu_check.py behind benchmarks/gpu_check.sh), run on the CPU at tiny sizes."""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("labelfx_gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_step_runs_on_the_cpu_and_one_json_summary_comes_out(gpu_check, tmp_path, capsys):
    target = tmp_path / "summary.json"
    rc = gpu_check.main(["--device", "cpu", "--quick", "--json", str(target)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(target.read_text())
    steps = printed["steps"]
    assert list(steps) == [name for name, _ in gpu_check.STEPS]
    assert rc == 0 and printed["ok"], {k: v.get("error") for k, v in steps.items()}
    for name in ("environment", "train_supervised", "train_mean_teacher"):
        assert steps[name]["status"] == "ok"
    assert steps["train_mean_teacher"]["networks"] == ["ds_heads", "net", "teacher"]
    assert steps["train_supervised"]["iterations"] == 3 and steps["train_supervised"]["its_per_s_median"] > 0
    # the optional steps run where their packages import, and say why not elsewhere
    for name in ("inference_vs_monai", "distributed_prediction"):
        assert steps[name]["status"] in ("ok", "skipped"), steps[name]
        if steps[name]["status"] == "skipped":
            assert steps[name]["reason"]
    if steps["inference_vs_monai"]["status"] == "ok":
        assert steps["inference_vs_monai"]["equal_labels"] > 0.99  # the same network, the same windows
    if steps["distributed_prediction"]["status"] == "ok":
        assert steps["distributed_prediction"]["labels_equal_single_process"]


def test_without_cuda_the_summary_says_so_and_fails(gpu_check, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = gpu_check.main(["--device", "cuda", "--quick"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 1 and not summary["ok"]
    assert summary["steps"]["environment"]["status"] == "failed"
    assert "CUDA is not available" in summary["steps"]["environment"]["error"]
    assert list(summary["steps"]) == ["environment"]  # nothing else is tried


def test_a_failing_step_is_recorded_and_the_next_one_runs(gpu_check, monkeypatch, capsys):
    def broken(args, state):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(gpu_check, "STEPS", [("environment", gpu_check.environment), ("broken", broken),
                                             ("inference_vs_monai", gpu_check.inference_vs_monai)])
    rc = gpu_check.main(["--device", "cpu", "--quick"])
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert rc == 1
    assert steps["broken"]["status"] == "failed" and "planted failure" in steps["broken"]["error"]
    # ran, and skipped with its reason: there is no trained model
    assert steps["inference_vs_monai"]["status"] == "skipped"


def test_the_shell_scripts_parse():
    for script in ("gpu_check.sh", "gpu_check_wheels.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True, timeout=30)
