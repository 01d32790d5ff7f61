"""Exports of a result for people and other programs: ``export_result(result, formats, out)``.

Each format is a function ``(result, out_dir, stem, options) -> list of written paths`` in
:data:`EXPORTERS`; ``options`` is one :class:`ExportOptions` shared by all formats, each taking
the fields it knows. The formats of a whole folder of results (a batch's), such as the cohort
table, are in :data:`FOLDER_EXPORTERS` (``export_folder(folder, formats, out)``). Files are
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from wsiseg.atomic import output_error
from wsiseg.errors import ConfigError
from wsiseg.naming import RESULT_SUFFIX
from wsiseg.settings import setting, validate_fields

if TYPE_CHECKING:
    from .report import ReviewRules

#: The frames of the vector and raster exports (see :class:`ExportOptions`).
Origin = Literal["bounds", "level0"]
ORIGINS: tuple[Origin, ...] = get_args(Origin)
#: The frame of each format when ``ExportOptions.origin`` is None.
DEFAULT_ORIGINS: dict[str, Origin] = {"geojson": "bounds", "tiff": "level0"}


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

    origin: Origin | None = setting(
        None, error="unknown origin {value!r}; choose from {choices}",
        help="Frame of geojson and tiff: 'bounds' starts at the slide's bounds offset, as "
             "QuPath shows OpenSlide slides; 'level0' is the full level-0 frame of OpenSlide "
             "and ASAP. Default: each format's own viewer's, geojson 'bounds' (QuPath), tiff "
             "'level0' (ASAP).")
    simplify_um: float | None = setting(
        None, flag="--simplify", min=0, label="simplify tolerance", unit="um",
        help="geojson: vertex tolerance in um (default half an analysis pixel; 0 keeps exact "
             "pixel outlines).")
    min_area_um2: float = setting(
        0.0, flag="--min-area", min=0, label="minimum area", unit="um^2",
        help="geojson: drop regions smaller than this, in um^2 (the report counts the same "
             "regions).")
    class_names: tuple[tuple[str, str], ...] = setting(  # (class, name in QuPath) pairs
        (), metavar="CLASS=NAME,...",
        help="geojson: give classes the names of your QuPath classes, e.g. "
             "'tumour=Tumor,normal=Stroma'.")
    qc_annotations: bool = setting(
        False,
        help="geojson: also add each artefact region (pen, out of focus, fold or dark, other) "
             "as an annotation classified 'artefact: NAME'; the result needs artefact labels "
             "(predicted with --qc record, the default, or exclude).")
    tiff_overlay: bool = setting(
        False, help="tiff: also write a colour overlay TIFF (background transparent).")
    review_analysable: float = setting(
        0.8, min=0, max=1, label="review: analysable share",
        help="report: flag a slide for review when the tissue on no artefact is under this "
             "share of its tissue.")
    review_artefact_mm2: float = setting(
        1.0, min=0, label="review: artefact area", unit="mm^2",
        help="report: flag a slide for review when artefacts cover more than this much of its "
             "tissue, in mm^2.")
    review_low_confidence: float = setting(
        0.25, min=0, max=1, label="review: low-confidence share",
        help="report: flag a slide for review when more than this share of its tissue has low "
             "confidence (uncertainty over 0.5).")
    png_size: int = setting(
        2048, min=16, unit="px",
        help="png: longest side of the slide's thumbnail in pixels (title, legend and scale "
             "bar go below it).")

    def __post_init__(self) -> None:
        validate_fields(self)


#: A result, the folder, the stem of the files and the options, to the paths written.
Exporter = Callable[[str | os.PathLike[str], Path, str, ExportOptions], list[Path]]


def _report(result: str | os.PathLike[str], out_dir: Path, stem: str,
            options: ExportOptions) -> list[Path]:
    from .report import write_report

    return write_report(result, out_dir, stem, min_area_um2=options.min_area_um2,
                        review=review_rules(options))


def review_rules(options: ExportOptions) -> ReviewRules:
    """The report's review rules from the export settings."""
    from .report import ReviewRules

    return ReviewRules(options.review_analysable, options.review_artefact_mm2,
                       options.review_low_confidence)


def _png(result: str | os.PathLike[str], out_dir: Path, stem: str,
         options: ExportOptions) -> list[Path]:
    from .thumbnail import write_thumbnail

    return write_thumbnail(result, out_dir, stem, size=options.png_size)


def _geojson(result: str | os.PathLike[str], out_dir: Path, stem: str,
             options: ExportOptions) -> list[Path]:
    from .geojson import write_geojson

    return write_geojson(result, out_dir, stem, simplify_um=options.simplify_um,
                         min_area_um2=options.min_area_um2,
                         origin=options.origin or DEFAULT_ORIGINS["geojson"],
                         class_names=dict(options.class_names),
                         qc_annotations=options.qc_annotations)


def _tiff(result: str | os.PathLike[str], out_dir: Path, stem: str,
          options: ExportOptions) -> list[Path]:
    from .tiff import write_tiff

    return write_tiff(result, out_dir, stem, overlay=options.tiff_overlay,
                      origin=options.origin or DEFAULT_ORIGINS["tiff"])


EXPORTERS: dict[str, Exporter] = {
    "geojson": _geojson,
    "tiff": _tiff,
    "png": _png,
    "report": _report,
}


#: A folder of results, the folder for the files, to the paths written.
FolderExporter = Callable[[str | os.PathLike[str], Path], list[Path]]


def _cohort(folder: str | os.PathLike[str], out_dir: Path) -> list[Path]:
    from .cohort import write_cohort

    return write_cohort(folder, out_dir)


#: The formats made from a folder of results (a batch's), not from one result.
FOLDER_EXPORTERS: dict[str, FolderExporter] = {
    "cohort": _cohort,
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


def exports_current(result: str | os.PathLike[str], formats: Sequence[str],
                    out_dir: str | os.PathLike[str], options: ExportOptions) -> bool:
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


def result_stem(result: str | os.PathLike[str]) -> str:
    """``slide`` for ``slide.wsiseg.zarr`` (or ``NAME`` for ``NAME.zarr``)."""
    name = Path(result).name
    for suffix in (RESULT_SUFFIX, ".zarr"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_formats(formats: Sequence[str], folder_formats: bool = False) -> None:
    """Refuse unknown or no formats, before any work; ``folder_formats`` also knows those of
    :data:`FOLDER_EXPORTERS`."""
    known = [*EXPORTERS, *(FOLDER_EXPORTERS if folder_formats else ())]
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise ConfigError(f"unknown export format(s) {unknown or list(formats)}; choose from "
                          f"{', '.join(known)}")


def export_path(path: str | os.PathLike[str], formats: Sequence[str],
                out_dir: str | os.PathLike[str] | None = None,
                options: ExportOptions | None = None) -> list[Path]:
    """Write ``formats`` of ``path``: a result (:func:`export_result`), or, for a format of
    :data:`FOLDER_EXPORTERS`, a folder of results (:func:`export_folder`)."""
    check_formats(formats, folder_formats=True)
    if any(f in FOLDER_EXPORTERS for f in formats):
        return export_folder(path, formats, out_dir)
    return export_result(path, formats, out_dir, options)


def export_folder(folder: str | os.PathLike[str], formats: Sequence[str],
                  out_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write ``formats`` (of :data:`FOLDER_EXPORTERS`) of the results of ``folder`` into
    ``out_dir`` (default: the folder)."""
    check_formats(formats, folder_formats=True)
    single = [f for f in formats if f not in FOLDER_EXPORTERS]
    if single:
        raise ConfigError(f"{', '.join(FOLDER_EXPORTERS)} is made from a folder of results and "
                          f"{', '.join(single)} from one result; export them in two runs")
    out = Path(out_dir) if out_dir is not None else Path(folder)
    written: list[Path] = []
    for name in dict.fromkeys(formats):
        written += FOLDER_EXPORTERS[name](folder, out)
    return written


def export_result(result: str | os.PathLike[str], formats: Sequence[str],
                  out_dir: str | os.PathLike[str] | None = None,
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
