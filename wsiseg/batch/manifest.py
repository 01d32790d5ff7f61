"""``OUT/manifest.csv``: one row per slide of a batch's output folder.

A row holds the slide, its status, the error, the output, the patches predicted, the seconds
taken, the worker, and the reasons to review the slide that its result recorded
(:mod:`wsiseg.result.review`), joined with ``"; "`` (empty: none, or not a finished result).
A manifest written before the ``review`` column reads with that column empty. Status is ``pending``, ``started``, ``done``, ``skipped`` (a complete
result was there already) or ``failed``; a batch also reports ``elsewhere`` for a slide that
another process predicted (or is predicting) meanwhile, but never writes that status: the row of
such a slide is the other process's.

Several batch processes may share one output folder, so the file is updated read-merge-write
under the folder's exclusive lock (``fcntl.lockf``, which NFS honours too, on
``OUT/.wsiseg.lock``): a process re-reads the file under the lock and replaces only the rows of
the slides it changed, so rows that other processes wrote are never lost. The file is written
whole through :func:`wsiseg.atomic.atomic_write` (readers see the old file or the new one), and
rows of slides that earlier batches into the same folder left there are kept. A write that
fails raises a one-line :class:`~wsiseg.errors.OutputError` and leaves the earlier file, and
no temporary file, behind.

Text that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` first) is written
with a leading apostrophe, and so is text that begins with an apostrophe of its own; reading
the file removes that one apostrophe, so every name comes back exactly as it was.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, cast, get_args

from wsiseg.atomic import atomic_write
from wsiseg.batch.claims import claim_path, folder_lock, is_held
from wsiseg.batch.discovery import output_for
from wsiseg.cells import csv_text
from wsiseg.naming import PARTIAL_SUFFIX
from wsiseg.slide.dicom_series import slide_stem

logger = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
FIELDS = ("slide", "status", "error", "output", "patches", "seconds", "worker", "review")
#: How the reasons to review a slide are joined in its ``review`` cell.
REVIEW_SEPARATOR = "; "

#: A slide's state in a batch, as its row says it; ``elsewhere`` is only reported (below).
Status = Literal["pending", "started", "done", "skipped", "failed", "elsewhere"]
STATUSES: tuple[Status, ...] = get_args(Status)
#: Reported for a slide that another process predicts; never written to the file.
ELSEWHERE: Literal["elsewhere"] = "elsewhere"


@dataclass
class SlideRecord:
    """One manifest row."""

    slide: str
    status: Status = "pending"
    error: str = ""
    output: str = ""
    patches: int | None = None
    seconds: float | None = None
    worker: str = ""
    #: The reasons its result recorded to review the slide, joined with REVIEW_SEPARATOR.
    review: str = ""

    @property
    def review_reasons(self) -> list[str]:
        """The reasons to review the slide, one by one (empty: none)."""
        return self.review.split(REVIEW_SEPARATOR) if self.review else []


class Manifest:
    """``manifest.csv`` of an output folder, and this batch's ``records`` (updated in place by
    the batch; :meth:`update` writes the rows it changed)."""

    def __init__(self, path: Path, records: list[SlideRecord]) -> None:
        self.path, self.records = Path(path), records
        # One result per stem in a folder, so a stem names a slide's row whatever the path.
        self._earlier = {_stem(r): r for r in self._read()}

    def died_in(self, slide: Path) -> bool:
        """Whether an earlier run ended while predicting ``slide``: its row says ``started``
        and no live process holds the slide's claim (a live one is predicting it now)."""
        row = self._earlier.get(slide_stem(slide))
        return (row is not None and row.status == "started"
                and not is_held(claim_path(output_for(slide, self.path.parent))))

    def save(self) -> None:
        """Merge all of this batch's rows into the file, except that a ``pending`` row does
        not replace a ``started`` one (a slide another process is predicting, or the mark of a
        run that died in it)."""
        self._merge(range(len(self.records)), initial=True)

    def update(self, *indices: int) -> None:
        """Merge the rows ``records[i]`` for ``indices`` into the file, replacing theirs."""
        self._merge(indices, initial=False)

    def _merge(self, indices: Iterable[int], initial: bool) -> None:
        with manifest_lock(self.path):
            rows = {_stem(r): r for r in self._read()}
            for i in indices:
                record = self.records[i]
                there = rows.get(_stem(record))
                if record.status == ELSEWHERE or (
                        initial and record.status == "pending" and there is not None
                        and there.status == "started"):
                    continue
                rows[_stem(record)] = replace(record)
            write_manifest(self.path, list(rows.values()))

    def _read(self) -> list[SlideRecord]:
        if not self.path.is_file():
            return []
        try:
            return read_manifest(self.path)
        except (OSError, KeyError, ValueError, csv.Error) as err:
            logger.warning("%s cannot be read (%s); a new one is written", self.path, err)
            return []


def _stem(record: SlideRecord) -> str:
    return slide_stem(Path(record.slide))


@contextlib.contextmanager
def manifest_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of the folder of the manifest ``path`` (:func:`~wsiseg.batch.claims.
    folder_lock`) in this block. Temporary files that a writer killed in the middle of a write
    left are removed under it (a live writer holds the lock while its file exists)."""
    path = Path(path)
    with folder_lock(path.parent):
        for left in path.parent.glob(f"{path.name}.*{PARTIAL_SUFFIX}"):
            with contextlib.suppress(OSError):
                left.unlink()
        yield


#: The columns holding text (names, paths, messages); the others are numbers or a status.
TEXT_FIELDS = ("slide", "error", "output", "worker", "review")


def _cell(text: str) -> str:
    """``text`` as a manifest cell that a spreadsheet shows and never runs
    (:func:`~wsiseg.cells.csv_text`), and that :func:`_text` reads back exactly: a text that
    begins with an apostrophe of its own gets one more, so that a leading apostrophe in a cell
    is always one that was added."""
    cell = csv_text(text)
    return "'" + cell if cell == text and text.startswith("'") else cell


def _text(cell: str) -> str:
    """The text of a manifest cell written by :func:`_cell`."""
    return cell.removeprefix("'")


def write_manifest(path: str | os.PathLike[str], records: list[SlideRecord]) -> None:
    """Write ``records`` to ``path`` as CSV; a reader sees the old file or the new one.

    Text cells that a spreadsheet would run as a formula (a slide named ``=HYPERLINK(...)``)
    are written with a leading apostrophe (:func:`_cell`); :func:`read_manifest` removes it.
    """
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for r in records:
            row = asdict(r)
            writer.writerow({k: "" if row[k] is None else _cell(row[k]) if k in TEXT_FIELDS
                             else row[k] for k in FIELDS})


def read_manifest(path: str | os.PathLike[str]) -> list[SlideRecord]:
    """The rows of a manifest written by :func:`write_manifest`, its text as it was given
    (one written before a column was added: that column empty)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        out.append(SlideRecord(
            # As written; one that is none of STATUSES (edited by hand) is kept as it is.
            slide=_text(row["slide"]), status=cast(Status, row["status"]),
            error=_text(row["error"]), output=_text(row["output"]),
            patches=int(row["patches"]) if row["patches"] else None,
            seconds=float(row["seconds"]) if row["seconds"] else None,
            worker=_text(row["worker"]),
            review=_text(row.get("review") or ""),
        ))
    return out
