"""Running a batch on ``dask.distributed``: the client, and its workers on each host.

:func:`dask_client` gives no client (the batch runs in this process), a client of a local
cluster of worker processes, or a client of a running scheduler, and closes what it opened.
:func:`workers_by_host` counts the workers that share each host. What each worker process
keeps (its share of the host's cores, a GPU of its own, the loaded model) is
:mod:`wsiseg.batch.worker`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from wsiseg.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None
                ) -> Iterator[Client | None]:
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

    # distributed leaves these constructors and Client.close unannotated; the objects they
    # make are typed from there on.
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError, ValueError) as err:
            raise ConfigError(f"cannot reach the dask scheduler {scheduler} ({err}); "
                              "check the address and that the scheduler runs") from err
    else:
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        try:
            client = Client(cluster)  # type: ignore[no-untyped-call]
        except BaseException:
            cluster.close()
            raise
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()


def workers_by_host(client: Client) -> dict[str, int]:
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
