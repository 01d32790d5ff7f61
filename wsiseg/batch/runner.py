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
What runs for each slide is :mod:`wsiseg.batch.worker`'s. With a ``dask.distributed`` client
(:mod:`wsiseg.batch.cluster`) there is one task per slide;
each worker process loads the model once and keeps it, uses its own GPU when the host has
several, and a slide whose worker is lost is run again elsewhere by the scheduler. The worker
running a slide takes its claim, marked with this batch's id: a worker that is killed leaves a
claim that goes stale, and the scheduler's retry, being of the same batch, takes it over at
once wherever it runs. Results go straight from the workers to ``OUT``, which must be a
filesystem every worker sees.

With ``config.publish_to`` (a bucket prefix), ``OUT`` is a local staging folder: the batch runs
there as above, and each result, once finished (or kept from an earlier run), is published to
the bucket with its exports (:mod:`wsiseg.result.publish`: its root ``zarr.json`` last), then
``manifest.csv`` is uploaded, its rows naming the results' URLs. A result that cannot be
uploaded fails its slide and stays in the staging folder; running the same command again
publishes it. The staging folder keeps the batch's state, so it is kept after the batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsiseg.batch.cluster import workers_by_host
from wsiseg.batch.config import BatchConfig
from wsiseg.batch.discovery import FoundSlides, describe_ignored, output_for, refuse_clashes
from wsiseg.batch.manifest import ELSEWHERE, MANIFEST, REVIEW_SEPARATOR, Manifest, SlideRecord
from wsiseg.batch.signals import interrupt_slides
from wsiseg.batch.worker import (
    STOPPED,
    Identity,
    SlideTask,
    claim_and_run,
    keep_existing,
    result_identity,
    slide_task,
    worker_name,
)
from wsiseg.errors import ConfigError, OutputError, WsisegError
from wsiseg.export import export_files, result_stem
from wsiseg.progress import ProgressBar, progress_bar
from wsiseg.result.integrity import is_complete
from wsiseg.result.publish import bucket_target, publish_with_exports, upload_file
from wsiseg.result.review import recorded_review

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

__all__ = ["BatchConfig", "BatchResult", "predict_slides", "summary_table"]


@dataclass
class BatchResult:
    """Each slide's row as this batch saw it (``elsewhere``: another process predicted it, so
    the manifest row is that process's), the manifest's path, and the entries of the folders
    searched that were not taken as slides (no rows: they are not slides)."""

    records: list[SlideRecord]
    manifest: Path
    ignored: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[SlideRecord]:
        return [r for r in self.records if r.status == "failed"]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts


def predict_slides(paths: Sequence[str | os.PathLike[str]] | FoundSlides, config: BatchConfig,
                   client: Client | None = None) -> BatchResult:
    """Predict every slide of ``paths`` into ``config.out_dir``; see the module's docstring.

    ``paths`` are slide paths, or what :func:`~wsiseg.batch.discovery.discover` found: then
    each slide's resolution from a CSV list is used, and the files left out are in the
    result. ``config.predict.slide_mpp`` is, in a batch, the resolution of the slides whose
    metadata has none; a slide with one keeps it. ``client`` is a
    ``dask.distributed.Client``; without one the slides run here, one by one.
    """
    found = paths if isinstance(paths, FoundSlides) else FoundSlides(
        tuple(Path(p) for p in paths))
    slides = list(found.paths)
    if not slides:
        raise ConfigError("no slides to predict")
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
    todo, died_in, seen = [], [], []
    for i, (slide, out) in enumerate(zip(slides, outputs)):
        seen.append(result_identity(out))  # a result that differs later was made by another process
        if not config.overwrite and is_complete(out):
            keep_existing(records[i], slide, out, config, found.mpp[i])
            note_review(records[i])
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

    try:
        with progress_bar(len(todo), "slides", "slide", config.progress, position=0) as bar:
            run = _Batch(slides, list(found.mpp), outputs, seen, config, records, manifest,
                         bar, local=client is None)
            kept = [i for i in range(len(slides)) if i not in todo]
            for i in kept:  # kept results an earlier run may not have got to publish
                run.publish(i)
            if kept:
                run.save_manifest()
            if client is None:
                for i in todo:
                    run.run_here(i)
            else:
                run.run_on_cluster(client, todo)
    except _BatchStopped:
        raise
    except OutputError as err:  # a claim that cannot be created: no result could be either
        raise _BatchStopped.after(err, out_dir) from err
    return BatchResult(records, manifest.path, list(found.ignored))


def note_review(record: SlideRecord) -> None:
    """Fill ``record.review`` with the reasons to review the slide that its result recorded
    when published (a row of a result that is not there, or that recorded none: empty)."""
    if record.status not in ("done", "skipped") or not record.output:
        return
    try:
        reasons = recorded_review(record.output)
    except WsisegError as err:  # the result is there, so this is unexpected: said, not fatal
        logger.warning("%s: its reasons to review are not read: %s", record.slide, err)
        return
    record.review = REVIEW_SEPARATOR.join(reasons or ())


#: How many times a slide whose worker was stopped is run again on another worker.
_RERUNS_WHEN_STOPPED = 3


class _BatchStopped(OutputError):
    """An output error that stopped the batch; the message says so and what is kept."""

    @classmethod
    def after(cls, err: OutputError, out_dir: Path) -> _BatchStopped:
        return cls(f"{err}; the batch stopped (finished results stay in {out_dir}: run the "
                   "same command again to do the rest)")


def _record_state(write: Callable[..., None], out_dir: Path, *args: Any) -> None:
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


@dataclass
class _Batch:
    """A running batch: its slides, what it knew of their results when it began, and the
    records it keeps in the manifest as their tasks finish."""

    slides: list[Path]
    #: Each slide's level-0 um/px from a CSV list, else None.
    mpp: list[float | None]
    outputs: list[Path]
    seen: list[Identity]
    config: BatchConfig
    records: list[SlideRecord]
    manifest: Manifest
    bar: ProgressBar
    #: Slides run in this process (else on a cluster).
    local: bool
    #: This batch's id, in every claim it takes.
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or uuid.uuid4().hex

    def task(self, i: int, per_host: dict[str, int] | None = None) -> SlideTask:
        # The claim decides whether a result is redone, so a task overwrites; a slide's own
        # progress bar only where the batch's is not shared with other processes.
        predict = replace(self.config.predict, overwrite=True,
                          progress=self.config.progress and self.local)
        return SlideTask(str(self.slides[i]), str(self.outputs[i]), predict, self.config,
                         self.id, self.seen[i], per_host, slide_mpp=self.mpp[i])

    def run_here(self, i: int) -> None:
        """Predict slide ``i`` in this process under its claim, marking it ``started``."""
        records, manifest = self.records, self.manifest
        started = False

        def mark_started() -> None:
            nonlocal started
            records[i].status, records[i].worker, started = "started", worker_name(), True
            _record_state(manifest.update, manifest.path.parent, i)

        try:
            record = claim_and_run(self.task(i), mark_started)
        except KeyboardInterrupt:  # stopped by the user, not killed by the slide
            if started:
                records[i].status = "pending"
                try:
                    manifest.update(i)
                except OutputError as err:
                    logger.warning("%s", err)
            raise
        self.finish(i, record)

    def run_on_cluster(self, client: Client, todo: list[int]) -> None:
        """Run the slides ``todo`` as one task each on the cluster of ``client``."""
        from distributed import as_completed

        from wsiseg.batch.worker_plugin import NAME, CleanStop

        per_host = workers_by_host(client)
        client.register_plugin(CleanStop(), name=NAME)
        futures = {}
        for i in todo:
            key = f"wsiseg-{i}-{self.slides[i].stem}-{self.id[:8]}"
            futures[client.submit(slide_task, self.task(i, per_host), key=key, pure=False)] = i
        # distributed leaves as_completed and Client.cancel unannotated.
        stopped = dict.fromkeys(todo, 0)
        try:
            done = as_completed(futures)  # type: ignore[no-untyped-call]
            for future in done:
                i = futures[future]
                try:
                    record = future.result()
                except Exception as err:  # noqa: BLE001  the task never returned: its workers kept dying
                    record = asdict(self.records[i])
                    record.update(status="failed", error=f"{type(err).__name__}: {err} (the "
                                  "worker running this slide was lost repeatedly; check its "
                                  "memory)")
                if record["error"] == STOPPED and stopped[i] < _RERUNS_WHEN_STOPPED:
                    # Its worker was stopped (SIGTERM) and cleaned up: run it on another.
                    stopped[i] += 1
                    again = client.submit(slide_task, self.task(i, per_host), pure=False,
                                          key=f"{future.key}-again{stopped[i]}")
                    futures[again] = i
                    done.add(again)  # type: ignore[no-untyped-call]
                    continue
                self.finish(i, record)
        except BaseException as err:  # the batch stops: slides not started yet are not started
            with contextlib.suppress(Exception):
                client.cancel(list(futures))  # type: ignore[no-untyped-call]
            if isinstance(err, KeyboardInterrupt):  # Ctrl-C or SIGTERM: running slides too
                with contextlib.suppress(Exception):
                    client.run(interrupt_slides)
            raise

    def finish(self, i: int, record: dict[str, Any]) -> None:
        self.records[i] = r = SlideRecord(**record)
        note_review(r)  # from the result here, before publishing moves its output
        if r.status == "failed":
            r.output = ""  # nothing was written there
            logger.error("%s", r.error if r.slide in r.error else f"{r.slide}: {r.error}")
        elif r.status == ELSEWHERE:
            logger.info("%s: %s", r.slide, r.error)
        self.publish(i)
        # An elsewhere row is not written: it is the other process's.
        self.save_manifest(i)
        self.bar.update(1)

    def save_manifest(self, i: int | None = None) -> None:
        """Write row ``i`` of the manifest (all rows: None), and upload it when the batch
        publishes to a bucket (a failed upload is a warning: the next one replaces it)."""
        if i is None:
            _record_state(self.manifest.save, self.manifest.path.parent)
        else:
            _record_state(self.manifest.update, self.manifest.path.parent, i)
        if self.config.publish_to is None:
            return
        try:
            upload_file(self.manifest.path, bucket_target(self.config.publish_to + MANIFEST))
        except OutputError as err:
            logger.warning("%s", err)

    def publish(self, i: int) -> None:
        """Publish slide ``i``'s finished (or kept) result and its exports to the bucket, if
        the batch publishes; a failed upload fails the slide, its result kept here."""
        r = self.records[i]
        if self.config.publish_to is None or r.status not in ("done", "skipped"):
            return
        local = self.outputs[i]
        exports = [local.parent / name for name in export_files(
            result_stem(local), self.config.exports, self.config.export_options)]
        try:
            target = bucket_target(self.config.publish_to + local.name)
            publish_with_exports(local, target, exports, overwrite=self.config.overwrite)
        except OutputError as err:
            r.status, r.error = "failed", (f"{err}; its result stays in {local}: run the same "
                                           "command again to publish it")
            logger.error("%s: %s", r.slide, r.error)
            return
        r.output = target.shown


# --- the summary ------------------------------------------------------------------------

def summary_table(result: BatchResult) -> str:
    """A plain-text table of the batch, one line per slide, the counts, and the slides to
    review with the first reason of each (at most :data:`REVIEW_LINES` of them)."""
    rows = [("slide", "status", "patches", "seconds", "error")]
    for r in result.records:
        rows.append((Path(r.slide).name, r.status, "" if r.patches is None else str(r.patches),
                     "" if r.seconds is None else f"{r.seconds:.1f}", r.error))
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4]
             for row in rows]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts().items()))
    lines.append(f"{len(result.records)} slides: {counts}; manifest {result.manifest}")
    lines += review_lines(result)
    if result.ignored:
        lines.append(f"ignored: {describe_ignored(result.ignored)}; see wsiseg predict --help "
                     "for the formats read")
    return "\n".join(line.rstrip() for line in lines)


#: The most slides to review that the summary lists; the manifest has them all.
REVIEW_LINES = 10


def review_lines(result: BatchResult) -> list[str]:
    """``to review: N slides`` and one line per slide, ``NAME: first reason``, at most
    :data:`REVIEW_LINES` of them, then how many more the manifest lists; none when no slide
    of the batch is to be reviewed."""
    flagged = [r for r in result.records if r.review_reasons]
    if not flagged:
        return []
    lines = [f"to review: {len(flagged)} slide{'' if len(flagged) == 1 else 's'}"]
    lines += [f"  {Path(r.slide).name}: {r.review_reasons[0]}" for r in flagged[:REVIEW_LINES]]
    if len(flagged) > REVIEW_LINES:
        lines.append(f"  ... and {len(flagged) - REVIEW_LINES} more; see {MANIFEST}")
    return lines
