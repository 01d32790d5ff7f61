"""What a result's folder holds is read safely: a chunk that would decompress to gigabytes, a
metadata file linked to a pipe or to ``/dev/zero``, a link out of the result, are each one line,
at once and in little memory (checked in a process of its own under a memory limit)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numcodecs
import numpy as np
import pytest
from hostile_results import one_line, run_limited

from wsiseg.errors import ResultError
from wsiseg.result.files import METADATA_LIMIT, ChunkRule, chunk_problem, zstd_frame_problem
from wsiseg.result.store import open_result, open_result_group

CHUNK = "labels/classes/0/c/1/1"  # a chunk of 64 x 64 of the map


def zstd_zeros(size: int, declared: bool = True, blocks: int | None = None) -> bytes:
    """A zstd frame of ``size`` zero bytes in run-length blocks: a few bytes per 128 KiB, so
    2 GiB take 64 KiB. With ``declared`` its header gives the size (as numcodecs writes
    frames); without, it gives only a window, as a streaming compressor does. ``blocks``
    stops after that many blocks: a frame that declares more than it holds."""
    frame = bytearray((0xFD2FB528).to_bytes(4, "little"))
    frame += bytes([0xE0]) + size.to_bytes(8, "little") if declared else bytes([0x00, 0x38])
    left = size
    for _ in range(blocks if blocks is not None else size):
        block = min(128 * 1024, left)
        left -= block
        last = left == 0 or blocks == 1
        frame += (int(last) | 1 << 1 | block << 3).to_bytes(3, "little") + b"\0"
        if last:
            break
        blocks = None if blocks is None else blocks - 1
    return bytes(frame)


def test_the_frames_made_here_are_what_zstd_decodes():
    for declared in (True, False):
        assert numcodecs.Zstd().decode(zstd_zeros(300_000, declared)) == bytes(300_000)


#: Opens and reads each result of {results}, then exports it to each format; prints one line
#: per attempt (five per result), the error or ``ok``.
READ_AND_EXPORT = """
    from wsiseg.errors import WsisegError
    from wsiseg.export import export_result
    from wsiseg.result.reading import result_reads
    from wsiseg.result.store import open_result

    def attempt(do):
        try:
            do()
            print("ok")
        except WsisegError as err:
            print(str(err).replace("\\n", " NEWLINE "))

    def read(result):
        labels, _ = open_result(result)
        with result_reads(result):
            labels[...]

    for result, out in {results!r}:
        attempt(lambda: read(result))
        for fmt in ("report", "tiff", "geojson", "png"):
            attempt(lambda: export_result(result, [fmt], out))
"""


def _copies(published: Path, tmp_path: Path, n: int) -> list[Path]:
    return [Path(shutil.copytree(published, tmp_path / f"{i}" / published.name))
            for i in range(n)]


def test_chunks_that_decompress_to_gigabytes_are_one_line_in_little_memory(small_published,
                                                                           tmp_path):
    bombs = {
        # A few bytes that declare 2 GiB: numcodecs would allocate them before decoding.
        "declares 2 GiB": (zstd_zeros(2**31, blocks=1),
                           ("is a zstd frame that declares 2147483648 bytes decoded, not the "
                            "4096 of its chunk")),
        # 2 GiB of blocks, with or without the size declared: more bytes than a chunk's frame.
        "2 GiB": (zstd_zeros(2**31), "holds 65549 bytes, more than the 4192 it can hold"),
        "2 GiB, undeclared": (zstd_zeros(2**31, declared=False),
                              "holds 65542 bytes, more than the 4192 it can hold"),
        # Few enough blocks to be as short as a chunk's frame, but of an unknown size.
        "undeclared": (zstd_zeros(2**27, declared=False),
                       "is a zstd frame that does not declare its decoded size"),
    }
    results = _copies(small_published, tmp_path, len(bombs))
    for result, (bomb, _) in zip(results, bombs.values()):
        assert len(bomb) < 80_000
        (result / CHUNK).write_bytes(bomb)
    run = run_limited(READ_AND_EXPORT.format(
        results=[(str(r), str(r.parent / "out")) for r in results]))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 5 * len(bombs), run.stdout
    for i, (result, (_, why)) in enumerate(zip(results, bombs.values())):
        for line in lines[5 * i : 5 * i + 5]:
            one_line(line, str(result), "is damaged: a chunk of labels/classes/0 does not "
                     f"decode ({CHUNK} {why})", "run wsiseg predict again")


@pytest.mark.parametrize("chunk, words", [
    (lambda good: good + zstd_zeros(2**31, blocks=1), "bytes after its zstd frame"),
    (lambda good: (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + bytes(4),
     "is a skippable zstd frame"),
    (lambda good: good[:-7], "cut short"),
    (lambda good: good * 200, "more than the 4192 it can hold"),
], ids=["a second frame", "a skippable frame", "cut short", "too long"])
def test_a_chunk_that_is_not_one_frame_of_its_size_is_refused_unread(result_copy, chunk, words):
    good = (result_copy / CHUNK).read_bytes()
    assert zstd_frame_problem(good, 64 * 64) is None  # what the writer writes passes
    (result_copy / CHUNK).write_bytes(chunk(good))
    labels, _ = open_result(result_copy)
    with pytest.raises(ResultError) as caught:
        labels[...]
    one_line(str(caught.value), str(result_copy), CHUNK, words, "run wsiseg predict again")


def test_a_chunk_of_an_array_without_a_compressor_holds_its_size_exactly():
    rule = ChunkRule("x", 16, zstd=False)
    assert chunk_problem(bytes(16), rule) is None
    assert "holds 17 bytes, not the 16" in chunk_problem(bytes(17), rule)


def test_metadata_linked_to_a_pipe_or_a_device_is_one_line_at_once(small_published, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    results = _copies(small_published, tmp_path, 2)
    for result, target in zip(results, (fifo, Path("/dev/zero"))):
        (result / "zarr.json").unlink()
        (result / "zarr.json").symlink_to(target)
    run = run_limited(READ_AND_EXPORT.format(
        results=[(str(r), str(r.parent / "out")) for r in results]))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 10, run.stdout
    for i, result in enumerate(results):
        for line in lines[5 * i : 5 * i + 5]:
            one_line(line, str(result), "zarr.json is a symbolic link", "plain files only")


def test_a_fifo_or_a_link_inside_the_result_is_refused(result_copy, tmp_path):
    meta = result_copy / "labels" / "classes" / "0" / "zarr.json"
    meta.rename(tmp_path / "moved.json")
    os.mkfifo(meta)
    with pytest.raises(ResultError) as caught:
        open_result(result_copy)
    one_line(str(caught.value), "labels/classes/0/zarr.json is a named pipe (FIFO), not a "
             "plain file")
    meta.unlink()
    # A link, even to the file it replaces, is not followed.
    meta.symlink_to(tmp_path / "moved.json")
    with pytest.raises(ResultError, match="labels/classes/0/zarr.json is a symbolic link"):
        open_result(result_copy)
    meta.unlink()
    (tmp_path / "moved.json").rename(meta)
    # A linked folder neither.
    level = result_copy / "labels" / "classes" / "1"
    level.rename(tmp_path / "level1")
    level.symlink_to(tmp_path / "level1")
    with pytest.raises(ResultError, match="labels/classes/1 is a symbolic link"):
        open_result(result_copy)


def test_a_linked_chunk_counts_as_missing_and_is_never_read(result_copy, tmp_path):
    chunk = result_copy / CHUNK
    chunk.rename(tmp_path / "chunk")
    chunk.symlink_to(tmp_path / "chunk")
    with pytest.raises(ResultError) as caught:
        open_result(result_copy)
    one_line(str(caught.value), "is damaged: labels/classes/0: 1 of 20 chunks missing "
             f"({CHUNK})")
    with pytest.raises(ResultError, match=f"{CHUNK} is a symbolic link"):
        open_result_group(result_copy)["labels/classes/0"][...]


def test_the_result_folder_itself_may_be_a_link(small_published, tmp_path):
    link = tmp_path / "linked.wsiseg.zarr"
    link.symlink_to(small_published)
    labels, _ = open_result(link)
    assert np.array_equal(labels[...], open_result(small_published)[0][...])


def test_a_metadata_file_too_large_is_refused_unread(result_copy):
    meta = result_copy / "labels" / "classes" / "0" / "zarr.json"
    with meta.open("ab") as f:
        f.truncate(METADATA_LIMIT + 1)  # sparse: no disk used
    with pytest.raises(ResultError) as caught:
        open_result(result_copy)
    one_line(str(caught.value), f"holds {METADATA_LIMIT + 1} bytes, more than the "
             f"{METADATA_LIMIT}")
