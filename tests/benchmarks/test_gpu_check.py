"""benchmarks/gpu_check.sh, the device check, runs anywhere with --device cpu --quick."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_device_check_runs_on_the_cpu_and_ends_with_its_table(tmp_path):
    run = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu",
                          "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHON": sys.executable})
    assert run.returncode == 0, run.stderr[-2000:]
    table = run.stdout[run.stdout.index("== wsiseg device check: cpu"):]
    assert "labels agree, default precision  100.000 %" in table
    assert "max diff       0 /255" in table
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["correctness"]["windows"] > 0
    rows = {(r["model"], r["batch_size"]) for r in results["cost"]}
    assert rows == {("hspnet_r34", 4), ("hspnet-lite-glas", 4)}
    for r in results["cost"]:
        assert r["windows"] > 0 and r["E"] > 0
        assert r["model"] in table.splitlines()[-2] + table.splitlines()[-1]
