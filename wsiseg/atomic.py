"""Files that appear whole or not at all.

Every file wsiseg writes (reports, outlines, TIFFs, thumbnails, checkpoints, manifests) goes
through :func:`atomic_write`: it is written under a temporary sibling name, flushed to disk and
renamed over its final name, so a reader (or a crash) never sees half a file. A failure removes
the temporary file and leaves any earlier file of that name as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from wsiseg.errors import OutputError, WsisegError
from wsiseg.naming import PARTIAL_SUFFIX

_WAYS_OUT: dict[int | None, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
    errno.EROFS: ("the file system is read-only", "write elsewhere"),
    errno.EACCES: ("permission denied", "check the folder's permissions or write elsewhere"),
    errno.EPERM: ("operation not permitted", "check the folder's permissions or write elsewhere"),
    errno.ENOENT: ("its folder does not exist", "create the folder or write elsewhere"),
    errno.ENOTDIR: ("a part of its path is not a folder", "check the path"),
    errno.EISDIR: ("a folder of that name is in the way", "remove it or write elsewhere"),
}


def _cause(err: OSError) -> tuple[str, str]:
    """(what happened, the way out) of an OS error, in words."""
    return _WAYS_OUT.get(err.errno, (err.strerror or str(err), "check the path and try again"))


def output_error(path: str | os.PathLike[str], err: OSError, doing: str = "write") -> OutputError:
    """A one-line :class:`OutputError` for ``err``, naming ``path``, the cause and the way out."""
    what, way_out = _cause(err)
    return OutputError(f"cannot {doing} {path}: {what}; {way_out}")


def os_error_in(err: BaseException) -> OSError | None:
    """The OS error behind ``err``: ``err`` itself, one inside an exception group, or the one
    it was raised from (``raise ... from``), however deep: the ways libraries that run I/O on
    threads of their own (zarr, asyncio) pass an OS error on. An error raised while another
    was being handled (only its ``__context__``) is not caused by it and is not followed.

    wsiseg's own errors are not OS errors here, even those that are also :class:`OSError`:
    they already say what happened.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, WsisegError):
            return None
        if isinstance(e, OSError):
            return e
        todo += list(getattr(e, "exceptions", ()))
        todo.append(e.__cause__)
    return None


def describe_os_error(err: OSError) -> str:
    """One line for an OS error that reached the command without a wsiseg message: the files
    it names, what happened and the way out."""
    what, way_out = _cause(err)
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        what, way_out = "no such file or folder", "check the path"
    names = [os.fsdecode(f) if isinstance(f, bytes) else str(f)
             for f in (err.filename, err.filename2) if f is not None]
    where = " -> ".join(names) if names else "a file wsiseg uses (the system did not say which)"
    return f"{where}: {what}; {way_out}"


def partial_name(path: Path) -> Path:
    """The temporary sibling of ``path``, unique to this process."""
    return path.with_name(f"{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (binary); ``open_kwargs`` go to :func:`open`
    (``newline=""`` for CSV). The data are fsynced before the rename. On any failure, Ctrl-C
    included, the temporary file is removed; OS errors become an :class:`OutputError` (those
    already told by a wsiseg error, such as a damaged result being read, stay as they are).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes new files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    tmp = partial_name(path)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and not isinstance(err, WsisegError):
            raise output_error(path, err) from err
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
