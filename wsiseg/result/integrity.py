"""A result's completeness: every chunk stored, counted at publication, counted again on opening.

zarr leaves out chunks that hold only the fill value, so a lost chunk would read as background.
A result's arrays store every chunk (:func:`wsiseg.result.writer.create_result_array`), and the
group attribute ``wsiseg_chunks`` records how many chunk files each array has when the result is
published (a sparse array such as ``damaged``: those it stored). :func:`missing_chunks` counts
them again with a listing of the folders, no chunk read. Each chunk also carries a checksum of
its content (zstd's), so one whose bytes changed fails to decode
(:func:`wsiseg.result.reading.result_reads`). Results written before the record are read as they
are.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from wsiseg.errors import ResultError, WsisegError
from wsiseg.result.pyramid import array_path, result_layout
from wsiseg.result.reading import REDO

logger = logging.getLogger(__name__)

#: Group attribute: {array name: number of chunk files}, written when the result is published.
CHUNKS_ATTR = "wsiseg_chunks"


def is_complete(out: Path) -> bool:
    """True when ``out`` is a finished wsiseg result that lacks none of its chunks.

    A result only ever appears once complete; one that lost chunks since (see the module's
    docstring) is not complete: it is logged, and a batch predicts it again.
    """
    from wsiseg.result.store import open_result_group  # the store opens results through here

    if not (out / "zarr.json").is_file():
        return False
    try:
        group = open_result_group(out)
        if not (out / array_path("labels", result_layout(group)) / "zarr.json").is_file():
            return False
        damage = missing_chunks(out, group)
    except Exception as err:  # noqa: BLE001  unreadable: open_result says what is wrong with it
        logger.debug("%s: chunks not checked (%s)", out, err)
        return True
    if damage:
        if (str(out), damage) not in _told:  # a batch asks more than once
            _told.add((str(out), damage))
            logger.warning("%s is damaged: %s; it does not count as complete", out, damage)
        return False
    return True


_told: set[tuple[str, str]] = set()  # damaged results already logged by is_complete


def _chunk_grid(array: Any) -> tuple[int, ...] | None:
    """Chunks per dimension of ``array``; None when its chunk files are not named ``c/i/j``."""
    encoding = array.metadata.chunk_key_encoding
    if getattr(encoding, "name", None) != "default" or getattr(encoding, "separator", "") != "/":
        return None
    return tuple(int(n) for n in array.cdata_shape)


def _chunk_files(folder: Path, grid: tuple[int, ...]
                 ) -> Iterator[tuple[tuple[int, ...], list[int]]]:
    """The chunk files of the array stored in ``folder``, one folder of them at a time: (the
    leading chunk indices of the folder, the last index of each chunk file in it).

    One listing of the array's folders; names that are no chunk of the grid (zarr's temporary
    files, strays) do not count.
    """
    if not grid:
        if (folder / "c").is_file():
            yield (), [0]
        return

    def walk(where: str, index: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], list[int]]]:
        depth = len(index)
        size, last = grid[depth], depth == len(grid) - 1
        try:
            entries = os.scandir(where)
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            # A link is no chunk file (reading one is refused): it counts as missing.
            found = [(int(e.name), e) for e in entries
                     if e.name.isascii() and e.name.isdigit() and int(e.name) < size
                     and (e.is_file(follow_symlinks=False) if last
                          else e.is_dir(follow_symlinks=False))]
        if last:
            yield index, [i for i, _ in found]
            return
        for i, entry in found:
            yield from walk(entry.path, (*index, i))

    yield from walk(str(folder / "c"), ())


def _count_chunk_files(folder: Path, grid: tuple[int, ...]) -> int:
    return sum(len(last) for _, last in _chunk_files(folder, grid))


def chunk_record(group: zarr.Group, root: Path) -> dict[str, int]:
    """{array path: number of chunk files} of the arrays in ``group`` and the groups below it,
    stored at ``root``."""
    record = {}
    for name, array in sorted(group.members(max_depth=None)):
        if not isinstance(array, zarr.Array):
            continue
        grid = _chunk_grid(array)
        if grid is not None:
            record[name] = _count_chunk_files(root / name, grid)
    return record


def missing_chunks(path: Path, group: zarr.Group) -> str | None:
    """What the result at ``path`` lacks of the chunk files its record lists, in words, or
    None when it lacks nothing.

    Costs one listing of each array's folders. A result written before chunks were recorded
    is not checked. A record that cannot be the array's (more chunks than its grid holds, or,
    for an array that stores every chunk, another number) is told before any folder is listed.
    """
    record = group.attrs.get(CHUNKS_ATTR)
    if record is None:
        logger.debug("%s: written without a record of its chunks; not checked", path)
        return None
    if not (isinstance(record, dict) and all(
            isinstance(n, int) and not isinstance(n, bool) for n in record.values())):
        return f"its record of chunks ({CHUNKS_ATTR!r}) is unreadable"
    problems: list[str] = []
    edited: list[str] = []
    listed = []
    for name, expected in sorted(record.items()):
        try:
            array = group[name]
        except WsisegError:  # a file the result's store refuses: told as it is
            raise
        except Exception as err:  # noqa: BLE001  gone, or its metadata is: either way it is lost
            logger.debug("%s: array %s does not open: %r", path, name, err)
            problems.append(f"{name}: the whole array is missing")
            continue
        grid = _chunk_grid(array)
        if grid is None:
            continue
        total = math.prod(grid)
        if not 0 <= expected <= total or (expected != total and not _sparse(name)):
            edited.append(f"{name}: its record of {expected} chunk files does not fit its "
                          f"grid of {total} chunks (edited?)")
            continue
        listed.append((name, expected, grid))
    if edited:
        return "; ".join(edited)
    for name, expected, grid in listed:
        present = _count_chunk_files(path / name, grid)
        if present < expected:
            problems.append(f"{name}: {expected - present} of {expected} chunks missing"
                            + _first_missing(path, name, grid, expected))
    return "; ".join(problems) or None


def _first_missing(path: Path, name: str, grid: tuple[int, ...], expected: int) -> str:
    """`` (NAME/c/i/j, ...)``: the first missing chunk files of an array that stored them all."""
    if expected != math.prod(grid):
        return ""  # a sparse array: which ones it had is not recorded
    present = {(*index, i) for index, last in _chunk_files(path / name, grid) for i in last}
    missing = list(itertools.islice((i for i in np.ndindex(*grid) if i not in present), 4))
    keys = [f"{name}/c/" + "/".join(map(str, i)) for i in missing[:3]]
    return f" ({', '.join(keys)}{', ...' if len(missing) > 3 else ''})"


def _sparse(name: str) -> bool:
    """True for the ``damaged`` mask and its levels, which store only their damaged chunks."""
    return "damaged" in name.split("/")[-2:] or name.split("/")[-1].startswith("damaged")


def damaged_error(path: str | os.PathLike[str], damage: str) -> ResultError:
    """The one line for a result that lost chunks: ``damage`` says which."""
    return ResultError(f"{path} is damaged: {damage}; {REDO} (a batch run redoes it by itself)")
