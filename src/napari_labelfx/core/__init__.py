"""Services every layer uses: device selection and mixed precision, image normalisation.

Nothing here imports another napari_labelfx package.
"""
