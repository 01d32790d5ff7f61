"""Scoring predictions against ground truth: a predicted slide map, or a model on image folders.

``evaluate_result`` compares the ``labels`` of a wsiseg zarr result with a mask image whose
values are the map's class indices: a mask of the map's size is compared pixel by pixel; a mask
of the slide's level-0 size is sampled at each map pixel's centre (level-0 pixels outside the
map's bounds are not scored). Both are read in bands of rows, so neither is ever whole in
memory when it is a TIFF. ``evaluate_folders`` runs a model over folders of image / mask pairs,
whole image by whole image at the model's resolution, with the same label scheme as training.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.errors import ConfigError, ResultError, WsisegError
from wsiseg.training.metrics import IGNORE_INDEX, MetricsError, Scores, confusion_matrix
from wsiseg.result.info import ResultInfo
from wsiseg.result.store import open_result, reads_result

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
                image = zarr.open(series.aszarr(level=0), mode="r")
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


def _sampling(info: ResultInfo, shape: tuple[int, int],
              mask_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 row and column under the centre of each map row and column."""
    # Map pixel x covers level-0 [ox + x * sx, ox + (x + 1) * sx): see wsiseg.slide.geometry.
    sx, sy = (float(v) for v in info.scale_to_level0)
    ox, oy = (float(v) for v in info.offset_level0)
    rows = np.floor(oy + (np.arange(shape[0]) + 0.5) * sy).astype(np.int64)
    cols = np.floor(ox + (np.arange(shape[1]) + 0.5) * sx).astype(np.int64)
    # The last map pixel may reach past the slide's edge by less than one map pixel.
    return (np.clip(rows, 0, mask_shape[0] - 1), np.clip(cols, 0, mask_shape[1] - 1))


@reads_result
def evaluate_result(result: str | os.PathLike, mask: str | os.PathLike,
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
        if mask_shape == (height, width):
            rows = cols = None
        elif mask_shape == level0:
            rows, cols = _sampling(info, (height, width), mask_shape)
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
            if rows is None:
                truth = truth_source[y0:y1]
            elif isinstance(truth_source, np.ndarray):
                truth = truth_source[rows[y0:y1, None], cols[None, :]]
            else:
                truth = truth_source.oindex[rows[y0:y1], cols]
            truth = _single_channel(np.asarray(truth), mask)
            _check_values(truth, k, ignore_index, names, mask, y0)
            matrix += confusion_matrix(truth, labels[y0:y1], k, ignore_index)
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


def evaluate_folders(model: str, folders: Sequence[str | os.PathLike], image_mpp: float,
                     classes: str | os.PathLike | None = None,
                     attributes: str | os.PathLike | None = None,
                     mean_over: Sequence[int] | None = None,
                     groups: Mapping[str, Sequence[int]] | None = None,
                     device: str = "auto") -> Scores:
    """Run ``model`` over the image / mask pairs of ``folders`` and score all pixels together."""
    from wsiseg.training.datasets import LabelScheme, load_folder, read_attributes
    from wsiseg.models import load_model
    from wsiseg.inference.predictor import Normalisation, Predictor, resolve_device, segment_image

    loaded = load_model(model)
    card = loaded.card
    scheme = (LabelScheme.from_file(classes) if classes else
              LabelScheme.identity([(c.index, c.name, c.color) for c in card.classes]))
    names = [c.name for c in card.classes]
    if [n for _, n, _ in scheme.classes()] != names:
        raise ConfigError(f"the label scheme's classes {[n for _, n, _ in scheme.classes()]} "
                          f"differ from the model's {names}; use the scheme it was trained with")
    table = read_attributes(attributes) if attributes else None
    predictor = Predictor(loaded.module, card.num_classes,
                          Normalisation(card.mean, card.std, card.channel_order),
                          resolve_device(device))
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for folder in folders:
        for sample in load_folder(folder, scheme, image_mpp, card.mpp, table):
            predicted = segment_image(predictor, sample.image).argmax(axis=0)
            matrix += confusion_matrix(sample.target, predicted, len(names))
    return Scores.from_matrix(matrix, names, mean_over, groups)
