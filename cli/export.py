"""``wsiseg export``: files people open, made from a result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from wsiseg.export import ExportOptions

from .common import handle_errors
from .options import config_from, options_from

F = TypeVar("F", bound=Callable[..., Any])

FORMATS_HELP = ("geojson (QuPath annotations), tiff (pyramidal label TIFF), png (thumbnail with "
                "the classes over it), report (per-class CSV and JSON); of a folder of results: "
                "cohort (one row per slide, cohort.html and cohort.csv)")


def _class_names(ctx: click.Context, param: click.Parameter, value: str | None
                 ) -> tuple[tuple[str, str], ...]:
    """``"a=A,b=B"`` as ``(("a", "A"), ("b", "B"))``."""
    if not value:
        return ()
    pairs = []
    for item in value.split(","):
        name, sep, new = (part.strip() for part in item.partition("="))
        if not sep or not name or not new:
            raise click.BadParameter(f"{item.strip()!r} is not CLASS=NAME, e.g. tumour=Tumor")
        pairs.append((name, new))
    return tuple(pairs)


def export_options(func: F) -> F:
    """The export settings (:class:`~wsiseg.export.ExportOptions`) as options, shared by
    ``wsiseg export`` and ``wsiseg predict --export``; ``config_from(ExportOptions, params)``
    makes them from the values."""
    return options_from(ExportOptions, overrides={"class_names": {"callback": _class_names}})(func)


@click.command()
@click.argument("result", type=click.Path(path_type=Path))
@click.option("--to", "formats", required=True, help=f"Comma-separated formats: {FORMATS_HELP}.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Folder for the files (default: beside RESULT; for cohort, RESULT itself).")
@export_options
@handle_errors
def export(result: Path, formats: str, out: Path | None, **settings: Any) -> None:
    """Export RESULT.zarr to files people open: QuPath annotations, a pyramidal TIFF, a
    thumbnail, a report; or a folder of results to its cohort table (--to cohort)."""
    from wsiseg.export import check_formats, export_path

    names = [f.strip() for f in formats.split(",") if f.strip()]
    check_formats(names, folder_formats=True)
    options = config_from(ExportOptions, settings)
    for path in export_path(result, names, out, options):
        click.echo(str(path))
