"""Which slides a batch holds and where their results go.

Inputs are slide files, folders of slides, glob patterns and list files (one path per line);
:func:`find_slides` turns them into slide paths, :func:`output_for` names each slide's result
(``OUT/STEM.wsiseg.zarr``) and :func:`refuse_clashes` stops two slides from sharing one.
:func:`is_batch` says whether inputs name a batch or a single slide.

A folder holding ``.dcm`` files is one DICOM slide (its series, see
:mod:`wsiseg.slide.dicom_series`), not a batch; a folder of such folders is a batch of them.
A FIFO, socket or device named like a slide in a folder or matched by a pattern is left out
with a warning (opening one could wait forever); one named on its own fails as that slide.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from wsiseg.errors import ConfigError, SlideError
from wsiseg.naming import result_name
from wsiseg.slide.dicom_series import (
    DICOM_SUFFIX,
    dicom_files,
    series_file,
    slide_stem,
    special_kind,
)

logger = logging.getLogger(__name__)

#: File name endings taken from a folder (OpenSlide's formats).
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs",
                  ".svslide", ".bif", ".dcm")
#: Text files that list slides, one path per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")


def is_batch(inputs: Sequence[str | os.PathLike[str]]) -> bool:
    """Whether ``inputs`` name a batch: several inputs, a folder, a list file or a pattern.

    One slide file, or one folder of DICOM instances (a DICOM slide), is not a batch; its
    result goes beside it or to the file ``--out`` names.
    """
    if len(inputs) != 1:
        return True
    text = os.fspath(inputs[0])
    path = Path(text)
    if path.is_dir() and dicom_files(path):
        return False
    return (path.is_dir() or (path.suffix.lower() in LIST_SUFFIXES and path.is_file())
            or (any(ch in text for ch in "*?[") and not path.exists()))


def find_slides(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Slides named by ``inputs``: files, folders (their slide files), globs and list files.

    A folder holding ``.dcm`` files is one slide, the DICOM series in it (an error when they
    belong to several series); in a folder of slides, each sub-folder holding ``.dcm`` files is
    one slide too (checked when it is opened, so that one bad series fails alone). A list file
    (``.txt``) holds one path per line, relative to the list's folder; blank lines and lines
    starting with ``#`` are skipped. A listed file that does not exist is kept, so
    that it is recorded as failed; a folder, glob or list that finds nothing is an error.
    """
    found: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if any(ch in text for ch in "*?[") and not path.exists():
            matches = [Path(p) for p in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
            # A DICOM instance stands for its series: the folder it is in.
            _warn_special(matches)
            matches = [p.parent if p.suffix.lower() == DICOM_SUFFIX else p
                       for p in matches if p.is_file() or (p.is_dir() and dicom_files(p))]
            if not matches:
                raise ConfigError(f"{text}: the pattern matches no slide; check the path")
            found += matches
        elif path.is_dir():
            found += _folder_slides(path)
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            listed = _read_list(path)
            if not listed:
                raise ConfigError(f"{path}: the list names no slide; put one path per line")
            found += listed
        elif path.exists():
            found.append(path)
        else:
            raise ConfigError(f"{path} does not exist; check the path")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _folder_slides(path: Path) -> list[Path]:
    """The slides a folder names: itself when it holds DICOM instances, else its slide files
    and its sub-folders of DICOM instances."""
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
        return [path]
    matches = sorted(p for p in path.iterdir()
                     if (p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
                     or (p.is_dir() and dicom_files(p)))
    _warn_special(p for p in path.iterdir() if p.suffix.lower() in SLIDE_SUFFIXES)
    if not matches:
        raise ConfigError(
            f"{path}: folder holds no slide (no {', '.join(SLIDE_SUFFIXES)} file, and no "
            "sub-folder of .dcm files); give the folder that holds the slides, a DICOM series "
            "folder, or the slide files themselves")
    return matches


def _warn_special(paths: Iterable[Path]) -> None:
    """Say which of ``paths`` are left out for being FIFOs, sockets or devices (named like
    slides, but opening one could wait forever)."""
    for p in paths:
        kind = special_kind(p)
        if kind is not None:
            logger.warning("%s: is %s, not a slide file; left out of the batch", p, kind)


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the list of slides ({err})") from err
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


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
