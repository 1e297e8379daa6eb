"""Segmentation networks (UNet 2D/3D with decoder taps), their JSON config and a registry.

Importing this package registers the built-in architectures (``"unet"``).
"""
from napari_labelfx.models.config import PRESETS, ModelConfig, ModelConfigError, config_from_preset
from napari_labelfx.models.output import SegOutput
from napari_labelfx.models.registry import UnknownModelError, available_models, build_model, register_model
from napari_labelfx.models.unet import UNet

__all__ = [
    "PRESETS",
    "ModelConfig",
    "ModelConfigError",
    "SegOutput",
    "UNet",
    "UnknownModelError",
    "available_models",
    "build_model",
    "config_from_preset",
    "register_model",
]
