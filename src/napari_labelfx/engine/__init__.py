"""The training engine: the training loop, checkpoints and update messages (no Qt)."""
from .config import ConfigError, TrainConfig
from .control import TrainerControl
from .trainer import Trainer, TrainingFailed, TrainResult
from .updates import Update, UpdateKind

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerControl",
    "TrainingFailed",
    "Update",
    "UpdateKind",
]
