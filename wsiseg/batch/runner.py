"""Many slides into one folder of results: ``predict_slides(paths, config, client=None)``.

Each slide becomes ``OUT/STEM.wsiseg.zarr``. A result only ever appears complete (it is written
under a temporary name and renamed), so a batch killed at any moment is finished by running it
again: complete results are kept (unless ``overwrite``) and the rest are done. A slide that fails
is recorded with its error and the batch goes on.

``OUT/manifest.csv`` holds one row per slide (status, error, output, patches, seconds, worker)
and is rewritten, atomically, every time a slide starts or finishes; rows of slides from earlier
batches into the same folder are kept. A slide that was ``started`` when its process died (out
of memory, or a crash inside a slide library) is run last when the batch is run again, so a slide
that kills the process every time cannot keep the rest of the batch from finishing.

Without a client the slides run one after another in this process, with the model loaded once.
With a ``dask.distributed`` client there is one task per slide; each worker process loads the
model once and keeps it, uses its own GPU when the host has several, and a slide whose worker is
lost is run again elsewhere by the scheduler. Results go straight from the workers to ``OUT``,
which must be a filesystem every worker sees.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from wsiseg.errors import ConfigError, OutputError, WsisegError
from wsiseg.export import ExportOptions, check_formats, export_result, exports_current
from wsiseg.inference.pipeline import PredictConfig, load_configured_model, predict_slide
from wsiseg.progress import progress_bar
from wsiseg.result.store import is_complete, open_result

logger = logging.getLogger(__name__)

#: File name endings taken from a folder (OpenSlide's formats).
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs",
                  ".svslide", ".bif", ".dcm")
#: Text files that list slides, one path per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
MANIFEST = "manifest.csv"
FIELDS = ("slide", "status", "error", "output", "patches", "seconds", "worker")
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
class SlideRecord:
    """One manifest row."""

    slide: str
    status: str = "pending"  # pending, started, done, skipped or failed
    error: str = ""
    output: str = ""
    patches: int | None = None
    seconds: float | None = None
    worker: str = ""


@dataclass
class BatchResult:
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


def find_slides(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Slides named by ``inputs``: files, folders (their slide files), globs and list files.

    A list file (``.txt``) holds one path per line, relative to the list's folder; blank lines
    and lines starting with ``#`` are skipped. A listed file that does not exist is kept, so
    that it is recorded as failed; a folder, glob or list that finds nothing is an error.
    """
    found: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if any(ch in text for ch in "*?[") and not path.exists():
            matches = [Path(p) for p in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
            matches = [p for p in matches if p.is_file()]
            if not matches:
                raise ConfigError(f"{text}: the pattern matches no slide; check the path")
            found += matches
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir()
                             if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
            if not matches:
                raise ConfigError(f"{path}: folder holds no slide ({', '.join(SLIDE_SUFFIXES)}); "
                                  "give the folder of slides or the files themselves")
            found += matches
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            listed = _read_list(path)
            if not listed:
                raise ConfigError(f"{path}: the list names no slide; put one path per line")
            found += listed
        elif path.exists():
            found.append(path)
        else:
            raise ConfigError(f"{path} does not exist; check the path")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the list of slides ({err})") from err
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def output_for(slide: Path, out_dir: Path) -> Path:
    return out_dir / f"{slide.stem}.wsiseg.zarr"


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
    _refuse_clashes(slides, outputs)

    records = [SlideRecord(slide=str(s), output=str(o)) for s, o in zip(slides, outputs)]
    manifest = Manifest(out_dir / MANIFEST, records)
    todo, died_in = [], []
    for i, (slide, out) in enumerate(zip(slides, outputs)):
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
    manifest.save()
    if len(todo) < len(slides):
        logger.info("%d of %d slides have a complete result in %s and are kept",
                    len(slides) - len(todo), len(slides), out_dir)

    task_config = replace(config.predict, overwrite=True,
                          progress=config.progress and client is None)
    with progress_bar(len(todo), "slides", "slide", config.progress, position=0) as bar:
        if client is None:
            for i in todo:
                records[i].status = "started"
                manifest.save()
                try:
                    record = run_slide(str(slides[i]), str(outputs[i]), task_config,
                                       config.exports, config.export_options)
                except KeyboardInterrupt:  # stopped by the user, not killed by the slide
                    records[i].status = "pending"
                    manifest.save()
                    raise
                _finish(records, i, record, manifest, bar)
        else:
            _run_on_cluster(client, slides, outputs, todo, task_config, config, records,
                            manifest, bar)
    return BatchResult(records, manifest.path)


def _refuse_clashes(slides: list[Path], outputs: list[Path]) -> None:
    seen: dict[Path, Path] = {}
    for slide, out in zip(slides, outputs):
        if out in seen:
            raise ConfigError(f"{seen[out]} and {slide} would both write {out.name}; rename one, "
                              "or run them into different --out folders")
        seen[out] = slide


def _skip(record: SlideRecord, slide: Path, out: Path, config: BatchConfig) -> None:
    """Keep a complete result, if it was made from this slide with these settings."""
    try:
        _, attrs = open_result(out)
    except WsisegError as err:
        record.status, record.error = "failed", str(err)
        return
    made_with = attrs.get("config", {})
    now = asdict(config.predict)
    changed = [k for k in SAME_SETTINGS if made_with.get(k) != now.get(k)]
    recorded_slide = attrs.get("slide", {})
    # Name and size, not the full path: a share mounted elsewhere is still the same slide.
    same_slide = (Path(recorded_slide.get("path", "")).name == slide.name and slide.is_file()
                  and recorded_slide.get("size_bytes") == slide.stat().st_size)
    if changed or not same_slide:
        what = f"other settings ({', '.join(changed)})" if changed else "another slide file"
        record.status = "failed"
        record.error = (f"{out} exists and was made from {what}; pass --overwrite to redo it, "
                        "or choose another --out")
        return
    record.status = "skipped"
    record.patches = attrs.get("patches_predicted")
    record.seconds = attrs.get("seconds")
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
    manifest.save()
    bar.update(1)


def _run_on_cluster(client, slides, outputs, todo, task_config, config, records, manifest,
                    bar) -> None:
    from distributed import as_completed

    per_host = _workers_by_host(client)
    futures = {}
    for i in todo:
        future = client.submit(
            run_slide, str(slides[i]), str(outputs[i]), task_config, config.exports,
            config.export_options, per_host, key=f"wsiseg-{i}-{slides[i].stem}", pure=False,
        )
        futures[future] = i
    for future in as_completed(futures):
        i = futures[future]
        try:
            record = future.result()
        except Exception as err:  # the task never returned: its workers kept dying
            record = asdict(records[i])
            record.update(status="failed", error=f"{type(err).__name__}: {err} (the worker "
                          "running this slide was lost repeatedly; check its memory)")
        _finish(records, i, record, manifest, bar)


def _workers_by_host(client) -> dict[str, int]:
    """How many workers share each host (each then takes its share of the host's cores)."""
    import inspect

    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    else:
        workers = client.scheduler_info()["workers"]
    per_host: dict[str, int] = {}
    for info in workers.values():
        per_host[info.get("host", "")] = per_host.get(info.get("host", ""), 0) + 1
    return per_host


# --- what runs for each slide, here or on a worker ------------------------------------------

_MODELS: dict[tuple, Any] = {}


def _cached_model(config: PredictConfig) -> Any:
    """The model, loaded once per process and kept for the following slides."""
    key = (config.model, config.weights)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_configured_model(config)
    return _MODELS[key]


_HEAP_SET = False


def _keep_large_blocks_on_the_heap() -> None:
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


def _worker_setup(config: PredictConfig, per_host: dict[str, int] | None
                  ) -> tuple[PredictConfig, str]:
    """On a dask worker: its name, its share of the host's cores for torch, and a GPU of its
    own when the host has several."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return config, socket.gethostname()
    import torch

    _keep_large_blocks_on_the_heap()
    host = worker.address.split("://")[-1].rsplit(":", 1)[0]
    sharing = (per_host or {}).get(host, 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, (cores or 1) // sharing))
    if config.device == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        try:
            index = int(str(worker.name).rsplit("-", 1)[-1])
        except ValueError:
            index = abs(hash(worker.address))
        config = replace(config, device=f"cuda:{index % torch.cuda.device_count()}")
    return config, f"{worker.name}@{host}"


def run_slide(slide: str, output: str, config: PredictConfig, exports: Sequence[str] = (),
              export_options: ExportOptions | None = None,
              workers_by_host: dict[str, int] | None = None) -> dict[str, Any]:
    """Predict (and export) one slide; returns its manifest row. Never raises for a bad slide."""
    started = time.perf_counter()
    config, worker = _worker_setup(config, workers_by_host)
    record = SlideRecord(slide=slide, output=output, worker=worker)
    try:
        model = _cached_model(config)
        result = predict_slide(slide, replace(config, out=output), model=model)
        _, attrs = open_result(result)
        record.patches = attrs.get("patches_predicted")
        if exports:
            export_result(result, exports, Path(output).parent, export_options)
        record.status = "done"
    except WsisegError as err:
        record.status, record.error = "failed", str(err)
    except Exception as err:  # a slide that breaks a library below us must not end the batch
        record.status, record.error = "failed", f"unexpected {type(err).__name__}: {err}"
        logger.debug("%s failed", slide, exc_info=True)
    record.seconds = round(time.perf_counter() - started, 3)
    return asdict(record)


# --- the manifest and the summary ------------------------------------------------------------

class Manifest:
    """``manifest.csv`` of an output folder: this batch's ``records`` (updated in place by the
    batch) after the rows of other slides that earlier batches left there."""

    def __init__(self, path: Path, records: list[SlideRecord]) -> None:
        self.path, self.records = path, records
        earlier: list[SlideRecord] = []
        if path.is_file():
            try:
                earlier = read_manifest(path)
            except (OSError, KeyError, ValueError, csv.Error) as err:
                logger.warning("%s cannot be read (%s); a new one is written", path, err)
        # One result per stem in a folder, so a stem names a slide's row whatever the path.
        ours = {Path(r.slide).stem for r in records}
        self._earlier = {Path(r.slide).stem: r for r in earlier}
        self.others = [r for r in earlier if Path(r.slide).stem not in ours]

    def died_in(self, slide: Path) -> bool:
        """Whether an earlier run ended while predicting ``slide``."""
        row = self._earlier.get(slide.stem)
        return row is not None and row.status == "started"

    def save(self) -> None:
        _write_manifest(self.path, self.others + self.records)


def _write_manifest(path: Path, records: list[SlideRecord]) -> None:
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for r in records:
            row = asdict(r)
            writer.writerow({k: "" if row[k] is None else row[k] for k in FIELDS})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(path: str | os.PathLike) -> list[SlideRecord]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        out.append(SlideRecord(
            slide=row["slide"], status=row["status"], error=row["error"], output=row["output"],
            patches=int(row["patches"]) if row["patches"] else None,
            seconds=float(row["seconds"]) if row["seconds"] else None, worker=row["worker"],
        ))
    return out


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
