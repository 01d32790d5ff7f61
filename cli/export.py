"""``wsiseg export``: files people open, made from a result."""

from __future__ import annotations

from pathlib import Path

import click

from .common import handle_errors


@click.command()
@click.argument("result", type=click.Path(path_type=Path))
@click.option("--to", "formats", required=True, help="Comma-separated formats: report, png.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the files (default: beside RESULT).")
@handle_errors
def export(result, formats, out):
    """Export RESULT.zarr: report (per-class area, tissue share, regions; CSV and JSON), png
    (thumbnail with the classes over it and a legend)."""
    from wsiseg.export import export_result

    names = [f.strip() for f in formats.split(",") if f.strip()]
    for path in export_result(result, names, out):
        click.echo(str(path))
