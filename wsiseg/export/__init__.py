"""Exports of a result for people and other programs: ``export_result(result, formats, out)``.

Each format is a function ``(result, out_dir, stem) -> list of written paths`` in
:data:`EXPORTERS`; files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from wsiseg.errors import ConfigError, OutputError

from .report import write_report
from .thumbnail import write_thumbnail

EXPORTERS: dict[str, Callable[[str | os.PathLike, Path, str], list[Path]]] = {
    "report": write_report,
    "png": write_thumbnail,
}


def result_stem(result: str | os.PathLike) -> str:
    """``slide`` for ``slide.wsiseg.zarr`` (or ``NAME`` for ``NAME.zarr``)."""
    name = Path(result).name
    for suffix in (".wsiseg.zarr", ".zarr"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def export_result(result: str | os.PathLike, formats: Sequence[str],
                  out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write ``formats`` of ``result`` into ``out_dir`` (default: beside the result)."""
    unknown = [f for f in formats if f not in EXPORTERS]
    if unknown or not formats:
        raise ConfigError(f"unknown export format(s) {unknown or formats}; choose from "
                          f"{', '.join(EXPORTERS)}")
    out = Path(out_dir) if out_dir is not None else Path(result).resolve().parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {out} ({err.strerror or err}); choose another --out")
    written: list[Path] = []
    for name in dict.fromkeys(formats):
        written += EXPORTERS[name](result, out, result_stem(result))
    return written
