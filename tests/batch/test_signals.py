"""SIGTERM (what SLURM, Kubernetes and ``timeout`` send) stops a run as cleanly as Ctrl-C: no
partial result, no claim, the slide's row back to ``pending``, one line and exit code 143."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from announcing import ANNOUNCING, wait_for_line

from wsiseg.batch.manifest import read_manifest
from wsiseg.batch.signals import Terminated, interrupt_slides, running_slide, sigterm_as_interrupt


def _start(*args: str, **popen) -> subprocess.Popen:
    # The test models are TorchScript files this suite wrote itself.
    env = {**os.environ, "WSISEG_TRUST_CODE": "1"}
    return subprocess.Popen([sys.executable, "-c", ANNOUNCING, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **popen)


def _terminate(run: subprocess.Popen) -> tuple[str, float]:
    """SIGTERM ``run``; its stderr and the seconds it took to end."""
    sent = time.monotonic()
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    return stderr, time.monotonic() - sent


@pytest.mark.slow
def test_sigterm_stops_one_slide_leaving_nothing_behind(slides, slow_model, tmp_path):
    out = tmp_path / "s0.wsiseg.zarr"
    run = _start("predict", str(slides / "s0.svs"), "--model", str(slow_model),
                 "--batch-size", "1", "--quiet", "--out", str(out))
    wait_for_line(run, "s0.wsiseg.zarr.partial")
    stderr, seconds = _terminate(run)
    assert run.returncode == 143, stderr
    assert stderr.strip().splitlines() == [
        "wsiseg: terminated (SIGTERM); no output was left behind"]
    assert seconds < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no result, no partial


@pytest.mark.slow
def test_sigterm_stops_a_batch_with_its_slide_pending_and_unclaimed(slides, slow_model,
                                                                    tmp_path):
    out = tmp_path / "out"
    run = _start("predict", str(slides / "s0.svs"), str(slides / "s1.svs"), "--model",
                 str(slow_model), "--batch-size", "1", "--quiet", "--out", str(out))
    wait_for_line(run, "s0.wsiseg.zarr.partial")
    assert (out / "s0.wsiseg.zarr.claim").is_file()
    stderr, seconds = _terminate(run)
    assert run.returncode == 143, stderr
    said = (f"wsiseg: terminated (SIGTERM); finished slides are kept in {out} (see "
            "manifest.csv); run the same command again to do the rest")
    assert stderr.strip().splitlines() == [said]
    assert seconds < 10
    # Pending, not started: a rerun (here or on another node) takes the slide at once, and
    # does not take it for one that killed its process.
    assert [r.status for r in read_manifest(out / "manifest.csv")] == ["pending", "pending"]
    assert not list(out.glob("*.partial")) and not list(out.glob("*.claim*"))


def test_sigterm_raises_terminated_in_the_block_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between two bytecodes of this thread
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is before
    assert issubclass(Terminated, KeyboardInterrupt)  # so Ctrl-C's cleanup runs for it


def test_interrupt_slides_stops_the_threads_predicting_and_waits_for_their_cleanup():
    cleaned: list[str] = []
    started = threading.Event()

    def predict() -> None:
        with running_slide("a.svs"):
            try:
                started.set()
                while True:  # a slide that would take forever
                    time.sleep(0.01)
            except Terminated:
                cleaned.append("a.svs")

    thread = threading.Thread(target=predict)
    thread.start()
    assert started.wait(10)
    assert interrupt_slides(timeout=10) == ["a.svs"]
    assert cleaned == ["a.svs"]  # already cleaned up when interrupt_slides returned
    thread.join(10)
    assert not thread.is_alive()
    assert interrupt_slides(timeout=1) == []  # nothing left running


# A worker process: a thread predicting a slide, and the SIGTERM handler the batch gives it.
WORKER = """
import sys, threading, time
from wsiseg.batch.signals import Terminated, running_slide
from wsiseg.batch.worker_plugin import install_sigterm_cleanup

def predict():
    with running_slide("a.svs"):
        try:
            print("predicting", flush=True)
            while True:
                time.sleep(0.01)
        except Terminated:
            print("cleaned up a.svs", flush=True)

install_sigterm_cleanup()
threading.Thread(target=predict, daemon=True).start()
while True:
    time.sleep(0.01)
"""


def test_a_worker_process_sent_sigterm_cleans_up_its_slide_then_ends_by_the_signal():
    run = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    wait_for_line(run, "predicting", timeout=60)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=30)
    assert stdout.splitlines() == ["cleaned up a.svs"], stderr
    assert run.returncode == -signal.SIGTERM  # then ended as SIGTERM ends it


def _wait_for(path: Path, run: subprocess.Popen, timeout: float = 120) -> None:
    """Block until ``path`` exists (a worker process made it); fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            _, stderr = run.communicate()
            pytest.fail(f"{path.name} never appeared (exit code {run.returncode}): {stderr}")
        time.sleep(0.05)  # polling for a file another process makes, not a guess of a delay


@pytest.mark.slow
def test_sigterm_stops_a_batch_on_local_workers_leaving_no_partial_or_claim(
        slides, slow_model, tmp_path):
    out = tmp_path / "out"
    run = _start("predict", str(slides / "s0.svs"), str(slides / "s1.svs"), "--model",
                 str(slow_model), "--batch-size", "1", "--quiet", "--workers", "2", "--out",
                 str(out))
    _wait_for(out / "s0.wsiseg.zarr.partial", run)  # a worker process is writing it
    stderr, seconds = _terminate(run)
    assert run.returncode == 143, stderr
    assert f"wsiseg: terminated (SIGTERM); finished slides are kept in {out}" in stderr
    assert "Traceback" not in stderr
    assert seconds < 20
    assert [r.status for r in read_manifest(out / "manifest.csv")] == ["pending", "pending"]
    assert not list(out.glob("*.partial")) and not list(out.glob("*.claim*"))


# A SIGTERM handled while a gc callback runs (distributed installs one) raises there, where
# Python can only drop the exception.
_IN_A_GC_CALLBACK = """
import gc, os, signal, sys, threading, time
from wsiseg.batch.signals import Terminated, interrupt_slides, running_slide, sigterm_as_interrupt

inside = threading.Event()
def slow_callback(phase, info):
    if phase == "start" and not inside.is_set():
        inside.set()
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # the signal is handled in here
            pass
gc.callbacks.append(slow_callback)

def predict():
    with running_slide("a.svs"):
        try:
            gc.collect()
            for _ in range(300):
                time.sleep(0.01)
            print("a.svs never stopped")
        except Terminated:
            print("a.svs stopped", flush=True)

if sys.argv[1] == "main":
    def stop():
        inside.wait()
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=stop).start()
    try:
        with sigterm_as_interrupt():
            gc.collect()
            for _ in range(300):
                time.sleep(0.01)
            print("never stopped")
    except Terminated:
        print("stopped")
else:
    slide = threading.Thread(target=predict)
    slide.start()
    inside.wait()
    time.sleep(0.2)
    print("interrupted", interrupt_slides(timeout=10), flush=True)
    slide.join()
"""


@pytest.mark.parametrize("where", ["main", "slide thread"])
def test_a_sigterm_python_could_only_drop_in_a_gc_callback_still_stops_the_work(where):
    run = subprocess.run([sys.executable, "-c", _IN_A_GC_CALLBACK, where.split()[0]],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    said = ["stopped"] if where == "main" else ["a.svs stopped", "interrupted ['a.svs']"]
    assert run.stdout.splitlines() == said
    assert run.stderr == ""  # no "Exception ignored", no traceback


_FINALISER_AFTER_THE_STOP = """
import gc, os, signal, sys
from wsiseg.batch.signals import sigterm_as_interrupt
from wsiseg.errors import Terminated

class Loop:  # as an event loop never closed, collected while the stopped command cleans up
    def __del__(self):
        raise RuntimeError("Cannot close a running event loop")

def cycle():
    a = Loop(); a.me = a  # freed by the cyclic gc only

before = sys.unraisablehook
Loop()  # before any SIGTERM: printed as usual
try:
    with sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**6):
            pass
except Terminated:
    pass
else:
    sys.exit("no Terminated")
cycle(); gc.collect()  # after the block, before the command has said it was stopped
print("hook restored" if sys.unraisablehook is before else "quiet hook kept")
"""


def test_finalisers_cut_off_by_a_sigterm_print_nothing(tmp_path):
    run = subprocess.run([sys.executable, "-c", _FINALISER_AFTER_THE_STOP], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "quiet hook kept"
    # Only the one raised before the SIGTERM is printed.
    assert run.stderr.count("Cannot close a running event loop") == 1, run.stderr
