"""The label pyramid of a result and its OME-Zarr (NGFF 0.5) metadata.

Level ``k`` halves level ``k - 1`` in each axis: every output pixel takes the most frequent class
of its 2 x 2 block, ties going to the higher class index (class indices rise with severity, so a
small focus of a higher grade stays visible when zoomed out). Levels are built band by band from
the level above, so no level is ever held whole.

Physical frame of the metadata: micrometres in the slide's level-0 frame, bounds offset
included; a pixel's coordinate is its centre (NGFF's convention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from wsiseg.result.info import ResultInfo

MIN_SIZE = 256  # the pyramid stops at the first level that fits in this many pixels


def mode_downsample(block: np.ndarray, num_classes: int) -> np.ndarray:
    """2 x 2 majority of a label array (odd edges repeat their last row / column). Pure."""
    h, w = block.shape
    if h % 2 or w % 2:
        block = np.pad(block, ((0, h % 2), (0, w % 2)), mode="edge")
    quads = (block[0::2, 0::2], block[0::2, 1::2], block[1::2, 0::2], block[1::2, 1::2])
    best = np.zeros(quads[0].shape, dtype=block.dtype)
    best_count = np.zeros(quads[0].shape, dtype=np.uint8)
    for c in range(num_classes):
        count = sum((q == c).astype(np.uint8) for q in quads)
        better = count >= best_count  # '>=': ties go to the higher class
        better &= count > 0
        best[better] = c
        best_count[better] = count[better]
    return best


def level_shapes(height: int, width: int, min_size: int = MIN_SIZE) -> list[tuple[int, int]]:
    """Shapes of levels 0, 1, ... down to the first that fits in ``min_size``. Pure."""
    shapes = [(height, width)]
    while max(shapes[-1]) > min_size:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def level_path(level: int) -> str:
    """Name of a pyramid level's array in the result group (level 0 is ``labels``)."""
    return "labels" if level == 0 else f"labels_{level}"


def write_pyramid(base: Any, group: Any, num_classes: int,
                  min_size: int = MIN_SIZE) -> list[str]:
    """Write the levels below the label array ``base`` into the zarr ``group``.

    Each level is compressed as ``base`` is, and stores every chunk, background ones too, so
    that a lost chunk can be told from an empty one. Returns the paths of all levels,
    ``labels`` (``base``) first.
    """
    shapes = level_shapes(*base.shape, min_size=min_size)
    chunk_rows, chunk_cols = base.chunks
    paths = [level_path(0)]
    source = base
    for level, (h, w) in enumerate(shapes[1:], start=1):
        target = group.create_array(
            level_path(level), shape=(h, w), chunks=(min(chunk_rows, h), min(chunk_cols, w)),
            dtype="uint8", fill_value=0, dimension_names=("y", "x"), overwrite=True,
            compressors=base.compressors, config={"write_empty_chunks": True},
        )
        rows = target.chunks[0]
        for y in range(0, h, rows):
            y1 = min(h, y + rows)
            band = np.asarray(source[2 * y : min(source.shape[0], 2 * y1)])
            target[y:y1] = mode_downsample(band, num_classes)
        paths.append(level_path(level))
        source = target
    return paths


def ngff_metadata(paths: Sequence[str], info: ResultInfo) -> dict[str, Any]:
    """The ``ome`` attributes (NGFF 0.5 multiscales + image-label) of a result's label pyramid."""
    mpp_x, mpp_y = info.slide.mpp
    sx, sy = info.scale_to_level0
    ox, oy = info.offset_level0
    datasets = []
    for level, path in enumerate(paths):
        f = 2 ** level
        datasets.append({
            "path": path,
            "coordinateTransformations": [
                {"type": "scale", "scale": [_um(f * sy * mpp_y), _um(f * sx * mpp_x)]},
                {"type": "translation", "translation": [_um((oy + 0.5 * f * sy) * mpp_y),
                                                        _um((ox + 0.5 * f * sx) * mpp_x)]},
            ],
        })
    classes = info.classes
    return {
        "version": "0.5",
        "multiscales": [{
            "name": "labels",
            "axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                     {"name": "x", "type": "space", "unit": "micrometer"}],
            "datasets": datasets,
            "type": "mode (2x2, ties to the higher class)",
        }],
        "image-label": {
            "version": "0.5",
            "colors": [{"label-value": c.index,
                        "rgba": [*c.color, 0 if c.index == 0 else 255]}
                       for c in classes],
            "properties": [{"label-value": c.index, "name": c.name} for c in classes],
        },
    }


def _um(value: float) -> float:
    return round(value, 9)  # drops float noise such as 0.9999999999999999


def pyramid_paths(group: Any) -> list[str]:
    """The level paths a result's NGFF metadata lists (just ``labels`` for older results)."""
    ome = group.attrs.get("ome")
    if not ome:
        return [level_path(0)]
    return [d["path"] for d in ome["multiscales"][0]["datasets"]]
