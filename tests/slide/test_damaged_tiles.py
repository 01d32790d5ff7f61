"""A slide with one tile of garbage, and slides cut short or empty: the reader names the tile
that fails (whichever reader, whichever thread), reads the rest, and says what is wrong."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.errors import DamagedSlideError, SlideError
from wsiseg.slide.reader import GLASS, open_slide
from wsiseg.slide.tiff_extent import tiff_extent
from wsiseg.testing import synthetic_tissue, write_generic_tiff, write_svs
from wsiseg.testing.cli import error_line

TILE = 256
BAD = (4, 3)  # tile column and row of level 0 overwritten with garbage
BOX = (BAD[0] * TILE, BAD[1] * TILE, TILE, TILE)  # level-0 x, y, width, height


def damage_tile(path: Path, tx: int, ty: int, page: int = 0) -> None:
    """Overwrite tile ``(tx, ty)`` of TIFF page ``page`` with random bytes."""
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        index = ty * -(-p.imagewidth // p.tilewidth) + tx
        offset, count = p.dataoffsets[index], p.databytecounts[index]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.random.default_rng(5).integers(0, 256, count, dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """(clean, damaged) 1600 x 1200 SVS at 1 um/px, JPEG tiles of 256, levels 1 and 4."""
    folder = tmp_path_factory.mktemp("damaged")
    rgb, _ = synthetic_tissue(1200, 1600, seed=3, tissue_fraction=0.6)
    clean = write_svs(folder / "clean.svs", rgb, mpp=1.0, downsamples=(1, 4))
    bad = folder / "bad.svs"
    shutil.copy(clean, bad)
    damage_tile(bad, *BAD)
    return clean, bad


def chunks(width, height, step=(384, 200)):
    """Reads that do not follow the tile grid, several of them over the damaged tile."""
    return [(x, y, min(step[0], width - x), min(step[1], height - y))
            for y in range(0, height, step[1]) for x in range(0, width, step[0])]


def read_all(slide, regions, threads=4):
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda r: slide.read_level(0, *r), regions))


@pytest.mark.parametrize("reader", ["openslide", "tifffile"])
def test_the_error_names_the_tile_that_fails(slides, reader):
    _, bad = slides
    with open_slide(bad, reader=reader) as slide, pytest.raises(DamagedSlideError) as err:
        read_all(slide, chunks(*slide.dimensions))
    assert err.value.region.box_level0 == BOX and err.value.region.level == 0
    message = str(err.value)
    assert "\n" not in message and "bad.svs" in message
    assert f"level-0 x {BOX[0]}, y {BOX[1]}" in message and "--skip-damaged" in message


@pytest.mark.parametrize("reader", ["openslide", "tifffile"])
def test_reads_after_a_failure_are_right(slides, reader):
    """After the damaged tile (OpenSlide's handle then fails every read), the reads from every
    thread still return the slide's pixels; the tile itself is glass and recorded."""
    clean, bad = slides
    with open_slide(clean) as reference:
        want = reference.read_level(0, 0, 0, *reference.dimensions)
    regions = chunks(*want.shape[1::-1])
    with open_slide(bad, reader=reader, skip_damaged=True) as slide:
        got = read_all(slide, regions)
        damaged = slide.damaged_regions()
        again = slide.read_level(0, 0, 0, 300, 200)  # on the shared handle, after the failure
    assert [(r.level, r.box, r.box_level0) for r in damaged] == [(0, BOX, BOX)]
    assert damaged[0].reason
    image = np.empty_like(want)
    for (x, y, w, h), pixels in zip(regions, got):
        image[y : y + h, x : x + w] = pixels
    x, y, w, h = BOX
    assert (image[y : y + h, x : x + w] == GLASS).all()
    image[y : y + h, x : x + w] = want[y : y + h, x : x + w]
    assert np.array_equal(image, want)
    assert np.array_equal(again, want[:200, :300])


def test_a_tile_of_a_coarser_level_is_named_in_level_0_pixels(tmp_path):
    rgb, _ = synthetic_tissue(1200, 1600, seed=4, tissue_fraction=0.6)
    path = write_svs(tmp_path / "low.svs", rgb, mpp=1.0, downsamples=(1, 4))
    damage_tile(path, 1, 0, page=2)  # level 1 (pages: level 0, thumbnail, level 1, label)
    for reader in ("openslide", "tifffile"):
        with open_slide(path, reader=reader) as slide, pytest.raises(DamagedSlideError) as err:
            slide.read_level(1, 0, 0, 400, 300)
        assert err.value.region.level == 1 and err.value.region.box == (256, 0, 144, 256)
        assert err.value.region.box_level0 == (1024, 0, 576, 1024)


# -- files cut short or empty ------------------------------------------------------------------


def test_tiff_extent_is_the_file_size_of_whole_files(slides, tmp_path):
    rgb, _ = synthetic_tissue(300, 400, seed=1)
    generic = write_generic_tiff(tmp_path / "g.tiff", rgb, mpp=0.5, levels=(1, 4))
    for path in (*slides, generic):
        assert tiff_extent(path) == path.stat().st_size
    (tmp_path / "text.svs").write_text("not a tiff")
    assert tiff_extent(tmp_path / "text.svs") is None


@pytest.mark.parametrize("keep", [0, 5, 2000, 0.5, 0.9])
def test_a_file_cut_short_or_empty_says_so(slides, tmp_path, keep):
    clean, _ = slides
    data = clean.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "copy.svs"
    path.write_bytes(data[:n])
    with pytest.raises(SlideError) as err:
        open_slide(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "copy it again" in message
    if n == 0:
        assert "is empty (0 bytes)" in message
    else:
        assert "is cut short" in message and f"it has {n:,} bytes" in message


def test_cli_names_the_damaged_tile_and_a_cut_file(slides, pixel_model, tmp_path):
    _, bad = slides
    cut = tmp_path / "cut.svs"
    cut.write_bytes(bad.read_bytes()[:100_000])
    for slide, words in ((bad, ["bad.svs", f"level-0 x {BOX[0]}, y {BOX[1]}", "--skip-damaged"]),
                         (cut, ["cut.svs", "is cut short", "copy it again"])):
        result = CliRunner().invoke(main, ["predict", str(slide), "--model", str(pixel_model[0]),
                                           "--out", str(tmp_path / "out.zarr"), "--reader",
                                           "tifffile", "--quiet"])
        error_line(result, *words)
        assert not (tmp_path / "out.zarr").exists()
