"""``OUT/manifest.csv``: one row per slide of a batch's output folder.

A row holds the slide, its status (pending, started, done, skipped or failed), the error, the
output, the patches predicted, the seconds taken and the worker. The file is rewritten whole
(through :func:`wsiseg.atomic.atomic_write`) every time a slide starts or finishes, and keeps
the rows of slides that earlier batches into the same folder left there.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from wsiseg.atomic import atomic_write

logger = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
FIELDS = ("slide", "status", "error", "output", "patches", "seconds", "worker")


@dataclass
class SlideRecord:
    """One manifest row."""

    slide: str
    status: str = "pending"  # pending, started, done, skipped or failed
    error: str = ""
    output: str = ""
    patches: int | None = None
    seconds: float | None = None
    worker: str = ""


class Manifest:
    """``manifest.csv`` of an output folder: this batch's ``records`` (updated in place by the
    batch) after the rows of other slides that earlier batches left there."""

    def __init__(self, path: Path, records: list[SlideRecord]) -> None:
        self.path, self.records = path, records
        earlier: list[SlideRecord] = []
        if path.is_file():
            try:
                earlier = read_manifest(path)
            except (OSError, KeyError, ValueError, csv.Error) as err:
                logger.warning("%s cannot be read (%s); a new one is written", path, err)
        # One result per stem in a folder, so a stem names a slide's row whatever the path.
        ours = {Path(r.slide).stem for r in records}
        self._earlier = {Path(r.slide).stem: r for r in earlier}
        self.others = [r for r in earlier if Path(r.slide).stem not in ours]

    def died_in(self, slide: Path) -> bool:
        """Whether an earlier run ended while predicting ``slide``."""
        row = self._earlier.get(slide.stem)
        return row is not None and row.status == "started"

    def save(self) -> None:
        """Write the earlier rows and this batch's rows, replacing the file whole."""
        write_manifest(self.path, self.others + self.records)


def write_manifest(path: str | os.PathLike, records: list[SlideRecord]) -> None:
    """Write ``records`` to ``path`` as CSV; a reader sees the old file or the new one."""
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for r in records:
            row = asdict(r)
            writer.writerow({k: "" if row[k] is None else row[k] for k in FIELDS})


def read_manifest(path: str | os.PathLike) -> list[SlideRecord]:
    """The rows of a manifest written by :func:`write_manifest`."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        out.append(SlideRecord(
            slide=row["slide"], status=row["status"], error=row["error"], output=row["output"],
            patches=int(row["patches"]) if row["patches"] else None,
            seconds=float(row["seconds"]) if row["seconds"] else None, worker=row["worker"],
        ))
    return out
