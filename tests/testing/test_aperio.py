"""wsiseg.testing.aperio: the synthetic SVS slides are what they claim to be, read by OpenSlide."""

from __future__ import annotations

import math

import numpy as np
import openslide
import pytest
import tifffile

from wsiseg.testing import (
    COMPRESSIONS,
    area_downsample,
    synthetic_tissue,
    write_large_svs,
    write_svs,
)

LOSSLESS = [c for c in COMPRESSIONS if c != "jpeg"]


def saturation(rgb: np.ndarray) -> np.ndarray:
    mx = rgb.max(axis=-1).astype(np.float32)
    mn = rgb.min(axis=-1).astype(np.float32)
    return (mx - mn) / np.maximum(mx, 1)


def read_level(osr: openslide.OpenSlide, level: int) -> np.ndarray:
    rgba = np.asarray(osr.read_region((0, 0), level, osr.level_dimensions[level]))
    assert (rgba[..., 3] == 255).all()
    return rgba[..., :3]


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# -- SVS fixtures -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,size,mpp,power",
    [("svs_x40", (2000, 1600), 0.25, "40"), ("svs_x20", (1008, 800), 0.5, "20")],
)
def test_svs_fixture_metadata(request, name, size, mpp, power):
    slide = request.getfixturevalue(name)
    w, h = size
    with openslide.OpenSlide(str(slide.path)) as osr:
        props = osr.properties
        assert props["openslide.vendor"] == "aperio"
        assert osr.level_count == 3
        assert osr.level_dimensions == ((w, h), (w // 4, h // 4), (w // 16, h // 16))
        assert osr.level_downsamples == (1.0, 4.0, 16.0)  # exactly: sizes are multiples of 16
        assert float(props["openslide.mpp-x"]) == mpp and float(props["openslide.mpp-y"]) == mpp
        assert props["openslide.objective-power"] == power
        assert set(osr.associated_images) == {"thumbnail", "label"}
    assert slide.mpp == mpp and slide.downsamples == (1, 4, 16)
    assert slide.rgb_level0.shape == (h, w, 3) and slide.rgb_level0.dtype == np.uint8
    assert slide.tissue.shape == (h, w) and abs(slide.tissue.mean() - 0.4) < 0.06


def test_jpeg_svs_reads_back_within_jpeg_tolerance(tmp_path):
    rgb, _ = synthetic_tissue(384, 512, seed=1)
    path = write_svs(tmp_path / "j.svs", rgb, mpp=0.25, quality=90)
    with openslide.OpenSlide(str(path)) as osr:
        assert mean_abs_error(read_level(osr, 0), rgb) < 3
        # A level holds 16 times the detail per pixel, and 4:2:0 chroma bleeds across the
        # sharp stain edges: compare brightness (the mean of R, G, B) there.
        for level, d in ((1, 4), (2, 16)):
            got = read_level(osr, level).mean(axis=2)
            want = area_downsample(rgb, d).mean(axis=2)
            assert np.abs(got - want).mean() < 4, level
    page = tifffile.TiffFile(path).pages[0]
    assert page.compression == 7 and page.is_tiled and page.tile == (256, 256)


@pytest.mark.parametrize("compression", LOSSLESS)
def test_lossless_svs_reads_back_bit_exact_at_every_level(tmp_path, compression):
    # A size the downsamples do not divide: edge blocks are partial.
    rgb, _ = synthetic_tissue(200, 300, seed=3)
    rgb[:40, :40] = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    path = write_svs(tmp_path / "l.svs", rgb, mpp=0.5, tile=128, compression=compression)
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.properties["openslide.vendor"] == "aperio"
        assert osr.level_dimensions == ((300, 200), (75, 50), (19, 13))
        # OpenSlide derives downsamples from the sizes, so they are not exactly 16 here.
        assert osr.level_downsamples[1] == 4.0
        assert osr.level_downsamples[2] == pytest.approx((300 / 19 + 200 / 13) / 2)
        for level, d in enumerate((1, 4, 16)):
            assert np.array_equal(read_level(osr, level), area_downsample(rgb, d)), level


def test_svs_without_mpp_has_no_resolution_or_magnification(tmp_path):
    rgb, _ = synthetic_tissue(256, 256, seed=4)
    path = write_svs(tmp_path / "n.svs", rgb, mpp=None, downsamples=(1, 4))
    with openslide.OpenSlide(str(path)) as osr:
        props = osr.properties
        assert props["openslide.vendor"] == "aperio"
        assert "openslide.mpp-x" not in props and "openslide.mpp-y" not in props
        assert "openslide.objective-power" not in props
        assert "MPP" not in props["openslide.comment"]


def test_svs_magnification_options(tmp_path):
    rgb = np.full((64, 64, 3), 240, dtype=np.uint8)
    cases = [({}, "40"), ({"objective_power": 20}, "20"), ({"app_mag": "20"}, "20")]
    for i, (kwargs, power) in enumerate(cases):
        path = write_svs(tmp_path / f"m{i}.svs", rgb, mpp=0.25, downsamples=(1,), **kwargs)
        with openslide.OpenSlide(str(path)) as osr:
            assert osr.properties["openslide.objective-power"] == power
            assert osr.properties["aperio.AppMag"] == power
    with pytest.raises(ValueError, match="not both"):
        write_svs(tmp_path / "x.svs", rgb, mpp=0.25, objective_power=20, app_mag="20")


def test_svs_bounds_go_into_the_description_but_openslide_reports_none(tmp_path):
    rgb = np.full((64, 80, 3), 240, dtype=np.uint8)
    path = write_svs(tmp_path / "b.svs", rgb, mpp=0.5, downsamples=(1,), bounds=(100, 30, 80, 64))
    with openslide.OpenSlide(str(path)) as osr:
        assert "180x94 [100,30 80x64]" in osr.properties["openslide.comment"]
        assert "openslide.bounds-x" not in osr.properties
    with pytest.raises(ValueError, match="bounds"):
        write_svs(tmp_path / "c.svs", rgb, mpp=0.5, bounds=(0, 0, 10, 10))


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"compression": "webp"}, "use one of"),
        ({"downsamples": (2, 4)}, "starting with 1"),
        ({"downsamples": (1, 4, 4)}, "increasing"),
        ({"tile": 100}, "multiple of 16"),
        ({"quality": 0}, "quality"),
        ({"mpp": -1.0}, "positive"),
    ],
)
def test_write_svs_refuses_bad_arguments(tmp_path, kwargs, words):
    args = {"mpp": 0.5, **kwargs}
    with pytest.raises(ValueError, match=words):
        write_svs(tmp_path / "bad.svs", np.zeros((32, 32, 3), np.uint8), **args)


def test_write_svs_refuses_a_non_rgb_array(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        write_svs(tmp_path / "bad.svs", np.zeros((32, 32, 3), np.float32), mpp=0.5)


# -- large slides -------------------------------------------------------------------------------
@pytest.mark.slow
def test_write_large_svs_levels_are_consistent(tmp_path):
    path = write_large_svs(tmp_path / "large.svs", 2048, 1536, mpp=0.25, tissue_fraction=0.4, seed=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large.svs"]  # no temporary files left
    with openslide.OpenSlide(str(path)) as osr:
        props = osr.properties
        assert props["openslide.vendor"] == "aperio"
        assert osr.level_dimensions == ((2048, 1536), (512, 384), (128, 96))
        assert osr.level_downsamples == (1.0, 4.0, 16.0)
        assert float(props["openslide.mpp-x"]) == 0.25
        assert props["openslide.objective-power"] == "40"
        assert "thumbnail" in osr.associated_images
        level0 = read_level(osr, 0)
        # Each level was the area average of level 0 before JPEG; both sides are JPEG'd now.
        assert mean_abs_error(read_level(osr, 1), area_downsample(level0, 4)) < 3
        assert mean_abs_error(read_level(osr, 2), area_downsample(level0, 16)) < 6
    sat = saturation(level0)
    assert abs((sat > 0.15).mean() - 0.4) < 0.08
    assert 235 < np.median(level0[sat < 0.05]) < 245  # glass


def test_write_large_svs_is_deterministic_and_seamless_across_bands(tmp_path):
    # 600 rows: three bands of 256 rows (the last one short), width not a multiple of a tile.
    a = write_large_svs(tmp_path / "a.svs", 700, 600, mpp=0.5, seed=1, downsamples=(1, 4))
    b = write_large_svs(tmp_path / "b.svs", 700, 600, mpp=0.5, seed=1, downsamples=(1, 4))
    pages_a = tifffile.TiffFile(a).pages
    pages_b = tifffile.TiffFile(b).pages
    assert np.array_equal(pages_a[0].asarray(), pages_b[0].asarray())
    with openslide.OpenSlide(str(a)) as osr:
        assert osr.level_dimensions == ((700, 600), (175, 150))
        level0 = read_level(osr, 0).astype(np.float32)
    # No jump at band edges (rows 255|256, 511|512) beyond what JPEG leaves at the edges of
    # its 16-row blocks inside a band (the tiles are compressed one by one).
    steps = np.abs(np.diff(level0, axis=0)).mean(axis=(1, 2))
    rows = np.arange(len(steps))
    block_edges = steps[(rows % 16 == 15) & (rows % 256 != 255)]
    assert steps[[255, 511]].max() < 1.2 * block_edges.max()


def test_write_large_svs_lossless_levels_are_exact_area_averages(tmp_path):
    path = write_large_svs(tmp_path / "lossless.svs", 1024, 768, seed=2, compression="deflate")
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.properties["openslide.vendor"] == "aperio"
        assert osr.level_downsamples == (1.0, 4.0, 16.0)
        assert "label" not in osr.associated_images  # its LZW would need imagecodecs
        level0 = read_level(osr, 0)
        assert np.array_equal(read_level(osr, 1), area_downsample(level0, 4))
        assert np.array_equal(read_level(osr, 2), area_downsample(level0, 16))
    with pytest.raises(ValueError, match="compression"):
        write_large_svs(tmp_path / "x.svs", 100, 100, compression="webp")


def test_write_large_svs_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        write_large_svs(tmp_path / "x.svs", 0, 100)
    with pytest.raises(ValueError, match="seed"):
        write_large_svs(tmp_path / "x.svs", 100, 100, seed=-1)


# -- against a real slide -----------------------------------------------------------------------
def test_synthetic_svs_is_laid_out_like_a_real_aperio_slide(shared_data, svs_x20):
    real = shared_data / "slides" / "CMU-1-Small-Region.svs"
    if not real.exists():
        pytest.skip(f"{real} is absent")
    keys = ["openslide.vendor", "openslide.mpp-x", "openslide.mpp-y", "openslide.objective-power"]
    with openslide.OpenSlide(str(real)) as a, openslide.OpenSlide(str(svs_x20.path)) as b:
        for key in keys:
            assert key in a.properties and key in b.properties, key
        assert a.properties["openslide.vendor"] == b.properties["openslide.vendor"]
        assert math.isclose(float(a.properties["openslide.mpp-x"]), 0.499)
        assert a.properties["openslide.objective-power"] == b.properties["openslide.objective-power"]
        assert {"thumbnail", "label"} <= set(a.associated_images) & set(b.associated_images)
    with tifffile.TiffFile(real) as ta, tifffile.TiffFile(svs_x20.path) as tb:
        for tif in (ta, tb):
            assert tif.pages[0].is_tiled and not tif.pages[1].is_tiled
            assert tif.pages[0].description.startswith("Aperio Image Library")
