"""What each dask worker process of a batch does when it is stopped with SIGTERM.

A scheduler that stops a job (SLURM's ``scancel``, ``timeout``) sends SIGTERM to the worker
processes too. Left to its default, SIGTERM ends a worker at once, leaving the partial result
of its slide and the slide's claim behind. :class:`CleanStop`, registered on the cluster by
the batch, gives each worker process a SIGTERM handler that first interrupts the slides it is
predicting (:func:`~wsiseg.batch.signals.interrupt_slides`: their partial results removed,
their claims released) and then lets the signal do what it did before.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from distributed import WorkerPlugin

from wsiseg.batch.signals import interrupt_slides

#: The name the plugin is registered under (registering it again replaces it).
NAME = "wsiseg-clean-stop"


class CleanStop(WorkerPlugin):
    """Installs the SIGTERM handler described in the module, once per worker process."""

    idempotent = True

    def setup(self, worker: Any) -> None:
        install_sigterm_cleanup()


_INSTALLED = False


def install_sigterm_cleanup() -> None:
    """Give this (worker) process the SIGTERM handler of the module; once, and only from the
    main thread (where the worker's event loop runs)."""
    global _INSTALLED
    if _INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def stop_cleanly(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one cleanup, however many signals
        interrupt_slides()
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)
            previous(signum, frame)
            return
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # ends the process as the signal would have

    signal.signal(signal.SIGTERM, stop_cleanly)
    _INSTALLED = True
