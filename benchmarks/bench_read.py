"""Read stage: wsiseg's band loader against reading the level once and a per-patch tiler.

    python benchmarks/bench_read.py [--width 40000 --height 30000] [--threads 2]

Writes (once) a synthetic x40 slide with about 40% tissue under bench-out/, then measures:
  once      read every pixel of the chosen level exactly once, in tile-aligned strips, one
            thread: the ceiling the loader is compared with (level px/s);
  loader    wsiseg's BandLoader cutting every kept 400 px window (no network), with 1 and
            --threads reader threads: level px/s decoded, patches/s, px decoded per px needed;
  per-patch a tiler calling read_region once per kept window (a sample), patches/s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from wsiseg.geometry import plan_geometry
from wsiseg.grid import PatchGrid, window_tissue_fractions
from wsiseg.loader import BandLoader
from wsiseg.region import RegionReader
from wsiseg.slide import open_slide
from wsiseg.testing import write_large_svs
from wsiseg.tissue import mask_factor, read_tissue

OUT = Path(__file__).resolve().parents[1] / "bench-out"


def synthetic_slide(width: int, height: int, seed: int = 0) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"synthetic-{width}x{height}.svs"
    if not path.exists():
        t = time.perf_counter()
        tmp = path.with_suffix(".tmp.svs")
        write_large_svs(tmp, width, height, mpp=0.25, tissue_fraction=0.4, seed=seed)
        tmp.rename(path)
        print(f"wrote {path} in {time.perf_counter() - t:.0f} s ({path.stat().st_size / 1e6:.0f} MB)")
    return path


def read_level_once(slide, level: int, strip: int = 1024) -> tuple[float, int]:
    """Seconds and pixels to read a whole level once, in full-width strips."""
    w, h = slide.level_dimensions[level]
    t = time.perf_counter()
    for y in range(0, h, strip):
        slide.read_level(level, 0, y, w, min(strip, h - y))
    return time.perf_counter() - t, w * h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=40000)
    ap.add_argument("--height", type=int, default=30000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample", type=int, default=300, help="windows for the per-patch tiler")
    args = ap.parse_args()
    path = synthetic_slide(args.width, args.height)
    results: dict = {"slide": str(path), "size": [args.width, args.height]}

    with open_slide(path) as slide:
        geometry = plan_geometry(slide.level_downsamples, slide.bounds, slide.mpp, 1.0)
        grid = PatchGrid(geometry.width, geometry.height, 400, 100)
        factor = mask_factor(400, 100, geometry.mpp[0])
        tissue, _ = read_tissue(slide, geometry, factor)
        kept = window_tissue_fractions(tissue, factor, grid) >= 0.2
        results["level"] = geometry.level
        results["windows_kept"] = int(kept.sum())
        results["windows_total"] = int(kept.size)

    # Each measurement opens the slide afresh so OpenSlide's tile cache starts empty.
    with open_slide(path) as slide:
        secs, px = read_level_once(slide, geometry.level)
    results["once"] = {"seconds": secs, "level_px": px, "level_px_per_s": px / secs}
    print(f"read level {geometry.level} once: {px / 1e6:.0f} Mpx in {secs:.1f} s = {px / secs / 1e6:.1f} Mpx/s")

    for threads in sorted({1, args.threads}):
        with open_slide(path) as slide:
            reader = RegionReader(slide, geometry)
            loader = BandLoader(reader, grid, kept, batch_size=16, threads=threads)
            t = time.perf_counter()
            n = sum(len(b.rows) for b in loader)
            secs = time.perf_counter() - t
        decoded = reader.pixels_decoded
        r = {
            "threads": threads,
            "seconds": secs,
            "patches": n,
            "patches_per_s": n / secs,
            "level_px_decoded": decoded,
            "level_px_per_s": decoded / secs,
            "ratio_to_once": (decoded / secs) / results["once"]["level_px_per_s"],
        }
        results[f"loader_{threads}"] = r
        print(f"loader, {threads} thread(s): {n} patches in {secs:.1f} s = {n / secs:.0f} patches/s, "
              f"{decoded / secs / 1e6:.1f} Mpx/s ({r['ratio_to_once']:.2f} x reading once)")

    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(kept)
    pick = rng.choice(len(rows), size=min(args.sample, len(rows)), replace=False)
    with open_slide(path) as slide:
        reader = RegionReader(slide, geometry)
        t = time.perf_counter()
        for i in pick:
            reader.read(int(grid.xs[cols[i]]), int(grid.ys[rows[i]]), 400, 400)
        secs = time.perf_counter() - t
    results["per_patch"] = {"patches": len(pick), "seconds": secs, "patches_per_s": len(pick) / secs}
    print(f"per-patch read_region: {len(pick)} patches in {secs:.1f} s = {len(pick) / secs:.1f} patches/s")
    same = results["loader_1"]["patches_per_s"] / results["per_patch"]["patches_per_s"]
    results["loader_1_over_per_patch"] = same
    print(f"loader (1 thread) / per-patch tiler (1 thread): {same:.1f} x")
    (OUT / "bench_read.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
