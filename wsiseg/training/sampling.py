"""What a training epoch sees: the held-out split, random augmented crops and their batches.

Pure numpy: every draw comes from a generator seeded by the run's ``seed`` (and the epoch), so
a run's split and crops are the same each time it is run or resumed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

from wsiseg.errors import ConfigError
from wsiseg.training.datasets import Sample

#: One batch: uint8 crops (n, S, S, 3), their targets (n, S, S) and the images' grades (n,).
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


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


def epoch_batches(samples: Sequence[Sample], size: int, batch_size: int, crops_per_image: int,
                  seed: int, epoch: int) -> list[Batch]:
    """The batches of one epoch: ``crops_per_image`` shuffled passes over the images.

    A last batch that would be short is dropped: BatchNorm needs at least two samples.
    """
    rng = np.random.default_rng([seed, epoch])
    order = np.concatenate([rng.permutation(len(samples)) for _ in range(crops_per_image)])
    n = len(order) - len(order) % batch_size
    batches = []
    for start in range(0, n, batch_size):
        chosen = order[start:start + batch_size]
        crops = [random_crop(samples[i], size, rng) for i in chosen]
        grades = np.array([samples[i].grade for i in chosen])
        batches.append((np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops]), grades))
    return batches
