"""--skip-damaged: a slide with a tile of garbage is mapped around it, and the result says where."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.inference.grid import PatchGrid
from wsiseg.inference.loader import windows_touching
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.store import open_result, result_array
from wsiseg.testing import synthetic_tissue, write_svs

# A 1024 x 768 slide at 1 um/px is its own analysis grid (1 um/px): map pixels are level-0
# pixels. Tile (2, 1) of level 0 is garbage. Windows of 200 at stride 100 keep the runs short.
BOX = (512, 256, 256, 256)
PATCH, STRIDE = 200, 100


@pytest.fixture(scope="module")
def slides(tmp_path_factory, pixel_model):
    """(damaged slide, the clean slide's labels)."""
    folder = tmp_path_factory.mktemp("skip_damaged")
    rgb, _ = synthetic_tissue(768, 1024, seed=9, tissue_fraction=0.7)
    clean = write_svs(folder / "clean.svs", rgb, mpp=1.0, downsamples=(1, 4))
    bad = folder / "bad.svs"
    shutil.copy(clean, bad)
    with tifffile.TiffFile(bad) as tif:
        page = tif.pages[0]
        index = (BOX[1] // 256) * -(-page.imagewidth // 256) + BOX[0] // 256
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with open(bad, "r+b") as f:
        f.seek(offset)
        f.write(np.random.default_rng(2).integers(0, 256, count, dtype=np.uint8).tobytes())
    info = predict_slide(clean, PredictConfig(model=str(pixel_model[0]), patch_size=PATCH,
                                              stride=STRIDE, out=str(folder / "clean.zarr"),
                                              progress=False))
    return bad, result_array(zarr.open_group(str(info.path), mode="r"), "labels")[:]


def spoiled(shape, patch=PATCH, stride=STRIDE):
    """Map pixels under some window that touches BOX: the ones a skip may change."""
    grid = PatchGrid(shape[1], shape[0], patch, stride)
    touching = windows_touching(grid.ys, grid.xs, patch, [BOX])
    out = np.zeros(shape, dtype=bool)
    for r, c in zip(*np.nonzero(touching)):
        y, x = max(int(grid.ys[r]), 0), max(int(grid.xs[c]), 0)
        out[y : grid.ys[r] + patch, x : grid.xs[c] + patch] = True
    return out


@pytest.mark.slow
@pytest.mark.parametrize("reader", ["openslide", "tifffile"])
def test_the_rest_of_the_slide_is_mapped_as_if_whole(slides, pixel_model, tmp_path, reader):
    bad, want = slides
    config = PredictConfig(model=str(pixel_model[0]), out=str(tmp_path / "r.zarr"),
                           patch_size=PATCH, stride=STRIDE, reader=reader, skip_damaged=True,
                           progress=False, threads=3)
    info = predict_slide(bad, config)
    group = zarr.open_group(str(info.path), mode="r")
    labels, damaged = result_array(group, "labels")[:], result_array(group, "damaged")[:]
    away = ~spoiled(want.shape)
    assert away.mean() > 0.5 and np.array_equal(labels[away], want[away])
    x, y, w, h = BOX
    assert (labels[y : y + h, x : x + w] == 0).all()  # no window predicted over it
    assert (labels[~away] != want[~away]).any()  # the windows were dropped, not predicted
    expected = np.zeros(want.shape, dtype=np.uint8)
    expected[y : y + h, x : x + w] = 1
    assert np.array_equal(damaged, expected)
    _, reopened = open_result(info.path)
    assert reopened.damaged_count == 1 and reopened.damaged_regions == info.damaged_regions
    area = reopened.damaged_regions[0]
    assert (area.level, area.box_level0) == (0, BOX) and area.reason
    assert reopened.damaged_area_mm2 == pytest.approx(256 * 256 / 1e6)
    assert reopened.patches_predicted < reopened.patches_kept


@pytest.mark.slow
def test_cli_warns_and_the_report_counts_it(slides, pixel_model, tmp_path):
    bad, _ = slides
    out = tmp_path / "bad.wsiseg.zarr"
    result = CliRunner().invoke(main, ["predict", str(bad), "--model", str(pixel_model[0]),
                                       "--out", str(out), "--patch-size", str(PATCH), "--stride",
                                       str(STRIDE), "--skip-damaged", "--export", "report"])
    assert result.exit_code == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if "damaged" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("wsiseg: warning: ")
    assert "bad.svs" in warnings[0] and "1 damaged region" in warnings[0]
    assert "0.06554 mm^2" in warnings[0] and f"x {BOX[0]}, y {BOX[1]}" in warnings[0]
    assert "1 damaged region skipped" in result.stdout
    report = json.loads((tmp_path / "bad.report.json").read_text())
    assert report["damaged_regions"] == 1
    assert report["damaged_area_mm2"] == pytest.approx(0.065536)
    lines = (tmp_path / "bad.report.csv").read_text().splitlines()
    rows = [line for line in lines if not line.startswith("#")]  # review, intended use
    assert rows[-1].split(",")[2:6] == ["damaged (not read)", "0.0655", "", "1"]
    assert "# review,1 damaged regions not read (0.0655 mm^2)" in lines


def test_without_the_flag_the_slide_fails_naming_the_tile(slides, pixel_model, tmp_path):
    bad, _ = slides
    result = CliRunner().invoke(main, ["predict", str(bad), "--model", str(pixel_model[0]),
                                       "--out", str(tmp_path / "r.zarr")])
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"level-0 x {BOX[0]}, y {BOX[1]}" in lines[0] and "--skip-damaged" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_windows_touching_a_box():
    ys = xs = np.array([-300, -200, -100, 0, 100])
    touching = windows_touching(ys, xs, 400, [(300, 100, 1, 1)])
    # A window at t covers [t, t + 400): it holds pixel 300 when t in (-100, 300], 100 when
    # t in (-300, 100].
    assert not touching[0].any() and not touching[:, :3].any()
    assert touching[1:, 3:].all()
    assert not windows_touching(ys, xs, 400, []).any()
