"""Nearest-reference search of RPG: chunked search vs brute force, W, pool sampling, grid."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE
from napari_labelfx.methods import _reference as R

torch.set_num_threads(1)


def _random(nq: int, nr: int, f: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(nq, f, generator=g), torch.randn(nr, f, generator=g)


def _explicit_weight(q: torch.Tensor, r: torch.Tensor, member: torch.Tensor, k: int) -> torch.Tensor:
    """W straight from the formulas, one query at a time, with numpy."""
    qn = q.numpy() / np.maximum(np.linalg.norm(q.numpy(), axis=1, keepdims=True), 1e-8)
    rn = r.numpy() / np.maximum(np.linalg.norm(r.numpy(), axis=1, keepdims=True), 1e-8)
    mem = member.numpy()
    c = mem.shape[1]
    out = []
    for row in qn:
        d = 1 - np.maximum(rn @ row, 0)
        nn = np.argsort(d, kind="stable")[:k]
        delta = np.ones(c)
        for j in range(c):
            hit = nn[mem[nn, j]]
            if hit.size:
                delta[j] = d[hit].min()
        p = (1 - delta + 1e-8) / (1 - delta + 1e-8).sum()
        out.append(1 + (p * np.log(p)).sum() / np.log(c))
    return torch.tensor(np.array(out), dtype=torch.float32)


@pytest.mark.parametrize("k", [1, 7, 40, 0.5, 1.0])
def test_multiclass_matches_brute_force(k):
    q, r = _random(120, 90, 6, 0)
    labels = torch.randint(0, 4, (90,), generator=torch.Generator().manual_seed(1))
    member, valid = R.membership(labels, 4, False)
    assert bool(valid.all())
    got = R.nearest_reference(q, r, member, k, chunk_elements=500)  # many chunks
    want = R.brute_force_reference(q, r, member, k)
    # the label of the nearest reference is what matters (the search returns its group's first member)
    assert torch.equal(labels[got.nearest], labels[want.nearest])
    torch.testing.assert_close(got.weight, want.weight, atol=1e-6, rtol=0)
    kk = R.resolve_k(k, 90)
    torch.testing.assert_close(got.weight, _explicit_weight(q, r, member, kk), atol=1e-5, rtol=0)
    assert float(got.weight.min()) >= 0 and float(got.weight.max()) <= 1


@pytest.mark.parametrize("k", [3, 25])
def test_multilabel_matches_brute_force_with_no_label_class(k):
    q, r = _random(80, 60, 5, 2)
    hot = (torch.rand(60, 3, generator=torch.Generator().manual_seed(3)) > 0.6).to(torch.uint8)
    hot[0] = 0  # at least one reference with no class
    member, valid = R.membership(hot, 3, True)
    assert member.shape == (60, 4) and bool(member[0, 3]) and not bool(member[0, :3].any())
    got = R.nearest_reference(q, r, member, k, chunk_elements=300)
    want = R.brute_force_reference(q, r, member, k)
    assert torch.equal(hot[got.nearest], hot[want.nearest])
    torch.testing.assert_close(got.weight, want.weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.weight, _explicit_weight(q, r, member, k), atol=1e-5, rtol=0)


def test_chunked_equals_unchunked():
    q, r = _random(200, 150, 8, 4)
    member, _ = R.membership(torch.randint(0, 3, (150,), generator=torch.Generator().manual_seed(5)), 3, False)
    a = R.nearest_reference(q, r, member, 20, chunk_elements=1)  # one query per chunk
    b = R.nearest_reference(q, r, member, 20, chunk_elements=10**9)  # one chunk
    assert torch.equal(a.nearest, b.nearest)
    # the matrix product may round differently for one row than for a block: equal up to float noise
    torch.testing.assert_close(a.weight, b.weight, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sub_block", [1, 3, 32, 10_000])
@pytest.mark.parametrize("k", [5, 0.25, 0.6])
def test_sub_block_bounds_do_not_change_the_result(sub_block, k):
    # spatially coherent features (smooth along the reference order, as in an image) make the
    # sub-block bounds settle most tests; random ones make them fall back to exact counts
    g = torch.Generator().manual_seed(7)
    t = torch.linspace(0, 6, 300)[:, None]
    r = torch.cat([torch.sin(t * torch.arange(1, 5)), torch.cos(t * torch.arange(1, 5))], dim=1)
    r = r + 0.05 * torch.randn(300, 8, generator=g)
    q = torch.randn(70, 8, generator=g)
    labels = (t[:, 0] * 2).long() % 3  # runs of one class, like regions of an image
    member, _ = R.membership(labels, 3, False)
    got = R.nearest_reference(q, r, member, k, chunk_elements=2_000, sub_block=sub_block)
    want = R.brute_force_reference(q, r, member, k)
    assert torch.equal(labels[got.nearest], labels[want.nearest])
    torch.testing.assert_close(got.weight, want.weight, atol=1e-6, rtol=0)
    kk = R.resolve_k(k, 300)
    torch.testing.assert_close(got.weight, _explicit_weight(q, r, member, kk), atol=1e-5, rtol=0)


def test_nearest_is_the_first_reference_of_its_label_group():
    r = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    member, _ = R.membership(torch.tensor([1, 0, 0, 1]), 2, False)
    got = R.nearest_reference(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]), r, member, 4)
    # query 3 is at distance 1 from everything: the tie goes to the earliest reference, as in argmin
    assert got.nearest.tolist() == [1, 0, 0]


def test_all_distances_one_gives_zero_weight():
    # queries opposite to (or orthogonal to) every reference: clipped cosine 0, distance 1
    r = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    q = torch.tensor([[-1.0, 0.0], [0.0, 3.0], [-2.0, -0.0]])
    member, _ = R.membership(torch.tensor([0, 1, 2]), 3, False)
    got = R.nearest_reference(q, r, member, 2)
    torch.testing.assert_close(got.weight, torch.zeros(3))
    want = R.brute_force_reference(q, r, member, 2)
    torch.testing.assert_close(want.weight, torch.zeros(3))


def test_unambiguous_neighbourhood_gives_weight_one_and_label():
    r = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    member, _ = R.membership(torch.tensor([1, 1, 0]), 2, False)
    got = R.nearest_reference(torch.tensor([[1.0, 0.0]]), r, member, 2)
    assert int(got.nearest[0]) in (0, 1)
    assert float(got.weight[0]) == pytest.approx(1.0, abs=1e-6)  # class 0 is not among the 2 nearest


def test_membership_drops_unknown_references():
    member, valid = R.membership(torch.tensor([0, IGNORE_INDEX, 2]), 3, False)
    assert valid.tolist() == [True, False, True]
    assert not bool(member[1].any())
    hot = torch.tensor([[1, 0], [MULTILABEL_IGNORE, 0]], dtype=torch.uint8)
    member, valid = R.membership(hot, 2, True)
    assert valid.tolist() == [True, False]


def test_bad_input_raises():
    member, _ = R.membership(torch.tensor([0, 1]), 2, False)
    with pytest.raises(R.ReferenceSearchError, match="same F"):
        R.nearest_reference(torch.zeros(3, 4), torch.zeros(2, 5), member, 1)
    with pytest.raises(R.ReferenceSearchError, match="no annotated pixel"):
        R.nearest_reference(torch.zeros(3, 4), torch.zeros(0, 4), member[:0], 1)
    with pytest.raises(R.ReferenceSearchError, match="k must"):
        R.resolve_k(0, 10)


def test_pool_covers_every_class():
    rng = np.random.default_rng(0)
    # 6 items, classes spread so that no single item holds all; item 5 is unlabelled
    presence = np.array([
        [1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [1, 0, 0, 1, 0], [1, 0, 0, 0, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0],
    ], dtype=bool)
    for _ in range(30):
        chosen = R.sample_pool(presence, 4, rng)
        assert len(chosen) == 4 and 5 not in chosen
        assert presence[chosen].any(axis=0).all()
    chosen = R.sample_pool(presence, 8, rng)  # more than the labelled items: items repeat
    assert len(chosen) == 8 and 5 not in chosen
    with pytest.raises(R.ReferenceSearchError):
        R.sample_pool(np.zeros((3, 2), bool), 2, rng)


def test_class_presence_multilabel_and_unlabelled():
    t = np.zeros((2, 4, 4), np.uint8)
    t[0, :2] = 1
    t[:, 3] = MULTILABEL_IGNORE
    pres = R.class_presence([t, None], 2, True)
    assert pres.tolist() == [[True, False, True], [False, False, False]]
    pres = R.class_presence([np.array([[0, 2], [IGNORE_INDEX, 2]])], 3, False)
    assert pres.tolist() == [[True, False, True]]


def test_pseudo_label_grid_upsamples_nearest():
    torch.manual_seed(0)
    # features = one-hot of a blocky label image: every query finds a reference of its own class
    lab = torch.zeros(1, 16, 16, dtype=torch.int64)
    lab[:, :8, :8] = 1
    lab[:, 8:, 8:] = 2
    feats = torch.nn.functional.one_hot(lab, 3).movedim(-1, 1).float() + 0.01
    labels, weight = R.pseudo_label_grid(feats, feats, lab, 3, False, s=8, k=10)
    assert labels.shape == (1, 16, 16) and weight.shape == (1, 16, 16)
    assert torch.equal(labels, lab)
    assert float(weight.min()) > 0.9
    # multi-label layout
    hot = torch.stack([lab == 1, lab == 2], dim=1).to(torch.uint8)
    labels, weight = R.pseudo_label_grid(feats, feats, hot, 2, True, s=8, k=10)
    assert labels.shape == (1, 2, 16, 16) and torch.equal(labels, hot)


def test_resize_nearest_keeps_label_values():
    x = torch.arange(12).reshape(1, 3, 4)
    y = R.resize_nearest(x, (6, 2))
    assert y.shape == (1, 6, 2) and set(y.unique().tolist()) <= set(range(12))
    assert torch.equal(R.resize_nearest(y, (3, 4))[..., ::2], x[..., ::2])
