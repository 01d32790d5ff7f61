"""Shared pieces of the ``wsiseg`` commands: turning errors into one line and an exit code.

:func:`handle_errors` is the one place that reports a Ctrl-C (exit code 130) and a SIGTERM
(exit code 143, as schedulers expect; it is raised as a Ctrl-C is, so the same cleanup runs);
a command that leaves work behind to keep says what, beforehand, with :func:`on_interrupt`.
A reader of the output that goes away (``wsiseg info SLIDE | head -3``) ends the command
quietly, with exit code 141 as SIGPIPE would.
"""

from __future__ import annotations

import functools
import os
import select
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import click

from wsiseg.atomic import describe_os_error, os_error_in
from wsiseg.batch.signals import sigterm_as_interrupt
from wsiseg.errors import Terminated, WsisegError, exit_status

P = ParamSpec("P")
R = TypeVar("R")

#: Key in ``click.Context.meta`` of what a Ctrl-C leaves behind.
_ON_INTERRUPT = "wsiseg.on_interrupt"
_NOTHING_LEFT = "no output was left behind"
#: The exit code of a command whose output was closed (128 + SIGPIPE), as ``yes | head`` gives.
EXIT_BROKEN_PIPE = 141


def on_interrupt(message: str) -> None:
    """Say what a Ctrl-C from now on leaves behind; :func:`handle_errors` reports it as
    ``wsiseg: interrupted; MESSAGE``."""
    click.get_current_context().meta[_ON_INTERRUPT] = message


def _fail(message: str) -> NoReturn:
    click.echo(f"wsiseg: error: {message}", err=True)
    sys.exit(1)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn wsiseg errors, and OS errors that reach a command without one (a full disk, a
    read-only folder), into one line and exit code 1 (tracebacks only with --debug), and a
    Ctrl-C into one line and exit code 130, a SIGTERM (raised as a Ctrl-C is, while the
    command runs) into one line and exit code 143, and a closed standard output into exit code
    141 and no message. Anything else is a bug, and says so."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            with sigterm_as_interrupt():
                return func(*args, **kwargs)
        except WsisegError as err:
            if debug:
                raise
            _fail(str(err))
        except KeyboardInterrupt as err:
            left = click.get_current_context().meta.get(_ON_INTERRUPT, _NOTHING_LEFT)
            what = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
            _quiet_shutdown()
            click.echo(f"wsiseg: {what}; {left}", err=True)
            sys.exit(exit_status(err))
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as err:
            if isinstance(err, BrokenPipeError) and _stdout_closed():
                _quit_quietly()
            if debug:
                raise
            cause = os_error_in(err)  # zarr and asyncio may wrap it
            if cause is not None:
                _fail(describe_os_error(cause))
            # A bug, not a user's mistake: say so, briefly.
            _fail(
                f"unexpected {type(err).__name__}: {err} (rerun with --debug for the "
                "traceback and report it)"
            )

    return wrapper


def _quiet_shutdown() -> None:
    """After an interrupt has been reported: no more complaints on the way out about work
    that the interrupt cut off (a coroutine of zarr's I/O loop never awaited, an exception in
    a finaliser), which would follow the one line as a traceback."""
    import warnings

    warnings.filterwarnings("ignore", message="coroutine .* was never awaited",
                            category=RuntimeWarning)
    sys.unraisablehook = lambda unraisable: None


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (``| head`` has its lines)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real stdout, or no poll here
        return False


def _quit_quietly() -> NoReturn:
    """End the command, its output closed: no message, and nothing more written to stdout
    (Python would otherwise complain when it flushes stdout on the way out)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)
