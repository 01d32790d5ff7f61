"""Many slides into one folder of results, in this process or on a dask.distributed cluster.

``discovery`` finds the slides, ``manifest`` records each one in ``manifest.csv``, ``claims``
lets several batch processes share one output folder, ``runner`` predicts them (resuming what an
earlier run left), ``worker`` is what runs for each slide, here or on a dask worker,
``cluster`` connects to dask, and ``signals`` makes SIGTERM stop a batch as cleanly as
Ctrl-C does (:func:`sigterm_as_interrupt`). The names below load their module on first
use, so that the manifest and the claims can be used without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "dask_client": "cluster",
    "discover": "discovery",
    "find_slides": "discovery",
    "FoundSlides": "discovery",
    "is_batch": "discovery",
    "output_for": "discovery",
    "Manifest": "manifest",
    "SlideRecord": "manifest",
    "read_manifest": "manifest",
    "write_manifest": "manifest",
    "BatchConfig": "config",
    "BatchResult": "runner",
    "predict_slides": "runner",
    "run_slide": "worker",
    "summary_table": "runner",
    "Terminated": "signals",
    "sigterm_as_interrupt": "signals",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
