"""Progress bars on a terminal, and nothing at all in logs, pipes or with ``--quiet``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from typing import Self


class ProgressBar(Protocol):
    """What wsiseg needs of a progress bar: a context manager counting done work."""

    def update(self, n: int) -> object: ...

    def __enter__(self) -> Self: ...

    # None: a bar never swallows the error that ends the work it counts.
    def __exit__(self, *exc: object) -> None: ...


class NoProgress:
    """A progress bar that shows nothing."""

    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str, enabled: bool,
                 **tqdm_options: Any) -> ProgressBar:
    """A tqdm bar (a context manager with ``update(n)``) when ``enabled`` and stderr is a
    terminal; otherwise one that shows nothing."""
    if not enabled or not sys.stderr.isatty():
        return NoProgress()
    from tqdm import tqdm

    bar: ProgressBar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True,
                            **tqdm_options)
    return bar
