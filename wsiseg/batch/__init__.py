"""Many slides into one folder of results, in this process or on a dask.distributed cluster.

``discovery`` finds the slides, ``manifest`` records each one in ``manifest.csv``, ``runner``
predicts them (resuming what an earlier run left) and ``cluster`` connects to dask.
"""

from __future__ import annotations

from wsiseg.batch.cluster import dask_client
from wsiseg.batch.discovery import find_slides, is_batch, output_for
from wsiseg.batch.manifest import Manifest, SlideRecord, read_manifest, write_manifest
from wsiseg.batch.runner import (
    BatchConfig,
    BatchResult,
    predict_slides,
    run_slide,
    summary_table,
)

__all__ = [
    "BatchConfig",
    "BatchResult",
    "Manifest",
    "SlideRecord",
    "dask_client",
    "find_slides",
    "is_batch",
    "output_for",
    "predict_slides",
    "read_manifest",
    "run_slide",
    "summary_table",
    "write_manifest",
]
