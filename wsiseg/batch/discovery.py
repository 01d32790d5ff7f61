"""Which slides a batch holds and where their results go.

Inputs are slide files, folders of slides, glob patterns and list files (a text file with one
path per line, or a CSV file with a ``slide`` column and an optional ``mpp`` column), and
slides' URLs (``s3://``, ``gs://``, ``http(s)://``; in a list too; a bucket's prefix ending in
``/`` is searched as a folder is, see :mod:`wsiseg.slide.remote`);
:func:`discover` turns them into slide paths, the resolution a list gives each slide, and the
files of the folders that were left out (:class:`FoundSlides`); :func:`output_for` names each
slide's result (``OUT/STEM.wsiseg.zarr``) and :func:`refuse_clashes` stops two slides from
sharing one. :func:`is_batch` says whether inputs name a batch or a single slide, and
:func:`metadata_mpp` opens a slide to refuse it quickly, before anything heavy is loaded.

The formats a folder is searched for are :data:`SLIDE_SUFFIXES` (and :func:`formats_read`
says them in words, for the command's help). A folder holding ``.dcm`` files is one DICOM
slide (its series, see :mod:`wsiseg.slide.dicom_series`), not a batch; a folder of such
folders is a batch of them. A FIFO, socket or device named like a slide in a folder or matched
by a pattern is left out with a warning (opening one could wait forever); one named on its own
fails as that slide.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wsiseg.errors import ConfigError, SlideError
from wsiseg.naming import PARTIAL_SUFFIX, RESULT_SUFFIX, result_name
from wsiseg.slide.dicom_series import (
    DICOM_SUFFIX,
    dicom_files,
    series_file,
    slide_stem,
    special_kind,
)
from wsiseg.slide.remote import SlideUrl, has_secrets, is_url, list_slides, redact, slide_location

logger = logging.getLogger(__name__)

#: File name endings taken from a folder as slides (OpenSlide's formats); ``.dcm`` files are
#: taken together, a folder of them being one DICOM slide. The one list of the formats read:
#: the help of ``wsiseg predict`` is made from it.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs",
                  ".svslide", ".bif", ".dcm")
#: Folder name ending of an OME-Zarr image, taken as one slide.
OME_ZARR_SUFFIX = ".ome.zarr"
#: Text files that list slides, one path per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
#: CSV files that list slides: a ``slide`` column and an optional ``mpp`` column.
CSV_SUFFIXES = (".csv",)
#: The columns of a CSV list.
SLIDE_COLUMN, MPP_COLUMN = "slide", "mpp"
#: What a batch writes into its folder (besides the results): never a slide left out.
_BATCH_FILES = ("manifest.csv", ".wsiseg.lock")
_BATCH_SUFFIXES = (RESULT_SUFFIX, PARTIAL_SUFFIX, ".claim", ".tmp")


def formats_read() -> str:
    """The formats taken from a folder, in words (for the help of ``wsiseg predict``)."""
    files = ", ".join(s for s in SLIDE_SUFFIXES if s != DICOM_SUFFIX)
    return (f"{files} files; a folder of {DICOM_SUFFIX} files (one DICOM series); "
            f"{OME_ZARR_SUFFIX} folders")


def is_ome_zarr(path: Path) -> bool:
    """Whether ``path`` is an OME-Zarr image folder, taken as one slide: named ``*.ome.zarr``,
    or one the OME-Zarr backend recognises (its attributes, read only for folders)."""
    if not path.is_dir():
        return False
    if path.name.lower().endswith(OME_ZARR_SUFFIX):
        return True
    from wsiseg.slide.backends import is_ome_zarr as is_ome_zarr_image

    return is_ome_zarr_image(path)


@dataclass(frozen=True)
class FoundSlides:
    """What :func:`discover` found: the slides, the resolution a list gave each (None: its
    metadata's), and the entries of the folders searched that are not taken as slides."""

    paths: tuple[Path, ...]
    #: Level-0 um/px for each of ``paths`` from a CSV list's ``mpp`` column, else None.
    mpp: tuple[float | None, ...] = ()
    #: Files (and folders) in the folders searched that are not read as slides.
    ignored: tuple[Path, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.mpp:
            object.__setattr__(self, "mpp", (None,) * len(self.paths))
        if len(self.mpp) != len(self.paths):
            raise ValueError("one mpp per slide")


def is_batch(inputs: Sequence[str | os.PathLike[str]]) -> bool:
    """Whether ``inputs`` name a batch: several inputs, a folder, a list file or a pattern.

    One slide file, or one folder of DICOM instances (a DICOM slide), is not a batch; its
    result goes beside it or to the file ``--out`` names.
    """
    if len(inputs) != 1:
        return True
    text = os.fspath(inputs[0])
    if is_url(text):  # one slide, or the slides under a prefix
        return text.endswith("/")
    path = Path(text)
    if path.is_dir() and dicom_files(path):
        return False
    if path.is_dir() and is_ome_zarr(path):
        return False
    return (path.is_dir() or (_is_list(path) and path.is_file())
            or (any(ch in text for ch in "*?[") and not path.exists()))


def _is_list(path: Path) -> bool:
    return path.suffix.lower() in LIST_SUFFIXES + CSV_SUFFIXES


def find_slides(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The slides named by ``inputs`` (see :func:`discover`)."""
    return list(discover(inputs).paths)


def discover(inputs: Iterable[str | os.PathLike[str]]) -> FoundSlides:
    """Slides named by ``inputs``: files, folders (their slide files), globs and list files.

    A folder holding ``.dcm`` files is one slide, the DICOM series in it (an error when they
    belong to several series); in a folder of slides, each sub-folder holding ``.dcm`` files is
    one slide too (checked when it is opened, so that one bad series fails alone), as is each
    OME-Zarr folder. The other entries of a folder are left out and listed in ``ignored``,
    except hidden ones, what a batch writes (results, ``manifest.csv``, claims) and the data
    folder of an ``.mrxs`` slide. A list file holds one path per line (``.txt``; blank lines
    and lines starting with ``#`` are skipped) or per row (``.csv``, in its ``slide`` column,
    with an optional ``mpp`` column: the slide's level-0 um/px, empty to use its metadata);
    relative paths are relative to the list's folder. A listed file that does not exist is
    kept, so that it is recorded as failed, unless none of them exists; a folder, glob or list
    that finds nothing is an error.
    """
    found: list[tuple[Path, float | None]] = []
    ignored: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        if is_url(item) or is_url(text):
            if text.endswith("/"):  # a prefix in a bucket, searched as a folder is
                found += [(_batch_url(url), None) for url in list_slides(text, SLIDE_SUFFIXES)]
            else:
                found.append((_batch_url(item), None))
            continue
        path = Path(text).expanduser()
        if any(ch in text for ch in "*?[") and not path.exists():
            matches = [Path(p) for p in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
            # A DICOM instance stands for its series: the folder it is in.
            _warn_special(matches)
            matches = [p.parent if p.suffix.lower() == DICOM_SUFFIX else p
                       for p in matches if p.is_file() or _is_slide_folder(p)]
            if not matches:
                raise ConfigError(f"{text}: the pattern matches no slide; check the path")
            found += [(p, None) for p in matches]
        elif path.is_dir():
            slides, left_out = _folder_slides(path)
            found += [(p, None) for p in slides]
            ignored += left_out
        elif _is_list(path) and path.is_file():
            listed = _read_list(path)
            if not listed:
                raise ConfigError(f"{path}: the list names no slide; put one path per line")
            if not any(is_url(p) or p.exists() for p, _ in listed):
                raise ConfigError(
                    f"{path}: none of the {len(listed)} paths it lists exists (the first is "
                    f"{listed[0][0]}; relative paths are relative to the list's folder); a "
                    "list holds one slide path per line, or a 'slide' column in a .csv file")
            found += listed
        elif path.exists():
            found.append((path, None))
        else:
            raise ConfigError(f"{path} does not exist; check the path")
    unique: dict[Path, tuple[Path, float | None]] = {}
    for p, mpp in found:
        first = unique.setdefault(p.resolve(), (p, mpp))
        if first[1] is None and mpp is not None:  # a resolution given once is kept
            unique[p.resolve()] = (first[0], mpp)
        elif mpp is not None and first[1] != mpp:
            raise ConfigError(f"{p} is listed twice, with mpp {first[1]:g} and {mpp:g}; "
                              "keep one")
    return FoundSlides(tuple(p for p, _ in unique.values()),
                       tuple(m for _, m in unique.values()), tuple(ignored))


def describe_ignored(ignored: Sequence[Path]) -> str:
    """``ignored`` in a few words: how many files and folders, and their kinds."""
    files = [p for p in ignored if not p.is_dir()]
    folders = len(ignored) - len(files)
    kinds: list[str] = []
    for p in files:
        kind = ("an .mrxs without its data folder" if p.suffix.lower() == ".mrxs"
                else p.suffix.lower() or "no extension")
        if kind not in kinds:
            kinds.append(kind)
    parts = []
    if files:
        shown = ", ".join(kinds[:5]) + (", ..." if len(kinds) > 5 else "")
        parts.append(f"{len(files)} file{'' if len(files) == 1 else 's'} ({shown})")
    if folders:
        parts.append(f"{folders} folder{'' if folders == 1 else 's'} (folders are not searched)")
    return ", ".join(parts)


def _is_slide_folder(path: Path) -> bool:
    """A folder that is one slide: a DICOM series or an OME-Zarr image."""
    return path.is_dir() and (is_ome_zarr(path) or bool(dicom_files(path)))


def _folder_slides(path: Path) -> tuple[list[Path], list[Path]]:
    """The slides a folder names (itself when it is a DICOM series or an OME-Zarr image, else
    its slide files and its sub-folders that are slides), and the entries left out."""
    if is_ome_zarr(path):
        return [path], []
    if dicom_files(path):
        others = [p.name for p in path.iterdir()
                  if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES
                  and p.suffix.lower() != DICOM_SUFFIX]
        if others:
            raise ConfigError(
                f"{path}: holds DICOM instances (.dcm, read together as one slide) and other "
                f"slides ({', '.join(sorted(others)[:3])}{', ...' if len(others) > 3 else ''}); "
                "move the DICOM series into a folder of its own")
        try:
            series_file(path)  # one series, or one line saying what is wrong
        except SlideError as err:
            raise ConfigError(str(err)) from None
        return [path], []  # the series' other files are its members, not slides left out
    entries = sorted(path.iterdir())
    names = {p.name for p in entries}
    matches, ignored = [], []
    for p in entries:
        if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES:
            if p.suffix.lower() == ".mrxs" and not (path / p.stem).is_dir():
                ignored.append(p)  # MIRAX keeps its pixels in a folder named like the file
            else:
                matches.append(p)
        elif _is_slide_folder(p):
            matches.append(p)
        elif not _batch_own(p, names) and special_kind(p) is None:
            ignored.append(p)
    _warn_special(p for p in entries if p.suffix.lower() in SLIDE_SUFFIXES)
    if not matches:
        left = f"; {describe_ignored(ignored)} left out" if ignored else ""
        raise ConfigError(
            f"{path}: folder holds no slide (read: {formats_read()}{left}); give the folder "
            "that holds the slides, a DICOM series folder, or the slide files themselves")
    return matches, ignored


def _batch_own(p: Path, names: set[str]) -> bool:
    """Whether ``p`` is hidden, written by a batch, or the data folder of an ``.mrxs``
    slide beside it (``names``: the names in its folder): no slide left out."""
    name = p.name
    lower = name.lower()
    return (name.startswith(".") or name in _BATCH_FILES
            or any(lower.endswith(s) for s in _BATCH_SUFFIXES)
            or (p.is_dir() and (name + ".mrxs" in names or name + ".MRXS" in names))
            or (p.is_dir() and (p / "manifest.csv").is_file()))


def _warn_special(paths: Iterable[Path]) -> None:
    """Say which of ``paths`` are left out for being FIFOs, sockets or devices (named like
    slides, but opening one could wait forever)."""
    for p in paths:
        kind = special_kind(p)
        if kind is not None:
            logger.warning("%s: is %s, not a slide file; left out of the batch", p, kind)


def _read_list(path: Path) -> list[tuple[Path, float | None]]:
    """The slides a list file names, relative paths taken from the list's folder, and the
    resolution a CSV list gives each."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the list of slides ({err})") from err
    if path.suffix.lower() in CSV_SUFFIXES:
        rows = _csv_rows(path, text)
    else:
        rows = [(line.strip(), "") for line in text.splitlines()]
        rows = [(name, mpp) for name, mpp in rows if name and not name.startswith("#")]
    out = []
    for name, mpp_text in rows:
        if is_url(name):
            out.append((_batch_url(name), _mpp_cell(path, redact(name), mpp_text)))
            continue
        p = Path(name).expanduser()
        out.append((p if p.is_absolute() else path.parent / p, _mpp_cell(path, name, mpp_text)))
    return out


def _batch_url(url: str | os.PathLike[str]) -> Path:
    """A slide's URL in a batch, refused when it carries credentials or a signature: a batch
    records its slides in manifest.csv and hands them to its workers as text, so they must
    hold no secret (the workers take credentials from their environment)."""
    text = url.url if isinstance(url, SlideUrl) else os.fspath(url)
    if has_secrets(text):
        raise ConfigError(
            f"{redact(text)}: a URL with credentials or a query string (a signature) cannot be "
            "part of a batch, which records its slides; give the credentials through the "
            "environment (AWS_ACCESS_KEY_ID, ...), or predict this slide on its own")
    return slide_location(text)


def _csv_rows(path: Path, text: str) -> list[tuple[str, str]]:
    """The ``slide`` and ``mpp`` cells of a CSV list's rows (rows without a slide skipped)."""
    reader = csv.DictReader(text.splitlines())
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    if SLIDE_COLUMN not in columns:
        raise ConfigError(
            f"{path}: no '{SLIDE_COLUMN}' column (its header is "
            f"{', '.join(repr(c) for c in reader.fieldnames or []) or 'empty'}); a CSV list "
            f"needs a header row with '{SLIDE_COLUMN}' and, optionally, '{MPP_COLUMN}'")
    try:
        rows = [((row.get(columns[SLIDE_COLUMN]) or "").strip(),
                 (row.get(columns.get(MPP_COLUMN, ""), "") or "").strip()) for row in reader]
    except csv.Error as err:
        raise ConfigError(f"{path}: not a readable CSV file ({err})") from err
    return [(name, mpp) for name, mpp in rows if name and not name.startswith("#")]


def _mpp_cell(path: Path, slide: str, text: str) -> float | None:
    """The ``mpp`` cell of a CSV list's row: level-0 um/px, or None when empty."""
    if not text:
        return None
    from wsiseg.slide.geometry import SLIDE_MPP_RANGE  # loaded only for a list that needs it

    low, high = SLIDE_MPP_RANGE
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(
            f"{path}: the mpp {text!r} of {slide} is not a plausible resolution (level-0 um/px, "
            f"{low:g}-{high:g}: 0.25 for x40, 0.5 for x20 scans); correct it, or leave it "
            "empty to use the slide's metadata")
    return value


def metadata_mpp(slide: str | os.PathLike[str], *, skip_damaged: bool = False,
                 required: bool = False) -> tuple[float, float] | None:
    """Open ``slide`` and close it: its level-0 resolution from its metadata (None: it has
    none, and ``required`` is false; else the slide's :class:`~wsiseg.errors.ResolutionError`).

    A file that is no slide is refused here (:class:`~wsiseg.errors.SlideError`) in a fraction
    of a second, before the network, torch or the prediction pipeline is loaded. What opening
    it logs is left to the prediction, which opens it again and says it once.
    """
    from wsiseg.slide.reader import open_slide

    with _quiet("wsiseg.slide"), open_slide(slide, skip_damaged=skip_damaged) as opened:
        return opened.require_mpp() if required else opened.metadata_mpp


@contextlib.contextmanager
def _quiet(prefix: str) -> Iterator[None]:
    """Drop the records that the loggers named ``prefix...`` make in this thread meanwhile."""
    thread = threading.get_ident()

    def other_threads(record: logging.LogRecord) -> bool:
        return record.thread != thread

    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name == prefix or name.startswith(prefix + ".")]
    for log in loggers:
        log.addFilter(other_threads)
    try:
        yield
    finally:
        for log in loggers:
            log.removeFilter(other_threads)


def output_for(slide: Path, out_dir: Path) -> Path:
    """Where the result of ``slide`` goes in the batch's folder ``out_dir``."""
    return out_dir / result_name(slide_stem(slide))


def refuse_clashes(slides: list[Path], outputs: list[Path]) -> None:
    """Refuse two slides whose results would have one name (one stem, two folders)."""
    seen: dict[Path, Path] = {}
    for slide, out in zip(slides, outputs):
        if out in seen:
            raise ConfigError(f"{seen[out]} and {slide} would both write {out.name}; rename one, "
                              "or run them into different --out folders")
        seen[out] = slide
