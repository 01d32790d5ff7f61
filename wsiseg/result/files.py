"""Reading a result's files: plain files inside the result only, of a bounded size, each chunk
checked before it is decompressed.

:class:`ResultStore` is the zarr store every read of an existing result goes through
(:func:`wsiseg.result.store.open_result_group`). A result folder holds plain files that
``wsiseg predict`` wrote, so anything else is refused in one line, before a byte is read:

- a symbolic link anywhere inside the result (the folder itself may be one): it could point out
  of the result, or at a device or a pipe; the result is read as it was written, links never
  followed (``O_NOFOLLOW`` on every part of the path);
- a file that is no regular file (a FIFO, which would block every read, a device such as
  ``/dev/zero``, which never ends): it is opened without blocking and refused by ``fstat``;
- a metadata file (``zarr.json``) over :data:`METADATA_LIMIT` bytes;
- an array whose metadata asks for more than wsiseg writes: a codec other than ``bytes`` and
  ``zstd`` (no sharding, no other compressor), a data type of no fixed size, a chunk of more
  than :data:`CHUNK_LIMIT` bytes decoded;
- a chunk whose stored bytes could not be what its array's metadata says: longer than a zstd
  frame of its decoded size can be, or a zstd frame that does not declare its decoded size,
  declares another size than the chunk's, has blocks that run past its end, or is followed by
  anything (another frame, a skippable frame). zstd (numcodecs) allocates what a frame
  declares, and grows its output for one that declares nothing, so a frame of a few kilobytes
  could otherwise ask for gigabytes; checked here, no chunk decodes to more than its shape.
"""

from __future__ import annotations

import asyncio
import copy
import errno
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer.core import default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.storage import LocalStore

from wsiseg.errors import ResultError
from wsiseg.result.reading import REDO

if TYPE_CHECKING:
    from collections.abc import Iterable

    from zarr.abc.store import ByteRequest
    from zarr.core.buffer import Buffer, BufferPrototype

#: The largest metadata file (``zarr.json``) read: a result's largest is a few hundred kB.
METADATA_LIMIT = 16 * 2**20
#: The largest chunk, decoded, of an array of a result: wsiseg writes chunks of 512 x 512
#: (x classes: one class per chunk) or 3 x 1024 x 1024 bytes.
CHUNK_LIMIT = 64 * 2**20
#: Names of zarr metadata files.
METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
#: Bytes per element of the data types a result may hold.
ITEM_SIZES = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4,
              "uint32": 4, "int64": 8, "uint64": 8, "float16": 2, "float32": 4, "float64": 8}

_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_BLOCK_MAX = 128 * 1024
_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISDIR, "a folder"))


@dataclass(frozen=True)
class ChunkRule:
    """What each stored chunk of one array may be: its decoded size, and whether it is a zstd
    frame (else the raw bytes)."""

    array: str  # its path in the result
    decoded_bytes: int
    zstd: bool

    @property
    def max_stored(self) -> int:
        """The most bytes a chunk can take on disk: zstd's bound for incompressible data (a
        raw block header per 128 KiB) plus its frame header and checksum."""
        if not self.zstd:
            return self.decoded_bytes
        return self.decoded_bytes + self.decoded_bytes // 128 + 64


class ResultStore(LocalStore):
    """A read-only :class:`zarr.storage.LocalStore` of a result that reads only regular files
    inside it, of bounded size, and checks each chunk before zarr decodes it (see the module).

    A refusal is a :class:`ResultError` naming the result, the file and what is wrong with it.
    """

    def __init__(self, root: Path | str, *, read_only: bool = True) -> None:
        super().__init__(root, read_only=True)
        self._rules: dict[str, ChunkRule | None] = {}  # array (or group) path -> its rule

    def with_read_only(self, read_only: bool = False) -> ResultStore:
        store = type(self)(self.root)
        store._rules = self._rules  # one cache of what the metadata said
        return store

    # -- zarr's reads ------------------------------------------------------------------------

    def get_sync(self, key: str, *, prototype: BufferPrototype | None = None,
                 byte_range: ByteRequest | None = None) -> Buffer | None:
        self._ensure_open_sync()
        data = self.read(key, byte_range)
        return None if data is None else (prototype or default_buffer_prototype()).buffer.from_bytes(data)

    async def get(self, key: str, prototype: BufferPrototype | None = None,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        if not self._is_open:
            await self._open()
        data = await asyncio.to_thread(self.read, key, byte_range)
        return None if data is None else (prototype or default_buffer_prototype()).buffer.from_bytes(data)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]
                                 ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    # -- the checks --------------------------------------------------------------------------

    def refused(self, key: str, what: str) -> ResultError:
        """The one line for a file ``key`` of the result that is ``what``."""
        return ResultError(f"{self.root} is damaged: {key} {what}; the result was edited or "
                           f"damaged since wsiseg predict wrote it; {REDO}")

    def undecodable(self, rule: ChunkRule, key: str, what: str) -> ResultError:
        """The one line for the chunk ``key`` of ``rule``'s array that is ``what``, told as
        zarr's own decoding errors are (:func:`wsiseg.result.reading.read_error`)."""
        return ResultError(f"{self.root} is damaged: a chunk of {rule.array} does not decode "
                           f"({key} {what}); {REDO}")

    def read(self, key: str, byte_range: ByteRequest | None = None) -> bytes | None:
        """The bytes of ``key`` (None when there is no such file), checked (see the module)."""
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise self.refused(key, "is not a name of a file inside the result")
        metadata = parts[-1] in METADATA_NAMES
        rule = None if metadata else self._chunk_rule(parts)
        limit = METADATA_LIMIT if metadata else rule.max_stored if rule else CHUNK_LIMIT
        fd = self._open_file(key, parts)
        if fd is None:
            return None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                return None  # a folder is no key, as for zarr's own store
            if not stat.S_ISREG(info.st_mode):
                kind = next((k for test, k in _FILE_KINDS if test(info.st_mode)), "no plain file")
                raise self.refused(key, f"is {kind}, not a plain file")
            size = info.st_size
            if size > limit:
                problem = f"holds {size} bytes, more than the {limit} it can hold"
                raise self.refused(key, problem) if rule is None else self.undecodable(
                    rule, key, problem)
            start, stop = _span(byte_range, size)
            data = _read_at(fd, start, stop - start)
        except OSError as err:
            if isinstance(err, ResultError):
                raise
            raise OSError(err.errno, err.strerror, str(self.root / key)) from err
        finally:
            os.close(fd)
        if metadata and parts[-1] == "zarr.json" and byte_range is None:
            self._rules["/".join(parts[:-1])] = self._rule_of(key, data)
        elif rule is not None and byte_range is None:
            wrong = chunk_problem(data, rule)
            if wrong:
                raise self.undecodable(rule, key, wrong)
        return data

    def _open_file(self, key: str, parts: list[str]) -> int | None:
        """A descriptor of the file ``key``, reached without following any link below the
        result's folder and opened without blocking; None when it does not exist."""
        try:
            where = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(self.root)) from err
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (
                    os.O_NONBLOCK if last else os.O_DIRECTORY)
                try:
                    fd = os.open(part, flags, dir_fd=where)
                except OSError as err:
                    # O_NOFOLLOW: a link is ELOOP, or ENOTDIR where a folder is asked for.
                    if err.errno == errno.ELOOP or _is_link(part, where):
                        raise self.refused("/".join(parts[:i + 1]), "is a symbolic link; a "
                                           "result holds plain files only") from None
                    if isinstance(err, (FileNotFoundError, NotADirectoryError)):
                        return None
                    raise OSError(err.errno, err.strerror, str(self.root / key)) from err
                os.close(where)
                where = fd
            fd, where = where, -1
            return fd
        finally:
            if where >= 0:
                os.close(where)

    def _chunk_rule(self, parts: list[str]) -> ChunkRule | None:
        """The rule of the array that the chunk ``parts`` belongs to (None: none found)."""
        for i in range(len(parts) - 1, -1, -1):
            prefix = "/".join(parts[:i])
            if prefix not in self._rules:
                self.read(f"{prefix}/zarr.json" if prefix else "zarr.json")
                self._rules.setdefault(prefix, None)
            rule = self._rules[prefix]
            if rule is not None:
                return rule
        return None

    def _rule_of(self, key: str, data: bytes) -> ChunkRule | None:
        """The chunk rule of an array's ``zarr.json`` (None for a group, or metadata that zarr
        itself will refuse); refuses what wsiseg never writes."""
        try:
            meta = json.loads(data)
        except ValueError:
            return None
        if not isinstance(meta, dict) or meta.get("node_type") != "array":
            return None
        return array_rule(key.rpartition("/")[0] or "/", meta,
                          lambda what: self.refused(key, what))


def array_rule(array: str, meta: dict[str, Any], refused: Any) -> ChunkRule:
    """The :class:`ChunkRule` of the array ``array`` of zarr v3 metadata ``meta``;
    ``refused(what)`` makes the error for an array that asks for more than wsiseg writes."""
    shape = meta.get("shape")
    if not (isinstance(shape, list) and all(_count(n) for n in shape)):
        raise refused(f"declares the shape {_show(shape)}, not whole numbers of 0 or more")
    dtype = meta.get("data_type")
    if not isinstance(dtype, str) or dtype not in ITEM_SIZES:
        raise refused(f"declares the data type {_show(dtype)}, which wsiseg does not write")
    grid = meta.get("chunk_grid")
    config = grid.get("configuration") if isinstance(grid, dict) else None
    chunks = config.get("chunk_shape") if isinstance(config, dict) else None
    if not (isinstance(grid, dict) and grid.get("name") == "regular" and isinstance(chunks, list)
            and len(chunks) == len(shape) and all(_count(n) and n >= 1 for n in chunks)):
        raise refused(f"declares the chunk grid {_show(grid)}, not a regular grid of chunks "
                      "of 1 or more elements a side")
    decoded = math.prod(chunks) * ITEM_SIZES[dtype]
    if decoded > CHUNK_LIMIT:
        raise refused(f"declares chunks of {decoded} bytes, more than the {CHUNK_LIMIT} a chunk "
                      "of a result may hold")
    codecs = meta.get("codecs")
    names = [c.get("name") if isinstance(c, dict) else c for c in codecs] if isinstance(
        codecs, list) else None
    if names not in (["bytes"], ["bytes", "zstd"]):
        raise refused(f"declares the codecs {_show(names)}; wsiseg writes bytes and zstd only")
    try:  # what else zarr reads of it (fill value, names, attributes), read as zarr does
        ArrayV3Metadata.from_dict(copy.deepcopy(meta))
    except Exception as err:  # whatever zarr's parsers raise, it is one line
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise refused(f"is array metadata that does not read ({reason})") from err
    return ChunkRule(array, decoded, zstd=names[-1] == "zstd")


def chunk_problem(data: bytes, rule: ChunkRule) -> str | None:
    """What is wrong with the stored chunk ``data`` of an array of ``rule``, in a few words
    (None: nothing; it may still fail its checksum when decoded)."""
    if not rule.zstd:
        if len(data) != rule.decoded_bytes:
            return f"holds {len(data)} bytes, not the {rule.decoded_bytes} of its chunk"
        return None
    return zstd_frame_problem(data, rule.decoded_bytes)


def zstd_frame_problem(data: bytes, decoded_bytes: int) -> str | None:
    """What keeps ``data`` from being one zstd frame of exactly ``decoded_bytes`` bytes,
    declared in its header, and nothing after it (None when it is one). Reads the frame header
    and the block headers only (RFC 8878), no decompression."""
    size = len(data)
    if size < 6:
        return f"holds {size} bytes, too few for a zstd frame"
    magic = int.from_bytes(data[:4], "little")
    if magic & 0xFFFFFFF0 == 0x184D2A50:
        return "is a skippable zstd frame, which wsiseg never writes"
    if magic != _ZSTD_MAGIC:
        return "is no zstd frame (wrong magic number)"
    descriptor = data[4]
    fcs_flag, single_segment = descriptor >> 6, (descriptor >> 5) & 1
    if descriptor & 0x08:
        return "is a zstd frame with a reserved bit set"
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 0x03]
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if fcs_size == 0:
        return "is a zstd frame that does not declare its decoded size"
    if pos + fcs_size > size:
        return "is a zstd frame cut short in its header"
    declared = int.from_bytes(data[pos:pos + fcs_size], "little") + (256 if fcs_size == 2 else 0)
    if declared != decoded_bytes:
        return (f"is a zstd frame that declares {declared} bytes decoded, not the "
                f"{decoded_bytes} of its chunk")
    pos += fcs_size
    while True:
        if pos + 3 > size:
            return "is a zstd frame cut short"
        header = int.from_bytes(data[pos:pos + 3], "little")
        last, kind, length = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3 or length > _ZSTD_BLOCK_MAX:
            return "is a zstd frame with an invalid block"
        pos += 3 + (1 if kind == 1 else length)
        if last:
            break
    pos += 4 if descriptor & 0x04 else 0  # the content checksum
    if pos > size:
        return "is a zstd frame cut short"
    if pos < size:
        return f"holds {size - pos} bytes after its zstd frame, which wsiseg never writes"
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_link(name: str, where: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=where).st_mode)
    except OSError:
        return False


def _span(byte_range: ByteRequest | None, size: int) -> tuple[int, int]:
    """(start, stop) of ``byte_range`` in a file of ``size`` bytes."""
    if byte_range is None:
        return 0, size
    if isinstance(byte_range, RangeByteRequest):
        return min(byte_range.start, size), min(max(byte_range.end, byte_range.start), size)
    if isinstance(byte_range, OffsetByteRequest):
        return min(byte_range.offset, size), size
    if isinstance(byte_range, SuffixByteRequest):
        return max(0, size - byte_range.suffix), size
    raise TypeError(f"unexpected byte range {byte_range!r}")


def _read_at(fd: int, start: int, length: int) -> bytes:
    """``length`` bytes from ``start`` (fewer when the file is shorter by now; never more)."""
    pieces, done = [], 0
    while done < length:
        piece = os.pread(fd, min(length - done, 2**24), start + done)
        if not piece:
            break
        pieces.append(piece)
        done += len(piece)
    return b"".join(pieces)
