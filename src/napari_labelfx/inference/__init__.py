"""Tiled sliding-window inference with Gaussian blending and flip TTA, and streaming to Zarr."""
from napari_labelfx.inference.errors import InferenceError
from napari_labelfx.inference.labels import labels_dtype, probabilities_to_labels
from napari_labelfx.inference.objects import objects_from_labels
from napari_labelfx.inference.predictor import DEFAULT_ROI, Prediction, Predictor
from napari_labelfx.inference.sliding_window import sliding_window_predict
from napari_labelfx.inference.streaming import predict_to_zarr, stream_probabilities
from napari_labelfx.inference.tiling import importance_map, tile_grid, tile_starts

__all__ = [
    "DEFAULT_ROI",
    "InferenceError",
    "Prediction",
    "Predictor",
    "importance_map",
    "labels_dtype",
    "objects_from_labels",
    "predict_to_zarr",
    "probabilities_to_labels",
    "sliding_window_predict",
    "stream_probabilities",
    "tile_grid",
    "tile_starts",
]
