"""Opening a result: the one way to read one.

What a result holds is described in ``docs/output-format.md``; where each layout keeps its arrays
is :mod:`wsiseg.result.pyramid`'s. :func:`open_result` validates the attributes, refuses a layout
newer than this wsiseg reads and a result that lacks any of the chunk files it was published with
(:mod:`wsiseg.result.integrity`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import zarr

from wsiseg.errors import ResultError
from wsiseg.result.info import ResultInfo
from wsiseg.result.integrity import damaged_error, missing_chunks
from wsiseg.result.pyramid import array_path, pyramid_paths, result_layout


def result_array(group: zarr.Group, what: str) -> zarr.Array[Any]:
    """The ``labels`` (level 0 of the map), ``tissue``, ``damaged`` or ``probabilities`` array
    of the result ``group``, wherever its layout keeps it (KeyError when it has none)."""
    return _array_at(group, array_path(what, result_layout(group)))


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
        group = zarr.open_group(str(path), mode="r")
        attrs = group.attrs["wsiseg"]
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise not_a_result(err) from err
    # The attributes first: a newer layout may keep its arrays elsewhere.
    info = ResultInfo.from_attrs(attrs, path)
    try:
        labels = group[array_path("labels", info.layout)]
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise not_a_result(err) from err
    if not isinstance(labels, zarr.Array):
        raise ResultError(f"{path} is not a finished wsiseg result of layout {info.layout} "
                          f"({array_path('labels', info.layout)} is no array); give the .zarr "
                          "that wsiseg predict wrote")
    if labels.ndim != 2 or not info.classes:
        raise ResultError(f"{path} holds labels of shape {labels.shape} and "
                              f"{len(info.classes)} classes; it is not a wsiseg result")
    damage = missing_chunks(path, group)
    if damage:
        raise damaged_error(path, damage)
    return labels, info
