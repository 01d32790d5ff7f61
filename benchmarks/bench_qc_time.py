"""What artefact detection adds to a slide's run time: ``wsiseg predict`` with ``--qc off`` and
with ``--qc record`` (the default: pen and folds on the tissue picture, focus on the bands the
windows are read from), on real tissue, each in a process of its own.

    python benchmarks/bench_qc_time.py [--tiles 5] [--repeats 3] [--model colour|shipped]

The tissue is the real CMU-1-Small-Region (``../shared/data``) mirrored into a mosaic of
``tiles`` x ``tiles`` copies (x20, 0.499 um/px; 5 gives 11100 x 14835 px, 5.5 x 7.4 mm), written
once as an SVS into bench-out/qc-time/. The two modes run in turn, ``repeats`` times each, so
that drift of the machine falls on both. Prints the median wall time of each mode, the share
QC adds, and the result's own timings of the steps QC lengthens: ``tissue`` (the tissue
picture, pen and folds) and ``focus`` (CPU seconds of the focus scores, in the reading thread).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_formats import MPP, mosaic, run
from bench_read import OUT, colour_model, machine


def slide(tiles: int) -> Path:
    from wsiseg.testing import write_svs

    folder = OUT / "qc-time"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"cmu-{tiles}x{tiles}.svs"
    if not path.exists():
        rgb = mosaic(tiles)
        print(f"writing {rgb.shape[1]} x {rgb.shape[0]} px of CMU tissue", flush=True)
        write_svs(path, rgb, MPP, downsamples=(1, 4, 16), tile=256)
    return path


def timings(result: Path) -> dict[str, float]:
    attrs = json.loads((result / "zarr.json").read_text())["attributes"]["wsiseg"]
    return {k: float(v) for k, v in attrs["timings"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", choices=("colour", "shipped"), default="colour")
    args = ap.parse_args()

    path = slide(args.tiles)
    model = colour_model() if args.model == "colour" else "hspnet-lite-glas"
    out = OUT / "qc-time"
    walls: dict[str, list[float]] = {"off": [], "record": []}
    steps: dict[str, list[dict[str, float]]] = {"off": [], "record": []}
    for _ in range(args.repeats):
        for mode in ("off", "record"):
            result = out / f"{mode}.wsiseg.zarr"
            figures = run(str(path), result, model, "--qc", mode)
            walls[mode].append(figures["seconds"])
            steps[mode].append(timings(result))
    print(f"{machine()}; {path.name}, model {args.model}, {args.repeats} runs each")
    off, record = statistics.median(walls["off"]), statistics.median(walls["record"])
    for mode in ("off", "record"):
        tissue = statistics.median(t["tissue"] for t in steps[mode])
        focus = statistics.median(t.get("focus", 0.0) for t in steps[mode])
        print(f"--qc {mode:<7} wall {statistics.median(walls[mode]):6.1f} s "
              f"(runs {', '.join(f'{w:.1f}' for w in walls[mode])}); tissue step {tissue:.2f} s, "
              f"focus {focus:.2f} s")
    print(f"QC adds {record - off:+.1f} s, {100 * (record - off) / off:+.1f}% of the run")


if __name__ == "__main__":
    main()
