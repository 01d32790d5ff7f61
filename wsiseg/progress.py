"""Progress bars on a terminal, and nothing at all in logs, pipes or with ``--quiet``."""

from __future__ import annotations

import sys
from typing import Any


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str, enabled: bool, **tqdm_options: Any) -> Any:
    """A tqdm bar (a context manager with ``update(n)``) when ``enabled`` and stderr is a
    terminal; otherwise one that shows nothing."""
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, **tqdm_options)
