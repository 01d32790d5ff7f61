"""Per-class numbers of a result: area in mm^2, share of the tissue, number of regions.

The labels are read in bands of chunk rows, never whole. Regions are the ones the GeoJSON export
writes as annotations: 4-connected pixels of one class (pixels that touch only at a corner are
separate regions, as a valid polygon cannot pinch to a point), of at least ``min_area_um2``.
Each band is labelled on its own and the pieces that touch across band edges are joined with
one connected-components pass over the graph of touching pieces.

``STEM.report.json`` is for programs: exact numbers, the run's settings and time once. The CSV
is for people: one row per class with unit and frame in the column names (``area_mm2``,
``share_of_tissue_percent``, ``map_pixels`` at ``map_mpp`` um/px), areas to 4 decimals and
percents to 0.01, a ``total tissue`` row, a ``damaged (not read)`` row when parts of the slide
could not be read, and last a ``# intended use`` line from the model card.

A result with an uncertainty array also gets each class's mean ``confidence`` (1 - uncertainty
/ 255 over the class's pixels) and the ``low_confidence_share`` of the tissue: the share of its
pixels whose uncertainty is above :data:`LOW_CONFIDENCE_UNCERTAINTY`, and the CSV a last
column, ``confidence``. A result without one gets neither key nor column: no number stands for
what was not measured.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from wsiseg.atomic import atomic_write
from wsiseg.cells import csv_text
from wsiseg.errors import ConfigError, ResultError
from wsiseg.result.reading import REDO, reads_result
from wsiseg.result.review import (
    DEFAULT_RULES,
    LOW_CONFIDENCE_UNCERTAINTY,
    LabelMap,
    ReviewRules,
    artefact_pixels,
    band_rows,
    class_uncertainty,
    review_reasons,
)
from wsiseg.result.store import open_result, open_result_group, qc_array, uncertainty_array

# The array-level figures and the review rules live with the result (it records its review
# reasons when published); they stay importable from here.
__all__ = [
    "CONFIDENCE_COLUMN", "CSV_COLUMNS", "DAMAGED_ROW", "LOW_CONFIDENCE_UNCERTAINTY",
    "REGIONS_RULE", "TOTAL_ROW", "LabelMap", "ReviewRules", "artefact_pixels", "build_report",
    "check_min_area", "class_statistics", "class_uncertainty", "intended_use", "region_sizes",
    "review_reasons", "write_report",
]

_STRUCTURES = {4: ndimage.generate_binary_structure(2, 1), 8: np.ones((3, 3), dtype=bool)}
#: The ``class`` of the CSV row (only present when there were some) that gives the area and the
#: number of regions of the slide that could not be decoded.
DAMAGED_ROW = "damaged (not read)"
#: The ``class`` of the CSV row with the whole tissue (all classes but background).
TOTAL_ROW = "total tissue"
#: How the report counts regions, as its JSON says.
REGIONS_RULE = ("4-connected pixels of one class (touching only at a corner: separate regions) "
                "of at least min_area_um2, the annotations the geojson export writes with the "
                "same --min-area; the total tissue row sums the classes")
_USE_WORDS = re.compile(r"\b(use|research|diagnos\w*|clinical|demonstration)\b", re.IGNORECASE)


def intended_use(card: Mapping[str, Any]) -> str:
    """The model card's statement of what the model is for, as one line.

    The parts of the card's ``description`` (its first clause before a colon, and its sentences)
    that speak of use, research, diagnosis or demonstration; a card that says none of that gets
    a line saying so, so that a reader is never left to assume.
    """
    description = " ".join(str(card.get("description") or "").split())
    parts = re.split(r"(?<=[.!?])\s+", description)
    if parts and ":" in parts[0]:
        parts = [parts[0].split(":", 1)[0].strip() + "."] + parts[1:]
    kept = [p if p.endswith((".", "!", "?")) else p + "." for p in parts if _USE_WORDS.search(p)]
    if not kept:
        return "intended use not stated by the model card"
    return " ".join(kept)


def class_statistics(labels: LabelMap, num_classes: int, connectivity: int = 4
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(pixel count per class, number of connected regions per class) of a 2-D label array.

    ``labels`` may be a zarr array; it is read one band of chunk rows at a time.
    """
    counts, sizes = region_sizes(labels, num_classes, connectivity)
    return counts, np.array([len(s) for s in sizes], dtype=np.int64)


def region_sizes(labels: LabelMap, num_classes: int, connectivity: int = 4
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(pixel count per class, pixel count of each connected region, per class).

    ``connectivity`` is 4 (edge neighbours, the GeoJSON export's regions) or 8 (corners too).
    """
    structure = _STRUCTURES[connectivity]
    shifts = (0,) if connectivity == 4 else (-1, 0, 1)  # diagonal neighbours touch with 8
    height, width = labels.shape
    counts = np.zeros(num_classes, dtype=np.int64)
    pieces = np.zeros(num_classes, dtype=np.int64)  # labels given so far, per class
    piece_pixels: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    edges: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    previous: list[np.ndarray | None] = [None] * num_classes
    step = band_rows(labels)
    for y0 in range(0, height, step):
        band = np.asarray(labels[y0:min(height, y0 + step)])
        counts += np.bincount(band.ravel(), minlength=num_classes)[:num_classes]
        for c in range(num_classes):
            found, n = ndimage.label(band == c, structure=structure)
            piece_pixels[c].append(np.bincount(found.ravel(), minlength=n + 1)[1:])
            found = np.where(found > 0, found + pieces[c], 0)
            above = previous[c]
            if above is not None:
                first = found[0]
                for shift in shifts:
                    a = above[max(0, shift):width + min(0, shift)]
                    b = first[max(0, -shift):width + min(0, -shift)]
                    touching = (a > 0) & (b > 0)
                    if touching.any():
                        edges[c].append(np.stack([a[touching], b[touching]]))
            pieces[c] += n
            previous[c] = found[-1].copy()
    sizes: list[np.ndarray] = []
    for c in range(num_classes):
        n = int(pieces[c])
        pixels = (np.concatenate(piece_pixels[c]) if piece_pixels[c]
                  else np.zeros(0, dtype=np.int64))
        if n and edges[c]:
            pairs = np.concatenate(edges[c], axis=1) - 1
            graph = sparse.coo_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), shape=(n, n))
            region = csgraph.connected_components(graph, directed=False)[1]
            pixels = np.bincount(region, weights=pixels).astype(np.int64)
        sizes.append(pixels)
    return counts, sizes


def check_min_area(min_area_um2: float) -> None:
    """Refuse a minimum region area that is not a finite number of 0 or more um^2."""
    if not 0 <= min_area_um2 < math.inf:
        raise ConfigError(f"minimum area must be a finite number of 0 or more um^2, got "
                          f"{min_area_um2}")


@reads_result
def build_report(result: str | os.PathLike[str], min_area_um2: float = 0.0,
                 review: ReviewRules = DEFAULT_RULES) -> dict[str, Any]:
    """The report of a result: per-class rows, the total tissue, slide, model, settings, time.

    Regions smaller than ``min_area_um2`` are not counted (their pixels still are, in areas).
    """
    check_min_area(min_area_um2)
    labels, info = open_result(result)
    counts, sizes = region_sizes(labels, len(info.classes))
    mpp_x, mpp_y = (float(v) for v in info.analysis_mpp)
    pixel_mm2 = mpp_x * mpp_y / 1e6
    # A region's area as the GeoJSON export measures it, so both keep the same regions.
    sx, sy = (float(v) for v in info.scale_to_level0)
    region_um2 = sx * sy * float(info.slide.mpp[0]) * float(info.slide.mpp[1])
    regions = [int((s * region_um2 >= min_area_um2).sum()) for s in sizes]
    tissue = int(counts[1:].sum())
    confidence: dict[str, Any] = {}
    uncertainty = uncertainty_array(open_result_group(result), info)
    if uncertainty is not None:
        n, sums, above = class_uncertainty(labels, uncertainty, len(info.classes))
        # Mean of 1 - u / 255 over a class's pixels; a class without pixels has none.
        by_class = {c.name: (None if n[c.index] == 0
                             else float(1 - sums[c.index] / (255 * n[c.index])))
                    for c in info.classes}
        tissue_sum = int(sums[1:].sum())
        confidence = {
            "confidence": by_class,
            "tissue_confidence": float(1 - tissue_sum / (255 * tissue)) if tissue else None,
            "low_confidence_share": float(above[1:].sum() / tissue) if tissue else None,
            "low_confidence_uncertainty": LOW_CONFIDENCE_UNCERTAINTY,
            "uncertainty_measure": info.uncertainty,
        }
    qc_fields: dict[str, Any] = {}
    qc = qc_array(open_result_group(result), info)
    if qc is not None:
        from wsiseg.slide.artefacts import QC_NAMES

        qx, qy = (float(v) for v in info.tissue.mpp)
        qc_counts, on_artefacts = artefact_pixels(labels, qc, info.tissue.factor)
        qc_fields = {
            "qc_mode": info.qc,
            # Each artefact's area on the slide's picture (ink over glass too), in mm^2.
            "qc": {name: float(qc_counts[v] * qx * qy / 1e6)
                   for v, name in QC_NAMES.items() if v},
            # Tissue of the map that lies on no artefact: what the shares can be trusted over.
            "analysable_tissue_mm2": float((tissue - on_artefacts) * pixel_mm2),
        }
    rows = []
    for c in info.classes:
        i = c.index
        background = i == 0
        rows.append({
            "index": i, "name": c.name, "map_pixels": int(counts[i]),
            "area_mm2": float(counts[i] * pixel_mm2),
            "share_of_tissue_percent": (None if background or tissue == 0
                                        else float(100 * counts[i] / tissue)),
            "regions": None if background else regions[i],
        })
    report: dict[str, Any] = {
        "result": str(result),
        "slide": str(info.slide.path),
        "slide_name": Path(str(info.slide.path)).name,
        "slide_reader": info.slide.reader or None,  # None: not recorded (older results)
        "model": info.model.name,
        "intended_use": intended_use(info.model.card),
        "model_description": str(info.model.card.get("description") or ""),
        "weights_sha256": info.model.weights_sha256,
        "wsiseg_version": info.version,
        "analysis_mpp": [mpp_x, mpp_y],  # um/px of the map: the frame of map_pixels
        "pixel_area_mm2": pixel_mm2,
        "settings": {"patch_size": info.patch_size, "stride": info.stride, "sigma": info.sigma,
                     "tissue_threshold": info.tissue_threshold, "tta": info.tta,
                     # What ran the network (as set, for a result that did not record it).
                     "device": info.device or info.config.get("device"),
                     "precision": info.precision, "batch_size": info.batch_size},
        "seconds": info.seconds,  # the prediction's run time
        "min_area_um2": min_area_um2,
        "regions_rule": REGIONS_RULE,
        "tissue_map_pixels": tissue,
        "tissue_area_mm2": float(tissue * pixel_mm2),
        "tissue_regions": sum(r["regions"] for r in rows if r["regions"] is not None),
        # Parts of the slide that could not be decoded and were not predicted (--skip-damaged).
        "damaged_regions": info.damaged_count,
        "damaged_area_mm2": info.damaged_area_mm2,
        "classes": rows,
        **confidence,
        **qc_fields,
    }
    # Why the slide is to be looked at before its numbers are used (empty: no reason found).
    report["review"] = review_reasons(report, info.warnings, review)
    return report


CSV_COLUMNS = ["slide", "model", "class", "area_mm2", "share_of_tissue_percent", "regions",
               "map_pixels", "map_mpp"]
#: The CSV's last column for a result with an uncertainty array: mean confidence per row.
CONFIDENCE_COLUMN = "confidence"


def write_report(result: str | os.PathLike[str], out_dir: str | os.PathLike[str], stem: str,
                 min_area_um2: float = 0.0, review: ReviewRules = DEFAULT_RULES) -> list[Path]:
    """Write ``STEM.report.json`` and ``STEM.report.csv`` (one row per class) into ``out_dir``."""
    report = build_report(result, min_area_um2, review)
    out_dir = Path(out_dir)
    json_path = out_dir / f"{stem}.report.json"
    csv_path = out_dir / f"{stem}.report.csv"
    try:  # every number of a result is finite (open_result); a last guard all the same
        text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    except ValueError as err:
        raise ResultError(f"the report of {result} would hold a number that is not finite "
                          f"({err}); the result was edited or damaged since wsiseg predict "
                          f"wrote it; {REDO}") from err
    with atomic_write(json_path) as f:
        f.write(text)
    mpp_x, mpp_y = report["analysis_mpp"]
    map_mpp = f"{mpp_x:g}" if mpp_x == mpp_y else f"{mpp_x:g} x {mpp_y:g}"
    with atomic_write(csv_path, newline="") as f:
        writer = csv.writer(f)
        confidence = report.get("confidence")
        writer.writerow(CSV_COLUMNS + ([CONFIDENCE_COLUMN] if confidence is not None else []))

        def row(name: str, area_mm2: float, percent: float | None, regions: int | None,
                pixels: int | None, mean_confidence: float | None = None) -> None:
            # Names come from the result (slide, model, classes): text a spreadsheet never runs.
            cells = [csv_text(report["slide"]), csv_text(report["model"]),
                     csv_text(name), f"{area_mm2:.4f}",
                     "" if percent is None else f"{percent:.2f}",
                     "" if regions is None else regions,
                     "" if pixels is None else pixels,
                     "" if pixels is None else map_mpp]
            if "confidence" in report:
                cells.append("" if mean_confidence is None else f"{mean_confidence:.4f}")
            writer.writerow(cells)

        for r in report["classes"]:
            row(r["name"], r["area_mm2"], r["share_of_tissue_percent"], r["regions"],
                r["map_pixels"], (confidence or {}).get(r["name"]))
        row(TOTAL_ROW, report["tissue_area_mm2"], 100.0 if report["tissue_map_pixels"] else None,
            report["tissue_regions"], report["tissue_map_pixels"],
            report.get("tissue_confidence"))
        if report["damaged_regions"]:  # one more row: what could not be read, not a class
            row(DAMAGED_ROW, report["damaged_area_mm2"], None, report["damaged_regions"], None)
        for reason in report["review"]:  # comment lines too: not rows of numbers
            writer.writerow(["# review", csv_text(reason)])
        # Last, a comment line (pandas: comment="#"): what the model may be used for.
        writer.writerow(["# intended use", csv_text(report["intended_use"])])
    return [json_path, csv_path]
