"""Batches on dask.distributed: the client that closes what it opened, a local cluster of two
workers (with one killed mid-run), a slide another process holds, a running scheduler, and
what each worker process keeps."""

from __future__ import annotations

import json
import operator
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from wsiseg.batch.claims import claim_path, take_claim
from wsiseg.batch.cluster import dask_client
from wsiseg.batch.discovery import find_slides
from wsiseg.batch.manifest import read_manifest
from wsiseg.batch.runner import BatchConfig, predict_slides
from wsiseg.cli.main import main
from wsiseg.errors import ConfigError
from wsiseg.inference.pipeline import PredictConfig
from wsiseg.result.store import result_array


def _labels(result: Path) -> np.ndarray:
    return result_array(zarr.open_group(str(result), mode="r"), "labels")[:]


def _mtimes(folder: Path) -> dict[str, float]:
    return {p.name: (p / "zarr.json").stat().st_mtime_ns for p in folder.glob("*.wsiseg.zarr")}


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local, Client(local) as client:
        yield client


def test_no_workers_and_no_scheduler_is_no_client():
    with dask_client() as client:
        assert client is None
    with pytest.raises(ConfigError, match="not both"), dask_client(2, "tcp://127.0.0.1:8786"):
        pass


@pytest.mark.slow
def test_the_client_of_a_local_cluster_closes_what_it_opened():
    from distributed.core import Status

    with dask_client(workers=1) as client:
        local = client.cluster
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.submit(operator.add, 1, 2).result() == 3
        assert local.status == Status.running
    assert client.status == "closed"
    assert local.status == Status.closed


@pytest.mark.slow
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
    kept = cluster.run(lambda: [key[0] for key in __import__("wsiseg.batch.worker", fromlist=["_MODELS"])._MODELS])
    assert any(kept.values())
    assert all(models == [str(pixel_model[0])] for models in kept.values() if models)
    # The same maps as one process makes with the same share of the cores (one each here): the
    # network's float sums depend on torch's thread count.
    alone = tmp_path / "alone"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predict_slides([slides / "s1.svs"], BatchConfig(out_dir=str(alone), progress=False,
                                                        predict=replace(config.predict, threads=1)))
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(_labels(out / "s1.wsiseg.zarr"), _labels(alone / "s1.wsiseg.zarr"))

    before = _mtimes(out)
    again = predict_slides(find_slides([slides]), config, client=cluster)
    assert _mtimes(out) == before
    assert sorted(r.status for r in again.records) == ["failed", "skipped", "skipped", "skipped"]


@pytest.mark.slow
def test_cli_workers_option_runs_a_local_cluster(slides, pixel_model, tmp_path):
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["predict", str(slides), "--out", str(out),
                                    "--model", str(pixel_model[0]), "--workers", "2"])
    assert run.exit_code == 1, run.output
    assert "4 slides: 3 done, 1 failed" in run.output
    assert len(list(out.glob("*.wsiseg.zarr"))) == 3
    errors = [r.error for r in read_manifest(out / "manifest.csv") if r.error]
    assert len(errors) == 1 and "bad.svs" in errors[0]


@pytest.mark.slow
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


# Run on each worker (with NAME set): from then on the worker puts its process id in the dask
# queue NAME as soon as a slide's prediction has begun writing its partial output (its tissue
# mask is in), so that a test can kill it in the middle of a slide.
ANNOUNCE_PARTIALS = """
import os
from distributed import Queue
from wsiseg.result.writer import OutputWriter

if not hasattr(OutputWriter, "unannounced_write_tissue"):
    OutputWriter.unannounced_write_tissue = OutputWriter.write_tissue

def announced_write_tissue(self, *args, **kwargs):
    OutputWriter.unannounced_write_tissue(self, *args, **kwargs)
    Queue(NAME).put(os.getpid())

OutputWriter.write_tissue = announced_write_tissue
"""
STOP_ANNOUNCING = """
from wsiseg.result.writer import OutputWriter

if hasattr(OutputWriter, "unannounced_write_tissue"):
    OutputWriter.write_tissue = OutputWriter.unannounced_write_tissue
    del OutputWriter.unannounced_write_tissue
"""


@pytest.mark.slow
def test_a_worker_killed_mid_run_does_not_stop_the_batch(slides, slow_model, cluster, tmp_path):
    from distributed import Queue

    out = tmp_path / "out"
    config = BatchConfig(out_dir=str(out), progress=False,
                         predict=PredictConfig(model=str(slow_model), batch_size=1))
    paths = [slides / f"s{i}.svs" for i in range(3)]
    name = f"partials-{os.getpid()}-{tmp_path.name}"
    started = Queue(name, client=cluster)
    cluster.run(exec, ANNOUNCE_PARTIALS, {"NAME": name})
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(
        result=predict_slides(paths, config, client=cluster)))
    runner.start()
    try:
        victim = started.get(timeout=120)  # the process id of a worker writing a slide
        os.kill(victim, signal.SIGKILL)
        runner.join(timeout=300)
    finally:
        cluster.run(exec, STOP_ANNOUNCING, {})
    assert victim is not None and not runner.is_alive()
    result = outcome["result"]
    assert [r.status for r in result.records] == ["done"] * 3, result.records
    for p in paths:
        labels = out / f"{p.stem}.wsiseg.zarr" / "labels" / "classes" / "0"
        assert (labels / "zarr.json").is_file()
    # The killed worker's claim went stale and its slide's retry took it over; none is left.
    assert not list(out.glob("*.partial")) and not list(out.glob("*.claim*"))


@pytest.mark.slow
def test_workers_leave_a_slide_that_another_process_holds_to_it(slides, pixel_model, cluster,
                                                                tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    config = BatchConfig(out_dir=str(out), progress=False,
                         predict=PredictConfig(model=str(pixel_model[0])))
    paths = [slides / f"s{i}.svs" for i in range(3)]
    with take_claim(claim_path(out / "s2.wsiseg.zarr"), batch="another", worker="pid-1@there"):
        result = predict_slides(paths, config, client=cluster)
    assert [r.status for r in result.records] == ["done", "done", "elsewhere"]
    assert not result.failed and "being predicted by pid-1@there" in result.records[2].error
    assert not (out / "s2.wsiseg.zarr").exists()
    # The workers released their claims; the slide left to the gone process is done next time.
    assert not list(out.glob("*.claim*"))
    again = predict_slides(paths, config, client=cluster)
    assert [r.status for r in again.records] == ["skipped", "skipped", "done"]


MAPPED_BLOCKS = """
import ctypes, json
import numpy as np
from wsiseg.batch import worker

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
worker.keep_large_blocks_on_the_heap()
print(json.dumps([first, mapped_for_one_block()]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_worker_started_by_dask_keeps_large_blocks_on_the_heap():
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")  # what dask's nanny sets
    run = subprocess.run([sys.executable, "-c", MAPPED_BLOCKS], env=env, capture_output=True,
                         text=True, check=False)
    if "mallinfo2" in run.stderr:
        pytest.skip("this C library has no mallinfo2")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [1, 0]
