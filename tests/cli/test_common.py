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


@click.command()
@click.argument("what")
@handle_errors
def failing(what):
    if what == "read-only":
        raise PermissionError(13, "Permission denied", "/data/maps/s1.wsiseg.zarr")
    if what == "wrapped":
        try:
            raise OSError(28, "No space left on device", "/data/maps/s1.report.csv")
        except OSError as err:
            raise RuntimeError("zarr could not write") from err
    raise ValueError("a bug")


def test_an_os_error_without_a_wsiseg_message_is_still_one_line_naming_the_file():
    run = CliRunner().invoke(failing, ["read-only"])
    assert run.exit_code == 1
    assert run.stderr == ("wsiseg: error: /data/maps/s1.wsiseg.zarr: permission denied; check "
                          "the folder's permissions or write elsewhere\n")
    run = CliRunner().invoke(failing, ["wrapped"])
    assert run.exit_code == 1
    assert run.stderr == ("wsiseg: error: /data/maps/s1.report.csv: no space left on the device; "
                          "free some space or write elsewhere\n")


def test_a_bug_says_so_and_asks_for_a_report():
    run = CliRunner().invoke(failing, ["bug"])
    assert run.exit_code == 1
    assert run.stderr.startswith("wsiseg: error: unexpected ValueError: a bug")
    assert "report it" in run.stderr and len(run.stderr.splitlines()) == 1


def test_a_closed_stdout_ends_a_command_quietly_with_exit_code_141(tmp_path):
    # As `wsiseg info SLIDE | head -1`, once head has its line and has gone.
    import os
    import subprocess
    import sys

    from wsiseg.testing import synthetic_tissue, write_svs

    rgb, _ = synthetic_tissue(64, 64, seed=1, tissue_fraction=0.5)
    slide = write_svs(tmp_path / "s.svs", rgb, mpp=0.5)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    try:
        run = subprocess.run([sys.executable, "-m", "wsiseg.cli.main", "info", str(slide)],
                             stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
                             check=False)
    finally:
        os.close(write)
    assert run.stderr == ""
    assert run.returncode == 141


def test_sigterm_is_one_line_and_exit_code_143():
    from wsiseg.batch.signals import Terminated

    @click.command()
    @handle_errors
    def stopped():
        on_interrupt("2 slides are kept in out")
        raise Terminated

    run = CliRunner().invoke(stopped, [])
    assert run.exit_code == 143
    assert run.stderr == "wsiseg: terminated (SIGTERM); 2 slides are kept in out\n"
