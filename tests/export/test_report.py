"""The report export: areas equal pixel counts times pixel area; regions match whole-map labelling."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from scipy import ndimage

from wsiseg.cli.main import main
from wsiseg.export.report import class_statistics
from wsiseg.inference.pipeline import PredictConfig, predict_slide


def test_streamed_statistics_equal_whole_map_labelling():
    rng = np.random.default_rng(1)
    labels = (ndimage.zoom(rng.random((30, 41)), 8, order=1) * 4).astype(np.uint8)
    # A diagonal chain crossing band edges (bands of 16 rows) is one region.
    labels[:, :] = np.where(labels == 3, 2, labels)
    for i in range(60):
        labels[i, 200 + i] = 3
    array = zarr.create_array(store=zarr.storage.MemoryStore(), shape=labels.shape,
                              chunks=(16, 64), dtype="uint8")
    array[:] = labels
    counts, regions = class_statistics(array, 4)
    assert counts.tolist() == np.bincount(labels.ravel(), minlength=4).tolist()
    expected = [ndimage.label(labels == c, structure=np.ones((3, 3)))[1] for c in range(4)]
    assert regions.tolist() == expected and regions[3] == 1


@pytest.fixture(scope="module")
def synthetic_result(svs_x20, pixel_model, tmp_path_factory):
    path, _ = pixel_model
    out = tmp_path_factory.mktemp("x20") / "cmu.wsiseg.zarr"  # same stem: same file names
    return predict_slide(svs_x20.path, PredictConfig(model=str(path), out=str(out))).path


@pytest.mark.parametrize("which", ["synthetic_result", "cmu_result"])
def test_report_areas_are_pixel_counts_times_pixel_area(which, request, tmp_path):
    result_path = request.getfixturevalue(which)
    _check_report(result_path, tmp_path)


def _check_report(cmu_result, tmp_path):
    result = CliRunner().invoke(main, ["export", str(cmu_result), "--to", "report", "--out",
                                       str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "cmu.report.json").read_text())
    group = zarr.open_group(str(cmu_result), mode="r")
    labels = group["labels"][...]
    mpp = group.attrs["wsiseg"]["analysis_mpp"]
    counts = np.bincount(labels.ravel(), minlength=len(report["classes"]))
    for row in report["classes"]:
        assert row["pixels"] == counts[row["index"]]
        assert row["area_mm2"] == pytest.approx(counts[row["index"]] * mpp[0] * mpp[1] / 1e6)
    shares = [r["share_of_tissue"] for r in report["classes"] if r["index"] > 0]
    assert sum(shares) == pytest.approx(1.0)
    assert report["slide"] == group.attrs["wsiseg"]["slide"]["path"] and report["seconds"] > 0
    with (tmp_path / "cmu.report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == [c["name"] for c in report["classes"]]
    assert not list(tmp_path.glob("*.partial"))


def test_export_errors_are_one_line(tmp_path, synthetic_result):
    cmu_result = synthetic_result
    runner = CliRunner()
    out = runner.invoke(main, ["export", str(tmp_path / "none.zarr"), "--to", "report"])
    assert out.exit_code == 1 and out.output.count("\n") == 1 and "does not exist" in out.output
    out = runner.invoke(main, ["export", str(cmu_result), "--to", "pdf"])
    assert out.exit_code == 1 and "unknown export format" in out.output


def test_png_overlay_paints_the_mapped_classes(cmu_result, shared_data, tmp_path):
    import imagecodecs
    import openslide

    result = CliRunner().invoke(main, ["export", str(cmu_result), "--to", "png", "--out",
                                       str(tmp_path)])
    assert result.exit_code == 0, result.output
    png = imagecodecs.imread(str(tmp_path / "cmu.overlay.png"))[..., :3]
    from wsiseg.slide.geometry import overview_geometry
    from wsiseg.slide.reader import open_slide
    from wsiseg.slide.region import read_grid

    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        thumb = read_grid(slide, overview_geometry(slide.level_downsamples, slide.dimensions,
                                                   2048))
    with openslide.OpenSlide(str(shared_data / "slides" / "CMU-1-Small-Region.svs")) as slide:
        # The same picture as OpenSlide's own thumbnail, read in blocks.
        theirs = np.asarray(slide.get_thumbnail((2048, 2048)).convert("RGB")).astype(int)
    assert thumb.shape == theirs.shape
    assert np.abs(thumb.astype(int) - theirs).mean() < 2
    th, tw = thumb.shape[:2]
    group = zarr.open_group(str(cmu_result), mode="r")
    classes = group.attrs["wsiseg"]["classes"]
    assert png.shape[1] == tw and png.shape[0] == th + 18 * (len(classes) - 1) + 8
    painted = np.any(png[:th] != thumb, axis=-1)
    labels = group["labels"][...]
    # This slide has no bounds offset and the map covers it all: the painted share of the
    # thumbnail is the non-background share of the map.
    assert painted.mean() == pytest.approx((labels > 0).mean(), abs=0.02)


def test_predict_exports_right_after(svs_x20, pixel_model, tmp_path):
    path, _ = pixel_model
    out = tmp_path / "x20.wsiseg.zarr"
    runner = CliRunner()
    args = ["predict", str(svs_x20.path), "--model", str(path), "--out", str(out), "--quiet"]
    bad = runner.invoke(main, args + ["--export", "report,pdf"])
    assert bad.exit_code == 2 and "pdf" in bad.output and not out.exists()
    result = runner.invoke(main, args + ["--export", "report"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "x20.report.json").read_text())
    assert report["result"] == str(out)
