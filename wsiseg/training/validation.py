"""Scoring the held-out images of a training run, and the score that chooses ``best.pt``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsiseg.errors import ConfigError
from wsiseg.inference.predictor import Predictor, segment_image
from wsiseg.training.datasets import IGNORE_INDEX, Sample
from wsiseg.training.metrics import Scores, confusion_matrix
from wsiseg.training.on_glass import slide_on_glass

#: The scores of a run's history, besides each class's Dice.
HISTORY_SCORES = ("mean_dice", "mean_iou", "pixel_accuracy")


def evaluate_samples(predictor: Predictor, samples: Sequence[Sample],
                     class_names: Sequence[str], glass_margin: int = 0) -> Scores:
    """Segment each image whole and score it against its target (:mod:`wsiseg.training.metrics`).

    With ``glass_margin`` > 0 each image is laid on a scan's glass with that many pixels on
    every side (:func:`wsiseg.training.on_glass.slide_on_glass`), and only the image is scored.
    """
    matrix = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    m = glass_margin
    for i, s in enumerate(samples):
        image = s.image
        if m > 0:
            image = slide_on_glass(s.image, m, np.random.default_rng(i))
        predicted = segment_image(predictor, image).argmax(axis=0)
        if m > 0:
            predicted = predicted[m:m + s.target.shape[0], m:m + s.target.shape[1]]
        matrix += confusion_matrix(s.target, predicted, len(class_names), IGNORE_INDEX)
    return Scores.from_matrix(matrix, class_names)


def selection_score(scores: Scores, select_by: str) -> float:
    """The score ``select_by`` (one of ``SELECT_BY``) of ``scores``, which must have it."""
    value = scores.to_dict().get(select_by)
    if not isinstance(value, (int, float)):  # None: no class to average is in the images
        raise ConfigError(f"the held-out images give no {select_by}: none of the classes it "
                          "averages is in them or predicted; hold out other images or select "
                          "by pixel_accuracy")
    return float(value)


def history_scores(scores: Scores) -> dict[str, float | None]:
    """The scores a run's history keeps per epoch: the means, pixel accuracy, each class's Dice
    (None where the images have no such score)."""
    d = scores.to_dict()
    flat: dict[str, float | None] = {k: d[k] for k in HISTORY_SCORES if k in d}
    for name, per in (d.get("classes") or {}).items():
        flat[f"dice_{name.replace(' ', '_')}"] = per.get("dice")
    return flat
