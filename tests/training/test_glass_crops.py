"""Crops over an image laid on glass, and stain jitter: what teaches a network tissue edges."""

from __future__ import annotations

import numpy as np
import pytest

from wsiseg.training.datasets import Sample
from wsiseg.training.sampling import (
    GLASS_CLASS,
    GLASS_GRAIN,
    GLASS_SHADES,
    GLASS_TINT,
    epoch_batches,
    glass_pixels,
    place_on_glass,
    random_crop,
    stain_jitter,
)

TISSUE = (120, 40, 150)  # far from any glass shade


def tissue_sample(h: int, w: int, label: int = 2) -> Sample:
    image = np.empty((h, w, 3), dtype=np.uint8)
    image[:] = TISSUE
    return Sample("t", image, np.full((h, w), label, dtype=np.uint8), 0)


def image_part(image: np.ndarray) -> np.ndarray:
    return np.all(image == TISSUE, axis=-1)


@pytest.mark.parametrize("h, w", [(40, 60), (10, 12), (24, 5)])
def test_a_window_on_glass_holds_the_image_and_labels_the_glass_background(h, w):
    size, half = 24, 12
    sample = tissue_sample(h, w)
    low = GLASS_SHADES[0] - GLASS_TINT - 6 * GLASS_GRAIN
    tops, lefts = set(), set()
    for seed in range(200):
        image, target = place_on_glass(sample, size, np.random.default_rng(seed))
        assert image.shape == (size, size, 3) and target.shape == (size, size)
        inside = image_part(image)
        # The labels follow the pixels: the image keeps its class, the glass is background.
        assert np.all(target[inside] == 2) and np.all(target[~inside] == GLASS_CLASS)
        assert not (~inside).any() or image[~inside].min() >= low
        rows, cols = np.nonzero(inside)
        # The image is one rectangle, at least min(side, half) along each axis.
        assert inside.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        assert np.ptp(rows) + 1 >= min(h, half) and np.ptp(cols) + 1 >= min(w, half)
        tops.add(rows.min())
        lefts.add(cols.min())
    # Windows run past the top and left edges (the image starts inside the window), and a
    # window may start inside the image only where the image is at least half a window long.
    assert max(tops) > 0 and max(lefts) > 0
    assert (0 in tops) == (h >= half) and (0 in lefts) == (w >= half)


def test_glass_is_near_white_with_varied_shade_and_grain():
    means = []
    for seed in range(30):
        piece = glass_pixels((32, 32), np.random.default_rng(seed)).astype(float)
        assert piece.shape == (32, 32, 3)
        means.append(piece.mean(axis=(0, 1)))
        assert piece.std(axis=(0, 1)).max() <= GLASS_GRAIN + 1
    means = np.array(means)
    assert means.min() >= GLASS_SHADES[0] - GLASS_TINT - 1
    assert means.max() <= GLASS_SHADES[1] + GLASS_TINT + 1
    assert np.ptp(means[:, 0]) > 10  # the shade differs from slide to slide


def test_random_crop_uses_glass_at_the_share_asked_and_when_the_image_is_too_small():
    big = tissue_sample(64, 64)
    with_glass = sum(bool((~image_part(random_crop(big, 32, np.random.default_rng(s),
                                                   augment=False, glass=0.5)[0])).any())
                     for s in range(200))
    assert 60 < with_glass < 140  # a window inside the image sometimes touches no glass
    never = [random_crop(big, 32, np.random.default_rng(s), augment=False)[0] for s in range(50)]
    assert all(image_part(c).all() for c in never)
    small = tissue_sample(20, 64)
    for s in range(20):
        image, target = random_crop(small, 32, np.random.default_rng(s), glass=0.01)
        assert image.shape == (32, 32, 3) and (target == GLASS_CLASS).any()


def test_without_glass_or_stain_the_crops_are_the_ones_drawn_before():
    """Runs that do not ask for the new augmentations draw exactly the same crops as ever."""
    sample = tissue_sample(50, 50)
    sample.image[:] = np.random.default_rng(3).integers(0, 256, sample.image.shape)
    a = random_crop(sample, 24, np.random.default_rng(9))
    b = random_crop(sample, 24, np.random.default_rng(9), glass=0.0, stain=0.0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_stain_jitter_round_trips_and_moves_colours_more_the_stronger_it_is():
    image = np.random.default_rng(0).integers(30, 256, (32, 32, 3), dtype=np.uint8)
    assert stain_jitter(image, np.random.default_rng(1), 0.0) is image
    tiny = stain_jitter(image, np.random.default_rng(1), 1e-9)
    assert np.abs(tiny.astype(int) - image).max() <= 1  # optical density there and back
    change = []
    for sigma in (0.02, 0.2):
        moved = [np.abs(stain_jitter(image, np.random.default_rng(s), sigma).astype(int)
                        - image).mean() for s in range(10)]
        change.append(np.mean(moved))
    assert 0 < change[0] < change[1]
    again = stain_jitter(image, np.random.default_rng(5), 0.1)
    assert np.array_equal(again, stain_jitter(image, np.random.default_rng(5), 0.1))


def test_stain_jitter_scales_a_pure_stain_along_its_own_colour():
    """A pixel of haematoxylin alone stays haematoxylin: only its amount changes."""
    from wsiseg.training.sampling import _RGB_FROM_HED

    od = 0.6 * _RGB_FROM_HED[0]
    pixel = np.rint(255 * 10 ** -od).astype(np.uint8)
    image = np.tile(pixel, (8, 8, 1))
    rng = np.random.default_rng(2)
    jittered = stain_jitter(image, rng, 0.1)[0, 0]
    od_after = -np.log10(np.maximum(jittered, 1) / 255.0)
    od_before = -np.log10(pixel / 255.0)
    # Without the shift the direction is kept exactly; the shift tilts it by at most 0.1 OD.
    cosine = od_after @ od_before / np.linalg.norm(od_after) / np.linalg.norm(od_before)
    assert cosine > 0.95


def test_epoch_batches_on_glass_repeat_for_the_same_seed():
    samples = [tissue_sample(20, 30) for _ in range(4)]
    a = epoch_batches(samples, 32, 2, 2, seed=4, epoch=1, glass=0.5, stain=0.05)
    b = epoch_batches(samples, 32, 2, 2, seed=4, epoch=1, glass=0.5, stain=0.05)
    assert len(a) == 4
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert all((batch[1] == GLASS_CLASS).any() for batch in a)
