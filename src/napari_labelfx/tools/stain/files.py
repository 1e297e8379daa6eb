"""Stain normalisation of image files: RGB in, RGB out (PNG/JPEG/BMP through OpenCV, TIFF/Zarr through io)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Extensions written through OpenCV (8-bit RGB); everything else goes through ``io.write_image``.
_CV_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_rgb(path: str | Path) -> Any:
    """An RGB image ``(Y, X, 3)`` (numpy, or a lazy array for big files); clear error otherwise."""
    from ...io import read_image
    from . import StainInputError

    image = read_image(path)
    if image.multiscale:
        raise StainInputError(f"{path}: multiscale images are not supported here; pass level 0 as its own file")
    if image.axes != "YXS" or image.data.shape[-1] not in (3, 4):
        raise StainInputError(f"{path}: expected a 2-D RGB image, got axes {image.axes!r} and shape {image.data.shape}")
    return image.data


def write_rgb(path: str | Path, rgb: np.ndarray, overwrite: bool = False) -> Path:
    """Write a uint8 RGB image atomically: PNG/JPEG/BMP through OpenCV, TIFF/Zarr through ``io``.

    An existing file labelfx did not write is replaced only with ``overwrite`` (see `io.safety`).
    """
    import cv2

    from ...io import atomic_path, write_image
    from ...io.safety import check_destination

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _CV_SUFFIXES:
        check_destination(path, overwrite=overwrite)  # PNG/JPEG carry no labelfx mark: existing = foreign
        ok, buf = cv2.imencode(suffix, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"{path}: OpenCV could not encode the image")
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.tobytes())
        return path
    return write_image(path, np.asarray(rgb), axes="YXS", unit=None, overwrite=overwrite)


def normalize_file(input_path: str | Path, output_path: str | Path, method: str = "macenko",
                   reference: str | Path | None = None, tile: int = 2048, overwrite: bool = False) -> Path:
    """Stain-normalise one image file into another (tiled, one set of statistics per image).

    The output is checked before any work: never the input or the reference, never a folder, and an
    existing file labelfx did not write only with ``overwrite``.
    """
    from ...io.safety import check_destination
    from . import StainError, make_normalizer

    check_destination(output_path, inputs=(input_path, reference), overwrite=overwrite)
    norm = make_normalizer(method)
    if reference is not None:
        norm.fit(np.asarray(read_rgb(reference))[..., :3], name=str(reference))
    elif method == "reinhard":
        raise StainError("Reinhard normalisation needs --reference (it has no built-in target)")
    image = read_rgb(input_path)
    if image.shape[-1] == 4:
        image = np.asarray(image)[..., :3]
    out = norm.normalize_tiled(image, tile=int(tile), name=str(input_path))
    return write_rgb(output_path, out, overwrite=overwrite)
