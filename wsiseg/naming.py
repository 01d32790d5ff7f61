"""The names wsiseg gives what it writes, in one place."""

from __future__ import annotations

from pathlib import Path

#: A result of ``wsiseg predict``: ``SLIDE.wsiseg.zarr``.
RESULT_SUFFIX = ".wsiseg.zarr"
#: Something being written, renamed to its final name only once complete.
PARTIAL_SUFFIX = ".partial"


def partial_path(out: Path) -> Path:
    """Where ``out`` is written before it is complete: ``out.partial`` beside it."""
    return out.with_name(out.name + PARTIAL_SUFFIX)


def result_name(stem: str) -> str:
    """The file name of the result of the slide named ``stem``."""
    return stem + RESULT_SUFFIX
