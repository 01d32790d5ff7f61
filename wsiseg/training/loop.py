"""Training a registered network on a folder of annotated images: ``train(config)``.

Images are brought to the model card's resolution once and kept in memory. Each epoch draws
random square crops from every training image, a share of them over the image laid on glass
(flips, 90 degree rotations, stain and colour jitter; see :mod:`wsiseg.training.sampling`), normalises them as inference does, trains with the
network's own criterion (:mod:`wsiseg.training.losses`) in the precision inference would use
on that device, then segments every held-out image whole and scores it. ``last.pt`` is written after every epoch and ``best.pt`` when the
selection score improves; both are ordinary checkpoints (state dict + card) that
``wsiseg predict --model`` takes, and ``last.pt`` also holds what resuming needs. Runs are
reproducible: the split, the initial weights and every crop follow from ``seed``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from wsiseg.atomic import atomic_write
from wsiseg.errors import ConfigError, ModelError, OutputError
from wsiseg.inference.predictor import (
    PRECISIONS,
    Normalisation,
    Predictor,
    autocast_dtype,
    resolve_device,
    segment_image,
)
from wsiseg.training.datasets import IGNORE_INDEX, LabelScheme, Sample, load_folder, read_attributes
from wsiseg.training.metrics import Scores, confusion_matrix
from wsiseg.training.sampling import crop_size_for, epoch_batches, split_samples

if TYPE_CHECKING:
    from wsiseg.models import ModelCard

logger = logging.getLogger(__name__)

TRAIN_STATE_VERSION = 1
LAST, BEST, METRICS = "last.pt", "best.pt", "metrics.csv"
OPTIMIZERS = ("sgd", "adamw")
#: Validation scores that can choose ``best.pt``.
SELECT_BY = ("mean_dice", "mean_iou", "pixel_accuracy")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved in its checkpoints.

    ``model`` is a registered network name; ``arguments`` override its constructor arguments
    (``num_classes`` follows the label scheme). ``lr`` is the decoder's learning rate and the
    encoder's is ``lr * encoder_lr_scale`` (HSP-Net: 10x smaller for a pretrained encoder).
    ``loss_options`` are keyword arguments of the network's criterion. ``on_glass`` is the share
    of crops drawn over the image laid on glass (and then the held-out images are scored laid on
    glass too); ``stain_jitter`` the strength of the stain augmentation; ``init`` a model
    (installed name or checkpoint) of the same network whose weights the run starts from.
    """

    model: str
    data: Path
    out: Path
    name: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    classes: Path | None = None
    attributes: Path | None = None
    attributes_key: str = "name"
    image_mpp: float | None = None
    val_data: Path | None = None
    val_fraction: float = 0.15
    split_by: str | None = None
    epochs: int = 50
    batch_size: int = 8
    crop_size: int | None = None
    crops_per_image: int = 1
    on_glass: float = 0.0
    stain_jitter: float = 0.0
    init: str | None = None
    optimizer: str = "sgd"
    lr: float = 1e-2
    encoder_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    loss_options: Mapping[str, Any] = field(default_factory=dict)
    select_by: str = "mean_dice"
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    threads: int | None = None
    resume: bool = False
    progress: bool = False

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
        d["arguments"], d["loss_options"] = dict(self.arguments), dict(self.loss_options)
        return d

    def validate(self) -> None:
        """Refuse a value no run can use, with one line naming it and the way out."""
        mpp = self.image_mpp
        problems = [
            (mpp is None,
             f"the resolution of the images in {self.data} is not known; pass --image-mpp "
             "(um per pixel, e.g. 0.62 for GlaS at x20)"),
            (mpp is not None and not mpp > 0,
             f"image resolution {mpp} um/px is not positive; pass --image-mpp, e.g. 0.62 for "
             "GlaS at x20"),
            (self.val_data is None and not 0 < self.val_fraction < 1,
             f"validation fraction {self.val_fraction} must be between 0 and 1; or give "
             "--val-data"),
            (self.epochs < 1,
             f"epochs {self.epochs} is not a run; pass --epochs 1 or more"),
            (self.batch_size < 2,
             f"batch size {self.batch_size} is too small: BatchNorm needs two samples; pass "
             "--batch-size 2 or more"),
            (self.crop_size is not None and self.crop_size < 8,
             f"crop size {self.crop_size} px is too small; pass --crop-size 8 or more (a "
             "multiple of 32 suits every network)"),
            (self.crops_per_image < 1,
             f"crops per image {self.crops_per_image} draws nothing; pass --crops-per-image 1 "
             "or more"),
            (not 0 <= self.on_glass <= 1,
             f"on-glass share {self.on_glass} must be between 0 and 1; pass e.g. --on-glass "
             "0.5"),
            (not 0 <= self.stain_jitter < 1,
             f"stain jitter {self.stain_jitter} must be at least 0 and below 1; pass e.g. "
             "--stain-jitter 0.05"),
            (self.optimizer not in OPTIMIZERS,
             f"unknown optimizer {self.optimizer!r}; use sgd or adamw"),
            (not self.lr > 0,
             f"learning rate {self.lr} must be positive; pass e.g. --lr 0.01"),
            (not self.encoder_lr_scale >= 0,
             f"encoder learning-rate scale {self.encoder_lr_scale} is negative; pass "
             "--encoder-lr-scale 0 or more, e.g. 0.1"),
            (not self.weight_decay >= 0,
             f"weight decay {self.weight_decay} is negative; pass --weight-decay 0 or more, "
             "e.g. 1e-4"),
            (self.warmup_epochs < 0,
             f"warm-up epochs {self.warmup_epochs} is negative; pass --warmup-epochs 0 or more"),
            (self.select_by not in SELECT_BY,
             f"cannot select checkpoints by {self.select_by!r}; use mean_dice, mean_iou or "
             "pixel_accuracy"),
            (self.amp not in PRECISIONS,
             f"unknown precision {self.amp!r}; use auto, bf16, fp16 or fp32"),
            (self.threads is not None and self.threads < 1,
             f"threads {self.threads} cannot run; pass --threads 1 or more, or leave it out"),
            # numpy's generators, which draw the crops, take no negative seeds
            (self.seed < 0,
             f"seed {self.seed} is negative; pass --seed 0 or more"),
        ]
        for bad, message in problems:
            if bad:
                raise ConfigError(message)


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
    criterion: Callable[..., tuple[torch.Tensor, dict[str, float]]]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    device: torch.device
    autocast: torch.dtype | None  # None: float32
    normalisation: Normalisation
    normalise: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Progress:
    """The finished epochs of a run and the best so far: what ``last.pt`` keeps to resume."""

    history: list[dict[str, Any]] = field(default_factory=list)
    next_epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` on ``config.data``; see the module docstring."""
    config.validate()
    initial = _initial_weights(config)
    data = _prepare_data(config)
    run = _build_run(config, data, initial)
    progress = _start_or_resume(config, data.card, run)
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
    from wsiseg.models import default_card

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
    samples = load_folder(config.data, scheme, config.image_mpp, model_mpp, attributes)
    if config.val_data is not None:
        return samples, load_folder(config.val_data, scheme, config.image_mpp, model_mpp,
                                    attributes)
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
    from wsiseg.models import ClassInfo

    classes = tuple(ClassInfo(i, n, tuple(c)) for i, n, c in scheme.classes())
    arguments = {**base_card.arguments, **dict(config.arguments), "num_classes": len(classes)}
    return replace(base_card, name=config.name or f"{config.model}-trained", classes=classes,
                   arguments=arguments, weights=None, weights_sha256=None,
                   description=f"{config.model} trained by wsiseg on {Path(config.data).name}")


def _build_run(config: TrainConfig, data: _Data,
               initial: Mapping[str, torch.Tensor] | None = None) -> _Run:
    """The network, seeded by ``config.seed``, on its device, with criterion and optimizer."""
    from wsiseg.models import create_model
    from wsiseg.training.losses import criterion_for

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
        module = module.to(memory_format=torch.channels_last)
    criterion = criterion_for(module, **dict(config.loss_options))
    optimizer = _optimizer(module, config)
    steps = (len(data.train_set) * config.crops_per_image) // config.batch_size
    card = data.card
    normalisation = Normalisation(tuple(card.mean), tuple(card.std), card.channel_order)
    return _Run(module, criterion, optimizer, _schedule(optimizer, steps, config), steps, device,
                autocast_dtype(device, config.amp), normalisation,
                normalisation.normaliser(device))


def _initial_weights(config: TrainConfig) -> dict[str, torch.Tensor] | None:
    """The weights of ``config.init``, read before anything else so a bad one fails first."""
    if not config.init:
        return None
    from wsiseg.models import load_model

    loaded = load_model(config.init)
    logger.info("starting from the weights of %s (sha256 %s)", loaded.source,
                (loaded.weights_sha256 or "?")[:12])
    return loaded.module.state_dict()


def _load_initial_weights(module: torch.nn.Module, initial: Mapping[str, torch.Tensor],
                          config: TrainConfig) -> None:
    """Start from ``initial``, the weights of ``config.init``: the same network."""
    try:
        module.load_state_dict(initial)
    except (RuntimeError, TypeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"--init {config.init} is not the network {config.model} with these "
                          f"--arg settings ({first}); start from a model of the same "
                          "architecture and arguments, or leave --init out") from err


def _start_or_resume(config: TrainConfig, card: ModelCard, run: _Run) -> _Progress:
    """A new run in a new or empty ``out``; with ``resume``, the state its ``last.pt`` holds."""
    out = Path(config.out)
    last_path = out / LAST
    if config.resume and last_path.exists():
        state = _read_state(last_path)
        _check_resumable(state, config, card, last_path)
        run.module.load_state_dict(state["state_dict"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        logger.info("resuming %s after epoch %d", last_path, state["epoch"] + 1)
        return _Progress(list(state["history"]), state["epoch"] + 1, state["best_score"],
                         state["best_epoch"])
    if last_path.exists():
        raise OutputError(f"{out} already holds a training run ({last_path.name}); pass --resume "
                          "to continue it or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {out} ({err.strerror or err})") from err
    return _Progress()


def _run_epoch(config: TrainConfig, data: _Data, run: _Run, progress: _Progress,
               epoch: int) -> None:
    """Train one epoch, score the held-out images, note the row and write the run's files."""
    t0 = time.perf_counter()
    losses = _train_epoch(config, data, run, epoch)
    train_seconds = time.perf_counter() - t0
    scores = _evaluate(config, data, run)
    score = _score(scores, config.select_by)
    row = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[-1]["lr"],
           **{f"train_{k}": v for k, v in losses.items()},
           **{f"val_{k}": v for k, v in _flat_scores(scores).items()},
           "seconds": round(time.perf_counter() - t0, 2),
           "train_seconds": round(train_seconds, 2)}
    progress.history.append(row)
    improved = score > progress.best_score
    if improved:
        progress.best_score, progress.best_epoch = score, epoch
    _save(config, data.card, run, progress, epoch, scores if improved else None)
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
        outputs = _forward_train(run.module, x)
    loss, parts = run.criterion(_as_float(outputs), batch)
    if not torch.isfinite(loss):
        raise ModelError(f"the loss became {float(loss)} in epoch {epoch + 1}; lower --lr "
                         "or use --amp fp32")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
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


def _save(config: TrainConfig, card: ModelCard, run: _Run, progress: _Progress, epoch: int,
          best_scores: Scores | None) -> None:
    """Write ``best.pt`` (when ``best_scores`` are new), then ``last.pt`` and the history CSV."""
    from wsiseg.models.loading import save_checkpoint

    out = Path(config.out)
    if best_scores is not None:
        save_checkpoint(out / BEST, run.module, card,
                        {"epoch": epoch, "scores": best_scores.to_dict()})
    save_checkpoint(out / LAST, run.module, card, {
        "train_state_version": TRAIN_STATE_VERSION, "config": config.to_json_dict(),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "epoch": epoch, "history": progress.history, "best_score": progress.best_score,
        "best_epoch": progress.best_epoch})
    _write_csv(out / METRICS, progress.history)


# --- network, optimizer, schedule ------------------------------------------------------------


def _optimizer(module: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    encoder = getattr(module, "encoder", None)
    enc_ids = {id(p) for p in encoder.parameters()} if isinstance(encoder, torch.nn.Module) else set()
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


def _forward_train(module: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    if hasattr(module, "forward_train"):
        return module.forward_train(x)
    return {"logits": module(x)}


def _as_float(outputs: dict[str, Any]) -> dict[str, Any]:
    def cast(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.float()
        if isinstance(v, (list, tuple)):
            return [cast(u) for u in v]
        return v

    return {k: cast(v) for k, v in outputs.items()}


# --- scores ----------------------------------------------------------------------------------


def evaluate_samples(predictor: Predictor, samples: Sequence[Sample],
                     class_names: Sequence[str], glass_margin: int = 0) -> Scores:
    """Segment each image whole and score it against its target (see :mod:`wsiseg.training.metrics`).

    With ``glass_margin`` > 0 each image is laid on a scan's glass with that many pixels on
    every side (:func:`wsiseg.training.on_glass.slide_on_glass`), and only the image is scored.
    """
    from wsiseg.training.on_glass import slide_on_glass

    matrix = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    m = glass_margin
    for i, s in enumerate(samples):
        image = s.image
        if m > 0:
            image = slide_on_glass(s.image, m, np.random.default_rng(i))
        predicted = segment_image(predictor, image).argmax(axis=0)
        if m > 0:
            predicted = predicted[m:m + s.target.shape[0], m:m + s.target.shape[1]]
        matrix += confusion_matrix(s.target, predicted, len(class_names), IGNORE_INDEX)
    return Scores.from_matrix(matrix, class_names)


def _score(scores: Scores, select_by: str) -> float:
    value = scores.to_dict().get(select_by)
    if not isinstance(value, (int, float)):  # None: no class to average is in the images
        raise ConfigError(f"the held-out images give no {select_by}: none of the classes it "
                          "averages is in them or predicted; hold out other images or select "
                          "by pixel_accuracy")
    return float(value)


def _flat_scores(scores: Scores) -> dict[str, float]:
    d = scores.to_dict()
    flat = {k: d[k] for k in ("mean_dice", "mean_iou", "pixel_accuracy") if k in d}
    for name, per in (d.get("classes") or {}).items():
        flat[f"dice_{name.replace(' ', '_')}"] = per.get("dice")
    return flat


# --- files -----------------------------------------------------------------------------------


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise OutputError(f"cannot resume from {path} ({type(err).__name__}: {err}); it is "
                          "damaged: delete it and start again") from err
    if not isinstance(state, dict) or state.get("train_state_version") != TRAIN_STATE_VERSION:
        raise OutputError(f"{path} holds no training state this wsiseg can resume; start a new "
                          "run in another --out")
    return state


def _check_resumable(state: Mapping[str, Any], config: TrainConfig, card: Any,
                     path: Path) -> None:
    # A setting added since the run began was at its default then.
    defaults = TrainConfig(model=config.model, data=config.data, out=config.out).to_json_dict()
    saved = {**defaults, **dict(state["config"])}
    now = config.to_json_dict()
    # Only the length of the run and how it is watched may change on resume.
    free = {"epochs", "resume", "progress", "threads", "device"}
    changed = sorted(k for k in now if k not in free and saved.get(k) != now[k])
    if changed:
        raise ConfigError(f"{path} was trained with other settings ({', '.join(changed)}); "
                          "resume with the same settings or start a new run in another --out")


def _write_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """The history, a row per epoch; columns in the order they first appear."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: _fmt(row.get(k)) for k in columns})


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


def _with_progress_bar(batches: list[Any], enabled: bool, epoch: int, epochs: int) -> Any:
    if not enabled:
        return batches
    from tqdm import tqdm

    return tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)


def export_model(checkpoint: str | os.PathLike, folder: str | os.PathLike, name: str,
                 description: str | None = None, half: bool = True) -> Path:
    """Install a trained checkpoint as a named card with its weights (fp16 by default).

    Writes ``folder/NAME.pt`` (state dict + card, ``half`` stores floats as fp16: half the
    size, and the network is rebuilt in fp32 on loading) and ``folder/NAME.json``, the card
    naming that file and its sha256. Returns the card's path.
    """
    import hashlib

    from wsiseg.models import ModelCard
    from wsiseg.models.loading import checkpoint_payload, write_checkpoint

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    card = ModelCard.from_dict(state["card"], source=str(checkpoint))
    weights = {k: (v.half() if half and v.is_floating_point() else v)
               for k, v in state["state_dict"].items()}
    card = replace(card, name=name, description=description or card.description)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights_path = write_checkpoint(folder / f"{name}.pt", checkpoint_payload(weights, card))
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    card_path = folder / f"{name}.json"
    with atomic_write(card_path) as f:
        f.write(replace(card, weights=weights_path.name, weights_sha256=digest).to_json() + "\n")
    return card_path
