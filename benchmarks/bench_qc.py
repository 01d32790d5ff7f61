"""Scores of the artefact detectors against painted artefacts with known truth.

    python benchmarks/bench_qc.py [--seeds 3] [--glas 12] [--picture-mpp 10]

Builds the truth set on real tissue (``../shared/data``): CMU-1-Small-Region (0.5 um/px),
TCGA-CR-7395 at an assumed 0.5 um/px and ``--glas`` GlaS testA images laid on glass
(0.62 um/px). Pen and folds are scored on the tissue picture ``wsiseg predict`` runs them on:
by default that of the default settings (patch 400, stride 100 at 1 um/px:
:func:`~wsiseg.slide.tissue.mask_factor` 10, so 10 um/px; GlaS 9.92), or about
``--picture-mpp``. The artefacts are painted on a finer picture (about 2 um/px, an integer
divisor of the tissue picture's factor) and that is area-averaged to the tissue picture, as the
pipeline makes it; the truth is the tissue picture's pixels at least half inside the painted
truth. Painted: marker marks of each ink (rings, ticks, arrows and dots, on the picture laid on
``--margin-um`` of glass, inking at most 20% of the tissue), the heavy-ink stress case (long
strokes across CMU and GlaS, inking most of their tissue) and folds (a strip at a piece's edge
turned over onto its neighbour); on the analysis picture (about 1 um/px; GlaS at its own 0.62)
defocus (pillboxes of ``--radii`` pixels over a smooth region). Prints per-artefact IoU against
the truth (min-max over ``--seeds`` seeds), the pen's IoU over glass and over tissue apart and
the share of the tissue inked, the median OD ratio inside the fold truth, the share of tissue
flagged on the clean slides, and the time per megapixel. Results also go to
``bench-out/qc.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from wsiseg.slide import artefacts as qc
from wsiseg.slide.svs_writer import area_downsample
from wsiseg.slide.tissue import mask_factor, tissue_mask
from wsiseg.testing import artefacts as paint

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench-out"
#: Fold widths (um) painted on each picture: a fraction of its tissue's extent.
FOLD_WIDTHS = {"cmu": (200.0, 400.0), "tcga": (300.0, 800.0), "glas": (150.0, 300.0)}
#: Pictures the heavy-ink stress case is painted on (its tissue is 1-2 mm across).
HEAVY_INK = ("cmu", "glas")
#: The default settings' windows (patch, stride) and analysis resolution: the tissue picture
#: is :func:`~wsiseg.slide.tissue.mask_factor` analysis pixels a side.
PATCH, STRIDE, ANALYSIS_MPP = 400, 100, 1.0
#: The finest resolution (um/px) the artefacts are painted at before area averaging.
PAINT_MPP = 2.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


def _pen_scores(seeds: int, tissue: np.ndarray, mpp: float,
                paint_seed: Callable[[int], tuple[np.ndarray, np.ndarray]]
                ) -> dict[str, list[float]]:
    """IoU of the pen found against the truth painted by ``paint_seed(seed)``: in all, over the
    glass and over the tissue of the unpainted picture apart (over glass the colour decides,
    over tissue the stain plane), and the share of the tissue inked."""
    out: dict[str, list[float]] = {"": [], " on glass": [], " on tissue": [], " share": []}
    for seed in range(seeds):
        inked, truth = paint_seed(seed)
        pen = qc.pen_mask(inked, mpp, tissue_mask(inked, mpp))
        out[""].append(_iou(pen, truth))
        out[" on glass"].append(_iou(pen & ~tissue, truth & ~tissue))
        out[" on tissue"].append(_iou(pen & tissue, truth & tissue))
        out[" share"].append(float(truth[tissue].mean()))
    return out


def _coarse(k: int, add: Callable[..., tuple[np.ndarray, np.ndarray]], *args: object
            ) -> tuple[np.ndarray, np.ndarray]:
    """``add(*args)`` (a painted picture and its truth, the seed last) coarsened by ``k``."""
    return paint.coarsen(*add(*args), k)


def _put(row: dict[str, str], label: str, case: str, scores: dict[str, list[float]]) -> None:
    for what, values in scores.items():
        key = f"{case} share of tissue inked" if what == " share" else f"{label} IoU{what}"
        row[key] = _span(values)


def pipeline_mpp() -> float:
    """The tissue picture's um/px under the default settings."""
    return mask_factor(PATCH, STRIDE, ANALYSIS_MPP) * ANALYSIS_MPP


def factors(picture_mpp: float, own_mpp: float) -> tuple[int, int]:
    """(paint, coarsen): the slide's pixels a side of the painted picture (the largest divisor
    of the whole factor with at most :data:`PAINT_MPP`), and the painted picture's of the
    tissue picture."""
    whole = max(1, round(picture_mpp / own_mpp))
    paint_factor = max(d for d in range(1, whole + 1)
                       if whole % d == 0 and (d == 1 or d * own_mpp <= PAINT_MPP))
    return paint_factor, whole // paint_factor


def pictures(glas_count: int, picture_mpp: float
             ) -> dict[str, tuple[np.ndarray, float, int, np.ndarray, float]]:
    """name: (painting picture, its um/px, its pixels a side of a tissue-picture pixel,
    analysis picture, its um/px)."""
    slides = DATA / "slides"
    cmu_full, cmu_mpp = paint.read_slide_picture(slides / "CMU-1-Small-Region.svs", 0.5)
    tcga_full, tcga_mpp = paint.read_slide_picture(slides / "TCGA-CR-7395-01A-01-TS1.svs", 0.5,
                                                   slide_mpp=0.5)
    paths = sorted(p for p in (DATA / "glas" / "testA").glob("testA_*.jpg"))[:glas_count]
    glas = paint.glas_on_glass(paths, columns=4)
    out = {}
    for name, full, own, band, band_mpp in (
            ("cmu", cmu_full, cmu_mpp, area_downsample(cmu_full, 2), cmu_mpp * 2),
            ("tcga", tcga_full, tcga_mpp, area_downsample(tcga_full, 2), tcga_mpp * 2),
            ("glas", glas, 0.62, glas, 0.62)):
        p, c = factors(picture_mpp, own)
        out[name] = (area_downsample(full, p), own * p, c, band, band_mpp)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--glas", type=int, default=12, help="GlaS testA images laid on glass")
    ap.add_argument("--radii", type=float, nargs="+", default=[1.5, 3.0])
    ap.add_argument("--margin-um", type=float, default=800.0,
                    help="glass laid around each picture for the marks")
    ap.add_argument("--picture-mpp", type=float, default=pipeline_mpp(),
                    help="um/px of the tissue picture pen and folds are scored on "
                         "(default: the pipeline's, %(default)g)")
    args = ap.parse_args()
    pics = pictures(args.glas, args.picture_mpp)
    rows: dict[str, dict[str, str]] = {}
    timing: dict[str, float] = {}

    for name, (fine, fine_mpp, k, band, band_mpp) in pics.items():
        rgb, mpp = area_downsample(fine, k), fine_mpp * k
        tissue = tissue_mask(rgb, mpp)
        fine_tissue = tissue_mask(fine, fine_mpp)
        row = rows.setdefault(name, {})
        row["picture um/px"] = f"{mpp:.2f}"
        start = time.perf_counter()
        labels = qc.detect_artefacts(rgb, tissue, mpp)
        timing[f"pen+fold {name}"] = (time.perf_counter() - start) / (rgb.size / 3e6)
        for value in (qc.QC_PEN, qc.QC_FOLD):
            row[f"clean {qc.QC_NAMES[value]}"] = (
                f"{np.count_nonzero(labels[tissue] == value) / tissue.sum():.4f}")
        # Focus on the clean slide, on the analysis picture's own blocks.
        factor = round(mpp / band_mpp)
        cell = qc.focus_cell(factor, band_mpp)
        on_blocks = qc.block_fractions(tissue, cell)
        start = time.perf_counter()
        scores = qc.focus_scores(band, cell * factor)
        timing[f"focus {name}"] = (time.perf_counter() - start) / (band.size / 3e6)
        sharp = qc.blur_mask(scores, on_blocks)
        sharp = qc.expand_blocks(sharp, cell, tissue.shape) & tissue
        row["clean out of focus"] = f"{sharp.sum() / tissue.sum():.4f}"
        row["focus blocks"] = str(int(((on_blocks >= qc.BLUR_MIN_TISSUE)
                                       & np.isfinite(scores)).sum()))

        margin = k * round(args.margin_um / mpp)
        fine_marked, fine_marked_tissue = paint.on_glass(fine, fine_tissue, margin)
        marked = area_downsample(fine_marked, k)
        marked_tissue = tissue_mask(marked, mpp)
        clean = qc.pen_mask(marked, mpp, marked_tissue)
        row["clean pen, glass around"] = f"{clean[marked_tissue].mean():.4f}"

        for ink in paint.INKS:
            _put(row, f"pen {ink}", "pen", _pen_scores(
                args.seeds, marked_tissue, mpp, partial(
                    _coarse, k, paint.add_pen_marks, fine_marked, fine_marked_tissue, fine_mpp,
                    ink)))
            if name in HEAVY_INK:
                _put(row, f"heavy ink {ink}", "heavy ink", _pen_scores(
                    args.seeds, tissue, mpp, partial(_coarse, k, paint.add_pen, fine, fine_mpp,
                                                     ink)))
        if name != "tcga":
            for radius in args.radii:
                ious = []
                for seed in range(args.seeds):
                    region = paint.blob_region(band.shape[:2], seed, fraction=0.3)
                    blurred = paint.add_blur(band, radius, region)
                    block = cell * factor
                    truth = (paint.block_truth(region, block)
                             & (on_blocks >= qc.BLUR_MIN_TISSUE))
                    found = qc.blur_mask(qc.focus_scores(blurred, block), on_blocks)
                    ious.append(_iou(found, truth))
                row[f"blur r={radius:g} IoU"] = _span(ious)
        ious, ratios = [], []
        seed = 0
        total = qc.optical_density(rgb, qc.glass_rgb(rgb)).sum(axis=-1)
        while len(ious) < args.seeds and seed < 10 * args.seeds:
            folded, truth = paint.coarsen(*paint.add_fold(fine, fine_tissue, fine_mpp, seed,
                                                          FOLD_WIDTHS[name]), k)
            seed += 1
            if truth.sum() < 0.03 * tissue.sum():  # little of the strip landed on tissue
                continue
            ious.append(_iou(qc.fold_mask(folded, tissue_mask(folded, mpp), mpp), truth))
            after = qc.optical_density(folded, qc.glass_rgb(rgb)).sum(axis=-1)
            ratios.append(float(np.median(after[truth] / np.maximum(total[truth], 1e-3))))
        row["fold IoU"] = _span(ious)
        row["fold OD ratio in truth"] = _span(ratios)

    keys = sorted({k for r in rows.values() for k in r}, key=lambda k: (k.split()[0], k))
    print(f"{'':34s}" + "".join(f"{n:>12s}" for n in rows))
    for key in keys:
        print(f"{key:34s}" + "".join(f"{rows[n].get(key, ''):>12s}" for n in rows))
    for key, seconds in timing.items():
        print(f"{key:34s}{seconds:12.3f} s/Mpx")
    OUT.mkdir(exist_ok=True)
    (OUT / "qc.json").write_text(json.dumps({"scores": rows, "s_per_mpx": timing}, indent=1))


if __name__ == "__main__":
    main()
