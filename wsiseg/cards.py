"""Model cards (plain data, no torch): everything needed to use a network's output correctly travels with its weights.

A card names the architecture and its arguments, the classes (index, name, colour), the
analysis resolution, the patch size and stride, and the input normalisation. Cards are plain
JSON (``to_json``/``from_json``) and are validated on creation: a bad card raises
:class:`wsiseg.errors.ModelError` with one line naming the field, the value and the fix.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from wsiseg.errors import ModelError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNEL_ORDERS = ("RGB", "BGR")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _CardProblem(ModelError):
    """A card field is invalid; ``problem`` is the message without the card's name."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its channel ``index``, ``name`` and display ``color`` (RGB 0..255)."""

    index: int
    name: str
    color: tuple[int, int, int]


# The diagnostic map's standard classes; HSP-Net predicts the first five.
DIAGNOSTIC_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "background", (0, 0, 0)),
    ClassInfo(1, "normal", (0, 160, 0)),
    ClassInfo(2, "CIN1", (255, 220, 0)),
    ClassInfo(3, "CIN2", (255, 140, 0)),
    ClassInfo(4, "CIN3", (220, 0, 0)),
    ClassInfo(5, "tumour", (128, 0, 128)),
)


@dataclass(frozen=True)
class ModelCard:
    """What a network is, what it predicts and at which resolution and normalisation.

    ``mean``/``std`` are in 0..1 units and apply to RGB (or BGR, per ``channel_order``) scaled
    to 0..1. ``weights`` is a file name beside the card (installed cards) and
    ``weights_sha256`` its checksum, checked when the card is used to load it.
    """

    name: str
    architecture: str
    classes: tuple[ClassInfo, ...]
    arguments: dict[str, Any] = field(default_factory=dict)
    mpp: float = 1.0
    patch_size: int = 400
    stride: int = 100
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    description: str = ""
    weights: str | None = None
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        # Normalise containers so that cards built by hand and from JSON compare equal.
        object.__setattr__(self, "arguments", dict(self.arguments)
                           if isinstance(self.arguments, Mapping) else self.arguments)
        for name in ("classes", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.weights_sha256, str):
            object.__setattr__(self, "weights_sha256", self.weights_sha256.lower())
        problem = _find_problem(self)
        if problem is not None:
            raise _CardProblem(f"model card {self.name!r}: {problem}", problem)

    @property
    def num_classes(self) -> int:
        """Number of output classes (channels of the logits)."""
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (lists, not tuples) that :meth:`from_dict` reads back."""
        d = asdict(self)
        d["classes"] = [{"index": c.index, "name": c.name, "color": list(c.color)}
                        for c in self.classes]
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["arguments"] = json.loads(json.dumps(self.arguments))
        return d

    def to_json(self) -> str:
        """The card as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Any, source: str = "model card") -> ModelCard:
        """Validate and build a card from a dict; ``source`` names it in error messages."""
        if not isinstance(d, Mapping):
            raise ModelError(f"{source}: a model card must be a JSON object, got "
                             f"{type(d).__name__}; see models/README.md for the fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"{source}: unknown card field(s) {unknown}; remove them "
                             f"(known fields: {', '.join(sorted(known))})")
        missing = [k for k in ("name", "architecture", "classes") if k not in d]
        if missing:
            raise ModelError(f"{source}: card field(s) {missing} missing; add them "
                             "(see models/README.md)")
        kw = dict(d)
        kw["classes"] = _classes_from_json(kw["classes"], source)
        for key in ("mean", "std"):
            if isinstance(kw.get(key), list):
                kw[key] = tuple(kw[key])
        try:
            return cls(**kw)
        except _CardProblem as err:
            raise ModelError(f"{source}: {err.problem}") from err

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "model card") -> ModelCard:
        """Parse and validate a card from JSON text; ``source`` names it in error messages."""
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelError(f"{source} is not valid JSON ({err}); fix the file or write it "
                             "with ModelCard.to_json()") from err
        return cls.from_dict(d, source=source)


def _classes_from_json(value: Any, source: str) -> Any:
    """Turn a JSON list of {index, name, color} objects into ClassInfo; leave others be."""
    if not isinstance(value, (list, tuple)):
        return value  # reported by validation
    out = []
    for i, c in enumerate(value):
        if isinstance(c, ClassInfo):
            out.append(c)
            continue
        if not isinstance(c, Mapping) or set(c) != {"index", "name", "color"}:
            raise ModelError(
                f"{source}: field 'classes'[{i}] = {c!r} must be an object with exactly "
                '"index", "name" and "color", e.g. {"index": 0, "name": "background", '
                '"color": [0, 0, 0]}')
        color = c["color"]
        out.append(ClassInfo(c["index"], c["name"],
                             tuple(color) if isinstance(color, list) else color))
    return tuple(out)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _find_problem(card: ModelCard) -> str | None:
    """The first thing wrong with ``card`` as 'field = value, fix' text, or None."""
    if not isinstance(card.name, str) or not card.name.strip():
        return f"field 'name' = {card.name!r} must be a non-empty string"
    if not isinstance(card.architecture, str) or not card.architecture.strip():
        return (f"field 'architecture' = {card.architecture!r} must be a registered model name, "
                "e.g. 'hspnet_r34' (see `wsiseg models`)")
    if not isinstance(card.arguments, dict) or not all(isinstance(k, str) for k in card.arguments):
        return (f"field 'arguments' = {card.arguments!r} must be an object of keyword arguments, "
                'e.g. {"num_classes": 5}')
    try:
        json.dumps(card.arguments)
    except (TypeError, ValueError):
        return (f"field 'arguments' = {card.arguments!r} must hold only JSON values "
                "(numbers, strings, lists, objects)")
    problem = _classes_problem(card.classes)
    if problem:
        return problem
    k = card.arguments.get("num_classes")
    if k is not None and k != len(card.classes):
        return (f"field 'arguments' has num_classes = {k!r} but 'classes' lists "
                f"{len(card.classes)}; make them agree")
    if not _is_number(card.mpp) or card.mpp <= 0:
        return (f"field 'mpp' = {card.mpp!r} must be a number > 0 (the analysis resolution in "
                "um/px, e.g. 1.0 for x10)")
    if not _is_int(card.patch_size) or card.patch_size <= 0:
        return f"field 'patch_size' = {card.patch_size!r} must be a positive integer, e.g. 400"
    if not _is_int(card.stride) or not 0 < card.stride <= card.patch_size:
        return (f"field 'stride' = {card.stride!r} must be an integer in 1..patch_size "
                f"({card.patch_size}), e.g. 100")
    for key in ("mean", "std"):
        v = getattr(card, key)
        if not isinstance(v, tuple) or len(v) != 3 or not all(_is_number(x) for x in v):
            shown = list(v) if isinstance(v, tuple) else v
            return f"field '{key}' = {shown!r} must be three numbers, one per channel"
    if not all(0 <= x <= 1 for x in card.mean):
        return (f"field 'mean' = {list(card.mean)!r} must be in 0..1 units (pixels scaled to "
                "0..1); divide 0..255 values by 255")
    if not all(0 < x <= 1 for x in card.std):
        return (f"field 'std' = {list(card.std)!r} must be in (0, 1] (0..1 units); "
                "divide 0..255 values by 255 and never use 0")
    if card.channel_order not in CHANNEL_ORDERS:
        return f"field 'channel_order' = {card.channel_order!r} must be 'RGB' or 'BGR'"
    description: object = card.description  # from JSON, whatever the annotation says
    if not isinstance(description, str):
        return f"field 'description' = {description!r} must be a string"
    if card.weights is not None and (
        not isinstance(card.weights, str) or not card.weights
        or "/" in card.weights or "\\" in card.weights or card.weights in (".", "..")
    ):
        return (f"field 'weights' = {card.weights!r} must be a plain file name in the card's "
                "folder, e.g. 'hspnet_r34_mtchi.pt', or null")
    if card.weights_sha256 is not None and (
        not isinstance(card.weights_sha256, str) or not _SHA256.fullmatch(card.weights_sha256)
    ):
        return (f"field 'weights_sha256' = {card.weights_sha256!r} must be 64 hex digits "
                "(`sha256sum FILE`) or null")
    return None


def _classes_problem(classes: Any) -> str | None:
    if not isinstance(classes, tuple) or not classes:
        return (f"field 'classes' = {classes!r} must be a non-empty list of "
                '{"index", "name", "color"} objects')
    for i, c in enumerate(classes):
        if not isinstance(c, ClassInfo):
            return f"field 'classes'[{i}] = {c!r} must be a ClassInfo(index, name, color)"
        if not _is_int(c.index) or c.index != i:
            return (f"field 'classes'[{i}] has index {c.index!r}; indices must be 0..K-1 in "
                    f"order (expected {i})")
        if not isinstance(c.name, str) or not c.name.strip():
            return f"field 'classes'[{i}] has name {c.name!r}; give a non-empty class name"
        color = c.color
        if (not isinstance(color, tuple) or len(color) != 3
                or not all(_is_int(x) and 0 <= x <= 255 for x in color)):
            shown = list(color) if isinstance(color, tuple) else color
            return (f"field 'classes'[{i}] ({c.name}) has color {shown!r}; give three integers "
                    "0..255, e.g. [220, 0, 0]")
    names = [c.name for c in classes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        return f"field 'classes' repeats the name(s) {dupes}; class names must be unique"
    return None
