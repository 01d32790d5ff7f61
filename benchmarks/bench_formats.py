"""Every slide format end to end: the same real tissue as SVS, generic TIFF, OME-TIFF (both
byte orders), OME-Zarr (bioformats2raw and NGFF 0.5), DICOM (JPEG frames in YCbCr labelled
RGB) and SVS at a URL, each predicted by ``wsiseg predict`` in a process of its own.

    python benchmarks/bench_formats.py [--tiles 3]

The tissue is the real CMU-1-Small-Region (``../shared/data``), mirrored into a mosaic of
``tiles`` x ``tiles`` copies (x20, 0.499 um/px), written once into bench-out/formats/. Prints,
for each format: the wall time and peak RSS of the whole command (``/usr/bin/time``), the map's
size, the share of map pixels equal to the SVS's map, and for the URL the bytes fetched.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_read import OUT, colour_model, machine
from bench_remote import serve

CMU = HERE.parents[0].parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
MPP = 0.499


def mosaic(tiles: int) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(str(CMU)) as s:
        rgb = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    row = np.concatenate([rgb if i % 2 == 0 else rgb[:, ::-1] for i in range(tiles)], axis=1)
    return np.concatenate([row if j % 2 == 0 else row[::-1] for j in range(tiles)], axis=0)


def write_all(folder: Path, tiles: int) -> dict[str, Path]:
    from wsiseg.testing import (
        write_dicom_wsi,
        write_generic_tiff,
        write_ome_tiff,
        write_ome_zarr,
        write_svs,
    )

    folder.mkdir(parents=True, exist_ok=True)
    done = folder / f"written-{tiles}"
    paths = {
        "svs": folder / "slide.svs",
        "generic-tiff": folder / "slide.tiff",
        "ome-tiff": folder / "slide.ome.tiff",
        "ome-tiff (big-endian)": folder / "slide-be.ome.tiff",
        "ome-zarr (bioformats2raw)": folder / "slide.ome.zarr",
        "ome-zarr (ngff 0.5)": folder / "slide-05.ome.zarr",
        "dicom (ycbcr labelled rgb)": folder / "dicom",
    }
    if done.exists():
        return paths
    rgb = mosaic(tiles)
    print(f"writing {rgb.shape[1]} x {rgb.shape[0]} px of CMU tissue in 7 formats", flush=True)
    levels = (1, 4, 16)
    write_svs(paths["svs"], rgb, MPP, downsamples=levels, tile=256)
    write_generic_tiff(paths["generic-tiff"], rgb, mpp=MPP, levels=levels)
    write_ome_tiff(paths["ome-tiff"], rgb, MPP, levels=levels)
    write_ome_tiff(paths["ome-tiff (big-endian)"], rgb, MPP, levels=levels, byteorder=">")
    write_ome_zarr(paths["ome-zarr (bioformats2raw)"], rgb, MPP, levels=levels)
    write_ome_zarr(paths["ome-zarr (ngff 0.5)"], rgb, MPP, levels=levels, layout="ngff-0.5")
    write_dicom_wsi(paths["dicom (ycbcr labelled rgb)"], rgb, MPP, downsamples=levels,
                    compression="jpeg", jpeg_colour="ycbcr")
    done.touch()
    return paths


#: How each copy's pixels are stored: the maps of lossy copies differ from the lossless ones
#: where JPEG moved a pixel across the model's decision boundary.
COMPRESSION = {"svs": "jpeg", "generic-tiff": "deflate", "ome-tiff": "jpeg",
               "ome-tiff (big-endian)": "jpeg", "ome-zarr (bioformats2raw)": "lossless",
               "ome-zarr (ngff 0.5)": "lossless", "dicom (ycbcr labelled rgb)": "jpeg",
               "svs at a URL (http)": "jpeg"}


def run(slide: str, out: Path, model: str, *more: str) -> dict[str, float]:
    """Wall seconds and peak RSS of ``wsiseg predict SLIDE --model MODEL --out OUT MORE...``."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as timing:
        cmd = ["/usr/bin/time", "-o", timing.name, "-f", "%e %M", sys.executable, "-m",
               "wsiseg.cli.main", "predict", slide, "--model", model, "--out", str(out),
               "--overwrite", "--quiet", *more]
        env = dict(os.environ, WSISEG_TRUST_CODE="1")
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{slide}: {done.stderr.strip()}")
        wall, rss_kb = timing.read().split()[-2:]
    return {"seconds": float(wall), "peak_rss_mb": round(int(rss_kb) / 1024)}


def labels(result: Path) -> np.ndarray:
    from wsiseg.result.store import open_result

    array, _ = open_result(result)
    return np.asarray(array[...])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=3)
    args = ap.parse_args()
    folder = OUT / "formats"
    paths = write_all(folder, args.tiles)
    model = colour_model()
    server, served = serve(folder)
    runs = {name: str(path) for name, path in paths.items()}
    runs["svs at a URL (http)"] = f"http://127.0.0.1:{server.server_address[1]}/slide.svs"
    reference = lossless = None
    rows = []
    for name, slide in runs.items():
        out = folder / "maps" / (name.replace(" ", "_").replace("(", "").replace(")", "")
                                 + ".wsiseg.zarr")
        out.parent.mkdir(exist_ok=True)
        served.clear()
        t = time.perf_counter()
        row = {"format": name, "compression": COMPRESSION[name], **run(slide, out, model)}
        row["measured_s"] = round(time.perf_counter() - t, 1)
        got = labels(out)
        reference = got if reference is None else reference
        row["map"] = f"{got.shape[1]} x {got.shape[0]}"
        row["same_as_svs"] = (round(float(np.mean(got == reference)), 4)
                              if got.shape == reference.shape else "different shape")
        if name == "generic-tiff":
            lossless = got
        if name != "svs":
            row["same_as_lossless"] = round(float(np.mean(got == lossless)), 4)
        if slide.startswith("http"):
            row["bytes_fetched_mb"] = round(sum(served) / 1e6, 2)
            row["file_mb"] = round(paths["svs"].stat().st_size / 1e6, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    server.shutdown()
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
