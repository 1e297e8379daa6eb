"""Predict many image files into an output folder: one labels file (and optionally one objects file) per image.

Used by the Train panel's "Predict folder..." and usable from scripts. All output paths are planned
and checked (`io.safety.check_destination`) before the first prediction, so a bad output folder is
refused at once and no input or foreign file is ever replaced.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Suffixes of the files written next to each input's stem.
LABELS_SUFFIX = "_labels.tif"
OBJECTS_SUFFIX = "_objects.tif"


@dataclass
class BatchJob:
    """One input file and the files its prediction goes to (``{"labels": path, "objects": path}``)."""

    source: Path
    outputs: dict[str, Path] = field(default_factory=dict)


def plan_folder_prediction(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    objects: bool = False,
    model: str | os.PathLike | None = None,
) -> list[BatchJob]:
    """The jobs that predict ``inputs`` (an image folder or a list of image files) into ``out_dir``.

    Each input ``name.ext`` gives ``out_dir/name_labels.tif`` (and ``name_objects.tif`` with
    ``objects``). Raises ValueError (one line) when there is nothing to predict, when ``out_dir`` is
    the input folder (its outputs would become inputs of the next run), when two inputs share a stem,
    or when an output would replace an input, a folder or a file labelfx did not write.
    """
    from ..io.folder import image_files
    from ..io.safety import check_destination

    if isinstance(inputs, (str, os.PathLike)):
        folder = Path(inputs)
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder of images")
        files = image_files(folder)
        if not files:
            raise ValueError(f"{folder}: no image files to predict")
        in_dirs = {folder.resolve()}
    else:
        files = [Path(p) for p in inputs]
        if not files:
            raise ValueError("no image files to predict")
        in_dirs = {p.resolve().parent for p in files}
    out = Path(out_dir)
    if out.resolve() in in_dirs:
        raise ValueError(f"{out}: choose an output folder other than the input folder "
                         "(the predictions would be read as inputs next time)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file, not a folder")
    jobs: list[BatchJob] = []
    seen: dict[str, Path] = {}
    for src in files:
        stem = src.name.split(".")[0] if src.name.lower().endswith((".ome.tif", ".ome.tiff")) else src.stem
        if stem in seen:
            raise ValueError(f"{seen[stem].name} and {src.name} would write the same output {stem}{LABELS_SUFFIX}")
        seen[stem] = src
        outputs = {"labels": out / f"{stem}{LABELS_SUFFIX}"}
        if objects:
            outputs["objects"] = out / f"{stem}{OBJECTS_SUFFIX}"
        for what, path in outputs.items():
            check_destination(path, inputs=(*files, model), what=what)
        jobs.append(BatchJob(src, outputs))
    return jobs


def run_folder_prediction(
    predictor: Any, jobs: Sequence[BatchJob], object_classes: Sequence[int] | None = None
) -> Iterator[dict[str, Any]]:
    """Predict each job's input and write its outputs; yield ``{"index", "source", "outputs", "objects"}``
    after each file (a volume through a 2D model is predicted slice by slice by the predictor)."""
    from ..io.reader import read_image
    from ..io.writer import write_labels

    for i, job in enumerate(jobs):
        img = read_image(job.source)
        data = img.data[0] if img.multiscale else img.data
        chw = predictor.to_channels_first(np.asarray(data), img.axes)
        result = predictor(chw)
        labels = np.asarray(result.labels)
        if labels.ndim == chw.ndim:  # multi-label (K, ...): the first positive class per pixel
            labels = np.argmax(np.concatenate([np.zeros_like(labels[:1]), labels], 0), 0)
        job.outputs["labels"].parent.mkdir(parents=True, exist_ok=True)
        write_labels(job.outputs["labels"], labels.astype(np.uint16 if labels.max(initial=0) > 255 else np.uint8),
                     scale=img.spatial_scale, metadata={"source": job.source.name})
        n_objects = None
        if "objects" in job.outputs:
            from .objects import objects_from_prediction

            ids = objects_from_prediction(result, object_classes)
            n_objects = int(ids.max(initial=0))
            write_labels(job.outputs["objects"], ids, scale=img.spatial_scale,
                         metadata={"source": job.source.name, "objects": n_objects})
        yield {"index": i, "source": str(job.source), "outputs": {k: str(v) for k, v in job.outputs.items()},
               "objects": n_objects}
