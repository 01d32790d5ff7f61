"""Which slides a batch holds and where their results go.

Inputs are slide files, folders of slides, glob patterns and list files (one path per line);
:func:`find_slides` turns them into slide paths, :func:`output_for` names each slide's result
(``OUT/STEM.wsiseg.zarr``) and :func:`refuse_clashes` stops two slides from sharing one.
:func:`is_batch` says whether inputs name a batch or a single slide.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from wsiseg.errors import ConfigError

#: File name endings taken from a folder (OpenSlide's formats).
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs",
                  ".svslide", ".bif", ".dcm")
#: Text files that list slides, one path per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")


def is_batch(inputs: Sequence[str | os.PathLike]) -> bool:
    """Whether ``inputs`` name a batch: several inputs, a folder, a list file or a pattern.

    One slide file is not a batch; its result goes beside it or to the file ``--out`` names.
    """
    if len(inputs) != 1:
        return True
    text = os.fspath(inputs[0])
    path = Path(text)
    return (path.is_dir() or (path.suffix.lower() in LIST_SUFFIXES and path.is_file())
            or (any(ch in text for ch in "*?[") and not path.exists()))


def find_slides(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Slides named by ``inputs``: files, folders (their slide files), globs and list files.

    A list file (``.txt``) holds one path per line, relative to the list's folder; blank lines
    and lines starting with ``#`` are skipped. A listed file that does not exist is kept, so
    that it is recorded as failed; a folder, glob or list that finds nothing is an error.
    """
    found: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if any(ch in text for ch in "*?[") and not path.exists():
            matches = [Path(p) for p in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
            matches = [p for p in matches if p.is_file()]
            if not matches:
                raise ConfigError(f"{text}: the pattern matches no slide; check the path")
            found += matches
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir()
                             if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
            if not matches:
                raise ConfigError(f"{path}: folder holds no slide ({', '.join(SLIDE_SUFFIXES)}); "
                                  "give the folder of slides or the files themselves")
            found += matches
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
    return out_dir / f"{slide.stem}.wsiseg.zarr"


def refuse_clashes(slides: list[Path], outputs: list[Path]) -> None:
    """Refuse two slides whose results would have one name (one stem, two folders)."""
    seen: dict[Path, Path] = {}
    for slide, out in zip(slides, outputs):
        if out in seen:
            raise ConfigError(f"{seen[out]} and {slide} would both write {out.name}; rename one, "
                              "or run them into different --out folders")
        seen[out] = slide
