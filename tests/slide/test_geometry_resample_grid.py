"""Pure geometry: level choice, area resampling, the patch grid and window tissue fractions."""

from __future__ import annotations

import numpy as np
import pytest

from wsiseg.errors import ConfigError, ResolutionError
from wsiseg.slide.geometry import plan_geometry
from wsiseg.inference.grid import PatchGrid, window_tissue_fractions
from wsiseg.slide.resample import area_weights, resample_area


# -- level choice ------------------------------------------------------------------------------
def test_exact_pyramid_level_is_read_directly():
    g = plan_geometry((1.0, 4.0, 16.0), (0, 0, 4000, 3000), (0.25, 0.25), 1.0)
    assert (g.level, g.level_downsample, g.resample) == (1, 4.0, (1.0, 1.0))
    assert g.scale == (4.0, 4.0) and (g.width, g.height) == (1000, 750)
    assert g.mpp == (1.0, 1.0)


def test_between_levels_reads_finer_level_and_shrinks():
    g = plan_geometry((1.0, 4.0, 16.0), (0, 0, 2220, 2967), (0.499, 0.499), 1.0)
    assert g.level == 0 and g.resample[0] == pytest.approx(1 / 0.499)
    assert (g.width, g.height) == (1108, 1481)  # ceil(2220 * 0.499), ceil(2967 * 0.499)
    g = plan_geometry((1.0, 2.0, 8.0), (0, 0, 8000, 8000), (0.25, 0.25), 1.0)
    assert (g.level, g.resample) == (1, (2.0, 2.0))


def test_level_within_tolerance_keeps_its_own_downsample():
    # Real pyramids have downsamples like 4.0002; the level is read as it is and the output
    # records the level's true scale, not the nominal one.
    g = plan_geometry((1.0, 4.0002, 16.001), (0, 0, 4001, 3001), (0.25, 0.25), 1.0)
    assert g.level == 1 and g.is_direct and g.scale == (4.0002, 4.0002)
    assert g.mpp[0] == pytest.approx(1.00005)


def test_coarser_slide_than_target_is_refused_not_upsampled():
    with pytest.raises(ResolutionError, match="coarser than the analysis resolution"):
        plan_geometry((1.0,), (0, 0, 300, 250), (352.8, 352.8), 1.0, source="boxes.tiff")


def test_bounds_offset_is_kept():
    g = plan_geometry((1.0, 4.0), (1000, 2000, 800, 400), (0.25, 0.25), 1.0)
    assert g.offset_level0 == (1000, 2000) and (g.width, g.height) == (200, 100)
    assert g.level_origin == (250.0, 500.0)


# -- area resampling ---------------------------------------------------------------------------
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


# -- grid --------------------------------------------------------------------------------------
@pytest.mark.parametrize("width,patch,stride", [(1000, 400, 100), (1037, 400, 100), (1, 400, 100),
                                                 (333, 64, 16), (250, 90, 30)])
def test_every_pixel_sees_the_same_number_of_windows(width, patch, stride):
    grid = PatchGrid(width, 7, patch, stride)
    cover = np.zeros(width, dtype=int)
    for x in grid.xs:
        cover[max(x, 0) : min(x + patch, width)] += 1
    assert (cover == patch // stride).all()
    assert grid.xs[0] == -(patch - stride) and grid.xs[-1] <= width - 1 < grid.xs[-1] + stride


def test_grid_rejects_bad_stride():
    with pytest.raises(ConfigError, match="stride"):
        PatchGrid(100, 100, 64, 65)


def test_window_fractions_from_summed_area_table_match_direct_counts():
    rng = np.random.default_rng(3)
    factor = 10
    tissue = rng.random((37, 53)) > 0.6
    grid = PatchGrid(530, 370, 400, 100)
    got = window_tissue_fractions(tissue, factor, grid)
    assert got.shape == grid.shape
    padded = np.zeros((37 + 80, 53 + 80), dtype=bool)
    padded[30:67, 30:83] = tissue  # 30 mask px = 300 analysis px of padding on each side
    for r, y in enumerate(grid.ys):
        for c, x in enumerate(grid.xs):
            u, v = (x + 300) // factor, (y + 300) // factor
            assert got[r, c] == pytest.approx(padded[v : v + 40, u : u + 40].mean())
