"""manifest.csv: its rows read back as written, written whole, the rows of earlier batches
kept, no row lost when several processes update it at once, and a write that fails said in one
line with nothing left behind."""

from __future__ import annotations

import contextlib
import csv
import errno
import subprocess
import sys
from pathlib import Path

import pytest

import wsiseg.batch.manifest as manifest_module
from wsiseg.batch.claims import claim_path, take_claim
from wsiseg.batch.discovery import output_for
from wsiseg.batch.manifest import Manifest, SlideRecord, read_manifest, write_manifest
from wsiseg.batch.runner import BatchConfig, predict_slides
from wsiseg.errors import OutputError
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


def test_text_a_spreadsheet_would_run_is_written_inert_and_read_back_exactly(tmp_path):
    names = ["=HYPERLINK(1).svs", "@SUM(1).svs", "+1.svs", "-x.svs", "'x.svs", "'=x.svs", "'"]
    rows = [SlideRecord(n, "failed", error=f"{n}: bad", output=n, worker=n) for n in names]
    path = tmp_path / "manifest.csv"
    write_manifest(path, rows)
    assert read_manifest(path) == rows
    with open(path, newline="") as f:
        cells = [row for row in csv.reader(f)][1:]
    for row in cells:  # slide, status, error, output, patches, seconds, worker
        for cell in (row[0], row[2], row[3], row[6]):
            assert cell.startswith("'")  # shown as text, never run
    assert cells[0][0] == "'=HYPERLINK(1).svs" and cells[4][0] == "''x.svs"


def test_a_batch_of_slides_named_like_formulas_resumes_from_its_manifest(
        slides, pixel_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths: the slide cells begin with the names
    names = ["=HYPERLINK(1).svs", "@SUM(1).svs", "'x.svs"]
    for name in names:
        (tmp_path / name).write_bytes((slides / "s0.svs").read_bytes())
    config = BatchConfig(out_dir="out", progress=False,
                         predict=PredictConfig(model=str(pixel_model[0]), trust_code=True))
    first = predict_slides([Path(n) for n in names], config)
    assert [r.status for r in first.records] == ["done"] * 3
    text = (tmp_path / "out" / "manifest.csv").read_text()
    assert "\n=" not in text and "\n@" not in text and "'=HYPERLINK(1).svs" in text
    again = predict_slides([Path(n) for n in names], config)
    assert [r.status for r in again.records] == ["skipped"] * 3
    assert [(r.slide, r.status) for r in read_manifest(again.manifest)] == [
        (n, "skipped") for n in names]  # one row each: every name came back as it was


def test_a_slide_started_when_its_run_died_is_known_by_its_stem(tmp_path):
    path = tmp_path / "manifest.csv"
    write_manifest(path, [SlideRecord("old/s0.svs", "started"), SlideRecord("old/s1.svs", "done"),
                          SlideRecord("old/s9.svs", "failed", error="bad")])
    ours = [SlideRecord("new/s0.svs"), SlideRecord("new/s1.svs")]
    manifest = Manifest(path, ours)
    assert manifest.died_in(Path("new/s0.svs")) and not manifest.died_in(Path("new/s1.svs"))
    manifest.save()
    # The row of the slide the run died in stays "started" (a pending row does not replace it)
    # until a run starts that slide again; rows keep their places.
    assert [(r.slide, r.status) for r in read_manifest(path)] == [
        ("old/s0.svs", "started"), ("new/s1.svs", "pending"), ("old/s9.svs", "failed")]
    ours[0].status = "started"
    manifest.update(0)
    first = read_manifest(path)[0]
    assert (first.slide, first.status) == ("new/s0.svs", "started")


@pytest.mark.slow
def test_the_manifest_keeps_the_slides_of_earlier_batches(slides, pixel_model, tmp_path):
    config = BatchConfig(out_dir=str(tmp_path), progress=False,
                         predict=PredictConfig(model=str(pixel_model[0])))
    predict_slides([slides / "s0.svs", slides / "bad.svs"], config)
    result = predict_slides([slides / "s1.svs", slides / "bad.svs"], config)
    assert [Path(r.slide).name for r in result.records] == ["s1.svs", "bad.svs"]
    rows = {Path(r.slide).name: r.status for r in read_manifest(result.manifest)}
    assert rows == {"s0.svs": "done", "s1.svs": "done", "bad.svs": "failed"}
    assert len(read_manifest(result.manifest)) == 3


# Updates the manifest ARGV[1] from one process, once the file ARGV[3] exists: its own slides
# ARGV[2]-0 ... ARGV[2]-14, each marked started and then done, one update at a time.
WRITER = """
import os, sys, time
from pathlib import Path
from wsiseg.batch.manifest import Manifest, SlideRecord

path, name, go = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.002)
records = [SlideRecord(f"{name}/{name}-{i}.svs") for i in range(15)]
manifest = Manifest(path, records)
manifest.save()
for i, record in enumerate(records):
    record.status = "started"
    manifest.update(i)
    record.status, record.worker = "done", name
    manifest.update(i)
"""


@pytest.mark.slow
def test_processes_updating_one_manifest_at_once_lose_no_row(tmp_path):
    path, go = tmp_path / "manifest.csv", tmp_path / "go"
    write_manifest(path, [SlideRecord("earlier/e0.svs", "failed", error="bad")])
    names = ["a", "b", "c", "d"]
    runs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(go)],
                             stderr=subprocess.PIPE, text=True) for name in names]
    go.touch()
    for run in runs:
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
    rows = read_manifest(path)
    assert len(rows) == 1 + 15 * len(names)
    assert rows[0] == SlideRecord("earlier/e0.svs", "failed", error="bad")
    for name in names:
        mine = [r for r in rows if r.slide.startswith(f"{name}/")]
        assert sorted(r.slide for r in mine) == sorted(f"{name}/{name}-{i}.svs" for i in range(15))
        assert all(r.status == "done" and r.worker == name for r in mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".wsiseg.lock", "go", "manifest.csv"]


def test_a_started_slide_whose_claim_is_live_belongs_to_another_process(tmp_path):
    path = tmp_path / "manifest.csv"
    write_manifest(path, [SlideRecord("old/s0.svs", "started", worker="pid-1@elsewhere")])
    manifest = Manifest(path, [SlideRecord("new/s0.svs")])
    with take_claim(claim_path(output_for(Path("new/s0.svs"), tmp_path)), batch="other"):
        assert not manifest.died_in(Path("new/s0.svs"))
        manifest.save()  # its pending row does not replace the other process's
        assert read_manifest(path) == [SlideRecord("old/s0.svs", "started",
                                                   worker="pid-1@elsewhere")]
    assert manifest.died_in(Path("new/s0.svs"))


def test_a_manifest_that_cannot_be_written_says_so_in_one_line_and_leaves_nothing(
        tmp_path, monkeypatch):
    path = tmp_path / "manifest.csv"
    records = [SlideRecord("a/s0.svs"), SlideRecord("a/s1.svs")]
    manifest = Manifest(path, records)
    manifest.save()
    real = manifest_module.atomic_write

    @contextlib.contextmanager
    def full_disk(target, *args, **kwargs):
        with real(target, *args, **kwargs) as f:
            f.write("slide,status,er")  # half a header, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
            yield f

    monkeypatch.setattr(manifest_module, "atomic_write", full_disk)
    records[0].status = "done"
    with pytest.raises(OutputError) as failed:
        manifest.update(0)
    assert str(failed.value) == (f"cannot write {path}: no space left on the device; free some "
                                 "space or write elsewhere")
    assert [r.status for r in read_manifest(path)] == ["pending", "pending"]  # as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == [".wsiseg.lock", "manifest.csv"]
    # The lock file cannot be made: a folder of its name is in the way.
    monkeypatch.undo()
    (tmp_path / ".wsiseg.lock").unlink()
    (tmp_path / ".wsiseg.lock").mkdir()
    with pytest.raises(OutputError, match=r"cannot open .*\.wsiseg\.lock: a folder of that name "
                                          r"is in the way; remove it or write elsewhere"):
        manifest.update(0)
