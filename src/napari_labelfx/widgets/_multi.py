"""Many images in one run for the Train panel: train on every annotated image or on an annotation
project, predict several image layers or a folder of files.

Pairing of annotation layers with images: a layer that names its image (``labelfx_image`` metadata,
set by the Annotate panel and by opened projects) belongs to it; otherwise a Labels layer belongs to
the one open image of its shape, or, when several images share that shape, to the image whose name
starts its own name (longest name wins, e.g. ``"cells-2 scribbles"`` -> ``"cells-2"``). A layer that
still matches several images is left out with a warning, never given to the wrong image.

The engine receives one ``TrainingItem`` per image (the same seam as ``labelfx train``); the image
in view is item 0, so its live preview works as for one image.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.results import ResultLayer
from . import _layers

#: The Train panel's "Train on" choices.
THIS_IMAGE = "this image"
ALL_IMAGES = "all annotated images"
PROJECT = "annotation project..."
TRAIN_ON = (THIS_IMAGE, ALL_IMAGES, PROJECT)


def image_layers(viewer: Any) -> list[Any]:
    """The person's Image layers (the plugin's result layers left out), in layer-list order."""
    return [ly for ly in viewer.layers
            if ly.__class__.__name__ == "Image" and not ly.metadata.get(_layers.RESULT_KEY)]


def owner_image(layer: Any, images: list[Any]) -> Any:
    """The image among ``images`` that annotation ``layer`` annotates, or None when unknown or ambiguous."""
    named = layer.metadata.get(_layers.IMAGE_KEY)
    by_name = {im.name: im for im in images}
    if named in by_name:
        return by_name[named]
    if layer.__class__.__name__ == "Labels":
        shape = tuple(layer.data.shape)
        candidates = [im for im in images if _layers.image_spatial_shape(im) == shape]
    else:  # shapes carry no array shape: any image
        candidates = list(images)
    if len(candidates) == 1:
        return candidates[0]
    prefixed = sorted((im for im in candidates if layer.name.startswith(im.name)), key=lambda im: -len(im.name))
    if prefixed and (len(prefixed) == 1 or len(prefixed[0].name) > len(prefixed[1].name)):
        return prefixed[0]
    return None


def annotated_pairs(viewer: Any) -> tuple[list[tuple[Any, list[Any]]], list[str]]:
    """Every image with at least one annotation layer, with its layers; and the names of annotation
    layers that could not be paired (several same-sized images, no name to tell them apart)."""
    images = image_layers(viewer)
    pairs: dict[int, list[Any]] = {id(im): [] for im in images}
    unpaired = []
    for layer in viewer.layers:
        if layer.metadata.get(_layers.RESULT_KEY) or layer.metadata.get(_layers.KIND_KEY) is None:
            continue
        if layer.__class__.__name__ not in ("Labels", "Shapes"):
            continue
        owner = owner_image(layer, images)
        if owner is None:
            unpaired.append(layer.name)
        else:
            pairs[id(owner)].append(layer)
    return [(im, pairs[id(im)]) for im in images if pairs[id(im)]], unpaired


def _table_key(table: Any) -> tuple:
    return tuple((e.name, e.value) for e in table.entries), bool(getattr(table, "multilabel", False))


@dataclass
class RunData:
    """What a Start trains on: engine items and, index-aligned, the image layer showing each (or None)."""

    items: list
    class_names: list[str]
    multilabel: bool
    images: list[Any]
    watched: list[Any] = field(default_factory=list)  # annotation layers whose edits are sent while training
    description: str = ""


def collect_images(viewer: Any, first: Any, pairs: list[tuple[Any, list[Any]]]) -> RunData:
    """Engine items for several (image, annotation layers) pairs; ``first`` (the image in view) is item 0.

    All images train with ``first``'s class table: an image without one gets it, an image whose own
    table differs is refused (its label values would mean other classes).
    """
    if not pairs:
        raise ValueError("no annotated image: add a Labels layer, set its kind in the Annotate panel and paint")
    pairs = sorted(pairs, key=lambda p: p[0] is not first)
    primary = pairs[0][0]
    table = _layers.get_class_table(primary)
    items: list = []
    images: list[Any] = []
    watched: list[Any] = []
    for image, layers in pairs:
        if image is not primary:
            if image.metadata.get(_layers.CLASS_TABLE_KEY):
                other = _layers.get_class_table(image)
                if _table_key(other) != _table_key(table):
                    raise ValueError(
                        f"image {image.name!r} has classes {list(other.names)} but {primary.name!r} has "
                        f"{list(table.names)}: give both the same classes (Annotate panel) or train on one")
            else:
                _layers.set_class_table(image, table)
        try:
            got, names, multilabel = _layers.collect_items(viewer, image, layers)
        except ValueError as exc:
            raise ValueError(f"image {image.name!r}: {exc}") from None
        items += got
        images += [image] * len(got)
        watched += layers
    return RunData(items, names, multilabel, images, watched, f"{len(pairs)} images")


def collect_project(viewer: Any, folder: str) -> RunData:
    """Engine items for every image of an annotation project folder (images need not be open: an open
    image layer with the same name and shape shows the live preview)."""
    from ..annotations.project import load_project

    aset = load_project(folder)
    items = aset.training_items()
    open_images = {im.name: im for im in image_layers(viewer)}
    shown = []
    for img in aset.images:  # training_items gives one item per image, in order
        layer = open_images.get(img.name)
        ok = layer is not None and _layers.image_spatial_shape(layer) == tuple(img.spatial_shape)
        shown.append(layer if ok else None)
    table = aset.class_table
    return RunData(items, list(table.names), bool(getattr(table, "multilabel", False)), shown, [],
                   f"project {folder} ({len(items)} images)")


def collect_run(panel: Any) -> RunData:
    """What the Train panel's Start trains on, from its "Train on" choice (raises ValueError with a
    message for the person)."""
    mode = panel.train_on_combo.currentText()
    viewer = panel.viewer
    if mode == PROJECT:
        folder = getattr(panel, "train_project", None)
        if not folder:
            raise ValueError("choose an annotation project folder (Train on: annotation project...)")
        return collect_project(viewer, folder)
    image = panel.image_layer
    if mode == ALL_IMAGES:
        pairs, unpaired = annotated_pairs(viewer)
        if unpaired:
            from napari.utils.notifications import show_warning

            show_warning(f"LabelFX: left out {', '.join(map(repr, unpaired))}: several images have this shape; "
                         "start the layer's name with its image's name (or create it in the Annotate panel)")
        return collect_images(viewer, image, pairs)
    if image is None:
        raise ValueError("add an image layer first.")
    layers = panel.selected_annotation_layers()
    if not layers:
        raise ValueError(
            "no annotation layer for this image. Add a Labels layer, set its kind in the Annotate panel "
            "(strong, scribble, weak, noisy) and paint some pixels.")
    items, names, multilabel = _layers.collect_items(viewer, image, layers)
    return RunData(items, names, multilabel, [image] * len(items), layers, image.name)


def refresh_items(panel: Any) -> list | None:
    """Newer annotations for the running job (all its images), or None when there is nothing to resend."""
    run = getattr(panel, "_run", None)
    if run is None or panel.train_on_combo.currentText() == PROJECT:
        return None  # a project's annotations live on disk: they do not change while training
    if len(set(map(id, run.images))) > 1:
        pairs = [(im, [ly for ly in run.watched if ly in panel.viewer.layers and owner_image(ly, run_images(run)) is im])
                 for im in run_images(run) if im in panel.viewer.layers]
        return collect_images(panel.viewer, run.images[0], pairs).items
    image = run.images[0] if run.images else None
    if image is None or image not in panel.viewer.layers:
        return None
    return _layers.collect_items(panel.viewer, image, panel.selected_annotation_layers())[0]


def run_images(run: RunData) -> list[Any]:
    """The distinct open image layers of a run, in item order."""
    out: list[Any] = []
    for im in run.images:
        if im is not None and all(im is not o for o in out):
            out.append(im)
    return out


def run_image(panel: Any, index: int) -> Any:
    """The image layer showing item ``index`` of the running job (None when it has none)."""
    run = getattr(panel, "_run", None)
    if run is None:
        return panel.image_layer if index == 0 else None
    if 0 <= index < len(run.images):
        image = run.images[index]
        return image if image is not None and image in panel.viewer.layers else None
    return None


def preview_target(panel: Any) -> tuple[int, Any] | None:
    """(item index, image layer) to preview: the panel's image when it is in the run, else the first shown."""
    run = getattr(panel, "_run", None)
    if run is None:
        image = panel.image_layer
        return None if image is None else (0, image)
    current = panel.image_layer
    for i, im in enumerate(run.images):
        if im is not None and im is current and im in panel.viewer.layers:
            return i, im
    for i, im in enumerate(run.images):
        if im is not None and im in panel.viewer.layers:
            return i, im
    return None


# -- prediction of several layers / a folder -----------------------------------------------------------
def images_to_predict(viewer: Any) -> list[Any]:
    """The image layers "Predict all images" predicts: the selected image layers when two or more are
    selected in the layer list, else every open image."""
    selected = [ly for ly in image_layers(viewer) if ly in viewer.layers.selection]
    return selected if len(selected) >= 2 else image_layers(viewer)


def _apply_step(viewer: Any, image: Any, msg: dict[str, Any]) -> None:
    """Show one ``prediction_steps`` message of ``image`` in its result layers."""
    if "labels" in msg:
        z = msg["z"]
        shape = _layers.image_spatial_shape(image)
        region = None if z is None else ((z, z + 1), *((0, s) for s in shape[1:]))
        _layers.apply_preview(viewer, image, msg["labels"], msg["confidence"], region)
    elif "objects" in msg:
        _layers.apply_result(viewer, image, [ResultLayer(name="objects", kind="labels", data=msg["objects"])])


def predict_layers(panel: Any, images: list[Any] | None = None) -> Any:
    """Predict several image layers one after the other in a worker thread (one model load); each gets
    its own "<image> prediction" (and "<image> objects") layers. Returns the worker, or None when refused."""
    from napari.qt.threading import thread_worker
    from napari.utils.notifications import show_error, show_info

    from ._predict import open_panel_predictor, prediction_steps

    viewer = panel.viewer
    images = images_to_predict(viewer) if images is None else list(images)
    if not images or panel.model_dir is None:
        show_error("LabelFX: open images and train or load a model first.")
        return None
    model_dir, device = panel.model_dir, panel.device_combo.currentText()
    want_objects = panel.objects_check.isChecked()
    inputs = [(im.data[0] if im.multiscale else im.data, _layers.image_axes(im)) for im in images]
    errors: list[str] = []

    @thread_worker
    def _run() -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            pred = open_panel_predictor(model_dir, device)
        except Exception as exc:  # noqa: BLE001 - shown once by the main thread
            yield -1, {"error": f"cannot load the model: {exc}"}
            return
        for i, (data, axes) in enumerate(inputs):
            yield from ((i, msg) for msg in prediction_steps(pred, data, axes, lambda: 0, want_objects))

    def _step(got: tuple[int, dict[str, Any]]) -> None:
        i, msg = got
        name = images[i].name if i >= 0 else "the model"
        try:
            if "error" in msg:
                errors.append(f"{name}: {msg['error']}")
                show_error(f"LabelFX prediction failed: {name}: {msg['error']}")
            elif msg.get("done"):
                panel.status.setText(f"Predicted {i + 1}/{len(images)} images ({name}) ...")
            elif images[i] in viewer.layers:
                _apply_step(viewer, images[i], msg)
        except Exception as exc:  # noqa: BLE001 - e.g. the image layer was removed meanwhile
            errors.append(f"{name}: {exc}")

    def _finished() -> None:
        panel._set_running(False)
        if errors:
            panel.status.setText(f"Prediction failed for {len(errors)} of {len(images)} images: {errors[0]}")
        else:
            panel.status.setText(f"Prediction done: {len(images)} images.")
            show_info(f"LabelFX: predicted {len(images)} images.")

    worker = _run()
    worker.yielded.connect(_step)
    worker.finished.connect(_finished)
    _busy(panel, f"Predicting {len(images)} images ...")
    worker.start()
    return worker


def predict_folder(panel: Any, in_dir: str | None = None, out_dir: str | None = None) -> Any:
    """Predict every image file of ``in_dir`` into ``out_dir`` (asked with dialogs when not given): one
    ``<name>_labels.tif`` (and ``<name>_objects.tif``) per image; inputs and foreign files are never
    replaced (checked before the first prediction). Returns the worker, or None when refused."""
    from napari.qt.threading import thread_worker
    from napari.utils.notifications import show_error, show_info

    from ..inference.batch import plan_folder_prediction, run_folder_prediction
    from ._predict import open_panel_predictor

    if panel.model_dir is None:
        show_error("LabelFX: train or load a model first.")
        return None
    if in_dir is None or out_dir is None:
        from qtpy.QtWidgets import QFileDialog

        in_dir = in_dir or QFileDialog.getExistingDirectory(panel, "Folder of images to predict")
        if not in_dir:
            return None
        out_dir = out_dir or QFileDialog.getExistingDirectory(panel, "Output folder for the predictions")
        if not out_dir:
            return None
    model_dir, device = panel.model_dir, panel.device_combo.currentText()
    try:
        jobs = plan_folder_prediction(in_dir, out_dir, objects=panel.objects_check.isChecked(), model=model_dir)
    except ValueError as exc:
        show_error(f"LabelFX: folder not predicted: {exc}")
        return None
    state: dict[str, Any] = {"done": 0, "error": None}

    @thread_worker
    def _run() -> Iterator[dict[str, Any]]:
        try:
            pred = open_panel_predictor(model_dir, device)
            yield from run_folder_prediction(pred, jobs)
        except Exception as exc:  # noqa: BLE001 - the GUI boundary: one notification
            from ..engine.trainer import describe_failure

            yield {"error": describe_failure(exc)}

    def _step(msg: dict[str, Any]) -> None:
        if "error" in msg:
            state["error"] = msg["error"]
            return
        state["done"] += 1
        panel.status.setText(f"Predicted {state['done']}/{len(jobs)}: {msg['source']} -> {msg['outputs']['labels']}")

    def _finished() -> None:
        panel._set_running(False)
        if state["error"]:
            panel.status.setText(f"Folder prediction failed after {state['done']} of {len(jobs)} images: "
                                 f"{state['error']}")
            show_error(f"LabelFX: folder prediction failed: {state['error']}")
        else:
            panel.status.setText(f"Folder prediction done: {len(jobs)} images -> {out_dir}")
            show_info(f"LabelFX: predicted {len(jobs)} images into {out_dir}")

    worker = _run()
    worker.yielded.connect(_step)
    worker.finished.connect(_finished)
    _busy(panel, f"Predicting {len(jobs)} images into {out_dir} ...")
    worker.start()
    return worker


def _busy(panel: Any, message: str) -> None:
    for btn in (panel.predict_btn, getattr(panel, "predict_all_btn", None), getattr(panel, "predict_folder_btn", None)):
        if btn is not None:
            btn.setEnabled(False)
    panel.status.setText(message)


def choose_project(panel: Any, folder: str | None = None) -> str | None:
    """Ask for (or take) the annotation project folder to train on; shown next to the "Train on" choice."""
    if folder is None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(panel, "Annotation project folder") or None
    panel.train_project = folder
    panel.project_label.setText(f"Project: {folder}" if folder else "")
    panel.project_label.setVisible(bool(folder))
    return folder
