"""Reads in bounded blocks: a slide without a pyramid, far wider than one read, costs a block.

The slide here is one level of JPEG tiles (no pyramid), 20480 px wide and mostly glass, so
the tissue mask (10 um/px) is the area average of 40 x 40 blocks of level 0.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from wsiseg.inference.grid import PatchGrid, window_tissue_fractions
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.store import result_array
from wsiseg.slide import region
from wsiseg.slide.geometry import Geometry, overview_geometry, plan_geometry
from wsiseg.slide.reader import Slide, open_slide
from wsiseg.slide.region import (
    RegionReader,
    block_shape,
    grid_blocks,
    input_span,
    plan_grid_blocks,
    read_grid,
    read_thumbnail,
)
from wsiseg.slide.resample import area_weights, resample_area
from wsiseg.slide.tissue import mask_factor, read_tissue, tissue_geometry, tissue_mask
from wsiseg.testing import write_large_svs

WIDTH, HEIGHT = 20480, 1280


@pytest.fixture(scope="module")
def flat_svs(tmp_path_factory) -> Path:
    """x40 Aperio SVS, one level (no pyramid), 20480 x 1280, about 10% tissue."""
    path = tmp_path_factory.mktemp("flat") / "flat.svs"
    return write_large_svs(path, WIDTH, HEIGHT, mpp=0.25, tissue_fraction=0.1, seed=5,
                           downsamples=(1,))


@pytest.fixture
def read_sizes(monkeypatch) -> list[tuple[int, int, int]]:
    """Every ``Slide.read_level`` request as (level, width, height)."""
    sizes: list[tuple[int, int, int]] = []
    real = Slide.read_level

    def recording(self, level, x, y, width, height, *args, **kwargs):
        sizes.append((level, width, height))
        return real(self, level, x, y, width, height, *args, **kwargs)

    monkeypatch.setattr(Slide, "read_level", recording)
    return sizes


def analysis_geometry(slide: Slide) -> Geometry:
    return plan_geometry(slide.level_downsamples, slide.bounds, slide.mpp, 1.0)


@pytest.mark.slow
def test_tissue_image_is_the_whole_level_averaged_at_once(flat_svs, read_sizes):
    with open_slide(flat_svs) as slide:
        assert slide.level_count == 1
        factor = mask_factor(400, 100, 1.0)
        geometry = tissue_geometry(slide, analysis_geometry(slide), factor)
        assert geometry.level == 0 and geometry.resample == (40.0, 40.0)
        blocked = read_grid(slide, geometry, threads=2)
        bound = region.MAX_READ_PIXELS
        sizes = list(read_sizes)
        mask, _, _ = read_tissue(slide, analysis_geometry(slide), factor)
        level0 = slide.read_level(0, 0, 0, WIDTH, HEIGHT)
    assert len(sizes) > 1 and max(w * h for _, w, h in sizes) <= bound
    # Each level-0 pixel decoded about once (block edges share a pixel when 40 does not fall
    # on them; here it does).
    assert sum(w * h for _, w, h in sizes) == WIDTH * HEIGHT
    fy, ny, wy = area_weights(0, geometry.height, 0.0, 40.0)
    fx, nx, wx = area_weights(0, geometry.width, 0.0, 40.0)
    whole = resample_area(level0[fy : fy + ny, fx : fx + nx], wy, wx)
    assert np.array_equal(blocked, whole)
    # And independently, on a part: the mean of each 40 x 40 block (float64; the rounding of
    # halves may differ).
    part = level0[:, :4000].reshape(HEIGHT // 40, 40, 100, 40, 3).astype(np.float64)
    mean = np.rint(part.mean(axis=(1, 3))).astype(int)
    assert np.abs(blocked[:, :100].astype(int) - mean).max() <= 1
    assert np.array_equal(mask, tissue_mask(whole, pixel_um=geometry.mpp[0]))
    assert 0.01 < mask.mean() < 0.5


@pytest.mark.slow
def test_mask_does_not_depend_on_the_block_size(flat_svs, svs_x40, monkeypatch, read_sizes):
    for path, bound in ((flat_svs, 1 << 16), (svs_x40.path, 1 << 12)):
        with open_slide(path) as slide:
            analysis = analysis_geometry(slide)
            monkeypatch.setattr(region, "MAX_READ_PIXELS", 1 << 40)
            one, geometry, _ = read_tissue(slide, analysis, 10)
            monkeypatch.setattr(region, "MAX_READ_PIXELS", bound)
            read_sizes.clear()
            many, _, _ = read_tissue(slide, analysis, 10, threads=3)
            assert len(read_sizes) > 2 and max(w * h for _, w, h in read_sizes) <= bound
            assert np.array_equal(one, many) and one.any()
            # The pyramid's level is used where there is one: no level-0 read at all.
            assert {lv for lv, _, _ in read_sizes} == {geometry.level}


@pytest.mark.slow
def test_block_plans_cover_the_grid_within_the_bound():
    rng = np.random.default_rng(0)
    for _ in range(300):
        rx = float(rng.choice([1.0, 2.004, 4.0, 40.0, 39.97, 97.3]))
        w, h = int(rng.integers(1, 5000)), int(rng.integers(1, 5000))
        g = Geometry(w, h, 0, 1.0, (rx, rx), (0, 0), (rx, rx), (rx * 0.25, rx * 0.25))
        bound = int(rng.choice([1 << 16, 1 << 18, 1 << 22]))
        origin = (0.0, 0.0) if rx == 1.0 else (float(rng.random() * 5), float(rng.random() * 5))
        blocks = plan_grid_blocks(g, origin, tile=256, max_pixels=bound)
        for pieces, n in ((blocks.columns, w), (blocks.rows, h)):
            starts = [a for a, _ in pieces]
            assert starts[0] == 0 and all(c > 0 for _, c in pieces)
            assert all(a + c == b for (a, c), b in zip(pieces, starts[1:] + [n]))
        # A block reads its columns' span times its strip's span.
        widest = max(input_span(x, bw, origin[0], rx) for x, bw in blocks.columns)
        tallest = max(input_span(y, bh, origin[1], rx) for y, bh in blocks.rows)
        assert widest * tallest <= bound, (rx, w, h, bound)
        across = sum(input_span(x, bw, origin[0], rx) for x, bw in blocks.columns)
        down = sum(input_span(y, bh, origin[1], rx) for y, bh in blocks.rows)
        assert blocks.level_pixels == across * down
        cols, rows = block_shape(w, h, (rx, rx), bound)
        for o in (0.0, 0.5, 0.999):
            worst = input_span(0, cols, o, rx) * input_span(0, rows, o, rx)
            assert worst <= bound, (rx, w, h, bound, cols, rows)


@pytest.mark.parametrize("ratio,origin", [(40.0, 0.0), (4.0, 0.0), (2.004, 0.3), (1.03, 0.7)])
def test_resampling_a_few_rows_at_a_time_is_the_one_pass_sum(ratio, origin, monkeypatch):
    """Slabs of output rows give bit for bit the sums of one pass over the whole input."""
    from wsiseg.slide import resample

    rng = np.random.default_rng(3)
    n = 30 if ratio > 10 else 200
    _, ny, wy = area_weights(2, n, origin, ratio)
    _, nx, wx = area_weights(1, n + 9, origin, ratio)
    image = rng.integers(0, 256, (ny, nx, 3), dtype=np.uint8)
    tmp = wy @ image.reshape(ny, nx * 3).astype(np.float32)
    tmp = tmp.reshape(n, nx, 3).transpose(1, 0, 2).reshape(nx, n * 3)
    one_pass = (wx @ tmp).reshape(n + 9, n, 3).transpose(1, 0, 2)
    want = np.clip(np.rint(one_pass), 0, 255).astype(np.uint8)
    monkeypatch.setattr(resample, "SLAB_ELEMENTS", 5000)
    assert np.array_equal(resample_area(image, wy, wx), want)
    out = np.zeros((n + 4, n + 12, 3), dtype=np.uint8)
    resample_area(image, wy, wx, out=out[2 : n + 2, 3 : n + 12])
    assert np.array_equal(out[2 : n + 2, 3 : n + 12], want) and not out[:2].any()


def test_strips_are_cut_on_tile_rows_when_they_can_be():
    g = Geometry(512, 500, 0, 1.0, (40.0, 40.0), (0, 0), (40.0, 40.0), (10.0, 10.0))
    blocks = plan_grid_blocks(g, tile=256)
    # 32 mask rows are 1280 level rows, five tile rows: every cut but the last falls there.
    cuts = [y for y, _ in blocks.rows[1:]]
    assert cuts and all(y % 32 == 0 for y in cuts)
    assert max(input_span(y, h, 0.0, 40.0) for y, h in blocks.rows) <= region.STRIP_ROWS


@pytest.mark.slow
def test_large_regions_are_read_in_blocks_with_the_same_pixels(flat_svs, read_sizes):
    with open_slide(flat_svs) as slide:
        g = analysis_geometry(slide)
        assert g.resample == (4.0, 4.0)  # x40 to x10 from level 0
        x, y, w, h = 37, -20, 3000, 330
        big = RegionReader(slide, g, max_pixels=1 << 40).read(x, y, w, h)
        read_sizes.clear()
        small = RegionReader(slide, g, max_pixels=1 << 16).read(x, y, w, h)
    assert np.array_equal(big, small)
    assert len(read_sizes) > 10 and max(w * h for _, w, h in read_sizes) <= 1 << 16


@pytest.mark.slow
def test_thumbnail_is_the_area_average_read_in_blocks(svs_x40, flat_svs, read_sizes,
                                                      monkeypatch):
    with open_slide(svs_x40.path) as slide:
        thumb = read_thumbnail(slide, 250)
    assert thumb.shape == (200, 250, 3)
    mean = svs_x40.rgb_level0.reshape(200, 8, 250, 8, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(thumb - mean).mean() < 3  # from level 1, JPEG-compressed once more
    monkeypatch.setattr(region, "MAX_READ_PIXELS", 1 << 18)
    read_sizes.clear()
    with open_slide(flat_svs) as slide:
        thumb = read_thumbnail(slide, 1024, threads=2)
    assert thumb.shape == (64, 1024, 3)
    assert max(w * h for _, w, h in read_sizes) <= 1 << 18
    g = overview_geometry((1.0,), (WIDTH, HEIGHT), 1024)
    assert g.scale == (20.0, 20.0) and (g.width, g.height) == (1024, 64)


@pytest.mark.slow
def test_a_whole_run_on_a_wide_flat_slide_reads_in_blocks_and_is_complete(
        flat_svs, pixel_model, tmp_path, read_sizes):
    model_path, module = pixel_model
    out = tmp_path / "flat.wsiseg.zarr"
    cfg = PredictConfig(model=str(model_path), out=str(out), probabilities=True,
                        progress=False, threads=2, stripe_width=2048)
    info = predict_slide(flat_svs, cfg)
    assert max(w * h for _, w, h in read_sizes) <= region.MAX_READ_PIXELS
    g = zarr.open_group(str(info.path), mode="r")
    labels, attrs = result_array(g, "labels")[:], g.attrs["wsiseg"]
    assert labels.shape == (HEIGHT // 4, WIDTH // 4) and attrs["stripes"] == 3
    grid = PatchGrid(WIDTH // 4, HEIGHT // 4, 400, 100)
    kept = window_tissue_fractions(result_array(g, "tissue")[:].astype(bool), 10, grid) >= 0.2
    assert 0 < kept.sum() == attrs["patches_kept"] < kept.size
    cover = np.zeros(labels.shape, dtype=bool)
    for r, c in zip(*np.nonzero(kept)):
        cover[max(grid.ys[r], 0) : grid.ys[r] + 400, max(grid.xs[c], 0) : grid.xs[c] + 400] = True
    with open_slide(flat_svs) as slide:
        ga = analysis_geometry(slide)
        image = RegionReader(slide, ga).read(0, 0, ga.width, ga.height)
    with torch.no_grad():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        ref = torch.softmax(module(x), dim=1)[0].numpy()
    top2 = np.sort(ref, axis=0)[-2:]
    decided = cover & (top2[1] - top2[0] > 1e-4)
    assert decided.sum() > 0.5 * cover.sum()
    assert np.array_equal(labels[decided], ref.argmax(axis=0)[decided])
    assert (labels[~cover] == 0).all()


@pytest.mark.slow
def test_ctrl_c_during_tissue_detection_stops_between_blocks(flat_svs, pixel_model, tmp_path,
                                                              monkeypatch, ctrl_c):
    monkeypatch.setattr(region, "MAX_READ_PIXELS", 1 << 18)
    with open_slide(flat_svs) as slide:
        blocks = len(grid_blocks(slide, tissue_geometry(slide, analysis_geometry(slide), 10)))
    main = threading.main_thread().ident
    calls = []
    real = Slide.read_level

    def interrupted(self, *args, **kwargs):
        calls.append(threading.get_ident())
        if len(calls) == 5:
            signal.pthread_kill(main, signal.SIGINT)  # as Ctrl-C in a terminal
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Slide, "read_level", interrupted)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cfg = PredictConfig(model=str(pixel_model[0]), out=str(out_dir / "c.wsiseg.zarr"),
                        progress=False, threads=2)
    with pytest.raises(KeyboardInterrupt):
        predict_slide(flat_svs, cfg)
    # The blocks in progress finish and the reading stops, far from the end (a few more
    # blocks may start while the main thread waits for its turn); nothing is left behind.
    assert 5 <= len(calls) < 5 + 20 < blocks
    assert main not in calls  # reads run in the reader threads, the main thread answers
    assert list(out_dir.iterdir()) == []


_RSS_SCRIPT = """
import json, sys
from wsiseg.slide.geometry import plan_geometry
from wsiseg.slide.reader import open_slide
from wsiseg.slide.tissue import read_tissue

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

slide = open_slide(sys.argv[1])
g = plan_geometry(slide.level_downsamples, slide.bounds, slide.mpp, 1.0)
before = status("VmRSS:")
mask, _, _ = read_tissue(slide, g, 10, threads=2)
print(json.dumps({"before": before, "peak": status("VmHWM:"), "shape": mask.shape}))
"""


@pytest.mark.slow
def test_tissue_detection_memory_does_not_follow_the_slide(flat_svs, tmp_path):
    """Peak RSS of reading the tissue of the flat slide (26 Mpx: 79 MB of RGB at level 0)
    grows by blocks and OpenSlide's tile cache, not by strips of level 0."""
    run = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(flat_svs)],
                         capture_output=True, text=True, timeout=60, check=True)
    r = json.loads(run.stdout.strip().splitlines()[-1])
    assert r["shape"] == [HEIGHT // 40, WIDTH // 40]
    # Two threads of 4-megapixel blocks (RGB and OpenSlide's ARGB: 28 MB each) and the 64 MB
    # tile cache; reading 512-row strips of level 0 at once took more than 450 MB here.
    assert r["peak"] - r["before"] < 200 * 2**20, r
