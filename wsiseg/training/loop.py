"""Training a registered network on a folder of annotated images: ``train(config)``.

Images are brought to the model card's resolution once and kept in memory. Each epoch draws
random square crops from every training image (flips, 90 degree rotations, colour jitter),
trains with the network's own criterion (:mod:`wsiseg.training.losses`), then segments every held-out
image whole and scores it. ``last.pt`` is written after every epoch and ``best.pt`` when the
selection score improves; both are ordinary checkpoints (state dict + card) that
``wsiseg predict --model`` takes, and ``last.pt`` also holds what resuming needs. Runs are
reproducible: the split, the initial weights and every crop follow from ``seed``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsiseg.training.datasets import IGNORE_INDEX, LabelScheme, Sample, load_folder, read_attributes
from wsiseg.errors import ConfigError, ModelError, OutputError
from wsiseg.training.metrics import Scores, confusion_matrix
from wsiseg.inference.predictor import Normalisation, Predictor, resolve_device, segment_image

logger = logging.getLogger(__name__)

TRAIN_STATE_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved in its checkpoints.

    ``model`` is a registered network name; ``arguments`` override its constructor arguments
    (``num_classes`` follows the label scheme). ``lr`` is the decoder's learning rate and the
    encoder's is ``lr * encoder_lr_scale`` (HSP-Net: 10x smaller for a pretrained encoder).
    ``loss_options`` are keyword arguments of the network's criterion.
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


@dataclass(frozen=True)
class TrainResult:
    best: Path
    last: Path
    metrics: Path
    best_epoch: int
    best_score: float
    epochs_run: int


# --- augmentation ----------------------------------------------------------------------------


def colour_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.1,
                  contrast: float = 0.1, saturation: float = 0.1, hue: float = 0.03) -> np.ndarray:
    """Random brightness, contrast, saturation and hue shifts of an (H, W, 3) uint8 image.

    Hue turns the chroma of the YIQ colour space by up to ``hue`` of a full turn, which keeps
    luminance; stain intensity and hue vary this much between labs and scanners.
    """
    x = image.astype(np.float32) / 255.0
    x = x * rng.uniform(1 - brightness, 1 + brightness)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
    grey = x @ np.float32([0.299, 0.587, 0.114])
    x = (x - grey[..., None]) * rng.uniform(1 - saturation, 1 + saturation) + grey[..., None]
    angle = rng.uniform(-hue, hue) * 2 * math.pi
    if angle:
        to_yiq = np.float32([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                             [0.211, -0.523, 0.312]])
        c, s = math.cos(angle), math.sin(angle)
        turn = np.float32([[1, 0, 0], [0, c, -s], [0, s, c]])
        x = x @ (np.linalg.inv(to_yiq) @ turn @ to_yiq).T.astype(np.float32)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def random_crop(sample: Sample, size: int, rng: np.random.Generator,
                augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size`` x ``size`` crop of image and target, flipped, turned and jittered."""
    h, w = sample.target.shape
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    image = sample.image[y:y + size, x:x + size]
    target = sample.target[y:y + size, x:x + size]
    if augment:
        k = int(rng.integers(0, 4))
        image, target = np.rot90(image, k), np.rot90(target, k)
        if rng.random() < 0.5:
            image, target = image[:, ::-1], target[:, ::-1]
        image = colour_jitter(np.ascontiguousarray(image), rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(target)


def crop_size_for(samples: Sequence[Sample], patch_size: int, multiple: int = 32) -> int:
    """The card's patch size, or the largest multiple of ``multiple`` every image can give."""
    smallest = min(min(s.target.shape) for s in samples)
    size = min(patch_size, smallest)
    if size >= multiple:
        size -= size % multiple
    return size


# --- split and batches -----------------------------------------------------------------------


def split_samples(samples: Sequence[Sample], fraction: float, seed: int,
                  groups: Sequence[str] | None = None) -> tuple[list[Sample], list[Sample]]:
    """Hold out about ``fraction`` of the images; whole groups (e.g. patients) stay together."""
    if not 0 < fraction < 1:
        raise ConfigError(f"validation fraction {fraction} must be between 0 and 1; or give "
                          "--val-data")
    keys = list(groups) if groups is not None else [s.name for s in samples]
    unique = sorted(set(keys))
    random.Random(seed).shuffle(unique)
    n_val = max(1, round(fraction * len(unique)))
    if n_val >= len(unique):
        raise ConfigError(f"{len(unique)} image group(s) are too few to hold {fraction:.0%} "
                          "out for validation; give --val-data or more images")
    held = set(unique[:n_val])
    train = [s for s, k in zip(samples, keys) if k not in held]
    val = [s for s, k in zip(samples, keys) if k in held]
    return train, val


def _batches(samples: Sequence[Sample], config: TrainConfig, size: int,
             epoch: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng([config.seed, epoch])
    order = np.concatenate([rng.permutation(len(samples))
                            for _ in range(config.crops_per_image)])
    n = len(order) - len(order) % config.batch_size  # full batches: BatchNorm needs >= 2
    batches = []
    for start in range(0, n, config.batch_size):
        crops = [random_crop(samples[i], size, rng) for i in order[start:start + config.batch_size]]
        grades = np.array([samples[i].grade for i in order[start:start + config.batch_size]])
        batches.append((np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops]), grades))
    return batches


# --- run -------------------------------------------------------------------------------------


def _bf16_cpu() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _autocast(device: torch.device, amp: str) -> torch.dtype | None:
    if amp in ("none", "off", "fp32"):
        return None
    if amp not in ("auto", "bf16", "fp16"):
        raise ConfigError(f"unknown precision {amp!r}; use auto, bf16, fp16 or fp32")
    if device.type == "cuda":
        if amp == "fp16":
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # On CPUs bf16 pays only with native support; elsewhere it is slower than fp32.
    if amp == "fp16":
        raise ConfigError("fp16 training needs CUDA; use --amp bf16 or fp32 on the CPU")
    return torch.bfloat16 if (amp == "bf16" or _bf16_cpu()) else None


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
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    raise ConfigError(f"unknown optimizer {config.optimizer!r}; use sgd or adamw")


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


def evaluate_samples(predictor: Predictor, samples: Sequence[Sample],
                     class_names: Sequence[str]) -> Scores:
    """Segment each image whole and score it against its target (see :mod:`wsiseg.training.metrics`)."""
    matrix = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    for s in samples:
        predicted = segment_image(predictor, s.image).argmax(axis=0)
        matrix += confusion_matrix(s.target, predicted, len(class_names), IGNORE_INDEX)
    return Scores.from_matrix(matrix, class_names)


def _score(scores: Scores, select_by: str) -> float:
    value = scores.to_dict().get(select_by)
    if not isinstance(value, (int, float)):
        raise ConfigError(f"cannot select checkpoints by {select_by!r}; use mean_dice, "
                          "mean_iou or pixel_accuracy")
    return float(value)


def _write_atomic(payload: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(f"cannot write {path} ({err.strerror or err}); check free space and "
                          "that the folder is writable") from err


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` on ``config.data``; see the module docstring."""
    from wsiseg.training.losses import criterion_for
    from wsiseg.models import ClassInfo, create_model, default_card
    from wsiseg.models.loading import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

    base_card = default_card(config.model)
    if config.image_mpp is None:
        raise ConfigError(f"the resolution of the images in {config.data} is not known; pass "
                          "--image-mpp (um per pixel, e.g. 0.62 for GlaS at x20)")
    scheme = (LabelScheme.from_file(config.classes) if config.classes
              else LabelScheme.identity([(c.index, c.name, c.color) for c in base_card.classes]))
    attributes = (read_attributes(config.attributes, config.attributes_key)
                  if config.attributes else None)
    if scheme.attribute_columns and attributes is None:
        raise ConfigError(f"the label scheme uses attributes {sorted(scheme.attribute_columns)}; "
                          "pass --attributes with a CSV that has them")
    samples = load_folder(config.data, scheme, config.image_mpp, base_card.mpp, attributes)
    if config.val_data is not None:
        train_set = samples
        val_set = load_folder(config.val_data, scheme, config.image_mpp, base_card.mpp, attributes)
    else:
        groups = None
        if config.split_by:
            rows = attributes or {}
            missing = [s.name for s in samples if config.split_by not in rows.get(s.name, {})]
            if missing:
                raise ConfigError(f"image {missing[0]} has no {config.split_by!r} attribute to "
                                  "split by; fix --attributes or drop --split-by")
            groups = [rows[s.name][config.split_by] for s in samples]
        train_set, val_set = split_samples(samples, config.val_fraction, config.seed, groups)
    if config.batch_size < 2:
        raise ConfigError("batch size must be at least 2 (BatchNorm needs two samples)")
    if len(train_set) * config.crops_per_image < config.batch_size:
        raise ConfigError(f"{len(train_set)} training images x {config.crops_per_image} crops "
                          f"do not fill one batch of {config.batch_size}; lower --batch-size")

    classes = tuple(ClassInfo(i, n, tuple(c)) for i, n, c in scheme.classes())
    arguments = {**base_card.arguments, **dict(config.arguments), "num_classes": len(classes)}
    card = replace(base_card, name=config.name or f"{config.model}-trained", classes=classes,
                   arguments=arguments, weights=None, weights_sha256=None,
                   description=f"{config.model} trained by wsiseg on {Path(config.data).name}")
    size = config.crop_size or crop_size_for(train_set, base_card.patch_size)
    if size > min(min(s.target.shape) for s in train_set):
        raise ConfigError(f"crop size {size} is larger than the smallest training image; "
                          "lower --crop-size")

    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dtype = _autocast(device, config.amp)
    torch.manual_seed(config.seed)
    try:
        module = create_model(config.model, **arguments)
    except ModelError as err:
        raise ConfigError(f"cannot build {config.model}: {err}") from err
    module = module.to(device)
    if device.type == "cpu":
        module = module.to(memory_format=torch.channels_last)
    criterion = criterion_for(module, **dict(config.loss_options))
    optimizer = _optimizer(module, config)
    steps = (len(train_set) * config.crops_per_image) // config.batch_size
    scheduler = _schedule(optimizer, steps, config)

    out = Path(config.out)
    last_path, best_path, csv_path = out / "last.pt", out / "best.pt", out / "metrics.csv"
    history: list[dict[str, Any]] = []
    start_epoch, best_score, best_epoch = 0, -math.inf, -1
    if config.resume and last_path.exists():
        state = _read_state(last_path)
        _check_resumable(state, config, card, last_path)
        module.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        start_epoch, best_score, best_epoch = (state["epoch"] + 1, state["best_score"],
                                               state["best_epoch"])
        logger.info("resuming %s after epoch %d", last_path, state["epoch"] + 1)
    elif last_path.exists():
        raise OutputError(f"{out} already holds a training run ({last_path.name}); pass --resume "
                          "to continue it or choose another --out")
    else:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create {out} ({err.strerror or err})") from err

    norm = Normalisation(card.mean, card.std, card.channel_order)
    mean = torch.tensor(card.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(card.std, device=device).view(1, 3, 1, 1)
    order = [2, 1, 0] if card.channel_order.upper() == "BGR" else [0, 1, 2]
    names = [c.name for c in classes]
    logger.info("training %s on %d images (%d held out), crops %d px, %d steps/epoch, %s%s",
                config.model, len(train_set), len(val_set), size, steps, device,
                f" {dtype}" if dtype else "")

    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)
        module.train()
        sums: dict[str, float] = {}
        batches = _batches(train_set, config, size, epoch)
        for images, targets, grades in _progress(batches, config.progress, epoch, config.epochs):
            x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2)[:, order].float() / 255.0
            x = ((x - mean) / std).contiguous(
                memory_format=torch.channels_last if device.type == "cpu" else torch.contiguous_format)
            batch = {"target": torch.from_numpy(targets).to(device).long(),
                     "grade": torch.from_numpy(grades).to(device).long()}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outputs = _forward_train(module, x)
            loss, parts = criterion(_as_float(outputs), batch)
            if not torch.isfinite(loss):
                raise ModelError(f"the loss became {float(loss)} in epoch {epoch + 1}; lower --lr "
                                 "or use --amp fp32")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        train_seconds = time.perf_counter() - t0
        predictor = Predictor(module, len(classes), norm, device, amp="auto")
        scores = evaluate_samples(predictor, val_set, names)
        score = _score(scores, config.select_by)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[-1]["lr"],
               **{f"train_{k}": v / max(1, len(batches)) for k, v in sums.items()},
               **{f"val_{k}": v for k, v in _flat_scores(scores).items()},
               "seconds": round(time.perf_counter() - t0, 2),
               "train_seconds": round(train_seconds, 2)}
        history.append(row)
        improved = score > best_score
        if improved:
            best_score, best_epoch = score, epoch
            _write_atomic(_payload(module, card, CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                                   extra={"epoch": epoch, "scores": scores.to_dict()}), best_path)
        _write_atomic(_payload(module, card, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, extra={
            "train_state_version": TRAIN_STATE_VERSION, "config": config.to_json_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "history": history, "best_score": best_score,
            "best_epoch": best_epoch}), last_path)
        _write_csv(csv_path, history)
        logger.info("epoch %d/%d: loss %.4f, val %s %.4f%s (%.0f s)", epoch + 1, config.epochs,
                    row.get("train_loss", float("nan")), config.select_by, score,
                    " (best)" if improved else "", row["seconds"])
    if best_epoch < 0:
        raise ConfigError(f"{out} already ran all {config.epochs} epochs; raise --epochs to "
                          "train on")
    return TrainResult(best_path, last_path, csv_path, best_epoch + 1, best_score, len(history))


def _as_float(outputs: dict[str, Any]) -> dict[str, Any]:
    def cast(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.float()
        if isinstance(v, (list, tuple)):
            return [cast(u) for u in v]
        return v

    return {k: cast(v) for k, v in outputs.items()}


def _flat_scores(scores: Scores) -> dict[str, float]:
    d = scores.to_dict()
    flat = {k: d[k] for k in ("mean_dice", "mean_iou", "pixel_accuracy") if k in d}
    for name, per in (d.get("classes") or {}).items():
        flat[f"dice_{name.replace(' ', '_')}"] = per.get("dice")
    return flat


def _payload(module: torch.nn.Module, card: Any, fmt: str, version: int,
             extra: dict[str, Any]) -> dict[str, Any]:
    state = {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
             for k, v in module.state_dict().items()}
    return {"format": fmt, "version": version, "card": card.to_dict(), "state_dict": state,
            **extra}


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
    saved = dict(state["config"])
    now = config.to_json_dict()
    # Only the length of the run and how it is watched may change on resume.
    free = {"epochs", "resume", "progress", "threads", "device"}
    changed = sorted(k for k in now if k not in free and saved.get(k) != now[k])
    if changed:
        raise ConfigError(f"{path} was trained with other settings ({', '.join(changed)}); "
                          "resume with the same settings or start a new run in another --out")


def _write_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: _fmt(row.get(k)) for k in columns})
    os.replace(tmp, path)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


def _progress(batches: list[Any], enabled: bool, epoch: int, epochs: int) -> Any:
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
    from wsiseg.models.loading import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    card = ModelCard.from_dict(state["card"], source=str(checkpoint))
    weights = {k: (v.half() if half and v.is_floating_point() else v)
               for k, v in state["state_dict"].items()}
    card = replace(card, name=name, description=description or card.description)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights_path = folder / f"{name}.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "card": card.to_dict(), "state_dict": weights}, weights_path)
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    card_path = folder / f"{name}.json"
    card_path.write_text(replace(card, weights=weights_path.name, weights_sha256=digest).to_json()
                         + "\n")
    return card_path
