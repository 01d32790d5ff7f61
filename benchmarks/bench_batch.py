"""Slides per hour for a batch, in one process and on local dask clusters of 1 and 2 workers.

    python benchmarks/bench_batch.py [--slides 6] [--size 1600x1200] [--model NAME]

Writes ``--slides`` synthetic x20 SVS slides (0.5 um/px, about half tissue) once, then runs the
same batch as ``wsiseg predict FOLDER --out DIR`` does (``predict_slides``) three ways: in this
process, with ``--workers 1`` and with ``--workers 2``. Each run starts from an empty output
folder; the local cluster's start-up is counted. The model is the installed default unless
``--model`` names another. Results go to ``bench-out/batch.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-out"


def _slides(folder: Path, count: int, width: int, height: int) -> list[Path]:
    from wsiseg.testing import synthetic_tissue, write_svs

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"slide{i:02d}.svs"
        if not path.exists():
            rgb, _ = synthetic_tissue(height, width, seed=100 + i, tissue_fraction=0.5)
            write_svs(path, rgb, mpp=0.5)
        paths.append(path)
    return paths


def _run(paths, model, workers):
    from distributed import Client, LocalCluster

    from wsiseg.batch.runner import BatchConfig, predict_slides
    from wsiseg.inference.pipeline import PredictConfig

    out = OUT / "batch-results"
    shutil.rmtree(out, ignore_errors=True)
    config = BatchConfig(out_dir=str(out), predict=PredictConfig(model=model), progress=False)
    started = time.perf_counter()
    if workers is None:
        result = predict_slides(paths, config)
    else:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            result = predict_slides(paths, config, client=client)
    seconds = time.perf_counter() - started
    assert not result.failed, result.failed
    patches = sum(r.patches or 0 for r in result.records)
    return {"workers": workers or "in process", "seconds": round(seconds, 1),
            "slides_per_hour": round(len(paths) * 3600 / seconds, 1), "patches": patches}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=6)
    ap.add_argument("--size", default="1600x1200", help="level-0 width x height of each slide")
    ap.add_argument("--model", default=None, help="model to run (default: the installed one)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    paths = _slides(OUT / "batch-slides", args.slides, width, height)
    runs = [_run(paths, args.model, workers) for workers in (None, 1, 2)]
    report = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} CPUs", "slides": len(paths), "size": args.size,
              "model": args.model or "installed default", "runs": runs}
    OUT.mkdir(exist_ok=True)
    (OUT / "batch.json").write_text(json.dumps(report, indent=2) + "\n")
    for run in runs:
        print(f"{run['workers']!s:>10}: {run['seconds']:7.1f} s, "
              f"{run['slides_per_hour']:7.1f} slides/hour ({run['patches']} patches)")


if __name__ == "__main__":
    main()
