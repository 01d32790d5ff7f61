"""wsiseg.testing.write_scn: a Leica SCN whose image sits at a bounds offset in a larger scan."""

from __future__ import annotations

import math

import numpy as np
import openslide
import pytest

from wsiseg.slide.reader import GLASS, open_slide
from wsiseg.testing import COMPRESSIONS, area_downsample, synthetic_tissue, write_scn

LOSSLESS = [c for c in COMPRESSIONS if c != "jpeg"]
# Offsets and image size are multiples of 16, so every level of (1, 4, 16) places the image
# on whole pixels.
OFFSET = (64, 32)
HEIGHT, WIDTH = 256, 320


@pytest.fixture(scope="module")
def tissue_rgb() -> np.ndarray:
    rgb, _ = synthetic_tissue(HEIGHT, WIDTH, seed=11)
    return rgb


def bounds_of(osr: openslide.OpenSlide) -> tuple[int, int, int, int]:
    props = osr.properties
    return tuple(int(props[f"openslide.bounds-{k}"]) for k in ("x", "y", "width", "height"))


def test_scn_reports_vendor_bounds_mpp_and_levels(tmp_path, tissue_rgb):
    path = write_scn(tmp_path / "s.scn", tissue_rgb, mpp=0.5, offset=OFFSET)
    ox, oy = OFFSET
    scan = (WIDTH + 2 * ox, HEIGHT + 2 * oy)
    with openslide.OpenSlide(str(path)) as osr:
        assert openslide.OpenSlide.detect_format(str(path)) == "leica"
        assert osr.properties["openslide.vendor"] == "leica"
        assert bounds_of(osr) == (ox, oy, WIDTH, HEIGHT)
        assert osr.properties["openslide.mpp-x"] == "0.5"
        assert osr.properties["openslide.mpp-y"] == "0.5"
        assert osr.properties["openslide.objective-power"] == "20"
        assert osr.level_count == 2
        assert osr.level_dimensions == (scan, (scan[0] // 4, scan[1] // 4))
        assert osr.level_downsamples == pytest.approx((1.0, 4.0))
        macro = osr.associated_images["macro"]
        assert macro.size == scan  # small scan: the macro picture is at full resolution
        assert np.array_equal(np.asarray(macro)[oy : oy + HEIGHT, ox : ox + WIDTH, :3], tissue_rgb)


def test_scn_reads_the_image_at_the_offset_and_nothing_outside(tmp_path, tissue_rgb):
    path = write_scn(
        tmp_path / "s.scn", tissue_rgb, mpp=0.25, offset=OFFSET, downsamples=(1, 4, 16)
    )
    ox, oy = OFFSET
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.level_count == 3
        region = np.asarray(osr.read_region(OFFSET, 0, (WIDTH, HEIGHT)))
        assert (region[..., 3] == 255).all()
        assert np.array_equal(region[..., :3], tissue_rgb)
        # A sub-window that is not tile-aligned.
        x, y, w, h = 37, 201, 150, 40
        sub = np.asarray(osr.read_region((ox + x, oy + y), 0, (w, h)))[..., :3]
        assert np.array_equal(sub, tissue_rgb[y : y + h, x : x + w])
        for level, d in ((1, 4), (2, 16)):
            low = np.asarray(osr.read_region(OFFSET, level, (WIDTH // d, HEIGHT // d)))
            assert (low[..., 3] == 255).all()
            assert np.array_equal(low[..., :3], area_downsample(tissue_rgb, d))
        # Left of and above the scanned region: transparent, as OpenSlide gives empty scan.
        assert not np.asarray(osr.read_region((0, 0), 0, (ox, oy + HEIGHT))).any()
        # Straddling the bottom-right corner: the image inside, transparent outside.
        corner = np.asarray(osr.read_region((ox + WIDTH - 10, oy + HEIGHT - 6), 0, (30, 20)))
        assert (corner[:6, :10, 3] == 255).all()
        assert np.array_equal(corner[:6, :10, :3], tissue_rgb[-6:, -10:])
        assert not corner[6:].any() and not corner[:, 10:].any()


@pytest.mark.parametrize("compression", LOSSLESS)
def test_scn_lossless_compressions_read_back_bit_exact(tmp_path, compression):
    rgb = np.random.default_rng(3).integers(0, 256, (96, 80, 3), dtype=np.uint8)
    path = write_scn(tmp_path / "s.scn", rgb, mpp=0.25, offset=(16, 48), compression=compression)
    with openslide.OpenSlide(str(path)) as osr:
        assert bounds_of(osr) == (16, 48, 80, 96)
        out = np.asarray(osr.read_region((16, 48), 0, (80, 96)))[..., :3]
    assert np.array_equal(out, rgb)


def test_scn_jpeg_reads_back_close(tmp_path, tissue_rgb):
    path = write_scn(tmp_path / "s.scn", tissue_rgb, mpp=0.5, offset=OFFSET, compression="jpeg")
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.properties["openslide.vendor"] == "leica"
        assert bounds_of(osr) == (*OFFSET, WIDTH, HEIGHT)
        out = np.asarray(osr.read_region(OFFSET, 0, (WIDTH, HEIGHT)))[..., :3]
    diff = np.abs(out.astype(np.int16) - tissue_rgb.astype(np.int16))
    assert diff.mean() < 4.0
    assert np.percentile(diff, 99) < 25


@pytest.mark.parametrize(
    ("mpp", "size", "offset"),
    [(0.2527, (203, 301), (97, 61)), (0.123456, (130, 77), (1001, 3)), (0.3333, (50, 60), (0, 5))],
)
def test_scn_bounds_are_exact_for_any_mpp_offset_and_size(tmp_path, mpp, size, offset):
    # OpenSlide turns nanometres into pixels with a truncating division by a nm/px that is not
    # a whole number here: the offsets written must survive it.
    rgb = np.random.default_rng(5).integers(0, 256, (*size, 3), dtype=np.uint8)
    path = write_scn(tmp_path / "s.scn", rgb, mpp=mpp, offset=offset)
    h, w = size
    with openslide.OpenSlide(str(path)) as osr:
        assert bounds_of(osr) == (*offset, w, h)
        assert osr.level_dimensions[0] == (w + 2 * offset[0], h + 2 * offset[1])
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-6)
        assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(mpp, rel=1e-6)
        assert osr.properties["openslide.objective-power"] == f"{round(10 / mpp)}"
        out = np.asarray(osr.read_region(offset, 0, (w, h)))[..., :3]
        # The level below has the image's size, downsampled.
        dims = osr.level_dimensions
        assert len(dims) == 2 and dims[1][0] < dims[0][0]
    assert np.array_equal(out, rgb)


def test_scn_scan_size_sets_level0_size(tmp_path):
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    path = write_scn(tmp_path / "s.scn", rgb, mpp=0.5, offset=(0, 0), scan_size=(400, 64))
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.level_dimensions[0] == (400, 64)
        assert osr.level_dimensions[1] == (100, 16)
        assert bounds_of(osr) == (0, 0, 64, 64)


def test_scn_rejects_impossible_layouts(tmp_path):
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="macro"):
        write_scn(tmp_path / "a.scn", rgb, mpp=0.5, offset=(0, 0))
    with pytest.raises(ValueError, match="does not hold"):
        write_scn(tmp_path / "b.scn", rgb, mpp=0.5, offset=(10, 10), scan_size=(70, 100))
    with pytest.raises(ValueError, match="non-negative"):
        write_scn(tmp_path / "c.scn", rgb, mpp=0.5, offset=(-1, 4))
    with pytest.raises(ValueError, match="narrower"):
        write_scn(tmp_path / "d.scn", rgb[:3, :3], mpp=0.5, offset=(4, 4), downsamples=(1, 4, 8))
    with pytest.raises(ValueError, match="mpp"):
        write_scn(tmp_path / "e.scn", rgb, mpp=0.0, offset=(4, 4))


def test_wsiseg_slide_picks_up_the_bounds_and_mpp(tmp_path, tissue_rgb):
    path = write_scn(tmp_path / "s.scn", tissue_rgb, mpp=0.5, offset=OFFSET)
    ox, oy = OFFSET
    with open_slide(path) as slide:
        assert slide.vendor == "leica"
        assert slide.bounds == (ox, oy, WIDTH, HEIGHT)
        assert slide.mpp == (0.5, 0.5)
        assert slide.dimensions == (WIDTH + 2 * ox, HEIGHT + 2 * oy)
        assert np.array_equal(slide.read_level(0, ox, oy, WIDTH, HEIGHT), tissue_rgb)
        # Empty scan around the region comes back as white glass.
        assert (slide.read_level(0, 0, 0, ox, oy) == GLASS).all()
        low = slide.read_level(1, ox // 4, oy // 4, WIDTH // 4, HEIGHT // 4)
        assert np.array_equal(low, area_downsample(tissue_rgb, 4))
        assert math.isclose(slide.level_downsamples[1], 4.0)
