"""The map as vector annotations: a GeoJSON FeatureCollection that QuPath imports as-is.

Each connected polygon of a class is one Feature (``objectType: annotation``) carrying the
class name and colour and its own ``Area um^2``. One Feature per region rather than one
MultiPolygon per class, because pathologists click, hide, delete and measure single regions in
QuPath; a per-class MultiPolygon is one object with one area, and a few huge ones are slower to
draw and edit there. The class is on every Feature, so QuPath's per-class totals still work.
Pixels of one class that touch only at a corner are separate polygons: a single polygon
cannot pinch to a point and stay valid.

Outlines follow the pixel edges exactly, holes included, and are traced rather than merged
from pixels: the labels are read in bands of chunk rows, never whole, and each band gives its
edge segments between two classes (maximal along a row or column while the pair of classes on
either side stays the same). Following the segments of a class end to end, which is a
permutation, gives its rings in a few vectorised passes; rings that run the other way round
are holes, each given to the smallest ring of its class around a pixel just inside it. Both
classes of an edge cut it at the same points, so the polygons of all classes form one valid
coverage (shared edges have the same vertices), which the simplifier below needs. Where two
pixels of a class touch only at a corner the outline turns so as to keep them apart; a hole
that touches its outline at a corner becomes a hole touching the shell at that point.

Simplification is :func:`shapely.coverage_simplify` over all classes together, rather than
simplifying each polygon on its own: neighbouring regions keep one shared edge, so the simplified
annotations neither overlap nor leave slivers between them, and areas still add up. Its
tolerance is roughly a distance: a vertex goes when the triangle it makes with its neighbours
is smaller than the tolerance squared. Every corner of a pixel outline makes one of at least
half a pixel, so tolerances under about 0.7 analysis pixel, the default of half a pixel and 0
included, keep the exact pixel outlines, staircases and all; 1 to 2 pixels smooth them.
Regions smaller than ``min_area_um2`` (their exact pixel area) are dropped first.

Coordinates are level-0 pixels, rounded to 0.01: ``origin="level0"`` is the full level-0 frame
of OpenSlide and ASAP, ``origin="bounds"`` starts at the slide's bounds offset, the frame
QuPath shows OpenSlide slides in.

Every Feature has an ``id``, a UUID that QuPath takes as the object's own: it is derived from
the slide, the model, the class and the region's outline, so exporting the same result again
gives the same ids and QuPath replaces the objects it imported before instead of adding copies.
QuPath keeps only ``properties`` (it drops the FeatureCollection's other members), so what
made the annotations (the model and its weights' sha256, wsiseg's version, the result) is repeated in each
Feature's ``properties.metadata``, which QuPath shows as the object's metadata. ``class_names``
renames classes to a lab's own QuPath classes (e.g. ``tumour`` to ``Tumor``).

With ``qc_annotations``, the artefact regions of the result's artefact labels (``labels/qc``, on
the tissue mask's coarser grid) follow the class regions in the same FeatureCollection, one
annotation per connected region, classified ``artefact: NAME`` (``artefact: pen``, ...) in the
artefact's colour. They are traced, placed in the frame, filtered by ``min_area_um2`` and
simplified as the classes are, but on their own: they overlap the class regions. One file, so
that one import brings both, and QuPath's classes show, hide or select the artefacts apart.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import shapely
from scipy import sparse
from scipy.sparse import csgraph

from wsiseg.atomic import atomic_write
from wsiseg.errors import ConfigError
from wsiseg.export.artefacts import artefact_labels, require_qc
from wsiseg.export.report import LabelMap, check_min_area
from wsiseg.result.reading import reads_result
from wsiseg.result.store import open_result, open_result_group

logger = logging.getLogger(__name__)

ORIGINS = ("bounds", "level0")
DECIMALS = 2
#: What the artefacts' QuPath classes are called: the prefix and the artefact's name.
ARTEFACT_CLASS = "artefact: {name}"
#: The namespace of the features' UUIDs (uuid5 of the region's identity within it).
FEATURE_NAMESPACE = uuid.UUID("6f1d0c8e-5b7a-4d2e-9a3c-2f8b1e4d7c60")


def _bands(labels: LabelMap) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """(first row, band, row above it) over the map, one band of chunk rows at a time."""
    height = labels.shape[0]
    chunks = getattr(labels, "chunks", None)
    step = int(chunks[0]) if chunks else 512
    above = None
    for y0 in range(0, height, step):
        band = np.asarray(labels[y0:min(height, y0 + step)])
        yield y0, band, above
        above = band[-1]


def _runs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Maximal runs along axis 1 where ``a != b`` with one (a, b) pair: row, start, stop, a, b."""
    differ = a != b
    pair = a.astype(np.int32) * 256 + b
    change = pair[:, 1:] != pair[:, :-1]
    start = differ.copy()
    start[:, 1:] &= change | ~differ[:, :-1]
    stop = differ.copy()
    stop[:, :-1] &= change | ~differ[:, 1:]
    row, x0 = np.nonzero(start)
    x1 = np.nonzero(stop)[1] + 1
    return row, x0, x1, a[row, x0], b[row, x0]


def boundary_segments(band: np.ndarray, y0: int, above: np.ndarray | None,
                      last: bool) -> tuple[np.ndarray, ...]:
    """Directed outline segments of ``band``, in map pixels: start (n, 2), end (n, 2), class
    and class beyond.

    A segment runs along pixel edges between two classes, as long as the pair on its two sides
    stays the same, so neighbouring classes cut their outlines at the same points. Each class
    other than background gets it with itself on the left (the side ``(dy, -dx)`` of a direction
    ``(dx, dy)``). Horizontal edges are those above each row of the band (``above`` is the row
    before it, None at the top) and, when ``last``, below the last; the map's border is
    background.
    """
    h, w = band.shape
    framed = np.zeros((h + 2, w + 2), dtype=np.uint8)
    framed[1:-1, 1:-1] = band
    if above is not None:
        framed[0, 1:-1] = above
    rows = framed[: h + 1 if last else h, 1:-1], framed[1 : h + 2 if last else h + 1, 1:-1]
    y, hx0, hx1, up, down = _runs(*rows)
    x, vy0, vy1, left, right = _runs(framed[1:-1, :-1].T, framed[1:-1, 1:].T)
    y = y + y0
    vy0, vy1 = vy0 + y0, vy1 + y0
    # Horizontal: the class above goes +x, the one below -x; vertical: the class on the left
    # goes -y, the one on the right +y.
    pieces = [((hx0, y), (hx1, y), up, down), ((hx1, y), (hx0, y), down, up),
              ((x, vy1), (x, vy0), left, right), ((x, vy0), (x, vy1), right, left)]
    starts, ends, classes, beyond = [], [], [], []
    for (sx, sy), (ex, ey), cls, other in pieces:
        keep = cls > 0
        starts.append(np.stack([sx[keep], sy[keep]], axis=1).astype(np.int32))
        ends.append(np.stack([ex[keep], ey[keep]], axis=1).astype(np.int32))
        classes.append(cls[keep])
        beyond.append(other[keep])
    return tuple(np.concatenate(p) for p in (starts, ends, classes, beyond))


def _successors(start: np.ndarray, end: np.ndarray,
                cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the segment that follows each one around its class's outline, and where
    another could follow: (turning left, turning right), the same where there is one way on.

    Two ways on are where two pixels of a class touch only at a corner.
    """
    span = int(max(start.max(), end.max())) + 2

    def key(points: np.ndarray) -> npt.NDArray[np.int64]:
        keys: npt.NDArray[np.int64] = (
            (cls.astype(np.int64) * span + points[:, 1]) * span + points[:, 0])
        return keys

    starts = key(start)
    order = np.argsort(starts, kind="stable")
    ends = key(end)
    first = np.searchsorted(starts[order], ends)
    left_turn = order[first]
    right_turn = left_turn
    second = order[np.minimum(first + 1, len(order) - 1)]
    twice = (first + 1 < len(order)) & (starts[second] == ends)
    if twice.any():
        direction = np.sign(end - start)
        left = np.stack([direction[:, 1], -direction[:, 0]], axis=1)
        second_left = twice & (direction[second] == left).all(axis=1)
        left_turn = np.where(second_left, second, left_turn)
        right_turn = np.where(twice & ~second_left, second, right_turn)
    return left_turn, right_turn


def _cycles(following: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cycle label, position from the cycle's first segment) of each segment of a permutation."""
    n = len(following)
    index = np.arange(n)
    graph = sparse.coo_matrix((np.ones(n, dtype=np.int8), (index, following)), shape=(n, n))
    label = csgraph.connected_components(graph, directed=True, connection="weak")[1]
    _, head = np.unique(label, return_index=True)
    is_head = np.zeros(n, dtype=bool)
    is_head[head] = True
    preceding = np.empty(n, dtype=np.int64)
    preceding[following] = index
    # List ranking by pointer jumping: log2(longest outline) passes over all segments.
    pointer = np.where(is_head, index, preceding)
    position = (~is_head).astype(np.int64)
    while True:
        jumped = pointer[pointer]
        if (jumped == pointer).all():
            return label, position
        position = position + position[pointer]
        pointer = jumped


def class_polygons(labels: LabelMap) -> dict[int, np.ndarray]:
    """Class index -> its connected polygons (map pixels, exact pixel edges, holes as rings).

    ``labels`` may be a zarr array; it is read one band of chunk rows at a time. The polygons
    of all classes form one coverage: edges they share have the same vertices.
    """
    height = labels.shape[0]
    parts = [boundary_segments(band, y0, above, y0 + band.shape[0] == height)
             for y0, band, above in _bands(labels)]
    start, end, cls, beyond = (np.concatenate(p) for p in zip(*parts))
    if not len(cls):
        return {}
    # Turning left at a corner keeps the pixels of a class that touch there apart. An outline
    # that then meets itself at the corner goes round a hole that touches the outside there:
    # turning right instead cuts it into the outline and the hole, touching at that point.
    left_turn, right_turn = _successors(start, end, cls)
    label, position = _cycles(left_turn)
    pinched = (left_turn != right_turn) & (label[left_turn] == label[right_turn])
    following = np.where(pinched, right_turn, left_turn)
    if pinched.any():
        label, position = _cycles(following)
    # Vertical segments end at band edges; where one just goes on, with the same class beyond
    # it, its start is no corner of the coverage and is left out.
    preceding = np.empty_like(following)
    preceding[following] = np.arange(len(following))
    vertical = start[:, 0] == end[:, 0]
    corner = ~(vertical & vertical[preceding] & (beyond == beyond[preceding]))
    order = np.lexsort((position, label))
    order = order[corner[order]]
    rings = shapely.linearrings(start[order].astype(np.float64), indices=label[order])
    ring_class = np.zeros(len(rings), dtype=cls.dtype)
    ring_class[label] = cls
    # Outer outlines and holes run opposite ways round: the sign of the area tells them apart.
    twice_area = np.bincount(label, weights=(start[:, 0] * end[:, 1] - end[:, 0] * start[:, 1]),
                             minlength=len(rings))
    hole = twice_area > 0

    # A hole belongs to the smallest outline of its class around a pixel just inside it.
    shell_index = np.flatnonzero(~hole)
    owner = np.full(len(rings), -1, dtype=np.int64)
    owner[shell_index] = np.arange(len(shell_index))
    hole_index = np.flatnonzero(hole)
    if len(hole_index):
        shells = shapely.polygons(rings[shell_index])
        first = np.zeros(len(rings), dtype=np.int64)
        first[label[::-1]] = np.arange(len(label))[::-1]
        seg = first[hole_index]
        direction = np.sign(end[seg] - start[seg])
        inside = start[seg] + 0.5 * direction + 0.5 * np.stack([direction[:, 1],
                                                                -direction[:, 0]], axis=1)
        # Querying points with the outlines prepares each outline once.
        pairs = shapely.STRtree(shapely.points(inside)).query(shells, predicate="contains")[::-1]
        pairs = pairs[:, ring_class[hole_index[pairs[0]]] == ring_class[shell_index[pairs[1]]]]
        areas = shapely.area(shells)[pairs[1]]
        best = np.lexsort((areas, pairs[0]))
        pairs = pairs[:, best]
        firsts = np.r_[True, pairs[0, 1:] != pairs[0, :-1]]
        owner[hole_index[pairs[0, firsts]]] = pairs[1, firsts]
    ordered = np.lexsort((hole, owner))
    ordered = ordered[owner[ordered] >= 0]
    polygons = shapely.polygons(rings[ordered], indices=owner[ordered])
    shell_class = ring_class[shell_index]
    return {int(c): polygons[shell_class == c] for c in np.unique(shell_class)}


def _valid(polygons: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """``polygons`` made valid where they are not, keeping only polygonal parts (None if none)."""
    out: npt.NDArray[np.object_] = polygons.copy()
    for i in np.flatnonzero(~shapely.is_valid(polygons)):
        # make_valid gives a collection of (multi)polygons, lines and points: flatten it twice.
        parts = shapely.get_parts(shapely.get_parts(shapely.make_valid(polygons[i])))
        kept = [p for p in parts if shapely.get_type_id(p) == 3 and not p.is_empty]
        out[i] = (None if not kept else kept[0] if len(kept) == 1
                  else shapely.multipolygons(kept))
    return out


def _simplified(polygons: npt.NDArray[np.object_], tolerance: float, sx: float, sy: float
                ) -> npt.NDArray[np.object_]:
    """The coverage ``polygons`` (level-0 px, corners on a grid of ``sx`` by ``sy``) simplified."""
    # Every vertex of a pixel outline is a right-angled corner whose triangle with its
    # neighbours is at least half a map pixel in area; below that the simplifier could only
    # drop the few vertices on straight lines where three classes meet. Left as they are, the
    # outlines stay axis-parallel, and rounding cannot make them invalid.
    if tolerance**2 < 0.5 * sx * sy:
        rounded: npt.NDArray[np.object_] = shapely.transform(
            polygons, lambda c: np.round(c, DECIMALS))
        return rounded
    polygons = shapely.coverage_simplify(polygons, tolerance)
    return _valid(shapely.transform(polygons, lambda c: np.round(c, DECIMALS)))


def level0_regions(by_class: Mapping[int, npt.NDArray[np.object_]],
                   scale: tuple[float, float], shift: tuple[float, float],
                   tolerance_level0: float, level0_um2: float, min_area_um2: float
                   ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    """The polygons of :func:`class_polygons` (grid pixels of ``scale`` level-0 pixels a side,
    pixel (0, 0) at ``shift``) in the frame's level-0 pixels, at least ``min_area_um2``,
    simplified together, oriented; and the class of each."""
    sx, sy = scale
    indices = np.array([c for c, parts in by_class.items() for _ in parts], dtype=np.int64)
    polygons = (np.concatenate(list(by_class.values())) if by_class
                else np.empty(0, dtype=object))
    # Grid pixels to level-0 pixels: the same arithmetic on the same vertex keeps shared
    # vertices equal, so the polygons stay one coverage for the simplifier.
    polygons = shapely.transform(polygons, lambda c: c * (sx, sy) + shift)
    large = shapely.area(polygons) * level0_um2 >= min_area_um2
    if not large.all():
        logger.info("dropping %d of %d regions under %g um^2", int((~large).sum()),
                    len(large), min_area_um2)
    polygons, indices = polygons[large], indices[large]
    polygons = shapely.orient_polygons(_simplified(polygons, tolerance_level0, sx, sy))
    present = ~shapely.is_missing(polygons)
    return polygons[present], indices[present]


@reads_result
def write_geojson(result: str | os.PathLike[str], out_dir: Path, stem: str,
                  simplify_um: float | None = None, min_area_um2: float = 0.0,
                  origin: str = "bounds", class_names: Mapping[str, str] | None = None,
                  qc_annotations: bool = False) -> list[Path]:
    """Write ``STEM.geojson``: one QuPath annotation per connected region of each class.

    ``simplify_um`` is the outline tolerance in um (None: half an analysis pixel, 0: exact
    pixel edges); regions smaller than ``min_area_um2`` are dropped; ``origin`` is
    ``"bounds"`` or ``"level0"``; ``class_names`` maps the result's class names to the names
    the annotations get; ``qc_annotations`` adds the artefact regions, and is refused for a
    result without artefact labels (see the module's docstring).
    """
    if origin not in ORIGINS:
        raise ConfigError(f"unknown origin {origin!r}; choose from {', '.join(ORIGINS)}")
    if simplify_um is not None and not 0 <= simplify_um < math.inf:
        raise ConfigError(f"simplify tolerance must be 0 or more um, got {simplify_um}")
    check_min_area(min_area_um2)
    labels, info = open_result(result)
    qc, artefacts = None, {}
    if qc_annotations:
        group = open_result_group(result)
        qc = require_qc(result, group, info, "--qc-annotations")
        artefacts = {a.value: a for a in artefact_labels(group)}
    renamed = dict(class_names or {})
    unknown = sorted(set(renamed) - {c.name for c in info.classes})
    if unknown:
        raise ConfigError(
            f"--class-names renames {', '.join(map(repr, unknown))}, which {result} does not "
            f"have; its classes are {', '.join(c.name for c in info.classes)}")
    sx, sy = (float(v) for v in info.scale_to_level0)
    ox, oy = (float(v) for v in info.offset_level0)
    x0, y0 = (ox, oy) if origin == "level0" else (0.0, 0.0)  # where map pixel (0, 0) starts
    mpp_x, mpp_y = (float(v) for v in info.slide.mpp)
    if simplify_um is None:
        simplify_um = 0.5 * (float(info.analysis_mpp[0]) + float(info.analysis_mpp[1])) / 2
    tolerance_level0 = simplify_um / ((mpp_x + mpp_y) / 2)
    level0_um2 = mpp_x * mpp_y

    by_class = class_polygons(labels)
    classes = {c.index: c for c in info.classes}
    polygons, indices = level0_regions(by_class, (sx, sy), (x0, y0), tolerance_level0,
                                       level0_um2, min_area_um2)
    # Each feature's QuPath class and colour, and what its id is made from.
    kinds: list[tuple[str, tuple[int, ...], str]] = []
    for c in indices:
        known = classes.get(int(c))
        name, colour = ((known.name, known.color) if known is not None
                        else (f"class{int(c)}", (128, 128, 128)))
        kinds.append((renamed.get(str(name), str(name)), tuple(colour), str(int(c))))
    if qc is not None:
        # The qc grid has the map's origin; (x0, y0) - (ox, oy) is the frame's shift.
        (qsx, qsy), (qox, qoy) = info.tissue.scale_to_level0, info.tissue.offset_level0
        qc_polygons, qc_indices = level0_regions(
            class_polygons(qc), (float(qsx), float(qsy)),
            (x0 - ox + float(qox), y0 - oy + float(qoy)), tolerance_level0, level0_um2,
            min_area_um2)
        # The last qc pixels of a row or column reach past the map: cut them at its edge.
        h, w = labels.shape[:2]
        edge = (x0, y0, x0 + w * sx, y0 + h * sy)
        bounds = shapely.bounds(qc_polygons).reshape(-1, 4)
        past = ((bounds[:, 0] < edge[0]) | (bounds[:, 1] < edge[1]) | (bounds[:, 2] > edge[2])
                | (bounds[:, 3] > edge[3]))
        qc_polygons[past] = shapely.intersection(qc_polygons[past], shapely.box(*edge))
        kept = ~shapely.is_empty(qc_polygons)
        for c in qc_indices[kept]:
            artefact = artefacts.get(int(c))
            name = artefact.name if artefact is not None else f"artefact {int(c)}"
            kinds.append((ARTEFACT_CLASS.format(name=name),
                          artefact.color if artefact is not None else (255, 0, 200),
                          f"qc{int(c)}"))
        polygons = np.concatenate([polygons, qc_polygons[kept]])
        logger.info("%d artefact regions", int(kept.sum()))

    path = Path(out_dir) / f"{stem}.geojson"
    header = {
        "type": "FeatureCollection",
        "wsiseg": {
            "result": str(result), "slide": str(info.slide.path),
            "model": info.model.name, "origin": origin,
            "bounds_offset_level0": [ox, oy], "scale_to_level0": [sx, sy],
            "slide_mpp": [mpp_x, mpp_y], "analysis_mpp": list(info.analysis_mpp),
            "simplify_um": simplify_um, "min_area_um2": min_area_um2,
            **({"qc_annotations": True} if qc is not None else {}),
        },
    }
    dump = json.JSONEncoder(separators=(",", ":")).encode
    geometries = shapely.to_geojson(polygons)
    areas = shapely.area(polygons) * level0_um2
    metadata = {  # QuPath takes string values only
        "wsiseg_model": info.model.name,
        "wsiseg_model_weights_sha256": info.model.weights_sha256 or "",
        "wsiseg_version": info.version,
        "wsiseg_result": Path(result).name,
    }
    identity = f"{info.slide.path.name}|{info.model.name}|{info.model.weights_sha256}|{origin}"
    with atomic_write(path) as f:
        f.write(dump(header)[:-1] + ',"features":[')
        for k, (geometry, (name, rgb, kind), area) in enumerate(zip(geometries, kinds, areas)):
            properties = {
                "objectType": "annotation",
                "classification": {"name": name, "color": [int(v) for v in rgb]},
                "isLocked": False,
                "measurements": {"Area um^2": float(area)},
                "metadata": metadata,
            }
            # The same region of the same result gets the same id at every export.
            feature_id = uuid.uuid5(FEATURE_NAMESPACE, f"{identity}|{kind}|{k}|{geometry}")
            f.write(f'{"," if k else ""}{{"type":"Feature","id":"{feature_id}",'
                    f'"geometry":{geometry},"properties":{dump(properties)}}}')
        f.write("]}\n")
    logger.info("wrote %d regions of %d classes to %s", len(polygons), len(by_class), path)
    return [path]
