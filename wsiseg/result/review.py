"""Whether a slide is to be looked at before its numbers are used: the review reasons of a result.

A result records the reasons under the default :class:`ReviewRules` when it is published
(:meth:`wsiseg.result.writer.OutputWriter.publish`, the ``review`` of its ``wsiseg``
attribute); the report export finds them again under the thresholds of its own options
(:func:`wsiseg.export.report.build_report`). Both take their numbers from here, so the same
rules give the same reasons.

The figures are array-level and read the map a band of chunk rows at a time, never whole:
how many map pixels are tissue (any class but background), how many of those are of low
confidence (uncertainty above :data:`LOW_CONFIDENCE_UNCERTAINTY`) and how many lie on an
artefact (``labels/qc``, ``factor`` times coarser than the map). :func:`tissue_counts` gets all
three in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from wsiseg.errors import ResultError, WsisegError
from wsiseg.result.info import ResultInfo
from wsiseg.result.store import open_result_group

#: Normalised uncertainty (0 certain, 1 uniform) above which a tissue pixel counts as of low
#: confidence in ``low_confidence_share``.
LOW_CONFIDENCE_UNCERTAINTY = 0.5
#: Rows read at a time from a map without chunks (a numpy array).
BAND_ROWS = 512


class LabelMap(Protocol):
    """A 2-D map of class indices read a band of rows at a time: a numpy array, or a zarr
    array (whose ``chunks``, when it has them, set the band height)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: slice, /) -> npt.ArrayLike: ...


def band_rows(labels: LabelMap) -> int:
    """Rows of ``labels`` to read at a time: one row of its chunks."""
    chunks = getattr(labels, "chunks", None)
    return int(chunks[0]) if chunks else BAND_ROWS


def class_uncertainty(labels: LabelMap, uncertainty: LabelMap, num_classes: int,
                      threshold: float = LOW_CONFIDENCE_UNCERTAINTY
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixel count, sum of uint8 uncertainty, pixels whose uncertainty / 255 is above
    ``threshold``) per class, of a label map and its uncertainty of the same shape, read a band
    of chunk rows at a time."""
    if tuple(labels.shape) != tuple(uncertainty.shape):
        raise ValueError(f"labels {labels.shape} and uncertainty {uncertainty.shape} differ")
    height = labels.shape[0]
    counts = np.zeros(num_classes, dtype=np.int64)
    sums = np.zeros(num_classes, dtype=np.int64)
    above = np.zeros(num_classes, dtype=np.int64)
    step = band_rows(labels)
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        band = np.asarray(labels[y0:y1]).ravel()
        u = np.asarray(uncertainty[y0:y1]).ravel()
        counts += np.bincount(band, minlength=num_classes)[:num_classes]
        # Exact integer sums: bincount's float weights only hold up to 2**53.
        sums += np.bincount(band, weights=u, minlength=num_classes)[:num_classes].astype(np.int64)
        above += np.bincount(band[u > threshold * 255], minlength=num_classes)[:num_classes]
    return counts, sums, above


def artefact_pixels(labels: LabelMap, qc: LabelMap, factor: int) -> tuple[np.ndarray, int]:
    """(pixels of each artefact value on the artefacts' own grid, map pixels of tissue
    classes that lie on an artefact) of a label map and its artefact labels ``factor`` times
    coarser (map pixel (x, y) lies on artefact pixel (x // factor, y // factor)), read a band of
    rows at a time."""
    height = labels.shape[0]
    counts = np.bincount(np.asarray(qc[0 : qc.shape[0]]).ravel(), minlength=256)
    on_artefacts = 0
    step = max(factor, band_rows(labels) // factor * factor)
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        tissue = np.asarray(labels[y0:y1]) > 0
        coarse = np.asarray(qc[y0 // factor : -(-y1 // factor)]) > 0
        on_artefacts += _on_artefacts(tissue, coarse, factor)
    return counts, on_artefacts


def _on_artefacts(tissue: npt.NDArray[np.bool_], coarse: npt.NDArray[np.bool_],
                  factor: int) -> int:
    """Pixels of the band ``tissue`` that lie on a true pixel of ``coarse``, its artefacts
    ``factor`` times coarser (``ceil`` of its shape), counted per artefact pixel."""
    rows, cols = coarse.shape
    height, width = tissue.shape
    if (rows, cols) != (-(-height // factor), -(-width // factor)):
        raise ValueError(f"artefact labels of {rows} x {cols} do not cover {height} x {width} "
                         f"map pixels at {factor} a side")
    if not coarse.any():
        return 0
    if (height, width) != (rows * factor, cols * factor):  # a last partial block
        padded = np.zeros((rows * factor, cols * factor), dtype=bool)
        padded[:height, :width] = tissue
        tissue = padded
    per_block = tissue.reshape(rows, factor, cols, factor).sum(axis=(1, 3))
    return int(per_block[coarse].sum())


@dataclass(frozen=True)
class TissueCounts:
    """Map pixels of tissue (any class but background), and of those the ones of low
    confidence (None: the map has no uncertainty) and the ones on an artefact (None: it has no
    artefact labels)."""

    tissue: int
    low_confidence: int | None = None
    on_artefacts: int | None = None


def tissue_counts(labels: LabelMap, uncertainty: LabelMap | None = None,
                  qc: LabelMap | None = None, factor: int = 1,
                  threshold: float = LOW_CONFIDENCE_UNCERTAINTY) -> TissueCounts:
    """The :class:`TissueCounts` of a label map, its uncertainty (of the same shape, uint8) and
    its artefact labels ``factor`` times coarser, in one pass of bands of the map's chunk rows
    (whole blocks of the artefacts' grid)."""
    height, width = labels.shape
    if uncertainty is not None and tuple(uncertainty.shape) != (height, width):
        raise ValueError(f"labels {labels.shape} and uncertainty {uncertainty.shape} differ")
    step = band_rows(labels)
    if qc is not None:
        step = max(factor, step // factor * factor)
    tissue = low = on = 0
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        band = np.asarray(labels[y0:y1]) > 0
        tissue += int(np.count_nonzero(band))
        if uncertainty is not None:
            unsure = np.asarray(uncertainty[y0:y1]) > threshold * 255
            low += int(np.count_nonzero(unsure & band))
        if qc is not None:
            coarse = np.asarray(qc[y0 // factor : -(-y1 // factor)]) > 0
            on += _on_artefacts(band, coarse, factor)
    return TissueCounts(tissue, None if uncertainty is None else low,
                        None if qc is None else on)


@dataclass(frozen=True)
class ReviewRules:
    """When a slide is to be looked at before its numbers are used (:func:`review_reasons`):
    analysable tissue under ``min_analysable`` of the tissue, artefacts over more than
    ``max_artefact_mm2`` of it, or low confidence on more than ``max_low_confidence`` of it."""

    min_analysable: float = 0.8
    max_artefact_mm2: float = 1.0
    max_low_confidence: float = 0.25


#: The rules a result's recorded review reasons follow.
DEFAULT_RULES = ReviewRules()


def review_reasons(report: Mapping[str, Any], warnings: Sequence[str],
                   rules: ReviewRules = DEFAULT_RULES) -> list[str]:
    """Why a slide of ``report`` (and its colour ``warnings``) is to be reviewed; empty: no
    reason found.

    ``report`` holds the figures as the report export names them (:func:`review_figures`):
    ``tissue_map_pixels``, ``tissue_area_mm2``, ``damaged_regions``, ``damaged_area_mm2``, and,
    when measured, ``analysable_tissue_mm2`` and ``low_confidence_share``.
    """
    reasons = []
    tissue = float(report["tissue_area_mm2"])
    if report["tissue_map_pixels"] == 0:
        reasons.append("no tissue mapped")
    analysable = report.get("analysable_tissue_mm2")
    if analysable is not None and tissue > 0:
        on_artefacts = tissue - float(analysable)
        if analysable < rules.min_analysable * tissue:
            reasons.append(f"analysable tissue {100 * analysable / tissue:.0f}% of the tissue "
                           f"(under {100 * rules.min_analysable:.0f}%)")
        if on_artefacts > rules.max_artefact_mm2:
            reasons.append(f"artefacts on {on_artefacts:.2f} mm^2 of tissue (over "
                           f"{rules.max_artefact_mm2:g} mm^2)")
    low = report.get("low_confidence_share")
    if low is not None and low > rules.max_low_confidence:
        reasons.append(f"low confidence on {100 * low:.0f}% of the tissue (over "
                       f"{100 * rules.max_low_confidence:.0f}%)")
    reasons += [f"colours: {w.split(';')[0]}" for w in warnings]
    if report["damaged_regions"]:
        reasons.append(f"{report['damaged_regions']} damaged regions not read "
                       f"({report['damaged_area_mm2']:.3g} mm^2)")
    return reasons


def pixel_area_mm2(info: ResultInfo) -> float:
    """The area of one map pixel of the result ``info`` in mm^2."""
    mpp_x, mpp_y = (float(v) for v in info.analysis_mpp)
    return mpp_x * mpp_y / 1e6


def review_figures(counts: TissueCounts, info: ResultInfo) -> dict[str, Any]:
    """The figures :func:`review_reasons` reads, of a result ``info`` whose map has ``counts``,
    computed as the report export computes them."""
    pixel_mm2 = pixel_area_mm2(info)
    tissue = counts.tissue
    figures: dict[str, Any] = {
        "tissue_map_pixels": tissue,
        "tissue_area_mm2": float(tissue * pixel_mm2),
        "damaged_regions": info.damaged_count,
        "damaged_area_mm2": info.damaged_area_mm2,
    }
    if counts.low_confidence is not None:
        figures["low_confidence_share"] = float(counts.low_confidence / tissue) if tissue else None
    if counts.on_artefacts is not None:
        figures["analysable_tissue_mm2"] = float((tissue - counts.on_artefacts) * pixel_mm2)
    return figures


def result_review(info: ResultInfo, labels: LabelMap, uncertainty: LabelMap | None = None,
                  qc: LabelMap | None = None, rules: ReviewRules = DEFAULT_RULES
                  ) -> tuple[str, ...]:
    """The review reasons of the result ``info`` whose map is ``labels``, with its uncertainty
    and its artefact labels (``info.tissue.factor`` times coarser) when it has them: one pass
    over the map (:func:`tissue_counts`)."""
    counts = tissue_counts(labels, uncertainty, qc, info.tissue.factor)
    return tuple(review_reasons(review_figures(counts, info), info.warnings, rules))


def recorded_review(path: str | os.PathLike[str]) -> tuple[str, ...] | None:
    """The review reasons that the result at ``path`` recorded when it was published, from its
    attributes alone (no array is read); None for a result written before they were recorded.

    Raises :class:`ResultError` for a path that holds no readable result.
    """
    path = Path(path)
    try:
        attrs = open_result_group(path).attrs["wsiseg"]
    except WsisegError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else type(err).__name__
        raise ResultError(f"{path} is not a finished wsiseg result ({what}); give the .zarr "
                          "that wsiseg predict wrote") from err
    return ResultInfo.from_attrs(attrs, path).review
