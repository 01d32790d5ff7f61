"""What a command's failure must look like: one line, no traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from click.testing import Result


def error_line(result: Result, *words: str) -> str:
    """The one error line of a failed ``wsiseg`` command run by click's ``CliRunner``.

    Asserts that ``result`` exited with 1, that its stderr is exactly one line starting with
    ``wsiseg: error: ``, with no traceback, and that the line holds each of ``words``.
    """
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wsiseg: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
