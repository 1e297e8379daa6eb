"""Annotation model: label kinds, class table, layer conversion, validation, projects."""
from .kinds import IGNORE_INDEX, MULTILABEL_IGNORE, LabelKind, TrainingItem

__all__ = ["IGNORE_INDEX", "MULTILABEL_IGNORE", "LabelKind", "TrainingItem"]
