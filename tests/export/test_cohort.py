"""The cohort table of a folder of results: one row per result and per failed slide of the
manifest, the report's optional fields only where a report has them, every name escaped in the
page and safe in the CSV, and the command line's refusals."""

from __future__ import annotations

import base64
import csv
import html.parser
import io
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from PIL import Image

from wsiseg.cards import ClassInfo
from wsiseg.cli.main import main
from wsiseg.errors import ResultError
from wsiseg.export import cohort, export_folder
from wsiseg.export.cohort import THUMB_PX, cohort_columns, cohort_rows, write_cohort
from wsiseg.testing.result import write_result

CLASSES = (ClassInfo(0, "background", (255, 255, 255)), ClassInfo(1, "tumour", (200, 0, 0)),
           ClassInfo(2, "<i>stroma</i>", (0, 160, 0)))
# Result name -> tumour pixels of 400 tissue pixels (the rest stroma): 5%, 12.5%, 50%, 100%.
TUMOUR = {"a b": 20, "ü": 50, "#1": 200, 'q"q <i>': 400, "=cmd": 50}
FAILED_ERROR = "broken.svs: cannot be read <b>here</b>; check the file"


def _labels(tumour: int) -> np.ndarray:
    labels = np.zeros((100, 126), dtype=np.uint8)  # svs_x20 in map pixels of 8 x 8
    tissue = np.full(400, 2, dtype=np.uint8)
    tissue[:tumour] = 1
    labels[:20, :20] = tissue.reshape(20, 20)
    return labels


@pytest.fixture(scope="module")
def folder(svs_x20, tmp_path_factory) -> Path:
    """Results named oddly, on svs_x20 (map pixels 8 x 8 slide pixels), and a manifest that
    names them, a failed slide, and a result that is not there (read-only)."""
    maps = tmp_path_factory.mktemp("cohort") / "maps"
    for name, tumour in TUMOUR.items():
        path = write_result(maps / f"{name}.wsiseg.zarr", _labels(tumour), CLASSES,
                            scale=(8, 8), slide_mpp=(0.5, 0.5), dimensions=(1008, 800))
        group = zarr.open_group(str(path), mode="r+")
        attrs = group.attrs["wsiseg"]
        attrs["slide"]["path"] = str(svs_x20.path)
        group.attrs["wsiseg"] = attrs
    (maps / "manifest.csv").write_text(
        "slide,status,error,output,patches,seconds,worker\n"
        f"/scans/a b.svs,done,,{maps}/a b.wsiseg.zarr,4,1.5,w\n"
        f'/scans/broken.svs,failed,"{FAILED_ERROR}",,,,w\n'
        "'=cmd.svs,skipped,,,,,w\n", encoding="utf-8")  # as the manifest writes "=cmd.svs"
    return maps


def test_a_row_per_result_and_per_failed_slide_with_the_reports_numbers(folder):
    rows = cohort_rows(folder)
    assert [r["slide"] for r in rows] == sorted([*TUMOUR, "broken"])
    by_name = {r["slide"]: r for r in rows}
    assert by_name["a b"]["status"] == "done" and by_name["=cmd"]["status"] == "skipped"
    assert by_name["ü"]["status"] == "done"  # a result the manifest does not name
    for name, tumour in TUMOUR.items():
        row = by_name[name]
        assert row["share_of_tissue_percent:tumour"] == pytest.approx(100 * tumour / 400)
        assert row["share_of_tissue_percent:<i>stroma</i>"] == pytest.approx(
            100 - 100 * tumour / 400)
        # 400 map pixels of 4 x 4 um each.
        assert row["tissue_area_mm2"] == pytest.approx(400 * 16e-6)
        assert row["damaged_regions"] == 0 and row["error"] == ""
        assert Path(row["result"]).name == f"{name}.wsiseg.zarr"
    failed = by_name["broken"]
    assert (failed["status"], failed["error"], failed["result"]) == ("failed", FAILED_ERROR,
                                                                      None)
    assert "tissue_area_mm2" not in failed and "share_of_tissue_percent:tumour" not in failed
    keys = [c.key for c in cohort_columns(rows)]
    assert keys == ["slide", "status", "tissue_area_mm2", "share_of_tissue_percent:tumour",
                    "share_of_tissue_percent:<i>stroma</i>", "damaged_regions", "review",
                    "error"]


class _Page(html.parser.HTMLParser):
    """The tags, the text of the table's cells and the rows' names of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.names, self.images, self.cells = [], [], [], []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "tr" and "data-name" in attrs:
            self.names.append(attrs["data-name"])
            self.cells.append([])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "iframe") or (tag == "script" and "src" in attrs):
            raise AssertionError(f"the page asks for something: {tag} {attrs}")
        self._in_cell = tag == "td"

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell and self.cells:
            self.cells[-1].append(data)


def test_the_page_escapes_every_name_and_carries_its_thumbnails(folder, tmp_path):
    html_path, csv_path = write_cohort(folder, tmp_path / "out")
    assert (html_path.name, csv_path.name) == ("cohort.html", "cohort.csv")
    page = html_path.read_text(encoding="utf-8")
    parser = _Page()
    parser.feed(page)
    assert parser.names == sorted([*TUMOUR, "broken"])  # exactly, once unescaped
    # The names' markup is text: no <i> or <b> element in the page, the error as written.
    assert "i" not in parser.tags and "b" not in parser.tags
    assert FAILED_ERROR in "".join(parser.cells[parser.names.index("broken")])
    assert "http:" not in page and "https:" not in page
    # A thumbnail per result (none for the failed slide), PNGs of at most THUMB_PX.
    assert len(parser.images) == len(TUMOUR)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.format == "PNG" and max(image.size) == THUMB_PX
        # Only the slide's thumbnail part: its last row is not the white caption.
        last = np.asarray(image.convert("RGB"))[-1]
        assert not (last == 255).all()


def test_the_csv_has_the_same_columns_and_text_a_spreadsheet_never_runs(folder, tmp_path):
    _, csv_path = write_cohort(folder, tmp_path)
    with open(csv_path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    header, rows = table[0], {r[0]: r for r in table[1:]}
    assert header == [c.key for c in cohort_columns(cohort_rows(folder))]
    # A name a spreadsheet would run is written as text.
    assert sorted(rows) == sorted(["'=cmd" if n == "=cmd" else n for n in [*TUMOUR, "broken"]])
    assert rows["ü"][header.index("share_of_tissue_percent:tumour")] == "12.50"
    assert rows["a b"][header.index("tissue_area_mm2")] == "0.0064"
    failed = rows["broken"]
    assert failed[header.index("status")] == "failed"
    assert failed[header.index("error")] == FAILED_ERROR
    assert failed[header.index("tissue_area_mm2")] == ""  # no number, not 0
    assert failed[header.index("damaged_regions")] == ""


def test_optional_report_fields_make_columns_and_leave_older_results_empty(folder, tmp_path,
                                                                           monkeypatch):
    """A report with confidences, analysable tissue, qc artefacts and review reasons (newer
    results), beside reports without them (older ones): empty cells, never zeros."""
    real = cohort.build_report

    def newer(result, *args, **kwargs):
        report = real(result, *args, **kwargs)
        name = Path(result).name
        if name.startswith("a b"):
            report.update(confidence={"background": None, "tumour": 0.91,
                                      "<i>stroma</i>": None},
                          tissue_confidence=0.9, low_confidence_share=0.0,
                          analysable_tissue_mm2=0.005, qc={"fold": 0.0, "<pen>": 0.0012},
                          review=["fold over <b>tumour</b>", "low confidence"])
        elif name.startswith("#1"):
            report.update(review=[], analysable_tissue_mm2=0.0)
        else:  # a report made before reviews were given
            report.pop("review", None)
        return report

    monkeypatch.setattr(cohort, "build_report", newer)
    rows = {r["slide"]: r for r in cohort_rows(folder)}
    keys = [c.key for c in cohort_columns(list(rows.values()))]
    assert keys == ["slide", "status", "tissue_area_mm2", "analysable_tissue_mm2",
                    "share_of_tissue_percent:tumour", "share_of_tissue_percent:<i>stroma</i>",
                    "damaged_regions", "tissue_confidence", "low_confidence_share",
                    "confidence:tumour", "confidence:<i>stroma</i>", "qc_mm2:fold",
                    "qc_mm2:<pen>", "review", "error"]
    assert rows["a b"]["review"] == ["fold over <b>tumour</b>", "low confidence"]
    assert rows["#1"]["review"] == [] and "review" not in rows["ü"]
    _, csv_path = write_cohort(folder, tmp_path)
    with open(csv_path, newline="", encoding="utf-8") as f:
        table = {r["slide"]: r for r in csv.DictReader(f)}
    assert table["a b"]["confidence:tumour"] == "0.910"
    assert table["a b"]["confidence:<i>stroma</i>"] == ""  # measured, no pixels: no number
    assert table["a b"]["qc_mm2:fold"] == "0.0000"  # measured zero
    assert table["a b"]["review"] == "fold over <b>tumour</b>; low confidence"
    assert table["#1"]["analysable_tissue_mm2"] == "0.0000"
    for older in ("ü", "'=cmd"):  # made before these fields: empty, never 0
        for key in ("tissue_confidence", "confidence:tumour", "analysable_tissue_mm2",
                    "qc_mm2:fold", "review"):
            assert table[older][key] == "", (older, key)
    page = (tmp_path / "cohort.html").read_text(encoding="utf-8")
    assert 'id="review-only"' in page and "&lt;b&gt;tumour&lt;/b&gt;" in page
    assert 'data-name="a b" data-review="2"' in page and 'data-name="#1" data-review="0"' in page


def test_without_review_fields_there_is_no_review_filter(folder, tmp_path, monkeypatch):
    real = cohort.build_report

    def older(result, *args, **kwargs):  # reports made before reviews were given
        report = real(result, *args, **kwargs)
        report.pop("review")
        return report

    monkeypatch.setattr(cohort, "build_report", older)
    write_cohort(folder, tmp_path)
    page = (tmp_path / "cohort.html").read_text(encoding="utf-8")
    assert 'id="review-only"' not in page and ' data-review="' not in page
    assert 'id="class-filter"' in page


def _run(*args):
    return CliRunner().invoke(main, ["export", *(str(a) for a in args)])


def test_the_command_line_writes_the_cohort_of_a_folder_and_refuses_one_result(folder, tmp_path):
    done = _run(folder, "--to", "cohort", "--out", tmp_path / "out")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [str(tmp_path / "out" / "cohort.html"),
                                        str(tmp_path / "out" / "cohort.csv")]
    for args, words in [
        ((folder / "a b.wsiseg.zarr", "--to", "cohort"), ("is one result", "folder")),
        ((folder, "--to", "cohort,report"), ("two runs",)),
        ((tmp_path / "none", "--to", "cohort"), ("does not exist",)),
        ((folder, "--to", "report"), ("not a finished wsiseg result",)),  # as before
    ]:
        out = tmp_path / f"refused {args[-1]}"
        run = _run(*args, "--out", out)
        assert run.exit_code == 1 and "Traceback" not in run.output, run.output
        lines = run.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("wsiseg: error: "), run.stderr
        assert all(w in lines[0] for w in words), lines[0]
        assert not (out / "cohort.html").exists()


def test_a_folder_without_results_or_manifest_is_refused(tmp_path):
    with pytest.raises(ResultError, match="holds no"):
        export_folder(tmp_path, ["cohort"])
    assert not (tmp_path / "cohort.html").exists()
