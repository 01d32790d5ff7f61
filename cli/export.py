"""``wsiseg export``: files people open, made from a result."""

from __future__ import annotations

from pathlib import Path

import click

from .common import handle_errors

FORMATS_HELP = ("geojson (QuPath annotations), tiff (pyramidal label TIFF), png (thumbnail with "
                "the classes over it), report (per-class CSV and JSON)")


def export_options(func):
    """The export settings, shared by ``wsiseg export`` and ``wsiseg predict --export``."""
    options = [
        click.option("--origin", type=click.Choice(["bounds", "level0"]), default=None,
                     help="Frame of geojson and tiff: 'bounds' starts at the slide's bounds "
                          "offset, as QuPath shows OpenSlide slides; 'level0' is the full "
                          "level-0 frame of OpenSlide and ASAP. Default: each format's own "
                          "viewer's, geojson 'bounds' (QuPath), tiff 'level0' (ASAP)."),
        click.option("--simplify", "simplify_um", type=click.FloatRange(min=0),
                     help="geojson: vertex tolerance in um (default half an analysis pixel; "
                          "0 keeps exact pixel outlines)."),
        click.option("--min-area", "min_area_um2", type=click.FloatRange(min=0), default=0.0,
                     show_default=True,
                     help="geojson: drop regions smaller than this, in um^2 (the report "
                          "counts the same regions)."),
        click.option("--class-names", metavar="CLASS=NAME,...", callback=_class_names,
                     help="geojson: give classes the names of your QuPath classes, e.g. "
                          "'tumour=Tumor,normal=Stroma'."),
        click.option("--tiff-overlay", is_flag=True,
                     help="tiff: also write a colour overlay TIFF (background transparent)."),
        click.option("--png-size", type=click.IntRange(min=16), default=2048, show_default=True,
                     help="png: longest side of the slide's thumbnail in pixels (title, "
                          "legend and scale bar go below it)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _class_names(ctx, param, value):
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


def build_export_options(origin, simplify_um, min_area_um2, class_names, tiff_overlay, png_size):
    from wsiseg.export import ExportOptions

    return ExportOptions(png_size=png_size, simplify_um=simplify_um, min_area_um2=min_area_um2,
                         origin=origin, tiff_overlay=tiff_overlay, class_names=class_names)


@click.command()
@click.argument("result", type=click.Path(path_type=Path))
@click.option("--to", "formats", required=True, help=f"Comma-separated formats: {FORMATS_HELP}.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the files (default: beside RESULT).")
@export_options
@handle_errors
def export(result, formats, out, origin, simplify_um, min_area_um2, class_names, tiff_overlay,
           png_size):
    """Export RESULT.zarr to files people open: QuPath annotations, a pyramidal TIFF, a
    thumbnail, a report."""
    from wsiseg.export import check_formats, export_result

    names = [f.strip() for f in formats.split(",") if f.strip()]
    check_formats(names)
    options = build_export_options(origin, simplify_um, min_area_um2, class_names, tiff_overlay,
                                   png_size)
    for path in export_result(result, names, out, options):
        click.echo(str(path))
