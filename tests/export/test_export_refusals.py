"""Exports of a damaged result, and exports into a folder that cannot be written: one line
naming the file, what happened and the way out, exit code 1, and no file or temporary left."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr.storage._local as zarr_local
from click.testing import CliRunner
from PIL import Image

from wsiseg.cards import ClassInfo
from wsiseg.cli.main import main
from wsiseg.errors import ResultError
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.testing.result import write_result
from wsiseg.training.evaluation import evaluate_result

FORMATS = ["report", "geojson", "tiff", "png"]


@pytest.fixture(scope="module")
def published(svs_x20, pixel_model, tmp_path_factory) -> Path:
    """A result of the synthetic x20 slide: a 504 x 400 map in 4 x 4 chunks of 128 (read-only)."""
    out = tmp_path_factory.mktemp("published") / "x20.wsiseg.zarr"
    return predict_slide(svs_x20.path, PredictConfig(model=str(pixel_model[0]), out=str(out),
                                                     chunk_size=128, progress=False)).path


@pytest.fixture
def result(published, tmp_path) -> Path:
    """A copy of the published result, to damage."""
    return Path(shutil.copytree(published, tmp_path / "x20.wsiseg.zarr"))


def export(result: Path, formats: str, out: Path):
    return CliRunner().invoke(main, ["export", str(result), "--to", formats, "--out", str(out)])


def assert_one_line(run, *words: str) -> str:
    assert run.exit_code == 1, run.output
    assert "Traceback" not in run.stderr and run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsiseg: error: "), run.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_result_that_lost_a_chunk_is_not_exported(result, tmp_path, fmt):
    (result / "labels" / "classes" / "0" / "c" / "2" / "1").unlink()
    exports = tmp_path / "exports"
    assert_one_line(export(result, fmt, exports), str(result), "is damaged",
                    "labels/classes/0: 1 of 16 chunks missing (labels/classes/0/c/2/1)",
                    "run wsiseg predict again with --overwrite")
    assert os.listdir(exports) == []


@pytest.mark.parametrize("fmt,chunk", [(f, "labels/classes/0/c/1/2") for f in FORMATS]
                         + [("tiff", "labels/classes/1/c/0/0")])
def test_a_chunk_whose_bytes_changed_is_one_line(result, tmp_path, fmt, chunk):
    path = result / chunk
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    exports = tmp_path / "exports"
    array = chunk.split("/c/")[0]
    assert_one_line(export(result, fmt, exports), str(result), "is damaged",
                    f"a chunk of {array} does not decode", "--overwrite")
    assert os.listdir(exports) == []


def test_evaluating_a_damaged_result_is_one_line(result, tmp_path):
    (result / "labels" / "classes" / "0" / "c" / "3" / "3").write_bytes(b"not zstd")
    mask = tmp_path / "truth.png"
    Image.fromarray(np.zeros((400, 504), np.uint8)).save(mask)
    with pytest.raises(ResultError, match="is damaged: a chunk of labels/classes/0 does not decode"):
        evaluate_result(result, mask)


def _refuse_opening(monkeypatch, error_number: int) -> None:
    """Make wsiseg's file writes fail as in a folder it may not write into (the test may run as
    root, whom a folder's mode does not stop)."""
    real = open

    def refusing(file, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(error_number, os.strerror(error_number), str(file))
        return real(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("error_number,words", [
    (errno.EACCES, "permission denied; check the folder's permissions or write elsewhere"),
    (errno.EROFS, "the file system is read-only; write elsewhere"),
])
def test_exporting_into_a_folder_that_refuses_writes_is_one_line(published, tmp_path, monkeypatch,
                                                                  fmt, error_number, words):
    exports = tmp_path / "exports"
    exports.mkdir()
    _refuse_opening(monkeypatch, error_number)
    assert_one_line(export(published, fmt, exports), f"cannot write {exports}/x20.", words)
    assert os.listdir(exports) == []


def test_the_pyramid_of_an_older_result_cannot_be_made_in_a_full_folder(tmp_path, monkeypatch):
    classes = (ClassInfo(0, "background", (255, 255, 255)), ClassInfo(1, "tissue", (0, 128, 0)))
    labels = np.zeros((600, 300), np.uint8)
    labels[100:500, 50:250] = 1
    old = write_result(tmp_path / "old.wsiseg.zarr", labels, classes)  # made without a pyramid
    exports = tmp_path / "exports"
    exports.mkdir()
    real = zarr_local._put

    def put(path, value, exclusive=False):
        if exports in Path(path).parents:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, value, exclusive=exclusive)

    monkeypatch.setattr(zarr_local, "_put", put)
    assert_one_line(export(old, "tiff", exports), f"cannot write {exports / 'old.labels.tif'}",
                    "no space left on the device")
    assert os.listdir(exports) == []  # the temporary pyramid is gone too


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder of mode 0o555")
def test_exporting_into_a_read_only_folder(published, tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    exports.chmod(0o555)
    try:
        run = export(published, "report", exports)
    finally:
        exports.chmod(0o755)
    assert_one_line(run, f"cannot write {exports}/x20.report.json", "permission denied")
    assert os.listdir(exports) == []
