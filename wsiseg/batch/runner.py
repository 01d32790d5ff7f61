"""Many slides into one folder of results: ``predict_slides(paths, config, client=None)``.

Each slide becomes ``OUT/STEM.wsiseg.zarr``. A result only ever appears complete (it is written
under a temporary name and renamed), so a batch killed at any moment is finished by running it
again: complete results are kept (unless ``overwrite``) and the rest are done. A slide that fails
is recorded with its error and the batch goes on.

``OUT/manifest.csv`` (:mod:`wsiseg.batch.manifest`) holds one row per slide and is updated
every time a slide starts or finishes. A slide that was ``started`` when its process died (out
of memory, or a crash inside a slide library) is run last when the batch is run again, so a slide
that kills the process every time cannot keep the rest of the batch from finishing.

Any number of batch processes may share the inputs and ``OUT`` (shells, array jobs, hosts): a
slide is predicted only under its claim (:mod:`wsiseg.batch.claims`), so each slide is computed
once. A slide claimed by a live process elsewhere, or finished by one while this batch ran, is
reported ``elsewhere`` and is no failure; its manifest row is the other process's. A claim left
by a process that died goes stale and is taken over.

Without a client the slides run one after another in this process, with the model loaded once.
With a ``dask.distributed`` client (:mod:`wsiseg.batch.cluster`) there is one task per slide;
each worker process loads the model once and keeps it, uses its own GPU when the host has
several, and a slide whose worker is lost is run again elsewhere by the scheduler. The worker
running a slide takes its claim, marked with this batch's id: a worker that is killed leaves a
claim that goes stale, and the scheduler's retry, being of the same batch, takes it over at
once wherever it runs. Results go straight from the workers to ``OUT``, which must be a
filesystem every worker sees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from wsiseg.batch.claims import ClaimedElsewhere, claim_path, take_claim
from wsiseg.batch.cluster import _cached_model, _worker_setup, _workers_by_host, worker_name
from wsiseg.batch.discovery import output_for, refuse_clashes
from wsiseg.batch.manifest import ELSEWHERE, MANIFEST, Manifest, SlideRecord
from wsiseg.errors import ConfigError, OutputError, WsisegError
from wsiseg.export import ExportOptions, check_formats, export_result, exports_current
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.progress import progress_bar
from wsiseg.result.store import is_complete, open_result
from wsiseg.slide.dicom_series import slide_size_bytes

logger = logging.getLogger(__name__)

#: Settings that must match for an existing result to count as this batch's.
SAME_SETTINGS = ("model", "weights", "patch_size", "stride", "sigma", "target_mpp",
                 "slide_mpp", "tissue_threshold", "probabilities")


@dataclass(frozen=True)
class BatchConfig:
    """How a batch runs: where results go, how each slide is predicted, what is exported."""

    out_dir: str
    predict: PredictConfig = field(default_factory=PredictConfig)
    overwrite: bool = False  # redo slides whose result exists
    exports: tuple[str, ...] = ()
    export_options: ExportOptions = field(default_factory=ExportOptions)
    progress: bool = True


@dataclass
class BatchResult:
    """Each slide's row as this batch saw it (``elsewhere``: another process predicted it, so
    the manifest row is that process's), and the manifest's path."""

    records: list[SlideRecord]
    manifest: Path

    @property
    def failed(self) -> list[SlideRecord]:
        return [r for r in self.records if r.status == "failed"]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts


def predict_slides(paths: Sequence[str | os.PathLike], config: BatchConfig,
                   client: Any = None) -> BatchResult:
    """Predict every slide of ``paths`` into ``config.out_dir``; see the module's docstring.

    ``client`` is a ``dask.distributed.Client``; without one the slides run here, one by one.
    """
    slides = [Path(p) for p in paths]
    if not slides:
        raise ConfigError("no slides to predict")
    config.predict.validate()
    if config.exports:
        check_formats(config.exports)
    out_dir = Path(config.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {out_dir} ({err.strerror or err}); choose another "
                          "--out") from err
    outputs = [output_for(s, out_dir) for s in slides]
    refuse_clashes(slides, outputs)

    records = [SlideRecord(slide=str(s), output=str(o)) for s, o in zip(slides, outputs)]
    manifest = Manifest(out_dir / MANIFEST, records)
    batch = uuid.uuid4().hex
    todo, died_in, seen = [], [], []
    for i, (slide, out) in enumerate(zip(slides, outputs)):
        seen.append(_identity(out))  # a result that differs later was made by another process
        if not config.overwrite and is_complete(out):
            _skip(records[i], slide, out, config)
        elif manifest.died_in(slide):
            died_in.append(i)
        else:
            todo.append(i)
    for i in died_in:
        logger.warning("%s: an earlier run ended while predicting it (out of memory, or a crash "
                       "in a slide library?); it goes last this time", slides[i])
    todo += died_in
    _record_state(manifest.save, out_dir)
    if len(todo) < len(slides):
        logger.info("%d of %d slides have a complete result in %s and are kept",
                    len(slides) - len(todo), len(slides), out_dir)

    task_config = replace(config.predict, overwrite=True,
                          progress=config.progress and client is None)
    try:
        with progress_bar(len(todo), "slides", "slide", config.progress, position=0) as bar:
            if client is None:
                for i in todo:
                    _run_here(i, slides, outputs, task_config, config, records, manifest, batch,
                              seen[i], bar)
            else:
                _run_on_cluster(client, slides, outputs, todo, task_config, config, records,
                                manifest, batch, seen, bar)
    except _BatchStopped:
        raise
    except OutputError as err:  # a claim that cannot be created: no result could be either
        raise _BatchStopped.after(err, out_dir) from err
    return BatchResult(records, manifest.path)


class _BatchStopped(OutputError):
    """An output error that stopped the batch; the message says so and what is kept."""

    @classmethod
    def after(cls, err: OutputError, out_dir: Path) -> _BatchStopped:
        return cls(f"{err}; the batch stopped (finished results stay in {out_dir}: run the "
                   "same command again to do the rest)")


def _record_state(write: Any, out_dir: Path, *args: Any) -> None:
    """Write the manifest; when it cannot be written, stop the batch with one line.

    The batch stops rather than going on unrecorded: a folder that cannot take a small CSV file
    (full disk, quota, read-only or vanished share) will not take the results either, so going
    on would spend hours predicting slides that cannot be written, while neither the other
    processes sharing the folder nor the next run could learn what this one did. Stopping loses
    nothing: a result is published before its row is written (a rerun keeps complete results),
    a failed write leaves the earlier manifest and no temporary file, and claims are released.
    """
    try:
        write(*args)
    except OutputError as err:
        raise _BatchStopped.after(err, out_dir) from err


def _identity(out: Path) -> tuple | None:
    """What tells one result in ``out`` from the one that replaces it (None: nothing there)."""
    try:
        folder = out.stat()
    except OSError:
        return None
    try:
        group = (out / "zarr.json").stat().st_mtime_ns
    except OSError:
        group = None
    return folder.st_ino, folder.st_mtime_ns, group


def _run_here(i, slides, outputs, task_config, config, records, manifest, batch, seen,
              bar) -> None:
    """Predict slide ``i`` in this process under its claim, marking it ``started``."""
    started = False

    def mark_started() -> None:
        nonlocal started
        records[i].status, records[i].worker, started = "started", worker_name(), True
        _record_state(manifest.update, manifest.path.parent, i)

    try:
        record = _claim_and_run(str(slides[i]), str(outputs[i]), task_config, config, None,
                                batch, seen, mark_started)
    except KeyboardInterrupt:  # stopped by the user, not killed by the slide
        if started:
            records[i].status = "pending"
            try:
                manifest.update(i)
            except OutputError as err:
                logger.warning("%s", err)
        raise
    _finish(records, i, record, manifest, bar)


def _claim_and_run(slide: str, output: str, config: PredictConfig, batch_config: BatchConfig,
                   workers_by_host: dict[str, int] | None, batch: str, seen: tuple | None,
                   on_start: Any = None) -> dict[str, Any]:
    """Take the slide's claim, then predict it (:func:`run_slide`) unless another process has
    it or made its result meanwhile; returns its manifest row. ``on_start`` runs once the
    claim is held, before the prediction."""
    try:
        claim = take_claim(claim_path(output), batch=batch, worker=worker_name())
    except ClaimedElsewhere as held:
        return asdict(SlideRecord(slide=slide, status=ELSEWHERE, output=output,
                                  error=f"being predicted by {held.holder.describe()}"
                                  if held.holder else "being predicted by another process",
                                  worker=held.holder.worker if held.holder else ""))
    with claim:
        out = Path(output)
        if is_complete(out) and _identity(out) != seen:
            record = SlideRecord(slide=slide, output=output)
            _skip(record, Path(slide), out, batch_config)
            if record.status == "skipped":
                record.status, record.error = ELSEWHERE, "predicted by another process meanwhile"
            return asdict(record)
        if on_start is not None:
            on_start()
        return run_slide(slide, output, config, batch_config.exports,
                         batch_config.export_options, workers_by_host)


def _slide_task(slide: str, output: str, config: PredictConfig, batch_config: BatchConfig,
                workers_by_host: dict[str, int] | None, batch: str,
                seen: tuple | None) -> dict[str, Any]:
    """What a dask worker runs for one slide: :func:`_claim_and_run`, never raising for a claim
    that cannot be created (that slide fails)."""
    try:
        return _claim_and_run(slide, output, config, batch_config, workers_by_host, batch, seen)
    except WsisegError as err:
        return asdict(SlideRecord(slide=slide, status="failed", error=str(err),
                                  worker=worker_name()))


def _skip(record: SlideRecord, slide: Path, out: Path, config: BatchConfig) -> None:
    """Keep a complete result, if it was made from this slide with these settings."""
    try:
        _, info = open_result(out)
    except WsisegError as err:
        record.status, record.error = "failed", str(err)
        return
    made_with = info.config
    now = asdict(config.predict)
    changed = [k for k in SAME_SETTINGS if made_with.get(k) != now.get(k)]
    if info.tta != config.predict.tta:  # a result from before tta was recorded had none
        changed.append("tta")
    # A map with holes where the slide could not be read is this batch's only if it skips
    # damaged regions too; without damage, the flag changes nothing.
    if info.damaged_count and not config.predict.skip_damaged:
        changed.append("skip_damaged")
    # Name and size, not the full path: a share mounted elsewhere is still the same slide.
    same_slide = (info.slide.path.name == slide.name
                  and info.slide.size_bytes == slide_size_bytes(slide))
    if changed or not same_slide:
        what = f"other settings ({', '.join(changed)})" if changed else "another slide file"
        record.status = "failed"
        record.error = (f"{out} exists and was made from {what}; pass --overwrite to redo it, "
                        "or choose another --out")
        return
    record.status = "skipped"
    record.patches = info.patches_predicted
    record.seconds = info.seconds
    if config.exports and not exports_current(out, config.exports, out.parent,
                                              config.export_options):
        try:  # exports a previous run did not get to
            export_result(out, config.exports, out.parent, config.export_options)
        except WsisegError as err:
            record.status, record.error = "failed", f"export: {err}"


def _finish(records: list[SlideRecord], i: int, record: dict[str, Any], manifest: Manifest,
            bar: Any) -> None:
    records[i] = SlideRecord(**record)
    r = records[i]
    if r.status == "failed":
        r.output = ""  # nothing was written there
        logger.error("%s", r.error if r.slide in r.error else f"{r.slide}: {r.error}")
    elif r.status == ELSEWHERE:
        logger.info("%s: %s", r.slide, r.error)
    _record_state(manifest.update, manifest.path.parent, i)  # an elsewhere row is not written
    bar.update(1)


def _run_on_cluster(client, slides, outputs, todo, task_config, config, records, manifest,
                    batch, seen, bar) -> None:
    from distributed import as_completed

    per_host = _workers_by_host(client)
    futures = {}
    for i in todo:
        future = client.submit(
            _slide_task, str(slides[i]), str(outputs[i]), task_config, config, per_host, batch,
            seen[i], key=f"wsiseg-{i}-{slides[i].stem}-{batch[:8]}", pure=False,
        )
        futures[future] = i
    try:
        for future in as_completed(futures):
            i = futures[future]
            try:
                record = future.result()
            except Exception as err:  # the task never returned: its workers kept dying
                record = asdict(records[i])
                record.update(status="failed", error=f"{type(err).__name__}: {err} (the worker "
                              "running this slide was lost repeatedly; check its memory)")
            _finish(records, i, record, manifest, bar)
    except BaseException:  # the batch stops: slides not started yet are not started
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        raise


# --- what runs for each slide, here or on a worker ------------------------------------------

def run_slide(slide: str, output: str, config: PredictConfig, exports: Sequence[str] = (),
              export_options: ExportOptions | None = None,
              workers_by_host: dict[str, int] | None = None) -> dict[str, Any]:
    """Predict (and export) one slide; returns its manifest row. Never raises for a bad slide.

    It takes no claim: :func:`predict_slides` calls it with the slide's claim held.
    """
    started = time.perf_counter()
    config, worker = _worker_setup(config, workers_by_host)
    record = SlideRecord(slide=slide, output=output, worker=worker)
    try:
        model = _cached_model(config)
        info = predict_slide(slide, replace(config, out=output), model=model)
        record.patches = info.patches_predicted
        if exports:
            export_result(info.path, exports, Path(output).parent, export_options)
        record.status = "done"
    except WsisegError as err:
        record.status, record.error = "failed", str(err)
    except Exception as err:  # a slide that breaks a library below us must not end the batch
        record.status, record.error = "failed", f"unexpected {type(err).__name__}: {err}"
        logger.debug("%s failed", slide, exc_info=True)
    record.seconds = round(time.perf_counter() - started, 3)
    return asdict(record)


# --- the summary ------------------------------------------------------------------------

def summary_table(result: BatchResult) -> str:
    """A plain-text table of the batch, one line per slide, and the counts."""
    rows = [("slide", "status", "patches", "seconds", "error")]
    for r in result.records:
        rows.append((Path(r.slide).name, r.status, "" if r.patches is None else str(r.patches),
                     "" if r.seconds is None else f"{r.seconds:.1f}", r.error))
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4]
             for row in rows]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts().items()))
    lines.append(f"{len(result.records)} slides: {counts}; manifest {result.manifest}")
    return "\n".join(line.rstrip() for line in lines)
