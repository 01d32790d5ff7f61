"""wsiseg.cells.csv_text: text cells a spreadsheet shows and never runs."""

from __future__ import annotations

import csv
import io

import pytest

from wsiseg.cells import csv_text


@pytest.mark.parametrize("text", ["=1+1", "+SUM(A1)", "-2", "@A1", "\tx", "\rx",
                                  "=HYPERLINK(\"http://example.org\",\"click\")"])
def test_text_a_spreadsheet_would_run_gets_an_apostrophe(text):
    assert csv_text(text) == "'" + text


@pytest.mark.parametrize("value, cell", [("tumour", "tumour"), ("a=b", "a=b"), ("", ""),
                                         (None, ""), (3, "3"), ("'quoted", "'quoted"),
                                         (" =x", " =x")])
def test_other_text_is_unchanged(value, cell):
    assert csv_text(value) == cell


def test_the_cell_reads_back_as_written_by_csv():
    out = io.StringIO()
    csv.writer(out).writerow([csv_text("=1,2"), csv_text('say "hi"')])
    assert next(csv.reader(io.StringIO(out.getvalue()))) == ["'=1,2", 'say "hi"']
