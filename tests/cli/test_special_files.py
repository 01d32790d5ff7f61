"""A FIFO where a slide is expected (given, in a folder, or recorded in a result) ends each
command in one line at once, instead of blocking in ``open()`` for a writer that never comes.

The commands run in a child process under a timeout, so that a regression fails the test
instead of hanging the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsiseg.batch.manifest import read_manifest
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.testing import synthetic_tissue, write_svs

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")

# Runs each command line given (a JSON list of argument lists) in one process, and prints the
# exit code and stderr of each as JSON.
COMMANDS = """
import json, sys
from click.testing import CliRunner
from wsiseg.cli.main import main

runs = [CliRunner().invoke(main, args) for args in json.loads(sys.argv[1])]
print(json.dumps([[r.exit_code, r.stderr] for r in runs]))
"""


def _run(*commands: list[str]) -> list[tuple[int, list[str]]]:
    """(exit code, stderr lines) of each of ``commands``, run in a child process."""
    env = {**os.environ, "WSISEG_TRUST_CODE": "1"}  # the suite's own TorchScript test model
    try:
        done = subprocess.run([sys.executable, "-c", COMMANDS, json.dumps(commands)],
                              capture_output=True, text=True, timeout=120, env=env, check=True)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"a command blocked on the FIFO: {err.stderr}")
    return [(code, stderr.splitlines()) for code, stderr in json.loads(done.stdout)]


@pytest.fixture(scope="module")
def tiny_slide(tmp_path_factory) -> Path:
    rgb, _ = synthetic_tissue(320, 400, seed=5, tissue_fraction=0.5)
    return write_svs(tmp_path_factory.mktemp("tiny") / "tiny.svs", rgb, mpp=0.5)


def _said(path: Path) -> str:
    return f"{path}: is a FIFO (named pipe), not a slide file; give the path of the slide file"


def test_info_predict_and_export_refuse_a_fifo_in_one_line(tmp_path, tiny_slide, pixel_model):
    pipe = tmp_path / "pipe.svs"
    os.mkfifo(pipe)
    # A real result whose recorded slide is then replaced by a FIFO.
    slide = tmp_path / "gone.svs"
    slide.write_bytes(tiny_slide.read_bytes())
    result = predict_slide(slide, PredictConfig(model=str(pixel_model[0]), progress=False, trust_code=True,
                                                out=str(tmp_path / "gone.wsiseg.zarr"))).path
    slide.unlink()
    os.mkfifo(slide)

    info, predict, export = _run(
        ["info", str(pipe)],
        ["predict", str(pipe), "--model", str(pixel_model[0]), "--quiet"],
        ["export", str(result), "--to", "png", "--out", str(tmp_path / "png")])
    for code, lines in (info, predict):
        assert code == 1 and len(lines) == 1, lines
        assert lines[0].startswith(f"wsiseg: error: {_said(pipe)}")
    code, lines = export
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("wsiseg: error: the png export needs the slide") and \
        _said(slide) in lines[0]
    assert not (tmp_path / "pipe.wsiseg.zarr").exists()


def test_a_batch_leaves_out_a_fifo_in_its_folder_and_fails_one_it_is_given(
        tmp_path, tiny_slide, pixel_model):
    folder, elsewhere, out = tmp_path / "in", tmp_path / "other", tmp_path / "out"
    folder.mkdir()
    elsewhere.mkdir()
    (folder / "s.svs").write_bytes(tiny_slide.read_bytes())
    os.mkfifo(folder / "pipe.svs")
    os.mkfifo(elsewhere / "given.svs")
    (run,) = _run(["predict", str(folder), str(elsewhere / "given.svs"), "--out", str(out),
                   "--model", str(pixel_model[0]), "--quiet"])
    code, lines = run
    assert code == 1, lines
    assert f"wsiseg: warning: {folder / 'pipe.svs'}: is a FIFO (named pipe), not a slide " \
           "file; left out of the batch" in lines
    rows = {Path(r.slide).name: r for r in read_manifest(out / "manifest.csv")}
    assert sorted(rows) == ["given.svs", "s.svs"]
    assert rows["s.svs"].status == "done"
    assert rows["given.svs"].status == "failed"
    assert rows["given.svs"].error.startswith(_said(elsewhere / "given.svs"))
