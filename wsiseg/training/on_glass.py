"""Scoring a model through the whole pipeline: annotated images placed on glass as slides.

Each image, at its own resolution and with its original pixels, is put in the middle of
near-white glass (the constant colour of a real scan's glass plus a little seeded noise) and
written as an Aperio SVS; :func:`wsiseg.predict_slide` then maps it as it maps any slide:
tissue detection, the windows with enough tissue, resampling to the model's resolution,
Gaussian blending, and background where no window was predicted. The image's class map is
placed at the same offset in a level-0 frame that is "not scored" (255) everywhere else, and
sampled at the centre of each map pixel as :func:`~wsiseg.training.evaluation.evaluate_result`
samples a level-0 mask, so only the image's region is scored. Slides and maps are written to
a temporary folder, removed afterwards.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wsiseg.errors import ConfigError
from wsiseg.inference.config import PredictConfig
from wsiseg.inference.pipeline import predict_slide
from wsiseg.naming import result_name
from wsiseg.result.reading import result_reads
from wsiseg.result.store import open_result
from wsiseg.slide.svs_writer import write_svs
from wsiseg.training.config import DEFAULT_MARGIN_UM, IMAGE_MPP_ERROR, MARGIN_ERROR, EvaluateConfig
from wsiseg.training.datasets import Sample
from wsiseg.training.evaluation import AnnotatedModel, Evaluation, level0_sampling
from wsiseg.training.metrics import IGNORE_INDEX, Scores

if TYPE_CHECKING:
    from wsiseg.models import LoadedModel

__all__ = ["DEFAULT_MARGIN_UM", "GLASS_NOISE", "GLASS_RGB", "evaluate_on_glass", "margin_pixels",
           "predict_on_glass", "slide_on_glass", "truth_on_map"]

logger = logging.getLogger(__name__)

#: The glass of a real bright-field scan: near-white grey (real scans measure 242-248).
GLASS_RGB = (242, 242, 242)
#: Standard deviation of the noise on the glass, in 8-bit levels: no scan's glass is flat.
GLASS_NOISE = 2.0
#: Level-0 pyramid of the slides written: downsamples, tile edge, lossless compression.
_DOWNSAMPLES = (1, 4)
_TILE = 256
_COMPRESSION = "zstd"


def margin_pixels(margin_um: float, image_mpp: float) -> int:
    """The glass around an image, in its own pixels, for ``margin_um`` micrometres."""
    if not (isinstance(image_mpp, (int, float)) and image_mpp > 0):
        raise ConfigError(IMAGE_MPP_ERROR.format(value=image_mpp))
    if not margin_um >= 0:
        raise ConfigError(MARGIN_ERROR.format(value=margin_um))
    return round(margin_um / image_mpp)


def slide_on_glass(image: np.ndarray, margin: int, rng: np.random.Generator) -> np.ndarray:
    """``image`` (H, W, 3) uint8 in the middle of glass ``margin`` pixels wide on every side:
    :data:`GLASS_RGB` plus noise of standard deviation :data:`GLASS_NOISE`. Pure."""
    h, w = image.shape[:2]
    shape = (h + 2 * margin, w + 2 * margin, 3)
    glass = rng.normal(GLASS_RGB, GLASS_NOISE, shape)
    slide = np.clip(np.rint(glass), 0, 255).astype(np.uint8)
    slide[margin:margin + h, margin:margin + w] = image
    return slide


def truth_on_map(target: np.ndarray, offset: tuple[int, int], rows: np.ndarray,
                 cols: np.ndarray) -> np.ndarray:
    """The class map ``target`` (H, W), placed at level-0 ``offset`` (x, y) in a frame that is
    :data:`IGNORE_INDEX` elsewhere, read at level-0 ``rows`` x ``cols`` (the pixels under the
    map's centres, see :func:`~wsiseg.training.evaluation.level0_sampling`). Pure."""
    ys, xs = rows - offset[1], cols - offset[0]
    inside_y = (ys >= 0) & (ys < target.shape[0])
    inside_x = (xs >= 0) & (xs < target.shape[1])
    truth = np.full((len(rows), len(cols)), IGNORE_INDEX, dtype=np.uint8)
    truth[np.ix_(inside_y, inside_x)] = target[np.ix_(ys[inside_y], xs[inside_x])]
    return truth


def predict_on_glass(sample: Sample, image_mpp: float, margin: int, config: PredictConfig,
                     loaded: LoadedModel, folder: Path, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(truth, predicted classes) on the map's grid for ``sample`` (at ``image_mpp``) placed
    on glass ``margin`` pixels wide and mapped by :func:`wsiseg.predict_slide` with
    ``config`` (a :class:`~wsiseg.inference.pipeline.PredictConfig`; its ``out`` is set here)
    and the model ``loaded``. The slide and its map are written in ``folder``, and removed."""
    slide = folder / f"{sample.name}.svs"
    out = folder / result_name(sample.name)
    try:
        write_svs(slide, slide_on_glass(sample.image, margin, rng), mpp=image_mpp,
                  downsamples=_DOWNSAMPLES, tile=_TILE, compression=_COMPRESSION)
        predict_slide(slide, replace(config, out=str(out)), model=loaded)
        labels, info = open_result(out)
        with result_reads(out):
            predicted = np.asarray(labels[:])
        h0, w0 = info.slide.dimensions[1], info.slide.dimensions[0]
        rows, cols = level0_sampling(info, (predicted.shape[0], predicted.shape[1]), (h0, w0))
        return truth_on_map(sample.target, (margin, margin), rows, cols), predicted
    finally:
        slide.unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)


def evaluate_on_glass(config: EvaluateConfig) -> Evaluation:
    """Score ``config.model`` on the image / mask pairs of ``config.folders``, each image placed
    on glass ``config.glass_margin_um`` wide and mapped by :func:`wsiseg.predict_slide`; all
    images' pixels are scored together, glass never. ``config.seed`` makes the glass's noise
    (different for each image) repeatable. :func:`~wsiseg.training.evaluation.evaluate_folders`
    calls it for a config with ``on_glass``."""
    margin_um = config.glass_margin_um
    margin = margin_pixels(margin_um, config.image_mpp)
    predict_config = PredictConfig(device=config.device, tta=config.tta, progress=False)
    annotated = AnnotatedModel.load(config.model, config.classes, config.attributes,
                                    config.trust_code)
    card = annotated.loaded.card
    image_mpp = config.image_mpp
    if card.mpp < image_mpp * (1 - 1e-6):
        raise ConfigError(f"the images are at {image_mpp:g} um/px, coarser than the model's "
                          f"{card.mpp:g} um/px; use images scanned at {card.mpp:g} um/px or "
                          "finer")
    with tempfile.TemporaryDirectory(prefix="wsiseg-on-glass-",
                                     ignore_cleanup_errors=True) as work:
        count = 0

        def segment(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
            nonlocal count
            count += 1
            rng = np.random.default_rng([config.seed, count])  # other glass for each image
            return predict_on_glass(sample, image_mpp, margin, predict_config, annotated.loaded,
                                    Path(work), rng)

        # The images at their own resolution: the pipeline brings them to the model's.
        matrix, images = annotated.score(config.folders, image_mpp, image_mpp, segment)
    mode = f"on glass, margin {margin_um:g} um, through the pipeline"
    scores = Scores.from_matrix(matrix, annotated.class_names, config.mean_over, config.groups)
    return Evaluation(scores, card.name, mode, config.tta, images, image_mpp,
                      margin_um=float(margin_um))
