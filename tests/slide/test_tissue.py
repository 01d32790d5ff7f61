"""Tissue detection and the choice of mask resolution."""

from __future__ import annotations

import numpy as np
import pytest

from wsiseg.slide.tissue import mask_factor, otsu_threshold, saturation, tissue_mask


def he_image(seed=0, size=(120, 160)):
    """Glass with two pink/purple tissue discs (one with a lumen) and a speck of dust."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.clip(rng.normal(238, 3, (h, w, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    disc1 = (yy - 50) ** 2 + (xx - 50) ** 2 < 35**2
    lumen = (yy - 50) ** 2 + (xx - 50) ** 2 < 6**2
    disc2 = (yy - 80) ** 2 + (xx - 120) ** 2 < 25**2
    truth = (disc1 | disc2)
    pink = np.array([230, 150, 190]) + rng.normal(0, 8, (h, w, 3))
    purple = np.array([120, 80, 170]) + rng.normal(0, 8, (h, w, 3))
    tissue = np.where((rng.random((h, w)) < 0.3)[..., None], purple, pink)
    img[disc1 & ~lumen] = np.clip(tissue[disc1 & ~lumen], 0, 255)
    img[disc2] = np.clip(tissue[disc2], 0, 255)
    img[5, 150] = (120, 80, 170)  # a single purple speck: not tissue
    return img, truth


def test_finds_tissue_fills_lumen_and_drops_specks():
    img, truth = he_image()
    mask = tissue_mask(img, pixel_um=10.0)
    assert (mask == truth).mean() > 0.98
    assert mask[50, 50]  # the lumen belongs to the tissue
    assert not mask[5, 150]


def test_glass_only_gives_empty_mask():
    rng = np.random.default_rng(1)
    glass = np.clip(rng.normal(240, 4, (100, 100, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass).any()


def test_all_tissue_is_not_split_in_two():
    img, _ = he_image()
    full = img.copy()
    pink = np.array([225, 160, 200], dtype=np.uint8)
    full[:] = pink
    full[::3, ::3] = (120, 80, 170)
    assert tissue_mask(full).mean() > 0.99


def test_otsu_separates_two_modes():
    values = np.concatenate([np.full(1000, 0.02), np.full(500, 0.4)])
    t = otsu_threshold(values)
    assert 0.02 < t < 0.4
    assert saturation(np.array([[[255, 0, 0], [10, 10, 10]]], dtype=np.uint8)).tolist() == [[1.0, 0.0]]


@pytest.mark.parametrize("patch,stride,mpp,want", [(400, 100, 1.0, 10), (400, 100, 0.5, 20),
                                                   (256, 64, 1.0, 8), (97, 13, 1.0, 10)])
def test_mask_factor_divides_the_grid_when_it_can(patch, stride, mpp, want):
    assert mask_factor(patch, stride, mpp) == want
