"""Dataset folders: moved to :mod:`napari_labelfx.io.dataset` (a lower layer that methods and the CLI share).

Kept so that ``from napari_labelfx.evaluation.dataset import load_dataset`` keeps working.
"""
from ..io.dataset import (  # noqa: F401
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    TASKS,
    DatasetError,
    EvalDataset,
    Sample,
    load_dataset,
    read_array,
    rescale_sample,
)

__all__ = ["IMAGE_SUFFIXES", "MASK_SUFFIXES", "TASKS", "DatasetError", "EvalDataset", "Sample", "load_dataset",
           "read_array", "rescale_sample"]
