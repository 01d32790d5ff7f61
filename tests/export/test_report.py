"""The report export: areas equal pixel counts times pixel area; regions match whole-map labelling."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from scipy import ndimage

from wsiseg.cards import ClassInfo
from wsiseg.cli.main import main
from wsiseg.export import ExportOptions, export_result
from wsiseg.export.report import class_statistics, intended_use, region_sizes
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.models.loading import CARDS_DIR, DEFAULT_MODEL
from wsiseg.result.store import result_array
from wsiseg.testing.result import write_result


@pytest.mark.parametrize("connectivity", [4, 8])
def test_streamed_statistics_equal_whole_map_labelling(connectivity):
    rng = np.random.default_rng(1)
    labels = (ndimage.zoom(rng.random((30, 41)), 8, order=1) * 4).astype(np.uint8)
    # A diagonal chain crossing band edges (bands of 16 rows) is one region.
    labels[:, :] = np.where(labels == 3, 2, labels)
    for i in range(60):
        labels[i, 200 + i] = 3
    array = zarr.create_array(store=zarr.storage.MemoryStore(), shape=labels.shape,
                              chunks=(16, 64), dtype="uint8")
    array[:] = labels
    counts, regions = class_statistics(array, 4, connectivity)
    assert counts.tolist() == np.bincount(labels.ravel(), minlength=4).tolist()
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    expected = [ndimage.label(labels == c, structure=structure)[1] for c in range(4)]
    assert regions.tolist() == expected and regions[3] == (1 if connectivity == 8 else 60)
    _, sizes = region_sizes(array, 4, connectivity)
    for c in range(4):
        found, _ = ndimage.label(labels == c, structure=structure)
        assert sorted(sizes[c].tolist()) == sorted(np.bincount(found.ravel())[1:].tolist())


def test_report_counts_the_regions_the_geojson_writes(tmp_path):
    """Same rule both ways: pixels touching at a corner are two regions, and --min-area drops
    the same small ones; the CSV says units and frame, rounds, totals, and ends with the use."""
    labels = np.zeros((40, 50), dtype=np.uint8)
    labels[2:4, 2:4] = 1  # 4 pixels
    labels[4:6, 4:6] = 1  # touches the first at a corner only: another region
    labels[10:30, 10:30] = 2  # 400 pixels less a hole of class 1 (one pixel)
    labels[15, 15] = 1
    labels[35:38, 40:49] = 2  # 27 pixels
    classes = [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "a", (0, 170, 230)),
               ClassInfo(2, "b", (128, 0, 128))]
    # Map pixels of 2 x 2 level-0 pixels at 0.5 um: 1 um^2 each.
    result = write_result(tmp_path / "r.wsiseg.zarr", labels, classes, scale=(2, 2),
                          slide_mpp=(0.5, 0.5))
    for min_area, expected in ((0.0, {"a": 3, "b": 2}), (4.0, {"a": 2, "b": 2}),
                               (30.0, {"a": 0, "b": 1})):
        out = tmp_path / f"min{min_area:g}"
        export_result(result, ["report", "geojson"], out, ExportOptions(min_area_um2=min_area))
        features = json.loads((out / "r.geojson").read_text())["features"]
        drawn = Counter(f["properties"]["classification"]["name"] for f in features)
        report = json.loads((out / "r.report.json").read_text())
        counted = {r["name"]: r["regions"] for r in report["classes"] if r["index"] > 0}
        assert counted == expected and {k: drawn[k] for k in counted} == expected
        assert report["tissue_regions"] == len(features) and report["min_area_um2"] == min_area
    lines = (out / "r.report.csv").read_text().splitlines()
    assert lines[0] == ("slide,model,class,area_mm2,share_of_tissue_percent,regions,map_pixels,"
                        "map_mpp")
    rows = list(csv.reader(lines[1:]))
    assert [r[2] for r in rows[:-1]] == ["background", "a", "b", "total tissue"]
    tissue = 9 + 426
    # Areas in mm^2 to 4 decimals, shares in percent to 0.01, pixels of the 1 um/px map.
    assert rows[1][3:] == ["0.0000", f"{100 * 9 / tissue:.2f}", "0", "9", "1"]
    assert rows[2][3:] == ["0.0004", f"{100 * 426 / tissue:.2f}", "1", "426", "1"]
    assert rows[3][3:] == ["0.0004", "100.00", "1", str(tissue), "1"]
    assert rows[-1] == ["# intended use", "intended use not stated by the model card"]


def test_intended_use_is_the_cards_statement_of_use():
    card = json.loads((CARDS_DIR / f"{DEFAULT_MODEL}.json").read_text())
    assert intended_use(card) == ("Demonstration model, research use only. Not a cervical (CIN) "
                                  "model and not for diagnosis.")
    assert intended_use({"description": "A U-Net. For research use only."}) == (
        "For research use only.")
    assert "not stated" in intended_use({"description": "test model"})


@pytest.fixture(scope="module")
def synthetic_result(svs_x20, pixel_model, tmp_path_factory):
    path, _ = pixel_model
    out = tmp_path_factory.mktemp("x20") / "cmu.wsiseg.zarr"  # same stem: same file names
    return predict_slide(svs_x20.path, PredictConfig(model=str(path), out=str(out))).path


@pytest.mark.parametrize("which", ["synthetic_result",
                                   pytest.param("cmu_result", marks=pytest.mark.slow)])
def test_report_areas_are_pixel_counts_times_pixel_area(which, request, tmp_path):
    result_path = request.getfixturevalue(which)
    _check_report(result_path, tmp_path)


def _check_report(cmu_result, tmp_path):
    result = CliRunner().invoke(main, ["export", str(cmu_result), "--to", "report", "--out",
                                       str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "cmu.report.json").read_text())
    group = zarr.open_group(str(cmu_result), mode="r")
    labels = result_array(group, "labels")[...]
    mpp = group.attrs["wsiseg"]["analysis_mpp"]
    counts = np.bincount(labels.ravel(), minlength=len(report["classes"]))
    for row in report["classes"]:
        assert row["map_pixels"] == counts[row["index"]]
        assert row["area_mm2"] == pytest.approx(counts[row["index"]] * mpp[0] * mpp[1] / 1e6)
    shares = [r["share_of_tissue_percent"] for r in report["classes"] if r["index"] > 0]
    assert sum(shares) == pytest.approx(100.0)
    assert report["tissue_map_pixels"] == counts[1:].sum()
    assert report["slide"] == group.attrs["wsiseg"]["slide"]["path"] and report["seconds"] > 0
    with (tmp_path / "cmu.report.csv").open() as f:
        rows = list(csv.DictReader(f))
    comments = [r for r in rows if r["slide"].startswith("#")]
    rows = [r for r in rows if not r["slide"].startswith("#")]
    assert [r["class"] for r in rows] == [c["name"] for c in report["classes"]] + [
        "total tissue"]
    assert [(c["slide"], c["model"]) for c in comments] == [
        *(("# review", reason) for reason in report["review"]),
        ("# intended use", report["intended_use"])]
    assert "seconds" not in rows[0]  # the run time is in the JSON, once
    for r in rows:
        assert re.fullmatch(r"\d+\.\d{4}", r["area_mm2"])
        assert re.fullmatch(r"(\d+\.\d{2})?", r["share_of_tissue_percent"])
    assert not list(tmp_path.glob("*.partial"))


def test_export_errors_are_one_line(tmp_path, synthetic_result):
    cmu_result = synthetic_result
    runner = CliRunner()
    out = runner.invoke(main, ["export", str(tmp_path / "none.zarr"), "--to", "report"])
    assert out.exit_code == 1 and out.output.count("\n") == 1 and "does not exist" in out.output
    out = runner.invoke(main, ["export", str(cmu_result), "--to", "pdf"])
    assert out.exit_code == 1 and "unknown export format" in out.output


@pytest.mark.slow
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
    assert png.shape[1] == tw and png.shape[0] > th  # the caption goes below the thumbnail
    assert (png[th:] == classes[1]["color"]).all(axis=-1).any()  # a legend swatch
    painted = np.any(png[:th] != thumb, axis=-1)
    labels = result_array(group, "labels")[...]
    # This slide has no bounds offset and the map covers it all: the painted share of the
    # thumbnail is the non-background share of the map.
    assert painted.mean() == pytest.approx((labels > 0).mean(), abs=0.02)


@pytest.mark.slow
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


FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1:A2)", "\tTAB"]


def test_names_that_a_spreadsheet_would_run_are_text_in_the_csv_and_exact_in_the_json(tmp_path):
    labels = np.zeros((8, 10), dtype=np.uint8)
    labels[2:5, 2:5] = 1
    labels[6:8, 0:3] = 2
    names = ["background", FORMULAS[0], FORMULAS[4], FORMULAS[1]]
    classes = [ClassInfo(i, name, (10 * i, 0, 0)) for i, name in enumerate(names)]
    result = write_result(tmp_path / "r.wsiseg.zarr", labels, classes)
    group = zarr.open_group(str(result), mode="r+")
    attrs = group.attrs["wsiseg"]
    attrs["model"]["name"] = FORMULAS[3]
    attrs["slide"]["path"] = FORMULAS[2]
    attrs["model"]["card"] = {"description": "=cmd|' /C calc'!A0 for research use only."}
    group.attrs["wsiseg"] = attrs
    json_path, csv_path = export_result(result, ["report"], tmp_path / "out")
    report = json.loads(json_path.read_text())
    assert [c["name"] for c in report["classes"]] == names  # JSON: exact
    assert report["model"] == FORMULAS[3] and report["slide"] == FORMULAS[2]
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    cells = [cell for row in rows for cell in row]
    # No cell a spreadsheet would run; each name is there, behind an apostrophe.
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))], cells
    assert [row[2] for row in rows[1:5]] == ["background", *("'" + n for n in names[1:])]
    assert {row[1] for row in rows[1:-1]} == {"'" + FORMULAS[3]}
    assert {row[0] for row in rows[1:-1]} == {"'" + report["slide"]}
    assert rows[-1][1].startswith("'=cmd")


def test_review_reasons_follow_the_rules(cmu_result, tmp_path):
    from wsiseg.export.report import ReviewRules, build_report, review_reasons

    report = build_report(cmu_result)
    assert isinstance(report["review"], list)
    base = {"tissue_area_mm2": 2.0, "tissue_map_pixels": 2000, "damaged_regions": 0,
            "damaged_area_mm2": 0.0}
    assert review_reasons(base, ()) == []
    flagged = review_reasons({**base, "analysable_tissue_mm2": 0.5, "low_confidence_share": 0.4,
                              "damaged_regions": 3, "damaged_area_mm2": 0.25},
                             ("glass is not white (mean RGB 240, 200, 180); check",))
    assert flagged == ["analysable tissue 25% of the tissue (under 80%)",
                       "artefacts on 1.50 mm^2 of tissue (over 1 mm^2)",
                       "low confidence on 40% of the tissue (over 25%)",
                       "colours: glass is not white (mean RGB 240, 200, 180)",
                       "3 damaged regions not read (0.25 mm^2)"]
    lenient = ReviewRules(min_analysable=0.2, max_artefact_mm2=2.0, max_low_confidence=0.5)
    assert review_reasons({**base, "analysable_tissue_mm2": 0.5, "low_confidence_share": 0.4},
                          (), lenient) == []
    assert review_reasons({**base, "tissue_map_pixels": 0, "tissue_area_mm2": 0.0}, ()) == [
        "no tissue mapped"]
