"""A result's artefact labels (``labels/qc``) as the exports show them: each value's name and
colour, read from the label image's own NGFF ``image-label`` metadata, so the png and the
GeoJSON name and colour an artefact as napari and the viewer do.

A value the metadata does not describe (a result whose label image lacks or garbles it) takes
the name and colour wsiseg writes for it (``wsiseg.slide.artefacts``), with a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import zarr

from wsiseg.errors import ResultError
from wsiseg.result.info import ResultInfo
from wsiseg.result.pyramid import LABELS_GROUP, QC_LABEL
from wsiseg.result.store import qc_array
from wsiseg.slide.artefacts import QC_COLOURS, QC_NAMES

logger = logging.getLogger(__name__)

#: The most artefact values the exports tell apart (one bit each).
MAX_ARTEFACTS = 32


@dataclass(frozen=True)
class Artefact:
    """One value of the artefact labels: its name and display colour (RGB)."""

    value: int
    name: str
    color: tuple[int, int, int]


def _by_value(entries: Any, key: str) -> dict[int, Any]:
    """``{label-value: entry[key]}`` of an ``image-label`` list, skipping malformed entries."""
    out: dict[int, Any] = {}
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, dict):
                value = entry.get("label-value")
                if isinstance(value, int) and not isinstance(value, bool) and key in entry:
                    out[value] = entry[key]
    return out


def _rgb(rgba: Any) -> tuple[int, int, int] | None:
    if (isinstance(rgba, list) and len(rgba) in (3, 4)
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
                    for v in rgba)):
        return rgba[0], rgba[1], rgba[2]
    return None


def artefact_labels(group: zarr.Group) -> tuple[Artefact, ...]:
    """The artefacts (values 1 to 255) the ``labels/qc`` image of the result ``group``
    describes, by value, with the standard ones it leaves out."""
    try:
        attrs = group[f"{LABELS_GROUP}/{QC_LABEL}"].attrs.get("ome", {})
    except KeyError:
        attrs = {}
    label = attrs.get("image-label", {}) if isinstance(attrs, dict) else {}
    label = label if isinstance(label, dict) else {}
    names = _by_value(label.get("properties"), "name")
    colours = _by_value(label.get("colors"), "rgba")
    values = sorted(v for v in {*names, *colours, *QC_NAMES} if 0 < v < 256)
    out: list[Artefact] = []
    guessed = []
    for value in values[:MAX_ARTEFACTS]:
        name, colour = names.get(value), _rgb(colours.get(value))
        if not isinstance(name, str) or not name.strip() or colour is None:
            guessed.append(value)
        out.append(Artefact(
            value,
            name if isinstance(name, str) and name.strip() else QC_NAMES.get(value,
                                                                              f"artefact {value}"),
            colour or QC_COLOURS.get(value, (255, 0, 200))))
    if guessed:
        logger.warning("the artefact labels' metadata does not name or colour value(s) %s; "
                       "they are shown as wsiseg writes them", guessed)
    return tuple(out)


def require_qc(result: str | os.PathLike[str], group: zarr.Group,
               info: ResultInfo, option: str) -> zarr.Array[Any]:
    """The artefact labels of ``result``, or a one-line error saying it has none and that
    ``option`` needs them."""
    qc = qc_array(group, info)
    if qc is None:
        raise ResultError(
            f"{result} has no artefact labels (labels/qc): it was predicted with --qc off or "
            f"before artefacts were looked for; export it without {option}, or predict the "
            f"slide again with --qc record")
    return qc
