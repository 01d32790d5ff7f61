"""The ``wsiseg`` command: parse, build the config, call the library, report.

Exit codes: 0 success, 1 failure, 2 usage error. A user's mistake gives one line naming the
file, what is wrong and the way out; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wsiseg._version import __version__
from wsiseg.batch.discovery import formats_read
from wsiseg.export import ExportOptions
from wsiseg.inference.config import PredictConfig
from wsiseg.result.timing import time_hint, time_line

from .common import handle_errors, on_interrupt
from .export import export_options
from .options import config_from, options_from

if TYPE_CHECKING:
    from wsiseg.result.info import ResultInfo

logger = logging.getLogger("wsiseg")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wsiseg")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("-v", "--verbose", is_flag=True, help="Log each stage.")
def main(debug: bool, verbose: bool) -> None:
    """Whole-slide image segmentation: slides in, diagnostic maps out."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    _log_to_stderr(level)


class _ClickHandler(logging.Handler):
    """Writes records through click, so they reach whichever stderr is current."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"wsiseg: {record.levelname.lower()}: {record.getMessage()}", err=True)
        except Exception:  # noqa: BLE001 - never let a log line break a run
            self.handleError(record)


def _log_to_stderr(level: int) -> None:
    """Send the library's log lines to stderr as ``wsiseg: warning: ...``, once."""
    for handler in list(logger.handlers):
        if isinstance(handler, _ClickHandler):
            logger.removeHandler(handler)
    handler = _ClickHandler()
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _path_text(ctx: click.Context, param: click.Parameter, value: Path | None) -> str | None:
    """A path given as an option, as text (as results record it), written the way
    ``pathlib`` writes it (``./w.pt`` is ``w.pt``)."""
    return None if value is None else str(value)


def _out_text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--out`` as given: a local path, or a bucket URL (``s3://``, ``gs://``) checked for
    being one results can be written to."""
    from wsiseg.slide.remote import is_url

    if value is not None and is_url(value):  # what publishes loads only for a URL
        from wsiseg.errors import OutputError
        from wsiseg.result.publish import bucket_target

        try:
            bucket_target(value)
        except OutputError as err:
            raise click.BadParameter(str(err)) from err
    return value


_PREDICT_HELP = f"""Segment SLIDES into zarr diagnostic maps.

    SLIDES are slide files, folders of slides, glob patterns ("scans/*.svs") or list files: a
    text file with one slide per line, or a .csv file with a 'slide' column and an optional
    'mpp' column (the slide's level-0 um/px, empty to use its metadata); relative paths in a
    list are relative to the list's folder. A folder is searched for: {formats_read()}; other
    files in it are left out and listed at the end. A folder of the .dcm files of one DICOM
    series is one slide (a folder of such folders, a batch of them).

    A slide may be a URL: s3://BUCKET/KEY, gs://BUCKET/KEY or https://HOST/PATH (SVS, generic
    TIFF or OME-TIFF; needs the 'remote' extra), read a byte range at a time; its result goes
    to the current folder unless --out says where. s3://BUCKET/PREFIX/ (ending in /) is a
    batch of the slides under that prefix; list files may hold URLs.

    --out may be a bucket: s3://BUCKET/KEY.wsiseg.zarr, or s3://BUCKET/PREFIX/ for results
    named after their slides (gs:// too). A result is made in a local staging folder (see
    --staging) and uploaded once finished, its root zarr.json last, so that an unfinished
    upload is never a result; a batch keeps its staging folder, to be run again.

    One slide gives one result (--slide-mpp replaces its metadata's resolution). Several give
    a batch: one result per slide in --out, a manifest.csv, complete results kept on a rerun,
    and a failing slide recorded without stopping the others (exit code 1 if any failed); in a
    batch, --slide-mpp is the resolution of the slides whose metadata has none.
    """


@main.command(help=_PREDICT_HELP)
@click.argument("slides", nargs=-1, required=True)
@click.option("--out", type=click.Path(), callback=_out_text, help="One slide: the output zarr, or a folder to hold it as SLIDE.wsiseg.zarr (a path ending in /, or an existing folder that is no zarr; default: beside the slide, in the current folder for a slide at a URL); only a result is ever replaced. Several: the folder for their results and manifest.csv. Either may be an s3:// or gs:// URL.")
@click.option("--staging", type=click.Path(file_okay=False, path_type=Path), help="With --out in a bucket: the local folder results are made in before upload (default: a folder in the system's temporary folder; for a batch, one named after --out, so that a rerun resumes).")
@options_from(PredictConfig, exclude=("out",), overrides={"weights": {
    "type": click.Path(path_type=Path), "callback": _path_text}})
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
@click.option("--export", "exports", help="Also export, right after: comma-separated formats (geojson, tiff, png, report).")
@click.option("--workers", type=click.IntRange(min=1), help="Run the batch on a local dask cluster of this many worker processes.")
@click.option("--scheduler", metavar="ADDRESS", help="Run the batch on a running dask.distributed cluster, e.g. tcp://HOST:8786.")
@export_options
@handle_errors
def predict(slides: tuple[str, ...], out: str | None, staging: Path | None, quiet: bool,
            exports: str | None, workers: int | None, scheduler: str | None,
            **settings: Any) -> None:
    from wsiseg.batch.discovery import is_batch, metadata_mpp
    from wsiseg.errors import ConfigError
    from wsiseg.slide.remote import is_url as is_bucket_url

    if staging is not None and not is_bucket_url(out):
        raise click.BadParameter("is for results published to a bucket (--out s3://...)",
                                 param_hint="--staging")

    batch = is_batch(slides) or workers is not None or scheduler is not None
    # Options that contradict each other are a usage error.
    config = config_from(PredictConfig, settings, out=str(out) if out and not batch else None,
                         progress=not quiet)
    if workers is not None and scheduler is not None:
        raise click.BadParameter("give --workers or --scheduler, not both", param_hint="--workers")
    formats = [f.strip() for f in (exports or "").split(",") if f.strip()]
    options = config_from(ExportOptions, settings)
    if formats:
        from wsiseg.export import check_formats

        try:
            check_formats(formats)
        except ConfigError as err:  # before the slide is read, not after
            raise click.BadParameter(str(err), param_hint="--export") from err
    if options.qc_annotations and (config.qc == "off" or "geojson" not in formats):
        raise click.BadParameter("adds the artefacts to the GeoJSON export: give it with "
                                 "--export geojson and without --qc off",
                                 param_hint="--qc-annotations")
    if batch:
        _predict_batch(slides, out, staging, config, formats, options, workers, scheduler,
                       quiet)
        return
    # A file that is no slide is refused before the prediction pipeline is even imported.
    metadata_mpp(slides[0], skip_damaged=config.skip_damaged, required=config.slide_mpp is None)
    if out is not None and is_bucket_url(out):
        _predict_to_bucket(slides[0], out, staging, config, formats, options, quiet)
        return
    from wsiseg.inference.pipeline import predict_slide

    info = predict_slide(slides[0], config)  # a URL stays text: Path would mangle it
    if not quiet:
        click.echo(_summary(info))
    if formats:
        from wsiseg.export import export_result

        for path in export_result(info.path, formats, options=options):
            if not quiet:
                click.echo(str(path))


def _predict_to_bucket(slide: str, out: str, staging: Path | None, config: PredictConfig,
                       formats: list[str], options: ExportOptions, quiet: bool) -> None:
    """One slide into a bucket: made in a staging folder, then published."""
    from dataclasses import replace

    from wsiseg.errors import OutputError
    from wsiseg.result.publish import (
        check_target,
        publish_with_exports,
        staging_error,
        staging_folder,
        target_url,
    )

    target = check_target(target_url(out, slide), config.overwrite)
    from wsiseg.inference.pipeline import predict_slide

    with staging_folder(staging) as folder:
        local = folder / target.path.rsplit("/", 1)[-1]
        info = predict_slide(slide, replace(config, out=str(local), overwrite=False))
        written = []
        if formats:
            from wsiseg.export import export_result

            written = export_result(info.path, formats, options=options)
        try:
            publish_with_exports(local, target, written, overwrite=config.overwrite)
        except OutputError as err:
            raise staging_error(err, local, target) from err
        if not quiet:
            click.echo(_summary(info).replace(str(info.path), target.shown, 1))
            for path in written:
                click.echo(target.child(path.name).shown)


def _batch_staging(out: str, staging: Path | None) -> Path:
    """Where a batch into the bucket prefix ``out`` is made: ``staging``, else a folder of
    the system's temporary folder named after ``out``, so that a rerun finds it."""
    import hashlib
    import tempfile

    from wsiseg.slide.remote import redact

    if staging is not None:
        return staging
    name = hashlib.sha256(redact(out).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "wsiseg-staging" / f"batch-{name}"


def _predict_batch(slides: tuple[str, ...], out: str | None, staging: Path | None,
                   config: PredictConfig, formats: list[str], options: ExportOptions,
                   workers: int | None, scheduler: str | None, quiet: bool) -> None:
    from dataclasses import replace

    from wsiseg.batch.discovery import discover
    from wsiseg.slide.remote import is_url, redact

    # Before anything heavy loads: a folder without slides, or a list that names none, says
    # so at once, and before --out is asked for.
    found = discover(slides)
    if out is None:
        raise click.BadParameter("a batch needs --out DIR for its results and manifest",
                                 param_hint="--out")
    publish_to = None
    if is_url(out):
        from wsiseg.result.publish import bucket_target, check_writable

        publish_to = out if out.endswith("/") else out + "/"
        check_writable(bucket_target(publish_to + "manifest.csv"))
        out = str(_batch_staging(publish_to, staging))
        if not quiet:
            click.echo(f"results are made in {out} and published to {redact(publish_to)}",
                       err=True)
    from wsiseg.batch import BatchConfig, dask_client, predict_slides, summary_table
    batch_config = BatchConfig(
        out_dir=str(out), predict=replace(config, overwrite=False), overwrite=config.overwrite,
        exports=tuple(formats), export_options=options, progress=not quiet,
        publish_to=publish_to,
    )
    on_interrupt(f"finished slides are kept in {out} (see manifest.csv); run the same command "
                 "again to do the rest")
    with dask_client(workers, scheduler) as client:
        result = predict_slides(found, batch_config, client=client)
    if not quiet:
        click.echo(summary_table(result))
    if result.failed:
        raise SystemExit(1)


def _summary(info: ResultInfo) -> str:
    """The result's line (where, how large, how many patches, how fast), a line of the
    reasons to review the slide when its result recorded any, a line of where the time went
    and, when a stage other than the network took longest, a line of what to try."""
    h, w = info.shape
    kept, secs = info.patches_kept, info.seconds
    rate = kept / info.timings["loop"] if info.timings.get("loop") else 0.0
    damaged = (f", {info.damaged_count} damaged region{'' if info.damaged_count == 1 else 's'} "
               f"skipped ({info.damaged_area_mm2:.3g} mm^2)" if info.damaged_count else "")
    line = (
        f"{info.path}: {w} x {h} map at {info.analysis_mpp[0]:.3g} um/px, "
        f"{kept} of {info.patches_total} patches ({rate:.1f} patches/s){damaged}, {secs:.1f} s"
    )
    if info.review:
        line += "\nreview: " + "; ".join(info.review)
    batch = None if info.batch_size is None else f"batch {info.batch_size}"
    ran_on = ", ".join(x for x in (info.device, info.precision, batch) if x)
    line += f"\n{time_line(info.timings, secs)}" + (f"; ran on {ran_on}" if ran_on else "")
    hint = time_hint(info.timings, secs)
    return line + (f"\n{hint}" if hint else "")


@main.command()
@click.argument("slide")
@click.option("--check", "check", is_flag=True, help="A pre-flight check of SLIDE, a folder, glob or list of slides: which reader opens each and why the others do not, its levels and resolution and where that comes from, and a sample of tiles decoded. Exit code 1 when any slide is not ready.")
@handle_errors
def info(slide: str, check: bool) -> None:
    """Show a slide's vendor, levels, resolution and associated images.

    SLIDE is a slide file, a folder holding the .dcm files of one DICOM series, or the URL of
    a slide (s3://, gs://, https://; SVS, generic TIFF or OME-TIFF). With --check it may also
    be a folder, glob or list of slides, as predict takes them.
    """
    if check:
        _check_slides(slide)
        return
    from wsiseg.slide.reader import open_slide

    with open_slide(slide) as s:
        i = s.info()
    click.echo(f"file:            {i.path} ({i.size_bytes / 1e6:.1f} MB)")
    if i.files > 1 or (i.opened and i.opened != i.path):
        click.echo(f"series:          {i.files} DICOM files, opened through {Path(i.opened).name}")
    click.echo(f"vendor:          {i.vendor}")
    if i.image:
        click.echo(f"image:           {i.image}")
    mpp = f"{i.mpp[0]:.4g} x {i.mpp[1]:.4g} um/px" if i.mpp else "unknown (pass --slide-mpp to predict)"
    click.echo(f"mpp (level 0):   {mpp}")
    click.echo(f"objective power: {i.objective_power or 'unknown'}")
    bx, by, bw, bh = i.bounds
    click.echo(f"bounds (level 0): x {bx}, y {by}, {bw} x {bh}")
    click.echo(f"levels:          {i.level_count}")
    for n, ((w, h), d) in enumerate(zip(i.level_dimensions, i.level_downsamples)):
        res = f", {i.mpp[0] * d:.4g} um/px" if i.mpp else ""
        click.echo(f"  level {n}: {w} x {h}, downsample {d:.4g}{res}")
    names = ", ".join(f"{k} ({w} x {h})" for k, (w, h) in i.associated_images.items())
    click.echo(f"associated:      {names or 'none'}")


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("url")
@click.option("--overwrite", is_flag=True, help="Replace results published there already.")
@handle_errors
def publish(results: tuple[Path, ...], url: str, overwrite: bool) -> None:
    """Upload finished RESULTS to a bucket, each in an order that never shows an unfinished
    result: every file but its root zarr.json, checked, then the root zarr.json.

    URL is s3://BUCKET/PREFIX/ (the results keep their names; gs:// too), or, for one result,
    the URL it takes. Publishing a result that is there already uploads nothing.
    """
    from wsiseg.result.publish import bucket_target
    from wsiseg.result.publish import publish as publish_result

    if len(results) > 1 and not url.endswith("/"):
        raise click.BadParameter("several results go to a prefix ending in /", param_hint="URL")
    for result in results:
        name = url + result.name if url.endswith("/") else url
        target = bucket_target(name)
        done = publish_result(result, target, overwrite=overwrite)
        click.echo(f"{target.shown}{'' if done else ' (there already)'}")


def _check_slides(item: str) -> None:
    from wsiseg.batch.discovery import describe_ignored, discover
    from wsiseg.slide.check import check_slide

    found = discover([item])
    counts: dict[str, int] = {}
    for path in found.paths:
        result = check_slide(path)
        counts[result.status] = counts.get(result.status, 0) + 1
        for line in result.lines():
            click.echo(line)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo(f"{len(found.paths)} slide{'' if len(found.paths) == 1 else 's'}: {summary}")
    if found.ignored:
        click.echo(f"ignored: {describe_ignored(found.ignored)}; see wsiseg predict --help for "
                   "the formats read")
    if set(counts) != {"ready"}:
        raise SystemExit(1)


@main.command(name="models")
@handle_errors
def models_cmd() -> None:
    """List the registered networks and the installed trained models."""
    from wsiseg.models import default_card, installed_cards, list_models
    from wsiseg.models.registry import parameter_count

    click.echo("Networks (architectures; need trained weights):")
    for name in list_models():
        n = parameter_count(name)
        card = default_card(name)
        click.echo(f"  {name:<16} {n / 1e6:7.2f}M params, {card.num_classes} classes, "
                   f"{card.mpp:g} um/px, patch {card.patch_size}/{card.stride}")
    cards = installed_cards()
    click.echo("Installed trained models:" + ("" if cards else " none"))
    from wsiseg.models import ModelCard
    from wsiseg.models.loading import default_model_name

    default = default_model_name()
    for name, path in sorted(cards.items()):
        card = ModelCard.from_json(path.read_text(), source=str(path))
        classes = ", ".join(c.name for c in card.classes)
        mark = " (default)" if name == default else ""
        click.echo(f"  {name}{mark}: {card.architecture}, {card.mpp:g} um/px, "
                   f"patch {card.patch_size}/{card.stride}; classes {classes}")


def _register_commands() -> None:
    # The larger commands live in their own modules; they import handle_errors from here.
    from .evaluate import evaluate
    from .export import export
    from .train import train
    from .view import view

    main.add_command(train)
    main.add_command(evaluate)
    main.add_command(export)
    main.add_command(view)


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
