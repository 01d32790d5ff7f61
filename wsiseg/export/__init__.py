"""Exports of a result for people and other programs: ``export_result(result, formats, out)``.

Each format is a function ``(result, out_dir, stem, options) -> list of written paths`` in
:data:`EXPORTERS`; ``options`` is one :class:`ExportOptions` shared by all formats, each taking
the fields it knows. Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wsiseg.atomic import output_error
from wsiseg.errors import ConfigError

ORIGINS = ("bounds", "level0")
#: The frame of each format when ``ExportOptions.origin`` is None.
DEFAULT_ORIGINS = {"geojson": "bounds", "tiff": "level0"}


@dataclass(frozen=True)
class ExportOptions:
    """Settings of the exports.

    ``origin`` is the frame of the vector and raster exports: ``"bounds"`` puts (0, 0) at the
    slide's bounds offset (``openslide.bounds-x/-y``), the frame QuPath shows OpenSlide slides
    in, since it crops them to their bounds; ``"level0"`` is the full level-0 frame that
    OpenSlide and ASAP use. Both are the same for slides without a bounds offset. None, the
    default, gives each format the frame of the viewer it is made for (:data:`DEFAULT_ORIGINS`:
    geojson ``bounds`` for QuPath, tiff ``level0`` for ASAP).
    """

    png_size: int = 2048  # png: longest side of the thumbnail part, in pixels
    simplify_um: float | None = None  # geojson vertex tolerance; None: half an analysis pixel
    min_area_um2: float = 0.0  # geojson and report: regions smaller than this are left out
    origin: str | None = None
    tiff_overlay: bool = False  # tiff: also write a colour overlay beside the labels
    class_names: tuple[tuple[str, str], ...] = ()  # geojson: (class, name in QuPath) pairs

    def __post_init__(self) -> None:
        if self.origin is not None and self.origin not in ORIGINS:
            raise ConfigError(f"unknown origin {self.origin!r}; choose from {', '.join(ORIGINS)}")
        if not self.png_size >= 16:
            raise ConfigError(f"png size must be at least 16 px, got {self.png_size}")
        if self.simplify_um is not None and not self.simplify_um >= 0:
            raise ConfigError(f"simplify tolerance must be 0 or more um, got {self.simplify_um}")
        if not self.min_area_um2 >= 0:
            raise ConfigError(f"minimum area must be 0 or more um^2, got {self.min_area_um2}")


Exporter = Callable[[str | os.PathLike, Path, str, ExportOptions], list[Path]]


def _report(result, out_dir, stem, options):
    from .report import write_report

    return write_report(result, out_dir, stem, min_area_um2=options.min_area_um2)


def _png(result, out_dir, stem, options):
    from .thumbnail import write_thumbnail

    return write_thumbnail(result, out_dir, stem, size=options.png_size)


def _geojson(result, out_dir, stem, options):
    from .geojson import write_geojson

    return write_geojson(result, out_dir, stem, simplify_um=options.simplify_um,
                         min_area_um2=options.min_area_um2,
                         origin=options.origin or DEFAULT_ORIGINS["geojson"],
                         class_names=dict(options.class_names))


def _tiff(result, out_dir, stem, options):
    from .tiff import write_tiff

    return write_tiff(result, out_dir, stem, overlay=options.tiff_overlay,
                      origin=options.origin or DEFAULT_ORIGINS["tiff"])


EXPORTERS: dict[str, Exporter] = {
    "geojson": _geojson,
    "tiff": _tiff,
    "png": _png,
    "report": _report,
}


def export_files(stem: str, formats: Sequence[str], options: ExportOptions) -> list[str]:
    """The names of the files that ``formats`` write for a result named ``stem``."""
    names = {
        "geojson": [f"{stem}.geojson"],
        "tiff": [f"{stem}.labels.tif"] + ([f"{stem}.overlay.tif"] if options.tiff_overlay else []),
        "png": [f"{stem}.overlay.png"],
        "report": [f"{stem}.report.json", f"{stem}.report.csv"],
    }
    return [name for f in dict.fromkeys(formats) for name in names[f]]


def exports_current(result: str | os.PathLike, formats: Sequence[str],
                    out_dir: str | os.PathLike, options: ExportOptions) -> bool:
    """True when every file of ``formats`` exists in ``out_dir`` and is newer than ``result``.

    Exports are written under a temporary name and renamed when complete, so one that exists
    is whole; one older than its result was made from an earlier result of the same name.
    """
    made = (Path(result) / "zarr.json").stat().st_mtime_ns
    for name in export_files(result_stem(result), formats, options):
        path = Path(out_dir) / name
        if not path.is_file() or path.stat().st_mtime_ns < made:
            return False
    return True


def result_stem(result: str | os.PathLike) -> str:
    """``slide`` for ``slide.wsiseg.zarr`` (or ``NAME`` for ``NAME.zarr``)."""
    name = Path(result).name
    for suffix in (".wsiseg.zarr", ".zarr"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_formats(formats: Sequence[str]) -> None:
    """Refuse unknown or no formats, before any work."""
    unknown = [f for f in formats if f not in EXPORTERS]
    if unknown or not formats:
        raise ConfigError(f"unknown export format(s) {unknown or list(formats)}; choose from "
                          f"{', '.join(EXPORTERS)}")


def export_result(result: str | os.PathLike, formats: Sequence[str],
                  out_dir: str | os.PathLike | None = None,
                  options: ExportOptions | None = None) -> list[Path]:
    """Write ``formats`` of ``result`` into ``out_dir`` (default: beside the result)."""
    check_formats(formats)
    options = options or ExportOptions()
    out = Path(out_dir) if out_dir is not None else Path(result).resolve().parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise output_error(out, err, "create") from err
    written: list[Path] = []
    for name in dict.fromkeys(formats):
        written += EXPORTERS[name](result, out, result_stem(result), options)
    return written
