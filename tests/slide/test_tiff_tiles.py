"""tifffile's tile reader: OpenSlide's pixels, for the slides it takes, from any thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

from wsiseg.errors import ConfigError
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.store import result_array
from wsiseg.slide.reader import open_slide
from wsiseg.testing import synthetic_tissue, write_scn


def regions(dimensions, rng, n=6):
    """Random regions of a level, some of them across its edges (glass outside)."""
    w, h = dimensions
    for _ in range(n):
        rw, rh = int(rng.integers(1, min(w, 600) + 1)), int(rng.integers(1, min(h, 600) + 1))
        yield int(rng.integers(-50, w - rw + 50)), int(rng.integers(-50, h - rh + 50)), rw, rh


@pytest.mark.parametrize("fixture", ["svs_x40", "svs_x20", "tiff_no_mpp"])
def test_every_level_reads_as_openslide_reads_it(fixture, request):
    path = request.getfixturevalue(fixture).path
    rng = np.random.default_rng(0)
    with open_slide(path, reader="tifffile") as fast, open_slide(path) as reference:
        assert fast._tiles is not None
        for level, dimensions in enumerate(reference.level_dimensions):
            for x, y, w, h in regions(dimensions, rng):
                assert np.array_equal(fast.read_level(level, x, y, w, h),
                                      reference.read_level(level, x, y, w, h)), (level, x, y, w, h)


def test_the_real_slides_level_0_reads_as_openslide_reads_it(shared_data):
    path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    rng = np.random.default_rng(1)
    with open_slide(path, reader="tifffile") as fast, open_slide(path) as reference:
        for x, y, w, h in regions(reference.dimensions, rng):
            assert np.array_equal(fast.read_level(0, x, y, w, h),
                                  reference.read_level(0, x, y, w, h))


def test_reads_from_many_threads_are_the_reads_of_one(svs_x40):
    rng = np.random.default_rng(2)
    with open_slide(svs_x40.path, reader="tifffile") as slide:
        wanted = list(regions(slide.level_dimensions[0], rng, n=24))
        one = [slide.read_level(0, *r) for r in wanted]
        slide._tiles._cache.clear()  # the threads decode afresh, racing for the same tiles
        slide._tiles._cached_bytes = 0
        with ThreadPoolExecutor(8) as pool:
            many = list(pool.map(lambda r: slide.read_level(0, *r), wanted))
    assert all(np.array_equal(a, b) for a, b in zip(one, many))


def test_other_vendors_are_left_to_openslide_or_refused(tmp_path):
    rgb, _ = synthetic_tissue(256, 320, seed=3)
    path = write_scn(tmp_path / "s.scn", rgb, mpp=0.5, offset=(64, 32))
    with open_slide(path, reader="auto") as slide:
        assert slide.vendor == "leica" and slide._tiles is None
    with pytest.raises(ConfigError, match="use --reader openslide or auto") as caught:
        open_slide(path, reader="tifffile")
    assert str(path) in str(caught.value)


@pytest.mark.slow
def test_the_map_is_the_same_with_either_reader(svs_x40, pixel_model, tmp_path):
    model = str(pixel_model[0])
    maps = []
    for reader in ("openslide", "tifffile"):
        info = predict_slide(svs_x40.path, PredictConfig(
            model=model, out=str(tmp_path / f"{reader}.zarr"), reader=reader, progress=False))
        assert info.config["reader"] == reader
        maps.append(result_array(zarr.open_group(str(info.path), mode="r"), "labels")[...])
    assert np.array_equal(*maps)


def test_an_unknown_reader_is_refused():
    with pytest.raises(ConfigError, match="unknown reader 'pil'"):
        PredictConfig(reader="pil").validate()


def test_an_unknown_reader_is_refused_before_the_slide_is_opened(tmp_path):
    with pytest.raises(ConfigError, match="unknown reader 'pil'"):
        open_slide(tmp_path / "absent.svs", reader="pil")  # not "no such file": checked first
