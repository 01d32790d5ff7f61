"""Latency of the viewer's cached tiles over HTTP: p50 and p95 of slide and map tiles.

    python benchmarks/bench_view.py [--size 8000x6000] [--rounds 5]

Writes a synthetic x40 SVS slide (0.25 um/px) and its result with a per-pixel model once,
starts ``wsiseg view``'s server on a free port, requests every tile of the three finest Deep
Zoom levels once (filling the cache), then ``--rounds`` times again over one kept-alive
connection, and reports the latency of those cached requests. Results go to
``bench-out/view.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-out"


def _result(folder: Path, width: int, height: int) -> Path:
    import sys

    import torch

    from wsiseg.inference.pipeline import PredictConfig, predict_slide
    from wsiseg.models import save_torchscript
    from wsiseg.testing import synthetic_tissue, write_svs

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import PixelModel, _test_card

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "view.wsiseg.zarr"
    if out.exists():
        return out
    rgb, _ = synthetic_tissue(height, width, seed=7, tissue_fraction=0.4)
    slide = write_svs(folder / "view.svs", rgb, mpp=0.25)
    model = PixelModel([[6, 6, 6], [9, -3, -5], [-2, -6, 9], [-4, 7, -2]],
                       [-14.0, 0.0, 0.0, 0.5]).eval()
    save_torchscript(folder / "pixel.pt", torch.jit.script(model), _test_card("pixel", 4))
    return predict_slide(slide, PredictConfig(model=str(folder / "pixel.pt"), trust_code=True, out=str(out),
                                              progress=False)).path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="8000x6000")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from wsiseg.view import make_server

    result = _result(OUT / "view-data", width, height)
    server, viewer = make_server(result, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    view = viewer.single
    paths = {"slide": [], "map": []}
    for level in range(view.max_level - 2, view.max_level + 1):
        cols, rows = view.dz.level_tiles[level]
        for col in range(cols):
            for row in range(rows):
                paths["slide"].append(f"/slide_files/{level}/{col}_{row}.jpeg")
                paths["map"].append(f"/map_files/{level}/{col}_{row}.png")
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port)

    def fetch(path: str) -> float:
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, (path, response.status)
        return time.perf_counter() - start

    report = {"platform": platform.platform(), "processor": platform.processor(),
              "slide": f"{width} x {height}", "tiles": {}}
    for kind, kind_paths in paths.items():
        first = [fetch(p) for p in kind_paths]  # fills the cache
        cached = [fetch(p) for _ in range(args.rounds) for p in kind_paths]
        ms = np.array(cached) * 1e3
        report["tiles"][kind] = {
            "count": len(kind_paths), "uncached_p50_ms": float(np.median(first) * 1e3),
            "cached_p50_ms": float(np.percentile(ms, 50)),
            "cached_p95_ms": float(np.percentile(ms, 95)),
        }
        print(f"{kind}: {len(kind_paths)} tiles, uncached p50 {np.median(first) * 1e3:.1f} ms, "
              f"cached p50 {np.percentile(ms, 50):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms")
    conn.close()
    server.shutdown()
    server.server_close()
    viewer.close()
    OUT.mkdir(exist_ok=True)
    (OUT / "view.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
