"""Running a batch on ``dask.distributed``: the client, and what each worker process keeps.

:func:`dask_client` gives no client (the batch runs in this process), a client of a local
cluster of worker processes, or a client of a running scheduler, and closes what it opened.
On a worker, :func:`_worker_setup` gives torch the worker's share of the host's cores and a GPU
of its own when the host has several, and :func:`_cached_model` keeps the model loaded for the
worker's following slides (in this process too, when there is no client).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from wsiseg.errors import ConfigError
from wsiseg.inference.pipeline import PredictConfig, load_configured_model, usable_cores


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """No client, a local cluster of ``workers`` processes, or a client of ``scheduler``.

    Yields a ``dask.distributed.Client`` (or None when neither is given) and closes the client,
    and the local cluster it started, on the way out.
    """
    if workers is None and scheduler is None:
        yield None
        return
    if workers is not None and scheduler is not None:
        raise ConfigError("give --workers or --scheduler, not both")
    from distributed import Client, LocalCluster

    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as err:
            raise ConfigError(f"cannot reach the dask scheduler {scheduler} ({err}); "
                              "check the address and that the scheduler runs") from err
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _workers_by_host(client) -> dict[str, int]:
    """How many workers share each host (each then takes its share of the host's cores)."""
    import inspect

    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    else:
        workers = client.scheduler_info()["workers"]
    per_host: dict[str, int] = {}
    for info in workers.values():
        per_host[info.get("host", "")] = per_host.get(info.get("host", ""), 0) + 1
    return per_host


# --- what each process keeps, here or on a worker -------------------------------------------

_MODELS: dict[tuple, Any] = {}


def _cached_model(config: PredictConfig) -> Any:
    """The model, loaded once per process and kept for the following slides."""
    key = (config.model, config.weights)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_configured_model(config)
    return _MODELS[key]


_HEAP_SET = False


def _keep_large_blocks_on_the_heap() -> None:
    """Undo, in this worker process, what dask's ``MALLOC_TRIM_THRESHOLD_`` does to inference.

    dask's nanny starts workers with that variable set (to hand freed memory back to the
    system sooner), and setting it also stops glibc from raising its mmap threshold: every
    large tensor is then mapped, unmapped and its pages zeroed again at each batch, which made
    a CPU worker 35% slower than the same slide in a plain process. Setting the thresholds to
    glibc's own upper limits brings the speed back; memory is still given back when freed
    blocks at the top of the heap pass the trim threshold.
    """
    global _HEAP_SET
    if (_HEAP_SET or "MALLOC_TRIM_THRESHOLD_" not in os.environ
            or not sys.platform.startswith("linux")):
        return
    _HEAP_SET = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 2**20)  # glibc's largest dynamic threshold
        libc.mallopt(m_trim_threshold, 64 * 2**20)
    except (OSError, AttributeError):  # not glibc (musl, say): leave the allocator as it is
        pass


def _current_worker() -> Any:
    """The dask worker running this code, or None outside a dask task."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def worker_name() -> str:
    """Who predicts here, as the manifest's ``worker`` column says it: ``NAME@HOST`` on a dask
    worker, ``pid-PID@HOST`` in a plain process (several may share a host and a folder)."""
    worker = _current_worker()
    if worker is None:
        return f"pid-{os.getpid()}@{socket.gethostname()}"
    return f"{worker.name}@{_worker_host(worker)}"


def _worker_host(worker: Any) -> str:
    return worker.address.split("://")[-1].rsplit(":", 1)[0]


def _worker_setup(config: PredictConfig, per_host: dict[str, int] | None
                  ) -> tuple[PredictConfig, str]:
    """On a dask worker: its name, its share of the host's cores for torch, and a GPU of its
    own when the host has several."""
    worker = _current_worker()
    if worker is None:
        return config, worker_name()
    import torch

    _keep_large_blocks_on_the_heap()
    host = _worker_host(worker)
    sharing = (per_host or {}).get(host, 1)
    share = max(1, usable_cores() // sharing)
    torch.set_num_threads(share)
    config = replace(config, threads=config.threads or share)  # reader threads too
    if config.device == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        try:
            index = int(str(worker.name).rsplit("-", 1)[-1])
        except ValueError:
            index = abs(hash(worker.address))
        config = replace(config, device=f"cuda:{index % torch.cuda.device_count()}")
    return config, worker_name()
