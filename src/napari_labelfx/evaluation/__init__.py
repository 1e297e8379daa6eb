"""Evaluation: dataset folders, seeded splits, derived label kinds and the ``labelfx eval`` harness.

Importing this package does not import torch; :func:`run_eval` does when called.
"""
from .dataset import DatasetError, EvalDataset, Sample, load_dataset, read_array
from .derive import DERIVED_KINDS, DeriveError, DeriveParams, KindSpec, derive_item, derive_target, parse_kind
from .harness import DEFAULT_ITERATIONS, EvalError, RunSpec, evaluate, run_eval, write_json
from .split import Split, SplitError, default_test_size, make_split

__all__ = [
    "DEFAULT_ITERATIONS",
    "DERIVED_KINDS",
    "DatasetError",
    "DeriveError",
    "DeriveParams",
    "EvalDataset",
    "EvalError",
    "KindSpec",
    "Sample",
    "RunSpec",
    "Split",
    "SplitError",
    "default_test_size",
    "derive_item",
    "derive_target",
    "evaluate",
    "load_dataset",
    "make_split",
    "parse_kind",
    "read_array",
    "run_eval",
    "write_json",
]
