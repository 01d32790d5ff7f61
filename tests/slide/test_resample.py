"""Exact area resampling, whole and in pieces."""

from __future__ import annotations

import numpy as np
import pytest

from wsiseg.slide.resample import area_weights, resample_area


def test_integer_ratio_is_block_mean():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    fy, ny, wy = area_weights(0, 20, 0.0, 2.0)
    fx, nx, wx = area_weights(0, 30, 0.0, 2.0)
    assert (fy, ny, fx, nx) == (0, 40, 0, 60)
    got = resample_area(img, wy, wx)
    want = np.rint(img.reshape(20, 2, 30, 2, 3).astype(np.float64).mean(axis=(1, 3)))
    assert np.abs(got.astype(int) - want).max() <= 1  # float32 vs float64 rounding at .5


def test_fractional_ratio_matches_naive_area_average():
    rng = np.random.default_rng(1)
    row = rng.random(50)
    ratio, origin = 2.004, 0.3
    first, n_in, w = area_weights(3, 10, origin, ratio)
    for k in range(10):
        lo, hi = origin + (3 + k) * ratio, origin + (4 + k) * ratio
        xs = np.linspace(lo, hi, 200001)[:-1] + (hi - lo) / 400002
        naive = row[np.floor(xs).astype(int)].mean()
        got = (w[k].toarray()[0] * row[first : first + n_in]).sum()
        assert got == pytest.approx(naive, abs=1e-4)
    assert np.allclose(w.sum(axis=1), 1.0)


def test_resampling_in_pieces_is_bit_identical_to_whole():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (120, 130, 3), dtype=np.uint8)
    ratio = 2.004
    n_out = int(118 / ratio)
    fy, ny, wy = area_weights(0, n_out, 0.0, ratio)
    fx, nx, wx = area_weights(0, n_out, 0.0, ratio)
    whole = resample_area(img[fy : fy + ny, fx : fx + nx], wy, wx)
    for y0, h in ((0, 17), (17, 20), (37, n_out - 37)):
        fy, ny, wy = area_weights(y0, h, 0.0, ratio)
        fx, nx, wx = area_weights(5, 30, 0.0, ratio)
        piece = resample_area(img[fy : fy + ny, fx : fx + nx], wy, wx)
        assert np.array_equal(piece, whole[y0 : y0 + h, 5:35])
