"""Batches of slides: finding them, a bad slide recorded while the others finish, resuming,
a local dask cluster (with a worker killed mid-run) and a SIGKILL of a single-process run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from wsiseg.batch.runner import BatchConfig, find_slides, predict_slides, read_manifest
from wsiseg.cli.main import main
from wsiseg.errors import ConfigError
from wsiseg.inference.pipeline import PredictConfig
from wsiseg.testing import synthetic_tissue, write_svs


class SlowPixelModel(torch.nn.Module):
    """A per-pixel function, made slow by work whose result is thrown away (so that a run can
    be stopped in the middle of a slide)."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[9.0, -3, -5], [-2, -6, 9], [-4, 7, -2]]).view(3, 3, 1, 1))
            self.conv.bias.zero_()
        self.rounds = rounds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.ones(256, 256) / 256
        for _ in range(self.rounds):
            m = m @ m
        return self.conv(x) + 0 * m.sum()


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    from wsiseg.models import ClassInfo, ModelCard, save_torchscript

    card = ModelCard(
        name="slow-test", architecture="torchscript", arguments={"num_classes": 3},
        classes=tuple(ClassInfo(i, f"class{i}", (80 * i, 0, 0)) for i in range(3)),
        mpp=1.0, patch_size=200, stride=100, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        description="slow test model",
    )
    path = tmp_path_factory.mktemp("models") / "slow.pt"
    save_torchscript(path, torch.jit.script(SlowPixelModel(rounds=300).eval()), card)
    return path


def _damage_tiles(path: Path) -> None:
    """Overwrite every tile of ``path`` with zeros: the slide opens, but no pixel decodes."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tiles = [(o, n) for page in tif.pages if page.is_tiled
                 for o, n in zip(page.dataoffsets, page.databytecounts)]
    with open(path, "r+b") as f:
        for offset, count in tiles:
            f.seek(offset)
            f.write(bytes(count))


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """Three small synthetic slides and one that opens but cannot be read."""
    folder = tmp_path_factory.mktemp("slides")
    for i in range(4):
        rgb, _ = synthetic_tissue(640, 800, seed=50 + i, tissue_fraction=0.5)
        write_svs(folder / (f"s{i}.svs" if i < 3 else "bad.svs"), rgb, mpp=0.5)
    _damage_tiles(folder / "bad.svs")
    return folder


def _labels(result: Path) -> np.ndarray:
    return zarr.open_group(str(result), mode="r")["labels"][:]


def _mtimes(folder: Path) -> dict[str, float]:
    return {p.name: (p / "zarr.json").stat().st_mtime_ns for p in folder.glob("*.wsiseg.zarr")}


def test_find_slides_takes_files_folders_globs_and_lists(slides, tmp_path):
    every = sorted(slides.glob("*.svs"))
    assert find_slides([slides]) == every
    assert find_slides([str(slides / "s*.svs")]) == every[1:]
    listing = tmp_path / "batch.txt"
    listing.write_text(f"# today's slides\n{slides / 's1.svs'}\n\n{slides / 's1.svs'}\nmissing.svs\n")
    found = find_slides([listing, slides / "s0.svs"])
    assert found == [slides / "s1.svs", tmp_path / "missing.svs", slides / "s0.svs"]
    (tmp_path / "empty").mkdir()
    for bad in ([tmp_path / "empty"], [str(tmp_path / "*.svs")], [tmp_path / "nope.svs"]):
        with pytest.raises(ConfigError, match=str(tmp_path)):
            find_slides(bad)


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


def test_two_slides_with_one_name_are_refused_before_any_work(slides, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(slides / "s0.svs", other / "s0.svs")
    config = BatchConfig(out_dir=str(tmp_path / "out"), progress=False)
    with pytest.raises(ConfigError, match="s0.wsiseg.zarr"):
        predict_slides([slides / "s0.svs", other / "s0.svs"], config)
    assert not (tmp_path / "out" / "manifest.csv").exists()


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local, Client(local) as client:
        yield client


def test_local_cluster_of_two_workers(slides, pixel_model, cluster, tmp_path):
    out = tmp_path / "out"
    config = BatchConfig(out_dir=str(out), progress=False,
                         predict=PredictConfig(model=str(pixel_model[0])))
    result = predict_slides(find_slides([slides]), config, client=cluster)
    statuses = {Path(r.slide).name: r.status for r in result.records}
    assert statuses == {"bad.svs": "failed", "s0.svs": "done", "s1.svs": "done", "s2.svs": "done"}
    assert len(result.failed) == 1 and "cannot read pixels" in result.failed[0].error
    workers = {r.worker for r in result.records if r.status == "done"}
    assert all("@127.0.0.1" in w for w in workers)
    # Each worker keeps its model for its following slides.
    kept = cluster.run(lambda: [key[0] for key in __import__("wsiseg.batch.runner", fromlist=["_MODELS"])._MODELS])
    assert any(kept.values())
    assert all(models == [str(pixel_model[0])] for models in kept.values() if models)
    # The same maps as one process makes.
    alone = tmp_path / "alone"
    predict_slides([slides / "s1.svs"], BatchConfig(out_dir=str(alone), progress=False,
                                                    predict=config.predict))
    assert np.array_equal(_labels(out / "s1.wsiseg.zarr"), _labels(alone / "s1.wsiseg.zarr"))

    before = _mtimes(out)
    again = predict_slides(find_slides([slides]), config, client=cluster)
    assert _mtimes(out) == before
    assert sorted(r.status for r in again.records) == ["failed", "skipped", "skipped", "skipped"]


def test_cli_workers_option_runs_a_local_cluster(slides, pixel_model, tmp_path):
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["predict", str(slides), "--out", str(out),
                                    "--model", str(pixel_model[0]), "--workers", "2"])
    assert run.exit_code == 1, run.output
    assert "4 slides: 3 done, 1 failed" in run.output
    assert len(list(out.glob("*.wsiseg.zarr"))) == 3
    errors = [r.error for r in read_manifest(out / "manifest.csv") if r.error]
    assert len(errors) == 1 and "bad.svs" in errors[0]


def test_cli_scheduler_option_submits_to_a_running_cluster(slides, pixel_model, cluster,
                                                          tmp_path):
    out = tmp_path / "out"
    address = cluster.scheduler_info()["address"]
    run = CliRunner().invoke(main, ["predict", str(slides / "s*.svs"), "--out", str(out),
                                    "--model", str(pixel_model[0]), "--scheduler", address])
    assert run.exit_code == 0, run.output
    assert "3 slides: 3 done" in run.output
    workers = {r.worker for r in read_manifest(out / "manifest.csv")}
    assert workers and all(w.endswith("@127.0.0.1") for w in workers)


def test_a_worker_killed_mid_run_does_not_stop_the_batch(slides, slow_model, cluster, tmp_path):
    out = tmp_path / "out"
    config = BatchConfig(out_dir=str(out), progress=False,
                         predict=PredictConfig(model=str(slow_model), batch_size=1))
    paths = [slides / f"s{i}.svs" for i in range(3)]
    pids = cluster.run(os.getpid)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(
        result=predict_slides(paths, config, client=cluster)))
    runner.start()
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        if list(out.glob("*.partial")):  # a slide is being written
            busy = [w for w, keys in cluster.processing().items() if keys]
            if busy:
                victim = busy[0]
                os.kill(pids[victim], signal.SIGKILL)
        time.sleep(0.05)
    runner.join(timeout=300)
    assert victim is not None and not runner.is_alive()
    result = outcome["result"]
    assert [r.status for r in result.records] == ["done"] * 3, result.records
    for p in paths:
        assert (out / f"{p.stem}.wsiseg.zarr" / "labels" / "zarr.json").is_file()
    assert not list(out.glob("*.partial"))


def test_sigkill_mid_slide_then_rerun_finishes_identical_to_an_uninterrupted_run(
        slides, slow_model, tmp_path):
    inputs = [str(slides / f"s{i}.svs") for i in range(3)]
    command = [sys.executable, "-m", "wsiseg.cli.main", "predict", *inputs, "--model",
               str(slow_model), "--batch-size", "1", "--quiet", "--out"]
    out = tmp_path / "out"
    run = subprocess.Popen(command + [str(out)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "s1.wsiseg.zarr.partial").exists() and time.monotonic() < deadline:
        assert run.poll() is None, run.stderr.read().decode()
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert (out / "s0.wsiseg.zarr").is_dir() and not (out / "s1.wsiseg.zarr").exists()
    statuses = [r.status for r in read_manifest(out / "manifest.csv")]
    assert statuses == ["done", "started", "pending"]

    rerun = subprocess.run(command + [str(out)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    statuses = [r.status for r in read_manifest(out / "manifest.csv")]
    assert statuses == ["skipped", "done", "done"]
    assert not list(out.glob("*.partial"))

    whole = tmp_path / "whole"
    assert subprocess.run(command + [str(whole)], capture_output=True).returncode == 0
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
                                   and p.name != "manifest.csv")

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
import wsiseg.batch.runner as batch
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

    first = subprocess.run([sys.executable, "-c", CRASHING, *args], capture_output=True, text=True)
    assert first.returncode == 9 and statuses() == ["done", "started", "pending"]
    second = subprocess.run([sys.executable, "-c", CRASHING, *args], capture_output=True,
                            text=True)
    # The slide it died in went last: the one after it is done before it dies again.
    assert second.returncode == 9 and statuses() == ["skipped", "started", "done"]
    assert "crash.svs: an earlier run ended while predicting it" in second.stderr
    healed = subprocess.run([sys.executable, "-m", "wsiseg.cli.main", *args],
                            capture_output=True, text=True)
    assert healed.returncode == 0, healed.stderr
    assert statuses() == ["skipped", "done", "skipped"]


def test_the_manifest_keeps_the_slides_of_earlier_batches(slides, pixel_model, tmp_path):
    config = BatchConfig(out_dir=str(tmp_path), progress=False,
                         predict=PredictConfig(model=str(pixel_model[0])))
    predict_slides([slides / "s0.svs", slides / "bad.svs"], config)
    result = predict_slides([slides / "s1.svs", slides / "bad.svs"], config)
    assert [Path(r.slide).name for r in result.records] == ["s1.svs", "bad.svs"]
    rows = {Path(r.slide).name: r.status for r in read_manifest(result.manifest)}
    assert rows == {"s0.svs": "done", "s1.svs": "done", "bad.svs": "failed"}
    assert len(read_manifest(result.manifest)) == 3


def test_a_batch_stopped_with_ctrl_c_leaves_its_slide_pending(slides, slow_model, tmp_path):
    inputs = [str(slides / f"s{i}.svs") for i in range(2)]
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "wsiseg.cli.main", "predict", *inputs,
                            "--model", str(slow_model), "--batch-size", "1", "--quiet", "--out",
                            str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "s0.wsiseg.zarr.partial").exists() and time.monotonic() < deadline:
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and "run the same command again" in stderr
    assert "Traceback" not in stderr
    assert [r.status for r in read_manifest(out / "manifest.csv")] == ["pending", "pending"]
    assert not list(out.glob("*.partial"))


MAPPED_BLOCKS = """
import ctypes, json
import numpy as np
from wsiseg.batch import runner as batch

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_for_one_block():
    before = libc.mallinfo2().hblks
    block = np.ones(8 * 2**20, dtype=np.uint8)  # about one batch of the network's features
    return libc.mallinfo2().hblks - before

first = mapped_for_one_block()
batch._keep_large_blocks_on_the_heap()
print(json.dumps([first, mapped_for_one_block()]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_worker_started_by_dask_keeps_large_blocks_on_the_heap():
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")  # what dask's nanny sets
    run = subprocess.run([sys.executable, "-c", MAPPED_BLOCKS], env=env, capture_output=True,
                         text=True)
    if "mallinfo2" in run.stderr:
        pytest.skip("this C library has no mallinfo2")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [1, 0]
