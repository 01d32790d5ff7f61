"""Annotated image folders for training and evaluation: image / mask pairs at a model's mpp.

A folder holds ``NAME.(jpg|jpeg|png|tif|tiff)`` images, each with ``NAME_mask.(png|tif|tiff)``:
one integer label per pixel. A :class:`LabelScheme` turns mask values into the model's classes,
optionally using per-image attributes from a CSV (GlaS: a gland in a malignant image is
"tumour", in a benign one "normal") and the tissue mask (glass is "background"). Images are
brought to the model's resolution by exact area averaging; labels by the class that covers most
of each output pixel.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.errors import ConfigError, DatasetError
from wsiseg.slide.resample import area_weights, resample_area
from wsiseg.slide.tissue import tissue_mask
from wsiseg.training.config import IMAGE_MPP_ERROR

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff")


@dataclass(frozen=True)
class ClassRule:
    """Pixels become class ``index`` when every condition given holds.

    ``mask``: the mask values that qualify (None: any). ``where``: image attributes that must
    equal these values (from the attributes CSV). ``tissue``: True/False to require the pixel
    to be tissue / glass per :func:`wsiseg.slide.tissue.tissue_mask` (None: either).
    """

    index: int
    name: str
    color: tuple[int, ...]  # RGB
    mask: tuple[int, ...] | None = None
    where: Mapping[str, str] = field(default_factory=dict)
    tissue: bool | None = None


@dataclass(frozen=True)
class LabelScheme:
    """Ordered rules from mask values (+ attributes, + tissue) to class indices.

    The first rule that matches a pixel gives its class; pixels no rule matches are ignored
    (255) in training and evaluation. ``grade`` optionally names an attribute column whose
    values, in the order of ``grade_values``, give each image a grade index (ERNet's
    image-level grade); images without one get -1.
    """

    rules: tuple[ClassRule, ...]
    grade: str | None = None
    grade_values: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len({r.index for r in self.rules})

    @property
    def needs_tissue(self) -> bool:
        return any(r.tissue is not None for r in self.rules)

    @property
    def attribute_columns(self) -> set[str]:
        cols = {k for r in self.rules for k in r.where}
        return cols | ({self.grade} if self.grade else set())

    def classes(self) -> list[tuple[int, str, tuple[int, ...]]]:
        """(index, name, colour) per class, by index; the names of a model card's classes."""
        seen: dict[int, tuple[int, str, tuple[int, ...]]] = {}
        for r in self.rules:
            seen.setdefault(r.index, (r.index, r.name, r.color))
        return [seen[i] for i in sorted(seen)]

    @classmethod
    def identity(cls, classes: Sequence[tuple[int, str, Sequence[int]]]) -> LabelScheme:
        """Mask values are class indices (no attributes, no tissue rule)."""
        return cls(tuple(ClassRule(i, n, tuple(c), mask=(i,)) for i, n, c in classes))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LabelScheme:
        """Read a scheme from JSON: ``{"classes": [{"index", "name", "color", "mask",
        "where", "tissue"}, ...], "grade": {"column": ..., "values": [...]}}``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as err:
            raise DatasetError(f"cannot read label scheme {path} ({err.strerror or err}); "
                               "check the path given to --classes") from err
        except json.JSONDecodeError as err:
            raise DatasetError(f"label scheme {path} is not valid JSON ({err}); fix the file")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "label scheme") -> LabelScheme:
        if not isinstance(data, Mapping) or not isinstance(data.get("classes"), list):
            raise DatasetError(f"{source}: a label scheme is an object with a list 'classes'; "
                               "see examples/glas_classes.json")
        rules = []
        for i, r in enumerate(data["classes"]):
            try:
                mask = r.get("mask")
                rules.append(ClassRule(
                    index=int(r["index"]), name=str(r["name"]),
                    color=tuple(int(c) for c in r.get("color", (128, 128, 128))),
                    mask=None if mask is None else tuple(int(v) for v in mask),
                    where={str(k): str(v) for k, v in r.get("where", {}).items()},
                    tissue=r.get("tissue"),
                ))
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise DatasetError(f"{source}: classes[{i}] = {r!r} is not a rule ({err}); a rule "
                                   "has index, name, and optional color, mask, where, tissue")
        indices = sorted({r.index for r in rules})
        if indices != list(range(len(indices))):
            raise DatasetError(f"{source}: class indices {indices} must be 0..K-1 without gaps")
        grade = data.get("grade")
        if grade is not None and not (isinstance(grade, Mapping) and "column" in grade
                                      and isinstance(grade.get("values"), list)):
            raise DatasetError(f"{source}: 'grade' must be {{\"column\": ..., \"values\": [...]}}")
        return cls(tuple(rules), grade=None if grade is None else str(grade["column"]),
                   grade_values=() if grade is None else tuple(map(str, grade["values"])))

    def apply(self, mask: np.ndarray, attributes: Mapping[str, str],
              tissue: np.ndarray | None = None) -> np.ndarray:
        """Class index per pixel (uint8, 255 where no rule matches)."""
        out = np.full(mask.shape, IGNORE_INDEX, dtype=np.uint8)
        free = np.ones(mask.shape, dtype=bool)
        for rule in self.rules:
            if any(attributes.get(k) != v for k, v in rule.where.items()):
                continue
            hit = free.copy()
            if rule.mask is not None:
                hit &= np.isin(mask, rule.mask)
            if rule.tissue is not None:
                if tissue is None:
                    raise DatasetError(f"rule {rule.name!r} needs the tissue mask")
                hit &= tissue if rule.tissue else ~tissue
            out[hit] = rule.index
            free &= ~hit
        return out

    def grade_of(self, attributes: Mapping[str, str]) -> int:
        if self.grade is None:
            return -1
        value = attributes.get(self.grade)
        return self.grade_values.index(value) if value in self.grade_values else -1


@dataclass(frozen=True)
class Pair:
    """One annotated image: ``name`` is the image's file stem."""

    name: str
    image: Path
    mask: Path


@dataclass
class Sample:
    """An image at the model's resolution with its class map (255 = ignore) and grade."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    target: np.ndarray  # (H, W) uint8
    grade: int = -1


def find_pairs(folder: str | os.PathLike[str], mask_suffix: str = "_mask") -> list[Pair]:
    """Image / mask pairs in ``folder``, sorted by name; an image without its mask is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder; give a folder of image / mask pairs "
                           f"(NAME.jpg with NAME{mask_suffix}.png)")
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    pairs = []
    for p in sorted(files.values()):
        if p.suffix.lower() not in IMAGE_SUFFIXES or p.stem.endswith(mask_suffix):
            continue
        masks = [files[n] for n in (p.stem + mask_suffix + s for s in MASK_SUFFIXES) if n in files]
        if not masks:
            raise DatasetError(f"{p} has no mask ({p.stem}{mask_suffix}.png or .tif); add it or "
                               "move the image out of the folder")
        pairs.append(Pair(p.stem, p, masks[0]))
    if not pairs:
        raise DatasetError(f"{folder} holds no image / mask pairs (NAME.jpg with "
                           f"NAME{mask_suffix}.png); check the folder")
    return _natural_sort(pairs)


def _natural_sort(pairs: list[Pair]) -> list[Pair]:
    import re

    def key(p: Pair) -> list[Any]:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    return sorted(pairs, key=key)


def read_attributes(path: str | os.PathLike[str], key: str = "name") -> dict[str, dict[str, str]]:
    """Rows of a CSV of per-image attributes, by the value of column ``key``."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or key not in reader.fieldnames:
                raise DatasetError(f"{path} has no column {key!r} (columns: "
                                   f"{reader.fieldnames}); name the image column {key!r}")
            return {row[key]: dict(row) for row in reader}
    except OSError as err:
        raise DatasetError(f"cannot read attributes {path} ({err.strerror or err}); check the "
                           "path given to --attributes") from err


def read_image(path: Path) -> np.ndarray:
    """An image file as a numpy array (JPEG/PNG through imagecodecs, TIFF through tifffile)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        import imagecodecs

        return imagecodecs.imread(str(path))
    except Exception as err:  # decoders raise many types; all mean "not a readable image"
        raise DatasetError(f"cannot read {path} ({type(err).__name__}: {err}); replace the file "
                           "or remove the pair") from err


def _rgb(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise DatasetError(f"{path} is {image.dtype} {image.shape}; images must be 8-bit RGB")
    return np.ascontiguousarray(image[:, :, :3])


def _weights(size: int, ratio: float) -> tuple[int, Any]:
    """(input pixels used, weights) shrinking ``size`` pixels by ``ratio``; a partial last
    output pixel is dropped, so every output pixel is a full average."""
    count = max(1, int(size / ratio + 1e-9))
    _, n_in, matrix = area_weights(0, count, 0.0, ratio)
    return min(n_in, size), matrix[:, :size]


def resample_image(image: np.ndarray, ratio: float) -> np.ndarray:
    """Shrink an (H, W, 3) uint8 image by ``ratio`` >= 1 with exact area averaging."""
    if abs(ratio - 1.0) < 1e-6:
        return image
    (h, rows), (w, cols) = _weights(image.shape[0], ratio), _weights(image.shape[1], ratio)
    return resample_area(np.ascontiguousarray(image[:h, :w]), rows, cols)


def resample_labels(labels: np.ndarray, ratio: float, num_classes: int) -> np.ndarray:
    """Shrink a class map by ``ratio``: each output pixel takes the class covering most of it."""
    if abs(ratio - 1.0) < 1e-6:
        return labels
    (h, rows), (w, cols) = _weights(labels.shape[0], ratio), _weights(labels.shape[1], ratio)
    labels = labels[:h, :w]
    values = list(range(num_classes)) + [IGNORE_INDEX]
    area = np.stack([cols @ (rows @ (labels == v).astype(np.float32)).T for v in values])
    area = area.transpose(0, 2, 1)
    majority: np.ndarray = np.asarray(values, dtype=np.uint8)[np.argmax(area, axis=0)]
    return majority


def _tissue(image: np.ndarray, image_mpp: float, mask_mpp: float = 2.0) -> np.ndarray:
    """The tissue mask at ``image_mpp``, computed at ``mask_mpp`` (same rule as the slides')."""
    ratio = max(1.0, mask_mpp / image_mpp)
    small = resample_image(image, ratio)
    mask = tissue_mask(small, pixel_um=image_mpp * ratio)
    rows = np.minimum((np.arange(image.shape[0]) / ratio).astype(int), mask.shape[0] - 1)
    cols = np.minimum((np.arange(image.shape[1]) / ratio).astype(int), mask.shape[1] - 1)
    tissue: np.ndarray = mask[rows[:, None], cols[None, :]]
    return tissue


def load_sample(pair: Pair, scheme: LabelScheme, attributes: Mapping[str, str],
                image_mpp: float, target_mpp: float) -> Sample:
    """Read a pair, build its class map at ``image_mpp``, and shrink both to ``target_mpp``."""
    if target_mpp < image_mpp * (1 - 1e-6):
        raise DatasetError(f"{pair.image} is at {image_mpp} um/px, coarser than the model's "
                           f"{target_mpp} um/px; use images scanned at {target_mpp} um/px or finer")
    image = _rgb(read_image(pair.image), pair.image)
    mask = read_image(pair.mask)
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.shape != image.shape[:2]:
        raise DatasetError(f"{pair.mask} is {mask.shape[1]}x{mask.shape[0]} px but its image is "
                           f"{image.shape[1]}x{image.shape[0]}; masks must match their images")
    tissue = _tissue(image, image_mpp) if scheme.needs_tissue else None
    target = scheme.apply(mask, attributes, tissue)
    ratio = target_mpp / image_mpp
    return Sample(pair.name, resample_image(image, ratio),
                  resample_labels(target, ratio, scheme.num_classes), scheme.grade_of(attributes))


def load_folder(folder: str | os.PathLike[str], scheme: LabelScheme, image_mpp: float,
                target_mpp: float, attributes: Mapping[str, Mapping[str, str]] | None = None,
                mask_suffix: str = "_mask") -> list[Sample]:
    """Every pair of ``folder`` as samples at ``target_mpp`` (see :func:`load_sample`)."""
    if not (isinstance(image_mpp, (int, float)) and image_mpp > 0):
        raise ConfigError(IMAGE_MPP_ERROR.format(value=image_mpp))
    pairs = find_pairs(folder, mask_suffix)
    needed = scheme.attribute_columns
    samples = []
    for pair in pairs:
        row = (attributes or {}).get(pair.name)
        if needed and row is None:
            raise DatasetError(f"{pair.image.name} has no row in the attributes table, which "
                               f"the label scheme needs (columns {sorted(needed)}); add a row "
                               "named after the image's file stem")
        samples.append(load_sample(pair, scheme, row or {}, image_mpp, target_mpp))
    logger.info("%s: %d images at %.3g um/px", folder, len(samples), target_mpp)
    return samples
