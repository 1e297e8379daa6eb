"""The training engine: device selection, the training loop, checkpoints and update messages (no Qt)."""
from .config import ConfigError, TrainConfig
from .control import TrainerControl
from .device import DeviceError, autocast_context, select_device
from .trainer import Trainer, TrainingFailed, TrainResult
from .updates import Update, UpdateKind

__all__ = [
    "ConfigError",
    "DeviceError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerControl",
    "TrainingFailed",
    "Update",
    "UpdateKind",
    "autocast_context",
    "select_device",
]
