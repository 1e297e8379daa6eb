"""``fixmatch`` and ``rpg+``: confident pseudo-labels and a few training iterations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE
from napari_labelfx.engine.updates import UpdateKind
from napari_labelfx.methods import MethodError, create_method
from napari_labelfx.methods.fixmatch import confident_pseudo_label

from .test_rpg_method import _items, _train

torch.set_num_threads(1)


def test_confident_pseudo_label_multiclass():
    logits = torch.tensor([[[[5.0, 0.0]], [[0.0, 0.1]], [[0.0, 0.0]]]])  # (1, 3, 1, 2)
    out = confident_pseudo_label(logits, 0.95, False)
    assert out.tolist() == [[[0, IGNORE_INDEX]]]


def test_confident_pseudo_label_multilabel():
    logits = torch.tensor([[[[4.0, 0.2]], [[-4.0, -0.5]]]])  # (1, 2, 1, 2)
    out = confident_pseudo_label(logits, 0.95, True)
    assert out[0, :, 0, 0].tolist() == [1, 0]
    assert out[0, :, 0, 1].tolist() == [MULTILABEL_IGNORE, MULTILABEL_IGNORE]
    assert out[0, :, 0, 1].tolist() == confident_pseudo_label(logits, 0.8, True)[0, :, 0, 1].tolist()


def test_tau_checked():
    with pytest.raises(MethodError, match="tau"):
        create_method("fixmatch", {"tau": 1.5})


@pytest.mark.parametrize("method,multilabel", [("fixmatch", False), ("rpg+", False), ("rpg+", True)])
def test_trains(method, multilabel):
    names = ["a", "b"] if multilabel else ["bg", "a", "b"]
    # tau low so that the strong-view term is active from the first iterations
    updates = _train(method, _items(3, 2, multilabel), names, multilabel, tau=0.4)
    last = [u for u in updates if u.kind == UpdateKind.PROGRESS][-1].losses
    assert "fixmatch" in last and np.isfinite(last["fixmatch"])
    assert (method == "rpg+") == ("rpg" in last)


def test_methods_are_composed_of_terms_each_with_its_own_parameters():
    from napari_labelfx.methods._unlabelled import UNLABELLED_PARAMS
    from napari_labelfx.methods.fixmatch import FIXMATCH_PARAMS, ConfidentStrongView
    from napari_labelfx.methods.rpg import REFERENCE_PARAMS, ReferencePseudoLabels

    terms = {name: [type(t) for t in create_method(name).terms] for name in ("rpg", "fixmatch", "rpg+")}
    assert terms == {"rpg": [ReferencePseudoLabels], "fixmatch": [ConfidentStrongView],
                     "rpg+": [ReferencePseudoLabels, ConfidentStrongView]}
    shared, ref, fm = set(UNLABELLED_PARAMS.names()), set(REFERENCE_PARAMS.names()), set(FIXMATCH_PARAMS.names())
    assert set(create_method("fixmatch").params) == shared | fm
    assert set(create_method("rpg").params) == shared | ref
    assert set(create_method("rpg+").params) == shared | ref | fm
    # configs saved when fixmatch carried RPG's parameters still load; they are dropped
    old = create_method("fixmatch", {"pool": 1, "grid": 64, "k": 7000, "rpg_weight": 0.0, "tau": 0.9})
    assert "pool" not in old.params and old.params["tau"] == 0.9
    with pytest.raises(MethodError, match="no parameter"):
        create_method("rpg", {"tau": 0.9})
    with pytest.raises(MethodError, match="cutout must be a number in"):
        create_method("rpg+", {"cutout": 2})
