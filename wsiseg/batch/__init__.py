"""Many slides into one folder of results, in this process or on a dask.distributed cluster."""

from __future__ import annotations

from wsiseg.batch.runner import (
    BatchConfig,
    BatchResult,
    SlideRecord,
    find_slides,
    predict_slides,
    read_manifest,
    summary_table,
)

__all__ = [
    "BatchConfig",
    "BatchResult",
    "SlideRecord",
    "find_slides",
    "predict_slides",
    "read_manifest",
    "summary_table",
]
