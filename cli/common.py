"""Shared pieces of the ``wsiseg`` commands: turning errors into one line and an exit code."""

from __future__ import annotations

import functools
import sys

import click


def _fail(message: str) -> None:
    click.echo(f"wsiseg: error: {message}", err=True)
    sys.exit(1)


def handle_errors(func):
    """Turn wsiseg errors into one line and exit code 1 (tracebacks only with --debug)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from wsiseg.errors import WsisegError

        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return func(*args, **kwargs)
        except WsisegError as err:
            if debug:
                raise
            _fail(str(err))
        except KeyboardInterrupt:
            click.echo("wsiseg: interrupted; no output was left behind", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as err:  # a bug, not a user's mistake: say so, briefly
            if debug:
                raise
            _fail(
                f"unexpected {type(err).__name__}: {err} (rerun with --debug for the "
                "traceback and report it)"
            )

    return wrapper
