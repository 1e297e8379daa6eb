"""Deterministic train/test splits of a dataset for label-efficiency experiments.

Rule: the stems are sorted, then permuted by ``numpy.random.default_rng(seed)``. The first ``test``
stems are the test set (default ``max(2, round(0.3 * n))``, halves rounded up); of the rest, the first
``strong`` keep their full masks and the remaining ones carry the weaker kind (``others``). The same
stems and seed always give the same split, whatever order the files were listed in.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


class SplitError(ValueError):
    """The requested split cannot be made from the images available."""


@dataclass(frozen=True)
class Split:
    """Stems of the three parts of a split (disjoint)."""

    strong: list[str]
    others: list[str]
    test: list[str]
    seed: int

    @property
    def train(self) -> list[str]:
        return self.strong + self.others

    def sizes(self) -> dict[str, int]:
        return {"strong": len(self.strong), "others": len(self.others), "test": len(self.test)}

    def to_dict(self) -> dict:
        return asdict(self)


def default_test_size(n: int) -> int:
    """``max(2, round(0.3 * n))`` with halves rounded up."""
    return max(2, int(np.floor(0.3 * n + 0.5)))


def make_split(stems: Sequence[str], strong: int = 3, test: int | None = None, seed: int = 0) -> Split:
    """Split image stems into strong-training, other-training and test parts.

    Parameters
    ----------
    stems : image stems (unique).
    strong : training images that keep their full masks (the others get the derived kind).
    test : test images (``None``: ``max(2, round(30 %))``).
    seed : permutation seed.

    Raises
    ------
    SplitError
        when stems repeat, or the sizes do not leave at least one training image.
    """
    names = sorted(str(s) for s in stems)
    if len(set(names)) != len(names):
        raise SplitError("image stems must be unique")
    n = len(names)
    n_test = default_test_size(n) if test is None else int(test)
    if n_test < 1:
        raise SplitError(f"the test set needs at least 1 image, got test={test}")
    if int(strong) < 0:
        raise SplitError(f"strong must be >= 0, got {strong}")
    if n_test >= n:
        raise SplitError(f"{n} images cannot give {n_test} test images and at least 1 training image")
    if int(strong) > n - n_test:
        raise SplitError(f"strong={strong} but only {n - n_test} training images remain after {n_test} for test")
    order = np.random.default_rng(int(seed)).permutation(n)
    shuffled = [names[i] for i in order]
    test_part = sorted(shuffled[:n_test])
    train = shuffled[n_test:]
    return Split(
        strong=sorted(train[: int(strong)]),
        others=sorted(train[int(strong) :]),
        test=test_part,
        seed=int(seed),
    )
