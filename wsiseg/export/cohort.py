"""The cohort table: one row per slide of a batch's folder, as ``cohort.html`` and ``cohort.csv``.

A row is a result of the folder (``NAME.wsiseg.zarr``, the results ``wsiseg view`` lists) or a
slide of the folder's ``manifest.csv`` that has no result (a failed one, with its error). The
numbers come from each result's report (:func:`~wsiseg.export.report.build_report`): the share
of the tissue of each class, the tissue area, the damaged regions, and, when the report has
them, the confidences, the analysable tissue, the area of each quality-control artefact and
the reasons to review the slide. A column is there when any row has its field; a row whose
report lacks it (a result made before the field existed) has an empty cell, never a zero.

``cohort.html`` is one self-contained file (thumbnails as ``data:`` PNGs, inline CSS and
script, no request anywhere) whose table sorts by a click on a header and filters by name, by
the slides to review and by a class's share; ``wsiseg view FOLDER`` serves the same page
(:func:`cohort_page`) with each name linking to its viewer. Every text is HTML-escaped, and the
CSV's text cells go through :func:`~wsiseg.cells.csv_text`.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Literal

from wsiseg.atomic import atomic_write, output_error
from wsiseg.cells import csv_text
from wsiseg.errors import ResultError, WsisegError, first_line
from wsiseg.export.report import build_report
from wsiseg.naming import RESULT_SUFFIX
from wsiseg.slide.dicom_series import slide_stem

logger = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
HTML_NAME = "cohort.html"
CSV_NAME = "cohort.csv"
#: Longest side of a row's thumbnail in ``cohort.html``, in pixels.
THUMB_PX = 160
#: The status of a result that the manifest does not name, and of one whose report fails.
DONE, UNREADABLE = "done", "unreadable"

# Keys of the columns of a class, an artefact: PREFIX + name.
SHARE = "share_of_tissue_percent:"
CONFIDENCE = "confidence:"
QC = "qc_mm2:"

Kind = Literal["text", "number", "list"]


@dataclass(frozen=True)
class Column:
    """A column of the table: its key (the CSV header and the row's key), its heading, what
    it holds, its unit and the decimals its numbers are shown with."""

    key: str
    label: str
    kind: Kind = "number"
    unit: str = ""
    digits: int = 0

    def text(self, value: Any) -> str:
        """The cell's text (the same in the page and the CSV): empty for a missing value."""
        if value is None:
            return ""
        if self.kind == "list":
            return "; ".join(str(v) for v in value)
        if self.kind == "number":
            return f"{value:.{self.digits}f}"
        return str(value)


def folder_results(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """The results of a folder, ``NAME.wsiseg.zarr``, by NAME, in order of name."""
    return {p.name.removesuffix(RESULT_SUFFIX): p
            for p in sorted(Path(folder).glob("*" + RESULT_SUFFIX))}


def _manifest_rows(folder: Path) -> list[dict[str, str]]:
    """The slides of the folder's manifest as ``name, status, error`` (none without one).

    Read here rather than through the batch package, which sits above the exports: the same
    columns, and the same rule for text cells (one leading apostrophe was added on writing).
    """
    path = folder / MANIFEST
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        out = []
        for row in rows:
            slide, output = _cell(row["slide"]), _cell(row.get("output") or "")
            name = (Path(output).name.removesuffix(RESULT_SUFFIX) if output
                    else slide_stem(Path(slide)))
            out.append({"name": name, "status": row["status"] or "",
                        "error": _cell(row.get("error") or "")})
        return out
    except (OSError, UnicodeDecodeError, KeyError, TypeError, csv.Error) as err:
        logger.warning("%s cannot be read (%s); the cohort lists the results without it",
                       path, first_line(err))
        return []


def _cell(text: str) -> str:
    return text.removeprefix("'")


def cohort_rows(folder: str | os.PathLike[str],
                results: Mapping[str, Path] | None = None) -> list[dict[str, Any]]:
    """One row per slide of ``folder``, in order of name: its results (``results``, by default
    :func:`folder_results`) and the slides of its manifest without a result.

    A row has ``slide`` (the name), ``status``, ``error`` and ``result`` (the path, or None),
    and the report's numbers it has: ``tissue_area_mm2``, ``damaged_regions``,
    ``share_of_tissue_percent:CLASS``, and when present ``confidence:CLASS``,
    ``tissue_confidence``, ``low_confidence_share``, ``analysable_tissue_mm2``,
    ``qc_mm2:ARTEFACT`` and ``review`` (a list of reasons).
    """
    folder = Path(folder)
    if not folder.exists():
        raise ResultError(f"{folder} does not exist; give the folder of results that "
                          "wsiseg predict wrote")
    if folder.name.endswith(".zarr") or (folder / "zarr.json").exists():
        raise ResultError(f"{folder} is one result; a cohort is made from the folder of a "
                          "batch's results: give that folder, e.g. wsiseg export maps/ "
                          "--to cohort")
    if not folder.is_dir():
        raise ResultError(f"{folder} is not a folder; give the folder of results that "
                          "wsiseg predict wrote")
    found = folder_results(folder) if results is None else dict(results)
    listed = {r["name"]: r for r in _manifest_rows(folder)}
    if not found and not listed:
        raise ResultError(f"{folder} holds no *{RESULT_SUFFIX} and no {MANIFEST}; give the "
                          "folder of results that wsiseg predict wrote")
    rows = []
    for name in sorted({*found, *listed}):
        entry = listed.get(name)
        row: dict[str, Any] = {"slide": name, "status": entry["status"] if entry else DONE,
                               "error": entry["error"] if entry else "", "result": None}
        path = found.get(name)
        if path is not None:
            row["result"] = str(path)
            try:
                row.update(_report_cells(build_report(path)))
            except WsisegError as err:
                logger.warning("%s", err)
                row.update(status=UNREADABLE, error=first_line(err, 500))
        rows.append(row)
    return rows


def _report_cells(report: Mapping[str, Any]) -> dict[str, Any]:
    """The cells of a row from a result's report; fields it lacks are left out."""
    cells: dict[str, Any] = {"tissue_area_mm2": report["tissue_area_mm2"],
                             "damaged_regions": report["damaged_regions"]}
    classes = [c for c in report["classes"] if c["index"] > 0]  # background has no share
    for c in classes:
        cells[SHARE + c["name"]] = c["share_of_tissue_percent"]
    if "analysable_tissue_mm2" in report:
        cells["analysable_tissue_mm2"] = report["analysable_tissue_mm2"]
    confidence = report.get("confidence")
    if isinstance(confidence, Mapping):
        for key in ("tissue_confidence", "low_confidence_share"):
            cells[key] = report.get(key)
        for c in classes:
            cells[CONFIDENCE + c["name"]] = confidence.get(c["name"])
    qc = report.get("qc")
    if isinstance(qc, Mapping):
        for artefact, area in qc.items():
            cells[QC + str(artefact)] = area
    if "review" in report:
        cells["review"] = [str(r) for r in report["review"] or ()]
    return cells


def cohort_columns(rows: Sequence[Mapping[str, Any]]) -> list[Column]:
    """The columns of ``rows``: those any row has, classes and artefacts in the order they
    first appear."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))

    def named(prefix: str) -> list[str]:
        return [k[len(prefix):] for k in keys if k.startswith(prefix)]

    columns = [Column("slide", "slide", "text"), Column("status", "status", "text"),
               Column("tissue_area_mm2", "tissue", unit="mm2", digits=4)]
    if "analysable_tissue_mm2" in keys:
        columns.append(Column("analysable_tissue_mm2", "analysable tissue", unit="mm2",
                              digits=4))
    columns += [Column(SHARE + n, n, unit="%", digits=2) for n in named(SHARE)]
    columns.append(Column("damaged_regions", "damaged regions"))
    if "tissue_confidence" in keys:
        columns += [Column("tissue_confidence", "tissue confidence", digits=3),
                    Column("low_confidence_share", "low-confidence share", digits=3)]
    columns += [Column(CONFIDENCE + n, f"{n} confidence", digits=3)
                for n in named(CONFIDENCE)]
    columns += [Column(QC + n, n, unit="mm2", digits=4) for n in named(QC)]
    if "review" in keys:
        columns.append(Column("review", "review", "list"))
    columns.append(Column("error", "error", "text"))
    return columns


def _heading(column: Column) -> str:
    unit = {"mm2": " (mm&sup2;)", "%": " (% of tissue)"}.get(column.unit, "")
    return escape(column.label) + unit


def cohort_page(rows: Sequence[Mapping[str, Any]], title: str,
                links: Mapping[str, str] | None = None,
                thumbnails: Mapping[str, str] | None = None) -> str:
    """The cohort table of ``rows`` as one HTML page, script and style inline.

    ``links`` maps a row's name to the URL its name links to, ``thumbnails`` to the image its
    first cell shows (a ``data:`` URI, or a path of the server), with a link too when it has
    one; both given already percent-encoded, as they go in the page.
    """
    links, thumbnails = links or {}, thumbnails or {}
    columns = cohort_columns(rows)
    head = ['<th class="thumb"></th>'] + [
        f'<th data-key="{escape(c.key)}" data-kind="{"number" if c.kind == "number" else "text"}"'
        f' aria-sort="none" tabindex="0">{_heading(c)}</th>' for c in columns]
    body = []
    for row in rows:
        name = str(row["slide"])
        link, thumb = links.get(name), thumbnails.get(name)
        image = f'<img src="{escape(thumb)}" alt="">' if thumb else ""
        if image and link:
            image = f'<a href="{escape(link)}">{image}</a>'
        cells = [f'<td class="thumb">{image}</td>']
        for c in columns:
            value = row.get(c.key)
            text = c.text(value)
            sort = (repr(float(value)) if c.kind == "number" and value is not None
                    else text)
            shown = escape(text)
            if c.key == "slide" and link:
                shown = f'<a href="{escape(link)}">{shown}</a>'
            cells.append(f'<td data-value="{escape(sort)}">{shown}</td>')
        review = row.get("review")
        flag = f' data-review="{len(review)}"' if isinstance(review, list) else ""
        body.append(f'<tr data-name="{escape(name)}"{flag}>{"".join(cells)}</tr>')
    classes = [c for c in columns if c.key.startswith(SHARE)]
    class_filter = ""
    if classes:
        options = "".join(f'<option value="{escape(c.key)}">{escape(c.label)}</option>'
                          for c in classes)
        class_filter = (f'<label>share of <select id="class-filter"><option value="">any '
                        f'class</option>{options}</select> above <input id="share-above" '
                        'type="number" min="0" max="100" step="any" value="0"> %</label>')
    review_filter = ""
    if any(c.key == "review" for c in columns):
        review_filter = ('<label><input id="review-only" type="checkbox"> only slides to '
                         'review</label>')
    return _PAGE.format(
        title=escape(title), style=_STYLE, script=_SCRIPT, head="".join(head),
        body="\n".join(body), total=len(rows), review_filter=review_filter,
        class_filter=class_filter)


def _thumbnail_uri(result: str | os.PathLike[str]) -> str | None:
    """The result's overlay, ``THUMB_PX`` on its longest side, as a ``data:`` PNG; None when
    it cannot be made (its slide has moved, say), which the log tells."""
    from .thumbnail import overlay_image, thumbnail_shape

    try:
        image = overlay_image(result, THUMB_PX)
    except WsisegError as err:
        logger.warning("no thumbnail of %s in the cohort: %s", result, first_line(err))
        return None
    # The overlay's caption (title, legend, scale bar) is below the thumbnail part: cut it.
    size = _thumbnail_part(image.info.get("wsiseg thumbnail"))
    if size is None:
        size = thumbnail_shape(image.size, THUMB_PX)
    out = io.BytesIO()
    image.crop((0, 0, *size)).save(out, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _thumbnail_part(text: object) -> tuple[int, int] | None:
    """(w, h) from the overlay's ``wsiseg thumbnail`` text, ``"W x H px, ..."``."""
    try:
        w, h = str(text).split(" px", 1)[0].split(" x ")
        return int(w), int(h)
    except ValueError:
        return None


def write_cohort(folder: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
                 ) -> list[Path]:
    """Write ``cohort.html`` and ``cohort.csv`` of the results of ``folder`` into ``out_dir``
    (default: the folder itself)."""
    folder = Path(folder)
    rows = cohort_rows(folder)
    out = Path(out_dir) if out_dir is not None else folder
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise output_error(out, err, "create") from err
    thumbs = {}
    for row in rows:
        if row["result"] is not None and row["status"] != UNREADABLE:
            uri = _thumbnail_uri(row["result"])
            if uri is not None:
                thumbs[str(row["slide"])] = uri
    html_path, csv_path = out / HTML_NAME, out / CSV_NAME
    page = cohort_page(rows, folder.resolve().name or str(folder), thumbnails=thumbs)
    with atomic_write(html_path, encoding="utf-8") as f:
        f.write(page)
    columns = cohort_columns(rows)
    with atomic_write(csv_path, newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([csv_text(c.key) for c in columns])
        for row in rows:
            writer.writerow([csv_text(c.text(row.get(c.key))) if c.kind != "number"
                             else c.text(row.get(c.key)) for c in columns])
    return [html_path, csv_path]


_STYLE = """
body { margin: 0; padding: 12px; font: 14px sans-serif; }
h1 { font-size: 17px; word-break: break-all; }
#controls { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: center;
            margin-bottom: 8px; }
table { border-collapse: collapse; }
th, td { padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: right;
         vertical-align: middle; }
th { position: sticky; top: 0; background: #f4f4f4; cursor: pointer; user-select: none; }
th.thumb { cursor: default; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td:nth-child(2), td:nth-child(3), td:last-child, th:nth-child(2) { text-align: left; }
td:last-child { max-width: 28em; color: #a00; }
td.thumb img { display: block; max-width: 160px; max-height: 160px; }
tr[hidden] { display: none; }
"""

# Sorts the rows in place by a clicked header (numbers as numbers, empty cells last either
# way) and hides those the filters leave out; plain DOM, so it runs from file:// as well.
_SCRIPT = """
(function () {
  "use strict";
  var table = document.getElementById("cohort");
  var body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var rows = Array.prototype.slice.call(body.rows);
  var byName = document.getElementById("filter");
  var review = document.getElementById("review-only");
  var share = document.getElementById("class-filter");
  var above = document.getElementById("share-above");
  var shown = document.getElementById("shown");
  var sorted = -1, ascending = true;

  function value(row, i, numeric) {
    var v = row.cells[i].getAttribute("data-value");
    if (v === null || v === "") { return null; }
    return numeric ? parseFloat(v) : v;
  }

  function sortBy(i) {
    var numeric = heads[i].getAttribute("data-kind") === "number";
    ascending = sorted === i ? !ascending : true;
    sorted = i;
    var order = rows.slice().sort(function (a, b) {
      var x = value(a, i, numeric), y = value(b, i, numeric);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var d = numeric ? x - y : x.localeCompare(y, undefined, {numeric: true});
      return ascending ? d : -d;
    });
    order.forEach(function (row) { body.appendChild(row); });
    heads.forEach(function (th, k) {
      if (th.hasAttribute("data-key")) {
        th.setAttribute("aria-sort", k === i ? (ascending ? "ascending" : "descending") : "none");
      }
    });
  }

  function column(key) {
    for (var k = 0; k < heads.length; k++) {
      if (heads[k].getAttribute("data-key") === key) { return k; }
    }
    return -1;
  }

  function filter() {
    var text = byName.value.trim().toLowerCase();
    var toReview = review !== null && review.checked;
    var k = share !== null && share.value ? column(share.value) : -1;
    var least = above !== null ? parseFloat(above.value) : NaN;
    var count = 0;
    rows.forEach(function (row) {
      var keep = row.getAttribute("data-name").toLowerCase().indexOf(text) !== -1;
      if (keep && toReview) { keep = parseInt(row.getAttribute("data-review") || "0", 10) > 0; }
      if (keep && k >= 0 && !isNaN(least)) {
        var v = value(row, k, true);
        keep = v !== null && v > least;
      }
      row.hidden = !keep;
      if (keep) { count++; }
    });
    shown.textContent = count + " of " + rows.length + " slides";
  }

  heads.forEach(function (th, i) {
    if (!th.hasAttribute("data-key")) { return; }
    th.addEventListener("click", function () { sortBy(i); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(i); }
    });
  });
  [byName, review, share, above].forEach(function (el) {
    if (el !== null) {
      el.addEventListener("input", filter);
      el.addEventListener("change", filter);
    }
  });
  filter();
}());
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wsiseg cohort: {title}</title>
<style>{style}</style>
</head>
<body class="cohort">
<h1>{title}</h1>
<div id="controls">
<label>slide <input id="filter" type="search" placeholder="name contains" autocomplete="off">
</label>
{review_filter}
{class_filter}
<span id="shown">{total} slides</span>
</div>
<table id="cohort">
<thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table>
<script>{script}</script>
</body>
</html>
"""
