"""The zarr v3 output store: the diagnostic map and what it was made from.

Layout 2 (a contract for exports and other tools), a valid OME-Zarr (NGFF 0.5) image whose
label images are the map and its masks::

    NAME.wsiseg.zarr/              the image: the slide at the tissue mask's resolution
      0, 1, ...                    uint8 (3, h, w)  RGB, axes c, y, x; each level halves the
                                                    one above (2 x 2 mean)
      labels/                      NGFF's group of label images: ome.labels lists them
        classes/0, 1, ...          uint8 (H, W)  class index per analysis pixel, then the
                                                 label pyramid (2 x 2 mode, ties to the
                                                 higher class)
        tissue/0, 1, ...           uint8 (h, w)  tissue mask at its own, coarser, resolution
        damaged/0, 1, ...          uint8 (H, W)  1 where the slide could not be decoded
                                                 (--skip-damaged); only when some part could
                                                 not; levels keep any damaged pixel
      wsiseg/probabilities         uint8 (C, H, W)  round(255 p), only when asked for; no NGFF
                                                    image
      attrs["wsiseg"] a ResultInfo (wsiseg.result.info): layout, version, slide, level,
                      scale_to_level0, offset_level0, classes, model, ...
      attrs["ome"]    NGFF 0.5 multiscales (+ omero) of the image; every label image has its
                      own multiscales and image-label (wsiseg.result.pyramid), with as many
                      levels as the image, all in the same micrometre frame
      attrs["wsiseg_chunks"]  {array path: number of chunk files}, for every array

``layout`` in ``attrs["wsiseg"]`` is the version of this layout (2). Results of layout 1
(and those without ``layout``) keep the map in the root array ``labels``, its levels in
``labels_1``, ..., and ``tissue``, ``damaged``, ``probabilities`` beside it; they are read
from there (:func:`result_array`). :func:`open_result` is the way to read a result: it
validates the attributes and refuses a layout newer than this wsiseg reads.

The store is written under a temporary sibling name and renamed only when every chunk and the
attributes are in place, so an interrupted run never leaves an output that looks complete.

Later damage is found too. zarr leaves out chunks that hold only the fill value, so a lost chunk
would read as background. Here the map's arrays (:func:`create_result_array`) store every chunk,
and ``wsiseg_chunks`` records how many chunk files each array of the store has when it is
published (a sparse array such as ``damaged``: those it stored). :func:`open_result` and
:func:`is_complete` count the chunk files again (a listing of the folders; no chunk is read) and
refuse a result that lacks any. Each chunk also carries a checksum of its content (zstd's), so
one whose bytes changed fails to decode; :func:`result_reads` turns that, wherever a result is
read, into one line naming the result. Results written before the record are read as they are.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr

from wsiseg.atomic import os_error_in, output_error
from wsiseg.errors import OutputError, ResultError, WsisegError
from wsiseg.inference.stitcher import FinishedRows
from wsiseg.result.info import LAYOUT, ResultInfo
from wsiseg.result.pyramid import (
    CLASSES_LABEL,
    DAMAGED_LABEL,
    LABELS_GROUP,
    TISSUE_LABEL,
    array_path,
    label_level_path,
    level_shapes,
    max_downsample,
    mean_downsample,
    ngff_metadata,
    pyramid_paths,
    result_layout,
    write_pyramid,
)

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
CHUNK = 512
#: Group attribute: {array name: number of chunk files}, written when the result is published.
CHUNKS_ATTR = "wsiseg_chunks"
#: How arrays of a result are stored: every chunk, each with a checksum of its content.
ARRAY_CONFIG = {"write_empty_chunks": True}
REDO = "run wsiseg predict again with --overwrite to redo it"


def default_output_path(slide_path: Path) -> Path:
    """``slide.svs`` -> ``slide.wsiseg.zarr`` beside it."""
    from wsiseg.slide.dicom_series import slide_stem  # a DICOM folder keeps its whole name

    return slide_path.with_name(slide_stem(slide_path) + ".wsiseg.zarr")


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def is_complete(out: Path) -> bool:
    """True when ``out`` is a finished wsiseg result that lacks none of its chunks.

    A result only ever appears once complete; one that lost chunks since (see the module's
    docstring) is not complete: it is logged, and a batch predicts it again.
    """
    if not (out / "zarr.json").is_file():
        return False
    try:
        group = zarr.open_group(str(out), mode="r")
        if not (out / array_path("labels", result_layout(group)) / "zarr.json").is_file():
            return False
        damage = missing_chunks(out, group)
    except Exception as err:  # unreadable: open_result says what is wrong with it
        logger.debug("%s: chunks not checked (%s)", out, err)
        return True
    if damage:
        if (str(out), damage) not in _told:  # a batch asks more than once
            _told.add((str(out), damage))
            logger.warning("%s is damaged: %s; it does not count as complete", out, damage)
        return False
    return True


_told: set[tuple[str, str]] = set()  # damaged results already logged by is_complete


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite``; check the folder is writable."""
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists already; pass --overwrite to replace it, or --out elsewhere")
    parent = out.parent
    if not parent.is_dir():
        raise OutputError(f"{out}: folder {parent} does not exist; create it or choose another --out")
    if not os.access(parent, os.W_OK):
        try:
            read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "its file system is read-only" if read_only else "permission denied"
        raise OutputError(f"{out}: folder {parent} is not writable ({why}); choose another --out")


class OutputWriter:
    """Writes finished rows in whole chunks into ``out.partial``, then publishes ``out``."""

    def __init__(
        self,
        out: Path,
        height: int,
        width: int,
        num_classes: int,
        probabilities: bool,
        chunk: int = CHUNK,
    ) -> None:
        self.out = out
        self.partial = partial_path(out)
        self.height, self.width, self.chunk = height, width, chunk
        try:
            if self.partial.exists():
                logger.info("removing %s left by an interrupted run", self.partial)
                shutil.rmtree(self.partial)
            self._create(num_classes, probabilities)
        except BaseException as err:  # Ctrl-C included: leave nothing half-made behind
            self.abort()
            cause = os_error_in(err)
            if cause is not None:
                raise output_error(self.out, cause, "create") from err
            raise

    def _create(self, num_classes: int, probabilities: bool) -> None:
        height, width, chunk = self.height, self.width, self.chunk
        self.group = zarr.open_group(str(self.partial), mode="w", zarr_format=3)
        ch = min(chunk, height)
        cw = min(chunk, width)
        # Every multiscales of the store has the label pyramid's number of levels (NGFF).
        self.levels = len(level_shapes(height, width))
        self.image_written = self.damaged = False
        for name in (CLASSES_LABEL, TISSUE_LABEL):
            self.group.require_group(f"{LABELS_GROUP}/{name}")
        self.labels = create_result_array(
            self.group, array_path("labels", LAYOUT), shape=(height, width), chunks=(ch, cw),
            dtype="uint8", fill_value=0, dimension_names=("y", "x"),
        )
        self.probabilities = None
        if probabilities:
            self.probabilities = create_result_array(
                self.group, array_path("probabilities", LAYOUT),
                shape=(num_classes, height, width), chunks=(1, ch, cw), dtype="uint8",
                fill_value=0, dimension_names=("c", "y", "x"),
            )
        self.num_classes = num_classes
        self.begin_stripe(0, width)

    def begin_stripe(self, x0: int, x1: int) -> None:
        """Rows that follow cover output columns ``[x0, x1)``, from the top again.

        ``x0`` must lie on a chunk edge, and ``x1`` too unless it is the image's width: rows are
        buffered until a whole row of chunks is complete, so every chunk is compressed and
        written exactly once.
        """
        if x0 % self.chunk or (x1 % self.chunk and x1 != self.width) or not 0 <= x0 < x1 <= self.width:
            raise ValueError(f"stripe [{x0}, {x1}) is not on chunk edges ({self.chunk})")
        ch = min(self.chunk, self.height)
        self.x0, self.x1 = x0, x1
        self._buf_labels = np.zeros((ch, x1 - x0), dtype=np.uint8)
        self._buf_probs = (
            np.zeros((self.num_classes, ch, x1 - x0), dtype=np.uint8)
            if self.probabilities is not None else None
        )
        self._buf_y = 0  # output row of the buffer's first row
        self._next = 0  # next expected row

    def write_rows(self, rows: FinishedRows) -> None:
        """Take the next finished rows (they arrive in order, top to bottom)."""
        if rows.y != self._next or rows.x != self.x0 or rows.labels.shape[1] != self.x1 - self.x0:
            raise RuntimeError(
                f"rows out of order: got row {rows.y}, column {rows.x}, width "
                f"{rows.labels.shape[1]}; expected {self._next}, {self.x0}, {self.x1 - self.x0}"
            )
        h = rows.labels.shape[0]
        done = 0
        ch = self._buf_labels.shape[0]
        while done < h:
            at = self._next - self._buf_y
            n = min(h - done, ch - at)
            self._buf_labels[at : at + n] = rows.labels[done : done + n]
            if self._buf_probs is not None:
                self._buf_probs[:, at : at + n] = rows.probabilities[:, done : done + n]
            done += n
            self._next += n
            if self._next - self._buf_y == ch or self._next == self.height:
                self._write_buffer()

    def _write_buffer(self) -> None:
        y0, y1 = self._buf_y, self._next
        n = y1 - y0
        with self.writing():
            self.labels[y0:y1, self.x0 : self.x1] = self._buf_labels[:n]
            if self.probabilities is not None:
                self.probabilities[:, y0:y1, self.x0 : self.x1] = self._buf_probs[:, :n]
        self._buf_y = y1

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Turn an OS error of the writes inside (zarr's included, however it wraps them) into
        one :class:`OutputError` line naming the output, the cause and the way out."""
        try:
            yield
        except Exception as err:
            cause = os_error_in(err)
            if cause is None:
                raise
            raise output_error(self.out, cause) from err

    def write_tissue(self, tissue: np.ndarray) -> None:
        """The tissue mask (1 on tissue) and its pyramid: the label image ``labels/tissue``."""
        h, w = tissue.shape
        with self.writing():
            arr = create_result_array(
                self.group, array_path("tissue", LAYOUT), shape=(h, w),
                chunks=(min(1024, h), min(1024, w)), dtype="uint8", fill_value=0,
                dimension_names=("y", "x"),
            )
            arr[...] = tissue.astype(np.uint8)
            write_pyramid(arr, self.group, 2, path=lambda k: label_level_path(TISSUE_LABEL, k),
                          levels=self.levels)

    def write_image(self, rgb: np.ndarray) -> None:
        """The picture of the slide, a uint8 (h, w, 3) RGB image on the tissue mask's grid, and
        its pyramid (2 x 2 means): the arrays ``0``, ``1``, ... of the root image, (3, h, w)."""
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"the slide's image must be uint8 (h, w, 3), got {rgb.dtype} "
                             f"{rgb.shape}")
        level = np.ascontiguousarray(rgb.transpose(2, 0, 1))
        with self.writing():
            for k in range(self.levels):
                if k:
                    level = mean_downsample(level)
                _, h, w = level.shape
                arr = create_result_array(
                    self.group, str(k), shape=level.shape, chunks=(3, min(1024, h), min(1024, w)),
                    dtype="uint8", fill_value=0, dimension_names=("c", "y", "x"),
                )
                arr[...] = level
        self.image_written = True

    def write_damaged(self, boxes: list[tuple[int, int, int, int]]) -> None:
        """The ``damaged`` mask: uint8, the shape and chunks of ``labels``, 1 on the map pixels
        ``(x, y, width, height)`` of ``boxes`` (parts of the slide that could not be decoded),
        0 elsewhere, and its pyramid (any damaged pixel of a 2 x 2 block marks it): the label
        image ``labels/damaged``. Chunks without damage are never stored."""
        ch, cw = min(self.chunk, self.height), min(self.chunk, self.width)
        with self.writing():
            arr = self.group.create_array(
                array_path("damaged", LAYOUT), shape=(self.height, self.width), chunks=(ch, cw),
                dtype="uint8", fill_value=0, dimension_names=("y", "x"),
            )
            for x, y, w, h in boxes:
                arr[y : y + h, x : x + w] = 1
            write_pyramid(arr, self.group, 2, path=lambda k: label_level_path(DAMAGED_LABEL, k),
                          levels=self.levels, reduce=max_downsample, store_empty=False)
        self.damaged = True

    def publish(self, info: ResultInfo, overwrite: bool) -> Path:
        """Write the label pyramid, then the attributes, last (``info``, the NGFF metadata and
        the number of chunk files of each array), then move the finished store to its final
        name."""
        if self._next != self.height:
            raise RuntimeError(f"output incomplete: {self._next} of {self.height} rows written")
        if not self.image_written:
            raise RuntimeError("output incomplete: no image of the slide written (write_image)")
        with self.writing():
            write_pyramid(self.labels, self.group, self.num_classes, levels=self.levels)
            ome = ngff_metadata(info, self.levels, damaged=self.damaged)
            for name, attrs in ome.items():
                if name:
                    self.group[name].attrs.update({"ome": attrs})
            chunks = _chunk_record(self.group, self.partial)
            self.group.attrs.update({"wsiseg": info.to_attrs(), "ome": ome[""],
                                     CHUNKS_ATTR: chunks})
            if self.out.exists():
                if not overwrite:
                    raise OutputError(f"{self.out} appeared while running; pass --overwrite to "
                                      "replace it")
                # Move the old result aside first, so a crash here loses neither of the two.
                old = self.out.with_name(self.out.name + ".old")
                if old.exists():
                    _remove(old)
                os.replace(self.out, old)
                try:
                    os.replace(self.partial, self.out)
                except BaseException:
                    os.replace(old, self.out)  # the old result stays what it was
                    raise
                _remove(old)
            else:
                os.replace(self.partial, self.out)
        return self.out

    def abort(self) -> None:
        """Remove the partial output after a failure."""
        _settle_zarr_io()
        if self.partial.exists():
            shutil.rmtree(self.partial, ignore_errors=True)


def _settle_zarr_io(timeout: float = 30.0) -> None:
    """Wait for the writes zarr still has in flight.

    zarr runs its I/O as coroutines on a thread of its own. A call interrupted in the main
    thread (Ctrl-C) leaves its coroutine running there, and a chunk it writes after the partial
    output was removed would bring the folder back.
    """
    import asyncio

    try:
        from zarr.core.sync import sync
    except ImportError:
        return

    async def drain() -> None:
        me = asyncio.current_task()
        while others := [t for t in asyncio.all_tasks() if t is not me and not t.done()]:
            await asyncio.wait(others)

    try:
        sync(drain(), timeout=timeout)
    except Exception as err:  # nothing to wait for, or it takes too long: remove anyway
        logger.debug("zarr I/O did not settle: %s", err)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


# --- completeness: every chunk stored, counted at publication, counted again on opening ------

def create_result_array(group: zarr.Group, name: str, **kwargs: Any) -> zarr.Array:
    """A new array ``name`` of a result, stored so that damage shows: every chunk is written,
    fill-value chunks included, and each carries a checksum of its content."""
    from zarr.codecs import ZstdCodec

    return group.create_array(name, compressors=ZstdCodec(level=0, checksum=True),
                              config=dict(ARRAY_CONFIG), **kwargs)


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
            found = [(int(e.name), e) for e in entries
                     if e.name.isascii() and e.name.isdigit() and int(e.name) < size
                     and (e.is_file() if last else e.is_dir())]
        if last:
            yield index, [i for i, _ in found]
            return
        for i, entry in found:
            yield from walk(entry.path, (*index, i))

    yield from walk(str(folder / "c"), ())


def _count_chunk_files(folder: Path, grid: tuple[int, ...]) -> int:
    return sum(len(last) for _, last in _chunk_files(folder, grid))


def _chunk_record(group: zarr.Group, root: Path) -> dict[str, int]:
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
    is not checked.
    """
    record = group.attrs.get(CHUNKS_ATTR)
    if record is None:
        logger.debug("%s: written without a record of its chunks; not checked", path)
        return None
    if not (isinstance(record, dict) and all(
            isinstance(n, int) and not isinstance(n, bool) for n in record.values())):
        return f"its record of chunks ({CHUNKS_ATTR!r}) is unreadable"
    problems = []
    for name, expected in sorted(record.items()):
        try:
            array = group[name]
        except Exception as err:  # gone, or its metadata is: either way it is lost
            logger.debug("%s: array %s does not open: %r", path, name, err)
            problems.append(f"{name}: the whole array is missing")
            continue
        grid = _chunk_grid(array)
        if grid is None:
            continue
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
    missing = [i for i in np.ndindex(*grid) if i not in present]
    keys = [f"{name}/c/" + "/".join(map(str, i)) for i in missing[:3]]
    return f" ({', '.join(keys)}{', ...' if len(missing) > 3 else ''})"


def damaged_error(path: str | os.PathLike, damage: str) -> ResultError:
    """The one line for a result that lost chunks: ``damage`` says which."""
    return ResultError(f"{path} is damaged: {damage}; {REDO} (a batch run redoes it by itself)")


# --- reading: a chunk that cannot be read or decoded is one line naming the result ----------

#: Modules whose errors, when a result is read, mean a chunk's bytes are not what was written.
_DECODING = ("numcodecs", "zarr.codecs", "zarr.abc.codec", "zarr.core.codec_pipeline",
             "zarr.core.buffer")


@contextlib.contextmanager
def result_reads(result: str | os.PathLike) -> Iterator[None]:
    """Reads of ``result``'s arrays inside: a chunk file that cannot be read, or whose bytes do
    not decode, becomes one :class:`ResultError` line naming the result, the array, what
    happened and the way out. Other errors pass unchanged."""
    try:
        yield
    except Exception as err:
        error = read_error(result, err)
        if error is None:
            raise
        # The other chunks of that read are still being decoded on zarr's thread; left
        # running, they would fill stderr with asyncio's complaints when the process exits.
        _settle_zarr_io()
        raise error from err


F = TypeVar("F", bound=Callable[..., Any])


def reads_result(func: F) -> F:
    """Run ``func``, whose first argument is a result's path, inside :func:`result_reads`."""

    @functools.wraps(func)
    def wrapper(result: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        with result_reads(result):
            return func(result, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def read_error(result: str | os.PathLike, err: BaseException) -> ResultError | None:
    """The one-line error for ``err`` when it comes from reading ``result``'s chunks (an OS
    error on a file of it, or bytes of one of its arrays that do not decode), else None."""
    if isinstance(err, WsisegError):
        return None
    result = Path(result)
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    name = None  # the array of the result being read, if one is
    for frame in frames:
        array = frame.f_locals.get("self")
        if isinstance(array, (zarr.Array, zarr.AsyncArray)):
            name = _name_in(result, array)
            break
    cause = os_error_in(err)
    if cause is not None:
        file = cause.filename
        ours = (name is not None if file is None
                else _is_within(Path(os.fsdecode(file)), result))
        if not ours:
            return None
        what = (cause.strerror or str(cause)).lower()
        return ResultError(f"cannot read {file or result / name}: {what}; check that the "
                           f"result's files can be read, or {REDO}")
    if name is None or not isinstance(err, (RuntimeError, ValueError)) or not frames:
        return None
    module = frames[-1].f_globals.get("__name__", "")
    if not module.startswith(_DECODING):
        return None
    reason = " ".join(str(err).split()) or type(err).__name__
    reason = re.sub(r"""\bb(["'])(.*?)\1""", r"\2", reason)  # numcodecs quotes bytes: b"..."
    return ResultError(f"{result} is damaged: a chunk of {name} does not decode ({reason}); "
                       f"{REDO}")


def _name_in(result: Path, array: Any) -> str | None:
    """The path of ``array`` inside the result at ``result``; None when it is elsewhere."""
    store_path = array.store_path
    root = getattr(store_path.store, "root", None)
    if root is None or not _is_within(Path(root), result):
        return None
    return store_path.path or "/"


def _is_within(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def result_array(group: zarr.Group, what: str) -> zarr.Array:
    """The ``labels`` (level 0 of the map), ``tissue``, ``damaged`` or ``probabilities`` array
    of the result ``group``, wherever its layout keeps it (KeyError when it has none)."""
    return group[array_path(what, result_layout(group))]


def label_pyramid(group: zarr.Group) -> list[zarr.Array]:
    """The levels of the label map of the result ``group``, level 0 first."""
    return [group[p] for p in pyramid_paths(group)]


def open_result(path: str | os.PathLike) -> tuple[zarr.Array, ResultInfo]:
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
