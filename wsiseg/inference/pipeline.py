"""Slide to diagnostic map: the one entry point that joins the stages.

reader -> tissue mask -> patch grid -> band loader -> predictor -> stitcher -> output store
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from wsiseg._version import __version__
from wsiseg.errors import ConfigError, ModelError, OutputError
from wsiseg.inference.config import PredictConfig
from wsiseg.inference.damage import damaged_areas, map_box, map_boxes
from wsiseg.inference.grid import PatchGrid, window_tissue_fractions
from wsiseg.inference.loader import BandLoader
from wsiseg.progress import progress_bar
from wsiseg.result.info import DamagedArea, ModelInfo, ResultInfo, SlideSource, TissueSampling
from wsiseg.result.writer import OutputWriter, check_output, make_folder, output_path
from wsiseg.slide.geometry import Geometry, MapBox, plan_geometry
from wsiseg.slide.reader import Slide, open_slide
from wsiseg.slide.region import RegionReader
from wsiseg.slide.remote import is_url, redact, slide_location
from wsiseg.slide.tissue import colour_warnings, mask_factor, own_pixels, read_tissue

if TYPE_CHECKING:
    from wsiseg.inference.predictor import Predictor
    from wsiseg.models import LoadedModel
    from wsiseg.slide.artefacts import FocusAccumulator

logger = logging.getLogger(__name__)

N = TypeVar("N", int, float)

# PredictConfig lives in the torch-free wsiseg.inference.config and is imported from here too.
__all__ = ["PredictConfig", "column_stripes", "load_configured_model", "overlapping_columns",
           "predict_slide", "usable_cores"]


def load_configured_model(config: PredictConfig) -> LoadedModel:
    """The model ``config`` names, or the installed default; refuses untrained networks."""
    from wsiseg.models import load_model
    from wsiseg.models.loading import default_model_name

    spec = config.model
    if spec is None:
        spec = default_model_name()
        if spec is None:
            raise ModelError(
                "no trained model is installed; pass --model with a checkpoint or TorchScript "
                "file and its card (see `wsiseg models`)"
            )
        logger.info("no --model given: using the installed model %s", spec)
    loaded = load_model(spec, weights=config.weights, trust_code=config.trust_code)
    if not loaded.trained:
        raise ModelError(
            f"{spec} is an architecture without trained weights; pass --weights FILE, or "
            "--model with a checkpoint or TorchScript file"
        )
    return loaded


def predict_slide(path: str | os.PathLike[str], config: PredictConfig, model: Any = None
                  ) -> ResultInfo:
    """Segment one slide into a zarr diagnostic map; return what the map records, its final
    path in ``.path``.

    ``model`` is a loaded model (``wsiseg.models.LoadedModel``) to reuse across slides; by
    default the one ``config`` names is loaded. ``path`` may be a slide's URL (``s3://``,
    ``gs://``, ``http(s)://``): its result then goes to the current folder unless
    ``config.out`` says where.
    """
    started = time.perf_counter()
    path = slide_location(path)  # a URL stays one (its secrets never shown)
    if config.out and is_url(config.out):
        raise OutputError(f"{redact(config.out)}: results are written to a local folder, not "
                          "to a URL; give a local --out path and copy the result up afterwards")
    out = output_path(config.out, path)
    if config.out is not None and out != Path(config.out):  # --out is the folder to hold it
        make_folder(out.parent)
    check_output(out, config.overwrite)
    with open_slide(path, slide_mpp=config.slide_mpp, reader=config.reader,
                    skip_damaged=config.skip_damaged) as slide:
        plan = _plan(slide, config, model)
        # torch loads with the model, once the slide has opened and has a resolution: a slide
        # refused, a batch's commonest failure, costs no torch.
        from wsiseg.inference.predictor import (
            Normalisation,
            Predictor,
            autocast_dtype,
            device_name,
            precision_name,
            resolve_device,
        )

        device = resolve_device(config.device)
        autocast_dtype(device, config.amp)  # a precision the device cannot run: said now
        check_memory(memory_estimate(plan, config, device.type), slide.path, device)
        t = time.perf_counter()
        tissue = _find_tissue(slide, plan, config)
        timings = {"tissue": time.perf_counter() - t}
        card = plan.loaded.card
        predictor = Predictor(
            plan.loaded.module, card.num_classes,
            Normalisation(tuple(card.mean), tuple(card.std), card.channel_order),
            device, amp=config.amp, compile=config.compile, tta=config.tta,
            name=str(plan.loaded.source),
        )
        writer = None
        try:
            writer = OutputWriter(
                out, plan.geometry.height, plan.geometry.width, card.num_classes,
                config.probabilities, chunk=config.chunk_size, uncertainty=True,
            )
            writer.write_tissue(tissue.mask)
            writer.write_image(tissue.rgb)
            # Written and judged (colour_warnings): not held while the windows are predicted.
            tissue = replace(tissue, rgb=np.empty((0, 0, 3), dtype=np.uint8))
            focus = _focus_accumulator(plan, tissue)
            run = _predict_stripes(slide, plan, tissue.kept, predictor, writer, device, config,
                                   focus)
            timings.update(run.timings)
            if focus is not None:
                # Focus is judged on the pixels the windows were read for, so only after them:
                # under --qc exclude, the windows on blur found in this pass are predicted all
                # the same (the blur is recorded, and left out of the analysable tissue).
                tissue, timings["focus"] = _add_blur(slide, plan, tissue, focus,
                                                     timings.get("focus", 0.0))
            if tissue.qc is not None:
                writer.write_qc(tissue.qc)
            if run.damaged:
                writer.write_damaged(list(map_boxes(slide, plan.geometry)))
            ran_on = (device_name(device), precision_name(predictor.autocast_dtype))
            info = _result_info(out, slide, plan, tissue, run, timings, config, started, ran_on)
            writer.publish(info, config.overwrite)
            return writer.published or info  # as recorded: with the reasons to review it
        except BaseException:
            if writer is not None:
                writer.abort()
            raise


@dataclass(frozen=True)
class _Plan:
    """What the model and the slide decide before any pixel is read."""

    loaded: Any  # wsiseg.models.LoadedModel
    geometry: Geometry
    grid: PatchGrid
    sigma: float


@dataclass(frozen=True)
class _Tissue:
    mask: np.ndarray  # at its own, coarser, sampling
    geometry: Geometry  # of the mask
    factor: int  # analysis pixels per mask pixel
    kept: np.ndarray  # (rows, cols) of the grid: windows with enough tissue
    rgb: np.ndarray  # uint8 (H, W, 3) image of the slide the mask was found on, same grid
    warnings: tuple[str, ...] = ()  # what looks wrong with its colours (colour_warnings)
    qc: np.ndarray | None = None  # uint8 artefact labels on the mask's grid (None: --qc off)


@dataclass(frozen=True)
class _Run:
    predicted: int  # windows predicted, once per stripe they overlap
    stripes: int
    timings: dict[str, float]
    damaged: tuple[DamagedArea, ...] = ()  # unreadable regions skipped (skip_damaged)
    dropped: int = 0  # windows not predicted because they touch one
    batch_size: int = 1  # windows per forward pass, as given or measured


def _plan(slide: Slide, config: PredictConfig, model: Any) -> _Plan:
    """The model, the analysis resolution and level, and the window grid."""
    slide_mpp = slide.require_mpp()
    loaded = model if model is not None else load_configured_model(config)
    card = loaded.card
    patch_size = config.patch_size or card.patch_size
    stride = config.stride or card.stride
    target_mpp = config.target_mpp or card.mpp
    if config.target_mpp and abs(config.target_mpp / card.mpp - 1) > 0.02:
        logger.warning(
            "analysing at %g um/px although the model was trained at %g um/px",
            config.target_mpp, card.mpp,
        )
    geometry = plan_geometry(
        slide.level_downsamples, slide.bounds, slide_mpp, target_mpp, source=str(slide.path)
    )
    grid = PatchGrid(geometry.width, geometry.height, patch_size, stride)
    logger.info(
        "%s: level %d (downsample %.4g), analysis grid %d x %d at %.4g um/px",
        slide.path.name, geometry.level, geometry.level_downsample, geometry.width,
        geometry.height, geometry.mpp[0],
    )
    return _Plan(loaded, geometry, grid, config.sigma or patch_size / 8)


#: Windows per forward pass by default. On the CPU one: a window of the installed model takes
#: about 100 MB of activations, and larger batches run no faster there (0.97, 1.01 and 0.90
#: windows/s for batches of 1, 2 and 4 on a 2-core machine).
CUDA_BATCH, CPU_BATCH = 32, 1


def _batch_size(config: PredictConfig, device_type: str) -> int:
    return config.batch_size or (CUDA_BATCH if device_type == "cuda" else CPU_BATCH)


#: Bytes per window pixel of a batch on the network's device, besides the classes' share:
#: the uint8 patch (3), its float32 input (12), and at least a 32-channel float32 feature map
#: at full resolution (128), which every registered network makes (most several).
_NETWORK_BYTES_PER_PIXEL = 3 + 12 + 128
#: Batches the loader keeps ready, and bytes a tissue-mask pixel costs (RGB, mask, labels).
_QUEUED_BATCHES = 10
_TISSUE_BYTES_PER_PIXEL = 12


@dataclass(frozen=True)
class MemoryEstimate:
    """The least memory a prediction needs, bytes: on the network's ``device`` and the host's."""

    device: int  # the batch through the network, and the blending of a stripe
    host: int  # batches queued, the band being read, and the tissue image and mask
    batch_size: int
    patch_size: int


def memory_estimate(plan: _Plan, config: PredictConfig, device_type: str) -> MemoryEstimate:
    """A lower bound of the memory predicting with ``plan`` takes: what its buffers need
    whatever the network (its own layers only add to it). Pure."""
    p, classes = plan.grid.patch_size, plan.loaded.card.num_classes
    batch = _batch_size(config, device_type)
    window = p * p
    network = batch * window * (_NETWORK_BYTES_PER_PIXEL + 3 * 4 * classes)  # logits, probs, sum
    stripe = min(config.stripe_width, plan.geometry.width) + p
    stitch = (classes + 1) * 2 * p * stripe * 4
    queued = _QUEUED_BATCHES * batch * window * 3
    band = 2 * (config.band_height + p) * stripe * 3
    factor = mask_factor(p, plan.grid.stride, plan.geometry.mpp[0])
    tissue = (-(-plan.geometry.width // factor) * -(-plan.geometry.height // factor)
              * _TISSUE_BYTES_PER_PIXEL)
    return MemoryEstimate(network + stitch, queued + band + tissue, batch, p)


def available_memory() -> int | None:
    """Bytes this process may still take on the host: the least of the system's available
    memory and what its address-space limit leaves; None when neither is known."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            found.append(max(0, limit - used))
    except (ImportError, OSError, ValueError):
        pass
    return min(found) if found else None


def check_memory(estimate: MemoryEstimate, slide: Path, device: Any) -> None:
    """Refuse, in one line, a run that cannot fit in the memory there is."""
    host_needs = estimate.host
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        _refuse_above(estimate.device, free, f"{device} memory", estimate, slide)
    else:
        host_needs += estimate.device
    available = available_memory()
    if available is not None:
        _refuse_above(host_needs, available, "memory", estimate, slide)


def _refuse_above(needs: int, available: int, where: str, estimate: MemoryEstimate,
                  slide: Path) -> None:
    if needs <= available:
        return
    gib = 2**30
    raise ConfigError(
        f"{slide.name}: predicting needs at least {needs / gib:.3g} GiB of {where} (windows of "
        f"{estimate.patch_size} px in batches of {estimate.batch_size}), but {available / gib:.3g} "
        "GiB is available; pass a smaller --batch-size or --patch-size (the card's is the "
        "default), or run where there is more memory")


def _find_tissue(slide: Slide, plan: _Plan, config: PredictConfig) -> _Tissue:
    """The tissue mask and the windows that hold enough tissue to be predicted."""
    grid = plan.grid
    factor = mask_factor(grid.patch_size, grid.stride, plan.geometry.mpp[0])
    t = time.perf_counter()
    # On a slide without a pyramid this decodes all of level 0: in bounded blocks, from
    # the reader threads, with a progress bar, and a Ctrl-C stops it between blocks.
    mask, geometry, rgb = read_tissue(
        slide, plan.geometry, factor, threads=config.threads or usable_cores(),
        progress=lambda total: progress_bar(total, f"{slide.path.name} tissue", "px",
                                            config.progress, leave=False, unit_scale=True),
    )
    found, qc = mask, None  # the colour checks judge the scan on the tissue as found
    if config.qc != "off":
        mask, qc = _find_artefacts(slide, rgb, mask, geometry)
    kept = window_tissue_fractions(mask, factor, grid) >= config.tissue_threshold
    if qc is not None and config.qc == "exclude":
        on_artefacts = window_tissue_fractions(qc > 0, factor, grid)
        dropped = kept & (on_artefacts >= QC_EXCLUDE_SHARE)
        kept &= ~dropped
        if dropped.any():
            logger.info("%s: %d windows lie mostly on artefacts and are left out (--qc exclude)",
                        slide.path.name, int(dropped.sum()))
    logger.info(
        "%s: tissue on %.1f%% of the slide, %d of %d windows kept (%.1f s)", slide.path.name,
        100 * mask.mean() if mask.size else 0.0, int(kept.sum()), kept.size,
        time.perf_counter() - t,
    )
    if not kept.any():
        logger.warning(
            "%s: no tissue found (no window with %.0f%% tissue); the map is all background",
            slide.path, 100 * config.tissue_threshold,
        )
    warnings = tuple(colour_warnings(rgb, found, own_pixels(geometry, slide.bounds)))
    for warning in warnings:
        logger.warning("%s: %s", slide.path, warning)
    return _Tissue(mask, geometry, factor, kept, rgb, warnings=warnings, qc=qc)


#: Under ``--qc exclude``, a window with at least this share of its area on artefacts is left out.
QC_EXCLUDE_SHARE = 0.5


def _find_artefacts(slide: Slide, rgb: np.ndarray, mask: np.ndarray, geometry: Geometry
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pen ink and folds on the tissue picture (:mod:`wsiseg.slide.artefacts`): the tissue
    mask without the ink over glass, and the artefact labels."""
    from wsiseg.slide.artefacts import QC_PEN, artefact_areas, detect_artefacts
    from wsiseg.slide.artefacts import tissue_without_pen as without_pen

    t = time.perf_counter()
    mpp = float(geometry.mpp[0])
    qc = detect_artefacts(rgb, mask, mpp)
    mask = without_pen(mask, qc == QC_PEN)
    areas = {name: a for name, a in artefact_areas(qc, mpp).items() if a > 0}
    logger.info("%s: artefacts %s (%.1f s)", slide.path.name, ", ".join(
        f"{name} {a:.3g} mm^2" for name, a in areas.items()) or "none",
        time.perf_counter() - t)
    return mask, qc


def _focus_accumulator(plan: _Plan, tissue: _Tissue) -> FocusAccumulator | None:
    """The slide's focus scores, to be fed as the windows' pixels are read; None without
    artefact detection (--qc off). One block is :data:`~wsiseg.slide.artefacts.FOCUS_BLOCK_UM`
    um, a whole number of tissue-mask pixels."""
    if tissue.qc is None:
        return None
    from wsiseg.slide.artefacts import FocusAccumulator, focus_cell

    cell = focus_cell(tissue.factor, float(plan.geometry.mpp[0]))
    return FocusAccumulator(plan.geometry.width, plan.geometry.height, cell * tissue.factor)


def _add_blur(slide: Slide, plan: _Plan, tissue: _Tissue, focus: FocusAccumulator,
              seconds: float) -> tuple[_Tissue, float]:
    """``tissue`` with its out-of-focus blocks in its artefact labels, where no pen or fold
    already is (they keep priority, as in ``detect_artefacts``); and ``seconds`` plus the time
    deciding took."""
    from wsiseg.slide.artefacts import (
        BLUR_MIN_TISSUE,
        QC_BLUR,
        QC_NONE,
        QC_OTHER,
        block_fractions,
        blur_mask,
        expand_blocks,
    )

    t = time.perf_counter()
    qc = tissue.qc
    if qc is None:
        return tissue, seconds
    cell = focus.block // tissue.factor  # tissue-mask pixels a side of a focus block
    on_blocks = block_fractions(tissue.mask, cell)
    scores = focus.scores()
    blocks = blur_mask(scores, on_blocks)
    blurred = (expand_blocks(blocks, cell, qc.shape) & tissue.mask
               & ((qc == QC_NONE) | (qc == QC_OTHER)))
    qc = qc.copy()
    qc[blurred] = QC_BLUR
    seconds += time.perf_counter() - t
    mpp = float(tissue.geometry.mpp[0])
    scored = int(np.count_nonzero(np.isfinite(scores) & (on_blocks >= BLUR_MIN_TISSUE)))
    logger.info("%s: out of focus %.3g mm^2 (%d of %d scored tissue blocks of %g um; %.1f s)",
                slide.path.name, np.count_nonzero(blurred) * mpp * mpp / 1e6,
                int(blocks.sum()), scored, focus.block * float(plan.geometry.mpp[0]), seconds)
    return replace(tissue, qc=qc), seconds


def _predict_stripes(slide: Slide, plan: _Plan, kept: np.ndarray, predictor: Predictor,
                     writer: OutputWriter, device: Any, config: PredictConfig,
                     focus: FocusAccumulator | None = None) -> _Run:
    """Read, predict and blend the kept windows into ``writer``, stripe by stripe; ``focus``
    is fed the pixels read, each once (a stripe's own columns)."""
    from wsiseg.inference.stitcher import Stitcher  # torch, as the predictor (predict_slide)
    from wsiseg.inference.tta import TTA_VIEWS

    grid, num_classes = plan.grid, plan.loaded.card.num_classes
    threads = config.threads or usable_cores()
    batch_size = _batch_size(config, device.type)
    stripes = column_stripes(plan.geometry.width, config.stripe_width, writer.chunk)
    todo = [(x0, x1, kept & overlapping_columns(grid, x0, x1)[None, :]) for x0, x1 in stripes]
    predicted = sum(int(k.sum()) for _, _, k in todo)
    if config.batch_size is None:  # not given: measured, where the slide is worth it
        from wsiseg.inference.tuning import tuned_batch_size

        batch_size = tuned_batch_size(predictor, grid.patch_size, predicted, batch_size)
    dropped = 0

    def damaged_boxes() -> list[MapBox]:
        # Only the read level's damage spoils windows; elsewhere (the tissue mask's level)
        # the analysis pixels are good, and what they lose is recorded in the result.
        return [box for r in slide.damaged_regions() if r.level == plan.geometry.level
                and (box := map_box(plan.geometry, r)) is not None]
    t = time.perf_counter()
    predict_s = stitch_s = read_s = focus_s = 0.0
    with progress_bar(predicted, slide.path.name, "patch", config.progress, leave=False) as bar:
        # Column stripes, each top to bottom: memory depends on the stripe's width,
        # not the slide's. Windows across a stripe edge are predicted for both sides.
        for x0, x1, stripe_kept in todo:
            writer.begin_stripe(x0, x1)
            stitcher = Stitcher(
                grid, num_classes, plan.sigma, writer.write_rows, device,
                config.probabilities, columns=(x0, x1), views=len(TTA_VIEWS[config.tta]),
            )
            loader = BandLoader(
                RegionReader(slide, plan.geometry), grid, stripe_kept, batch_size=batch_size,
                band_height=config.band_height, threads=threads,
                damaged=damaged_boxes if config.skip_damaged else None,
                focus=focus, focus_columns=(x0, x1),
            )
            try:
                for batch in loader:
                    t0 = time.perf_counter()
                    information = None
                    if stitcher.views > 1:  # the views' disagreement, for the uncertainty
                        probs, information = predictor.with_information(batch.patches)
                    else:
                        probs = predictor(batch.patches)
                    t1 = time.perf_counter()
                    stitcher.add(batch.rows, batch.cols, probs, information)
                    stitch_s += time.perf_counter() - t1
                    predict_s += t1 - t0
                    bar.update(len(batch.rows))
            finally:  # no read may still be running when the slide is closed
                loader.close()
            predictor.check_outputs()  # before the stripe's last rows are written
            stitcher.finish()
            read_s += loader.stats.read_seconds
            focus_s += loader.stats.focus_seconds
            dropped += loader.stats.patches_dropped
            bar.update(loader.stats.patches_dropped)
    timings = {"loop": time.perf_counter() - t, "predict": predict_s, "stitch_write": stitch_s,
               "read": read_s}
    if focus is not None:
        timings["focus"] = focus_s
    damaged = damaged_areas(slide.damaged_regions())
    if damaged:
        slide_mpp = slide.require_mpp()  # known: the map was planned with it
        area_mm2 = sum(a.box_level0[2] * a.box_level0[3] for a in damaged) * (
            slide_mpp[0] * slide_mpp[1] / 1e6)
        where = ", ".join(f"level-0 x {a.box_level0[0]}, y {a.box_level0[1]}"
                          for a in damaged[:3]) + (", ..." if len(damaged) > 3 else "")
        logger.warning(
            "%s: skipped %d damaged region%s (%.4g mm^2 of the slide at level 0: %s) that "
            "cannot be decoded; %d window%s touching them not predicted; they are marked in "
            "the result's 'damaged' mask", slide.path, len(damaged),
            "" if len(damaged) == 1 else "s", area_mm2, where, dropped,
            "" if dropped == 1 else "s",
        )
    return _Run(predicted - dropped, len(stripes), timings, damaged, dropped, batch_size)


def _result_info(out: Path, slide: Slide, plan: _Plan, tissue: _Tissue, run: _Run,
                 timings: dict[str, float], config: PredictConfig, started: float,
                 ran_on: tuple[str, str]) -> ResultInfo:
    """What the result records; ``ran_on``: the device and precision of the network."""
    loaded, geometry, grid = plan.loaded, plan.geometry, plan.grid
    card = loaded.card
    return ResultInfo(
        path=out,
        version=__version__,
        slide=SlideSource(
            path=slide.path.resolve(),
            size_bytes=slide.size_bytes,
            vendor=slide.vendor,
            dimensions=_pair(slide.dimensions),
            bounds=_box(slide.bounds),
            mpp=_pair(slide.require_mpp()),
            mpp_source="metadata" if config.slide_mpp is None else "user",
            quickhash=slide.properties.get("openslide.quickhash-1"),
            reader=slide.backend,
        ),
        level=geometry.level,
        level_downsample=geometry.level_downsample,
        resample=_pair(geometry.resample),
        analysis_mpp=_pair(geometry.mpp),
        scale_to_level0=_pair(geometry.scale),
        offset_level0=_pair(geometry.offset_level0),
        shape=(geometry.height, geometry.width),
        classes=tuple(card.classes),
        model=ModelInfo(
            name=card.name,
            source=str(loaded.source),
            card=card.to_dict(),
            weights_sha256=loaded.weights_sha256,
        ),
        patch_size=grid.patch_size,
        stride=grid.stride,
        sigma=plan.sigma,
        tissue_threshold=config.tissue_threshold,
        tta=config.tta,
        tissue=TissueSampling(
            factor=tissue.factor,
            mpp=_pair(tissue.geometry.mpp),
            scale_to_level0=_pair(tissue.geometry.scale),
            offset_level0=_pair(tissue.geometry.offset_level0),
        ),
        patches_total=int(tissue.kept.size),
        patches_kept=int(tissue.kept.sum()),
        patches_predicted=run.predicted,
        stripes=run.stripes,
        seconds=round(time.perf_counter() - started, 3),
        timings={k: round(v, 3) for k, v in timings.items()},
        config={k: v for k, v in asdict(config).items() if k not in ("progress",)},
        damaged_regions=run.damaged,
        warnings=tissue.warnings,
        uncertainty="entropy" if config.tta == "none" else "entropy+views",
        qc=None if tissue.qc is None else config.qc,
        device=ran_on[0],
        precision=ran_on[1],
        batch_size=run.batch_size,
    )


def _pair(values: Sequence[N]) -> tuple[N, N]:
    """Two values as a tuple, whatever sequence holds them."""
    first, second = values
    return first, second


def _box(values: Sequence[int]) -> tuple[int, int, int, int]:
    x, y, width, height = values
    return x, y, width, height


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which batch schedulers and
    containers set), not every core of the host."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def column_stripes(width: int, stripe_width: int, chunk: int) -> list[tuple[int, int]]:
    """``[x0, x1)`` column ranges of at most ``stripe_width`` (a multiple of ``chunk``) covering
    ``[0, width)``; each starts on a chunk edge. Pure."""
    step = max(chunk, stripe_width // chunk * chunk)
    return [(x0, min(x0 + step, width)) for x0 in range(0, width, step)]


def overlapping_columns(grid: PatchGrid, x0: int, x1: int) -> np.ndarray:
    """Which grid columns' windows overlap output columns ``[x0, x1)``."""
    return (grid.xs < x1) & (grid.xs + grid.patch_size > x0)
