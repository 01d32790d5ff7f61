"""What an epoch sees: held-out split, augmented crops that keep image and target aligned, batches."""

from __future__ import annotations

import numpy as np
import pytest

from wsiseg.errors import ConfigError
from wsiseg.training.datasets import Sample
from wsiseg.training.sampling import (
    colour_jitter,
    crop_size_for,
    epoch_batches,
    random_crop,
    split_samples,
)


def labelled_sample(name: str, h: int, w: int, grade: int = -1) -> Sample:
    """An image whose red channel is its own class map, so a crop can be checked for alignment."""
    target = (np.arange(h * w).reshape(h, w) % 7).astype(np.uint8)
    image = np.stack([target * 30, np.full_like(target, 128), np.full_like(target, 64)], axis=-1)
    return Sample(name, image, target, grade)


def test_colour_jitter_keeps_shape_and_without_ranges_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    jittered = colour_jitter(image, np.random.default_rng(1))
    assert jittered.shape == image.shape and jittered.dtype == np.uint8
    assert not np.array_equal(jittered, image)
    same = colour_jitter(image, np.random.default_rng(1), 0, 0, 0, 0)
    assert np.abs(same.astype(int) - image).max() <= 1  # float round trip only


def test_random_crop_turns_image_and_target_together():
    sample = labelled_sample("a", 40, 56)
    for seed in range(8):
        image, target = random_crop(sample, 24, np.random.default_rng(seed), augment=False)
        assert image.shape == (24, 24, 3) and target.shape == (24, 24)
        assert np.array_equal(image[..., 0], target * 30)
        image, target = random_crop(sample, 24, np.random.default_rng(seed))
        assert image.flags.c_contiguous and target.flags.c_contiguous
        # Jitter moves colours, but pixels of one class still share one colour.
        for k in np.unique(target):
            assert len(np.unique(image[target == k], axis=0)) == 1


def test_crop_size_is_the_patch_size_or_what_the_smallest_image_gives():
    samples = [labelled_sample("a", 300, 400), labelled_sample("b", 200, 250)]
    assert crop_size_for(samples, 128) == 128
    assert crop_size_for(samples, 512) == 192  # 200 rounded down to a multiple of 32
    assert crop_size_for([labelled_sample("c", 20, 30)], 512) == 20


def test_split_keeps_groups_together_and_follows_the_seed():
    samples = [labelled_sample(f"s{i}", 8, 8) for i in range(9)]
    groups = [f"patient{i // 3}" for i in range(9)]
    train, val = split_samples(samples, 0.34, seed=5, groups=groups)
    assert len(train) + len(val) == 9
    held = {groups[int(s.name[1:])] for s in val}
    assert len(held) == 1 and all(groups[int(s.name[1:])] not in held for s in train)
    again = split_samples(samples, 0.34, seed=5, groups=groups)
    assert [s.name for s in again[1]] == [s.name for s in val]


@pytest.mark.parametrize("fraction, match", [(0.0, "between 0 and 1"),
                                             (0.9, "too few to hold")])
def test_split_refuses_what_cannot_be_held_out(fraction, match):
    samples = [labelled_sample(f"s{i}", 8, 8) for i in range(3)]
    with pytest.raises(ConfigError, match=match):
        split_samples(samples, fraction, seed=0)


def test_epoch_batches_are_full_and_repeat_for_the_same_seed_and_epoch():
    samples = [labelled_sample(f"s{i}", 48, 48, grade=i % 2) for i in range(5)]
    batches = epoch_batches(samples, 32, batch_size=2, crops_per_image=3, seed=1, epoch=0)
    assert len(batches) == 7  # 15 crops: the short last batch is dropped
    assert all(b[0].shape == (2, 32, 32, 3) and b[1].shape == (2, 32, 32) and b[2].shape == (2,)
               for b in batches)
    again = epoch_batches(samples, 32, batch_size=2, crops_per_image=3, seed=1, epoch=0)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))
    other = epoch_batches(samples, 32, batch_size=2, crops_per_image=3, seed=1, epoch=1)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(batches, other))
