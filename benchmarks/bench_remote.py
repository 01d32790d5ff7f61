"""Bytes fetched to predict a slide at a URL, against the bytes of the level it reads.

    python benchmarks/bench_remote.py [--width 40000] [--height 30000] [--block-size 16384]

Writes (once) bench-out/synthetic-WxH.svs (x40, levels x40, x10, x2.5), serves it from a local
HTTP server that answers byte-range requests and counts what it sends, and predicts it from
its URL at x10 with the per-pixel colour model. Prints the bytes fetched, the bytes of the x10
level's tiles (their TileByteCounts), the bytes of the directories and the file's size.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import tifffile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_read import OUT, colour_model, synthetic_slide


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, list[int]]:
    served: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            size = (folder / self.path.lstrip("/")).stat().st_size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            path = folder / self.path.lstrip("/")
            size = path.stat().st_size
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            start, end = (int(m[1]), min(int(m[2] or size - 1), size - 1)) if m else (0, size - 1)
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(end - start + 1)
            self.send_response(206 if m else 200)
            if m:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            served.append(len(data))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, served


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=40000)
    ap.add_argument("--height", type=int, default=30000)
    ap.add_argument("--block-size", type=int, default=None, help="the parse's cache blocks")
    args = ap.parse_args()
    from wsiseg.inference.pipeline import PredictConfig, predict_slide
    from wsiseg.slide import remote

    os.environ["WSISEG_TRUST_CODE"] = "1"  # the benchmark's own colour model
    if args.block_size:
        remote.BLOCK_SIZE = args.block_size
    slide = synthetic_slide(args.width, args.height)
    model = colour_model()
    with tifffile.TiffFile(slide) as tif:
        tiled = [p for p in tif.pages if p.is_tiled]
        level_bytes = {n: int(sum(p.databytecounts)) for n, p in enumerate(tiled)}
        directories = sum(8 + 20 * len(p.tags) + sum(t.count * 8 for t in p.tags.values()
                                                     if t.count > 1 and t.code in (324, 325,
                                                                                   273, 279))
                          for p in tif.pages)
    server, served = serve(slide.parent)
    url = f"http://127.0.0.1:{server.server_address[1]}/{slide.name}"
    t = time.perf_counter()
    info = predict_slide(url, PredictConfig(model=model, out=str(OUT / "remote.wsiseg.zarr"),
                                            overwrite=True, progress=False))
    secs = time.perf_counter() - t
    fetched = sum(served)
    report = {
        "slide": f"{args.width} x {args.height}", "level_read": info.level,
        "bytes_fetched": fetched, "requests": len(served),
        "level_bytes": level_bytes[info.level], "directory_bytes": directories,
        "file_bytes": slide.stat().st_size, "block_size": remote.BLOCK_SIZE,
        "fetched_over_level": round(fetched / level_bytes[info.level], 3),
        "fetched_over_file": round(fetched / slide.stat().st_size, 4), "seconds": round(secs, 1),
    }
    print(json.dumps(report, indent=2))
    server.shutdown()


if __name__ == "__main__":
    main()
