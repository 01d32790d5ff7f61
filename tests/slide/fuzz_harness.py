"""Runs ``wsiseg predict`` on damaged copies of one slide, one after another, in this process.

    python fuzz_harness.py CASES.json MODEL WORKDIR FIRST [STEP]

``CASES.json`` lists the damage of each case: ``{"offset": int, "bytes": [int, ...],
"reader": str}``. From case ``FIRST`` on, every ``STEP``-th case (default 1: all of them), each
damaged copy is written to WORKDIR and predicted through the command line; the harness prints ``start I`` before a case and one JSON line with
its exit code and output after it, so that the test watching it knows which case hung or
crashed the process, and can start it again from the next one.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def main() -> None:
    cases_file, model, workdir, first = sys.argv[1:5]
    step = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    from click.testing import CliRunner

    from wsiseg.cli.main import main as wsiseg

    spec = json.loads(Path(cases_file).read_text())
    clean = Path(spec["slide"]).read_bytes()
    work = Path(workdir)
    runner = CliRunner()
    for i in range(int(first), len(spec["cases"]), step):
        case = spec["cases"][i]
        print(f"start {i}", flush=True)
        folder = work / f"case{i}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        data = bytearray(clean)
        data[case["offset"] : case["offset"] + len(case["bytes"])] = bytes(case["bytes"])
        slide = folder / "slide.svs"
        slide.write_bytes(bytes(data))
        out = folder / "slide.wsiseg.zarr"
        result = runner.invoke(wsiseg, ["predict", str(slide), "--out", str(out), "--model",
                                        model, "--quiet", "--reader", case["reader"]])
        print(json.dumps({"case": i, "exit": result.exit_code, "output": result.output,
                          "exception": None if result.exit_code in (0, 1, 2)
                          else repr(result.exception)}), flush=True)


if __name__ == "__main__":
    main()
