"""Scores of the artefact detectors against painted artefacts with known truth.

    python benchmarks/bench_qc.py [--seeds 3] [--glas 12]

Builds the truth set on real tissue (``../shared/data``): CMU-1-Small-Region (0.5 um/px) and
``--glas`` GlaS testA images laid on glass (0.62 um/px), and TCGA-CR-7395 at an assumed
0.5 um/px for folds and clean tissue. Pen strokes of each ink and folds are painted on the
tissue picture (CMU and TCGA at 4 um/px, GlaS at 1.86 um/px), defocus (pillboxes of
``--radii`` pixels over a smooth region) on the analysis picture (about 1 um/px; GlaS at its
own 0.62). Prints per-artefact IoU against the truth (min-max over ``--seeds`` seeds), the
pen's IoU over glass and over tissue apart (and the share of the tissue the strokes cover), the share of tissue flagged on the clean slides, and the time per
megapixel. Results also go to ``bench-out/qc.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from wsiseg.slide import artefacts as qc
from wsiseg.slide.svs_writer import area_downsample
from wsiseg.slide.tissue import tissue_mask
from wsiseg.testing import artefacts as paint

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench-out"
#: Fold widths (um) painted on each picture: a fraction of its tissue's extent.
FOLD_WIDTHS = {"cmu": (200.0, 400.0), "tcga": (300.0, 800.0), "glas": (150.0, 300.0)}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


def pictures(glas_count: int) -> dict[str, tuple[np.ndarray, float, np.ndarray, float]]:
    """name: (tissue picture, its um/px, analysis picture, its um/px)."""
    slides = DATA / "slides"
    cmu_full, cmu_mpp = paint.read_slide_picture(slides / "CMU-1-Small-Region.svs", 0.5)
    tcga_full, tcga_mpp = paint.read_slide_picture(slides / "TCGA-CR-7395-01A-01-TS1.svs", 0.5,
                                                   slide_mpp=0.5)
    paths = sorted(p for p in (DATA / "glas" / "testA").glob("testA_*.jpg"))[:glas_count]
    glas = paint.glas_on_glass(paths, columns=4)
    return {
        "cmu": (area_downsample(cmu_full, 8), cmu_mpp * 8, area_downsample(cmu_full, 2),
                cmu_mpp * 2),
        "tcga": (area_downsample(tcga_full, 8), tcga_mpp * 8, area_downsample(tcga_full, 2),
                 tcga_mpp * 2),
        "glas": (area_downsample(glas, 3), 0.62 * 3, glas, 0.62),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--glas", type=int, default=12, help="GlaS testA images laid on glass")
    ap.add_argument("--radii", type=float, nargs="+", default=[1.5, 3.0])
    args = ap.parse_args()
    pics = pictures(args.glas)
    rows: dict[str, dict[str, str]] = {}
    timing: dict[str, float] = {}

    for name, (rgb, mpp, band, band_mpp) in pics.items():
        tissue = tissue_mask(rgb, mpp)
        row = rows.setdefault(name, {})
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

        if name != "tcga":
            for ink in paint.INKS:
                ious, on_glass, on_tissue, covered = [], [], [], []
                for seed in range(args.seeds):
                    inked, truth = paint.add_pen(rgb, mpp, ink, seed)
                    pen = qc.pen_mask(inked, mpp, tissue_mask(inked, mpp))
                    ious.append(_iou(pen, truth))
                    # Apart: over glass the colour decides, over tissue the stain plane.
                    on_glass.append(_iou(pen & ~tissue, truth & ~tissue))
                    on_tissue.append(_iou(pen & tissue, truth & tissue))
                    covered.append(float(truth[tissue].mean()))
                row[f"pen {ink} IoU"] = _span(ious)
                row[f"pen {ink} IoU on glass"] = _span(on_glass)
                row[f"pen {ink} IoU on tissue"] = _span(on_tissue)
                row["pen share of tissue inked"] = _span(covered)
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
        ious = []
        seed = 0
        while len(ious) < args.seeds and seed < 10 * args.seeds:
            folded, truth = paint.add_fold(rgb, tissue, mpp, seed, FOLD_WIDTHS[name])
            seed += 1
            if truth.sum() < 0.03 * tissue.sum():  # the flap fell mostly on glass
                continue
            ious.append(_iou(qc.fold_mask(folded, tissue_mask(folded, mpp), mpp), truth))
        row["fold IoU"] = _span(ious)

    keys = sorted({k for r in rows.values() for k in r}, key=lambda k: (k.split()[0], k))
    print(f"{'':28s}" + "".join(f"{n:>12s}" for n in rows))
    for key in keys:
        print(f"{key:28s}" + "".join(f"{rows[n].get(key, ''):>12s}" for n in rows))
    for key, value in timing.items():
        print(f"{key:28s}{value:12.3f} s/Mpx")
    OUT.mkdir(exist_ok=True)
    (OUT / "qc.json").write_text(json.dumps({"scores": rows, "s_per_mpx": timing}, indent=1))


if __name__ == "__main__":
    main()
