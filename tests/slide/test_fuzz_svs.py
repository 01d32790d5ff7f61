"""Damaged slides: 100 copies of a small SVS, each with a few bytes overwritten (half of them in
the TIFF structure, half anywhere), each predicted through the command line.

Every run ends within 60 s either with exit 0 and a complete result (the clean slide's map
whenever the damage left every pixel and the metadata as they were), or with one line naming
the slide and no output left behind. Never a traceback, a crash of the process, an
"unexpected" error, or a result that looks complete and is not.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile

from wsiseg.testing import synthetic_tissue, write_svs

pytestmark = pytest.mark.slow

CASES = 100
TIMEOUT_S = 60
#: Harness processes run side by side, each taking every SHARDS-th case.
SHARDS = 2
HARNESS = Path(__file__).with_name("fuzz_harness.py")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A 768 x 768 SVS at 0.5 um/px with two levels."""
    folder = tmp_path_factory.mktemp("fuzz")
    rgb, _ = synthetic_tissue(768, 768, seed=7, tissue_fraction=0.5)
    return write_svs(folder / "slide.svs", rgb, mpp=0.5, downsamples=(1, 4))


def _structure(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of the TIFF header, every IFD and every tag value held outside its IFD."""
    ranges = [(0, 16)]
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            ranges.append((page.offset, page.offset + 2 + 12 * len(page.tags) + 4))
            for tag in page.tags:
                if tag.valuebytecount > 4:
                    ranges.append((tag.valueoffset, tag.valueoffset + tag.valuebytecount))
    return ranges


def _cases(slide: Path) -> list[dict]:
    """The undamaged slide first (its map is the reference, made by the same harness and
    settings as the others), then the damaged copies."""
    data = slide.read_bytes()
    structure = _structure(slide)
    rng = np.random.default_rng(2026)
    cases = [{"offset": 0, "bytes": [], "reader": "openslide"}]
    for i in range(CASES):
        if i % 2:
            lo, hi = structure[int(rng.integers(len(structure)))]
            offset = int(rng.integers(lo, max(hi, lo + 1)))
        else:
            offset = int(rng.integers(len(data)))
        n = min(int(rng.integers(1, 5)), len(data) - offset)
        new = [(data[offset + k] + int(rng.integers(1, 256))) % 256 for k in range(n)]
        cases.append({"offset": offset, "bytes": new,
                      "reader": "openslide" if i % 4 < 2 else "auto"})
    return cases


def _pump(stream, lines: queue.Queue) -> None:
    """Hand ``stream``'s lines to ``lines``, then None when it ends."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def _run_shard(spec: Path, model: str, work: Path, shard: int, shards: int) -> dict[int, dict]:
    """The outcome of every ``shards``-th case from case ``shard`` on; a case that hangs or takes
    the harness down is recorded and the harness is started again from the shard's next one."""
    results: dict[int, dict] = {}
    first, total = shard, len(json.loads(spec.read_text())["cases"])
    while first < total:
        with open(work / f"harness-{first}.err", "w+") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(HARNESS), str(spec), model, str(work), str(first),
                 str(shards)],
                stdout=subprocess.PIPE, stderr=stderr, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
            current, started = None, time.monotonic()
            while True:
                try:
                    line = lines.get(timeout=1.0)
                except queue.Empty:
                    if current is not None and time.monotonic() - started > TIMEOUT_S:
                        proc.kill()
                        results[current] = {"exit": "timeout", "output": ""}
                        first = current + shards
                        break
                    continue
                if line is None:  # the harness ended
                    proc.wait()
                    if current is not None and current not in results:
                        stderr.seek(0)
                        results[current] = {"exit": f"process died ({proc.returncode})",
                                            "output": stderr.read()[-2000:]}
                        first = current + shards
                    else:
                        first = total
                    break
                if line.startswith("start "):
                    current, started = int(line.split()[1]), time.monotonic()
                elif line.startswith("{"):
                    result = json.loads(line)
                    results[result["case"]] = result
            proc.wait()
    return results


def _run_all(spec: Path, model: str, work: Path) -> dict[int, dict]:
    """Each case's outcome, from SHARDS harnesses side by side (cases 0, SHARDS, 2 SHARDS, ...
    in the first, and so on): the cases are independent, and one harness leaves a core idle
    while it writes and reads."""
    with ThreadPoolExecutor(SHARDS) as pool:
        shards = [pool.submit(_run_shard, spec, model, work, k, SHARDS) for k in range(SHARDS)]
        return {i: r for shard in shards for i, r in shard.result().items()}


def _same_pixels(a: Path, b: Path) -> bool:
    """Whether two TIFFs decode to the same pixels, with the same tags, page by page."""
    try:
        with tifffile.TiffFile(a) as ta, tifffile.TiffFile(b) as tb:
            if len(ta.pages) != len(tb.pages):
                return False
            for pa, pb in zip(ta.pages, tb.pages):
                tags_a = {t.code: t.value for t in pa.tags if t.code not in (273, 279, 324, 325)}
                tags_b = {t.code: t.value for t in pb.tags if t.code not in (273, 279, 324, 325)}
                if str(tags_a) != str(tags_b) or not np.array_equal(pa.asarray(), pb.asarray()):
                    return False
    except Exception:  # noqa: BLE001 - a page the damage made unreadable, however it fails
        return False
    return True


def test_damaged_copies_of_a_slide_end_with_a_map_or_one_line(clean, pixel_model, tmp_path):
    from wsiseg.result.integrity import is_complete
    from wsiseg.result.store import open_result

    slide = clean
    spec = tmp_path / "cases.json"
    cases = _cases(slide)
    spec.write_text(json.dumps({"slide": str(slide), "cases": cases}))
    results = _run_all(spec, str(pixel_model[0]), tmp_path)
    assert results[0]["exit"] == 0, results[0]
    clean_labels = open_result(tmp_path / "case0" / "slide.wsiseg.zarr")[0][:]

    problems, outcomes = [], {"map": 0, "error": 0}
    for i, case in enumerate(cases[1:], start=1):
        result = results.get(i, {"exit": "no result", "output": ""})
        damaged = tmp_path / f"case{i}" / "slide.svs"
        out = tmp_path / f"case{i}" / "slide.wsiseg.zarr"
        left = [p.name for p in out.parent.iterdir() if p.name != "slide.svs"]
        where = f"case {i} (offset {case['offset']}, {case['reader']})"
        output = result["output"]
        if "Traceback" in output or "unexpected" in output:
            problems.append(f"{where}: {output.strip()[-300:]}")
        elif result["exit"] == 0:
            outcomes["map"] += 1
            try:
                labels, _ = open_result(out)
                labels = labels[:]
            except Exception as err:  # noqa: BLE001 - any failure is a problem to list
                problems.append(f"{where}: exit 0 but the result does not open: {err}")
                continue
            if not is_complete(out):
                problems.append(f"{where}: exit 0 but the result is not complete")
            elif _same_pixels(slide, damaged) and not np.array_equal(labels, clean_labels):
                problems.append(f"{where}: the same pixels gave another map")
        elif result["exit"] in (1, 2):
            outcomes["error"] += 1
            lines = [line for line in output.splitlines() if line.strip()]
            errors = [line for line in lines if "error" in line.lower()]
            if len(errors) != 1 or "slide.svs" not in errors[0]:
                problems.append(f"{where}: not one line naming the slide: {output.strip()[-300:]}")
            if left:
                problems.append(f"{where}: failed but left {left}")
        else:
            problems.append(f"{where}: {result['exit']}: {output.strip()[-300:]}")
    assert not problems, f"{len(problems)} of {CASES} cases:\n" + "\n".join(problems[:15])
    # The damage reached both outcomes: some copies still map, some cannot be read.
    assert outcomes["map"] > 0 and outcomes["error"] > 0, outcomes
