"""Annotation projects on disk: a folder with ``project.json`` and ``annotations.zarr``.

Layout::

    <project>/
        project.json        class table, images (name, axes, shape, dtype, source file, tags),
                            layers (name, kind, class, partial slices, shapes as vertex lists)
        annotations.zarr/   zarr v3 group, zstd-compressed arrays:
            labels/<i>/<j>  label layer j of image i (dtype kept)
            images/<i>      pixels of image i when it has no source file (came from memory)

Images that came from a file are referenced by path (absolute, and relative to the project folder so
a project moved together with its images still opens); the others are stored in the zarr. Saving
writes a complete new folder next to the target and swaps it in, so a failed save leaves the previous
project as it was. Nothing is pickled: JSON and zarr only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_write_folder, atomic_write_text
from .class_table import ClassTable
from .errors import ClassTableError, ProjectError
from .model import AnnotatedImage, AnnotationLayer, AnnotationSet

PROJECT_FILE = "project.json"
ZARR_NAME = "annotations.zarr"
_FORMAT = "labelfx-annotation-project"
_VERSION = 1


def _write_array(group: Any, path: str, data: Any) -> None:
    """Write one array into the zarr group, zstd-compressed (label layers compress very well)."""
    import zarr

    arr = np.ascontiguousarray(np.asarray(data))
    group.create_array(path, data=arr, chunks="auto", compressors=zarr.codecs.ZstdCodec(level=3), overwrite=True)


def _source_entry(source: str | None, folder: Path) -> tuple[str | None, str | None]:
    if source is None:
        return None, None
    src = Path(source).resolve()
    try:
        rel = os.path.relpath(src, folder.resolve())
    except ValueError:  # different drives on Windows
        rel = None
    return str(src), rel


def _project_dict(aset: AnnotationSet, folder: Path, store_images: bool | None) -> tuple[dict, list]:
    """Build project.json's content and the list of (zarr path, array) to write."""
    arrays: list[tuple[str, Any]] = []
    images = []
    for i, im in enumerate(aset.images):
        shape = [int(s) for s in np.shape(im.image)]
        dtype = str(np.dtype(getattr(im.image, "dtype", None) or np.asarray(im.image).dtype))
        has_file = im.source is not None and Path(im.source).exists()
        if store_images is False and not has_file:
            raise ProjectError(
                f"image {im.name!r} has no source file to reference ({im.source!r}); save with store_images"
            )
        store = store_images is True or not has_file
        src_abs, src_rel = _source_entry(im.source, folder) if has_file else (None, None)
        entry: dict[str, Any] = {
            "name": im.name,
            "axes": im.axes,
            "shape": shape,
            "dtype": dtype,
            "source": src_abs,
            "source_relative": src_rel,
            "array": f"images/{i}" if store else None,
            "tags": [
                {"slice": z, "tags": sorted(t)}
                for z, t in sorted(im.tags.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
            ],
            "layers": [],
        }
        if store:
            arrays.append((f"images/{i}", im.image))
        for j, layer in enumerate(im.layers):
            lay: dict[str, Any] = {
                "name": layer.name,
                "kind": layer.kind.value,
                "class_name": layer.class_name,
                "partial": layer.partial,
                "array": None,
                "shapes": None,
                "shape_classes": layer.shape_classes,
            }
            if layer.shapes is not None:
                lay["shapes"] = [{"type": t, "vertices": np.asarray(v).tolist()} for v, t in layer.shapes]
            else:
                lay["array"] = f"labels/{i}/{j}"
                arrays.append((lay["array"], layer.data))
            entry["layers"].append(lay)
        images.append(entry)
    doc = {
        "format": _FORMAT,
        "version": _VERSION,
        "class_table": aset.class_table.to_dict(),
        "images": images,
    }
    return doc, arrays


def save_project(aset: AnnotationSet, folder: str | os.PathLike, *, store_images: bool | None = None) -> Path:
    """Save an annotation set to a project folder, atomically.

    Parameters
    ----------
    aset : the annotation set.
    folder : the project folder; an existing project there is replaced only once the new one is
        complete. An existing non-empty folder that is not a project is refused (never deleted).
    store_images : None = store the pixels of images without a source file and reference the others;
        True = store every image; False = reference only (error for images without a file).
    """
    import zarr

    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise ProjectError(f"{folder}: exists and is not a folder; choose another project path")
        if any(folder.iterdir()) and not (folder / PROJECT_FILE).exists():
            raise ProjectError(
                f"{folder}: folder is not empty and is not a labelfx project; refusing to overwrite it"
            )
    aset.validate()
    doc, arrays = _project_dict(aset, folder, store_images)

    def fill(tmp: Path) -> None:
        group = zarr.open_group(str(tmp / ZARR_NAME), mode="w", zarr_format=3)
        for path, data in arrays:
            _write_array(group, path, data)
        # project.json last: a folder with it is complete
        atomic_write_text(tmp / PROJECT_FILE, json.dumps(doc, indent=1) + "\n")

    return atomic_write_folder(folder, fill)


def _read_image_candidates(path: Path) -> list[np.ndarray]:
    """Arrays a referenced image file may have been opened as, most likely first.

    The package reader (canonical axes) comes first, as images opened in napari went through it;
    the plain file reader follows for arrays that were opened by other means.
    """
    out: list[np.ndarray] = []
    errors: list[str] = []
    try:
        from ..io.reader import read_image

        img = read_image(path)
        out.append(np.asarray(img.data[0] if img.multiscale else img.data))
    except (ImportError, ValueError, OSError) as err:
        errors.append(str(err))
    try:
        out.append(_read_raw(path))
    except (ValueError, OSError) as err:
        errors.append(str(err))
    if not out:
        raise ProjectError(f"{path}: cannot read image file ({'; '.join(errors)})")
    return out


def _read_raw(path: Path) -> np.ndarray:
    """Read an image file as stored (TIFF, zarr array, .npy without pickle, or anything imageio reads)."""
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(str(path)))
    if suffix == ".npy":
        return np.load(str(path), allow_pickle=False)
    if suffix == ".zarr" or path.is_dir():
        import zarr

        node = zarr.open(str(path), mode="r")
        if hasattr(node, "shape"):
            return np.asarray(node[...])
        raise ProjectError(f"{path}: is a zarr group; reference the array inside it")
    from skimage.io import imread

    return np.asarray(imread(str(path)))


def _find_source(entry: dict, folder: Path) -> tuple[Path | None, list[Path]]:
    """The recorded image file that exists (relative path first), and every path tried."""
    candidates = []
    if entry.get("source_relative"):
        candidates.append((folder / entry["source_relative"]).resolve())
    if entry.get("source"):
        candidates.append(Path(entry["source"]))
    for c in candidates:
        if c.exists():
            return c, candidates
    return None, candidates


def _resolve_source(entry: dict, folder: Path) -> Path:
    found, candidates = _find_source(entry, folder)
    if found is None:
        raise ProjectError(
            f"project {folder}: the file of image {entry['name']!r} is missing "
            f"(looked for {', '.join(map(str, candidates)) or 'no path recorded'})"
        )
    return found


def _open_array(group: Any, path: str, folder: Path) -> np.ndarray:
    try:
        return np.asarray(group[path][...])
    except KeyError:
        raise ProjectError(f"project {folder}: array {path!r} is missing from {ZARR_NAME}") from None


def load_project(folder: str | os.PathLike) -> AnnotationSet:
    """Reopen a project written by :func:`save_project` (labels, kinds, tags and class table exactly)."""
    import zarr

    folder = Path(folder)
    pj = folder / PROJECT_FILE
    if not pj.is_file():
        raise ProjectError(f"{folder}: not a labelfx project (no {PROJECT_FILE})")
    try:
        doc = json.loads(pj.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProjectError(f"{pj}: cannot read project file ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise ProjectError(f"{pj}: not a labelfx annotation project file")
    if int(doc.get("version", 0)) > _VERSION:
        raise ProjectError(
            f"{pj}: project version {doc.get('version')} is newer than this napari-labelfx understands "
            f"({_VERSION}); update napari-labelfx"
        )
    try:
        table = ClassTable.from_dict(doc["class_table"], source=str(pj))
    except (KeyError, ClassTableError) as err:
        raise ProjectError(f"{pj}: bad class table ({err})") from None
    zpath = folder / ZARR_NAME
    group = zarr.open_group(str(zpath), mode="r") if zpath.exists() else None

    def array(path: str) -> np.ndarray:
        if group is None:
            raise ProjectError(f"project {folder}: {ZARR_NAME} is missing")
        return _open_array(group, path, folder)

    images = []
    try:
        for entry in doc["images"]:
            if entry.get("array"):
                pixels = array(entry["array"])
            else:
                candidates = _read_image_candidates(_resolve_source(entry, folder))
                pixels = next((c for c in candidates if list(c.shape) == list(entry["shape"])), candidates[0])
            if list(pixels.shape) != list(entry["shape"]):
                raise ProjectError(
                    f"project {folder}: image {entry['name']!r} has shape {tuple(pixels.shape)} but the project "
                    f"recorded {tuple(entry['shape'])}; the image file changed since the project was saved"
                )
            layers = []
            for lay in entry["layers"]:
                shapes = None
                data = None
                if lay.get("shapes") is not None:
                    shapes = [(np.asarray(s["vertices"], dtype=np.float64), s["type"]) for s in lay["shapes"]]
                else:
                    data = array(lay["array"])
                layers.append(
                    AnnotationLayer(
                        name=lay["name"],
                        kind=lay["kind"],
                        data=data,
                        shapes=shapes,
                        class_name=lay.get("class_name"),
                        partial=lay.get("partial"),
                        shape_classes=lay.get("shape_classes"),
                    )
                )
            tags = {t["slice"]: set(t["tags"]) for t in entry.get("tags", [])}
            found, _ = _find_source(entry, folder)
            # a stored image whose original file moved keeps its recorded path for reference
            source = str(found) if found is not None else entry.get("source")
            images.append(
                AnnotatedImage(
                    name=entry["name"], image=pixels, axes=entry["axes"], layers=layers, tags=tags, source=source
                )
            )
    except (KeyError, TypeError) as err:
        raise ProjectError(f"{pj}: malformed project file (missing or bad field {err})") from None
    return AnnotationSet(table, images)
