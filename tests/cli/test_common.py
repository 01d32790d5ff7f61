"""handle_errors: one line and an exit code for each way a command can end badly."""

from __future__ import annotations

import click
from click.testing import CliRunner

from wsiseg.cli.common import handle_errors, on_interrupt
from wsiseg.errors import ConfigError


@click.command()
@click.option("--leaves", help="What the command says a Ctrl-C leaves behind.")
@click.option("--fail", is_flag=True)
@handle_errors
def command(leaves, fail):
    if leaves:
        on_interrupt(leaves)
    if fail:
        raise ConfigError("x.svs: bad; pass --good")
    raise KeyboardInterrupt


def test_ctrl_c_is_one_line_and_exit_code_130():
    run = CliRunner().invoke(command, [])
    assert run.exit_code == 130
    assert run.stderr == "wsiseg: interrupted; no output was left behind\n"


def test_ctrl_c_says_what_the_command_leaves_behind():
    run = CliRunner().invoke(command, ["--leaves", "3 slides are kept in out"])
    assert run.exit_code == 130
    assert run.stderr == "wsiseg: interrupted; 3 slides are kept in out\n"


def test_a_wsiseg_error_is_one_line_and_exit_code_1():
    run = CliRunner().invoke(command, ["--fail"])
    assert run.exit_code == 1
    assert run.stderr == "wsiseg: error: x.svs: bad; pass --good\n"
