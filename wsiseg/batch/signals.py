"""SIGTERM handled as Ctrl-C is: the slide in progress cleaned up, not left half-made.

Job schedulers (SLURM, Kubernetes, ``timeout``) stop a job with SIGTERM, whose default action
ends the process at once: the partial result of the slide being predicted stays on disk, its
claim stays until it goes stale, and its manifest row keeps saying ``started``.
:func:`sigterm_as_interrupt` turns SIGTERM into :class:`Terminated`, a ``KeyboardInterrupt``,
so everything that cleans up after a Ctrl-C (the partial output removed, the claim released,
the row set back to ``pending``) runs for it too. The ``wsiseg`` commands run inside it; a
program that calls :func:`~wsiseg.batch.predict_slides` may do the same::

    from wsiseg.batch import predict_slides, sigterm_as_interrupt

    with sigterm_as_interrupt():
        predict_slides(paths, config)   # raises Terminated on SIGTERM, after cleaning up

The library never installs a signal handler on its own in the caller's process.

On dask workers the slides run on threads of their own, where no signal arrives:
:func:`interrupt_slides` raises :class:`Terminated` in each of them (between two Python
operations, so a long operation of a native library finishes first) and waits for their
cleanup. The batch calls it on its workers when it is stopped, and each worker process calls
it when it gets SIGTERM itself (:mod:`wsiseg.batch.worker_plugin`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from wsiseg.errors import EXIT_TERMINATED, Terminated

__all__ = ["EXIT_TERMINATED", "Terminated", "interrupt_slides", "running_slide",
           "sigterm_as_interrupt"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise :class:`Terminated` in the main thread on SIGTERM while the block runs.

    A second SIGTERM while the first is being handled is ignored, so that cleanup is not cut
    short (SIGKILL still ends the process). The handler that was there before is put back on
    the way out. Outside the main thread (where Python cannot set handlers) this does nothing.

    Once a SIGTERM has arrived the process is ending: the finalisers of the work it cut off (an
    event loop never closed, a coroutine never awaited) still run, in the block or after it,
    and what they raise is a consequence of the stop, not news. It is logged at debug level
    instead of printed as a traceback, from then on.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise Terminated

    def raised_where_it_was_lost(unraisable: Any) -> None:
        # A SIGTERM handled inside a gc callback or a finaliser raises there, where Python can
        # only report the exception and drop it. Raised again in this hook, it would be dropped
        # as well: the signal is sent again from another thread, to be handled once the hook
        # has returned, in the block's own code.
        nonlocal stopping
        if isinstance(unraisable.exc_value, Terminated):
            stopping = False
            _soon(os.kill, os.getpid(), signal.SIGTERM)
            return
        if stopping:
            _after_the_stop(unraisable)
            return
        previous_hook(unraisable)

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = raised_where_it_was_lost
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if sys.unraisablehook is raised_where_it_was_lost:
            sys.unraisablehook = _after_the_stop if stopping else previous_hook


def _after_the_stop(unraisable: Any) -> None:
    """An exception Python could not raise (in a finaliser), once the process was stopped."""
    logger.debug("after SIGTERM: %s in %r: %s", unraisable.err_msg or "exception",
                  unraisable.object, unraisable.exc_value)


# --- slides running on threads of a worker process ------------------------------------------

_RUNNING: dict[int, str] = {}  # thread id -> the slide it predicts
_RUNNING_CHANGED = threading.Condition()


@contextlib.contextmanager
def running_slide(slide: str) -> Iterator[None]:
    """Mark this thread as predicting ``slide`` in this block, for :func:`interrupt_slides`."""
    ident = threading.get_ident()
    with _RUNNING_CHANGED:
        _RUNNING[ident] = slide
    try:
        yield
    finally:
        with _RUNNING_CHANGED:
            _RUNNING.pop(ident, None)
            _RUNNING_CHANGED.notify_all()


def interrupt_slides(timeout: float = 20.0) -> list[str]:
    """Raise :class:`Terminated` in every thread of this process that is predicting a slide
    (:func:`running_slide`) and wait, at most ``timeout`` seconds, until they have cleaned up.
    Returns the slides that were interrupted.

    One that lands in a gc callback or a finaliser of such a thread, where Python can only
    drop it, is raised in the thread again (:func:`_raise_lost_interrupts_again`)."""
    global _PREVIOUS_HOOK
    with _RUNNING_CHANGED:
        running = dict(_RUNNING)
        if running and _PREVIOUS_HOOK is None:
            _PREVIOUS_HOOK = sys.unraisablehook
            sys.unraisablehook = _raise_lost_interrupts_again
    for ident in running:
        _interrupt(ident)
    deadline = time.monotonic() + timeout
    with _RUNNING_CHANGED:
        while any(ident in _RUNNING for ident in running):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _RUNNING_CHANGED.wait(left)
    return list(running.values())


_PREVIOUS_HOOK: Any = None  # the hook there was before interrupt_slides put its own


def _interrupt(ident: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                               ctypes.py_object(Terminated))


def _raise_lost_interrupts_again(unraisable: Any) -> None:
    """The unraisable hook of a process whose slides were interrupted: a :class:`Terminated`
    dropped in a thread still predicting a slide is raised in it again, soon after (raised in
    this hook, it would be dropped as well); one dropped elsewhere was for work already
    stopped, and is logged at debug level."""
    if isinstance(unraisable.exc_value, Terminated):
        ident = threading.get_ident()
        with _RUNNING_CHANGED:
            still_running = ident in _RUNNING
        if still_running:
            _soon(_interrupt, ident)
        else:
            _after_the_stop(unraisable)
        return
    _PREVIOUS_HOOK(unraisable)


def _soon(func: Any, *args: Any) -> None:
    """Call ``func(*args)`` from a thread of its own, a moment from now."""
    timer = threading.Timer(0.01, func, args)
    timer.daemon = True
    timer.start()
