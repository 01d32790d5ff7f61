"""Per-slide claims: taken once, refused while their holder lives, taken over when it is gone
(dead process here, silent heartbeat elsewhere), one winner among many takers; and three batch
processes sharing one folder, each slide computed once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from wsiseg.batch import claims
from wsiseg.batch.claims import ClaimedElsewhere, ClaimInfo, is_held, read_claim, take_claim
from wsiseg.batch.manifest import read_manifest
from wsiseg.result.integrity import is_complete


def _write_claim(path: Path, info: ClaimInfo, age: float = 0.0) -> None:
    path.write_text(info.to_json())
    then = time.time() - age
    os.utime(path, (then, then))


def _elsewhere(**changes) -> ClaimInfo:
    """The claim of a process on another host."""
    info = ClaimInfo(host="node-17.cluster", pid=4242, started="2026-01-01T00:00:00Z",
                     token="c1a1m0f4n0therh0st", worker="pid-4242@node-17.cluster")
    return replace(info, **changes)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process now
    return child.pid


def _left(folder: Path) -> list[str]:
    """What is in ``folder`` but its lock file (which stays, empty)."""
    return sorted(p.name for p in folder.iterdir() if p.name != claims.LOCK_NAME)


def _token(path: Path) -> str | None:
    held = read_claim(path)
    return None if held is None or held[0] is None else held[0].token


def test_a_claim_is_taken_once_refused_while_held_and_removed_on_release(tmp_path):
    path = tmp_path / "s0.wsiseg.zarr.claim"
    with take_claim(path, batch="b1", worker="me") as claim:
        data = json.loads(path.read_text())
        assert data["host"] == socket.gethostname() and data["pid"] == os.getpid()
        assert data["started"].endswith("Z") and data["token"] == claim.info.token
        assert data["batch"] == "b1" and data["worker"] == "me"
        assert is_held(path)
        with pytest.raises(ClaimedElsewhere) as refused:
            take_claim(path, batch="b2")
        assert refused.value.holder.token == claim.info.token
        assert f"pid {os.getpid()}" in str(refused.value)
    assert not path.exists() and not is_held(path)
    with take_claim(path, batch="b2"):
        assert path.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_heartbeat_keeps_a_claim_fresh_and_stops_when_it_is_taken_from_it(tmp_path):
    path = tmp_path / "s0.wsiseg.zarr.claim"
    claim = take_claim(path, heartbeat_seconds=0.02)
    try:
        old = time.time() - 3600
        os.utime(path, (old, old))
        deadline = time.monotonic() + 10
        while path.stat().st_mtime < time.time() - 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert path.stat().st_mtime > time.time() - 60  # touched again
        # Another process took it over (this one looked gone to it): the heartbeat notices,
        # and the release leaves the other process's claim alone.
        _write_claim(path, _elsewhere())
        deadline = time.monotonic() + 10
        while not claim.lost and time.monotonic() < deadline:
            time.sleep(0.01)
        assert claim.lost
    finally:
        claim.release()
    assert _token(path) == _elsewhere().token


def test_a_claim_of_a_dead_process_on_this_machine_is_taken_over(tmp_path):
    path = tmp_path / "s0.wsiseg.zarr.claim"
    here = ClaimInfo.this_process(batch="old")
    _write_claim(path, replace(here, pid=_dead_pid(), pid_start=None))
    assert not is_held(path)
    with take_claim(path, batch="new") as claim:
        assert _token(path) == claim.info.token
    # A live pid that now names a younger process than the one that claimed: also gone.
    if here.pid_start is not None:
        _write_claim(path, replace(here, token="reused", pid_start=here.pid_start - 1))
        assert not is_held(path)
        with take_claim(path, batch="new") as claim:
            assert _token(path) == claim.info.token
    assert _left(tmp_path) == []


def test_a_claim_of_another_host_is_stale_only_when_its_heartbeat_is_old(tmp_path):
    path = tmp_path / "s0.wsiseg.zarr.claim"
    _write_claim(path, _elsewhere(), age=30)
    with pytest.raises(ClaimedElsewhere, match="node-17.cluster"):
        take_claim(path, stale_after=60)
    assert _token(path) == _elsewhere().token  # left as it was
    _write_claim(path, _elsewhere(), age=90)
    with take_claim(path, stale_after=60) as claim:
        assert _token(path) == claim.info.token
    # The module's default applies when none is given.
    _write_claim(path, _elsewhere(), age=claims.STALE_SECONDS - 60)
    with pytest.raises(ClaimedElsewhere):
        take_claim(path)
    _write_claim(path, _elsewhere(), age=claims.STALE_SECONDS + 60)
    take_claim(path).release()
    # A claim file that cannot be read (cut short) goes by its age as well.
    path.write_text('{"host": "node-17')
    with pytest.raises(ClaimedElsewhere):
        take_claim(path, stale_after=60)
    os.utime(path, (time.time() - 90,) * 2)
    take_claim(path, stale_after=60).release()
    assert _left(tmp_path) == []


def test_the_same_batch_takes_its_own_claim_over_at_once(tmp_path):
    # A dask task run again after its worker was lost finds its batch's claim, fresh.
    path = tmp_path / "s0.wsiseg.zarr.claim"
    _write_claim(path, _elsewhere(batch="b1"))
    with pytest.raises(ClaimedElsewhere):
        take_claim(path, batch="b2")
    with take_claim(path, batch="b1") as claim:
        assert _token(path) == claim.info.token


def test_one_of_many_threads_takes_a_stale_claim(tmp_path):
    takers = 8
    for round_ in range(10):
        path = tmp_path / f"s{round_}.wsiseg.zarr.claim"
        _write_claim(path, _elsewhere(), age=600)
        gate = threading.Barrier(takers)
        won, refused = [], []

        def take(gate=gate, path=path, won=won, refused=refused) -> None:
            gate.wait()
            try:
                won.append(take_claim(path, stale_after=60))
            except ClaimedElsewhere:
                refused.append(1)

        threads = [threading.Thread(target=take) for _ in range(takers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(won) == 1 and len(refused) == takers - 1
        assert _token(path) == won[0].info.token
        won[0].release()
    assert _left(tmp_path) == []  # no claim, nothing set aside left


# Takes the claim ARGV[1] once the file ARGV[2] exists, says whether it won, and holds what it
# won until the file ARGV[3] exists.
TAKER = """
import os, sys, time
from wsiseg.batch.claims import ClaimedElsewhere, take_claim

def wait_for(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.002)

wait_for(sys.argv[2])
try:
    claim = take_claim(sys.argv[1], stale_after=60)
except ClaimedElsewhere:
    print("refused", flush=True)
    sys.exit(0)
print("won", claim.info.token, flush=True)
wait_for(sys.argv[3])
claim.release()
"""


@pytest.mark.slow
def test_one_of_many_processes_takes_a_stale_claim(tmp_path):
    path, go, done = tmp_path / "s0.wsiseg.zarr.claim", tmp_path / "go", tmp_path / "done"
    _write_claim(path, _elsewhere(), age=600)
    runs = [subprocess.Popen([sys.executable, "-c", TAKER, str(path), str(go), str(done)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    go.touch()
    said = []
    try:
        for run in runs:  # the losers end; the winner has said so and holds on
            said.append(run.stdout.readline().split())
    finally:
        done.touch()
    for run in runs:
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
    winners = [words for words in said if words[0] == "won"]
    assert len(winners) == 1 and sum(words == ["refused"] for words in said) == 3
    assert not path.exists()  # the winner released it


# The command line, held back until ARGV[1] files "ready-*" exist in the folder ARGV[2] (each
# process adds one), so that the processes begin their batches together. Each slide's run is
# logged to ARGV[2]/runs (one line per run, written whole) and made to last at least 0.6 s,
# so that the processes overlap however fast the machine is.
GATED = """
import os, sys, time
from pathlib import Path

count, gate = int(sys.argv[1]), Path(sys.argv[2])
import wsiseg.batch.worker as runner

run_slide = runner.run_slide

def logged_run_slide(slide, *args, **kwargs):
    fd = os.open(gate / "runs", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.getpid()} {os.path.basename(slide)}\\n".encode())
    os.close(fd)
    time.sleep(0.6)
    return run_slide(slide, *args, **kwargs)

runner.run_slide = logged_run_slide
(gate / f"ready-{os.getpid()}").touch()
deadline = time.monotonic() + 120
while len(list(gate.glob("ready-*"))) < count and time.monotonic() < deadline:
    time.sleep(0.01)
from wsiseg.cli.main import main
sys.argv[0:3] = ["wsiseg"]
main()
"""


def _summary_rows(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].endswith(".svs"):
            rows[words[0]] = words[1]
    return rows


@pytest.mark.slow
def test_three_processes_share_one_folder_and_compute_each_slide_once(six_slides, pixel_model,
                                                                      tmp_path):
    out, gate = tmp_path / "out", tmp_path / "gate"
    gate.mkdir()
    args = ["predict", str(six_slides), "--out", str(out), "--model", str(pixel_model[0])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = [subprocess.Popen([sys.executable, "-c", GATED, "3", str(gate), *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    outcomes = [run.communicate(timeout=180) for run in runs]
    for run, (stdout, stderr) in zip(runs, outcomes):
        assert run.returncode == 0, stderr
        assert "Traceback" not in stderr
    names = [f"t{i}.svs" for i in range(6)]
    # Each slide was computed exactly once, and each process's table says who did it.
    computed = [line.split() for line in (gate / "runs").read_text().splitlines()]
    assert sorted(name for _, name in computed) == names, computed
    done_by = {name: int(pid) for pid, name in computed}
    assert len(set(done_by.values())) >= 2, done_by  # they did share the work
    for run, (stdout, _) in zip(runs, outcomes):
        table = _summary_rows(stdout)
        assert table == {name: "done" if done_by[name] == run.pid else "elsewhere"
                         for name in names}, stdout
    # The manifest holds every slide once, done by the process that computed it.
    rows = read_manifest(out / "manifest.csv")
    assert sorted(Path(r.slide).name for r in rows) == names
    for r in rows:
        assert r.status == "done" and r.patches > 0
        assert r.worker == f"pid-{done_by[Path(r.slide).name]}@{socket.gethostname()}"
    for i in range(6):
        result = out / f"t{i}.wsiseg.zarr"
        assert is_complete(result)
        assert (result / "labels" / "classes" / "0" / "zarr.json").is_file()
    # No claim and no temporary file left: the results, the manifest and its lock.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"t{i}.wsiseg.zarr" for i in range(6)] + ["manifest.csv", ".wsiseg.lock"])
