"""Peak memory of a whole `predict` run on slides without a pyramid (one level only).

    python benchmarks/bench_memory_flat.py [--width 100000 --height 20000] [--model FILE]
                                           [--reader openslide] [--also 40000x10000]

A scanner that writes no pyramid leaves every read at level 0, and the tissue mask (about
10 um/px) is then the area average of blocks of 40 x 40 level-0 pixels of an x40 scan. The
slides here are x40 (0.25 um/px), mostly glass (2% tissue), one level of JPEG tiles, written
tile row by tile row (:func:`wsiseg.testing.write_large_svs` with ``downsamples=(1,)``) so the
writer's memory does not grow with the slide. Each run is a fresh process that predicts the
whole slide and reports its peak RSS (VmHWM), the time of each stage and the RSS it had once
the model was loaded. The default model is the per-pixel colour model of
examples/colour_model.py, so the figure is the pipeline's own memory. Results go to
bench-out/bench_memory_flat.json as well.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_read import OUT, colour_model, machine


def flat_slide(width: int, height: int, seed: int = 0) -> Path:
    """bench-out/flat-WxH.svs (x40, one level, 2% tissue), written the first time it is
    asked for."""
    from wsiseg.testing import write_large_svs

    OUT.mkdir(exist_ok=True)
    path = OUT / f"flat-{width}x{height}.svs"
    if not path.exists():
        t = time.perf_counter()
        tmp = path.with_suffix(".tmp.svs")
        write_large_svs(tmp, width, height, mpp=0.25, tissue_fraction=0.02, seed=seed,
                        downsamples=(1,))
        tmp.rename(path)
        print(f"wrote {path} in {time.perf_counter() - t:.0f} s "
              f"({path.stat().st_size / 1e6:.0f} MB)", flush=True)
    return path


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=100000)
    ap.add_argument("--height", type=int, default=20000)
    ap.add_argument("--also", type=_size, action="append", default=[], metavar="WxH",
                    help="more slide sizes to measure first (repeatable)")
    ap.add_argument("--model", help="model file (default: the colour model from examples/)")
    ap.add_argument("--reader", default="openslide", help="openslide, tifffile or auto")
    args = ap.parse_args()
    model = args.model
    if model is None:
        model = colour_model()
    print(machine(), flush=True)
    results = []
    for w, h in [*args.also, (args.width, args.height)]:
        slide = flat_slide(w, h)
        run = subprocess.run(
            [sys.executable, str(HERE / "bench_memory.py"), "--one", str(slide), model,
             "--reader", args.reader],
            capture_output=True, text=True, check=False)
        if run.returncode != 0:
            print(f"{w} x {h}: the run failed (exit {run.returncode}; a negative code is the "
                  f"signal that killed it)\n{run.stderr[-2000:]}", flush=True)
            results.append({"slide": str(slide), "returncode": run.returncode})
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        r["size"] = [w, h]
        results.append(r)
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in r["timings"].items())
        print(f"{w} x {h} ({w * h / 1e9:.1f} Gpx, no pyramid): {r['seconds']:.0f} s, peak RSS "
              f"{r['peak_rss'] / 2**30:.2f} GiB ({r['rss_after_model_load'] / 2**30:.2f} GiB after "
              f"loading the model); {stages}", flush=True)
    (OUT / "bench_memory_flat.json").write_text(json.dumps(
        {"machine": machine(), "reader": args.reader, "results": results}, indent=2))


if __name__ == "__main__":
    main()
