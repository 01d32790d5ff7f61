"""The reasons to review a slide on screen and in ``manifest.csv``: the summary of one slide, the
``review`` column of a batch's manifest (read back, and absent from older manifests), and the
slides to review listed by the batch's closing table."""

from __future__ import annotations

from pathlib import Path

import zarr
from click.testing import CliRunner

from wsiseg.batch.manifest import SlideRecord, read_manifest, write_manifest
from wsiseg.batch.runner import BatchResult, summary_table
from wsiseg.cli.main import main

#: What the constant model (logits 0, 1, 2 everywhere: normalised entropy 0.76) gives.
UNSURE = "low confidence on 100% of the tissue (over 25%)"


def _recorded(result: Path) -> list[str]:
    return zarr.open_group(str(result), mode="r").attrs["wsiseg"]["review"]


def test_the_summary_of_one_slide_says_why_to_review_it(slides, constant_model, tmp_path):
    out = tmp_path / "s0.wsiseg.zarr"
    run = CliRunner().invoke(main, ["predict", str(slides / "s0.svs"), "--model",
                                    str(constant_model), "--out", str(out)])
    assert run.exit_code == 0, run.output
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"{out}: ") and "patches/s" in lines[0]
    reasons = _recorded(out)
    assert UNSURE in reasons
    assert lines[1] == "review: " + "; ".join(reasons)


def test_a_batch_lists_its_slides_to_review_and_the_manifest_keeps_them(slides, constant_model,
                                                                        tmp_path):
    out = tmp_path / "out"
    args = ["predict", str(slides / "s1.svs"), str(slides / "s2.svs"), "--out", str(out),
            "--model", str(constant_model)]
    for status in ("done", "skipped"):  # predicted, then kept by a rerun
        run = CliRunner().invoke(main, args)
        assert run.exit_code == 0, run.output
        rows = {Path(r.slide).name: r for r in read_manifest(out / "manifest.csv")}
        assert [rows[n].status for n in ("s1.svs", "s2.svs")] == [status] * 2
        for name in ("s1", "s2"):
            reasons = _recorded(out / f"{name}.wsiseg.zarr")
            assert UNSURE in reasons
            assert rows[f"{name}.svs"].review == "; ".join(reasons)
            assert rows[f"{name}.svs"].review_reasons == reasons
        lines = run.stdout.splitlines()
        at = lines.index("to review: 2 slides")
        assert lines[at + 1:at + 3] == [f"  s1.svs: {_recorded(out / 's1.wsiseg.zarr')[0]}",
                                        f"  s2.svs: {_recorded(out / 's2.wsiseg.zarr')[0]}"]
        assert lines[at - 1].startswith("2 slides: ")


def test_the_review_column_reads_back_and_an_older_manifest_reads(tmp_path):
    path = tmp_path / "manifest.csv"
    rows = [SlideRecord("a/s0.svs", "done", output="o/s0.wsiseg.zarr", patches=3, seconds=1.5,
                        review="no tissue mapped; colours: glass is not white"),
            SlideRecord("a/s1.svs", "done", review="=1+1 looks like a formula"),
            SlideRecord("a/s2.svs", "failed", error="bad")]
    write_manifest(path, rows)
    text = path.read_text()
    assert text.splitlines()[0] == "slide,status,error,output,patches,seconds,worker,review"
    assert ",'=1+1 looks like a formula" in text  # a spreadsheet shows it, never runs it
    assert read_manifest(path) == rows
    assert rows[0].review_reasons == ["no tissue mapped", "colours: glass is not white"]
    assert rows[2].review_reasons == []
    path.write_text("slide,status,error,output,patches,seconds,worker\n"
                    "a/s0.svs,done,,o/s0.wsiseg.zarr,3,1.5,pid-1@h\n")
    assert read_manifest(path) == [SlideRecord("a/s0.svs", "done", output="o/s0.wsiseg.zarr",
                                               patches=3, seconds=1.5, worker="pid-1@h")]


def test_the_closing_table_lists_ten_slides_to_review_then_points_to_the_manifest():
    records = [SlideRecord(f"in/s{i:02}.svs", "done", review=f"reason {i}; second")
               for i in range(12)] + [SlideRecord("in/clean.svs", "done")]
    lines = summary_table(BatchResult(records, Path("out/manifest.csv"))).splitlines()
    at = lines.index("to review: 12 slides")
    assert lines[at + 1:] == ([f"  s{i:02}.svs: reason {i}" for i in range(10)]
                              + ["  ... and 2 more; see manifest.csv"])
    one = summary_table(BatchResult(records[:1] + records[-1:], Path("m.csv"))).splitlines()
    assert one[-2:] == ["to review: 1 slide", "  s00.svs: reason 0"]
    assert "to review" not in summary_table(BatchResult(records[-1:], Path("m.csv")))
