"""Writing a result: a store that only ever appears complete.

The store is written under ``NAME.wsiseg.zarr.partial`` and renamed to its final name only when
every chunk and the attributes are in place, so an interrupted run never leaves an output that
looks complete. Where each array goes is :mod:`wsiseg.result.pyramid`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import zarr

from wsiseg.atomic import os_error_in, output_error
from wsiseg.errors import OutputError
from wsiseg.naming import partial_path, result_name
from wsiseg.result.info import LAYOUT, ResultInfo
from wsiseg.result.integrity import CHUNKS_ATTR, chunk_record
from wsiseg.result.pyramid import (
    CLASSES_LABEL,
    DAMAGED_LABEL,
    LABELS_GROUP,
    QC_LABEL,
    TISSUE_LABEL,
    array_path,
    label_level_path,
    level_shapes,
    max_downsample,
    mean_downsample,
    ngff_metadata,
    uncertainty_level_path,
    write_pyramid,
)
from wsiseg.result.reading import settle_zarr_io
from wsiseg.result.review import result_review
from wsiseg.result.rows import FinishedRows
from wsiseg.slide.dicom_series import slide_stem
from wsiseg.slide.remote import is_url

if TYPE_CHECKING:
    from zarr.core.array_spec import ArrayConfigParams

logger = logging.getLogger(__name__)

CHUNK = 512
# A cast: zarr's TypedDict leaves its keys optional only when checked as Python >= 3.11.
#: How arrays of a result are stored: every chunk, each with a checksum of its content.
ARRAY_CONFIG = cast("ArrayConfigParams", {"write_empty_chunks": True})


def default_output_path(slide_path: Path) -> Path:
    """``slide.svs`` -> ``slide.wsiseg.zarr`` beside it (a DICOM folder keeps its whole name);
    a slide at a URL, beside which nothing can be written, -> in the current folder."""
    if is_url(slide_path):
        return Path(result_name(slide_stem(slide_path)))
    return slide_path.with_name(result_name(slide_stem(slide_path)))


def output_path(out: str | os.PathLike[str] | None, slide_path: Path) -> Path:
    """Where one slide's result goes: :func:`default_output_path` without ``out``; inside
    ``out``, named after the slide, when ``out`` names a folder (it ends in a path separator,
    or is a folder that is neither a result nor another zarr, nor named ``*.zarr``); else
    ``out`` itself."""
    if out is None:
        return default_output_path(slide_path)
    text = os.fspath(out)
    folder = Path(text)
    if text.endswith(("/", os.sep)) or (folder.is_dir() and not folder.name.endswith(".zarr")
                                        and not is_result(folder) and not _is_zarr(folder)):
        return folder / result_name(slide_stem(slide_path))
    return folder


#: The most of a root ``zarr.json`` read to tell a result from other folders.
_ROOT_BYTES = 16 * 1024 * 1024


def is_result(path: Path) -> bool:
    """Whether ``path`` is a wsiseg result (complete or not): a folder whose root
    ``zarr.json`` carries wsiseg's attributes. Only such a folder is ever replaced."""
    root = path / "zarr.json"
    try:
        if not (path.is_dir() and root.is_file()) or root.stat().st_size > _ROOT_BYTES:
            return False
        attrs = json.loads(root.read_bytes()).get("attributes")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(attrs, dict) and "wsiseg" in attrs


def _replaceable(path: Path) -> bool:
    """Whether ``--overwrite`` may replace ``path``: a result, or an empty folder."""
    return is_result(path) or (path.is_dir() and not path.is_symlink()
                               and next(path.iterdir(), None) is None)


def _is_zarr(path: Path) -> bool:
    return any((path / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray"))


def make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) for a result; a one-line :class:`OutputError` when
    it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise output_error(folder, err, "create") from err


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite`` and it is a result (nothing else is ever
    replaced); check the folder is writable."""
    if out.exists() or out.is_symlink():
        if not _replaceable(out):
            what = "a folder" if out.is_dir() else "a file"
            raise OutputError(f"{out} exists and is {what}, not a wsiseg result, so it is never "
                              "replaced; give another --out (a folder ending in / takes the "
                              "result inside it)")
        if not overwrite:
            raise OutputError(f"{out} exists already; pass --overwrite to replace it, or --out "
                              "elsewhere")
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
        uncertainty: bool = False,
    ) -> None:
        self.out = out
        self.partial = partial_path(out)
        self.height, self.width, self.chunk = height, width, chunk
        try:
            if self.partial.exists():
                logger.info("removing %s left by an interrupted run", self.partial)
                shutil.rmtree(self.partial)
            self._create(num_classes, probabilities, uncertainty)
        except BaseException as err:  # Ctrl-C included: leave nothing half-made behind
            self.abort()
            cause = os_error_in(err)
            if cause is not None:
                raise output_error(self.out, cause, "create") from err
            raise

    def _create(self, num_classes: int, probabilities: bool, uncertainty: bool) -> None:
        height, width, chunk = self.height, self.width, self.chunk
        self.group = zarr.open_group(str(self.partial), mode="w", zarr_format=3)
        ch = min(chunk, height)
        cw = min(chunk, width)
        # Every multiscales of the store has the label pyramid's number of levels (NGFF).
        self.levels = len(level_shapes(height, width))
        self.image_written = self.damaged = self.qc_written = False
        for name in (CLASSES_LABEL, TISSUE_LABEL):
            self.group.require_group(f"{LABELS_GROUP}/{name}")
        self.labels = create_result_array(
            self.group, array_path("labels", LAYOUT), shape=(height, width), chunks=(ch, cw),
            dtype="uint8", fill_value=0, dimension_names=("y", "x"),
        )
        self.probabilities: zarr.Array[Any] | None = None
        if probabilities:
            self.probabilities = create_result_array(
                self.group, array_path("probabilities", LAYOUT),
                shape=(num_classes, height, width), chunks=(1, ch, cw), dtype="uint8",
                fill_value=0, dimension_names=("c", "y", "x"),
            )
        # The map's uncertainty (0 certain, 255 uniform): the labels' grid and chunks.
        self.uncertainty: zarr.Array[Any] | None = None
        if uncertainty:
            self.uncertainty = create_result_array(
                self.group, array_path("uncertainty", LAYOUT), shape=(height, width),
                chunks=(ch, cw), dtype="uint8", fill_value=0, dimension_names=("y", "x"),
            )
        self.num_classes = num_classes
        #: The info that :meth:`publish` recorded (None until then).
        self.published: ResultInfo | None = None
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
        self._buf_probs: npt.NDArray[np.uint8] | None = (
            np.zeros((self.num_classes, ch, x1 - x0), dtype=np.uint8)
            if self.probabilities is not None else None
        )
        self._buf_uncertainty: npt.NDArray[np.uint8] | None = (
            np.zeros((ch, x1 - x0), dtype=np.uint8) if self.uncertainty is not None else None)
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
                if rows.probabilities is None:
                    raise RuntimeError(f"rows from {rows.y} have no probabilities, and the "
                                       "output stores them")
                self._buf_probs[:, at : at + n] = rows.probabilities[:, done : done + n]
            if self._buf_uncertainty is not None:
                if rows.uncertainty is None:
                    raise RuntimeError(f"rows from {rows.y} have no uncertainty, and the "
                                       "output stores it")
                self._buf_uncertainty[at : at + n] = rows.uncertainty[done : done + n]
            done += n
            self._next += n
            if self._next - self._buf_y == ch or self._next == self.height:
                self._write_buffer()

    def _write_buffer(self) -> None:
        y0, y1 = self._buf_y, self._next
        n = y1 - y0
        with self.writing():
            self.labels[y0:y1, self.x0 : self.x1] = self._buf_labels[:n]
            if self.probabilities is not None and self._buf_probs is not None:
                self.probabilities[:, y0:y1, self.x0 : self.x1] = self._buf_probs[:, :n]
            if self.uncertainty is not None and self._buf_uncertainty is not None:
                self.uncertainty[y0:y1, self.x0 : self.x1] = self._buf_uncertainty[:n]
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

    def write_tissue(self, tissue: npt.NDArray[np.bool_ | np.uint8]) -> None:
        """The tissue mask (1 on tissue) and its pyramid: the label image ``labels/tissue``."""
        self._write_label_image("tissue", TISSUE_LABEL, tissue.astype(np.uint8), classes=2)

    def write_qc(self, qc: npt.NDArray[np.uint8]) -> None:
        """The artefact labels (``wsiseg.slide.artefacts``: 0 none, 1 pen, 2 out of focus,
        3 fold or dark, 4 other) on the tissue mask's grid, and their pyramid: the label image
        ``labels/qc``."""
        self._write_label_image("qc", QC_LABEL, qc, classes=5)
        self.qc_written = True

    def _write_label_image(self, array: str, label: str, values: npt.NDArray[np.uint8],
                           classes: int) -> None:
        """A uint8 label image on the tissue mask's grid (``values``, in ``classes`` values) and
        its pyramid (2 x 2 modes), under ``labels/<label>``."""
        h, w = values.shape
        with self.writing():
            arr = create_result_array(
                self.group, array_path(array, LAYOUT), shape=(h, w),
                chunks=(min(1024, h), min(1024, w)), dtype="uint8", fill_value=0,
                dimension_names=("y", "x"),
            )
            arr[...] = values
            write_pyramid(arr, self.group, classes, path=lambda k: label_level_path(label, k),
                          levels=self.levels)

    def write_image(self, rgb: npt.NDArray[np.uint8]) -> None:
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
        """Write the label pyramid (and the uncertainty's levels), then the attributes, last
        (``info``, the NGFF metadata and the number of chunk files of each array), then move
        the finished store to its final name. ``info.uncertainty`` is recorded only when the
        uncertainty array was written; ``info.review`` is found here, under the default rules,
        from the arrays written (:func:`wsiseg.result.review.result_review`: one pass over the
        map). The info recorded is :attr:`published` after."""
        if self._next != self.height:
            raise RuntimeError(f"output incomplete: {self._next} of {self.height} rows written")
        if not self.image_written:
            raise RuntimeError("output incomplete: no image of the slide written (write_image)")
        if not self.qc_written:
            info = dataclasses.replace(info, qc=None)  # no artefact labels written
        if self.uncertainty is None:
            info = dataclasses.replace(info, uncertainty=None)  # what was written: none
        elif info.uncertainty is None:
            raise RuntimeError("an uncertainty array is written, and the result does not say "
                               "how it was computed (ResultInfo.uncertainty)")
        with self.writing():
            # Read back in bands of chunk rows: the map is never held whole. The artefact
            # labels count as the result records them (as a report reads them). The review
            # and the pyramids read and write arrays of their own: they run side by side.
            qc = self.group[array_path("qc", LAYOUT)] if info.qc is not None else None
            uncertainty = self.uncertainty
            with ThreadPoolExecutor(3, thread_name_prefix="wsiseg-publish") as pool:
                review = pool.submit(result_review, info, self.labels, uncertainty,
                                     cast("zarr.Array[Any] | None", qc))
                work: list[Future[Any]] = [review, pool.submit(
                    write_pyramid, self.labels, self.group, self.num_classes, levels=self.levels)]
                if uncertainty is not None:
                    # Levels are 2 x 2 means: the mean uncertainty of the pixels they cover.
                    work.append(pool.submit(
                        write_pyramid, uncertainty, self.group, 0, path=uncertainty_level_path,
                        levels=self.levels, reduce=lambda band: mean_downsample(band[None])[0]))
                for done in work:
                    done.result()  # the first failure (the pool waits for the others)
            info = dataclasses.replace(info, review=review.result())
            ome = ngff_metadata(info, self.levels, damaged=self.damaged)
            for name, attrs in ome.items():
                if name:
                    self.group[name].attrs.update({"ome": attrs})
            chunks = chunk_record(self.group, self.partial)
            self.group.attrs.update({"wsiseg": info.to_attrs(), "ome": ome[""],
                                     CHUNKS_ATTR: chunks})
            if self.out.exists() or self.out.is_symlink():
                if not _replaceable(self.out):
                    raise OutputError(f"{self.out} appeared while running and is not a wsiseg "
                                      "result, so it is not replaced; give another --out")
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
        self.published = info
        return self.out

    def abort(self) -> None:
        """Remove the partial output after a failure."""
        settle_zarr_io()
        if self.partial.exists():
            shutil.rmtree(self.partial, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def create_result_array(group: zarr.Group, name: str, **kwargs: Any) -> zarr.Array[Any]:
    """A new array ``name`` of a result, stored so that damage shows: every chunk is written,
    fill-value chunks included, and each carries a checksum of its content."""
    from zarr.codecs import ZstdCodec

    return group.create_array(name, compressors=ZstdCodec(level=0, checksum=True),
                              config=ARRAY_CONFIG.copy(), **kwargs)
