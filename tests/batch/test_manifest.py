"""manifest.csv: its rows read back as written, written whole, and the rows of earlier batches
kept."""

from __future__ import annotations

from pathlib import Path

from wsiseg.batch.manifest import Manifest, SlideRecord, read_manifest, write_manifest
from wsiseg.batch.runner import BatchConfig, predict_slides
from wsiseg.inference.pipeline import PredictConfig


def test_rows_read_back_as_written_and_nothing_else_is_left(tmp_path):
    rows = [SlideRecord("a/s0.svs", "done", output="out/s0.wsiseg.zarr", patches=12,
                        seconds=1.5, worker="w-0@host"),
            SlideRecord("a/s1.svs", "failed", error="s1.svs: cannot read pixels, \"quoted\""),
            SlideRecord("a/s2.svs")]
    path = tmp_path / "manifest.csv"
    path.write_text("an older manifest\n")
    write_manifest(path, rows)
    assert read_manifest(path) == rows
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]  # no temporary file


def test_a_slide_started_when_its_run_died_is_known_by_its_stem(tmp_path):
    path = tmp_path / "manifest.csv"
    write_manifest(path, [SlideRecord("old/s0.svs", "started"), SlideRecord("old/s1.svs", "done"),
                          SlideRecord("old/s9.svs", "failed", error="bad")])
    ours = [SlideRecord("new/s0.svs"), SlideRecord("new/s1.svs")]
    manifest = Manifest(path, ours)
    assert manifest.died_in(Path("new/s0.svs")) and not manifest.died_in(Path("new/s1.svs"))
    manifest.save()
    assert [(r.slide, r.status) for r in read_manifest(path)] == [
        ("old/s9.svs", "failed"), ("new/s0.svs", "pending"), ("new/s1.svs", "pending")]


def test_the_manifest_keeps_the_slides_of_earlier_batches(slides, pixel_model, tmp_path):
    config = BatchConfig(out_dir=str(tmp_path), progress=False,
                         predict=PredictConfig(model=str(pixel_model[0])))
    predict_slides([slides / "s0.svs", slides / "bad.svs"], config)
    result = predict_slides([slides / "s1.svs", slides / "bad.svs"], config)
    assert [Path(r.slide).name for r in result.records] == ["s1.svs", "bad.svs"]
    rows = {Path(r.slide).name: r.status for r in read_manifest(result.manifest)}
    assert rows == {"s0.svs": "done", "s1.svs": "done", "bad.svs": "failed"}
    assert len(read_manifest(result.manifest)) == 3
