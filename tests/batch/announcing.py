"""Running the command line in a child process that says when a slide's prediction has begun,
so that a test can stop the run in the middle of that slide."""

from __future__ import annotations

import subprocess
import threading

import pytest

# Runs the command line and writes, on stdout, the name of each partial output as soon as the
# slide's prediction has begun writing it (its tissue mask is in), so that a test can stop the
# run in the middle of that slide.
ANNOUNCING = """
import sys
from wsiseg.result.writer import OutputWriter

write_tissue = OutputWriter.write_tissue

def announced_write_tissue(self, *args, **kwargs):
    write_tissue(self, *args, **kwargs)
    print(self.partial.name, flush=True)

OutputWriter.write_tissue = announced_write_tissue
from wsiseg.cli.main import main
sys.argv[0] = "wsiseg"
main()
"""


def wait_for_line(run: subprocess.Popen, line: str, timeout: float = 120) -> None:
    """Block until ``run`` writes ``line`` on its stdout (text mode); fail if it ends first or
    takes longer than ``timeout`` seconds. Nothing more is read from its stdout."""
    written = threading.Event()

    def read() -> None:
        for got in run.stdout:
            if got.rstrip("\n") == line:
                written.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)  # returns when the line came, the child ended or the time is up
    if not written.is_set():
        run.kill()
        _, stderr = run.communicate()
        pytest.fail(f"the run never wrote {line!r} (exit code {run.returncode}): {stderr}")
