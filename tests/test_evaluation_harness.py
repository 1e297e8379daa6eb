"""``run_eval`` end to end on tiny synthetic dataset folders (a few iterations on CPU)."""
import argparse
import json

import numpy as np
import pytest
import tifffile
import torch

from napari_labelfx.cli import eval as eval_command
from napari_labelfx.evaluation import EvalError, load_dataset, run_eval
from tests.test_evaluation_helpers import make_dataset


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_instance_set_trains_predicts_and_scores(tmp_path):
    root = make_dataset(tmp_path / "nuclei", n=6)
    out = tmp_path / "res" / "result.json"
    r = run_eval(root, "supervised", strong=2, others="scribble", iters=40, patch=32, batch=4, device="cpu",
                 out=out, seed=1)
    assert r["method"] == "supervised" and r["seed"] == 1 and r["device"] == "cpu"
    assert r["split"]["sizes"] == {"strong": 2, "others": 2, "test": 2}
    split = r["split"]
    assert not (set(split["test"]) & set(split["strong"] + split["others"]))
    assert r["iterations"] == 40 and r["patch_size"] == [32, 32] and r["batch_size"] == 4
    vals = r["validation"]
    assert [v["iteration"] for v in vals] == [8, 16, 24, 32, 40]  # every iterations // 5
    assert r["best_iteration"] == min(vals, key=lambda v: v["val_loss"])["iteration"]
    m = r["metrics"]
    for key in ("AP50", "AP75", "AP", "AR"):
        assert 0.0 <= m[key] <= 1.0 and m[key] == m["instances"][key]
    assert m["max_dets"] == 1000
    assert m["instances_box"]["iou_type"] == "box" and 0.0 <= m["instances_box"]["AP50"] <= 1.0
    ds = load_dataset(root)
    n_true = sum(len(np.unique(ds.load(s).mask)) - 1 for s in split["test"])
    assert m["instances"]["n_true"] == n_true
    assert list(m["dice"]) == ["nucleus"]
    assert m["dice"]["nucleus"] > 0.7  # the blobs are easy: 40 steps learn them
    assert r["seconds"]["train"] > 0
    assert json.loads(out.read_text())["metrics"]["mean_dice"] == pytest.approx(m["mean_dice"])
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left no temporary file


def test_multilabel_and_semantic_sets_run(tmp_path):
    r = run_eval(make_dataset(tmp_path / "ml", task="multilabel", n=5), "supervised", strong=1, others="box",
                 iters=2, patch=32, batch=2, device="cpu")
    assert r["classes"] == ["background", "a", "b"]
    assert sorted(r["metrics"]["dice"]) == ["a", "b"] and "AP" not in r["metrics"]
    r = run_eval(make_dataset(tmp_path / "sem", task="semantic", n=5), "scribble", strong=0, others="scribble",
                 iters=2, patch=32, batch=2, device="cpu", test=2)
    assert sorted(r["metrics"]["dice"]) == ["a", "b"] and r["split"]["sizes"]["others"] == 3


def test_bad_options_raise_clear_errors(tmp_path):
    root = make_dataset(tmp_path / "set", n=5)
    with pytest.raises(EvalError, match="no training image carries a label"):
        run_eval(root, "supervised", strong=0, others="none", iters=1, device="cpu")
    with pytest.raises(ValueError, match="unknown label kind"):
        run_eval(root, "supervised", others="polygons", iters=1, device="cpu")
    with pytest.raises(ValueError, match="strong=9"):
        run_eval(root, "supervised", strong=9, iters=1, device="cpu")


def test_cli_entry_point(tmp_path, capsys):
    root = make_dataset(tmp_path / "set", n=5)
    parser = eval_command.add_arguments(argparse.ArgumentParser(prog="labelfx eval"))
    args = parser.parse_args(["--dataset", str(root), "--method", "supervised", "--strong", "2", "--iters", "2",
                              "--patch", "32", "--batch", "2", "--device", "cpu", "--others", "ellipse",
                              "--out", str(tmp_path / "r.json"), "--instance-split", "watershed", "--max-dets", "50"])
    assert eval_command.run(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["others"] == "ellipse" and (tmp_path / "r.json").is_file()
    assert printed["metrics"]["instances"]["split"] == "watershed" and printed["metrics"]["max_dets"] == 50
    # bad input: message on stderr, exit code 2, nothing written
    tifffile.imwrite(root / "masks" / "im0.tif", np.zeros((8, 8), np.uint16))
    args = parser.parse_args(["--dataset", str(root), "--method", "supervised", "--test", "4", "--strong", "1",
                              "--iters", "1", "--device", "cpu", "--out", str(tmp_path / "bad.json")])
    assert eval_command.run(args) == 2
    err = capsys.readouterr().err
    assert "does not match" in err and "im0" in err
    assert not (tmp_path / "bad.json").exists()
    args = parser.parse_args(["--dataset", str(tmp_path / "missing"), "--method", "supervised"])
    assert eval_command.run(args) == 2
    args = parser.parse_args(["--dataset", str(root), "--method", "no-such-method", "--iters", "1",
                              "--device", "cpu", "--test", "2", "--strong", "1"])
    tifffile.imwrite(root / "masks" / "im0.tif", np.zeros((64, 64), np.uint16))
    assert eval_command.run(args) == 2
    assert "no-such-method" in capsys.readouterr().err


def test_scale_trains_small_and_scores_at_full_size(tmp_path):
    root = make_dataset(tmp_path / "nuclei", n=6)
    r = run_eval(root, "supervised", strong=2, others="none", iters=30, patch=32, batch=4, device="cpu",
                 scale=0.5, seed=1)
    assert r["scale"] == 0.5
    # scored against the full-size masks: the instance count is that of the original test masks
    ds = load_dataset(root)
    n_true = sum(len(np.unique(ds.load(s).mask)) - 1 for s in r["split"]["test"])
    assert r["metrics"]["instances"]["n_true"] == n_true
    assert r["metrics"]["dice"]["nucleus"] > 0.5
    with pytest.raises(EvalError, match="scale"):
        run_eval(root, "supervised", strong=2, iters=1, device="cpu", scale=-1)


def test_augment_switches_reach_the_engine(tmp_path):
    root = make_dataset(tmp_path / "nuclei", n=5)
    r = run_eval(root, "supervised", strong=2, iters=2, patch=32, batch=2, device="cpu",
                 augment={"flip": False, "rot90": False})
    assert r["augment"]["flip"] is False and r["augment"]["rot90"] is False and r["augment"]["intensity"] is True
    with pytest.raises(EvalError, match="unknown augmentation"):
        run_eval(root, "supervised", strong=2, iters=1, device="cpu", augment={"mirror": True})
    parser = eval_command.add_arguments(argparse.ArgumentParser(prog="labelfx eval"))
    args = parser.parse_args(["--dataset", str(root), "--method", "supervised", "--iters", "1", "--device", "cpu",
                              "--augment", "flip"])
    assert eval_command.run(args) == 2  # "--augment expects KEY=VALUE"


def test_noisy_runs_score_their_training_labels(tmp_path):
    root = make_dataset(tmp_path / "nuclei", n=6)
    from napari_labelfx.evaluation.derive import DeriveParams

    # no border jitter: the labels are the true objects minus the dropped half
    common = dict(strong=0, others="noisy-drop:0.5", iters=6, patch=32, batch=2, device="cpu", seed=0,
                  derive_params=DeriveParams(jitter_min=0, jitter_max=0))
    base = run_eval(root, "supervised", **common)["metrics"]["training_labels"]
    assert base["images"] == 4 and "corrected" not in base
    # painted objects are exact (a few touching ones merge) but half are missing: AP and AR ~ 1/2
    assert 0.3 < base["initial"]["AP50"] < 0.7 and 0.3 < base["initial"]["AR"] < 0.7
    fixed = run_eval(root, "adele", epoch_iters=3, tta_scales=[1.0], tta_flips=False, **common)
    lab = fixed["metrics"]["training_labels"]
    assert lab["initial"] == base["initial"]  # same split, seed and derivation
    assert set(lab["corrected"]) == {"AP50", "AP75", "AP", "AR"}
    assert isinstance(lab["correction_start_epoch"], dict)
    # full masks are not scored: nothing was derived
    clean = run_eval(root, "supervised", **{**common, "others": "strong"})
    assert "training_labels" not in clean["metrics"]
