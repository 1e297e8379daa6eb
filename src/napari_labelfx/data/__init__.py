"""Training data: item checks, patch sampling, augmentation and validation splits."""
from .augment import AugmentConfig, Augmenter, available_transforms, register_transform
from .checks import check_items, known_mask
from .crop import crop_pad
from .errors import AugmentationError, TrainingDataError
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
    "available_transforms",
    "check_items",
    "crop_pad",
    "known_mask",
    "register_transform",
    "split_validation",
]
