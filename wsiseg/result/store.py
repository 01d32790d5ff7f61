"""Opening a result: the one way to read one.

What a result holds is described in ``docs/output-format.md``; where each layout keeps its arrays
is :mod:`wsiseg.result.pyramid`'s. :func:`open_result_group` opens the zarr group of an existing
result for reading, through :class:`wsiseg.result.files.ResultStore` (plain files inside the
result only, of bounded size, each chunk checked before it is decompressed). :func:`open_result`
validates the attributes and their values, refuses a layout newer than this wsiseg reads, arrays
whose data type or shape are not those the attributes imply, and a result that lacks any of the
chunk files it was published with (:mod:`wsiseg.result.integrity`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import zarr

from wsiseg.errors import ResultError, WsisegError
from wsiseg.result.files import ResultStore
from wsiseg.result.info import ResultInfo
from wsiseg.result.integrity import damaged_error, missing_chunks
from wsiseg.result.pyramid import (
    CLASSES_LABEL,
    DAMAGED_LABEL,
    QC_LABEL,
    TISSUE_LABEL,
    array_path,
    label_level_path,
    level_path,
    level_shapes,
    pyramid_paths,
    result_layout,
    uncertainty_level_path,
)
from wsiseg.result.reading import REDO

#: The most levels a pyramid of a result has (halving from 2**63 pixels reaches one in 64).
MAX_LEVELS = 64


def open_result_group(path: str | os.PathLike[str]) -> zarr.Group:
    """The zarr group of the existing result at ``path``, read-only, every read through a
    :class:`~wsiseg.result.files.ResultStore`. Nothing is validated here beyond what each read
    checks: :func:`open_result` is the way to read a result; this is for its other arrays."""
    return zarr.open_group(store=ResultStore(Path(path)), mode="r", zarr_format=3)


def result_array(group: zarr.Group, what: str) -> zarr.Array[Any]:
    """The ``labels`` (level 0 of the map), ``tissue``, ``damaged``, ``probabilities`` or
    ``uncertainty`` (level 0) array of the result ``group``, wherever its layout keeps it
    (KeyError when it has none)."""
    return _array_at(group, array_path(what, result_layout(group)))


def uncertainty_array(group: zarr.Group, info: ResultInfo) -> zarr.Array[Any] | None:
    """Level 0 of the uncertainty of the result ``group`` (uint8, 0 certain, 255 uniform), or
    None for a result that has none (one written before there was one): its attributes say."""
    if info.uncertainty is None:
        return None
    return result_array(group, "uncertainty")


def qc_array(group: zarr.Group, info: ResultInfo) -> zarr.Array[Any] | None:
    """Level 0 of the artefact labels of the result ``group`` (uint8 on the tissue mask's
    grid: ``wsiseg.slide.artefacts.QC_NAMES``), or None for a result without (``--qc off``,
    or written before artefacts were looked for): its attributes say."""
    if info.qc is None:
        return None
    return result_array(group, "qc")


def label_pyramid(group: zarr.Group) -> list[zarr.Array[Any]]:
    """The levels of the label map of the result ``group``, level 0 first."""
    return [_array_at(group, p) for p in pyramid_paths(group)]


def _array_at(group: zarr.Group, path: str) -> zarr.Array[Any]:
    """The array at ``path`` in ``group``; KeyError when there is none (a group is none)."""
    node = group[path]
    if not isinstance(node, zarr.Array):
        raise KeyError(f"{path} is a group, not an array")
    return node


def open_result(path: str | os.PathLike[str]) -> tuple[zarr.Array[Any], ResultInfo]:
    """The label map's array (level 0, lazily read zarr) and the validated
    :class:`ResultInfo` of a finished result that lacks none of the chunk files it was
    published with, whatever its layout.

    Read the arrays inside :func:`result_reads` (or a function under :func:`reads_result`), so
    that a chunk damaged since is told in one line too.
    """
    path = Path(path)
    if not path.exists():
        raise ResultError(f"result {path} does not exist; give the .zarr folder that "
                              "wsiseg predict wrote")

    def not_a_result(err: Exception) -> ResultError:
        what = f"no {err}" if isinstance(err, KeyError) else type(err).__name__
        return ResultError(f"{path} is not a finished wsiseg result ({what}); give the "
                           ".zarr that wsiseg predict wrote")

    try:
        group = open_result_group(path)
        attrs = group.attrs["wsiseg"]
    except WsisegError:  # a file the result's store refuses, told as it is
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise not_a_result(err) from err
    # The attributes first: a newer layout may keep its arrays elsewhere.
    info = ResultInfo.from_attrs(attrs, path)
    try:
        labels = group[array_path("labels", info.layout)]
    except WsisegError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise not_a_result(err) from err
    if not isinstance(labels, zarr.Array):
        raise ResultError(f"{path} is not a finished wsiseg result of layout {info.layout} "
                          f"({array_path('labels', info.layout)} is no array); give the .zarr "
                          "that wsiseg predict wrote")
    if labels.ndim != 2 or not info.classes:
        raise ResultError(f"{path} holds labels of shape {labels.shape} and "
                              f"{len(info.classes)} classes; it is not a wsiseg result")
    # Before any chunk is counted or read: what the arrays declare bounds both.
    _check_arrays(path, group, info, labels)
    damage = missing_chunks(path, group)
    if damage:
        raise damaged_error(path, damage)
    return labels, info


def _edited(path: Path, what: str) -> ResultError:
    return ResultError(f"{path} is damaged: {what}; the result was edited or damaged since "
                       f"wsiseg predict wrote it; {REDO}")


def _check_array(path: Path, group: zarr.Group, name: str, shape: tuple[int, ...],
                 required: bool = True) -> zarr.Array[Any] | None:
    """The array ``name`` of ``group``, refused unless it is uint8 of ``shape``; None when it
    is absent and not ``required``."""
    try:
        array = group[name]
    except KeyError:
        if required:
            raise _edited(path, f"it has no array {name}") from None
        return None
    except (ValueError, TypeError) as err:  # metadata zarr itself refuses
        raise _edited(path, f"the metadata of {name} does not read ({err})") from err
    if not isinstance(array, zarr.Array):
        raise _edited(path, f"{name} is a group, not an array")
    if array.dtype != "uint8" or tuple(array.shape) != shape:
        raise _edited(path, f"{name} is {array.dtype} of shape {tuple(array.shape)}, not uint8 "
                            f"of shape {shape} as the result's attributes say")
    return array


def _check_arrays(path: Path, group: zarr.Group, info: ResultInfo,
                  labels: zarr.Array[Any]) -> None:
    """Every array of the result has the data type and shape its attributes imply: the map's
    levels halving it, the tissue mask ``tissue.factor`` times coarser, the picture on the
    tissue mask's grid, the damaged mask and the uncertainty the map's shape (the uncertainty's
    levels halving it, and present when the attributes record one), probabilities one plane
    per class."""
    layout, (height, width) = info.layout, info.shape
    _check_array(path, group, array_path("labels", layout), (height, width))
    try:
        paths = pyramid_paths(group)
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        raise _edited(path, f"the multiscales metadata of its label map does not read "
                            f"({type(err).__name__}: {err})") from err
    own = ((lambda k: label_level_path(CLASSES_LABEL, k)) if layout >= 2 else level_path)
    if not 1 <= len(paths) <= MAX_LEVELS or paths != [own(k) for k in range(len(paths))]:
        shown = repr(paths) if len(repr(paths)) <= 80 else repr(paths)[:77] + "..."
        raise _edited(path, f"the multiscales metadata of its label map lists the levels "
                            f"{shown}, not {own(0)}, {own(1)}, ...")
    levels = len(paths)
    for k, shape in enumerate(level_shapes(height, width, levels=levels)[1:], start=1):
        _check_array(path, group, own(k), shape)
    factor = info.tissue.factor
    tissue = (math.ceil(height / factor), math.ceil(width / factor))
    if _check_array(path, group, array_path("tissue", layout), tissue,
                    required=False) and layout >= 2:
        tissue_levels = level_shapes(*tissue, levels=levels)
        for k, shape in enumerate(tissue_levels[1:], start=1):
            _check_array(path, group, label_level_path(TISSUE_LABEL, k), shape, required=False)
        for k, (h, w) in enumerate(tissue_levels):
            _check_array(path, group, str(k), (3, h, w), required=False)
    qc = info.qc is not None
    if _check_array(path, group, array_path("qc", layout), tissue, required=qc) and layout >= 2:
        for k, shape in enumerate(level_shapes(*tissue, levels=levels)[1:], start=1):
            _check_array(path, group, label_level_path(QC_LABEL, k), shape, required=qc)
    if _check_array(path, group, array_path("damaged", layout), (height, width),
                    required=False) and layout >= 2:
        for k, shape in enumerate(level_shapes(height, width, levels=levels)[1:], start=1):
            _check_array(path, group, label_level_path(DAMAGED_LABEL, k), shape,
                         required=False)
    _check_array(path, group, array_path("probabilities", layout),
                 (len(info.classes), height, width), required=False)
    recorded = info.uncertainty is not None
    if _check_array(path, group, array_path("uncertainty", layout), (height, width),
                    required=recorded) and layout >= 2:
        for k, shape in enumerate(level_shapes(height, width, levels=levels)[1:], start=1):
            _check_array(path, group, uncertainty_level_path(k), shape, required=recorded)
