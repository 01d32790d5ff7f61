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
        plan_geometry((1.0,), (0, 0, 300, 250), (8.0, 8.0), 1.0, source="overview.tiff")
    # A resolution no scanner gives is told as that, not as a coarse scan.
    with pytest.raises(ResolutionError, match="which no scanner gives"):
        plan_geometry((1.0,), (0, 0, 300, 250), (352.8, 352.8), 1.0, source="boxes.tiff")


def test_bounds_offset_is_kept():
    g = plan_geometry((1.0, 4.0), (1000, 2000, 800, 400), (0.25, 0.25), 1.0)
    assert g.offset_level0 == (1000, 2000) and (g.width, g.height) == (200, 100)
    assert g.level_origin == (250.0, 500.0)


def test_implausible_resolutions_and_map_sizes_are_refused_with_the_range():
    with pytest.raises(ResolutionError, match=r"s\.svs has a resolution of 1e-09 um/px.*0\.01-100"):
        plan_geometry((1.0,), (0, 0, 1000, 1000), (1e-9, 1e-9), 1.0, source="s.svs")
    with pytest.raises(ResolutionError, match=r"analysis resolution 1e\+09 um/px.*0\.05-100"):
        plan_geometry((1.0,), (0, 0, 1000, 1000), (0.25, 0.25), 1e9)
    with pytest.raises(ResolutionError, match=r"a 2500000 x 1000 map .* --slide-mpp"):
        plan_geometry((1.0,), (0, 0, 10**7, 4000), (0.25, 0.25), 1.0, source="s.svs")
    assert plan_geometry((1.0,), (0, 0, 10**6, 10**6), (0.25, 0.25), 1.0).width == 250_000
