"""The pyramids of a result, where they are stored, and their OME-Zarr (NGFF 0.5) metadata.

Level ``k`` halves level ``k - 1`` in each axis. In the label pyramid every output pixel takes
the most frequent class of its 2 x 2 block, ties going to the higher class index (class indices
rise with severity, so a small focus of a higher grade stays visible when zoomed out); the
tissue mask is reduced the same way, the ``damaged`` mask keeps any damaged pixel (maximum) and
the picture of the slide and the map's uncertainty take the mean. Levels of the map are built band by band from the level
above, so no level is ever held whole.

NGFF asks every label image to have as many levels as the image it labels, so the picture of
the slide, the tissue mask and the ``damaged`` mask all get the label pyramid's number of
levels (:func:`level_shapes`): the picture, coarser from the start, goes down to a few pixels.

Physical frame of the metadata: micrometres, with the centre of the slide's level-0 pixel
(0, 0) at the origin (the frame of an NGFF image of the slide itself, whose level 0 has scale
``mpp`` and no translation); bounds offset included. NGFF places an array index at
``index * scale + translation``, the pixel's centre, so a pixel covering level-0 pixels
``[o, o + s)`` has translation ``(o + s / 2 - 1 / 2) mpp``.

Where arrays lie in the store depends on the result's layout (``ResultInfo.layout``); see
:func:`array_path`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import zarr
    from zarr.core.array_spec import ArrayConfigParams

    from wsiseg.result.info import ResultInfo

MIN_SIZE = 256  # the pyramid stops at the first level that fits in this many pixels

#: The group of label images (NGFF's reserved name) and the names of the label images in it.
LABELS_GROUP = "labels"
CLASSES_LABEL, TISSUE_LABEL, DAMAGED_LABEL = "classes", "tissue", "damaged"
#: The artefact labels (``wsiseg.slide.artefacts``), on the tissue mask's grid.
QC_LABEL = "qc"
#: Arrays that are no NGFF label image: under a group of their own.
EXTRA_GROUP = "wsiseg"
#: The map's uncertainty, an NGFF image of its own (levels ``0``, ``1``, ...) in EXTRA_GROUP.
UNCERTAINTY_IMAGE = f"{EXTRA_GROUP}/uncertainty"
#: How each level of a label pyramid is made from the one above (NGFF ``multiscales.type``).
MODE_TYPE = "mode"
MODE_RULE = ("2 x 2 blocks; each pixel takes the most frequent value of its block, ties going "
             "to the higher value; an odd last row or column repeats itself")

#: Paths of a result's arrays in each layout: level 0 of the label map, the tissue mask, the
#: damaged mask, the probabilities and level 0 of the uncertainty (results of layout 1 never
#: hold one: its path there is where none is found).
_PATHS = {
    1: {"labels": "labels", "tissue": "tissue", "damaged": "damaged",
        "probabilities": "probabilities", "uncertainty": "uncertainty", "qc": "qc"},
    2: {"labels": f"{LABELS_GROUP}/{CLASSES_LABEL}/0",
        "tissue": f"{LABELS_GROUP}/{TISSUE_LABEL}/0",
        "damaged": f"{LABELS_GROUP}/{DAMAGED_LABEL}/0",
        "probabilities": f"{EXTRA_GROUP}/probabilities",
        "uncertainty": f"{UNCERTAINTY_IMAGE}/0",
        "qc": f"{LABELS_GROUP}/{QC_LABEL}/0"},
}


def array_path(what: str, layout: int) -> str:
    """Path in a result of layout ``layout`` of its ``labels`` (level 0 of the map),
    ``tissue``, ``damaged``, ``probabilities`` or ``uncertainty`` (level 0) array."""
    if layout not in _PATHS:
        raise ValueError(f"result layout {layout} is not one of {', '.join(map(str, _PATHS))}")
    if what not in _PATHS[layout]:
        raise ValueError(f"a result has no array {what!r}; choose from "
                         f"{', '.join(_PATHS[layout])}")
    return _PATHS[layout][what]


def label_level_path(name: str, level: int) -> str:
    """Path of level ``level`` of the label image ``name`` (layout 2)."""
    return f"{LABELS_GROUP}/{name}/{level}"


def uncertainty_level_path(level: int) -> str:
    """Path of level ``level`` of the map's uncertainty (layout 2)."""
    return f"{UNCERTAINTY_IMAGE}/{level}"


def max_downsample(block: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """2 x 2 maximum (odd edges repeat their last row / column). Pure."""
    h, w = block.shape
    if h % 2 or w % 2:
        block = np.pad(block, ((0, h % 2), (0, w % 2)), mode="edge")
    out: npt.NDArray[np.uint8] = np.maximum(np.maximum(block[0::2, 0::2], block[0::2, 1::2]),
                                            np.maximum(block[1::2, 0::2], block[1::2, 1::2]))
    return out


def mean_downsample(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """2 x 2 mean, rounded, of a uint8 (C, H, W) image (odd edges repeat themselves). Pure."""
    _, h, w = image.shape
    if h % 2 or w % 2:
        image = np.pad(image, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    total = (image[:, 0::2, 0::2].astype(np.uint16) + image[:, 0::2, 1::2]
             + image[:, 1::2, 0::2] + image[:, 1::2, 1::2])
    return ((total + 2) // 4).astype(np.uint8)


def mode_downsample(block: npt.NDArray[np.uint8], num_classes: int) -> npt.NDArray[np.uint8]:
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


def level_shapes(height: int, width: int, min_size: int = MIN_SIZE,
                 levels: int | None = None) -> list[tuple[int, int]]:
    """Shapes of levels 0, 1, ... down to the first that fits in ``min_size`` (or exactly
    ``levels`` of them, halving, never below one pixel). Pure."""
    shapes = [(height, width)]
    while (len(shapes) < levels) if levels is not None else (max(shapes[-1]) > min_size):
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def level_path(level: int) -> str:
    """Name of a label pyramid level's array in a result of layout 1 (level 0 is
    ``labels``)."""
    return "labels" if level == 0 else f"labels_{level}"


def write_pyramid(base: zarr.Array[Any], group: zarr.Group, num_classes: int,
                  min_size: int = MIN_SIZE, path: Callable[[int], str] | None = None,
                  levels: int | None = None,
                  reduce: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
                  store_empty: bool = True) -> list[str]:
    """Write the levels below the label array ``base`` into the zarr ``group``.

    Level ``k`` goes to ``path(k)`` (by default the class map's levels,
    ``labels/classes/k``); there are ``levels`` of them, or as many as :func:`level_shapes`
    gives. ``reduce`` makes a level from a band of the one above (by default the 2 x 2 mode
    of ``num_classes`` classes). Each level is compressed as ``base`` is; with
    ``store_empty`` it stores every chunk, background ones too, so that a lost chunk can be
    told from an empty one. Returns the paths of all levels, ``path(0)`` (``base``) first.
    """
    path = path or (lambda k: label_level_path(CLASSES_LABEL, k))
    reduce = reduce or (lambda band: mode_downsample(band, num_classes))
    if base.ndim != 2:
        raise ValueError(f"a label pyramid is built from a 2-D array, got shape {base.shape}")
    height, width = base.shape
    shapes = level_shapes(height, width, min_size=min_size, levels=levels)
    chunk_rows, chunk_cols = base.chunks
    # A cast: zarr's TypedDict leaves its keys optional only when checked as Python >= 3.11.
    config = cast("ArrayConfigParams", {"write_empty_chunks": store_empty})
    paths = [path(0)]
    source = base
    for level, (h, w) in enumerate(shapes[1:], start=1):
        target = group.create_array(
            path(level), shape=(h, w), chunks=(min(chunk_rows, h), min(chunk_cols, w)),
            dtype="uint8", fill_value=0, dimension_names=("y", "x"), overwrite=True,
            compressors=base.compressors, config=config,
        )
        rows = target.chunks[0]
        for y in range(0, h, rows):
            y1 = min(h, y + rows)
            band = np.asarray(source[2 * y : min(source.shape[0], 2 * y1)])
            target[y:y1] = reduce(band)
        paths.append(path(level))
        source = target
    return paths


def ngff_metadata(info: ResultInfo, levels: int, damaged: bool = False
                  ) -> dict[str, dict[str, Any]]:
    """The ``ome`` attributes (NGFF 0.5) of a result of layout 2, by group path: the image of
    the slide (``""``, the root: ``levels`` levels of axes c, y, x), the ``labels`` group and
    its label images (``classes``, ``tissue`` and, with ``damaged``, ``damaged``), each of
    ``levels`` levels of axes y, x."""
    t = info.tissue
    on_map = (info.scale_to_level0, info.offset_level0)
    on_mask = (t.scale_to_level0, t.offset_level0)
    space = [{"name": "y", "type": "space", "unit": "micrometer"},
             {"name": "x", "type": "space", "unit": "micrometer"}]
    image: dict[str, Any] = {
        "version": "0.5",
        "multiscales": [{
            "name": info.slide.path.name,
            "axes": [{"name": "c", "type": "channel"}, *space],
            "datasets": _datasets(info, *on_mask, levels, channel=True),
            "type": "mean",
            "metadata": {"description": "the slide at the tissue mask's resolution; each "
                                        "level the rounded mean of 2 x 2 pixels of the one "
                                        "above"},
        }],
        "omero": {
            "channels": [{"label": name, "color": color, "active": True,
                          "window": {"min": 0, "max": 255, "start": 0, "end": 255}}
                         for name, color in (("red", "FF0000"), ("green", "00FF00"),
                                             ("blue", "0000FF"))],
            "rdefs": {"model": "color"},
        },
    }
    classes = info.classes
    labels = {
        CLASSES_LABEL: _label_image(
            CLASSES_LABEL, _datasets(info, *on_map, levels), MODE_TYPE, MODE_RULE,
            [(c.index, c.name, [*c.color, 0 if c.index == 0 else 255]) for c in classes]),
        TISSUE_LABEL: _label_image(
            TISSUE_LABEL, _datasets(info, *on_mask, levels), MODE_TYPE, MODE_RULE,
            [(0, "glass", [0, 0, 0, 0]), (1, "tissue", [0, 160, 0, 96])]),
    }
    if info.qc is not None:
        from wsiseg.slide.artefacts import QC_COLOURS, QC_NAMES

        labels[QC_LABEL] = _label_image(
            QC_LABEL, _datasets(info, *on_mask, levels), MODE_TYPE, MODE_RULE,
            [(0, "none", [0, 0, 0, 0]),
             *[(v, name, [*QC_COLOURS[v], 255]) for v, name in QC_NAMES.items() if v]])
    if damaged:
        labels[DAMAGED_LABEL] = _label_image(
            DAMAGED_LABEL, _datasets(info, *on_map, levels), "max",
            "2 x 2 blocks; each pixel is damaged when any pixel of its block is",
            [(0, "decoded", [0, 0, 0, 0]), (1, "damaged", [255, 0, 255, 255])])
    out: dict[str, dict[str, Any]] = {
        "": image, LABELS_GROUP: {"version": "0.5", "labels": list(labels)}}
    out.update({f"{LABELS_GROUP}/{name}": attrs for name, attrs in labels.items()})
    if info.uncertainty is not None:
        out[UNCERTAINTY_IMAGE] = {
            "version": "0.5",
            "multiscales": [{
                "name": "uncertainty",
                "axes": space,
                "datasets": _datasets(info, *on_map, levels),
                "type": "mean",
                "metadata": {"description": UNCERTAINTY_RULE,
                             "measure": info.uncertainty},
            }],
            "omero": {
                "channels": [{"label": "uncertainty", "color": "FF00FF", "active": True,
                              "window": {"min": 0, "max": 255, "start": 0, "end": 255}}],
                "rdefs": {"model": "greyscale"},
            },
        }
    return out


#: What the values of the uncertainty image are, as its metadata says.
UNCERTAINTY_RULE = ("uint8 round(255 u), 0 certain, 255 uniform: u the entropy of the blended "
                    "class probabilities over log(classes), with test-time views the larger "
                    "of that and the views' normalised mutual information; 0 where no window "
                    "was predicted; each level the rounded mean of 2 x 2 pixels of the one "
                    "above")


def _datasets(info: ResultInfo, scale_to_level0: Sequence[float], offset_level0: Sequence[int],
              levels: int, channel: bool = False) -> list[dict[str, Any]]:
    """``datasets`` of ``levels`` levels ``0``, ``1``, ... of a grid whose pixel (x, y) covers
    level-0 pixels from ``offset_level0 + (x, y) * scale_to_level0`` (see the module)."""
    mpp_x, mpp_y = info.slide.mpp
    sx, sy = scale_to_level0
    ox, oy = offset_level0
    out = []
    for level in range(levels):
        f = 2 ** level
        scale = [_um(f * sy * mpp_y), _um(f * sx * mpp_x)]
        translation = [_um((oy + f * sy / 2 - 0.5) * mpp_y), _um((ox + f * sx / 2 - 0.5) * mpp_x)]
        if channel:
            scale, translation = [1.0, *scale], [0.0, *translation]
        out.append({"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": scale},
            {"type": "translation", "translation": translation}]})
    return out


def _label_image(name: str, datasets: list[dict[str, Any]], kind: str, rule: str,
                 values: Sequence[tuple[int, str, list[int]]]) -> dict[str, Any]:
    return {
        "version": "0.5",
        "multiscales": [{
            "name": name,
            "axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                     {"name": "x", "type": "space", "unit": "micrometer"}],
            "datasets": datasets,
            "type": kind,
            "metadata": {"method": rule},
        }],
        "image-label": {
            "version": "0.5",
            "colors": [{"label-value": v, "rgba": rgba} for v, _, rgba in values],
            "properties": [{"label-value": v, "name": n} for v, n, _ in values],
            "source": {"image": "../../"},
        },
    }


def _um(value: float) -> float:
    return round(value, 9)  # drops float noise such as 0.9999999999999999


def result_layout(group: zarr.Group) -> int:
    """The layout of the result ``group`` (1 when it records none)."""
    attrs = group.attrs.get("wsiseg")
    layout = attrs.get("layout", 1) if isinstance(attrs, dict) else 1
    return layout if isinstance(layout, int) and not isinstance(layout, bool) else 1


def pyramid_paths(group: zarr.Group) -> list[str]:
    """The paths in the result ``group`` of its label map's levels, as its NGFF metadata lists
    them (just level 0 for results written without a pyramid)."""
    if result_layout(group) >= 2:
        name = f"{LABELS_GROUP}/{CLASSES_LABEL}"
        try:
            ome = group[name].attrs.get("ome")
        except KeyError:
            ome = None
        if not ome:
            return [array_path("labels", 2)]
        return [f"{name}/{path}" for path in _dataset_paths(ome)]
    ome = group.attrs.get("ome")
    if not ome:
        return [level_path(0)]
    return _dataset_paths(ome)


def _dataset_paths(ome: Any) -> list[str]:
    """The ``path`` of each level of the first multiscales of the NGFF attributes ``ome``."""
    # Any: the JSON as stored, unchecked; metadata of another shape fails with its own
    # KeyError or TypeError, as reading it always has.
    return [d["path"] for d in ome["multiscales"][0]["datasets"]]
