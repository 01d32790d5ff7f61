"""What a batch leaves out of a folder, and list files: CSV with a resolution per slide, relative
paths taken from the list's folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from wsiseg.batch.discovery import SLIDE_SUFFIXES, describe_ignored, discover, is_batch
from wsiseg.batch.runner import BatchConfig, BatchResult, predict_slides, summary_table
from wsiseg.errors import ConfigError
from wsiseg.inference.config import PredictConfig
from wsiseg.result.store import open_result


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_folder_lists_what_it_leaves_out_but_not_hidden_or_batch_files(tmp_path):
    folder = tmp_path / "scans"
    taken = [_touch(folder / "a.svs"), _touch(folder / "m.mrxs"), _touch(folder / "m" / "x.dat")]
    left = [_touch(folder / "b.qptiff"), _touch(folder / "c.vsi"), _touch(folder / "lone.mrxs"),
            _touch(folder / "notes.txt"), _touch(folder / "more" / "d.svs").parent]
    _touch(folder / ".DS_Store")
    _touch(folder / "manifest.csv")
    _touch(folder / "a.wsiseg.zarr" / "zarr.json", "{}")
    _touch(folder / "a.wsiseg.zarr.claim")
    _touch(folder / "results" / "manifest.csv")  # a batch's own folder, inside
    (folder / "t.ome.zarr").mkdir()
    found = discover([folder])
    assert set(found.paths) == {taken[0], taken[1], folder / "t.ome.zarr"}
    assert set(found.ignored) == set(left)
    assert describe_ignored(found.ignored) == (
        "4 files (.qptiff, .vsi, an .mrxs without its data folder, .txt), 1 folder (folders "
        "are not searched)")


def test_a_dicom_series_folder_leaves_nothing_out(tmp_path):
    from wsiseg.testing import synthetic_tissue, write_dicom_wsi

    pytest.importorskip("pydicom")
    series = tmp_path / "series"
    write_dicom_wsi(series, synthetic_tissue(64, 64, seed=1)[0], 0.5, downsamples=(1,))
    _touch(series / "DICOMDIR.txt")
    found = discover([series])
    assert found.paths == (series,) and found.ignored == ()


def test_a_folder_of_no_slide_says_what_it_left_out(tmp_path):
    _touch(tmp_path / "a.czi")
    with pytest.raises(ConfigError, match=r"folder holds no slide \(read: \.svs.*1 file \(\.czi\)"):
        discover([tmp_path])


def test_the_summary_lists_what_was_left_out_and_rows_do_not():
    result = BatchResult([], Path("out/manifest.csv"), [Path("s/a.qptiff"), Path("s/b.vsi")])
    assert summary_table(result).splitlines()[-1] == (
        "ignored: 2 files (.qptiff, .vsi); see wsiseg predict --help for the formats read")
    assert "ignored" not in summary_table(BatchResult([], Path("m.csv")))


def test_every_format_read_is_in_the_help():
    from click.testing import CliRunner

    from wsiseg.cli.main import main

    text = CliRunner().invoke(main, ["predict", "--help"]).output
    assert all(suffix in text for suffix in SLIDE_SUFFIXES) and ".ome.zarr" in text


def test_list_paths_are_relative_to_the_list_not_the_current_folder(tmp_path, monkeypatch):
    slide = _touch(tmp_path / "lists" / "scans" / "a.svs")
    text_list = _touch(tmp_path / "lists" / "slides.txt", "# scans\nscans/a.svs\n\n")
    csv_list = _touch(tmp_path / "lists" / "slides.csv", "Slide, mpp\nscans/a.svs,0.25\n")
    monkeypatch.chdir(tmp_path)
    assert discover([os.path.relpath(text_list)]).paths == (Path("lists/scans/a.svs"),)
    assert discover([csv_list]).paths == (slide,)
    monkeypatch.chdir(slide.parent)  # where a name relative to the current folder would be
    with pytest.raises(ConfigError, match="none of the 1 paths it lists exists"):
        discover([_touch(tmp_path / "elsewhere" / "l.txt", "a.svs\n")])


def test_a_csv_list_gives_each_slide_its_resolution_or_none(tmp_path):
    for name in ("a.svs", "b.svs", "c.svs"):
        _touch(tmp_path / name)
    listed = _touch(tmp_path / "l.csv", "slide,mpp,notes\na.svs,0.5,x\nb.svs,,y\n\nc.svs\n")
    assert is_batch([listed])
    found = discover([listed])
    assert [p.name for p in found.paths] == ["a.svs", "b.svs", "c.svs"]
    assert found.mpp == (0.5, None, None)


@pytest.mark.parametrize("text,words", [
    ("name\na.svs\n", "no 'slide' column"),
    ("slide,mpp\na.svs,fast\n", "the mpp 'fast' of a.svs is not a plausible resolution"),
    ("slide,mpp\na.svs,0\n", "the mpp '0' of a.svs"),
    ("slide,mpp\na.svs,0.5\na.svs,0.25\n", "listed twice, with mpp 0.5 and 0.25"),
])
def test_a_bad_csv_list_is_refused_in_one_line(tmp_path, text, words):
    _touch(tmp_path / "a.svs")
    with pytest.raises(ConfigError, match=words) as err:
        discover([_touch(tmp_path / "l.csv", text)])
    assert "\n" not in str(err.value)


def test_a_listed_resolution_reaches_the_result_and_the_batch_one_only_fills_gaps(
        slides, pixel_model, tmp_path):
    from wsiseg.testing import synthetic_tissue, write_svs

    no_mpp = write_svs(tmp_path / "no-mpp.svs", synthetic_tissue(300, 300, seed=2)[0], mpp=None,
                       downsamples=(1,), compression="none")
    gap = shutil.copy(no_mpp, tmp_path / "gap.svs")
    listed = _touch(tmp_path / "l.csv", f"slide,mpp\nno-mpp.svs,0.5\n{slides / 's0.svs'},\n")
    fallback = _touch(tmp_path / "f.txt", f"{slides / 's1.svs'}\n{gap}\n")
    predict = PredictConfig(model=str(pixel_model[0]), progress=False, slide_mpp=0.4)
    config = BatchConfig(out_dir=str(tmp_path / "out"), progress=False, predict=predict)
    result = predict_slides(discover([listed, fallback]), config)
    assert [r.status for r in result.records] == ["done"] * 4, result.records
    recorded = [open_result(Path(r.output))[1] for r in result.records]
    assert [(i.config["slide_mpp"], i.slide.mpp_source) for i in recorded] == [
        (0.5, "user"), (None, "metadata"), (None, "metadata"), (0.4, "user")]


def test_a_file_that_is_no_slide_fails_before_the_model_loads(tmp_path):
    folder = tmp_path / "scans"
    _touch(folder / "bad.svs", "random bytes")
    _touch(folder / "c.vsi")
    predict = PredictConfig(model=str(tmp_path / "missing.pt"), progress=False)
    result = predict_slides(discover([folder]),
                            BatchConfig(out_dir=str(tmp_path / "out"), progress=False,
                                        predict=predict))
    (record,) = result.records
    assert record.status == "failed" and "not a whole-slide image" in record.error
    assert result.ignored == [folder / "c.vsi"]
