"""Read stage: wsiseg's band loader against reading once and against a per-patch tiler.

    python benchmarks/bench_read.py [--width 40000 --height 30000] [--threads 2] [--repeats 3]

Writes (once) a synthetic x40 slide with about 40% tissue under bench-out/, chooses the level
for 1.0 um/px (x10) and the windows (400 px, stride 100) with at least 20% tissue, then times,
each run on a freshly opened slide (empty tile cache), repeated and reported as the median:

  level once    every pixel of the read level, once, in tile-aligned 1024 px squares: the
                slide-area ceiling (tissue and glass alike);
  needed once   exactly the rectangles the loader decodes, once each, in one plain loop: the
                decode-cost ceiling for the pixels the windows need (tissue decodes slower than
                glass, so this is the fair per-pixel baseline);
  loader        wsiseg's BandLoader producing every kept window as uint8 batches (no
                network), with 1 and --threads reader threads;
  per-patch     the usual tiler: ``OpenSlide.read_region`` once per kept window in raster
                order with OpenSlide's default cache, then RGBA -> RGB (a run of --sample
                windows, 1 thread and --threads threads).

Every ratio compares like with like (same number of reading threads). Results go to
bench-out/bench_read.json as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openslide

from wsiseg.inference.grid import PatchGrid, window_tissue_fractions
from wsiseg.inference.loader import BandLoader
from wsiseg.inference.pipeline import PredictConfig, column_stripes, overlapping_columns
from wsiseg.result.writer import CHUNK
from wsiseg.slide.geometry import plan_geometry
from wsiseg.slide.reader import open_slide
from wsiseg.slide.region import RegionReader
from wsiseg.slide.tissue import mask_factor, read_tissue
from wsiseg.testing import write_large_svs

OUT = Path(__file__).resolve().parents[1] / "bench-out"


def synthetic_slide(width: int, height: int, seed: int = 0) -> Path:
    """bench-out/synthetic-WxH.svs (x40, 40% tissue), written the first time it is asked for."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"synthetic-{width}x{height}.svs"
    if not path.exists():
        t = time.perf_counter()
        tmp = path.with_suffix(".tmp.svs")
        write_large_svs(tmp, width, height, mpp=0.25, tissue_fraction=0.4, seed=seed)
        tmp.rename(path)
        print(f"wrote {path} in {time.perf_counter() - t:.0f} s ({path.stat().st_size / 1e6:.0f} MB)")
    return path


def peak_rss() -> int:
    """This process's peak RSS in bytes. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    exec, so a child of a large parent would report the parent's peak as its own."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def colour_model() -> str:
    """The free per-pixel model of examples/colour_model.py, written to bench-out/colour.pt."""
    OUT.mkdir(exist_ok=True)
    model = OUT / "colour.pt"
    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "examples" /
                                        "colour_model.py"), str(model)],
                   check=True, capture_output=True)
    return str(model)


def machine() -> str:
    return f"{platform.node()} {platform.machine()}, {os.cpu_count()} logical CPUs, {platform.python_version()}"


class _Recorder(RegionReader):
    """A reader that records the rectangles asked of it and decodes nothing."""

    def __init__(self, slide, geometry) -> None:
        super().__init__(slide, geometry)
        self.rects: list[tuple[int, int, int, int]] = []

    def read(self, x: int, y: int, width: int, height: int, out=None) -> np.ndarray:
        self.rects.append((x, y, width, height))
        return np.zeros((height, width, 3), dtype=np.uint8) if out is None else out


def time_level_once(path: Path, level: int, square: int = 1024) -> float:
    with open_slide(path) as slide:
        w, h = slide.level_dimensions[level]
        t = time.perf_counter()
        for y in range(0, h, square):
            for x in range(0, w, square):
                slide.read_level(level, x, y, min(square, w - x), min(square, h - y))
        return time.perf_counter() - t


def time_needed_once(path: Path, geometry, rects) -> float:
    with open_slide(path) as slide:
        reader = RegionReader(slide, geometry)
        t = time.perf_counter()
        for r in rects:
            reader.read(*r)
        return time.perf_counter() - t


def time_loader(path: Path, geometry, grid, kept, threads: int) -> tuple[float, int, int]:
    """The read stage as predict_slide runs it: column stripes, each top to bottom."""
    with open_slide(path) as slide:
        reader = RegionReader(slide, geometry)
        t = time.perf_counter()
        n = 0
        for x0, x1 in column_stripes(geometry.width, PredictConfig.stripe_width, CHUNK):
            near = overlapping_columns(grid, x0, x1)
            loader = BandLoader(reader, grid, kept & near[None, :], batch_size=4, threads=threads)
            for batch in loader:
                n += len(batch.rows)
        return time.perf_counter() - t, n, reader.pixels_decoded


def time_per_patch(path: Path, level: int, d: float, windows, threads: int) -> float:
    """read_region per window (level-0 location, level, 400 x 400), as a naive tiler does."""
    with openslide.OpenSlide(str(path)) as osr:  # OpenSlide's default cache

        def one(xy):
            x, y = xy
            region = osr.read_region((round(x * d), round(y * d)), level, (400, 400))
            return np.asarray(region)[..., :3].copy()

        t = time.perf_counter()
        if threads == 1:
            for xy in windows:
                one(xy)
        else:
            with ThreadPoolExecutor(threads) as pool:
                for _ in pool.map(one, windows):
                    pass
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=40000)
    ap.add_argument("--height", type=int, default=30000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample", type=int, default=400, help="windows read by the per-patch tiler")
    args = ap.parse_args()
    path = synthetic_slide(args.width, args.height)

    with open_slide(path) as slide:
        geometry = plan_geometry(slide.level_downsamples, slide.bounds, slide.mpp, 1.0)
        grid = PatchGrid(geometry.width, geometry.height, 400, 100)
        factor = mask_factor(400, 100, geometry.mpp[0])
        tissue, _, _ = read_tissue(slide, geometry, factor)
        kept = window_tissue_fractions(tissue, factor, grid) >= 0.2
        recorder = _Recorder(slide, geometry)
        for _ in BandLoader(recorder, grid, kept, batch_size=16, threads=1):
            pass
        level_px = slide.level_dimensions[geometry.level][0] * slide.level_dimensions[geometry.level][1]
        d = slide.level_downsamples[geometry.level]
    assert geometry.is_direct, "the benchmark slide is x40: x10 is a pyramid level"
    rects = recorder.rects
    # Pixels decoded: the rectangles clipped to the image (outside it is padding, not read).
    needed_px = sum(
        max(0, min(x + w, geometry.width) - max(x, 0)) * max(0, min(y + h, geometry.height) - max(y, 0))
        for x, y, w, h in rects
    )
    n_kept = int(kept.sum())
    rows, cols = np.nonzero(kept)
    start = len(rows) // 3  # a run of windows from the middle of the tissue, raster order
    windows = [(int(grid.xs[c]), int(grid.ys[r])) for r, c in zip(rows[start:], cols[start:])][: args.sample]
    thread_counts = sorted({1, args.threads})

    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):  # interleaved, so drifts of a shared machine hit all alike
        times.setdefault("level_once", []).append(time_level_once(path, geometry.level))
        times.setdefault("needed_once", []).append(time_needed_once(path, geometry, rects))
        for t in thread_counts:
            secs, n, decoded = time_loader(path, geometry, grid, kept, t)
            assert n >= n_kept and decoded >= needed_px, (n, n_kept, decoded, needed_px)
            times.setdefault(f"loader_{t}", []).append(secs)
            results_extra = {"loader_windows": n, "loader_px_decoded": decoded}
            times.setdefault(f"per_patch_{t}", []).append(
                time_per_patch(path, geometry.level, d, windows, t))
    med = {k: statistics.median(v) for k, v in times.items()}

    results = {
        "machine": machine(), "slide": str(path), "size": [args.width, args.height],
        "level": geometry.level, "level_px": level_px, "needed_px": needed_px,
        "windows_kept": n_kept, "windows_total": int(kept.size), "repeats": args.repeats,
        "seconds": times, "median_seconds": med, **results_extra,
    }
    print(f"{machine()}")
    print(f"slide {args.width} x {args.height}, read level {geometry.level} "
          f"({level_px / 1e6:.0f} Mpx), {n_kept} of {kept.size} windows kept, "
          f"{needed_px / 1e6:.0f} Mpx needed; median of {args.repeats}")
    print(f"  column stripes: {results_extra['loader_windows']} windows cut, "
          f"{results_extra['loader_px_decoded'] / 1e6:.0f} Mpx decoded (stripe halos included)")
    print(f"  level once        {med['level_once']:6.2f} s  {level_px / med['level_once'] / 1e6:5.1f} Mpx/s of slide")
    print(f"  needed once       {med['needed_once']:6.2f} s  {needed_px / med['needed_once'] / 1e6:5.1f} Mpx/s decoded")
    for t in thread_counts:
        lo, pp = med[f"loader_{t}"], med[f"per_patch_{t}"]
        loader_rate = n_kept / lo  # distinct windows delivered per second
        patch_rate = len(windows) / pp
        results[f"threads_{t}"] = {
            "loader_patches_per_s": loader_rate,
            "loader_decoded_px_per_s": needed_px / lo,
            "vs_needed_once": med["needed_once"] / lo,
            "vs_level_once": med["level_once"] / lo,
            "per_patch_patches_per_s": patch_rate,
            "loader_over_per_patch": loader_rate / patch_rate,
        }
        r = results[f"threads_{t}"]
        print(f"  loader, {t} thread  {lo:6.2f} s  {loader_rate:6.0f} patches/s, "
              f"{r['vs_needed_once']:.2f} x needed-once, {r['vs_level_once']:.2f} x level-once")
        print(f"  per-patch, {t} thr. {pp:6.2f} s  {patch_rate:6.0f} patches/s ({len(windows)} windows): "
              f"loader is {r['loader_over_per_patch']:.1f} x faster")
    (OUT / "bench_read.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
