"""CheXseg in the engine: classifier, Grad-CAM pseudo-masks as RESULT layers, p-mixing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations import LabelKind, TrainingItem
from napari_labelfx.engine import TrainConfig, Trainer, UpdateKind
from napari_labelfx.methods import MethodError, create_method

torch.set_num_threads(1)


def _items(multilabel: bool = False) -> list[TrainingItem]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(4):
        img = rng.normal(0, 0.1, (1, 32, 32)).astype(np.float32)
        cls = np.zeros((32, 32), np.int64)
        cls[6 + i:18 + i, 8:22] = 1
        img[0][cls == 1] += 1.0
        target = np.stack([cls == 1, cls == 0]).astype(np.uint8) if multilabel else cls
        tags = np.array([1.0, 1.0], np.float32)
        if i < 2:
            out.append(TrainingItem(img, target, LabelKind.STRONG, name=f"strong{i}"))
        else:
            out.append(TrainingItem(img, None, LabelKind.IMAGE_LEVEL, tags=tags, name=f"tagged{i}"))
    return out


def _run(p: float, multilabel: bool = False):
    cfg = TrainConfig(method="chexseg", iterations=6, batch_size=4, patch_size=(32, 32), device="cpu",
                      val_fraction=0.0, preview_every_s=0, log_every=1,
                      method_params={"p": p, "classifier_fraction": 0.5, "tag_batch": 2})
    names = ["fg", "bg"] if multilabel else ["background", "lesion"]
    trainer = Trainer(cfg, _items(multilabel), names, multilabel=multilabel)
    updates = list(trainer.updates())
    assert updates[-1].kind == UpdateKind.FINISHED, updates[-1]
    return trainer, updates


def test_chexseg_publishes_saliency_and_pseudo_masks_and_mixes():
    trainer, updates = _run(0.0)
    assert trainer.model.image_head is not None  # the classifier head was added
    results = [u for u in updates if u.kind == UpdateKind.RESULT]
    assert len(results) == 1 and results[0].iteration == 3
    layers = results[0].by_name()
    assert set(layers) == {"saliency lesion tagged3", "pseudo-mask tagged3", "saliency lesion tagged2",
                           "pseudo-mask tagged2"}
    pm = layers["pseudo-mask tagged2"]
    assert pm.kind == "labels" and pm.data.shape == (32, 32) and pm.image_index == 2
    assert set(np.unique(pm.data)) <= {0, 1}
    sal = layers["saliency lesion tagged2"].data
    assert sal.shape == (32, 32) and 0.0 <= sal.min() and sal.max() <= 1.0
    assert results[0].markers == ((3, "pseudo-masks"),)
    method = trainer.method
    assert len(method.thresholds) == 1 and 0 < method.thresholds[0] < 1  # chosen on the strong masks
    share = [r["loss_pseudo_share"] for r in trainer.history if r["kind"] == "train"]
    assert share[:3] == [0.0, 0.0, 0.0] and share[3:] == [1.0, 1.0, 1.0]  # p = 0: all pseudo after the switch
    assert all("loss_cls" in r for r in trainer.history if r["kind"] == "train")


def test_chexseg_p1_keeps_strong_samples_and_multilabel_runs():
    trainer, _ = _run(1.0)
    assert all(r["loss_pseudo_share"] == 0.0 for r in trainer.history if r["kind"] == "train")
    trainer, updates = _run(0.5, multilabel=True)
    layers = [u for u in updates if u.kind == UpdateKind.RESULT][0].by_name()
    assert "pseudo-mask fg tagged2" in layers and "pseudo-mask bg tagged2" in layers


def test_chexseg_bad_parameters():
    with pytest.raises(MethodError, match=r"p must be a number in \[0, 1\]"):
        create_method("chexseg", {"p": 1.5})
    with pytest.raises(MethodError, match="threshold must be"):
        create_method("chexseg", {"threshold": "max"})


def _run_params(params: dict, multilabel: bool = False):
    cfg = TrainConfig(method="chexseg", iterations=6, batch_size=4, patch_size=(32, 32), device="cpu",
                      val_fraction=0.0, preview_every_s=0, log_every=1,
                      method_params={"classifier_fraction": 0.5, "tag_batch": 2, **params})
    names = ["fg", "bg"] if multilabel else ["background", "lesion"]
    trainer = Trainer(cfg, _items(multilabel), names, multilabel=multilabel)
    updates = list(trainer.updates())
    assert updates[-1].kind == UpdateKind.FINISHED, updates[-1]
    return trainer, updates


@pytest.mark.parametrize("multilabel", [False, True])
def test_chexseg_distillation_freezes_a_teacher_and_learns_its_soft_outputs(multilabel):
    trainer, updates = _run_params({"p": 0.0, "distill": True, "temperature": 4.0}, multilabel)
    method = trainer.method
    teacher = method._teacher
    assert teacher is not None and not any(p.requires_grad for p in teacher.parameters())
    # the teacher is the network at the switch: frozen, so it differs from the trained student now
    student = trainer.models["net"]
    assert any(not torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), student.state_dict().values()))
    train = [r for r in trainer.history if r["kind"] == "train"]
    assert all("loss_distill" not in r for r in train[:3])
    assert all(r["loss_distill"] >= 0 and r["loss_pseudo_share"] == 1.0 for r in train[3:])
    results = [u for u in updates if u.kind == UpdateKind.RESULT]
    assert results[0].markers == ((3, "teacher"),)
    assert not method._pseudo  # no Grad-CAM pseudo-masks in this variant


def test_chexseg_distillation_term_is_zero_when_student_equals_teacher():
    method = create_method("chexseg", {"distill": True, "temperature": 10.0})
    logits = torch.randn(2, 3, 8, 8)

    class Out:
        image_logits = None

    out = Out()
    out.logits = logits
    from napari_labelfx.annotations import IGNORE_INDEX

    target = torch.full((2, 8, 8), IGNORE_INDEX, dtype=torch.long)

    class Ctx:
        multilabel = False
        num_classes = 3

    swapped = torch.tensor([True, True])
    total, terms = method.loss({}, {"net": out, "n": 2, "target": target, "swapped": swapped,
                                    "teacher": logits.clone(), "tagged": None}, Ctx())
    assert float(terms["distill"]) == pytest.approx(0.0, abs=1e-5)
    _, terms2 = method.loss({}, {"net": out, "n": 2, "target": target, "swapped": swapped,
                                 "teacher": torch.randn(2, 3, 8, 8) * 5, "tagged": None}, Ctx())
    assert float(terms2["distill"]) > 0.01


def test_chexseg_distillation_bad_parameters():
    with pytest.raises(MethodError, match="temperature"):
        create_method("chexseg", {"temperature": 0})
