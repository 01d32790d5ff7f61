"""Per-class numbers of a result: area in mm^2, share of the tissue, number of regions.

The labels are read in bands of chunk rows, never whole. Regions are 8-connected pixels of one
class: each band is labelled on its own and the pieces that touch across band edges are joined
with one connected-components pass over the graph of touching pieces.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from wsiseg.atomic import atomic_write
from wsiseg.result.store import open_result, reads_result

_EIGHT = np.ones((3, 3), dtype=bool)
#: The ``class`` of the CSV row (only present when there were some) that gives the area and the
#: number of regions of the slide that could not be decoded.
DAMAGED_ROW = "damaged (not read)"


def _band_rows(labels: Any) -> int:
    chunks = getattr(labels, "chunks", None)
    return int(chunks[0]) if chunks else 512


def class_statistics(labels: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixel count per class, number of 8-connected regions per class) of a 2-D label array.

    ``labels`` may be a zarr array; it is read one band of chunk rows at a time.
    """
    height, width = labels.shape
    counts = np.zeros(num_classes, dtype=np.int64)
    pieces = np.zeros(num_classes, dtype=np.int64)  # labels given so far, per class
    edges: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    previous: list[np.ndarray | None] = [None] * num_classes
    step = _band_rows(labels)
    for y0 in range(0, height, step):
        band = np.asarray(labels[y0:min(height, y0 + step)])
        counts += np.bincount(band.ravel(), minlength=num_classes)[:num_classes]
        for c in range(num_classes):
            found, n = ndimage.label(band == c, structure=_EIGHT)
            found = np.where(found > 0, found + pieces[c], 0)
            above = previous[c]
            if above is not None:
                first = found[0]
                for shift in (-1, 0, 1):  # diagonal neighbours touch too
                    a = above[max(0, shift):width + min(0, shift)]
                    b = first[max(0, -shift):width + min(0, -shift)]
                    touching = (a > 0) & (b > 0)
                    if touching.any():
                        edges[c].append(np.stack([a[touching], b[touching]]))
            pieces[c] += n
            previous[c] = found[-1].copy()
    regions = np.zeros(num_classes, dtype=np.int64)
    for c in range(num_classes):
        n = int(pieces[c])
        if n == 0:
            continue
        if edges[c]:
            pairs = np.concatenate(edges[c], axis=1) - 1
            graph = sparse.coo_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), shape=(n, n))
            regions[c] = csgraph.connected_components(graph, directed=False)[0]
        else:
            regions[c] = n
    return counts, regions


@reads_result
def build_report(result: str | os.PathLike) -> dict[str, Any]:
    """The report of a result: per-class rows plus slide, model, settings and run time."""
    labels, info = open_result(result)
    counts, regions = class_statistics(labels, len(info.classes))
    mpp_x, mpp_y = info.analysis_mpp
    pixel_mm2 = mpp_x * mpp_y / 1e6
    tissue = int(counts[1:].sum())
    rows = []
    for c in info.classes:
        i = c.index
        background = i == 0
        rows.append({
            "index": i, "name": c.name, "pixels": int(counts[i]),
            "area_mm2": float(counts[i] * pixel_mm2),
            "share_of_tissue": None if background or tissue == 0 else float(counts[i] / tissue),
            "regions": None if background else int(regions[i]),
        })
    return {
        "result": str(result),
        "slide": str(info.slide.path),
        "model": info.model.name,
        "weights_sha256": info.model.weights_sha256,
        "wsiseg_version": info.version,
        "analysis_mpp": [mpp_x, mpp_y],
        "pixel_area_mm2": pixel_mm2,
        "settings": {"patch_size": info.patch_size, "stride": info.stride, "sigma": info.sigma,
                     "tissue_threshold": info.tissue_threshold,
                     "device": info.config.get("device")},
        "seconds": info.seconds,
        "tissue_area_mm2": float(tissue * pixel_mm2),
        # Parts of the slide that could not be decoded and were not predicted (--skip-damaged).
        "damaged_regions": info.damaged_count,
        "damaged_area_mm2": info.damaged_area_mm2,
        "classes": rows,
    }


def write_report(result: str | os.PathLike, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """Write ``STEM.report.json`` and ``STEM.report.csv`` (one row per class) into ``out_dir``."""
    report = build_report(result)
    out_dir = Path(out_dir)
    json_path = out_dir / f"{stem}.report.json"
    csv_path = out_dir / f"{stem}.report.csv"
    with atomic_write(json_path) as f:
        f.write(json.dumps(report, indent=2) + "\n")
    with atomic_write(csv_path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["slide", "model", "class", "area_mm2", "share_of_tissue", "regions",
                         "pixels", "seconds"])
        for row in report["classes"]:
            share = "" if row["share_of_tissue"] is None else f"{row['share_of_tissue']:.6f}"
            writer.writerow([report["slide"], report["model"], row["name"],
                             f"{row['area_mm2']:.6f}", share,
                             "" if row["regions"] is None else row["regions"], row["pixels"],
                             report["seconds"]])
        if report["damaged_regions"]:  # one more row: what could not be read, not a class
            writer.writerow([report["slide"], report["model"], DAMAGED_ROW,
                             f"{report['damaged_area_mm2']:.6f}", "", report["damaged_regions"],
                             "", report["seconds"]])
    return [json_path, csv_path]
