"""Strong training items from dataset folders (annotations/dataset_items.py), shared by labelfx train and sissi."""
import numpy as np
import pytest

from napari_labelfx.annotations.dataset_items import class_map, dataset_class_names, strong_items
from napari_labelfx.core.normalize import DEFAULT_NORMALISATION
from napari_labelfx.evaluation.derive import derive_item
from napari_labelfx.io.dataset import load_dataset
from tests.test_evaluation_helpers import make_dataset


@pytest.mark.parametrize("task", ["instance", "multilabel"])
def test_strong_items_are_the_harness_strong_kind(tmp_path, task):
    ds = load_dataset(make_dataset(tmp_path / task, n=3, task=task))
    items = strong_items(ds)
    assert [it.name for it in items] == ds.stems
    for stem, it in zip(ds.stems, items):
        smp = ds.load(stem)
        ref = derive_item(smp.image, smp.mask, ds.task, "strong", name=stem, raw=smp.raw)
        np.testing.assert_array_equal(it.image, ref.image)
        np.testing.assert_array_equal(it.target, ref.target)
        assert it.kind == ref.kind and it.extra == ref.extra and it.extra["normalisation"] == DEFAULT_NORMALISATION
    names = dataset_class_names(ds)
    assert names[0] == "background" and len(names) == (3 if task == "multilabel" else 2)


def test_a_check_can_refuse_an_image_and_unknown_tasks_are_named(tmp_path):
    ds = load_dataset(make_dataset(tmp_path / "set", n=2))

    def refuse(stem, smp):
        raise ValueError(f"no {stem}")

    with pytest.raises(ValueError, match="no im0"):
        strong_items(ds, refuse)
    with pytest.raises(ValueError, match="unknown task 'detection'"):
        class_map(np.zeros((4, 4)), "detection")
