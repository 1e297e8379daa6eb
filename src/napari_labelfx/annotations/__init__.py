"""Annotation model: label kinds, class table, layer conversion, validation, projects.

Qt-free and napari-free at import time; see ``docs/annotations.md`` for the label conventions.
"""
from .class_table import ClassEntry, ClassTable, default_class_table
from .convert import (
    labels_to_class_map,
    labels_to_instances,
    labels_to_target,
    shapes_to_weak,
    tags_to_vector,
)
from .errors import (
    AnnotationError,
    ClassTableError,
    EmptyAnnotationError,
    ImageError,
    LabelValueError,
    ProjectError,
    ShapeMismatchError,
    ShapesError,
)
from .kinds import IGNORE_INDEX, MULTILABEL_IGNORE, LabelKind, TrainingItem
from .model import PRECEDENCE, AnnotatedImage, AnnotationLayer, AnnotationSet
from .project import load_project, save_project

__all__ = [
    "IGNORE_INDEX",
    "MULTILABEL_IGNORE",
    "PRECEDENCE",
    "AnnotatedImage",
    "AnnotationError",
    "AnnotationLayer",
    "AnnotationSet",
    "ClassEntry",
    "ClassTable",
    "ClassTableError",
    "EmptyAnnotationError",
    "ImageError",
    "LabelKind",
    "LabelValueError",
    "ProjectError",
    "ShapeMismatchError",
    "ShapesError",
    "TrainingItem",
    "default_class_table",
    "labels_to_class_map",
    "labels_to_instances",
    "labels_to_target",
    "load_project",
    "save_project",
    "shapes_to_weak",
    "tags_to_vector",
]
