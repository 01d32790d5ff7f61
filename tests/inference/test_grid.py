"""The patch grid and the tissue fraction of each window."""

from __future__ import annotations

import numpy as np
import pytest

from wsiseg.errors import ConfigError
from wsiseg.inference.grid import PatchGrid, window_tissue_fractions


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
