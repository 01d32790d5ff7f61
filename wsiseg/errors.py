"""Errors raised by wsiseg.

Every error a user can cause derives from :class:`WsisegError`; specific errors also derive
from the builtin they refine, so callers can catch either. Messages name the offending file or
value, say what is wrong and give the way out, on one line.
"""

from __future__ import annotations

import signal
from typing import Protocol


class DamagedPart(Protocol):
    """The part of a slide that failed to decode, as a :class:`DamagedSlideError` names it (a
    ``wsiseg.slide.reader.DamagedRegion``; described here, as errors sit below the slide)."""

    @property
    def level(self) -> int: ...

    def describe(self) -> str: ...


class WsisegError(Exception):
    """Root of all wsiseg errors."""


class SlideError(WsisegError, OSError):
    """A slide cannot be opened or read."""


class DamagedSlideError(SlideError):
    """Part of a slide cannot be decoded; ``region`` (a ``wsiseg.slide.reader.DamagedRegion``)
    is the tile that failed."""

    def __init__(self, message: str, region: DamagedPart | None = None) -> None:
        super().__init__(message)
        self.region = region


class ResolutionError(WsisegError, ValueError):
    """The slide's resolution is missing or does not allow the requested analysis resolution."""


class ModelError(WsisegError, ValueError):
    """A model, its card or its weights cannot be loaded or are inconsistent."""


class OutputError(WsisegError, OSError):
    """The output cannot be written (exists already, not writable, ...)."""


class ConfigError(WsisegError, ValueError):
    """Settings that contradict each other or are out of range."""


class ResultError(WsisegError, OSError):
    """A result store (or its ground truth) cannot be read or is not a finished wsiseg result."""


class DatasetError(WsisegError, ValueError):
    """An annotated folder, mask, attribute table or label scheme is unusable."""


class MetricsError(WsisegError, ValueError):
    """Predictions or truth that cannot be scored (shapes, class indices)."""


#: The exit status of a process stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 128 + signal.SIGINT
#: The exit status of a process stopped by SIGTERM (128 + 15), what job schedulers expect.
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM); a ``KeyboardInterrupt``, so that what cleans
    up after a Ctrl-C cleans up after it too."""


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The exit status of a process that ``interrupt`` stops: 143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first non-blank line of ``err``'s message (its type's name when it has none), cut to
    ``limit`` characters: a library's error quoted inside one of ours stays one line."""
    lines = [s.strip() for s in str(err).splitlines() if s.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]
