"""Reading a result: a chunk that cannot be read or decoded is one line naming the result."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import zarr

from wsiseg.atomic import os_error_in
from wsiseg.errors import ResultError, WsisegError

logger = logging.getLogger(__name__)

#: The way out of a result that is damaged.
REDO = "run wsiseg predict again with --overwrite to redo it"


def settle_zarr_io(timeout: float = 30.0) -> None:
    """Wait for the writes zarr still has in flight.

    zarr runs its I/O as coroutines on a thread of its own. A call interrupted in the main
    thread (Ctrl-C) leaves its coroutine running there, and a chunk it writes after the partial
    output was removed would bring the folder back.
    """
    import asyncio

    try:
        from zarr.core.sync import SyncError, sync
    except ImportError:
        return

    async def drain() -> None:
        me = asyncio.current_task()
        while others := [t for t in asyncio.all_tasks() if t is not me and not t.done()]:
            await asyncio.wait(others)

    # Nothing to wait for (zarr's loop closed, or this is its thread), or it takes too long:
    # the caller removes its output anyway.
    try:
        sync(drain(), timeout=timeout)
    except (RuntimeError, SyncError, TimeoutError) as err:
        logger.debug("zarr I/O did not settle: %s", err)


#: Modules whose errors, when a result is read, mean a chunk's bytes are not what was written.
_DECODING = ("numcodecs", "zarr.codecs", "zarr.abc.codec", "zarr.core.codec_pipeline",
             "zarr.core.buffer")


@contextlib.contextmanager
def result_reads(result: str | os.PathLike[str]) -> Iterator[None]:
    """Reads of ``result``'s arrays inside: a chunk file that cannot be read, or whose bytes do
    not decode, becomes one :class:`ResultError` line naming the result, the array, what
    happened and the way out. Other errors pass unchanged."""
    try:
        yield
    except Exception as err:
        error = read_error(result, err)
        if error is None:
            raise
        # The other chunks of that read are still being decoded on zarr's thread; left
        # running, they would fill stderr with asyncio's complaints when the process exits.
        settle_zarr_io()
        raise error from err


F = TypeVar("F", bound=Callable[..., Any])


def reads_result(func: F) -> F:
    """Run ``func``, whose first argument is a result's path, inside :func:`result_reads`."""

    @functools.wraps(func)
    def wrapper(result: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        with result_reads(result):
            return func(result, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def read_error(result: str | os.PathLike[str], err: BaseException) -> ResultError | None:
    """The one-line error for ``err`` when it comes from reading ``result``'s chunks (an OS
    error on a file of it, or bytes of one of its arrays that do not decode), else None."""
    if isinstance(err, WsisegError):
        return None
    result = Path(result)
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    name = None  # the array of the result being read, if one is
    for frame in frames:
        array = frame.f_locals.get("self")
        if isinstance(array, (zarr.Array, zarr.AsyncArray)):
            name = _name_in(result, array)
            break
    cause = os_error_in(err)
    if cause is not None:
        file = cause.filename
        if file is not None:
            where = os.fsdecode(file)
            if not _is_within(Path(where), result):
                return None
        elif name is not None:
            where = str(result / name)
        else:
            return None
        what = (cause.strerror or str(cause)).lower()
        return ResultError(f"cannot read {where}: {what}; check that the result's files can "
                           f"be read, or {REDO}")
    if name is None or not isinstance(err, (RuntimeError, ValueError)) or not frames:
        return None
    module = frames[-1].f_globals.get("__name__", "")
    if not module.startswith(_DECODING):
        return None
    reason = " ".join(str(err).split()) or type(err).__name__
    reason = re.sub(r"""\bb(["'])(.*?)\1""", r"\2", reason)  # numcodecs quotes bytes: b"..."
    return ResultError(f"{result} is damaged: a chunk of {name} does not decode ({reason}); "
                       f"{REDO}")


def _name_in(result: Path, array: Any) -> str | None:
    """The path of ``array`` inside the result at ``result``; None when it is elsewhere."""
    store_path = array.store_path
    root = getattr(store_path.store, "root", None)
    if root is None or not _is_within(Path(root), result):
        return None
    return store_path.path or "/"


def _is_within(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False
