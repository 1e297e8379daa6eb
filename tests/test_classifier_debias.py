"""Debiasing image-level classifier (evaluation/debias_classifier.py) on a tiny synthetic dataset folder."""
from __future__ import annotations

import argparse
import json
import math

import cv2
import numpy as np
import pytest
import torch

from napari_labelfx.cli import debias
from napari_labelfx.evaluation.debias_classifier import (
    ClassifierConfig,
    ClassifierDataError,
    DebiasClassifier,
    auc_score,
    load_classification_data,
    parse_skin_type,
    stratified_split,
    train_and_evaluate,
    train_classifier,
)

torch.set_num_threads(1)


@pytest.fixture()
def dataset(tmp_path):
    """8 images 48x48: 'melanoma' has a dark lesion, 'nevus' a light one; skin types in a column."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,diagnosis,fitz"]
    for i in range(8):
        skin = np.array([225, 180, 160]) if i % 2 else np.array([150, 105, 80])
        img = np.clip(skin + rng.normal(0, 4, (48, 48, 3)), 0, 255).astype(np.uint8)
        lesion = (40, 25, 20) if i < 4 else (150, 90, 70)
        cv2.circle(img, (24, 24), 10, lesion, -1)
        cv2.imwrite(str(root / "images" / f"im{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), np.zeros((48, 48), np.uint8))
        rows.append(f"im{i},{'melanoma' if i < 4 else 'nevus'},{'II' if i % 2 else 5}")
    (root / "meta.json").write_text('{"task": "semantic", "classes": ["background", "lesion"]}')
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_load_data_with_a_skin_column_and_with_the_estimator(dataset):
    data = load_classification_data(dataset, "diagnosis", positive="melanoma", skin_column="fitz", image_size=32)
    assert data.images.shape == (8, 3, 32, 32) and data.images.dtype == np.float32
    assert data.targets.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert data.skin_types.tolist() == [4, 1] * 4  # 5 -> index 4, II -> index 1
    est = load_classification_data(dataset, "diagnosis", image_size=32)
    assert est.skin_source == "estimator" and np.all((est.skin_types >= 0) & (est.skin_types < 6))
    # the lighter skin of the odd images gets a lighter (lower) type than the darker skin
    assert est.skin_types[1] < est.skin_types[0]
    with pytest.raises(ClassifierDataError, match="no column 'nope'"):
        load_classification_data(dataset, "nope")
    with pytest.raises(ClassifierDataError, match="not in column"):
        load_classification_data(dataset, "diagnosis", positive="basal")


def test_parse_skin_type_and_auc_and_split():
    assert [parse_skin_type(v) for v in ("I", "vi", "3", "", 6.0)] == [0, 5, 2, -1, 5]
    with pytest.raises(ClassifierDataError):
        parse_skin_type("7")
    assert auc_score(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc_score(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert math.isnan(auc_score(np.array([1, 1]), np.array([0.1, 0.2])))
    train, test = stratified_split(np.array([1, 1, 1, 0, 0, 0]), 0.34, 0)
    assert len(test) == 2 and set(train) | set(test) == set(range(6)) and not set(train) & set(test)


@pytest.mark.parametrize("scheme", ["tabe", "lntl", "clgr", "none"])
def test_each_scheme_trains_a_few_steps_with_finite_losses(dataset, scheme):
    data = load_classification_data(dataset, "diagnosis", positive="melanoma", skin_column="fitz", image_size=32)
    cfg = ClassifierConfig(scheme=scheme, iterations=3, batch_size=4, width=4, depth=2)
    model, history = train_classifier(data, np.arange(8), cfg)
    assert len(history) == 3 and all(math.isfinite(v) for rec in history for v in rec.values())
    if scheme != "none":
        assert {"main", "debias", "bias"} <= set(history[-1])


def test_tabe_confusion_step_changes_the_encoder_and_not_the_bias_head_by_confusion(dataset):
    data = load_classification_data(dataset, "diagnosis", positive="melanoma", skin_column="fitz", image_size=32)
    cfg = ClassifierConfig(scheme="tabe", iterations=1, batch_size=8, width=4, depth=2, lr=0.0)
    # lr 0 freezes AdamW: only the SGD confusion step (lr 3e-3) may move the encoder
    torch.manual_seed(0)
    ref = DebiasClassifier(4, 2, 6)
    model, _ = train_classifier(data, np.arange(8), cfg)
    moved = any(not torch.equal(a, b) for a, b in zip(ref.encoder.parameters(), model.encoder.parameters()))
    assert moved
    assert all(torch.equal(a, b) for a, b in zip(ref.bias_head.parameters(), model.bias_head.parameters()))


def test_train_and_evaluate_and_the_cli_report(dataset, tmp_path, capsys):
    data = load_classification_data(dataset, "diagnosis", positive="melanoma", skin_column="fitz", image_size=32)
    report = train_and_evaluate(data, ClassifierConfig(scheme="tabe", iterations=2, batch_size=4, width=4, depth=2,
                                                       test_fraction=0.5))
    assert report["n_test"] == 4 and set(report["test"]["per_skin_type"]) <= {"II", "V"}
    out = tmp_path / "r.json"
    args = debias.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--dataset", str(dataset), "--label-column", "diagnosis", "--skin-column", "fitz", "--scheme", "tabe",
         "--iters", "2", "--batch", "4", "--size", "32", "--out", str(out)])
    assert debias.run(args) == 0
    text = capsys.readouterr().out
    assert "AUC" in text and "type V" in text and "cannot show a fairness gain" in text
    assert json.loads(out.read_text())["config"]["scheme"] == "tabe"
