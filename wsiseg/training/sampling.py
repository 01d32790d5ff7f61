"""What a training epoch sees: the held-out split, random augmented crops and their batches.

A crop is drawn from inside its image, or, with probability ``glass``, from the image placed on
glass: a window that may run up to half its size past any edge of the image, the rest filled
with near-white glass of a random shade and grain and labelled background (class 0), as a
window of the pipeline sees the edge of tissue on a slide. Crops are then turned, flipped,
stain-jittered in the haematoxylin-eosin-DAB space (``stain``) and colour-jittered.

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

#: The class glass is labelled with: the map's background.
GLASS_CLASS = 0
#: Glass of a scanned slide: each channel's shade is drawn from this range, grain up to
#: ``GLASS_GRAIN`` grey levels (standard deviation).
GLASS_SHADES = (222.0, 252.0)
GLASS_TINT = 4.0
GLASS_GRAIN = 3.0

# Ruifrok & Johnston's stain vectors (haematoxylin, eosin, DAB) as rows, in optical density.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = (_RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True))
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def stain_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Scale and shift each stain's optical density of an (H, W, 3) uint8 image.

    Each of haematoxylin, eosin and DAB is multiplied by a factor in ``1 +- sigma`` and shifted
    by up to ``+- sigma`` optical density (Tellez et al. 2018: 0.05 is light, 0.2 strong):
    the differences between labs' staining and scanners, drawn per crop.
    """
    if sigma <= 0:
        return image
    alpha = rng.uniform(1 - sigma, 1 + sigma, 3)
    beta = rng.uniform(-sigma, sigma, 3)
    od = -np.log10(np.maximum(image.astype(np.float32), 1.0) / 255.0)
    matrix = (_HED_FROM_RGB * alpha[None, :]) @ _RGB_FROM_HED
    od = od @ matrix.astype(np.float32) + (beta @ _RGB_FROM_HED).astype(np.float32)
    jittered: np.ndarray = np.clip(np.rint(255.0 * np.power(10.0, -od)), 0, 255).astype(np.uint8)
    return jittered


def glass_pixels(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 3) uint8 piece of glass: a random near-white shade, tint and grain."""
    shade = rng.uniform(*GLASS_SHADES) + rng.uniform(-GLASS_TINT, GLASS_TINT, 3)
    grain = rng.uniform(0, GLASS_GRAIN)
    pixels = shade + grain * rng.standard_normal((*shape, 3), dtype=np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def place_on_glass(sample: Sample, size: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` window over the image laid on glass, glass labelled background.

    The window's corner is uniform over every position where it runs at most ``size // 2``
    past the image on each side, so it always holds at least ``min(side, size // 2)`` of the
    image along each axis, and images smaller than the window sit somewhere inside it.
    """
    h, w = sample.target.shape
    half = size // 2
    y = int(rng.integers(-half, max(-half, h - size + half) + 1))
    x = int(rng.integers(-half, max(-half, w - size + half) + 1))
    image = glass_pixels((size, size), rng)
    target = np.full((size, size), GLASS_CLASS, dtype=sample.target.dtype)
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + size, h), min(x + size, w)
    image[y0 - y:y1 - y, x0 - x:x1 - x] = sample.image[y0:y1, x0:x1]
    target[y0 - y:y1 - y, x0 - x:x1 - x] = sample.target[y0:y1, x0:x1]
    return image, target


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
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey[..., None]) * rng.uniform(1 - saturation, 1 + saturation) + grey[..., None]
    angle = rng.uniform(-hue, hue) * 2 * math.pi
    if angle:
        to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                           [0.211, -0.523, 0.312]], dtype=np.float32)
        c, s = math.cos(angle), math.sin(angle)
        turn = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)
        x = x @ (np.linalg.inv(to_yiq) @ turn @ to_yiq).T.astype(np.float32)
    jittered: np.ndarray = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return jittered


def random_crop(sample: Sample, size: int, rng: np.random.Generator, augment: bool = True,
                glass: float = 0.0, stain: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size`` x ``size`` crop of image and target, flipped, turned and jittered.

    With probability ``glass``, and always when the image is smaller than the crop, the crop
    is a window over the image laid on glass (:func:`place_on_glass`).
    """
    h, w = sample.target.shape
    if glass > 0 and (min(h, w) < size or rng.random() < glass):
        image, target = place_on_glass(sample, size, rng)
    else:
        y = int(rng.integers(0, h - size + 1))
        x = int(rng.integers(0, w - size + 1))
        image = sample.image[y:y + size, x:x + size]
        target = sample.target[y:y + size, x:x + size]
    if augment:
        k = int(rng.integers(0, 4))
        image, target = np.rot90(image, k), np.rot90(target, k)
        if rng.random() < 0.5:
            image, target = image[:, ::-1], target[:, ::-1]
        image = np.ascontiguousarray(image)
        if stain > 0:
            image = stain_jitter(image, rng, stain)
        image = colour_jitter(image, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(target)


def crop_size_for(samples: Sequence[Sample], patch_size: int, multiple: int = 32) -> int:
    """The card's patch size, or the largest multiple of ``multiple`` every image can give."""
    smallest: int = min(min(s.target.shape) for s in samples)
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
                  seed: int, epoch: int, glass: float = 0.0, stain: float = 0.0) -> list[Batch]:
    """The batches of one epoch: ``crops_per_image`` shuffled passes over the images.

    A last batch that would be short is dropped: BatchNorm needs at least two samples.
    """
    rng = np.random.default_rng([seed, epoch])
    order = np.concatenate([rng.permutation(len(samples)) for _ in range(crops_per_image)])
    n = len(order) - len(order) % batch_size
    batches = []
    for start in range(0, n, batch_size):
        chosen = order[start:start + batch_size]
        crops = [random_crop(samples[i], size, rng, glass=glass, stain=stain)
                 for i in chosen]
        grades = np.array([samples[i].grade for i in chosen])
        batches.append((np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops]), grades))
    return batches
