"""Scoring predictions against ground truth: a predicted slide map, or a model on image folders.

``evaluate_result`` compares the ``labels`` of a wsiseg zarr result with a mask image whose
values are the map's class indices: a mask of the map's size is compared pixel by pixel; a mask
of the slide's level-0 size is sampled at each map pixel's centre (level-0 pixels outside the
map's bounds are not scored). Both are read in bands of rows, so neither is ever whole in
memory when it is a TIFF. ``evaluate_folders`` runs a model over folders of image / mask pairs
as an :class:`~wsiseg.training.config.EvaluateConfig` says: whole image by whole image at the
model's resolution, with the same label scheme as training, or through the whole pipeline
(:mod:`wsiseg.training.on_glass`). Both load the images and pool their confusion matrices
through :class:`AnnotatedModel` and report an :class:`Evaluation`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.errors import ConfigError, MetricsError, ResultError, WsisegError
from wsiseg.result.info import ResultInfo
from wsiseg.result.reading import reads_result
from wsiseg.result.store import open_result
from wsiseg.training.config import EvaluateConfig
from wsiseg.training.datasets import LabelScheme, Sample, load_folder, read_attributes
from wsiseg.training.metrics import IGNORE_INDEX, Scores, confusion_matrix

logger = logging.getLogger(__name__)

#: Map pixels scored at a time (rounded to whole rows of the map's chunks).
BAND_PIXELS = 1 << 22


@contextlib.contextmanager
def _open_mask(path: Path) -> Iterator[Any]:
    """The mask as an array-like of shape (H, W) or (H, W, S): a lazily read zarr array for a
    TIFF, a numpy array otherwise (PNG cannot be read in parts)."""
    if not path.is_file():
        raise ResultError(f"mask {path} does not exist; check the path given to --mask")
    with contextlib.ExitStack() as stack:
        try:
            if path.suffix.lower() in (".tif", ".tiff"):
                import tifffile
                import zarr

                tif = stack.enter_context(tifffile.TiffFile(path))
                series = tif.series[0]
                if series.axes not in ("YX", "YXS"):
                    raise ResultError(
                        f"mask {path} has axes {series.axes} {series.shape}; give a "
                        "single-channel 2-D image of class indices")
                image: zarr.Array[Any] | zarr.Group | np.ndarray = zarr.open(
                    series.aszarr(level=0), mode="r")
            else:
                import imagecodecs

                image = imagecodecs.imread(str(path))
        except WsisegError:
            raise
        except Exception as err:  # decoders raise many types; all mean "not a readable image"
            # Some decoders explain themselves over many lines: the first one says enough.
            reason = (str(err).strip().splitlines() or [""])[0]
            raise ResultError(f"cannot read mask {path} ({type(err).__name__}: {reason}); "
                                  "give a PNG or TIFF of class indices") from err
        yield image


def _mask_shape(mask: Any, path: Path) -> tuple[int, int]:
    if mask.ndim == 2 or (mask.ndim == 3 and mask.shape[2] <= 4):
        dtype = np.dtype(mask.dtype)
        if not (np.issubdtype(dtype, np.integer) or dtype == bool):
            raise MetricsError(f"mask {path} holds {dtype} values; give integer class indices")
        return int(mask.shape[0]), int(mask.shape[1])
    raise ResultError(f"mask {path} has shape {mask.shape}; give a single-channel 2-D "
                          "image of class indices")


def _single_channel(band: np.ndarray, path: Path) -> np.ndarray:
    if band.ndim == 2:
        return band
    # Grey stored as RGB(A) or grey + alpha is accepted; colours are not class indices.
    colour = band[..., :3] if band.shape[2] >= 3 else band[..., :1]
    if (colour != colour[..., :1]).any():
        raise MetricsError(f"mask {path} is a colour image whose channels differ; give a "
                           "single-channel image whose values are class indices")
    return colour[..., 0]


def level0_sampling(info: ResultInfo, shape: tuple[int, int],
                    level0_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 row and column under the centre of each row and column of a map of ``shape``
    (height, width), within a level-0 image of ``level0_shape``. Pure."""
    # Map pixel x covers level-0 [ox + x * sx, ox + (x + 1) * sx): see wsiseg.slide.geometry.
    sx, sy = (float(v) for v in info.scale_to_level0)
    ox, oy = (float(v) for v in info.offset_level0)
    rows = np.floor(oy + (np.arange(shape[0]) + 0.5) * sy).astype(np.int64)
    cols = np.floor(ox + (np.arange(shape[1]) + 0.5) * sx).astype(np.int64)
    # The last map pixel may reach past the slide's edge by less than one map pixel.
    return (np.clip(rows, 0, level0_shape[0] - 1), np.clip(cols, 0, level0_shape[1] - 1))


@reads_result
def evaluate_result(result: str | os.PathLike[str], mask: str | os.PathLike[str],
                    mean_over: Sequence[int] | None = None,
                    groups: Mapping[str, Sequence[int]] | None = None,
                    ignore_index: int = IGNORE_INDEX) -> Scores:
    """Score a zarr result's ``labels`` against ``mask``, an image of the map's class indices
    (``ignore_index`` where not scored) at the map's size or the slide's level-0 size.

    ``mean_over`` and ``groups`` are as in :meth:`Scores.from_matrix`.
    """
    result, mask = Path(result), Path(mask)
    labels, info = open_result(result)
    names = list(info.class_names)
    k = len(names)
    height, width = labels.shape
    with _open_mask(mask) as truth_source:
        mask_shape = _mask_shape(truth_source, mask)
        level0 = info.slide.dimensions[::-1]
        # None: the mask is at the map's size; else the level-0 rows and columns to read
        sampling: tuple[np.ndarray, np.ndarray] | None = None
        if mask_shape == (height, width):
            pass
        elif mask_shape == level0:
            sampling = level0_sampling(info, (height, width), mask_shape)
            logger.info("%s is at level 0: sampling it at the centres of the %d x %d map "
                        "pixels", mask, width, height)
        else:
            found = " x ".join(map(str, level0[::-1])) or "unknown"
            raise MetricsError(
                f"mask {mask} is {mask_shape[1]} x {mask_shape[0]} px, but it must be the "
                f"map's size ({width} x {height}) or the slide's level-0 size ({found}); "
                "resample the mask to one of them")
        chunk_rows = labels.chunks[0]
        step = chunk_rows * max(1, BAND_PIXELS // (chunk_rows * width))
        matrix = np.zeros((k, k), dtype=np.int64)
        for y0 in range(0, height, step):
            y1 = min(y0 + step, height)
            if sampling is None:
                band = truth_source[y0:y1]
            elif isinstance(truth_source, np.ndarray):
                rows, cols = sampling
                band = truth_source[rows[y0:y1, None], cols[None, :]]
            else:
                rows, cols = sampling
                band = truth_source.oindex[rows[y0:y1], cols]
            truth = _single_channel(np.asarray(band), mask)
            _check_values(truth, k, ignore_index, names, mask, y0)
            matrix += confusion_matrix(truth, np.asarray(labels[y0:y1]), k, ignore_index)
    if not matrix.any():
        raise MetricsError(f"mask {mask} scores no pixel of the map: every value there is the "
                           f"ignore value {ignore_index}; check the mask and --ignore")
    return Scores.from_matrix(matrix, names, mean_over, groups)


def _check_values(truth: np.ndarray, k: int, ignore_index: int, names: Sequence[str],
                  path: Path, y0: int) -> None:
    bad = ((truth < 0) | (truth >= k)) & (truth != ignore_index)
    if bad.any():
        y, x = np.argwhere(bad)[0]
        classes = ", ".join(f"{i} {n}" for i, n in enumerate(names))
        raise MetricsError(
            f"mask {path} holds value {truth[y, x]} (at map pixel x {x}, y {y0 + y}), but the "
            f"map has {k} classes ({classes}); give class indices 0..{k - 1}, and "
            f"{ignore_index} (--ignore) where not scored")


@dataclass(frozen=True)
class Evaluation:
    """The scores of a model on annotated images, and how they were obtained.

    ``mode`` says how the images were segmented: ``"whole image"`` (each image in one pass at
    the model's resolution) or ``"on glass, margin 200 um, through the pipeline"`` (each image
    placed on glass as a slide and mapped by :func:`wsiseg.predict_slide`).
    """

    scores: Scores
    model: str
    mode: str
    tta: str
    images: int
    image_mpp: float
    margin_um: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: how the scores were obtained, then the scores (see :class:`Scores`)."""
        return {"mode": self.mode, "model": self.model, "tta": self.tta, "images": self.images,
                "image_mpp": self.image_mpp, "margin_um": self.margin_um,
                **self.scores.to_dict()}

    def format_report(self) -> str:
        """One line saying how the scores were obtained, then :meth:`Scores.format_table`."""
        images = f"{self.images} image{'' if self.images == 1 else 's'}"
        return (f"{self.model} on {images} at {self.image_mpp:g} um/px: {self.mode}; "
                f"tta {self.tta}\n{self.scores.format_table()}")


@dataclass(frozen=True)
class AnnotatedModel:
    """A model loaded for scoring annotated images, with the label scheme that turns their
    masks into its classes and the per-image attributes that scheme reads."""

    loaded: Any  # wsiseg.models.LoadedModel
    scheme: LabelScheme
    attributes: Mapping[str, Mapping[str, str]] | None

    @classmethod
    def load(cls, model: str, classes: str | os.PathLike[str] | None = None,
             attributes: str | os.PathLike[str] | None = None, trust_code: bool = False
             ) -> AnnotatedModel:
        """Load ``model``; ``classes`` is a label scheme JSON (default: mask values are the
        model's class indices), ``attributes`` a CSV of per-image attributes; ``trust_code``
        lets it be a TorchScript file (see :func:`wsiseg.models.load_model`)."""
        from wsiseg.models import load_model

        loaded = load_model(model, trust_code=trust_code)
        card = loaded.card
        scheme = (LabelScheme.from_file(classes) if classes else
                  LabelScheme.identity([(c.index, c.name, c.color) for c in card.classes]))
        names = [c.name for c in card.classes]
        if [n for _, n, _ in scheme.classes()] != names:
            raise ConfigError(f"the label scheme's classes {[n for _, n, _ in scheme.classes()]} "
                              f"differ from the model's {names}; use the scheme it was trained "
                              "with")
        return cls(loaded, scheme, read_attributes(attributes) if attributes else None)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.loaded.card.classes]

    def score(self, folders: Sequence[str | os.PathLike[str]], image_mpp: float, sample_mpp: float,
              segment: Callable[[Sample], tuple[np.ndarray, np.ndarray]]
              ) -> tuple[np.ndarray, int]:
        """The confusion matrix pooled over every image of ``folders``, and how many there were.

        Each image is loaded at ``sample_mpp`` (with its class map, 255 where not scored) and
        ``segment`` gives its (truth, predicted class) maps on one grid.
        """
        k = len(self.class_names)
        matrix = np.zeros((k, k), dtype=np.int64)
        count = 0
        for folder in folders:
            samples = load_folder(folder, self.scheme, image_mpp, sample_mpp, self.attributes)
            for n, sample in enumerate(samples, 1):
                started = time.perf_counter()
                truth, predicted = segment(sample)
                confusion = confusion_matrix(truth, predicted, k)
                matrix += confusion
                count += 1
                scored = int(confusion.sum())
                logger.info("%s (%d of %d in %s): %d pixels scored, %.1f%% right, %.1f s",
                            sample.name, n, len(samples), folder, scored,
                            100 * np.trace(confusion) / scored if scored else math.nan,
                            time.perf_counter() - started)
        return matrix, count


def evaluate_folders(config: EvaluateConfig) -> Evaluation:
    """Run ``config.model`` over the image / mask pairs of ``config.folders`` and score all
    pixels together: each image whole at the model's resolution, or with ``config.on_glass``
    placed on glass and mapped through the whole pipeline (:mod:`wsiseg.training.on_glass`)."""
    if config.on_glass:
        from wsiseg.training.on_glass import evaluate_on_glass

        return evaluate_on_glass(config)
    from wsiseg.inference.predictor import Normalisation, Predictor, resolve_device, segment_image

    annotated = AnnotatedModel.load(config.model, config.classes, config.attributes,
                                    config.trust_code)
    card = annotated.loaded.card
    predictor = Predictor(annotated.loaded.module, card.num_classes,
                          Normalisation(card.mean, card.std, card.channel_order),
                          resolve_device(config.device), tta=config.tta,
                          name=str(annotated.loaded.source))

    def segment(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        return sample.target, segment_image(predictor, sample.image).argmax(axis=0)

    matrix, count = annotated.score(config.folders, config.image_mpp, card.mpp, segment)
    scores = Scores.from_matrix(matrix, annotated.class_names, config.mean_over, config.groups)
    return Evaluation(scores, card.name, "whole image", config.tta, count, config.image_mpp)
