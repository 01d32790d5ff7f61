"""Peak memory of a whole `predict` run, on a slide and on one of 4 x its area.

    python benchmarks/bench_memory.py [--width 40000 --height 30000] [--model FILE]

Each run is a fresh process (so peaks do not mix) that predicts the whole slide and reports
its peak RSS (VmHWM) and the RSS it had once the model was loaded, before any slide work.
The default model is the per-pixel colour model of examples/colour_model.py, so the figure is
the pipeline's own memory: tiler, loader, accumulators, writer (model weights excluded).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_read import OUT, colour_model, peak_rss, synthetic_slide


def measure(slide: str, model: str, out: str, batch_size: int | None,
            reader: str = "openslide") -> dict:
    """Run in this process: predict one slide, report time, stage times and peak RSS."""
    from wsiseg.inference.pipeline import PredictConfig, predict_slide
    from wsiseg.models import load_model

    loaded = load_model(model, trust_code=True)
    weights_bytes = sum(p.numel() * p.element_size() for p in loaded.module.parameters())
    rss_loaded = _rss_now()
    t = time.perf_counter()
    info = predict_slide(slide, PredictConfig(out=out, overwrite=True, progress=False,
                                              batch_size=batch_size, reader=reader), model=loaded)
    secs = time.perf_counter() - t
    peak = peak_rss()
    return {"slide": slide, "seconds": secs, "peak_rss": peak, "rss_after_model_load": rss_loaded,
            "weights_bytes": weights_bytes, "peak_rss_minus_weights": peak - weights_bytes,
            "timings": info.timings, "patches_kept": info.patches_kept}


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=40000)
    ap.add_argument("--height", type=int, default=30000)
    ap.add_argument("--model", help="model file (default: the colour model from examples/)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the pipeline's")
    ap.add_argument("--reader", default="openslide", help="openslide, tifffile or auto")
    ap.add_argument("--one", nargs=2, metavar=("SLIDE", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        out = str(OUT / (Path(args.one[0]).stem + ".wsiseg.zarr"))
        print(json.dumps(measure(args.one[0], args.one[1], out, args.batch_size, args.reader)))
        return
    model = args.model
    if model is None:
        model = colour_model()
    results = []
    for w, h in ((args.width, args.height), (args.width * 2, args.height * 2)):
        slide = synthetic_slide(w, h)
        extra = ["--batch-size", str(args.batch_size)] if args.batch_size else []
        extra += ["--reader", args.reader]
        run = subprocess.run([sys.executable, __file__, "--one", str(slide), model, *extra],
                             check=True, capture_output=True, text=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{w} x {h}: {r['seconds']:.0f} s, peak RSS {r['peak_rss'] / 2**30:.2f} GiB "
              f"({r['peak_rss_minus_weights'] / 2**30:.2f} GiB without weights; "
              f"{r['rss_after_model_load'] / 2**30:.2f} GiB after loading the model)")
    a, b = (r["peak_rss_minus_weights"] for r in results)
    print(f"4 x the area: peak RSS x {b / a:.3f}")
    (OUT / "bench_memory.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
