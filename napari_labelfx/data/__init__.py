"""Training data: normalisation, item checks, patch sampling, augmentation and validation splits."""
from .augment import AugmentConfig, Augmenter, available_transforms, register_transform
from .checks import check_items, known_mask
from .crop import crop_pad
from .errors import AugmentationError, TrainingDataError
from .normalize import apply_normalisation, channel_percentiles, percentile_normalise
from .sampling import PatchSampler
from .split import ValidationSplit, ValWindow, split_validation

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "AugmentationError",
    "PatchSampler",
    "TrainingDataError",
    "ValWindow",
    "ValidationSplit",
    "apply_normalisation",
    "available_transforms",
    "channel_percentiles",
    "check_items",
    "crop_pad",
    "known_mask",
    "percentile_normalise",
    "register_transform",
    "split_validation",
]
