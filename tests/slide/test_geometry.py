"""Pure geometry: which level is read and how the analysis image maps to level 0."""

from __future__ import annotations

import pytest

from wsiseg.errors import ResolutionError
from wsiseg.slide.geometry import plan_geometry


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
