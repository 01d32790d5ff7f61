"""Running a batch: a bad slide recorded while the others finish, resuming (results kept,
exports made up, a slide that killed the process put last), a SIGKILL and a Ctrl-C of a
single-process run, a slide another process holds, and a manifest that cannot be written."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from announcing import ANNOUNCING, wait_for_line
from click.testing import CliRunner

from wsiseg.batch.claims import claim_path, take_claim
from wsiseg.batch.manifest import SlideRecord, read_manifest, write_manifest
from wsiseg.batch.runner import BatchConfig, predict_slides
from wsiseg.cli.main import main
from wsiseg.inference.pipeline import PredictConfig
from wsiseg.result.store import result_array

pytestmark = pytest.mark.slow


def _labels(result: Path) -> np.ndarray:
    return result_array(zarr.open_group(str(result), mode="r"), "labels")[:]


def _mtimes(folder: Path) -> dict[str, float]:
    return {p.name: (p / "zarr.json").stat().st_mtime_ns for p in folder.glob("*.wsiseg.zarr")}


def test_a_bad_slide_is_recorded_and_the_batch_goes_on(slides, pixel_model, tmp_path):
    out = tmp_path / "out"
    args = ["predict", str(slides), "--out", str(out), "--model", str(pixel_model[0]), "--quiet"]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 1, run.output
    assert "bad.svs" in run.output and "Traceback" not in run.output
    assert sorted(p.name for p in out.glob("*.wsiseg.zarr")) == [f"s{i}.wsiseg.zarr" for i in range(3)]
    records = {Path(r.slide).name: r for r in read_manifest(out / "manifest.csv")}
    assert [records[f"s{i}.svs"].status for i in range(3)] == ["done"] * 3
    assert all(records[f"s{i}.svs"].patches > 0 for i in range(3))
    assert records["bad.svs"].status == "failed" and "bad.svs" in records["bad.svs"].error
    assert records["bad.svs"].output == ""

    before = _mtimes(out)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1
    assert _mtimes(out) == before  # nothing recomputed
    records = {Path(r.slide).name: r.status for r in read_manifest(out / "manifest.csv")}
    assert records == {"bad.svs": "failed", "s0.svs": "skipped", "s1.svs": "skipped",
                       "s2.svs": "skipped"}

    good = CliRunner().invoke(main, args[:1] + [str(slides / "s*.svs")] + args[2:])
    assert good.exit_code == 0, good.output


def test_a_result_from_other_settings_is_not_taken_for_this_batch(slides, pixel_model, tmp_path):
    config = BatchConfig(out_dir=str(tmp_path), progress=False,
                         predict=PredictConfig(model=str(pixel_model[0])))
    predict_slides([slides / "s0.svs"], config)
    changed = BatchConfig(out_dir=str(tmp_path), progress=False,
                          predict=PredictConfig(model=str(pixel_model[0]), tissue_threshold=0.5))
    (record,) = predict_slides([slides / "s0.svs"], changed).records
    assert record.status == "failed" and "tissue_threshold" in record.error
    assert "--overwrite" in record.error
    redo = BatchConfig(out_dir=str(tmp_path), progress=False, overwrite=True,
                       predict=PredictConfig(model=str(pixel_model[0]), tissue_threshold=0.5))
    (record,) = predict_slides([slides / "s0.svs"], redo).records
    assert record.status == "done"


def test_a_map_with_skipped_damage_is_kept_only_by_a_batch_that_skips_damage(
        slides, pixel_model, tmp_path):
    def batch(skip: bool) -> BatchConfig:
        return BatchConfig(out_dir=str(tmp_path), progress=False, predict=PredictConfig(
            model=str(pixel_model[0]), skip_damaged=skip))

    (record,) = predict_slides([slides / "bad.svs"], batch(True)).records
    assert record.status == "done"
    (record,) = predict_slides([slides / "bad.svs"], batch(True)).records
    assert record.status == "skipped"
    (record,) = predict_slides([slides / "bad.svs"], batch(False)).records
    assert record.status == "failed" and "skip_damaged" in record.error
    # A clean slide's map is the same with or without the flag: it is kept either way.
    predict_slides([slides / "s0.svs"], batch(True))
    (record,) = predict_slides([slides / "s0.svs"], batch(False)).records
    assert record.status == "skipped"


# Runs the command line and stops it for good in the middle of the slide whose partial output
# is named by the environment's STOP_IN: once that slide's tissue mask is written, the process
# says so on stdout (as ANNOUNCING does) and waits, never to go on, for the signal that ends it.
STOPPING = """
import os, sys, threading
from wsiseg.result.writer import OutputWriter

write_tissue = OutputWriter.write_tissue

def stopping_write_tissue(self, *args, **kwargs):
    write_tissue(self, *args, **kwargs)
    print(self.partial.name, flush=True)
    if self.partial.name == os.environ["STOP_IN"]:
        threading.Event().wait()

OutputWriter.write_tissue = stopping_write_tissue
from wsiseg.cli.main import main
sys.argv[0] = "wsiseg"
main()
"""


def test_sigkill_mid_slide_then_rerun_finishes_identical_to_an_uninterrupted_run(
        slides, pixel_model, tmp_path):
    inputs = [str(slides / f"s{i}.svs") for i in range(3)]
    args = ["predict", *inputs, "--model", str(pixel_model[0]), "--batch-size", "1", "--quiet",
            "--out"]
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-c", STOPPING, *args, str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "STOP_IN": "s1.wsiseg.zarr.partial"})
    wait_for_line(run, "s1.wsiseg.zarr.partial")
    run.send_signal(signal.SIGKILL)
    run.communicate()
    assert run.returncode == -signal.SIGKILL
    assert (out / "s0.wsiseg.zarr").is_dir() and not (out / "s1.wsiseg.zarr").exists()
    assert (out / "s1.wsiseg.zarr.partial").is_dir()  # killed with its slide half made
    statuses = [r.status for r in read_manifest(out / "manifest.csv")]
    assert statuses == ["done", "started", "pending"]

    # Every run in a process of its own, as the killed one: the same threads, the same sums.
    command = [sys.executable, "-m", "wsiseg.cli.main", *args]
    rerun = subprocess.run([*command, str(out)], capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    statuses = [r.status for r in read_manifest(out / "manifest.csv")]
    assert statuses == ["skipped", "done", "done"]
    assert not list(out.glob("*.partial"))

    whole = tmp_path / "whole"
    uninterrupted = subprocess.run([*command, str(whole)], capture_output=True, text=True,
                                   check=False)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    for i in range(3):
        a, b = out / f"s{i}.wsiseg.zarr", whole / f"s{i}.wsiseg.zarr"
        assert np.array_equal(_labels(a), _labels(b))
        ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
        assert sorted(ga.array_keys()) == sorted(gb.array_keys())
        assert all(np.array_equal(ga[k][:], gb[k][:]) for k in ga.array_keys())


def test_a_rerun_makes_only_the_exports_that_are_missing_or_stale(slides, pixel_model, tmp_path):
    from wsiseg.export import ExportOptions, export_files

    options = ExportOptions(tiff_overlay=True)
    config = BatchConfig(out_dir=str(tmp_path), progress=False,
                         exports=("report", "tiff", "geojson", "png"), export_options=options,
                         predict=PredictConfig(model=str(pixel_model[0])))
    predict_slides([slides / "s0.svs"], config)
    names = export_files("s0", config.exports, options)
    assert sorted(names) == sorted(p.name for p in tmp_path.iterdir() if p.is_file()
                                   and p.name not in ("manifest.csv", ".wsiseg.lock"))

    def mtimes():
        return {n: (tmp_path / n).stat().st_mtime_ns for n in names}

    first = mtimes()
    (record,) = predict_slides([slides / "s0.svs"], config).records
    assert record.status == "skipped" and mtimes() == first  # all there: nothing rewritten
    (tmp_path / "s0.overlay.tif").unlink()
    predict_slides([slides / "s0.svs"], config)
    assert (tmp_path / "s0.overlay.tif").is_file()
    # Exports older than the result were made from an earlier result: they are made again.
    made = (tmp_path / "s0.wsiseg.zarr" / "zarr.json").stat().st_mtime_ns
    for n in names:
        os.utime(tmp_path / n, ns=(made - 10**9, made - 10**9))
    predict_slides([slides / "s0.svs"], config)
    assert all(t >= made for t in mtimes().values())


# Runs the command line with a fault: the process dies as soon as it starts on a slide whose
# name holds "crash" (as it would on a slide that makes a library below us crash, or that takes
# more memory than the machine has).
CRASHING = """
import os, sys
import wsiseg.batch.worker as batch
run_slide = batch.run_slide
batch.run_slide = lambda slide, *a, **k: (os._exit(9) if "crash" in os.path.basename(slide)
                                         else run_slide(slide, *a, **k))
from wsiseg.cli.main import main
sys.argv[0] = "wsiseg"
main()
"""


def test_a_slide_that_kills_the_process_goes_last_and_cannot_hold_up_the_batch(
        slides, pixel_model, tmp_path):
    shutil.copy(slides / "s1.svs", tmp_path / "crash.svs")
    inputs = [str(slides / "s0.svs"), str(tmp_path / "crash.svs"), str(slides / "s2.svs")]
    args = ["predict", *inputs, "--model", str(pixel_model[0]), "--quiet", "--out",
            str(tmp_path / "out")]
    manifest = tmp_path / "out" / "manifest.csv"

    def statuses():
        return [r.status for r in read_manifest(manifest)]

    first = subprocess.run([sys.executable, "-c", CRASHING, *args], capture_output=True,
                           text=True, check=False)
    assert first.returncode == 9 and statuses() == ["done", "started", "pending"]
    second = subprocess.run([sys.executable, "-c", CRASHING, *args], capture_output=True,
                            text=True, check=False)
    # The slide it died in went last: the one after it is done before it dies again.
    assert second.returncode == 9 and statuses() == ["skipped", "started", "done"]
    assert "crash.svs: an earlier run ended while predicting it" in second.stderr
    healed = subprocess.run([sys.executable, "-m", "wsiseg.cli.main", *args],
                            capture_output=True, text=True, check=False)
    assert healed.returncode == 0, healed.stderr
    assert statuses() == ["skipped", "done", "skipped"]
    assert not list((tmp_path / "out").glob("*.claim*"))  # the dead runs' claims taken over


def test_a_batch_stopped_with_ctrl_c_leaves_its_slide_pending(slides, slow_model, tmp_path,
                                                              ctrl_c):
    inputs = [str(slides / f"s{i}.svs") for i in range(2)]
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-c", ANNOUNCING, "predict", *inputs,
                            "--model", str(slow_model), "--batch-size", "1", "--quiet", "--out",
                            str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_line(run, "s0.wsiseg.zarr.partial")
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and "run the same command again" in stderr
    assert "Traceback" not in stderr
    assert [r.status for r in read_manifest(out / "manifest.csv")] == ["pending", "pending"]
    assert not list(out.glob("*.partial")) and not list(out.glob("*.claim*"))


def test_a_slide_claimed_by_a_live_process_is_left_to_it_and_is_no_failure(slides, pixel_model,
                                                                           tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    args = ["predict", str(slides / "s*.svs"), "--out", str(out), "--model", str(pixel_model[0])]
    # Another process predicts s1: its claim is live and its manifest row says started.
    with take_claim(claim_path(out / "s1.wsiseg.zarr"), batch="another", worker="w-7@node"):
        write_manifest(out / "manifest.csv", [SlideRecord(str(slides / "s1.svs"), "started",
                                                          worker="w-7@node")])
        run = CliRunner().invoke(main, args)
        assert run.exit_code == 0, run.output
        assert "an earlier run ended" not in run.stderr  # it is not taken for a dead run's
        assert "3 slides: 2 done, 1 elsewhere" in run.stdout
        (line,) = [x for x in run.stdout.splitlines() if x.startswith("s1.svs")]
        assert line.split()[1] == "elsewhere" and "being predicted by w-7@node" in line
        assert not (out / "s1.wsiseg.zarr").exists()
        rows = {Path(r.slide).name: (r.status, r.worker)
                for r in read_manifest(out / "manifest.csv")}
        assert rows["s1.svs"] == ("started", "w-7@node")  # its row is the other process's
        assert rows["s0.svs"][0] == rows["s2.svs"][0] == "done"
    again = CliRunner().invoke(main, args)  # the other process went away without finishing
    assert again.exit_code == 0, again.output
    assert "3 slides: 1 done, 2 skipped" in again.stdout
    assert not list(out.glob("*.claim*"))


def test_a_manifest_that_cannot_be_written_stops_the_batch_and_keeps_what_is_finished(
        slides, pixel_model, tmp_path, monkeypatch):
    import wsiseg.batch.manifest as manifest_module

    out = tmp_path / "out"
    args = ["predict", *(str(slides / f"s{i}.svs") for i in range(3)), "--out", str(out),
            "--model", str(pixel_model[0])]
    real, writes = manifest_module.atomic_write, []

    @contextlib.contextmanager
    def full_after_two(target, *a, **k):  # the first rows, s0 started, then the disk is full
        writes.append(target)
        with real(target, *a, **k) as f:
            if len(writes) > 2:
                f.write("slide,sta")
                raise OSError(errno.ENOSPC, "No space left on device")
            yield f

    monkeypatch.setattr(manifest_module, "atomic_write", full_after_two)
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 1 and "Traceback" not in run.output
    assert run.stderr.splitlines() == [
        (f"wsiseg: error: cannot write {out / 'manifest.csv'}: no space left on the device; free "
         f"some space or write elsewhere; the batch stopped (finished results stay in {out}: run "
         "the same command again to do the rest)")]
    # s0 is finished and kept; s1 was never begun; nothing half-written, no claim left.
    assert (out / "s0.wsiseg.zarr" / "labels" / "classes" / "0" / "zarr.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == [".wsiseg.lock", "manifest.csv",
                                                     "s0.wsiseg.zarr"]
    assert [r.status for r in read_manifest(out / "manifest.csv")] == ["started", "pending",
                                                                       "pending"]
    monkeypatch.undo()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert [r.status for r in read_manifest(out / "manifest.csv")] == ["skipped", "done", "done"]
