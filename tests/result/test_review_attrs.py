"""The review reasons a result records when published: found from its own arrays (artefact
labels, uncertainty, the colour warnings and damage it records) under the default rules, in one
banded pass, the same as the report finds under those rules; absent from older results."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from hostile_results import one_line

from wsiseg.cards import ClassInfo
from wsiseg.errors import ResultError
from wsiseg.export.report import build_report
from wsiseg.result.info import DamagedArea, ResultInfo
from wsiseg.result.review import (
    ReviewRules,
    recorded_review,
    result_review,
    tissue_counts,
)
from wsiseg.result.rows import FinishedRows
from wsiseg.result.store import open_result
from wsiseg.result.writer import OutputWriter
from wsiseg.testing.result import write_result

CLASSES = (ClassInfo(0, "background", (255, 255, 255)), ClassInfo(1, "tissue", (0, 128, 0)),
           ClassInfo(2, "tumour", (200, 0, 0)))
SLIDE_MPP, SCALE = 4.0, 4  # 16 um map pixels: 0.000256 mm^2 each
FACTOR = 4  # map pixels a side per artefact label
H = W = 250  # not a multiple of the chunks (64) nor of FACTOR: partial bands and blocks


def _info(folder: Path, **changes) -> ResultInfo:
    """The description of a 250 x 250 map at 16 um/px, artefact labels 4 times coarser."""
    described = write_result(folder / "described.wsiseg.zarr", np.zeros((H, W), np.uint8),
                             CLASSES, scale=(SCALE, SCALE), slide_mpp=(SLIDE_MPP, SLIDE_MPP))
    info = open_result(described)[1]
    shutil.rmtree(described)
    tissue = dataclasses.replace(info.tissue, factor=FACTOR, mpp=(64.0, 64.0),
                                 scale_to_level0=(SCALE * FACTOR, SCALE * FACTOR))
    return dataclasses.replace(info, tissue=tissue, uncertainty="entropy", **changes)


def _publish(out: Path, labels, uncertainty=None, qc=None, **changes) -> Path:
    """``labels`` (and its uncertainty and artefact labels) published at ``out`` through the
    writer that ``wsiseg predict`` uses, in chunks of 64."""
    info = dataclasses.replace(_info(out.parent, **changes), path=out,
                               qc=None if qc is None else "record")
    writer = OutputWriter(out, H, W, len(CLASSES), probabilities=False, chunk=64,
                          uncertainty=uncertainty is not None)
    grid = (-(-H // FACTOR), -(-W // FACTOR))
    writer.write_tissue(np.ones(grid, np.uint8))
    if qc is not None:
        writer.write_qc(qc)
    writer.write_image(np.full((*grid, 3), 230, np.uint8))
    writer.write_rows(FinishedRows(y=0, labels=labels, probabilities=None,
                                   uncertainty=uncertainty))
    return writer.publish(info, overwrite=False)


def _painted() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue on rows 0-199 (50 000 pixels, 12.8 mm^2), pen over rows 0-79 (20 000 of them,
    5.12 mm^2: 60% analysable), uncertainty 255 over rows 100-179 (40% of the tissue)."""
    labels = np.zeros((H, W), np.uint8)
    labels[:200] = 1
    labels[:50, :100] = 2
    qc = np.zeros((-(-H // FACTOR), -(-W // FACTOR)), np.uint8)
    qc[:20] = 1  # map rows 0-79, the last partial column of blocks included
    uncertainty = np.zeros((H, W), np.uint8)
    uncertainty[100:180] = 255
    uncertainty[220:] = 255  # background: not counted
    return labels, uncertainty, qc


PAINTED_REASONS = (
    "analysable tissue 60% of the tissue (under 80%)",
    "artefacts on 5.12 mm^2 of tissue (over 1 mm^2)",
    "low confidence on 40% of the tissue (over 25%)",
    "colours: glass is not white",
    "1 damaged regions not read (0.0016 mm^2)",
)


def test_a_result_records_its_reasons_to_review_as_the_report_finds_them(tmp_path):
    labels, uncertainty, qc = _painted()
    out = _publish(tmp_path / "painted.wsiseg.zarr", labels, uncertainty, qc,
                   warnings=("glass is not white; check the scanner's white balance",),
                   damaged_regions=(DamagedArea(0, (0, 0, 10, 10), "bad tile"),))
    stored = zarr.open_group(str(out), mode="r").attrs["wsiseg"]["review"]
    assert tuple(stored) == PAINTED_REASONS
    assert open_result(out)[1].review == PAINTED_REASONS
    assert recorded_review(out) == PAINTED_REASONS
    # The report finds the same under the default rules, and its own under others.
    assert build_report(out)["review"] == list(PAINTED_REASONS)
    lenient = ReviewRules(min_analysable=0.5, max_artefact_mm2=10, max_low_confidence=0.5)
    assert build_report(out, review=lenient)["review"] == list(PAINTED_REASONS[3:])


def test_a_clean_result_records_an_empty_list(tmp_path):
    labels = np.ones((H, W), np.uint8)
    out = _publish(tmp_path / "clean.wsiseg.zarr", labels, np.zeros((H, W), np.uint8),
                   np.zeros((-(-H // FACTOR), -(-W // FACTOR)), np.uint8))
    assert zarr.open_group(str(out), mode="r").attrs["wsiseg"]["review"] == []
    assert open_result(out)[1].review == () == recorded_review(out)
    # Without tissue, that is the reason; without uncertainty or artefacts, nothing is guessed.
    empty = _publish(tmp_path / "empty.wsiseg.zarr", np.zeros((H, W), np.uint8))
    assert open_result(empty)[1].review == ("no tissue mapped",)


def test_an_older_result_reads_as_none_and_a_bad_value_is_refused(tmp_path):
    old = write_result(tmp_path / "old.wsiseg.zarr", np.ones((8, 8), np.uint8), CLASSES)
    assert "review" not in zarr.open_group(str(old), mode="r").attrs["wsiseg"]
    assert open_result(old)[1].review is None and recorded_review(old) is None
    info = open_result(old)[1]
    assert "review" not in info.to_attrs()
    back = ResultInfo.from_attrs({**info.to_attrs(), "review": ["a", "b"]}, old)
    assert back.review == ("a", "b") and back.to_attrs()["review"] == ["a", "b"]
    with pytest.raises(ResultError) as err:
        ResultInfo.from_attrs({**info.to_attrs(), "review": "no tissue mapped"}, old)
    one_line(str(err.value), str(old), "'review'", "a list of text")
    with pytest.raises(ResultError) as err:
        recorded_review(tmp_path)
    one_line(str(err.value), str(tmp_path), "not a finished wsiseg result")


def test_the_counts_of_one_banded_pass_match_the_whole_arrays():
    rng = np.random.default_rng(5)
    for height, width, factor, chunk in ((250, 250, 4, 64), (97, 131, 3, 16), (40, 33, 8, 7)):
        labels = rng.integers(0, 3, (height, width), dtype=np.uint8)
        uncertainty = rng.integers(0, 256, (height, width), dtype=np.uint8)
        qc = rng.integers(0, 5, (-(-height // factor), -(-width // factor)), dtype=np.uint8)
        qc[qc < 3] = 0
        stored = zarr.create_array(zarr.storage.MemoryStore(), shape=labels.shape,
                                   chunks=(chunk, chunk), dtype="uint8")
        stored[...] = labels
        counts = tissue_counts(stored, uncertainty, qc, factor)
        tissue = labels > 0
        fine = np.repeat(np.repeat(qc, factor, 0), factor, 1)[:height, :width]
        assert counts.tissue == tissue.sum()
        assert counts.low_confidence == (tissue & (uncertainty > 127.5)).sum()
        assert counts.on_artefacts == (tissue & (fine > 0)).sum()
    with pytest.raises(ValueError, match="do not cover"):
        tissue_counts(labels, qc=qc[:-1], factor=factor)


class _Counted:
    """A map that records the rows each read asks for."""

    def __init__(self, array: np.ndarray, chunks: tuple[int, int] | None = None) -> None:
        self.array, self.chunks, self.reads = array, chunks, []

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def __getitem__(self, key: slice) -> np.ndarray:
        self.reads.append((key.start, key.stop))
        return self.array[key]


def test_a_map_of_a_few_megapixels_is_read_once_in_bands_of_chunk_rows(tmp_path):
    labels = np.zeros((2048, 2048), np.uint8)
    labels[:1600] = 1
    qc = np.zeros((512, 512), np.uint8)
    qc[:160] = 4  # map rows 0-639: 40% of the tissue
    uncertainty = np.zeros((2048, 2048), np.uint8)
    uncertainty[800:1440] = 200
    maps = _Counted(labels, (512, 512)), _Counted(uncertainty, (512, 512)), _Counted(qc)
    assert result_review(_info(tmp_path), *maps) == (
        "analysable tissue 60% of the tissue (under 80%)",
        "artefacts on 335.54 mm^2 of tissue (over 1 mm^2)",
        "low confidence on 40% of the tissue (over 25%)")
    bands = [(y, y + 512) for y in range(0, 2048, 512)]
    assert maps[0].reads == maps[1].reads == bands
    assert maps[2].reads == [(y // FACTOR, y1 // FACTOR) for y, y1 in bands]
