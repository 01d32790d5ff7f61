"""The uncertainty array of a result: written with its levels, checked on opening like every
array, counted for completeness, absent from results written before it, and in the report."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from hostile_results import CLASSES, SCALE, TISSUE_FACTOR, edit_json, one_line

from wsiseg.errors import ResultError
from wsiseg.export.report import LOW_CONFIDENCE_UNCERTAINTY, build_report, write_report
from wsiseg.result.pyramid import mean_downsample, uncertainty_level_path
from wsiseg.result.rows import FinishedRows
from wsiseg.result.store import open_result, open_result_group, uncertainty_array
from wsiseg.result.writer import OutputWriter
from wsiseg.testing import synthetic_tissue, write_svs
from wsiseg.testing.result import write_result

H, W = 300, 200  # the map; chunks of 64, so 2 levels


def known_map() -> tuple[np.ndarray, np.ndarray]:
    """(labels, uint8 uncertainty) with per-class means and shares worked out by hand."""
    labels = np.zeros((H, W), np.uint8)
    labels[:100] = 1
    labels[100:150] = 2
    uncertainty = np.zeros((H, W), np.uint8)
    uncertainty[:50] = 51  # class 1: half at 51, half at 255 (above 0.5 of 255)
    uncertainty[50:100] = 255
    uncertainty[100:150] = 128  # class 2: all at 128, just above 127.5
    uncertainty[150:] = 127  # background: 127, not counted in the tissue share
    return labels, uncertainty


def publish_with_uncertainty(folder: Path, labels: np.ndarray, uncertainty: np.ndarray,
                             rows: int = 64) -> Path:
    """A published result of ``labels`` whose rows carry ``uncertainty``, streamed in."""
    rgb, _ = synthetic_tissue(H * SCALE, W * SCALE, seed=5, tissue_fraction=0.5)
    slide = write_svs(folder / "slide.svs", rgb, mpp=0.5)
    described = write_result(folder / "described.zarr", labels, CLASSES, scale=(SCALE, SCALE),
                             slide_mpp=(0.5, 0.5))
    info = open_result(described)[1]
    shutil.rmtree(described)
    info = dataclasses.replace(
        info, slide=dataclasses.replace(info.slide, path=slide.resolve()),
        tissue=dataclasses.replace(info.tissue, factor=TISSUE_FACTOR), uncertainty="entropy")
    out = folder / "u.wsiseg.zarr"
    writer = OutputWriter(out, H, W, len(CLASSES), probabilities=False, chunk=64,
                          uncertainty=True)
    mask = (labels[::TISSUE_FACTOR, ::TISSUE_FACTOR] > 0).astype(np.uint8)
    writer.write_tissue(mask)
    writer.write_image(np.full((*mask.shape, 3), 230, np.uint8))
    for y in range(0, H, rows):  # rows of another height than the chunks
        writer.write_rows(FinishedRows(y, labels[y:y + rows], None,
                                       uncertainty=uncertainty[y:y + rows]))
    return writer.publish(info, overwrite=False)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    labels, uncertainty = known_map()
    return publish_with_uncertainty(tmp_path_factory.mktemp("uncertain"), labels, uncertainty,
                                    rows=37)


@pytest.fixture
def copy(published, tmp_path) -> Path:
    return Path(shutil.copytree(published, tmp_path / published.name))


def test_the_array_and_its_mean_levels_are_written_and_recorded(published):
    _, uncertainty = known_map()
    level0, info = open_result(published)
    group = open_result_group(published)
    array = uncertainty_array(group, info)
    assert info.uncertainty == "entropy" and array is not None
    assert array.dtype == "uint8" and array.chunks == level0.chunks
    assert np.array_equal(array[:], uncertainty)
    assert np.array_equal(group[uncertainty_level_path(1)][:], mean_downsample(uncertainty[None])[0])
    chunks = group.attrs["wsiseg_chunks"]
    assert chunks[uncertainty_level_path(0)] == 5 * 4 and chunks[uncertainty_level_path(1)] == 3 * 2
    ome = group["wsiseg/uncertainty"].attrs["ome"]["multiscales"][0]
    assert [d["path"] for d in ome["datasets"]] == ["0", "1"] and ome["type"] == "mean"


def test_it_validates_as_an_ngff_image(published):
    image = pytest.importorskip("ome_zarr_models.v05.image")
    group = zarr.open_group(str(published / "wsiseg" / "uncertainty"), mode="r")
    (multiscale,) = image.Image.from_zarr(group).ome_attributes.multiscales
    assert [a.name for a in multiscale.axes] == ["y", "x"]


def test_a_wrong_shape_or_dtype_or_a_missing_array_is_refused(copy, tmp_path):
    path = copy / uncertainty_level_path(0) / "zarr.json"
    edit_json(path, lambda d: d.update(shape=[H, W + 1]))
    with pytest.raises(ResultError) as err:
        open_result(copy)
    one_line(str(err.value), "wsiseg/uncertainty/0", "(300, 201)", "uint8 of shape (300, 200)")
    edit_json(path, lambda d: d.update(shape=[H, W], data_type="uint16"))
    with pytest.raises(ResultError, match="wsiseg/uncertainty/0 is uint16"):
        open_result(copy)
    # The attributes record an uncertainty: without its array the result is not whole.
    shutil.rmtree(copy / "wsiseg" / "uncertainty")
    with pytest.raises(ResultError) as err:
        open_result(copy)
    one_line(str(err.value), "no array wsiseg/uncertainty/0")


def test_a_level_of_the_wrong_shape_or_a_lost_chunk_is_refused(copy):
    edit_json(copy / uncertainty_level_path(1) / "zarr.json", lambda d: d.update(shape=[150, 99]))
    with pytest.raises(ResultError, match="wsiseg/uncertainty/1 is uint8 of shape"):
        open_result(copy)
    edit_json(copy / uncertainty_level_path(1) / "zarr.json", lambda d: d.update(shape=[150, 100]))
    open_result(copy)
    (copy / uncertainty_level_path(0) / "c" / "2" / "1").unlink()
    with pytest.raises(ResultError) as err:
        open_result(copy)
    one_line(str(err.value), "damaged", "wsiseg/uncertainty/0: 1 of 20 chunks missing")


def test_an_unknown_measure_is_refused(copy):
    edit_json(copy / "zarr.json", lambda d: d["attributes"]["wsiseg"].update(uncertainty="x"))
    with pytest.raises(ResultError) as err:
        open_result(copy)
    one_line(str(err.value), "'uncertainty' is 'x', not one of entropy, entropy+views")


def test_the_report_gives_each_class_its_mean_confidence(published, tmp_path):
    assert LOW_CONFIDENCE_UNCERTAINTY == 0.5
    report = build_report(published)
    assert report["confidence"] == pytest.approx({
        "background": 1 - 127 / 255, "tissue": 1 - (51 + 255) / 2 / 255,
        "tumour": 1 - 128 / 255})
    # Tissue: 100 x 200 pixels of class 1 (half above 0.5) and 50 x 200 of class 2 (all).
    assert report["low_confidence_share"] == pytest.approx((50 + 50) / 150)
    assert report["tissue_confidence"] == pytest.approx(
        1 - (50 * 51 + 50 * 255 + 50 * 128) / (150 * 255))
    assert report["uncertainty_measure"] == "entropy"
    json_path, csv_path = write_report(published, tmp_path, "r")
    assert json.loads(json_path.read_text())["confidence"]["tumour"] == pytest.approx(127 / 255)
    with open(csv_path, newline="") as f:
        rows = {r["class"]: r for r in csv.DictReader(f) if not r["slide"].startswith("#")}
    assert rows["tumour"]["confidence"] == f"{127 / 255:.4f}"
    assert rows["total tissue"]["confidence"] == f"{report['tissue_confidence']:.4f}"


def test_a_result_without_the_array_opens_and_reports_no_confidence(tmp_path):
    labels, _ = known_map()
    old = write_result(tmp_path / "old.wsiseg.zarr", labels, CLASSES)
    _, info = open_result(old)
    assert info.uncertainty is None and uncertainty_array(open_result_group(old), info) is None
    report = build_report(old)
    for key in ("confidence", "low_confidence_share", "tissue_confidence"):
        assert key not in report
    _, csv_path = write_report(old, tmp_path, "old")
    with open(csv_path, newline="") as f:
        header = next(csv.reader(f))
    assert header[-1] == "map_mpp" and "confidence" not in header


def test_the_writer_refuses_rows_without_uncertainty(tmp_path):
    writer = OutputWriter(tmp_path / "w.wsiseg.zarr", 64, 64, 3, probabilities=False, chunk=64,
                          uncertainty=True)
    try:
        with pytest.raises(RuntimeError, match="no uncertainty"):
            writer.write_rows(FinishedRows(0, np.zeros((64, 64), np.uint8), None))
    finally:
        writer.abort()
