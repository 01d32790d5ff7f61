"""A seeded fuzz of what a result records: values of the wrong sign, size, type and finiteness
in its attributes (``wsiseg``, the record of chunks, the NGFF metadata) and in its arrays'
metadata (shape, chunks, data type, codecs). Opening the result and each export must then end in
a correct export or in one line (a :class:`WsisegError`), never another exception, never a hang:
the cases run in one process under a memory limit and a time limit."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

from hostile_results import run_limited

CASES = 48
SEED = 20240611
HOSTILE: list[Any] = [0, -1, -7, 1.5, -0.0, 255, 256, 2**31, 2**64, 10**6, 1e308, -1e308,
                      math.nan, math.inf, -math.inf, "text", "", None, True, [], [1, 2, 3],
                      [0, 0], [-1, -1], [math.nan, 1], {}, {"a": 1}]
ARRAYS = ["labels/classes/0", "labels/classes/1", "labels/tissue/0", "wsiseg/probabilities", "0"]
GROUPS = ["", "labels", "labels/classes", "labels/tissue"]
FORMATS = ("geojson", "tiff", "png", "report")


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every value (leaves and containers) inside the JSON ``node``."""
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _leaves(value, (*path, i))
    return out


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _hostile(rng: random.Random, old: Any) -> Any:
    """A value to put where ``old`` was: a hostile one, or ``old`` scaled, negated or widened."""
    if isinstance(old, (int, float)) and not isinstance(old, bool) and rng.random() < 0.4:
        return rng.choice([-old, old * 1000, old * 1e-9, old + 1, old - 1, old * 2**40])
    if isinstance(old, list) and old and rng.random() < 0.3:
        return rng.choice([old * 2, old[:-1], [*old, old[-1]]])
    return rng.choice(HOSTILE)


def edit_case(result: Path, rng: random.Random) -> str:
    """Edit one value of ``result``'s metadata at random; say which, in a few words."""
    kind = rng.choice(["wsiseg", "wsiseg", "wsiseg", "record", "ngff", "array", "array"])
    if kind == "array":
        meta_path = result / rng.choice([a for a in ARRAYS if (result / a).is_dir()]) / "zarr.json"
        key = rng.choice(["shape", "chunk_grid", "data_type", "codecs", "fill_value",
                          "chunk_key_encoding"])
        meta = json.loads(meta_path.read_text())
        choices = [p for p in _leaves(meta[key], (key,))]
    else:
        meta_path = result / (rng.choice(GROUPS) if kind == "ngff" else "") / "zarr.json"
        meta = json.loads(meta_path.read_text())
        top = {"wsiseg": "wsiseg", "record": "wsiseg_chunks", "ngff": "ome"}[kind]
        if top not in meta["attributes"]:
            top = "wsiseg"
            meta_path = result / "zarr.json"
            meta = json.loads(meta_path.read_text())
        choices = [("attributes", *p) for p in _leaves(meta["attributes"][top], (top,))]
    path = rng.choice(choices)
    node = meta
    for step in path:
        node = node[step]
    value = _hostile(rng, node)
    _replace(meta, path, value)
    meta_path.write_text(json.dumps(meta))
    where = meta_path.relative_to(result).as_posix()
    return f"{where}: {'.'.join(map(str, path))} = {value!r}"[:200]


def _copy_metadata_link_chunks(source: str, target: str) -> None:
    """Metadata copied (it is edited), chunks linked: no case writes into a chunk."""
    if Path(source).name == "zarr.json":
        shutil.copyfile(source, target)
    else:
        os.link(source, target)


def fuzz(base: str, work: str, cases: int = CASES, seed: int = SEED) -> list[str]:
    """Run ``cases`` edited copies of the result ``base`` through ``open_result`` and every
    export; the failures, in words (what was edited, and what happened)."""
    from wsiseg.errors import WsisegError
    from wsiseg.export import export_result
    from wsiseg.result.reading import result_reads
    from wsiseg.result.store import open_result

    rng = random.Random(seed)
    failures = []
    for case in range(cases):
        result = Path(shutil.copytree(base, Path(work) / f"{case}" / Path(base).name,
                                      copy_function=_copy_metadata_link_chunks))
        what = edit_case(result, rng)

        def read(result: Path = result) -> None:
            labels, _ = open_result(result)
            with result_reads(result):
                labels[...]

        steps = [("open", read)] + [
            (f, lambda f=f, result=result: export_result(result, [f], result.parent))
            for f in FORMATS]
        for name, step in steps:
            try:
                step()
            except WsisegError as err:
                if "\n" in str(err) or not str(err):
                    failures.append(f"case {case} ({what}): {name}: not one line: {err!r}")
            except Exception:  # noqa: BLE001  the point: anything else is a failure
                failures.append(f"case {case} ({what}): {name}: "
                                + traceback.format_exc(limit=-3).replace("\n", " | "))
    return failures


def test_edited_metadata_ends_in_an_export_or_one_line(small_published, tmp_path):
    script = f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_fuzz_attrs import fuzz
        print(json.dumps(fuzz({str(small_published)!r}, {str(tmp_path)!r})))
    """
    run = run_limited(script, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    failures = json.loads(run.stdout.splitlines()[-1])
    assert not failures, "\n".join(failures)


if __name__ == "__main__":  # python tests/result/test_fuzz_attrs.py RESULT WORK [CASES SEED]
    print("\n".join(fuzz(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:5]))) or "no failure")
