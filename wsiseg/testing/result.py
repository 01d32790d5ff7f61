"""Result stores with a known map, for testing what reads results (exports, evaluation)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import zarr

from wsiseg.cards import ClassInfo
from wsiseg.result.info import LAYOUT, ModelInfo, ResultInfo, SlideSource, TissueSampling
from wsiseg.result.pyramid import (
    CLASSES_LABEL,
    LABELS_GROUP,
    QC_LABEL,
    array_path,
    ngff_metadata,
)
from wsiseg.slide.geometry import Level0Box


def write_result(
    path: str | Path,
    labels: npt.NDArray[np.uint8],
    classes: Sequence[ClassInfo],
    scale: tuple[float, float] = (1.0, 1.0),
    offset: tuple[int, int] = (0, 0),
    slide_mpp: tuple[float, float] = (0.25, 0.25),
    dimensions: tuple[int, int] | None = None,
    chunk: int = 64,
    layout: int = LAYOUT,
    qc: npt.NDArray[np.uint8] | None = None,
    tissue_factor: int = 1,
) -> Path:
    """A finished result holding ``labels``, where ``wsiseg predict`` puts it in a result of
    ``layout``, with the label image's metadata in layout 2 (no pyramid, no picture of the
    slide, no tissue mask).

    Map pixel (x, y) covers level-0 pixels from ``offset + (x, y) * scale``; the slide's level 0
    is ``dimensions`` (width, height), by default just large enough to hold the map.

    ``qc``: artefact labels (``wsiseg.slide.artefacts.QC_NAMES``) on the tissue mask's grid,
    ``tissue_factor`` map pixels a side per qc pixel (shape ``ceil(h / f), ceil(w / f)``), as
    ``--qc record`` writes them (layout 2 or later).
    """
    path = Path(path)
    h, w = labels.shape
    if dimensions is None:
        dimensions = (offset[0] + math.ceil(w * scale[0]), offset[1] + math.ceil(h * scale[1]))
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    array = group.create_array(array_path("labels", layout), shape=(h, w),
                               chunks=(min(h, chunk), min(w, chunk)), dtype="uint8",
                               fill_value=0, dimension_names=("y", "x"))
    array[...] = labels
    analysis_mpp = (slide_mpp[0] * scale[0], slide_mpp[1] * scale[1])
    # Pairs rebuilt as tuples: callers may give lists.
    scale = (scale[0], scale[1])
    offset = (offset[0], offset[1])
    info = ResultInfo(
        path=path, version="0.0", slide=SlideSource(
            path=Path("slide.svs"), size_bytes=0, vendor="test",
            dimensions=(dimensions[0], dimensions[1]),
            # The scanned area: what the map covers, as wsiseg predict records it.
            bounds=Level0Box((*offset, min(dimensions[0] - offset[0], math.ceil(w * scale[0])),
                              min(dimensions[1] - offset[1], math.ceil(h * scale[1])))),
            mpp=(slide_mpp[0], slide_mpp[1]), mpp_source="metadata", quickhash=None),
        level=0, level_downsample=1.0, resample=scale, analysis_mpp=analysis_mpp,
        scale_to_level0=scale, offset_level0=offset, shape=(h, w),
        classes=tuple(classes),
        model=ModelInfo(name="test-model", source="test", card={}, weights_sha256=None),
        patch_size=64, stride=32, sigma=8.0, tissue_threshold=0.2,
        tissue=TissueSampling(factor=tissue_factor,
                              mpp=(analysis_mpp[0] * tissue_factor,
                                   analysis_mpp[1] * tissue_factor),
                              scale_to_level0=(scale[0] * tissue_factor,
                                               scale[1] * tissue_factor),
                              offset_level0=offset),
        patches_total=0, patches_kept=0, patches_predicted=0, stripes=1, seconds=0.0,
        timings={}, config={}, layout=layout, qc=None if qc is None else "record",
    )
    if qc is not None:
        expected = (-(-h // tissue_factor), -(-w // tissue_factor))
        if qc.shape != expected or layout < 2:
            raise ValueError(f"qc labels must be {expected} in layout 2 or later, got "
                             f"{qc.shape} in layout {layout}")
        qc_array = group.create_array(array_path("qc", layout), shape=qc.shape,
                                      chunks=(min(qc.shape[0], chunk), min(qc.shape[1], chunk)),
                                      dtype="uint8", fill_value=0, dimension_names=("y", "x"))
        qc_array[...] = qc
    group.attrs["wsiseg"] = info.to_attrs()
    if layout >= 2:
        classes_group = f"{LABELS_GROUP}/{CLASSES_LABEL}"
        group[classes_group].attrs["ome"] = ngff_metadata(info, 1)[classes_group]
        labels_list = [CLASSES_LABEL]
        if qc is not None:
            group[f"{LABELS_GROUP}/{QC_LABEL}"].attrs["ome"] = ngff_metadata(info, 1)[
                f"{LABELS_GROUP}/{QC_LABEL}"]
            labels_list.append(QC_LABEL)
        group[LABELS_GROUP].attrs["ome"] = {"version": "0.5", "labels": labels_list}
    return path


def relabel(path: str | Path, label: str, value: int, name: str,
            rgba: tuple[int, int, int, int]) -> None:
    """Give ``value`` of the label image ``labels/<label>`` of the result at ``path`` another
    ``name`` and colour ``rgba`` in its NGFF ``image-label`` metadata, as another writer
    might: readers are to take names and colours from there."""
    meta_path = Path(path) / LABELS_GROUP / label / "zarr.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    image_label = meta["attributes"]["ome"]["image-label"]
    for entry in image_label["properties"]:
        if entry["label-value"] == value:
            entry["name"] = name
    for entry in image_label["colors"]:
        if entry["label-value"] == value:
            entry["rgba"] = list(rgba)
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
