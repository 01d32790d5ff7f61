"""Peak memory of a whole `predict` run as the slide gets taller: 1x, 4x and 20x the rows.

    python benchmarks/bench_memory_tall.py [--width 20000 --height 15000] [--heights 1,4,20]
                                           [--stride 400] [--models colour,default]

The slides are x40 (0.25 um/px) and real tissue along their whole height: the CMU slide of
../shared/data/slides, mirrored into a seamless mosaic as tall as asked, written tile row by
tile row (its pyramid levels 1, 4 and 16 from the mosaic's own area averages), so the writer's
memory does not grow with the slide. Each run is a fresh process that predicts the whole slide
(analysis at the model's resolution, 1 um/px) and reports its peak RSS (VmHWM), the RSS it had
once the model was loaded, the windows predicted per second and the stage times. ``colour``
is the free per-pixel model of examples/colour_model.py (the pipeline's own memory),
``default`` the installed model. Results go to bench-out/bench_memory_tall.json as well.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_read import OUT, colour_model, machine, peak_rss

CMU = HERE.parent.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
MPP = 0.25
LEVELS = (1, 4, 16)
TILE = 256


def _period() -> np.ndarray:
    """One period of the mosaic: the CMU slide cropped to a multiple of 16 pixels and mirrored
    into 2 x 2, so that copies side by side and one above the other join without a seam."""
    import openslide

    with openslide.OpenSlide(str(CMU)) as s:
        rgb = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    h, w = rgb.shape[0] // 16 * 16, rgb.shape[1] // 16 * 16
    rgb = rgb[:h, :w]
    row = np.concatenate([rgb, rgb[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([row, row[::-1]], axis=0))


def _tiles(period: np.ndarray, width: int, height: int) -> Iterator[np.ndarray]:
    """Row-major tiles of the ``width x height`` mosaic of ``period``, a tile row at a time."""
    ph, pw = period.shape[:2]
    cols = np.arange(width) % pw
    for y0 in range(0, height, TILE):
        rows = period[np.arange(y0, min(y0 + TILE, height)) % ph][:, cols]
        for x0 in range(0, width, TILE):
            yield rows[:, x0 : x0 + TILE]


def tall_slide(width: int, height: int) -> Path:
    """bench-out/tall-WxH.svs (x40, CMU tissue everywhere), written the first time it is
    asked for."""
    from wsiseg.slide.svs_writer import (
        aperio_description,
        area_downsample,
        resolve_app_mag,
        thumbnail_factor,
        write_aperio,
    )

    OUT.mkdir(exist_ok=True)
    path = OUT / f"tall-{width}x{height}.svs"
    if path.exists():
        return path
    t = time.perf_counter()
    period = _period()
    levels = [(d, _tiles(period if d == 1 else area_downsample(period, d),
                         math.ceil(width / d), math.ceil(height / d))) for d in LEVELS]
    f = thumbnail_factor(width, height)
    ph, pw = period.shape[:2]

    def thumbnail() -> np.ndarray:  # nearest pixels: only a picture for viewers
        ys = (np.arange(math.ceil(height / f)) * f) % ph
        xs = (np.arange(math.ceil(width / f)) * f) % pw
        return np.ascontiguousarray(period[ys][:, xs])

    tmp = path.with_suffix(".tmp.svs")
    description = aperio_description(width, height, TILE, "jpeg", 85, MPP,
                                     resolve_app_mag(MPP, None, None), None, path.stem)
    write_aperio(tmp, width, height, levels, thumbnail, description, TILE, "jpeg", 85, None)
    tmp.rename(path)
    print(f"wrote {path} in {time.perf_counter() - t:.0f} s "
          f"({path.stat().st_size / 1e6:.0f} MB)", flush=True)
    return path


def measure(slide: str, model: str, stride: int | None) -> dict[str, object]:
    """Run in this process: predict one slide; peak RSS, speed and stage times."""
    from wsiseg.inference.pipeline import PredictConfig, load_configured_model, predict_slide

    config = PredictConfig(model=None if model == "default" else model, trust_code=True,
                           out=str(OUT / (Path(slide).stem + ".wsiseg.zarr")), overwrite=True,
                           progress=False, stride=stride)
    loaded = load_configured_model(config)
    rss_loaded = _rss_now()
    t = time.perf_counter()
    info = predict_slide(slide, config, model=loaded)
    seconds = time.perf_counter() - t
    loop = info.timings.get("loop", seconds)
    return {"slide": slide, "model": str(loaded.source), "seconds": seconds,
            "peak_rss": peak_rss(), "rss_after_model_load": rss_loaded,
            "windows": info.patches_predicted, "windows_per_s": info.patches_predicted / loop,
            "shape": list(info.shape), "timings": info.timings}


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=20000)
    ap.add_argument("--height", type=int, default=15000, help="of the 1x slide")
    ap.add_argument("--heights", default="1,4,20", help="multiples of --height to measure")
    ap.add_argument("--stride", type=int, default=400, help="0: the model's own")
    ap.add_argument("--models", default="colour,default",
                    help="colour (examples/colour_model.py), default (the installed model) "
                         "or model files, comma-separated")
    ap.add_argument("--one", nargs=2, metavar=("SLIDE", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    stride = args.stride or None
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], stride)))
        return
    print(machine(), flush=True)
    results = []
    for name in args.models.split(","):
        model = colour_model() if name == "colour" else name
        first = None
        for k in (int(m) for m in args.heights.split(",")):
            w, h = args.width, args.height * k
            slide = tall_slide(w, h)
            run = subprocess.run(
                [sys.executable, __file__, "--one", str(slide), model, "--stride",
                 str(args.stride)], capture_output=True, text=True, check=False)
            if run.returncode != 0:
                print(f"{name}, {w} x {h}: the run failed (exit {run.returncode})\n"
                      f"{run.stderr[-2000:]}", flush=True)
                results.append({"slide": str(slide), "model": name,
                                "returncode": run.returncode})
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            r.update(name=name, size=[w, h], height_multiple=k)
            results.append(r)
            first = first or r
            print(f"{name}, {w} x {h} ({k}x): peak RSS {r['peak_rss'] / 2**20:.0f} MB "
                  f"(x{r['peak_rss'] / first['peak_rss']:.3f} of 1x; "
                  f"{r['rss_after_model_load'] / 2**20:.0f} MB after loading the model), "
                  f"{r['windows']} windows at {r['windows_per_s']:.1f}/s, "
                  f"{r['seconds']:.0f} s", flush=True)
    (OUT / "bench_memory_tall.json").write_text(json.dumps(
        {"machine": machine(), "stride": args.stride, "results": results}, indent=2))


if __name__ == "__main__":
    main()
