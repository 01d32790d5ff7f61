"""Time and peak memory of each export of one large result.

    python benchmarks/bench_export.py [--width 40000 --height 30000] [--formats geojson,tiff,report,png]

Predicts the synthetic x40 slide of ``bench_read.py`` (written the first time) with the
per-pixel colour model of examples/colour_model.py, once, then runs each format in a fresh
process (so peaks do not mix) and reports its seconds, peak RSS and what it wrote. The colour
model calls every pixel from its colour alone, so its map is far more fragmented than a trained
network's: a hard case for the vector export. Results go to ``bench-out/bench_export.json``.
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
from bench_read import OUT, colour_model, machine, peak_rss, synthetic_slide


def measure(result: str, fmt: str, out_dir: str) -> dict:
    """Run in this process: one export of ``result``, its time and this process's peak RSS."""
    from wsiseg.export import ExportOptions, export_result

    t = time.perf_counter()
    written = export_result(result, [fmt], out_dir, ExportOptions(tiff_overlay=True))
    seconds = time.perf_counter() - t
    peak = peak_rss()
    info = {"format": fmt, "seconds": round(seconds, 2), "peak_rss": peak,
            "files": {p.name: p.stat().st_size for p in written}}
    if fmt == "geojson":
        info["features"] = len(json.loads(written[0].read_text())["features"])
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=40000)
    ap.add_argument("--height", type=int, default=30000)
    ap.add_argument("--formats", default="geojson,tiff,report,png")
    ap.add_argument("--one", nargs=3, metavar=("RESULT", "FORMAT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one)))
        return

    from wsiseg.inference.pipeline import PredictConfig, predict_slide
    from wsiseg.result.integrity import is_complete
    from wsiseg.result.store import open_result

    slide = synthetic_slide(args.width, args.height)
    result = OUT / f"{slide.stem}.colour.wsiseg.zarr"
    if not is_complete(result):
        model = colour_model()
        t = time.perf_counter()
        predict_slide(slide, PredictConfig(model=str(model), trust_code=True, out=str(result), overwrite=True,
                                           progress=False))
        print(f"predicted {slide.name} in {time.perf_counter() - t:.0f} s")
    _, info = open_result(result)
    h, w = info.shape
    print(f"result {result.name}: {w} x {h} map")
    out_dir = OUT / "exports"
    out_dir.mkdir(exist_ok=True)
    runs = []
    for fmt in args.formats.split(","):
        run = subprocess.run([sys.executable, __file__, "--one", str(result), fmt, str(out_dir)],
                             check=True, capture_output=True, text=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        runs.append(r)
        sizes = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in r["files"].items())
        extra = f", {r['features']} features" if "features" in r else ""
        print(f"{fmt:>8}: {r['seconds']:7.1f} s, peak RSS {r['peak_rss'] / 2**30:.2f} GiB "
              f"({sizes}{extra})")
    report = {"machine": machine(), "slide": slide.name, "map": [w, h], "runs": runs}
    (OUT / "bench_export.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
