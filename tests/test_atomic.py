"""wsiseg.atomic: files appear whole or not at all, and OS errors become one clear line."""

from __future__ import annotations

import errno
import os
import sys

import pytest

from wsiseg.atomic import atomic_write, describe_os_error, os_error_in
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
    with pytest.raises(KeyboardInterrupt), atomic_write(path, "wb") as f:
        f.write(b"half of the new")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.pt"]


def test_a_missing_folder_is_one_line_naming_the_file_and_the_way_out(tmp_path):
    path = tmp_path / "nowhere" / "out.json"
    with pytest.raises(OutputError) as caught, atomic_write(path) as f:
        f.write("{}")
    message = str(caught.value)
    assert str(path) in message and "does not exist" in message and "\n" not in message
    assert isinstance(caught.value, OSError)


def test_a_full_disk_is_told_as_such(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    path = tmp_path / "outlines.geojson"
    with (pytest.raises(OutputError, match="no space left on the device; free some space"),
          atomic_write(path) as f):
        f.write("{}")
    assert os.listdir(tmp_path) == []


def test_only_new_files_are_written():
    with pytest.raises(ValueError, match="mode"), atomic_write("x", "a"):
        pass


def test_the_os_error_behind_a_wrapper_is_found_and_nothing_else_is():
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise disk_full
        except OSError as err:
            raise RuntimeError("write failed") from err
    except RuntimeError as wrapped:
        assert os_error_in(wrapped) is disk_full
    # An error raised while an OS error was handled is not caused by it; wsiseg's own errors
    # already say what happened.
    try:
        try:
            raise disk_full
        except OSError:
            raise KeyError("a bug in the handler")
    except KeyError as bug:
        assert os_error_in(bug) is None
    assert os_error_in(OutputError("x: cannot write; write elsewhere")) is None


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is new in Python 3.11")
def test_the_os_error_inside_an_exception_group_is_found():
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    inner = RuntimeError("chunk write failed")
    inner.__cause__ = disk_full
    group = ExceptionGroup("chunks", [ValueError("other"), inner])
    assert os_error_in(group) is disk_full


def test_an_os_error_is_described_with_its_files_cause_and_way_out():
    assert describe_os_error(OSError(errno.EROFS, "Read-only file system", "/mnt/maps/a.zarr")) \
        == "/mnt/maps/a.zarr: the file system is read-only; write elsewhere"
    assert describe_os_error(FileNotFoundError(errno.ENOENT, "No such file", "x.svs", None, "y")) \
        == "x.svs -> y: no such file or folder; check the path"
    line = describe_os_error(OSError(errno.ENOSPC, "No space left on device"))
    assert line.endswith("no space left on the device; free some space or write elsewhere")
    assert "did not say which" in line
