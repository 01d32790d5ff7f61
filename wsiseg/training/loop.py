"""Training a registered network on a folder of annotated images: ``train(config)``.

Images are brought to the model card's resolution once and kept in memory. Each epoch draws
random square crops from every training image, a share of them over the image laid on glass
(flips, 90 degree rotations, stain and colour jitter; see :mod:`wsiseg.training.sampling`),
normalises them as inference does, trains with the network's own criterion
(:mod:`wsiseg.training.losses`) in the precision inference would use on that device, then
segments every held-out image whole and scores it (:mod:`wsiseg.training.validation`).
``last.pt`` is written after every epoch and ``best.pt`` when the selection score improves
(:mod:`wsiseg.training.state`); both are ordinary checkpoints (state dict + card) that
``wsiseg predict --model`` takes, and ``last.pt`` also holds what resuming needs. Runs are
reproducible: the split, the initial weights and every crop follow from ``seed``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch

from wsiseg.cards import ClassInfo, ModelCard
from wsiseg.errors import ConfigError, ModelError, OutputError, first_line
from wsiseg.inference.predictor import Normalisation, Predictor, autocast_dtype, resolve_device
from wsiseg.models import create_model, default_card, load_model
from wsiseg.models.protocol import TrainingOutputs, encoder_of, training_outputs
from wsiseg.training.config import TrainConfig
from wsiseg.training.datasets import LabelScheme, Sample, load_folder, read_attributes
from wsiseg.training.losses import criterion_for
from wsiseg.training.metrics import Scores
from wsiseg.training.sampling import Batch, crop_size_for, epoch_batches, split_samples
from wsiseg.training.state import (
    BEST,
    LAST,
    METRICS,
    HistoryRow,
    Progress,
    check_resumable,
    progress_of,
    read_state,
    save_epoch,
)
from wsiseg.training.validation import evaluate_samples, history_scores, selection_score

__all__ = ["TrainConfig", "TrainResult", "train"]

logger = logging.getLogger(__name__)

#: A criterion: ``criterion(outputs, batch)`` gives the loss and its named parts.
Criterion = Callable[[TrainingOutputs, Mapping[str, torch.Tensor]],
                     tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class TrainResult:
    best: Path
    last: Path
    metrics: Path
    best_epoch: int
    best_score: float
    epochs_run: int


# --- the run, step by step -------------------------------------------------------------------


@dataclass(frozen=True)
class _Data:
    """The images of a run at the card's resolution, and the card the trained network gets."""

    train_set: list[Sample]
    val_set: list[Sample]
    card: ModelCard
    crop_size: int


@dataclass(frozen=True)
class _Run:
    """The network on its device and what trains it."""

    module: torch.nn.Module
    criterion: Criterion
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    device: torch.device
    autocast: torch.dtype | None  # None: float32
    normalisation: Normalisation
    normalise: Callable[[torch.Tensor], torch.Tensor]


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` on ``config.data``; see the module docstring."""
    initial = _initial_weights(config)
    data = _prepare_data(config)
    run = _build_run(config, data, initial)
    progress = _start_or_resume(config, run)
    logger.info("training %s on %d images (%d held out), crops %d px, %d steps/epoch, %s%s",
                config.model, len(data.train_set), len(data.val_set), data.crop_size,
                run.steps_per_epoch, run.device, f" {run.autocast}" if run.autocast else "")
    for epoch in range(progress.next_epoch, config.epochs):
        _run_epoch(config, data, run, progress, epoch)
    out = Path(config.out)
    if progress.best_epoch < 0:
        raise ConfigError(f"{out} already ran all {config.epochs} epochs; raise --epochs to "
                          "train on")
    return TrainResult(out / BEST, out / LAST, out / METRICS, progress.best_epoch + 1,
                       progress.best_score, len(progress.history))


def _prepare_data(config: TrainConfig) -> _Data:
    """Load the images at the card's resolution, hold some out and choose the crop size."""

    base_card = default_card(config.model)
    scheme = (LabelScheme.from_file(config.classes) if config.classes
              else LabelScheme.identity([(c.index, c.name, c.color) for c in base_card.classes]))
    attributes = (read_attributes(config.attributes, config.attributes_key)
                  if config.attributes else None)
    if scheme.attribute_columns and attributes is None:
        raise ConfigError(f"the label scheme uses attributes {sorted(scheme.attribute_columns)}; "
                          "pass --attributes with a CSV that has them")
    train_set, val_set = _split(config, scheme, base_card.mpp, attributes)
    if len(train_set) * config.crops_per_image < config.batch_size:
        raise ConfigError(f"{len(train_set)} training images x {config.crops_per_image} crops "
                          f"do not fill one batch of {config.batch_size}; lower --batch-size")
    card = _trained_card(config, base_card, scheme)
    if config.on_glass > 0:  # crops run past the images: any size, the window's by default
        return _Data(train_set, val_set, card, config.crop_size or base_card.patch_size)
    size = config.crop_size or crop_size_for(train_set, base_card.patch_size)
    if size > min(min(s.target.shape) for s in train_set):
        raise ConfigError(f"crop size {size} is larger than the smallest training image; "
                          "lower --crop-size")
    return _Data(train_set, val_set, card, size)


def _split(config: TrainConfig, scheme: LabelScheme, model_mpp: float,
           attributes: Mapping[str, Mapping[str, str]] | None) -> tuple[list[Sample], list[Sample]]:
    """The training and held-out images: ``--val-data``, or a seeded split of ``data``."""
    image_mpp = config.image_mpp
    assert image_mpp is not None  # a config without it is refused when made
    samples = load_folder(config.data, scheme, image_mpp, model_mpp, attributes)
    if config.val_data is not None:
        return samples, load_folder(config.val_data, scheme, image_mpp, model_mpp, attributes)
    groups = None
    if config.split_by:
        rows = attributes or {}
        missing = [s.name for s in samples if config.split_by not in rows.get(s.name, {})]
        if missing:
            raise ConfigError(f"image {missing[0]} has no {config.split_by!r} attribute to "
                              "split by; fix --attributes or drop --split-by")
        groups = [rows[s.name][config.split_by] for s in samples]
    return split_samples(samples, config.val_fraction, config.seed, groups)


def _trained_card(config: TrainConfig, base_card: ModelCard, scheme: LabelScheme) -> ModelCard:
    """The card the trained network is saved with: the scheme's classes, the run's arguments."""
    # The card refuses a colour that is not three integers 0..255 when it is made.
    classes = tuple(ClassInfo(i, n, cast("tuple[int, int, int]", tuple(c)))
                    for i, n, c in scheme.classes())
    arguments = {**base_card.arguments, **dict(config.arguments), "num_classes": len(classes)}
    return replace(base_card, name=config.name or f"{config.model}-trained", classes=classes,
                   arguments=arguments, weights=None, weights_sha256=None,
                   description=f"{config.model} trained by wsiseg on {Path(config.data).name}")


def _build_run(config: TrainConfig, data: _Data,
               initial: Mapping[str, torch.Tensor] | None = None) -> _Run:
    """The network, seeded by ``config.seed``, on its device, with criterion and optimizer."""

    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    try:
        module = create_model(config.model, **data.card.arguments)
    except ModelError as err:
        raise ConfigError(f"cannot build {config.model}: {err}") from err
    if initial is not None:
        _load_initial_weights(module, initial, config)
    module = module.to(device)
    if device.type == "cpu":
        # torch's stubs leave memory_format out of Module.to, which takes it
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    criterion = criterion_for(module, **dict(config.loss_options))
    optimizer = _optimizer(module, config)
    steps = (len(data.train_set) * config.crops_per_image) // config.batch_size
    card = data.card
    normalisation = Normalisation(_three(card.mean), _three(card.std), card.channel_order)
    return _Run(module, criterion, optimizer, _schedule(optimizer, steps, config), steps, device,
                autocast_dtype(device, config.amp), normalisation,
                normalisation.normaliser(device))


def _three(values: tuple[float, ...]) -> tuple[float, float, float]:
    return (values[0], values[1], values[2])


def _initial_weights(config: TrainConfig) -> dict[str, torch.Tensor] | None:
    """The weights of ``config.init``, read before anything else so a bad one fails first."""
    if not config.init:
        return None

    loaded = load_model(config.init, trust_code=config.trust_code)
    logger.info("starting from the weights of %s (sha256 %s)", loaded.source,
                (loaded.weights_sha256 or "?")[:12])
    return loaded.module.state_dict()


def _load_initial_weights(module: torch.nn.Module, initial: Mapping[str, torch.Tensor],
                          config: TrainConfig) -> None:
    """Start from ``initial``, the weights of ``config.init``: the same network."""
    try:
        module.load_state_dict(initial)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"--init {config.init} is not the network {config.model} with these "
                          f"--arg settings ({first_line(err)}); start from a model of the same "
                          "architecture and arguments, or leave --init out") from err


def _start_or_resume(config: TrainConfig, run: _Run) -> Progress:
    """A new run in a new or empty ``out``; with ``resume``, the state its ``last.pt`` holds."""
    out = Path(config.out)
    last_path = out / LAST
    if config.resume and last_path.exists():
        state = read_state(last_path)
        check_resumable(state, config, last_path)
        run.module.load_state_dict(state["state_dict"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        logger.info("resuming %s after epoch %d", last_path, state["epoch"] + 1)
        return progress_of(state)
    if last_path.exists():
        raise OutputError(f"{out} already holds a training run ({last_path.name}); pass --resume "
                          "to continue it or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {out} ({err.strerror or err})") from err
    return Progress()


def _run_epoch(config: TrainConfig, data: _Data, run: _Run, progress: Progress,
               epoch: int) -> None:
    """Train one epoch, score the held-out images, note the row and write the run's files."""
    t0 = time.perf_counter()
    losses = _train_epoch(config, data, run, epoch)
    train_seconds = time.perf_counter() - t0
    scores = _evaluate(config, data, run)
    score = selection_score(scores, config.select_by)
    row: HistoryRow = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[-1]["lr"],
                       **{f"train_{k}": v for k, v in losses.items()},
                       **{f"val_{k}": v for k, v in history_scores(scores).items()},
                       "seconds": round(time.perf_counter() - t0, 2),
                       "train_seconds": round(train_seconds, 2)}
    progress.history.append(row)
    improved = score > progress.best_score
    if improved:
        progress.best_score, progress.best_epoch = score, epoch
    save_epoch(config, data.card, run.module, run.optimizer, run.scheduler, progress, epoch,
               scores if improved else None)
    logger.info("epoch %d/%d: loss %.4f, val %s %.4f%s (%.0f s)", epoch + 1, config.epochs,
                row.get("train_loss", float("nan")), config.select_by, score,
                " (best)" if improved else "", row["seconds"])


def _train_epoch(config: TrainConfig, data: _Data, run: _Run, epoch: int) -> dict[str, float]:
    """One pass over the epoch's batches; the mean loss and mean of each of its terms."""
    torch.manual_seed(config.seed * 100_003 + epoch)
    run.module.train()
    sums: dict[str, float] = {}
    batches = epoch_batches(data.train_set, data.crop_size, config.batch_size,
                            config.crops_per_image, config.seed, epoch, glass=config.on_glass,
                            stain=config.stain_jitter)
    for images, targets, grades in _with_progress_bar(batches, config.progress, epoch,
                                                      config.epochs):
        loss, parts = _train_step(run, images, targets, grades, epoch)
        sums["loss"] = sums.get("loss", 0.0) + loss
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / max(1, len(batches)) for k, v in sums.items()}


def _train_step(run: _Run, images: np.ndarray, targets: np.ndarray, grades: np.ndarray,
                epoch: int) -> tuple[float, dict[str, float]]:
    """One optimizer step on one batch; its loss and the loss's terms."""
    x = run.normalise(torch.from_numpy(images).to(run.device)).contiguous(
        memory_format=torch.channels_last if run.device.type == "cpu" else torch.contiguous_format)
    batch = {"target": torch.from_numpy(targets).to(run.device).long(),
             "grade": torch.from_numpy(grades).to(run.device).long()}
    with torch.autocast(run.device.type, dtype=run.autocast, enabled=run.autocast is not None):
        outputs = training_outputs(run.module, x)
    loss, parts = run.criterion(_as_float(outputs), batch)
    if not torch.isfinite(loss):
        raise ModelError(f"the loss became {float(loss)} in epoch {epoch + 1}; lower --lr "
                         "or use --amp fp32")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]  # torch's stubs leave Tensor.backward untyped
    run.optimizer.step()
    run.scheduler.step()
    return float(loss.detach()), parts


def _evaluate(config: TrainConfig, data: _Data, run: _Run) -> Scores:
    """Scores of the held-out images, each segmented whole as inference would.

    A run that trains on glass scores them laid on glass (a margin of half a crop), over the
    image only: how the pipeline sees tissue on a slide.
    """
    predictor = Predictor(run.module, data.card.num_classes, run.normalisation, run.device,
                          amp="auto")
    margin = data.crop_size // 2 if config.on_glass > 0 else 0
    return evaluate_samples(predictor, data.val_set, [c.name for c in data.card.classes],
                            glass_margin=margin)


# --- network, optimizer, schedule ------------------------------------------------------------


def _optimizer(module: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Two parameter groups: the encoder's at ``lr * encoder_lr_scale``, the rest at ``lr``."""
    encoder = encoder_of(module)
    enc_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    groups = [
        {"params": [p for p in module.parameters() if id(p) in enc_ids],
         "lr": config.lr * config.encoder_lr_scale},
        {"params": [p for p in module.parameters() if id(p) not in enc_ids], "lr": config.lr},
    ]
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)  # validated


def _schedule(optimizer: torch.optim.Optimizer, steps_per_epoch: int,
              config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero over the run (per step)."""
    total = max(1, steps_per_epoch * config.epochs)
    warm = min(total - 1, steps_per_epoch * config.warmup_epochs)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _as_float(outputs: TrainingOutputs) -> TrainingOutputs:
    """The outputs in float32, whatever precision the network ran in."""
    def as_float(v: object) -> object:
        if isinstance(v, torch.Tensor):
            return v.float()
        if isinstance(v, (list, tuple)):
            return [as_float(u) for u in v]
        return v

    return cast(TrainingOutputs, {k: as_float(v) for k, v in outputs.items()})


def _with_progress_bar(batches: list[Batch], enabled: bool, epoch: int,
                       epochs: int) -> Iterable[Batch]:
    if not enabled:
        return batches
    from tqdm import tqdm

    bar: Iterable[Batch] = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                                leave=False)
    return bar
