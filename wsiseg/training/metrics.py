"""Segmentation scores from a confusion matrix: Dice, IoU, their means, pixel accuracy.

Definitions follow HSP-Net (Meng et al., eq. 3-5): per-class Dice 2|P n T| / (|P| + |T|) and
IoU |P n T| / |P u T|; mean Dice and mIoU average them over the named lesion classes (every
class except "background" unless chosen otherwise); AP is the pixel accuracy. A class absent
from both truth and prediction has no score (NaN) and is left out of the means. Pure numpy.

Confusion matrices of several images add up, so a data set is scored by summing the matrices
of its images and scoring the sum once::

    matrix = sum(confusion_matrix(t, p, k) for t, p in pairs)
    scores = Scores.from_matrix(matrix, names, groups={"gland": [2, 3]})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from wsiseg.errors import MetricsError

IGNORE_INDEX = 255


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """(K, K) int64 pixel counts, rows the true class, columns the predicted one.

    Pixels whose truth is ``ignore_index`` are left out (``None``: none are). Any other value
    outside ``0..K-1``, in truth or prediction, is an error. Matrices of several images add up.
    """
    truth = np.asarray(truth)
    predicted = np.asarray(predicted)
    if num_classes < 1:
        raise MetricsError(f"cannot score {num_classes} classes; there must be at least one")
    if truth.shape != predicted.shape:
        raise MetricsError(f"truth is {truth.shape} but prediction {predicted.shape}; they must "
                           "be the same size")
    for what, values in (("truth", truth), ("prediction", predicted)):
        if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
            raise MetricsError(f"{what} is {values.dtype}; class maps must hold integers")
    t = truth.ravel()
    p = predicted.ravel()
    if ignore_index is not None:
        keep = t != ignore_index
        if not keep.all():
            t, p = t[keep], p[keep]
    for what, values in (("truth", t), ("prediction", p)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = int(values.max() if values.max() >= num_classes else values.min())
            raise MetricsError(f"{what} holds class {bad}, outside 0..{num_classes - 1}; check "
                               f"the mask values and the classes (ignore value {ignore_index})")
    index = t.astype(np.intp) * num_classes + p
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.astype(np.int64).reshape(num_classes, num_classes)


def _ratio(num: npt.NDArray[np.float64] | float,
           den: npt.NDArray[np.float64] | float) -> npt.NDArray[np.float64]:
    # A class absent from both truth and prediction has no score (NaN), not a perfect one.
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=np.asarray(den) > 0)
    return out


def _check_classes(indices: Sequence[int], k: int, what: str) -> tuple[int, ...]:
    chosen = tuple(int(i) for i in indices)
    if not chosen:
        raise MetricsError(f"{what} names no class; give class indices in 0..{k - 1}")
    outside = [i for i in chosen if not 0 <= i < k]
    if outside:
        raise MetricsError(f"{what} names classes {outside}, outside 0..{k - 1}; use the map's "
                           "class indices")
    return chosen


@dataclass(frozen=True)
class Scores:
    """Scores of one confusion matrix; see the module docstring for the definitions.

    ``dice`` and ``iou`` are per class (NaN for a class absent from truth and prediction);
    ``groups`` maps a group's name to its member classes and its binary Dice and IoU.
    """

    matrix: np.ndarray
    class_names: tuple[str, ...]
    dice: np.ndarray
    iou: np.ndarray
    mean_over: tuple[int, ...]
    mean_dice: float
    mean_iou: float
    pixel_accuracy: float
    groups: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, class_names: Sequence[str],
                    mean_over: Sequence[int] | None = None,
                    groups: Mapping[str, Sequence[int]] | None = None) -> Scores:
        """Score ``matrix``; ``mean_over`` are the classes averaged (default: all but
        "background"); ``groups`` name sets of classes scored together against the rest."""
        m = np.asarray(matrix, dtype=np.int64)
        k = len(class_names)
        if m.shape != (k, k):
            raise MetricsError(f"a {m.shape} matrix does not fit {k} classes")
        tp = np.diag(m).astype(np.float64)
        fp = m.sum(axis=0) - tp
        fn = m.sum(axis=1) - tp
        dice = _ratio(2 * tp, 2 * tp + fp + fn)
        iou = _ratio(tp, tp + fp + fn)
        if mean_over is None:
            mean_over = [i for i, n in enumerate(class_names)
                         if n.lower() != "background"] or list(range(k))
        mean_over = _check_classes(mean_over, k, "the classes to average")

        def mean(values: np.ndarray) -> float:
            chosen = values[list(mean_over)]
            chosen = chosen[~np.isnan(chosen)]
            return float(chosen.mean()) if chosen.size else math.nan

        scored_groups = {}
        for name, members in (groups or {}).items():
            members = _check_classes(members, k, f"group {name!r}")
            inside = np.zeros(k, dtype=bool)
            inside[list(members)] = True
            g_tp = float(m[np.ix_(inside, inside)].sum())
            g_fp = float(m[np.ix_(~inside, inside)].sum())
            g_fn = float(m[np.ix_(inside, ~inside)].sum())
            scored_groups[name] = {
                "classes": list(members),
                "dice": float(_ratio(2 * g_tp, 2 * g_tp + g_fp + g_fn)),
                "iou": float(_ratio(g_tp, g_tp + g_fp + g_fn)),
            }
        total = m.sum()
        return cls(m, tuple(class_names), dice, iou, mean_over, mean(dice), mean(iou),
                   float(tp.sum() / total) if total else math.nan, scored_groups)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready scores (NaN becomes null)."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "mean_dice": num(self.mean_dice),
            "mean_iou": num(self.mean_iou),
            "pixel_accuracy": num(self.pixel_accuracy),
            "mean_over": [self.class_names[i] for i in self.mean_over],
            "classes": {n: {"index": i, "dice": num(self.dice[i]), "iou": num(self.iou[i]),
                            "pixels": int(self.matrix[i].sum())}
                        for i, n in enumerate(self.class_names)},
            "groups": {g: {**v, "dice": num(v["dice"]), "iou": num(v["iou"])}
                       for g, v in self.groups.items()},
            "confusion_matrix": self.matrix.tolist(),
        }

    def format_table(self) -> str:
        """A plain text table: per class, groups, means, then the confusion matrix."""
        def f(x: float) -> str:
            return "     -" if math.isnan(x) else f"{x:6.4f}"

        width = max(12, *(len(n) for n in self.class_names),
                    *(len(g) + 8 for g in self.groups))
        lines = [f"{'class':<{width}}  {'Dice':>6}  {'IoU':>6}  {'true pixels':>12}"]
        for i, n in enumerate(self.class_names):
            lines.append(f"{n:<{width}}  {f(self.dice[i])}  {f(self.iou[i])}  "
                         f"{int(self.matrix[i].sum()):>12}")
        for g, v in self.groups.items():
            lines.append(f"{g + ' (group)':<{width}}  {f(v['dice'])}  {f(v['iou'])}")
        over = ", ".join(self.class_names[i] for i in self.mean_over)
        lines.append(f"mean Dice {f(self.mean_dice).strip()}, mIoU {f(self.mean_iou).strip()} "
                     f"(over {over}); pixel accuracy (AP) {f(self.pixel_accuracy).strip()}")
        lines.append("confusion matrix (rows truth, columns prediction):")
        cell = max(12, len(str(int(self.matrix.max(initial=0)))) + 2)
        lines.append(" " * (width + 2) + "".join(f"{n[:cell - 2]:>{cell}}"
                                                 for n in self.class_names))
        for i, n in enumerate(self.class_names):
            lines.append(f"{n:<{width}}  " + "".join(f"{v:>{cell}}" for v in self.matrix[i]))
        return "\n".join(lines)
