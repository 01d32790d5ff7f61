"""Shared pieces of the ``wsiseg`` commands: turning errors into one line and an exit code.

:func:`handle_errors` is the one place that reports a Ctrl-C (exit code 130); a command that
leaves work behind to keep says what, beforehand, with :func:`on_interrupt`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import click

from wsiseg.atomic import describe_os_error, os_error_in
from wsiseg.errors import WsisegError

P = ParamSpec("P")
R = TypeVar("R")

#: Key in ``click.Context.meta`` of what a Ctrl-C leaves behind.
_ON_INTERRUPT = "wsiseg.on_interrupt"
_NOTHING_LEFT = "no output was left behind"


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
    Ctrl-C into one line and exit code 130. Anything else is a bug, and says so."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return func(*args, **kwargs)
        except WsisegError as err:
            if debug:
                raise
            _fail(str(err))
        except KeyboardInterrupt:
            left = click.get_current_context().meta.get(_ON_INTERRUPT, _NOTHING_LEFT)
            click.echo(f"wsiseg: interrupted; {left}", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as err:
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
