"""benchmarks/gpu_check.sh, the device check, runs anywhere with --device cpu --quick; its
table and verdict say what the figures say."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    """benchmarks/gpu_check.py as a module (the benchmarks are no package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _after(table: str, label: str) -> list[str]:
    """The words that follow ``label`` on the table's one line that starts with it; spacing,
    alignment and line layout aside."""
    words = label.split()
    found = [line.split()[len(words):] for line in table.splitlines()
             if line.split()[:len(words)] == words]
    assert len(found) == 1, (label, table)
    return found[0]


@pytest.mark.slow
def test_the_device_check_runs_on_the_cpu_and_ends_with_its_table(tmp_path):
    run = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu",
                          "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "PYTHON": sys.executable})
    assert run.returncode == 0, run.stderr[-2000:]
    table = run.stdout[run.stdout.index("== wsiseg device check: cpu"):]
    agree = _after(table, "labels agree, default precision")
    assert float(agree[0]) == 100.0 and agree[1] == "%" and agree[-1] == "ok", agree
    diff = _after(table, "probabilities, float32, max diff")
    assert int(diff[0]) == 0 and diff[1] == "/255" and diff[-1] == "ok", diff
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["correctness"]["windows"] > 0
    assert results["correctness"]["labels_agree"] == 1
    assert results["correctness"]["max_prob_diff_255"] == 0
    rows = {(r["model"], r["batch_size"]) for r in results["cost"]}
    assert rows == {("hspnet_r34", 4), ("hspnet-lite-glas", 4)}
    lines = table.splitlines()
    for r in results["cost"]:
        assert r["windows"] > 0 and r["E"] > 0
        # The model's row is among the table's last two: model, batch, windows, ..., E, peak.
        (row,) = [line.split() for line in lines[-2:] if line.split()[:1] == [r["model"]]]
        assert int(row[1]) == r["batch_size"] and int(row[2]) == r["windows"], row
        assert abs(float(row[5]) - r["E"]) <= 0.005, row


def _results(labels_agree: float, max_prob_diff_255: int, windows: int = 12) -> dict:
    return {"device": "cuda:0", "torch": "2.9", "seconds": 61.4, "compile": False,
            "reader": "auto", "slide": "1600 x 1200 x40",
            "correctness": {"windows": windows, "labels_agree": labels_agree,
                            "labels_agree_fp32": 1.0, "max_prob_diff_255": max_prob_diff_255},
            "cost": [{"model": "hspnet_r34", "batch_size": 32, "windows": 480,
                      "network_per_s": 250.0, "end_to_end_per_s": 200.0, "E": 0.8,
                      "gpu_peak_bytes": 3 * 2**30}]}


@pytest.mark.parametrize("agree, diff, windows, verdicts", [
    (1.0, 0, 12, ("ok", "ok")),
    (0.99, 0, 12, ("FAILED", "ok")),    # labels: 99% < 99.5%
    (0.999, 3, 12, ("ok", "FAILED")),   # probabilities: 3/255 > 2/255
    (1.0, 0, 0, ("ok", "ok")),          # no window compared: failed all the same
])
def test_the_table_and_the_exit_code_follow_the_thresholds(gpu_check, agree, diff, windows,
                                                            verdicts):
    results = _results(agree, diff, windows)
    table = gpu_check.table(results)
    assert table.splitlines()[0].split()[:5] == ["==", "wsiseg", "device", "check:", "cuda:0,"]
    shown = _after(table, "labels agree, default precision")
    assert float(shown[0]) == pytest.approx(100 * agree, abs=5e-4) and shown[-1] == verdicts[0]
    shown = _after(table, "probabilities, float32, max diff")
    assert int(shown[0]) == diff and shown[-1] == verdicts[1]
    good = windows > 0 and verdicts == ("ok", "ok")
    assert gpu_check.passed(results) is good
    assert ("FAILED" in table.splitlines()[1]) is (windows == 0)
    row = table.splitlines()[-1].split()
    assert row[:3] == ["hspnet_r34", "32", "480"] and float(row[5]) == 0.8
    assert float(row[6]) == 3.0 and row[7] == "G"


def test_without_an_installed_model_only_the_cost_is_shown_and_it_passes(gpu_check):
    results = _results(1.0, 0)
    del results["correctness"]
    table = gpu_check.table(results)
    assert "labels agree" not in table and "not checked" in table
    assert gpu_check.passed(results)
