"""The training engine: the training loop, checkpoints and typed update messages (no Qt)."""
from .config import ConfigError, TrainConfig
from .control import TrainerControl
from .trainer import Trainer, TrainingFailed, TrainResult
from .updates import (
    Checkpoint,
    Failed,
    Finished,
    Log,
    Paused,
    Preview,
    Progress,
    Result,
    Resumed,
    Started,
    Update,
    UpdateKind,
    Validation,
)

__all__ = [
    "Checkpoint",
    "ConfigError",
    "Failed",
    "Finished",
    "Log",
    "Paused",
    "Preview",
    "Progress",
    "Result",
    "Resumed",
    "Started",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerControl",
    "TrainingFailed",
    "Update",
    "UpdateKind",
    "Validation",
]
