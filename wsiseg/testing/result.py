"""Result stores with a known map, for testing what reads results (exports, evaluation)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from wsiseg.models.card import ClassInfo
from wsiseg.result.info import ModelInfo, ResultInfo, SlideSource, TissueSampling


def write_result(
    path: str | Path,
    labels: np.ndarray,
    classes: Sequence[ClassInfo],
    scale: tuple[float, float] = (1.0, 1.0),
    offset: tuple[int, int] = (0, 0),
    slide_mpp: tuple[float, float] = (0.25, 0.25),
    dimensions: tuple[int, int] | None = None,
    chunk: int = 64,
) -> Path:
    """A finished result holding ``labels``, as ``wsiseg predict`` lays it out (no pyramid).

    Map pixel (x, y) covers level-0 pixels from ``offset + (x, y) * scale``; the slide's level 0
    is ``dimensions`` (width, height), by default just large enough to hold the map.
    """
    path = Path(path)
    h, w = labels.shape
    if dimensions is None:
        dimensions = (offset[0] + math.ceil(w * scale[0]), offset[1] + math.ceil(h * scale[1]))
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    array = group.create_array("labels", shape=(h, w), chunks=(min(h, chunk), min(w, chunk)),
                               dtype="uint8", fill_value=0, dimension_names=("y", "x"))
    array[...] = labels
    analysis_mpp = (slide_mpp[0] * scale[0], slide_mpp[1] * scale[1])
    group.attrs["wsiseg"] = ResultInfo(
        path=path, version="0.0", slide=SlideSource(
            path=Path("slide.svs"), size_bytes=0, vendor="test",
            dimensions=tuple(dimensions),
            bounds=(*offset, dimensions[0] - offset[0], dimensions[1] - offset[1]),
            mpp=tuple(slide_mpp), mpp_source="metadata", quickhash=None),
        level=0, level_downsample=1.0, resample=tuple(scale), analysis_mpp=analysis_mpp,
        scale_to_level0=tuple(scale), offset_level0=tuple(offset), shape=(h, w),
        classes=tuple(classes),
        model=ModelInfo(name="test-model", source="test", card={}, weights_sha256=None),
        patch_size=64, stride=32, sigma=8.0, tissue_threshold=0.2,
        tissue=TissueSampling(factor=1, mpp=analysis_mpp, scale_to_level0=tuple(scale),
                              offset_level0=tuple(offset)),
        patches_total=0, patches_kept=0, patches_predicted=0, stripes=1, seconds=0.0,
        timings={}, config={},
    ).to_attrs()
    return path
