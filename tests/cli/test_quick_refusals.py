"""A file that is no slide is refused before torch, or the prediction pipeline, is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

# Runs the command line in this interpreter, then says what was loaded meanwhile.
RUN_CLI = """
import json, sys
from wsiseg.cli.main import main
try:
    main(sys.argv[1:], prog_name="wsiseg")
except SystemExit as done:
    code = done.code
print(json.dumps({"code": code, "loaded": sorted(
    m for m in ("torch", "zarr", "scipy", "wsiseg.inference.pipeline") if m in sys.modules)}))
"""


def _cases(tmp_path):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(bytes(range(256)) * 64)
    notes = tmp_path / "notaslide.txt"
    notes.write_text("hello\n")
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "a.vsi").write_text("x")
    return {"random bytes": [str(bad)], "a text file": [str(notes)],
            "a batch of random bytes": [str(tmp_path / "*.svs"), "--out", str(tmp_path / "o")],
            "a folder of no slide": [str(folder), "--out", str(tmp_path / "o")]}


@pytest.mark.parametrize("case", ["random bytes", "a text file", "a batch of random bytes",
                                  "a folder of no slide"])
def test_a_file_that_is_no_slide_is_refused_without_loading_the_pipeline(tmp_path, case):
    args = _cases(tmp_path)[case]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN_CLI, "predict", *args, "--quiet"],
                          capture_output=True, text=True, timeout=60, check=False)
    seconds = time.perf_counter() - started
    ran = json.loads(done.stdout.strip().splitlines()[-1])
    if case == "a batch of random bytes":  # a batch runs, and records the slide as failed
        assert ran["code"] == 1 and "torch" not in ran["loaded"], done.stderr
        assert "bad.svs: not a whole-slide image" in done.stderr
        return
    assert ran == {"code": 1, "loaded": []}, done.stderr
    assert done.stderr.count("wsiseg: error: ") == 1
    assert seconds < 10  # well under a second on a quiet machine; a loaded suite is slower
