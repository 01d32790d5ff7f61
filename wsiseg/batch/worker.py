"""What runs for each slide of a batch, in this process or on a dask worker.

A :class:`SlideTask` is one slide's work, all it needs in one picklable object: the batch's
settings, the slide's claim is taken (:func:`claim_and_run`) and the slide predicted and exported
(:func:`run_slide`), its manifest row returned. Each process keeps what it loaded: the model for
the following slides (:func:`cached_model`); on a dask worker, :func:`worker_setup` gives torch
the worker's share of the host's cores and a GPU of its own when the host has several.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from wsiseg.batch.claims import ClaimedElsewhere, claim_path, take_claim
from wsiseg.batch.config import BatchConfig
from wsiseg.batch.discovery import metadata_mpp
from wsiseg.batch.manifest import ELSEWHERE, SlideRecord
from wsiseg.batch.signals import Terminated, running_slide
from wsiseg.errors import WsisegError
from wsiseg.export import ExportOptions, export_result, exports_current
from wsiseg.inference.config import PredictConfig, changed_settings
from wsiseg.inference.pipeline import load_configured_model, predict_slide, usable_cores
from wsiseg.result.integrity import is_complete
from wsiseg.result.store import open_result
from wsiseg.slide.reader import slide_bytes
from wsiseg.slide.remote import slide_location

if TYPE_CHECKING:
    from wsiseg.models import LoadedModel

logger = logging.getLogger(__name__)

#: The error of a slide whose worker was stopped while predicting it (its row is ``pending``).
STOPPED = "its worker was stopped while predicting it"

#: What tells one result in a folder from the one that replaces it (None: nothing there).
Identity = tuple[int, int, int | None] | None


@dataclass(frozen=True)
class SlideTask:
    """One slide of a batch: where it is, where its result goes, how, and what the batch knew."""

    slide: str
    output: str
    #: How the slide is predicted (``overwrite`` set: the claim decides, not the folder).
    config: PredictConfig
    batch_config: BatchConfig
    #: The batch's id: a claim of the same batch, left by a lost worker, is taken over at once.
    batch: str
    #: The result's identity when the batch began: one that differs was made by another process.
    seen: Identity
    #: Workers per host, on a cluster: each takes its share of its host's cores.
    workers_by_host: dict[str, int] | None = None
    #: The slide's level-0 um/px from a CSV list (None: its metadata's, else the batch's
    #: ``config.slide_mpp`` when its metadata has none).
    slide_mpp: float | None = None


def result_identity(out: Path) -> Identity:
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


def claim_and_run(task: SlideTask, on_start: Callable[[], None] | None = None
                  ) -> dict[str, Any]:
    """Take the slide's claim, then predict it (:func:`run_slide`) unless another process has
    it or made its result meanwhile; returns its manifest row. ``on_start`` runs once the
    claim is held, before the prediction."""
    slide, output = task.slide, task.output
    try:
        claim = take_claim(claim_path(output), batch=task.batch, worker=worker_name())
    except ClaimedElsewhere as held:
        return asdict(SlideRecord(slide=slide, status=ELSEWHERE, output=output,
                                  error=f"being predicted by {held.holder.describe()}"
                                  if held.holder else "being predicted by another process",
                                  worker=held.holder.worker if held.holder else ""))
    with claim:
        out = Path(output)
        if is_complete(out) and result_identity(out) != task.seen:
            record = SlideRecord(slide=slide, output=output)
            keep_existing(record, slide_location(slide), out, task.batch_config, task.slide_mpp)
            if record.status == "skipped":
                record.status, record.error = ELSEWHERE, "predicted by another process meanwhile"
            return asdict(record)
        if on_start is not None:
            on_start()
        return run_slide(slide, output, task.config, task.batch_config.exports,
                         task.batch_config.export_options, task.workers_by_host,
                         slide_mpp=task.slide_mpp)


def slide_task(task: SlideTask) -> dict[str, Any]:
    """What a dask worker runs for one slide: :func:`claim_and_run`, never raising for a claim
    that cannot be created (that slide fails). A worker that is stopped meanwhile
    (:func:`~wsiseg.batch.signals.interrupt_slides`) removes the slide's partial result,
    releases its claim and returns the slide's row as ``pending``, for the batch to run it
    again if it goes on."""
    try:
        with running_slide(task.slide):
            return claim_and_run(task)
    except Terminated:
        return asdict(SlideRecord(slide=task.slide, status="pending", output=task.output,
                                  error=STOPPED, worker=worker_name()))
    except WsisegError as err:
        return asdict(SlideRecord(slide=task.slide, status="failed", error=str(err),
                                  worker=worker_name()))


def keep_existing(record: SlideRecord, slide: Path, out: Path, config: BatchConfig,
                  slide_mpp: float | None = None) -> None:
    """Keep a complete result, if it was made from this slide with these settings
    (``slide_mpp``: the slide's resolution from a CSV list)."""
    try:
        _, info = open_result(out)
    except WsisegError as err:
        record.status, record.error = "failed", str(err)
        return
    recorded = info.config.get("slide_mpp")
    if slide_mpp is None and recorded is None and info.slide.mpp_source == "metadata":
        # Made from the slide's metadata, which this same file still has: the batch's
        # --slide-mpp is only for slides without one.
        slide_mpp_now = None
    else:
        slide_mpp_now = slide_mpp if slide_mpp is not None else config.predict.slide_mpp
    expected = replace(config.predict, slide_mpp=slide_mpp_now)
    changed = changed_settings(info.config, expected, damaged=info.damaged_count > 0)
    # Name and size, not the full path: a share mounted elsewhere is still the same slide.
    same_slide = (info.slide.path.name == slide.name
                  and info.slide.size_bytes == slide_bytes(slide))
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


def run_slide(slide: str, output: str, config: PredictConfig, exports: Sequence[str] = (),
              export_options: ExportOptions | None = None,
              workers_by_host: dict[str, int] | None = None, *,
              slide_mpp: float | None = None) -> dict[str, Any]:
    """Predict (and export) one slide; returns its manifest row. Never raises for a bad slide.

    ``slide_mpp`` is the slide's own resolution (from a CSV list), used as ``--slide-mpp`` is
    for one slide; without it, ``config.slide_mpp`` applies only if the slide's metadata has
    no resolution (:func:`batch_slide_mpp`). The slide is opened before the model is loaded,
    so a file that is no slide fails without loading torch. It takes no claim:
    :func:`predict_slides` calls it with the slide's claim held.
    """
    started = time.perf_counter()
    config, worker = worker_setup(config, workers_by_host)
    record = SlideRecord(slide=slide, output=output, worker=worker)
    try:
        config = replace(config, slide_mpp=batch_slide_mpp(slide, config, slide_mpp))
        model = cached_model(config)
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


def batch_slide_mpp(slide: str, config: PredictConfig, listed: float | None) -> float | None:
    """The ``slide_mpp`` a slide of a batch is predicted with: ``listed`` (its own, from a
    list) when given, else the batch's ``config.slide_mpp`` if the slide's metadata has no
    resolution, else None (its metadata's). Opens the slide: one that is no slide, or has no
    resolution from anywhere, is refused here."""
    if listed is not None:
        metadata_mpp(slide, skip_damaged=config.skip_damaged)
        return listed
    found = metadata_mpp(slide, skip_damaged=config.skip_damaged,
                         required=config.slide_mpp is None)
    return config.slide_mpp if found is None else None


# --- what each process keeps, here or on a worker ---------------------------------------------

_MODELS: dict[tuple[str | None, str | None, bool], LoadedModel] = {}


def cached_model(config: PredictConfig) -> LoadedModel:
    """The model, loaded once per process and kept for the following slides. Whether code is
    trusted is part of the key: a TorchScript model loaded for a batch that trusts it is never
    handed to one that does not."""
    from wsiseg.models.loading import trusts_code

    key = (config.model, config.weights, trusts_code(config.trust_code))
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_configured_model(config)
    return _MODELS[key]


_HEAP_SET = False


def keep_large_blocks_on_the_heap() -> None:
    """Undo, in this worker process, what dask's ``MALLOC_TRIM_THRESHOLD_`` does to inference.

    dask's nanny starts workers with that variable set (to hand freed memory back to the
    system sooner), and setting it also stops glibc from raising its mmap threshold: every
    large tensor is then mapped, unmapped and its pages zeroed again at each batch, which made
    a CPU worker 35% slower than the same slide in a plain process. Setting the thresholds to
    glibc's own upper limits brings the speed back; memory is still given back when freed
    blocks at the top of the heap pass the trim threshold.
    """
    global _HEAP_SET
    if (_HEAP_SET or "MALLOC_TRIM_THRESHOLD_" not in os.environ
            or not sys.platform.startswith("linux")):
        return
    _HEAP_SET = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 2**20)  # glibc's largest dynamic threshold
        libc.mallopt(m_trim_threshold, 64 * 2**20)
    except (OSError, AttributeError):  # not glibc (musl, say): leave the allocator as it is
        pass


class DaskWorker(Protocol):
    """What a batch asks of a ``distributed.Worker`` (which distributed leaves unannotated)."""

    @property
    def name(self) -> str | int: ...

    @property
    def address(self) -> str: ...


def current_worker() -> DaskWorker | None:
    """The dask worker running this code, or None outside a dask task."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def worker_name() -> str:
    """Who predicts here, as the manifest's ``worker`` column says it: ``NAME@HOST`` on a dask
    worker, ``pid-PID@HOST`` in a plain process (several may share a host and a folder)."""
    worker = current_worker()
    if worker is None:
        return f"pid-{os.getpid()}@{socket.gethostname()}"
    return f"{worker.name}@{worker_host(worker)}"


def worker_host(worker: DaskWorker) -> str:
    return worker.address.split("://")[-1].rsplit(":", 1)[0]


def worker_setup(config: PredictConfig, per_host: dict[str, int] | None
                  ) -> tuple[PredictConfig, str]:
    """On a dask worker: its name, its share of the host's cores for torch, and a GPU of its
    own when the host has several."""
    worker = current_worker()
    if worker is None:
        return config, worker_name()
    import torch

    keep_large_blocks_on_the_heap()
    host = worker_host(worker)
    sharing = (per_host or {}).get(host, 1)
    share = max(1, usable_cores() // sharing)
    torch.set_num_threads(share)
    config = replace(config, threads=config.threads or share)  # reader threads too
    if config.device == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        try:
            index = int(str(worker.name).rsplit("-", 1)[-1])
        except ValueError:
            index = abs(hash(worker.address))
        config = replace(config, device=f"cuda:{index % torch.cuda.device_count()}")
    return config, worker_name()
