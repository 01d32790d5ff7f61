"""What a result records about itself: :class:`ResultInfo`, typed, and its JSON attributes.

A prediction stores a :class:`ResultInfo` as the ``wsiseg`` attribute of its zarr group
(:meth:`ResultInfo.to_attrs`); everything that reads a result gets it back, validated, from
:meth:`ResultInfo.from_attrs` (through :func:`wsiseg.result.store.open_result`), so readers use
fields rather than string lookups, and a damaged or foreign store fails in one place, with one
line naming the result, what is wrong and the way out.

``layout`` is the version of the on-disk layout: a wsiseg refuses results of a layout newer than
:data:`LAYOUT` rather than misread them. A field that older results lack reads as what those
results were made with (no damage, no warnings, no test-time augmentation, no uncertainty
array, layout 1); one written before its review reasons were recorded has ``review`` None.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args

from wsiseg._version import __version__
from wsiseg.cards import ClassInfo
from wsiseg.errors import ResultError
from wsiseg.result.reading import REDO
from wsiseg.slide.remote import slide_location

#: The result layout this wsiseg writes and the newest it reads.
LAYOUT = 2

#: How a result's ``uncertainty`` array was computed: the normalised entropy of the blended
#: class probabilities, or (with test-time augmentation) the larger of that and the views'
#: normalised mutual information (``wsiseg.inference.stitcher.uncertainty``).
UncertaintyMeasure = Literal["entropy", "entropy+views"]
UNCERTAINTY_MEASURES: tuple[UncertaintyMeasure, ...] = get_args(UncertaintyMeasure)


@dataclass(frozen=True)
class SlideSource:
    """The slide a result was made from, as it was when predicted."""

    path: Path  # absolute, on the machine that predicted
    size_bytes: int
    vendor: str
    dimensions: tuple[int, int]  # level 0, (width, height)
    bounds: tuple[int, int, int, int]  # x, y, width, height of the scanned area at level 0
    mpp: tuple[float, float]  # level 0, (x, y) um/px
    mpp_source: str  # "metadata", or "user" when given as --slide-mpp
    quickhash: str | None  # openslide.quickhash-1
    #: Who read it: "openslide", "ome-tiff", "ome-zarr" or "tiff-stream" (a slide at a URL);
    #: "" in results written before this was recorded.
    reader: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """The model that made a result."""

    name: str
    source: str  # registry name or the file it was loaded from
    card: dict[str, Any]  # the model card as JSON (ModelCard.to_dict)
    weights_sha256: str | None


@dataclass(frozen=True)
class TissueSampling:
    """Where the pixels of the result's ``tissue`` mask lie on the slide."""

    factor: int  # analysis pixels per mask pixel
    mpp: tuple[float, float]
    scale_to_level0: tuple[float, float]
    offset_level0: tuple[int, int]


@dataclass(frozen=True)
class DamagedArea:
    """A region of the slide that could not be decoded and was skipped (``--skip-damaged``):
    tiles of one row of ``level`` side by side, as one level-0 box ``(x, y, width, height)``.
    Windows touching it were not predicted, and it is marked in the ``damaged`` mask."""

    level: int
    box_level0: tuple[int, int, int, int]
    reason: str  # the decoder's message


@dataclass(frozen=True)
class ResultInfo:
    """A finished result: the map's frame on the slide, its classes, and how it was made.

    Map pixel (x, y) covers level-0 pixels ``[ox + x sx, ox + (x + 1) sx)`` horizontally, and
    likewise vertically, with ``(sx, sy) = scale_to_level0`` and ``(ox, oy) = offset_level0``.
    ``path`` is where the result is now; it is not stored.
    """

    path: Path
    version: str  # the wsiseg that wrote it
    slide: SlideSource
    level: int  # slide level read
    level_downsample: float
    resample: tuple[float, float]  # read-level pixels per map pixel
    analysis_mpp: tuple[float, float]
    scale_to_level0: tuple[float, float]
    offset_level0: tuple[int, int]
    shape: tuple[int, int]  # (height, width) of ``labels``
    classes: tuple[ClassInfo, ...]
    model: ModelInfo
    patch_size: int
    stride: int
    sigma: float
    tissue_threshold: float
    tissue: TissueSampling
    patches_total: int
    patches_kept: int
    patches_predicted: int  # windows across a column-stripe edge count once per side
    stripes: int
    seconds: float
    timings: dict[str, float]  # seconds per stage
    config: dict[str, Any]  # the PredictConfig as given (None: from the model card)
    layout: int = LAYOUT
    damaged_regions: tuple[DamagedArea, ...] = ()  # skipped, unreadable; see DamagedArea
    warnings: tuple[str, ...] = ()  # what looked wrong with the slide (colour_warnings)
    tta: str = "none"  # test-time augmentation: none, flip or d4 (views averaged per window)
    # How its uncertainty array was computed; None: it has none (written before there was one).
    uncertainty: UncertaintyMeasure | None = None
    # What made its artefact labels (labels/qc): the --qc mode, record or exclude; None: it
    # has none (--qc off, or written before artefacts were looked for).
    qc: str | None = None
    # Why the slide is to be looked at before its numbers are used, under the default review
    # rules when it was published (wsiseg.result.review; empty: no reason found); None:
    # written before the reasons were recorded.
    review: tuple[str, ...] | None = None
    # What ran the network: the device (cpu, or cuda:N and the GPU's name) and the precision
    # of its arithmetic (fp32, bf16 or fp16); None: written before they were recorded.
    device: str | None = None
    precision: str | None = None
    batch_size: int | None = None  # windows per forward pass, as given or measured

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def damaged_count(self) -> int:
        return len(self.damaged_regions)

    @property
    def damaged_area_mm2(self) -> float:
        """Level-0 area of the damaged regions (boxes of different levels may overlap)."""
        pixels = sum(a.box_level0[2] * a.box_level0[3] for a in self.damaged_regions)
        return pixels * self.slide.mpp[0] * self.slide.mpp[1] / 1e6

    def to_attrs(self) -> dict[str, Any]:
        """The JSON stored as the result's ``wsiseg`` attribute."""
        s, m, t = self.slide, self.model, self.tissue
        return {
            "layout": self.layout,
            "version": self.version,
            "slide": {
                "path": str(s.path),
                "size_bytes": s.size_bytes,
                "vendor": s.vendor,
                "dimensions": list(s.dimensions),
                "bounds": list(s.bounds),
                "mpp": list(s.mpp),
                "mpp_source": s.mpp_source,
                "quickhash": s.quickhash,
                "reader": s.reader,
            },
            "level": self.level,
            "level_downsample": self.level_downsample,
            "resample": list(self.resample),
            "analysis_mpp": list(self.analysis_mpp),
            "scale_to_level0": list(self.scale_to_level0),
            "offset_level0": list(self.offset_level0),
            "shape": list(self.shape),
            "classes": [
                {"index": c.index, "name": c.name, "color": list(c.color)} for c in self.classes
            ],
            "model": {
                "name": m.name,
                "source": m.source,
                "card": m.card,
                "weights_sha256": m.weights_sha256,
            },
            "patch_size": self.patch_size,
            "stride": self.stride,
            "sigma": self.sigma,
            "tissue_threshold": self.tissue_threshold,
            "tta": self.tta,
            "tissue": {
                "factor": t.factor,
                "mpp": list(t.mpp),
                "scale_to_level0": list(t.scale_to_level0),
                "offset_level0": list(t.offset_level0),
            },
            "patches_total": self.patches_total,
            "patches_kept": self.patches_kept,
            "patches_predicted": self.patches_predicted,
            "stripes": self.stripes,
            "seconds": self.seconds,
            "timings": dict(self.timings),
            "config": dict(self.config),
            "damaged_count": self.damaged_count,
            "damaged_regions": [
                {"level": a.level, "box_level0": list(a.box_level0), "reason": a.reason}
                for a in self.damaged_regions
            ],
            "warnings": list(self.warnings),
            **({} if self.uncertainty is None else {"uncertainty": self.uncertainty}),
            **({} if self.qc is None else {"qc": self.qc}),
            **({} if self.review is None else {"review": list(self.review)}),
            **({} if self.device is None else {"device": self.device}),
            **({} if self.precision is None else {"precision": self.precision}),
            **({} if self.batch_size is None else {"batch_size": self.batch_size}),
        }

    @classmethod
    def from_attrs(cls, attrs: Any, path: str | os.PathLike[str]) -> ResultInfo:
        """Parse and validate the ``wsiseg`` attribute of the result at ``path``.

        Raises :class:`ResultError` for a missing or ill-typed value, and for a layout newer
        than this wsiseg reads.
        """
        path = Path(path)
        try:
            _check_numbers(attrs, "wsiseg")
            top = _Fields(attrs, "wsiseg")
            # Read first: a newer layout may have moved or renamed anything else.
            layout = top.integer("layout") if "layout" in top else 1  # written before versioning
            if layout > LAYOUT:
                raise ResultError(
                    f"{path} has result layout {layout}, but this wsiseg ({__version__}) reads "
                    f"layout {LAYOUT}; upgrade wsiseg to open it")
            if layout < 1:
                raise _Invalid(f"'layout' is {layout}, not 1 or more")
            s, m, t = top.section("slide"), top.section("model"), top.section("tissue")
            info = cls(
                path=path,
                version=top.text("version"),
                slide=SlideSource(
                    path=slide_location(s.text("path")),  # a URL stays one
                    size_bytes=s.integer("size_bytes"),
                    vendor=s.text("vendor"),
                    dimensions=s.int_pair("dimensions"),
                    bounds=s.int_box("bounds"),
                    mpp=s.number_pair("mpp"),
                    mpp_source=s.text("mpp_source"),
                    quickhash=s.optional_text("quickhash"),
                    reader=(s.optional_text("reader") or "") if "reader" in s.obj else "",
                ),
                level=top.integer("level"),
                level_downsample=top.number("level_downsample"),
                resample=top.number_pair("resample"),
                analysis_mpp=top.number_pair("analysis_mpp"),
                scale_to_level0=top.number_pair("scale_to_level0"),
                offset_level0=top.int_pair("offset_level0"),
                shape=top.int_pair("shape"),
                classes=tuple(_class(c) for c in top.items("classes")),
                model=ModelInfo(
                    name=m.text("name"),
                    source=m.text("source"),
                    card=m.mapping("card"),
                    weights_sha256=m.optional_text("weights_sha256"),
                ),
                patch_size=top.integer("patch_size"),
                stride=top.integer("stride"),
                sigma=top.number("sigma"),
                tissue_threshold=top.number("tissue_threshold"),
                tissue=TissueSampling(
                    factor=t.integer("factor"),
                    mpp=t.number_pair("mpp"),
                    scale_to_level0=t.number_pair("scale_to_level0"),
                    offset_level0=t.int_pair("offset_level0"),
                ),
                patches_total=top.integer("patches_total"),
                patches_kept=top.integer("patches_kept"),
                patches_predicted=top.integer("patches_predicted"),
                stripes=top.integer("stripes"),
                seconds=top.number("seconds"),
                timings=top.section("timings").all_numbers(),
                config=top.mapping("config"),
                layout=layout,
                damaged_regions=_damaged(top),
                warnings=_warnings(top),
                # Written before test-time augmentation was recorded: there was none.
                tta=top.text("tta") if "tta" in top else "none",
                uncertainty=_uncertainty(top),
                qc=_qc(top),
                review=_review(top),
                device=top.text("device") if "device" in top else None,
                precision=_precision(top),
                batch_size=top.integer("batch_size") if "batch_size" in top else None,
            )
            _check_values(info)
            return info
        except _Edited as err:
            raise ResultError(f"{path} records {err}; the result was edited or damaged since "
                              f"wsiseg predict wrote it; {REDO}") from None
        except _Invalid as err:
            raise ResultError(f"{path} is not a finished wsiseg result ({err}); give the .zarr "
                              "that wsiseg predict wrote, or predict the slide again") from None


#: What a field of :class:`ResultInfo` is to a rerun that finds the result in its place:
#: ``slide``, which slide it was made from (kept only for the same slide); ``settings``, how it
#: was made (kept only when the settings that change the map are the same, compared through
#: ``config``: ``wsiseg.inference.config.changed_settings``); ``produced``, what the run made or
#: measured and where the result is: these follow from the other two, and a rerun compares none
#: of them (it only asks whether ``damaged_regions`` left holes in the map).
FieldRole = Literal["slide", "settings", "produced"]
FIELD_ROLES: dict[str, FieldRole] = {
    "path": "produced",
    "version": "produced",
    "slide": "slide",
    "level": "produced",
    "level_downsample": "produced",
    "resample": "produced",
    "analysis_mpp": "produced",
    "scale_to_level0": "produced",
    "offset_level0": "produced",
    "shape": "produced",
    "classes": "settings",
    "model": "settings",
    "patch_size": "settings",
    "stride": "settings",
    "sigma": "settings",
    "tissue_threshold": "settings",
    "tissue": "produced",
    "patches_total": "produced",
    "patches_kept": "produced",
    "patches_predicted": "produced",
    "stripes": "produced",
    "seconds": "produced",
    "timings": "produced",
    "config": "settings",
    "layout": "produced",
    "damaged_regions": "produced",
    "warnings": "produced",
    "tta": "settings",
    "uncertainty": "produced",
    "qc": "produced",
    "review": "produced",
    "device": "produced",
    "precision": "produced",
    "batch_size": "produced",
}


class _Invalid(Exception):
    """A stored value is missing or of the wrong kind; the message says which, in a few words."""


class _Edited(_Invalid):
    """A stored value of the right kind that wsiseg predict cannot have written: out of range,
    or not consistent with the others; the message names it and says why, in a few words."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_integer(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Fields:
    """Typed reads from one JSON object of the attributes; ``name`` is its key path."""

    def __init__(self, obj: Any, name: str) -> None:
        if not isinstance(obj, Mapping):
            raise _Invalid(f"{name!r} is {_show(obj)}, not an object")
        self.obj, self.name = obj, name

    def __contains__(self, key: str) -> bool:
        return key in self.obj

    def _key(self, key: str) -> str:
        return key if self.name == "wsiseg" else f"{self.name}.{key}"

    def _get(self, key: str) -> Any:
        if key not in self.obj:
            raise _Invalid(f"no {self._key(key)!r}")
        return self.obj[key]

    def _wrong(self, key: str, value: Any, kind: str) -> _Invalid:
        return _Invalid(f"{self._key(key)!r} is {_show(value)}, not {kind}")

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not _is_integer(value):
            raise self._wrong(key, value, "a whole number")
        return value

    def number(self, key: str) -> float:
        value = self._get(key)
        if not _is_number(value):
            raise self._wrong(key, value, "a number")
        return value

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._wrong(key, value, "text")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._get(key)
        if not (value is None or isinstance(value, str)):
            raise self._wrong(key, value, "text or null")
        return value

    def integers(self, key: str, n: int) -> tuple[int, ...]:
        value = self._get(key)
        if not (isinstance(value, (list, tuple)) and len(value) == n
                and all(_is_integer(v) for v in value)):
            raise self._wrong(key, value, f"{n} whole numbers")
        return tuple(value)

    def int_pair(self, key: str) -> tuple[int, int]:
        x, y = self.integers(key, 2)
        return x, y

    def int_box(self, key: str) -> tuple[int, int, int, int]:
        x, y, w, h = self.integers(key, 4)
        return x, y, w, h

    def colour(self, key: str) -> tuple[int, int, int]:
        r, g, b = self.integers(key, 3)
        return r, g, b

    def number_pair(self, key: str) -> tuple[float, float]:
        x, y = self.numbers(key, 2)
        return x, y

    def numbers(self, key: str, n: int) -> tuple[float, ...]:
        value = self._get(key)
        if not (isinstance(value, (list, tuple)) and len(value) == n
                and all(_is_number(v) for v in value)):
            raise self._wrong(key, value, f"{n} numbers")
        return tuple(value)

    def items(self, key: str) -> list[_Fields]:
        value = self._get(key)
        if not isinstance(value, (list, tuple)):
            raise self._wrong(key, value, "a list")
        return [_Fields(v, f"{self._key(key)}[{i}]") for i, v in enumerate(value)]

    def mapping(self, key: str) -> dict[str, Any]:
        value = self._get(key)
        if not isinstance(value, Mapping):
            raise self._wrong(key, value, "an object")
        return dict(value)

    def section(self, key: str) -> _Fields:
        return _Fields(self._get(key), self._key(key))

    def all_numbers(self) -> dict[str, float]:
        return {key: self.number(key) for key in self.obj}


def _damaged(top: _Fields) -> tuple[DamagedArea, ...]:
    if "damaged_regions" not in top:  # written before damaged regions were recorded
        return ()
    areas = tuple(DamagedArea(f.integer("level"), f.int_box("box_level0"), f.text("reason"))
                  for f in top.items("damaged_regions"))
    if "damaged_count" in top and top.integer("damaged_count") != len(areas):
        raise _Invalid(f"'damaged_count' is {top.integer('damaged_count')} but "
                       f"'damaged_regions' lists {len(areas)}")
    return areas


#: The --qc modes that write artefact labels.
QC_RECORDED = ("record", "exclude")


#: The precisions a result may record its network ran in.
PRECISIONS_RECORDED = ("fp32", "bf16", "fp16")


def _precision(top: _Fields) -> str | None:
    if "precision" not in top:  # written before the precision was recorded
        return None
    value = top.text("precision")
    if value in PRECISIONS_RECORDED:
        return value
    raise top._wrong("precision", value, f"one of {', '.join(PRECISIONS_RECORDED)}")


def _qc(top: _Fields) -> str | None:
    if "qc" not in top:  # --qc off, or written before artefacts were looked for
        return None
    value = top.text("qc")
    if value in QC_RECORDED:
        return value
    raise top._wrong("qc", value, f"one of {', '.join(QC_RECORDED)}")


def _uncertainty(top: _Fields) -> UncertaintyMeasure | None:
    if "uncertainty" not in top:  # written before the uncertainty array, or without it
        return None
    value = top.text("uncertainty")
    for measure in UNCERTAINTY_MEASURES:  # the Literal itself, for the type
        if value == measure:
            return measure
    raise top._wrong("uncertainty", value, f"one of {', '.join(UNCERTAINTY_MEASURES)}")


def _warnings(top: _Fields) -> tuple[str, ...]:
    if "warnings" not in top:  # written before warnings were recorded
        return ()
    value = top.obj["warnings"]
    if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
        raise top._wrong("warnings", value, "a list of text")
    return tuple(value)


def _review(top: _Fields) -> tuple[str, ...] | None:
    if "review" not in top:  # written before the review reasons were recorded
        return None
    value = top.obj["review"]
    if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
        raise top._wrong("review", value, "a list of text")
    return tuple(value)


def _class(fields: _Fields) -> ClassInfo:
    return ClassInfo(fields.integer("index"), fields.text("name"), fields.colour("color"))


#: The largest whole number a result records (sizes, counts, coordinates): exact as a float.
MAX_INTEGER = 2**53
#: A slide with a bounds offset (its scanned area inside a larger, empty scan: Leica, MIRAX)
#: may extend past the map's far edge; by at most this many times that edge, per axis.
SCAN_MARGIN = 16


def _check_numbers(value: Any, key: str) -> None:
    """Refuse a number anywhere in ``value`` (JSON) that no result holds: a float that is not
    finite (JSON's ``NaN``, ``Infinity``) or a whole number too large to be exact as a float."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _Edited(f"{key!r} = {value}, not a finite number")
    if _is_integer(value) and abs(value) > MAX_INTEGER:
        raise _Edited(f"{key!r} = {_show(value)}, too large a number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_numbers(v, f"{key}.{k}" if key != "wsiseg" else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_numbers(v, f"{key}[{i}]")


def _at_least(key: str, values: Any, least: float, strict: bool = False) -> None:
    """Refuse ``values`` (a number or a sequence of them) below ``least`` (or at it)."""
    for v in values if isinstance(values, (list, tuple)) else (values,):
        if v < least or (strict and v == least):
            kind = f"{'above' if strict else 'at least'} {least:g}"
            raise _Edited(f"{key!r} = {_show(list(values) if isinstance(values, tuple) else values)}"
                          f", not {kind}")


def _check_values(info: ResultInfo) -> None:
    """Refuse values of the right kind that wsiseg predict cannot have written: sizes and
    resolutions that are not positive, classes out of 0..255, and a map, bounds and slide
    that do not fit each other (see ``docs/output-format.md``)."""
    s, t = info.slide, info.tissue
    checks: tuple[tuple[str, Any], ...]
    checks = (("slide.mpp", s.mpp), ("level_downsample", info.level_downsample),
                       ("resample", info.resample), ("analysis_mpp", info.analysis_mpp),
                       ("scale_to_level0", info.scale_to_level0), ("sigma", info.sigma),
                       ("tissue.mpp", t.mpp), ("tissue.scale_to_level0", t.scale_to_level0))
    for key, value in checks:
        _at_least(key, value, 0, strict=True)
    checks = (("slide.dimensions", s.dimensions), ("slide.bounds", s.bounds[2:]),
                       ("shape", info.shape), ("patch_size", info.patch_size),
                       ("stride", info.stride), ("tissue.factor", t.factor))
    for key, value in checks:
        _at_least(key, value, 1)
    checks = (("slide.size_bytes", s.size_bytes), ("slide.bounds", s.bounds[:2]),
                       ("level", info.level), ("offset_level0", info.offset_level0),
                       ("tissue.offset_level0", t.offset_level0),
                       ("patches_total", info.patches_total), ("patches_kept", info.patches_kept),
                       ("patches_predicted", info.patches_predicted), ("stripes", info.stripes),
                       ("seconds", info.seconds), ("timings", tuple(info.timings.values())))
    for key, value in checks:
        _at_least(key, value, 0)
    if not 0 <= info.tissue_threshold <= 1:
        raise _Edited(f"'tissue_threshold' = {info.tissue_threshold}, not a fraction of 0 to 1")
    _check_classes(info.classes)
    for i, area in enumerate(info.damaged_regions):
        _at_least(f"damaged_regions[{i}].level", area.level, 0)
        _at_least(f"damaged_regions[{i}].box_level0", area.box_level0[:2], 0)
        _at_least(f"damaged_regions[{i}].box_level0", area.box_level0[2:], 1)
    _check_frame(info)


def _check_classes(classes: tuple[ClassInfo, ...]) -> None:
    if not 1 <= len(classes) <= 256:
        raise _Edited(f"{len(classes)} classes, not 1 to 256")
    for i, c in enumerate(classes):
        if c.index != i:
            raise _Edited(f"'classes[{i}].index' = {c.index}, not {i} (classes are 0, 1, ... "
                          "in order)")
        if not all(0 <= v <= 255 for v in c.color):
            raise _Edited(f"'classes[{i}].color' = {list(c.color)}, not three values of 0 to 255")


def _check_frame(info: ResultInfo) -> None:
    """The map, the slide's bounds and its dimensions as ``plan_geometry`` makes them: the map
    starts at the bounds offset and covers the bounds, with less than one map pixel over
    (``ceil``); the bounds lie on the slide; and the slide is no larger than the map, by one
    map pixel, unless it has a bounds offset (then by at most :data:`SCAN_MARGIN` times)."""
    s = info.slide
    height, width = info.shape
    bounds_offset = any(info.offset_level0)
    for axis, (n, scale, offset, start, extent, size) in enumerate((
            (width, info.scale_to_level0[0], info.offset_level0[0], s.bounds[0], s.bounds[2],
             s.dimensions[0]),
            (height, info.scale_to_level0[1], info.offset_level0[1], s.bounds[1], s.bounds[3],
             s.dimensions[1]))):
        name = "xy"[axis]
        mpp = s.mpp[axis] * scale
        if not math.isclose(info.analysis_mpp[axis], mpp, rel_tol=1e-6):
            raise _Edited(f"'analysis_mpp' {name} = {info.analysis_mpp[axis]}, but the slide's "
                          f"{s.mpp[axis]} um/px at {scale} level-0 pixels per map pixel is "
                          f"{mpp:.6g}")
        if offset != start:
            raise _Edited(f"'offset_level0' {name} = {offset}, but the slide's bounds start at "
                          f"{start}")
        if info.tissue.offset_level0[axis] != offset:
            raise _Edited(f"'tissue.offset_level0' {name} = {info.tissue.offset_level0[axis]}, "
                          f"but the map starts at {offset}")
        covered = n * scale  # level-0 pixels the map covers from its offset
        slack = 1 + 1e-9 * (extent + covered)  # a level-0 pixel: rounding by whoever wrote it
        if not extent - slack <= covered < extent + scale + slack:
            raise _Edited(f"a map of {n} pixels ({name}) at {scale} level-0 pixels each, "
                          f"{covered:.6g} level-0 pixels, but the slide's bounds are {extent} "
                          "wide")
        if start + extent > size + scale + slack:
            raise _Edited(f"slide bounds to {start + extent} ({name}), past the slide's "
                          f"{size} pixels")
        far = offset + covered
        most = far * SCAN_MARGIN if bounds_offset else far + scale + slack
        if size > most:
            raise _Edited(f"'slide.dimensions' {name} = {size}, larger than the map covers "
                          f"({far:.6g} level-0 pixels)")
