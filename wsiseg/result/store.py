"""The zarr v3 output store: the diagnostic map and what it was made from.

Layout (a contract for exports and other tools)::

    NAME.wsiseg.zarr/
      labels          uint8 (H, W)     class index per analysis pixel
      probabilities   uint8 (C, H, W)  round(255 p), only when asked for
      labels_1, ...   uint8            the label pyramid: each level halves the one above
      tissue          uint8 (h, w)     tissue mask at its own, coarser, resolution
      attrs["wsiseg"] a ResultInfo (wsiseg.result.info): layout, version, slide, level,
                      scale_to_level0, offset_level0, classes, model, ...
      attrs["ome"]    OME-Zarr 0.5 multiscales + image-label metadata of the label pyramid

``layout`` in ``attrs["wsiseg"]`` is the version of this layout (1; results without it are
layout 1 too). :func:`open_result` is the way to read a result: it validates the attributes
and refuses a layout newer than this wsiseg reads.

The store is written under a temporary sibling name and renamed only when every chunk and the
attributes are in place, so an interrupted run never leaves an output that looks complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import zarr

from wsiseg.errors import OutputError, ResultError
from wsiseg.result.info import ResultInfo
from wsiseg.result.pyramid import ngff_metadata, write_pyramid
from wsiseg.inference.stitcher import FinishedRows

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
CHUNK = 512


def default_output_path(slide_path: Path) -> Path:
    """``slide.svs`` -> ``slide.wsiseg.zarr`` beside it."""
    return slide_path.with_name(slide_path.stem + ".wsiseg.zarr")


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def is_complete(out: Path) -> bool:
    """True when ``out`` is a finished wsiseg result (it only ever appears complete)."""
    return (out / "zarr.json").is_file() and (out / "labels" / "zarr.json").is_file()


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite``; check the folder is writable."""
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists already; pass --overwrite to replace it, or --out elsewhere")
    parent = out.parent
    if not parent.is_dir():
        raise OutputError(f"{out}: folder {parent} does not exist; create it or choose another --out")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{out}: folder {parent} is not writable; choose another --out")


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
        if self.partial.exists():
            logger.info("removing %s left by an interrupted run", self.partial)
            shutil.rmtree(self.partial)
        try:
            self._create(num_classes, probabilities)
        except BaseException as err:  # Ctrl-C included: leave nothing half-made behind
            self.abort()
            if isinstance(err, OSError):
                raise OutputError(f"{self.partial}: cannot create the output ({err})") from err
            raise

    def _create(self, num_classes: int, probabilities: bool) -> None:
        height, width, chunk = self.height, self.width, self.chunk
        self.group = zarr.open_group(str(self.partial), mode="w", zarr_format=3)
        ch = min(chunk, height)
        cw = min(chunk, width)
        self.labels = self.group.create_array(
            "labels", shape=(height, width), chunks=(ch, cw), dtype="uint8", fill_value=0,
            dimension_names=("y", "x"),
        )
        self.probabilities = None
        if probabilities:
            self.probabilities = self.group.create_array(
                "probabilities", shape=(num_classes, height, width), chunks=(1, ch, cw),
                dtype="uint8", fill_value=0, dimension_names=("c", "y", "x"),
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
        self.labels[y0:y1, self.x0 : self.x1] = self._buf_labels[:n]
        if self.probabilities is not None:
            self.probabilities[:, y0:y1, self.x0 : self.x1] = self._buf_probs[:, :n]
        self._buf_y = y1

    def write_tissue(self, tissue: np.ndarray) -> None:
        h, w = tissue.shape
        arr = self.group.create_array(
            "tissue", shape=(h, w), chunks=(min(1024, h), min(1024, w)), dtype="uint8",
            fill_value=0, dimension_names=("y", "x"),
        )
        arr[...] = tissue.astype(np.uint8)

    def publish(self, info: ResultInfo, overwrite: bool) -> Path:
        """Write ``info`` as the attributes, last, then move the finished store to its final
        name."""
        if self._next != self.height:
            raise RuntimeError(f"output incomplete: {self._next} of {self.height} rows written")
        paths = write_pyramid(self.labels, self.group, self.num_classes)
        self.group.attrs.update({"wsiseg": info.to_attrs(), "ome": ngff_metadata(paths, info)})
        if self.out.exists():
            if not overwrite:
                raise OutputError(f"{self.out} appeared while running; pass --overwrite to replace it")
            # Move the old result aside first, so a crash here loses neither of the two.
            old = self.out.with_name(self.out.name + ".old")
            if old.exists():
                _remove(old)
            os.replace(self.out, old)
            os.replace(self.partial, self.out)
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


def open_result(path: str | os.PathLike) -> tuple[zarr.Array, ResultInfo]:
    """The ``labels`` array (lazily read zarr) and the validated :class:`ResultInfo` of a
    finished result."""
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
        labels = group["labels"]
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise not_a_result(err) from err
    if labels.ndim != 2 or not info.classes:
        raise ResultError(f"{path} holds labels of shape {labels.shape} and "
                              f"{len(info.classes)} classes; it is not a wsiseg result")
    return labels, info
