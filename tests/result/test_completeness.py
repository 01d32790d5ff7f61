"""A result that lost or damaged chunks since it was published is told, in one line, wherever it
is opened or read, and a batch predicts it again; the OS errors of writing one are one line
each, and leave nothing half-written behind."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.storage._local as zarr_local
from click.testing import CliRunner

from wsiseg.batch.runner import BatchConfig, predict_slides
from wsiseg.cards import ClassInfo
from wsiseg.cli.main import main
from wsiseg.errors import OutputError, ResultError
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.integrity import CHUNKS_ATTR, is_complete, missing_chunks
from wsiseg.result.reading import result_reads
from wsiseg.result.rows import FinishedRows
from wsiseg.result.store import open_result
from wsiseg.result.writer import OutputWriter
from wsiseg.testing import synthetic_tissue, write_svs
from wsiseg.testing.result import write_result

CLASSES = (ClassInfo(0, "background", (255, 255, 255)), ClassInfo(1, "tissue", (0, 128, 0)),
           ClassInfo(2, "tumour", (200, 0, 0)))


def _map(height: int = 300, width: int = 200) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.uint8)  # background around the tissue
    labels[64:250, 20:180] = 1
    labels[70:120, 70:130] = 2  # tumour, in chunk row 1, chunk column 1 (chunks of 64)
    return labels


def _publish(out: Path, labels: np.ndarray, chunk: int = 64) -> Path:
    """``labels`` published as ``wsiseg predict`` does, through an :class:`OutputWriter`."""
    info = open_result(write_result(out.with_name("described.zarr"), labels, CLASSES))[1]
    # The tissue mask below is 8 times coarser than the map, as the attributes must say.
    info = dataclasses.replace(info, tissue=dataclasses.replace(info.tissue, factor=8))
    h, w = labels.shape
    writer = OutputWriter(out, h, w, len(CLASSES), probabilities=False, chunk=chunk)
    writer.write_tissue((labels[::8, ::8] > 0).astype(np.uint8))
    writer.write_image(np.full((*labels[::8, ::8].shape, 3), 230, np.uint8))
    writer.write_rows(FinishedRows(y=0, labels=labels, probabilities=None))
    return writer.publish(info, overwrite=False)


def _one_line(message: str, *words: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, (word, message)


def _flip_a_byte(chunk: Path) -> None:
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def test_every_chunk_is_stored_and_recorded_background_ones_too(tmp_path):
    out = _publish(tmp_path / "r.wsiseg.zarr", _map())
    group = zarr.open_group(str(out), mode="r")
    # 300 x 200 in chunks of 64: 5 x 4; its pyramid level 150 x 100: 3 x 2; the slide's
    # picture and the tissue mask, 38 x 25 and 19 x 13: 1 each.
    assert dict(group.attrs[CHUNKS_ATTR]) == {
        "0": 1, "1": 1, "labels/classes/0": 20, "labels/classes/1": 6, "labels/tissue/0": 1,
        "labels/tissue/1": 1}
    labels0 = out / "labels" / "classes" / "0"
    assert (labels0 / "c" / "0" / "0").is_file()  # all background, stored all the same
    assert sorted(p.name for p in (labels0 / "c" / "4").iterdir()) == ["0", "1", "2", "3"]
    labels, info = open_result(out)
    assert np.array_equal(labels[...], _map()) and info.shape == (300, 200)
    assert is_complete(out) and missing_chunks(out, group) is None


@pytest.mark.parametrize("lost,words", [
    (["labels/classes/0/c/1/1"],  # the tumour's chunk
     ["labels/classes/0: 1 of 20 chunks missing (labels/classes/0/c/1/1)"]),
    (["labels/classes/0/c/0/0", "labels/classes/0/c/4/3"],
     [("labels/classes/0: 2 of 20 chunks missing (labels/classes/0/c/0/0, "
       "labels/classes/0/c/4/3)")]),
    (["labels/classes/1/c/0/1"],
     ["labels/classes/1: 1 of 6 chunks missing (labels/classes/1/c/0/1)"]),
    (["labels/tissue/0"], ["labels/tissue/0: the whole array is missing"]),
    (["1/c/0/0/0"], ["1: 1 of 1 chunks missing (1/c/0/0/0)"]),  # the slide's picture
])
def test_a_result_that_lost_chunks_is_refused_in_one_line(tmp_path, caplog, lost, words):
    out = _publish(tmp_path / "r.wsiseg.zarr", _map())
    for name in lost:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(ResultError) as caught:
        open_result(out)
    _one_line(str(caught.value), str(out), "is damaged", *words,
              "run wsiseg predict again with --overwrite", "a batch run redoes it by itself")
    assert not is_complete(out)
    assert any(str(out) in r.getMessage() and words[0] in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING")


def test_a_result_written_without_a_record_still_opens(tmp_path, caplog):
    out = write_result(tmp_path / "old.wsiseg.zarr", _map(), CLASSES, chunk=64)
    assert CHUNKS_ATTR not in zarr.open_group(str(out), mode="r").attrs
    # Nothing can tell it from empty.
    (out / "labels" / "classes" / "0" / "c" / "0" / "0").unlink(missing_ok=True)
    labels, _ = open_result(out)
    assert np.array_equal(labels[...], _map()) and is_complete(out)
    assert not [r for r in caplog.records if r.levelno >= 30]


def test_a_chunk_whose_bytes_changed_is_one_line_where_it_is_read(tmp_path):
    out = _publish(tmp_path / "r.wsiseg.zarr", _map())
    _flip_a_byte(out / "labels" / "classes" / "0" / "c" / "1" / "1")
    labels, _ = open_result(out)  # the files are all there: only reading tells
    with pytest.raises(ResultError) as caught, result_reads(out):
        np.asarray(labels[...])
    _one_line(str(caught.value), str(out), "is damaged",
              "a chunk of labels/classes/0 does not decode", "--overwrite")
    # A chunk that cannot be read (here: a folder in its place) is the result's too.
    level_1 = out / "labels" / "classes" / "1" / "c" / "0" / "0"
    level_1.unlink()
    level_1.mkdir()
    (level_1 / "x").write_bytes(b"")
    with pytest.raises(ResultError, match="labels/classes/1: 1 of 6 chunks missing"):
        open_result(out)


def test_only_errors_of_the_result_itself_become_its_damage(tmp_path):
    out = _publish(tmp_path / "r.wsiseg.zarr", _map())
    with pytest.raises(ValueError, match="a bug"), result_reads(out):
        raise ValueError("a bug")
    # A damaged store that is not this result is not blamed on it.
    other = _publish(tmp_path / "other.wsiseg.zarr", _map())
    _flip_a_byte(other / "labels" / "classes" / "0" / "c" / "1" / "1")
    with pytest.raises(RuntimeError, match="Zstd"), result_reads(out):
        open_result(other)[0][...]


def _small_slide(folder: Path) -> Path:
    rgb, _ = synthetic_tissue(480, 640, seed=3, tissue_fraction=0.5)
    return write_svs(folder / "s0.svs", rgb, mpp=0.5)  # a 320 x 240 map at 1 um/px


def test_a_batch_predicts_a_damaged_result_again(tmp_path, pixel_model):
    slide = _small_slide(tmp_path)
    config = BatchConfig(out_dir=str(tmp_path / "maps"), progress=False, predict=PredictConfig(
        model=str(pixel_model[0]), chunk_size=128, progress=False))
    first = predict_slides([slide], config)
    out = tmp_path / "maps" / "s0.wsiseg.zarr"
    assert [r.status for r in first.records] == ["done"]
    before = open_result(out)[0][...]
    (out / "labels" / "classes" / "0" / "c" / "1" / "1").unlink()
    assert not is_complete(out)

    again = predict_slides([slide], config)
    assert [r.status for r in again.records] == ["done"]  # predicted again, not kept
    assert is_complete(out) and np.array_equal(open_result(out)[0][...], before)
    assert [r.status for r in predict_slides([slide], config).records] == ["skipped"]


# --- OS errors while writing a result ---------------------------------------------------------

def _fail_writes(monkeypatch, fails, error) -> None:
    """Make zarr's file writes raise ``error`` (an OSError) where ``fails(path, data)``."""
    real = zarr_local._put

    def put(path, value, exclusive=False):
        if fails(Path(path), value.to_bytes()):
            raise error
        return real(path, value, exclusive=exclusive)

    monkeypatch.setattr(zarr_local, "_put", put)


NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where,fails", [
    ("creating the store", lambda p, data: p.name == "zarr.json"),
    ("tissue", lambda p, data: p.parts[-5:] == ("tissue", "0", "c", "0", "0")),
    ("slide picture", lambda p, data: p.parts[-6:-4] == ("s0.wsiseg.zarr.partial", "1")),
    ("labels, mid-way", lambda p, data: p.parts[-5:] == ("classes", "0", "c", "1", "0")),
    ("pyramid", lambda p, data: p.parts[-5:-3] == ("classes", "1") and p.name != "zarr.json"),
    ("attributes", lambda p, data: p.name == "zarr.json" and b'"wsiseg"' in data),
])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, pixel_model, monkeypatch, where,
                                                     fails):
    slide = _small_slide(tmp_path)
    maps = tmp_path / "maps"
    maps.mkdir()
    out = maps / "s0.wsiseg.zarr"
    _fail_writes(monkeypatch, fails, NO_SPACE)
    with pytest.raises(OutputError) as caught:
        predict_slide(slide, PredictConfig(model=str(pixel_model[0]), out=str(out),
                                           chunk_size=128, progress=False))
    doing = "create" if where == "creating the store" else "write"
    assert str(caught.value) == (f"cannot {doing} {out}: no space left on the device; free "
                                 "some space or write elsewhere")
    assert os.listdir(maps) == []  # no .partial store, no temporary file


def test_a_folder_that_refuses_the_final_rename_keeps_the_old_result(tmp_path, monkeypatch):
    out = _publish(tmp_path / "r.wsiseg.zarr", _map())
    info = open_result(out)[1]
    writer = OutputWriter(out, 300, 200, len(CLASSES), probabilities=False, chunk=64)
    writer.write_image(np.zeros((30, 20, 3), np.uint8))
    writer.write_rows(FinishedRows(y=0, labels=np.zeros((300, 200), np.uint8), probabilities=None))
    real = os.replace

    def replace(src, dst):
        if Path(src) == writer.partial:
            raise OSError(errno.EROFS, "Read-only file system", str(src), None, str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError) as caught:
        writer.publish(info, overwrite=True)
    writer.abort()
    assert str(caught.value) == (f"cannot write {out}: the file system is read-only; write "
                                 "elsewhere")
    assert sorted(os.listdir(tmp_path)) == ["described.zarr", "r.wsiseg.zarr"]
    assert np.array_equal(open_result(out)[0][...], _map())  # the old one, whole


def test_a_read_only_out_folder_is_one_line_from_the_command(tmp_path, pixel_model, monkeypatch):
    slide = _small_slide(tmp_path)
    maps = tmp_path / "maps"
    maps.mkdir()
    out = maps / "s0.wsiseg.zarr"
    # Root writes into folders whatever their mode: the system's answer is made here instead.
    _fail_writes(monkeypatch, lambda p, data: True,
                 PermissionError(errno.EACCES, "Permission denied", str(out) + ".partial"))
    run = CliRunner().invoke(main, ["predict", str(slide), "--model", str(pixel_model[0]),
                                    "--out", str(out), "--quiet"])
    assert run.exit_code == 1
    assert run.stderr == (f"wsiseg: error: cannot create {out}: permission denied; check the "
                          "folder's permissions or write elsewhere\n")
    assert os.listdir(maps) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder of mode 0o555")
def test_a_folder_without_write_permission_is_refused_before_any_work(tmp_path, pixel_model):
    slide = _small_slide(tmp_path)
    maps = tmp_path / "maps"
    maps.mkdir()
    maps.chmod(0o555)
    try:
        run = CliRunner().invoke(main, ["predict", str(slide), "--model", str(pixel_model[0]),
                                        "--out", str(maps / "s0.wsiseg.zarr"), "--quiet"])
    finally:
        maps.chmod(0o755)
    assert run.exit_code == 1
    _one_line(run.stderr.strip(), str(maps), "not writable", "permission denied", "--out")
    assert os.listdir(maps) == []
