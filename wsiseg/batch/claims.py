"""Per-slide claims: which process is predicting a slide in a batch's output folder.

Any number of batch processes (two shells, the tasks of a SLURM array, several hosts) may share
one input folder and one ``--out``. Before a process predicts a slide it takes the slide's
claim, the file ``OUT/STEM.wsiseg.zarr.claim`` beside the result, created with
``O_CREAT | O_EXCL`` so that only one process can create it. The file is one line of JSON:
``host``, ``pid``, ``started`` (UTC), ``worker`` (the name the manifest gives the process),
``batch`` (the id of the batch that took it), a random ``token`` that tells one claim from the
next, and, to recognise the process for sure, the host's ``boot`` id, the process's PID
namespace ``pidns`` and its start time ``pid_start`` (Linux ``/proc``; empty elsewhere).

While the slide runs, a daemon thread touches the file every :data:`HEARTBEAT_SECONDS`; the
claim is removed when the slide is done or has failed, and on Ctrl-C. A claim is *stale* (its
holder is gone) when

- its holder ran on this machine (same host name, boot and PID namespace) and that process no
  longer exists (or the PID now belongs to a younger process, or to a zombie), or
- its holder ran elsewhere, or the file cannot be read, and it was last touched more than
  :data:`STALE_SECONDS` ago (the clocks of the hosts and of the file server must agree to
  well within that).

A stale claim is taken over without races, however many processes try at once: the taker
takes the folder's lock (:func:`folder_lock`, the one that also guards ``manifest.csv``), reads
the claim again (another taker may have replaced it with a live one meanwhile), renames it to a
name of its own, checks that what it moved is the claim it judged (a claim that changed in
between goes back) and removes it; it then creates its own claim with ``O_EXCL``, like any
other taker, so that one of them wins. A claim of the same ``batch`` is taken over at once:
that is a dask task run again after its worker was lost.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from wsiseg.atomic import output_error

if TYPE_CHECKING:
    from typing import Self

try:
    import fcntl
except ImportError:  # not POSIX: the lock between threads of this process is all there is
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

CLAIM_SUFFIX = ".claim"
#: The lock file of a batch folder (see :func:`folder_lock`).
LOCK_NAME = ".wsiseg.lock"
#: How often a held claim is touched, in seconds.
HEARTBEAT_SECONDS = 30.0
#: A claim of another machine that has not been touched for this long is stale, in seconds.
STALE_SECONDS = 300.0
# How many times a taker goes round when other takers keep moving the claim under it.
_ATTEMPTS = 50


def claim_path(output: str | os.PathLike[str]) -> Path:
    """The claim file of the result ``output`` (``OUT/STEM.wsiseg.zarr.claim``)."""
    output = Path(output)
    return output.with_name(output.name + CLAIM_SUFFIX)


@dataclass(frozen=True)
class ClaimInfo:
    """What a claim file says about the process that holds it."""

    host: str
    pid: int
    started: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    batch: str = ""
    worker: str = ""
    boot: str = ""
    pidns: str = ""
    pid_start: int | None = None

    @classmethod
    def this_process(cls, batch: str = "", worker: str = "") -> ClaimInfo:
        pid = os.getpid()
        stat = _proc_stat(pid)
        return cls(host=socket.gethostname(), pid=pid, batch=batch,
                   worker=worker or f"pid-{pid}@{socket.gethostname()}",
                   started=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   boot=_boot_id(), pidns=_pid_namespace(),
                   pid_start=stat[1] if stat else None)

    def on_this_machine(self) -> bool:
        """Whether this process can see the holder's process table (then its PID tells)."""
        return (self.host == socket.gethostname() and self.boot == _boot_id()
                and self.pidns == _pid_namespace())

    def describe(self) -> str:
        who = self.worker or f"pid {self.pid}"
        return f"{who} (pid {self.pid} on {self.host}) since {self.started}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClaimInfo | None:
        """The claim in ``text``, or None when it is not one (empty, cut short, foreign)."""
        try:
            data = json.loads(text)
            return cls(host=str(data["host"]), pid=int(data["pid"]), started=str(data["started"]),
                       token=str(data["token"]), batch=str(data.get("batch", "")),
                       worker=str(data.get("worker", "")), boot=str(data.get("boot", "")),
                       pidns=str(data.get("pidns", "")),
                       pid_start=None if data.get("pid_start") is None else int(data["pid_start"]))
        except (ValueError, KeyError, TypeError):
            return None


class ClaimedElsewhere(Exception):
    """The slide is being predicted by a live process elsewhere (``holder``; None when it
    could not be read)."""

    def __init__(self, path: Path, holder: ClaimInfo | None) -> None:
        self.path, self.holder = path, holder
        by = holder.describe() if holder else "another process"
        super().__init__(f"{path.name}: being predicted by {by}")


def read_claim(path: str | os.PathLike[str]) -> tuple[ClaimInfo | None, float] | None:
    """``(claim, mtime)`` of the claim file ``path`` (claim None when unreadable), or None when
    there is no such file."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            mtime = os.fstat(f.fileno()).st_mtime
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        logger.debug("cannot read the claim %s (%s)", path, err)
        return None, 0.0
    return ClaimInfo.from_json(text), mtime


def is_stale(claim: ClaimInfo | None, mtime: float, stale_after: float | None = None,
             now: float | None = None) -> bool:
    """Whether the holder of a claim (last touched at ``mtime``) is gone; see the module."""
    stale_after = STALE_SECONDS if stale_after is None else stale_after
    if claim is not None and claim.on_this_machine():
        return not _pid_alive(claim.pid, claim.pid_start)
    return (time.time() if now is None else now) - mtime > stale_after


def is_held(path: str | os.PathLike[str], stale_after: float | None = None) -> bool:
    """Whether a live process holds the claim file ``path``."""
    held = read_claim(path)
    return held is not None and not is_stale(held[0], held[1], stale_after)


def take_claim(path: str | os.PathLike[str], *, batch: str = "", worker: str = "",
               stale_after: float | None = None,
               heartbeat_seconds: float | None = None) -> Claim:
    """Take the claim file ``path`` for this process and keep it alive until released.

    Raises :class:`ClaimedElsewhere` when a live process of another batch holds it, and an
    :class:`~wsiseg.errors.OutputError` when the file cannot be created (a read-only folder, a
    full disk). A stale claim, or one of the same ``batch``, is taken over (see the module).
    """
    path = Path(path)
    mine = ClaimInfo.this_process(batch, worker)
    holder: ClaimInfo | None = None
    for _ in range(_ATTEMPTS):
        if _create(path, mine):
            return Claim(path, mine, heartbeat_seconds)
        held = read_claim(path)
        if held is None:
            continue  # released since: try again
        holder, mtime = held
        if not _takeable(holder, mtime, batch, stale_after):
            raise ClaimedElsewhere(path, holder)
        with folder_lock(path.parent):
            _set_aside(path, path.with_name(f"{path.name}.{mine.token}.stale"), batch,
                       stale_after)
    raise ClaimedElsewhere(path, holder)


def _takeable(holder: ClaimInfo | None, mtime: float, batch: str,
              stale_after: float | None) -> bool:
    return ((holder is not None and bool(batch) and holder.batch == batch)
            or is_stale(holder, mtime, stale_after))


def _set_aside(path: Path, aside: Path, batch: str, stale_after: float | None) -> None:
    """Remove the claim ``path`` if it is (still) takeable; called under the folder's lock, so
    no other taker moves claims meanwhile, and the claim judged is the one removed."""
    for left in path.parent.glob(f"{path.name}.*.stale"):  # of a taker killed right here
        with contextlib.suppress(OSError):
            left.unlink()
    held = read_claim(path)
    if held is None or not _takeable(held[0], held[1], batch, stale_after):
        return  # released, or taken by a live process, since it was judged
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    except OSError as err:
        raise output_error(path, err, "take over") from err
    moved = read_claim(aside)
    if moved is None or _token(moved[0]) != _token(held[0]):
        # Its holder (alive after all) released it and another process claimed the slide in
        # the instant between the reading and the renaming: that claim goes back.
        with contextlib.suppress(OSError):
            os.link(aside, path)
    else:
        logger.info("%s: taking over the claim of %s, which is gone", path.name,
                    held[0].describe() if held[0] else "a process")
    with contextlib.suppress(OSError):
        os.unlink(aside)


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
_UNLOCKABLE: set[str] = set()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the exclusive lock of the batch folder ``folder`` (its file ``.wsiseg.lock``).

    It serialises manifest updates and claim take-overs among all processes sharing the
    folder. ``fcntl.lockf`` is used because NFS honours it; its locks belong to a process (and
    closing any descriptor of the file drops them), so threads of one process also take a lock
    of their own first. Not reentrant. Where the file system cannot lock, this warns once and
    goes on unlocked.
    """
    lock_path = Path(folder) / LOCK_NAME
    key = os.path.abspath(lock_path)
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with thread_lock:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise output_error(lock_path, err, "open") from err
        try:
            if fcntl is not None:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX)
                except OSError as err:  # a file system without locks (ENOLCK, EOPNOTSUPP)
                    if key not in _UNLOCKABLE:
                        _UNLOCKABLE.add(key)
                        logger.warning("cannot lock %s (%s); batch processes sharing %s are "
                                       "not kept apart there: run one at a time", lock_path,
                                       err.strerror or err, folder)
            yield
        finally:
            os.close(fd)  # drops the lockf lock


class Claim:
    """A claim this process holds: touched by a daemon thread until :meth:`release`; also a
    context manager that releases it on the way out."""

    def __init__(self, path: Path, info: ClaimInfo, heartbeat_seconds: float | None = None) -> None:
        self.path, self.info = path, info
        self.lost = False  # another process took it over (this one looked gone to it)
        self._every = HEARTBEAT_SECONDS if heartbeat_seconds is None else heartbeat_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim {path.name}",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            held = read_claim(self.path)
            if held is None or _token(held[0]) != self.info.token:
                self.lost = True
                logger.warning("%s: another process took over this process's claim; it may "
                               "predict the slide too", self.path)
                return
            try:
                os.utime(self.path)
            except OSError as err:  # a hiccup of the file server: the next beat may pass
                logger.debug("cannot touch %s (%s)", self.path, err)

    def release(self) -> None:
        """Stop the heartbeat and remove the claim file, if it is still this process's."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        held = read_claim(self.path)
        if held is not None and _token(held[0]) == self.info.token:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError as err:  # left behind, it goes stale when this process ends
                logger.warning("cannot remove the claim %s (%s)", self.path, err)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- helpers ------------------------------------------------------------------------------

def _token(claim: ClaimInfo | None) -> str | None:
    return None if claim is None else claim.token


def _create(path: Path, info: ClaimInfo) -> bool:
    """Create ``path`` holding ``info``; False when it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as err:
        raise output_error(path, err, "create") from err
    try:
        os.write(fd, info.to_json().encode())
        os.fsync(fd)
    except BaseException as err:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(err, OSError):
            raise output_error(path, err) from err
        raise
    os.close(fd)
    return True


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) of process ``pid`` from ``/proc``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_alive(pid: int, pid_start: int | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return not Path("/proc/self/stat").exists()  # no /proc here: the signal is all we know
    state, start = stat
    if state in ("Z", "X"):  # ended, not yet reaped by its parent
        return False
    return pid_start is None or start == pid_start


def _read_first_line(path: str) -> str:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _boot_id() -> str:
    return _read_first_line("/proc/sys/kernel/random/boot_id")


@functools.lru_cache(maxsize=1)
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
