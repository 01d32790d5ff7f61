"""wsiseg.atomic: files appear whole or not at all, and OS errors become one clear line."""

from __future__ import annotations

import errno
import os

import pytest

from wsiseg.atomic import atomic_write
from wsiseg.errors import OutputError


def test_the_file_appears_with_its_content_and_no_temporary_is_left(tmp_path):
    path = tmp_path / "report.csv"
    with atomic_write(path, newline="") as f:
        f.write("a,b\r\n")
        assert not path.exists()  # nothing under the final name until it is complete
    assert path.read_bytes() == b"a,b\r\n"
    assert os.listdir(tmp_path) == ["report.csv"]


def test_a_failure_mid_write_keeps_the_earlier_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path, "wb") as f:
            f.write(b"half of the new")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.pt"]


def test_a_missing_folder_is_one_line_naming_the_file_and_the_way_out(tmp_path):
    path = tmp_path / "nowhere" / "out.json"
    with pytest.raises(OutputError) as caught:
        with atomic_write(path) as f:
            f.write("{}")
    message = str(caught.value)
    assert str(path) in message and "does not exist" in message and "\n" not in message
    assert isinstance(caught.value, OSError)


def test_a_full_disk_is_told_as_such(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    path = tmp_path / "outlines.geojson"
    with pytest.raises(OutputError, match="no space left on the device; free some space"):
        with atomic_write(path) as f:
            f.write("{}")
    assert os.listdir(tmp_path) == []


def test_only_new_files_are_written():
    with pytest.raises(ValueError, match="mode"):
        with atomic_write("x", "a"):
            pass
