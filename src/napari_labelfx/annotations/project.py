"""Annotation projects on disk: a folder with ``project.json`` and one versioned zarr folder.

Layout::

    <project>/
        project.json        class table, images (name, axes, shape, dtype, source file, tags),
                            layers (name, kind, class, partial slices, shapes as vertex lists),
                            ``data`` (the current version folder) and ``arrays`` (shape, dtype,
                            chunk count and CRC-32 of every array, to verify the project on open)
        annotations-<n>-<pid>-<hex>.zarr/   zarr v3 group, zstd-compressed arrays:
            labels/<i>/<j>  label layer j of image i (dtype kept)
            images/<i>      pixels of image i when it has no source file (came from memory)

Images that came from a file are referenced by path (absolute, and relative to the project folder so
a project moved together with its images still opens); the others are stored in the zarr. Saving
writes a complete new version folder, then replaces ``project.json`` (the pointer) in one atomic
rename, so a failed or killed save leaves the previous project as it was and a concurrent reader
sees one complete version, never a mix. Version-1 projects (``annotations.zarr``) still open.
Nothing is pickled: JSON and zarr only.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import pid_alive
from ._files import atomic_write_text
from .class_table import ClassTable
from .errors import ProjectError
from .model import AnnotatedImage, AnnotationLayer, AnnotationSet

PROJECT_FILE = "project.json"
#: The arrays of a version-1 project (one folder, replaced as a whole on save).
ZARR_NAME = "annotations.zarr"
_FORMAT = "labelfx-annotation-project"
#: 2: arrays in a versioned folder named by project.json, with shapes, chunk counts and CRC-32.
_VERSION = 2
_DATA_RE = re.compile(r"^annotations-(?P<counter>\d+)-(?P<pid>\d+)-[0-9a-f]+\.zarr$")


def _write_array(group: Any, path: str, data: Any) -> Any:
    """Write one array into the zarr group, zstd-compressed (label layers compress very well).

    Every chunk is written, even an empty one, so that a missing chunk file is detected on open.
    """
    import zarr

    arr = np.ascontiguousarray(np.asarray(data))
    return group.create_array(path, data=arr, chunks="auto", compressors=zarr.codecs.ZstdCodec(level=3),
                              overwrite=True, config={"write_empty_chunks": True})


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


def _version_of(name: str) -> tuple[int, int] | None:
    """(save counter, writer's process id) of a data folder ``annotations-<n>-<pid>-<hex>.zarr``."""
    m = _DATA_RE.match(name)
    return (int(m.group("counter")), int(m.group("pid"))) if m else None


def _write_version(tmp: Path, arrays: list) -> dict[str, dict[str, Any]]:
    """Write every array into a new zarr group; return the record that lets a reader verify it."""
    import zarr

    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    record: dict[str, dict[str, Any]] = {}
    for path, data in arrays:
        arr = _write_array(group, path, data)
        record[path] = {
            "shape": [int(s) for s in arr.shape],
            "dtype": str(arr.dtype),
            "chunks": int(arr.nchunks),  # every chunk is written, so a missing one is damage
            "crc32": _crc32(np.asarray(data)),
        }
    return record


def _crc32(data: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(data)).cast("B")) & 0xFFFFFFFF


def save_project(aset: AnnotationSet, folder: str | os.PathLike, *, store_images: bool | None = None) -> Path:
    """Save an annotation set to a project folder; the switch to the new version is one atomic step.

    The arrays go into a new versioned folder ``annotations-<n>-<pid>-<hex>.zarr`` inside the
    project; then ``project.json`` (which names that folder and records each array's shape, chunk
    count and CRC-32) replaces the previous one in one ``os.replace``. A reader therefore sees the
    old version or the new one, never a mix, and a killed save leaves the previous project as it
    was (its half-written version folder is removed by the next save). Older versions are removed
    after the switch (a reader still busy with one retries on the new one, see `load_project`).

    Parameters
    ----------
    aset : the annotation set.
    folder : the project folder. An existing non-empty folder that is not a project is refused
        (never deleted).
    store_images : None = store the pixels of images without a source file and reference the others;
        True = store every image; False = reference only (error for images without a file).
    """
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
    folder.mkdir(parents=True, exist_ok=True)
    counter = _previous_counter(folder) + 1
    name = f"annotations-{counter}-{os.getpid()}-{uuid.uuid4().hex[:8]}.zarr"
    data = folder / name
    try:
        record = _write_version(data, arrays)
        doc["data"] = name
        doc["counter"] = counter
        doc["arrays"] = record
        # the one atomic switch: project.json names the complete new version
        atomic_write_text(folder / PROJECT_FILE, json.dumps(doc, indent=1) + "\n")
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)
        raise
    _remove_old_versions(folder, keep=name, counter=counter)
    return folder


def _previous_counter(folder: Path) -> int:
    try:
        doc = json.loads((folder / PROJECT_FILE).read_text(encoding="utf-8"))
        return int(doc.get("counter", 0)) if isinstance(doc, dict) else 0
    except (OSError, ValueError, TypeError):
        return 0


def _remove_old_versions(folder: Path, keep: str, counter: int) -> None:
    """Remove superseded version folders and the version-1 layout's zarr after a switch.

    A folder of another live process may be that process's save in progress, so it is removed
    only once it is two saves behind; ours and those of dead processes (killed saves) go at once.
    """
    for entry in folder.iterdir():
        if entry.name == keep:
            continue
        version = _version_of(entry.name)
        if version is not None:
            n, pid = version
            stale = pid == os.getpid() or n < counter - 1 or not pid_alive(pid)
        else:
            stale = entry.name == ZARR_NAME
        if stale:
            shutil.rmtree(entry, ignore_errors=True)


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


_ARRAY_PATH_RE = re.compile(r"^(images/\d+|labels/\d+/\d+)$")


def _memory_budget() -> int:
    """Bytes a project may declare: the memory available now (physical memory as a fallback)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return 2**34


def _nbytes(shape: list[int], dtype: str) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def _check_doc(doc: Any, pj: Path) -> None:
    """Validate the whole project.json before anything is read; the message names the field."""

    def bad(where: str, problem: str) -> ProjectError:
        return ProjectError(f"{pj}: malformed project file: {where} {problem}")

    def want(value: Any, types: tuple, where: str, what: str) -> None:
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise bad(where, f"must be {what}, got {value!r:.60}")

    def shape_of(value: Any, where: str) -> None:
        want(value, (list,), where, "a list of sizes")
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
            raise bad(where, f"must be a list of positive integers, got {value!r:.60}")

    def dtype_of(value: Any, where: str) -> None:
        want(value, (str,), where, "a dtype name")
        try:
            dt = np.dtype(value)
        except TypeError:
            raise bad(where, f"is not a dtype: {value!r:.40}") from None
        if not (np.issubdtype(dt, np.number) or dt == np.bool_):
            raise bad(where, f"must be a numeric dtype, got {value!r:.40}")

    def array_path(value: Any, where: str) -> None:
        if value is not None and not (isinstance(value, str) and _ARRAY_PATH_RE.match(value)):
            raise bad(where, f"must be an array path like 'labels/0/0' or null, got {value!r:.60}")

    want(doc.get("class_table"), (dict,), "class_table", "an object")
    want(doc.get("images"), (list,), "images", "a list")
    if doc.get("version", 1) >= 2:
        data = doc.get("data")
        if not (isinstance(data, str) and _DATA_RE.match(data)):
            raise bad("data", f"must name a version folder 'annotations-<n>-<pid>-<hex>.zarr', got {data!r:.60}")
        want(doc.get("arrays"), (dict,), "arrays", "an object")
        for key, rec in doc["arrays"].items():
            where = f"arrays[{key!r}]"
            array_path(key, where)
            want(rec, (dict,), where, "an object")
            shape_of(rec.get("shape"), f"{where}.shape")
            dtype_of(rec.get("dtype"), f"{where}.dtype")
            for name in ("chunks", "crc32"):
                want(rec.get(name), (int,), f"{where}.{name}", "an integer")
    for i, entry in enumerate(doc["images"]):
        where = f"images[{i}]"
        want(entry, (dict,), where, "an object")
        want(entry.get("name"), (str,), f"{where}.name", "a string")
        want(entry.get("axes"), (str,), f"{where}.axes", "a string")
        shape_of(entry.get("shape"), f"{where}.shape")
        if len(entry["shape"]) != len(entry["axes"]):
            raise bad(f"{where}.shape", f"has {len(entry['shape'])} sizes for axes {entry['axes']!r}")
        dtype_of(entry.get("dtype"), f"{where}.dtype")
        for key in ("source", "source_relative"):
            want(entry.get(key), (str, type(None)), f"{where}.{key}", "a path or null")
        array_path(entry.get("array"), f"{where}.array")
        want(entry.get("tags", []), (list,), f"{where}.tags", "a list")
        for k, tag in enumerate(entry.get("tags", [])):
            want(tag, (dict,), f"{where}.tags[{k}]", "an object")
            want(tag.get("slice"), (int, type(None)), f"{where}.tags[{k}].slice", "an integer or null")
            want(tag.get("tags"), (list,), f"{where}.tags[{k}].tags", "a list of class names")
        want(entry.get("layers"), (list,), f"{where}.layers", "a list")
        for j, lay in enumerate(entry["layers"]):
            lw = f"{where}.layers[{j}]"
            want(lay, (dict,), lw, "an object")
            want(lay.get("name"), (str,), f"{lw}.name", "a string")
            want(lay.get("kind"), (str,), f"{lw}.kind", "a label kind")
            want(lay.get("class_name"), (str, type(None)), f"{lw}.class_name", "a class name or null")
            want(lay.get("partial"), (bool, list, type(None)), f"{lw}.partial", "true, false, a list or null")
            array_path(lay.get("array"), f"{lw}.array")
            shapes = lay.get("shapes")
            want(shapes, (list, type(None)), f"{lw}.shapes", "a list of shapes or null")
            if shapes is None and lay.get("array") is None:
                raise bad(lw, "has neither an array nor shapes")
            for k, shp in enumerate(shapes or []):
                want(shp, (dict,), f"{lw}.shapes[{k}]", "an object")
                want(shp.get("type"), (str,), f"{lw}.shapes[{k}].type", "a shape type")
                want(shp.get("vertices"), (list,), f"{lw}.shapes[{k}].vertices", "a list of points")
            want(lay.get("shape_classes"), (list, type(None)), f"{lw}.shape_classes", "a list or null")


class _Arrays:
    """Reads the arrays of one project version, each verified against what project.json recorded."""

    def __init__(self, folder: Path, doc: dict) -> None:
        self.folder = folder
        self.name = doc.get("data") or ZARR_NAME
        self.records: dict[str, dict] | None = doc.get("arrays") if "data" in doc else None
        self.path = folder / self.name
        self.group: Any = None
        self.budget = _memory_budget()
        if self.records is not None:
            total = sum(_nbytes(r["shape"], r["dtype"]) for r in self.records.values())
            if total > self.budget:
                raise ProjectError(
                    f"project {folder}: its arrays declare {total / 1e9:.1f} GB, more than the "
                    f"{self.budget / 1e9:.1f} GB of memory available; the project file is damaged or too large")

    def _open(self) -> Any:
        import zarr

        if self.group is None:
            if not self.path.is_dir():
                raise ProjectError(f"project {self.folder}: {self.name} is missing")
            try:
                self.group = zarr.open_group(str(self.path), mode="r")
            except Exception as exc:
                raise ProjectError(f"project {self.folder}: {self.name} is damaged ({_describe(exc)})") from None
        return self.group

    def read(self, path: str) -> np.ndarray:
        """The verified array at ``path``; ProjectError naming what is missing or damaged."""
        missing = ProjectError(f"project {self.folder}: array {path!r} is missing from {self.name}")
        rec = None
        if self.records is not None:
            rec = self.records.get(path)
            if rec is None:
                raise missing
        try:
            arr = self._open()[path]
        except KeyError:
            raise missing from None
        except ProjectError:
            raise
        except Exception as exc:
            raise ProjectError(f"project {self.folder}: array {path!r} is damaged ({_describe(exc)})") from None
        shape = [int(v) for v in arr.shape]
        where = f"project {self.folder}: array {path!r}"
        if rec is not None:
            if shape != rec["shape"] or str(arr.dtype) != rec["dtype"]:
                raise ProjectError(f"{where} is {tuple(shape)} {arr.dtype} but project.json recorded "
                                   f"{tuple(rec['shape'])} {rec['dtype']}; the project is damaged")
        if _nbytes(shape, str(arr.dtype)) > self.budget:
            raise ProjectError(f"{where} declares shape {tuple(shape)}, more than the memory available")
        if rec is not None:
            present = int(arr.nchunks_initialized)
            if present < rec["chunks"]:
                raise ProjectError(f"{where}: {rec['chunks'] - present} of {rec['chunks']} chunk files are "
                                   f"missing in {self.name}; the project is damaged")
        try:
            data = np.asarray(arr[...])
        except Exception as exc:  # garbled chunk: a codec error, whatever the library calls it
            raise ProjectError(f"{where} cannot be decoded ({_describe(exc)}); the project is damaged") from None
        if rec is not None and _crc32(data) != rec["crc32"]:
            raise ProjectError(f"{where} does not match its checksum; the project is damaged")
        return data


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()[:200] or repr(exc)}"


def load_project(folder: str | os.PathLike) -> AnnotationSet:
    """Reopen a project written by :func:`save_project` (labels, kinds, tags and class table exactly).

    The project is verified first: project.json against its schema, the declared sizes against the
    memory available, and every array against the shape, chunk count and CRC-32 recorded at save.
    If another process saves the project meanwhile, the load starts again on the new version, so
    the result is always one complete saved version.

    Raises
    ------
    ProjectError : not a project, or damaged (the message names the field, array or file).
    """
    folder = Path(folder)
    pj = folder / PROJECT_FILE
    for _attempt in range(50):
        text = _read_pointer(folder, pj)
        try:
            return _load_version(folder, pj, text)
        except Exception:
            # a save switched versions (and removed ours) while we read: read the new one
            if _read_pointer(folder, pj) != text:
                continue
            raise
    raise ProjectError(f"project {folder}: saved again and again while loading; try again")


def _read_pointer(folder: Path, pj: Path) -> str:
    if not pj.is_file():
        raise ProjectError(f"{folder}: not a labelfx project (no {PROJECT_FILE})")
    try:
        return pj.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ProjectError(f"{pj}: cannot read project file ({err})") from None


def _load_version(folder: Path, pj: Path, text: str) -> AnnotationSet:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProjectError(f"{pj}: cannot read project file ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise ProjectError(f"{pj}: not a labelfx annotation project file")
    version = doc.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ProjectError(f"{pj}: malformed project file: version must be a positive integer, got {version!r:.40}")
    if version > _VERSION:
        raise ProjectError(
            f"{pj}: project version {version} is newer than this napari-labelfx understands "
            f"({_VERSION}); update napari-labelfx"
        )
    _check_doc(doc, pj)
    try:
        table = ClassTable.from_dict(doc["class_table"], source=str(pj))
    except (KeyError, TypeError, ValueError) as err:
        raise ProjectError(f"{pj}: bad class table ({err})") from None
    arrays = _Arrays(folder, doc)
    array = arrays.read

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
    except ProjectError:
        raise
    except ValueError as err:  # a layer or image the annotation model refuses (bad kind, vertices...)
        raise ProjectError(f"{pj}: malformed project file ({err})") from None
    return AnnotationSet(table, images)
