"""napari-labelfx: label-efficient segmentation in napari."""
__version__ = "0.1.0"
