"""Stain panel: normalise an RGB H&E layer (Macenko / Reinhard / Vahadane) and separate its stains.

Thin Qt layer over :mod:`napari_labelfx.tools.stain`: the reference is the built-in H&E matrix,
another image layer, or a rectangle drawn in a Shapes layer over the image. Work runs in a napari
``thread_worker``; results become plugin-owned layers ``"<image> <method>"``,
``"<image> haematoxylin"`` and ``"<image> eosin"`` (replaced on a rerun, never a person's layer).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ._worker import WorkerPanelMixin

REF_BUILTIN = "built-in H&E reference"
REF_IMAGE = "another image layer"
REF_SHAPES = "rectangle in a Shapes layer"
METHODS = ("macenko", "reinhard", "vahadane")


def rgb_layers(viewer: Any) -> list[Any]:
    """Image layers holding RGB(A) data."""
    return [ly for ly in viewer.layers if ly.__class__.__name__ == "Image" and getattr(ly, "rgb", False)]


def layer_rgb(layer: Any) -> Any:
    """Level-0 RGB pixels of an image layer (lazy arrays stay lazy), alpha dropped."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return data[..., :3] if data.shape[-1] == 4 else data


def rectangle_mask(shapes: Any, image: Any, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (Y, X) mask of the selected (else the last) rectangle of ``shapes`` in ``image`` pixels."""
    from ..tools.stain import StainInputError

    rects = [i for i, t in enumerate(shapes.shape_type) if t == "rectangle"]
    if not rects:
        raise StainInputError(f"Shapes layer {shapes.name!r}: draw a rectangle on the reference region first")
    chosen = [i for i in shapes.selected_data if i in rects]
    verts = np.asarray(shapes.data[(chosen or rects)[-1]], dtype=np.float64)
    # through world coordinates, so layers with different scale/translate still line up
    pts = np.array([image.world_to_data(shapes.data_to_world(v)) for v in verts])[:, -2:]
    y0, x0 = np.floor(pts.min(axis=0)).astype(int)
    y1, x1 = np.ceil(pts.max(axis=0)).astype(int)
    y0, x0 = max(y0, 0), max(x0, 0)
    y1, x1 = min(y1, shape[0]), min(x1, shape[1])
    if y1 <= y0 or x1 <= x0:
        raise StainInputError(f"Shapes layer {shapes.name!r}: the rectangle lies outside image {image.name!r}")
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def normalize_layer_data(rgb: Any, method: str, reference: Any = None, mask: np.ndarray | None = None,
                         name: str = "image") -> np.ndarray:
    """Normalised uint8 RGB of ``rgb`` (Qt-free core of the panel's Normalize button).

    ``reference`` None means the built-in H&E reference (Macenko/Vahadane only).
    """
    from ..tools.stain import StainError, make_normalizer

    norm = make_normalizer(method)
    if reference is not None:
        norm.fit(np.asarray(reference), mask=mask, name="reference")
    elif method == "reinhard":
        raise StainError("Reinhard normalisation needs a reference image or region (it has no built-in target)")
    return norm.normalize_tiled(rgb, name=name)


def separate_layer_data(rgb: Any, method: str = "macenko", name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin concentration maps (Macenko, or Vahadane when chosen)."""
    from ..tools.stain import make_normalizer

    norm = make_normalizer("vahadane" if method == "vahadane" else "macenko")
    return norm.separate(np.asarray(rgb), name=name)


class StainWidget(WorkerPanelMixin, QWidget):
    """Panel: image, reference, method; Normalize and Separate stains buttons."""

    _worker_label = "LabelFX stain"

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._worker: Any = None
        self.image_combo = QComboBox()
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHODS))
        self.ref_kind = QComboBox()
        self.ref_kind.addItems([REF_BUILTIN, REF_IMAGE, REF_SHAPES])
        self.ref_layer = QComboBox()
        self.normalize_btn = QPushButton("Normalize")
        self.separate_btn = QPushButton("Separate stains")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("method", self.method_combo)
        form.addRow("reference", self.ref_kind)
        form.addRow("reference layer", self.ref_layer)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.normalize_btn)
        lay.addWidget(self.separate_btn)
        lay.addWidget(self.status)
        lay.addStretch(1)
        self.normalize_btn.clicked.connect(self.normalize)
        self.separate_btn.clicked.connect(self.separate)
        self.ref_kind.currentIndexChanged.connect(self.refresh)
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self.refresh)
        self.refresh()

    # -- layer lists ---------------------------------------------------------------------------------
    def refresh(self, *_: Any) -> None:
        """Refill the layer menus, keeping the current choices when they still exist."""
        def fill(combo: QComboBox, names: list[str]) -> None:
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)

        fill(self.image_combo, [ly.name for ly in rgb_layers(self.viewer)])
        kind = self.ref_kind.currentText()
        if kind == REF_IMAGE:
            fill(self.ref_layer, [ly.name for ly in rgb_layers(self.viewer)])
        elif kind == REF_SHAPES:
            fill(self.ref_layer, [ly.name for ly in self.viewer.layers if ly.__class__.__name__ == "Shapes"])
        else:
            fill(self.ref_layer, [])
        self.ref_layer.setEnabled(kind != REF_BUILTIN)

    def _image_layer(self) -> Any:
        from ..tools.stain import StainInputError

        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise StainInputError("choose an RGB image layer (open an H&E image first)")
        return self.viewer.layers[name]

    def _reference(self, image: Any) -> tuple[Any, np.ndarray | None]:
        from ..tools.stain import StainInputError

        kind = self.ref_kind.currentText()
        if kind == REF_BUILTIN:
            return None, None
        name = self.ref_layer.currentText()
        if not name or name not in self.viewer.layers:
            raise StainInputError(f"choose the reference layer ({kind})")
        ref = self.viewer.layers[name]
        if kind == REF_IMAGE:
            return np.asarray(layer_rgb(ref)), None
        rgb = np.asarray(layer_rgb(image))
        return rgb, rectangle_mask(ref, image, rgb.shape[:2])

    # -- actions -------------------------------------------------------------------------------------
    def _busy_buttons(self) -> list[Any]:
        return [self.normalize_btn, self.separate_btn]

    def _failed_now(self, exc: Exception) -> None:
        self._failed(exc)

    def _put(self, name: str, data: np.ndarray, like: Any, **kwargs: Any) -> Any:
        """Add or replace the plugin-owned layer ``name`` with the geometry of ``like``."""
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            return layer
        return self.viewer.add_image(data, name=name, scale=like.scale[-2:], translate=like.translate[-2:], **kwargs)

    def normalize(self) -> None:
        """Normalise the chosen layer in a worker; the result becomes ``"<image> <method>"``."""
        try:
            image = self._image_layer()
            reference, mask = self._reference(image)
        except ValueError as exc:
            self._failed_now(exc)
            return
        method = self.method_combo.currentText()
        if reference is None and method == "reinhard":
            self._failed_now(ValueError("Reinhard normalisation needs a reference image or region "
                                        "(it has no built-in target)"))
            return
        rgb = layer_rgb(image)

        def work() -> np.ndarray:
            return normalize_layer_data(rgb, method, reference, mask, name=image.name)

        def done(out: np.ndarray) -> None:
            self._put(f"{image.name} {method}", out, image, rgb=True)
            self.status.setText(f"normalised {image.name!r} with {method}")

        self._run(work, done, f"normalising with {method}")

    def separate(self) -> None:
        """Haematoxylin and eosin concentration layers of the chosen image (own stain vectors)."""
        try:
            image = self._image_layer()
        except ValueError as exc:
            self._failed_now(exc)
            return
        method = self.method_combo.currentText()
        rgb = layer_rgb(image)

        def work() -> tuple[np.ndarray, np.ndarray]:
            return separate_layer_data(rgb, method, name=image.name)

        def done(he: tuple[np.ndarray, np.ndarray]) -> None:
            h, e = he
            self._put(f"{image.name} haematoxylin", h, image, colormap="blue", blending="additive")
            self._put(f"{image.name} eosin", e, image, colormap="magenta", blending="additive")
            self.status.setText("stain concentrations (optical density units) added")

        self._run(work, done, "separating stains")
