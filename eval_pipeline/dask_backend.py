"""The Dask backend of sharded evaluation (:mod:`eval_pipeline.engine.shards`): one task per shard on a Dask cluster.

``EVAL_DASK_ADDRESS`` names the scheduler (``tcp://scheduler:8786``); ``local`` starts a ``distributed.LocalCluster``
of ``EVAL_DASK_WORKERS`` worker processes (default 2, one thread each; every server of it, the dashboard too, on
127.0.0.1 and free ports, so two clusters never compete for 8787) for the duration of one evaluation: for tests,
benchmarks and a single big machine. Workers need this package (same version: a worker keeps the code it imported
until it is restarted), read the lake themselves (the lake's S3 options travel with it, AWS credentials come from
each worker's own chain) and send back one accumulator per shard (the merge and the bootstrap run in the client, the
process running the ``evaluation`` step), or score one shard into a piece of a predictions file in the lake
(``scoring._write_sharded``: the client of the ``predictions`` step assembles the file). Dask is imported only when this backend is used (the ``dask`` extra).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger(__name__)
LOCAL = "local"
CONNECT_TIMEOUT = "30s"  # a scheduler that does not answer in this time is down (Dask's own default)


class DaskBackend:
    """``map(fn, items)`` as one Dask task per item, results yielded in item order (see ``engine.shards``).

    Give a ``client`` (a ``distributed.Client``), or an ``address`` (a scheduler's, or ``"local"`` for a throwaway
    ``LocalCluster`` of ``n_workers`` processes); use it as a context manager to close what it started."""

    remote = True

    def __init__(self, address: str | None = None, *, client=None, n_workers: int = 2):
        self.address, self.n_workers = address, int(n_workers)
        self._client, self._owned = client, []

    @property
    def client(self):
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.address in (None, LOCAL):
                cluster = LocalCluster(n_workers=self.n_workers, processes=True, threads_per_worker=1,
                                       host="127.0.0.1", dashboard_address="127.0.0.1:0")
                self._owned.append(cluster)
                self._client = Client(cluster, set_as_default=False)
            else:
                try:
                    self._client = Client(self.address, timeout=CONNECT_TIMEOUT, set_as_default=False)
                except OSError as exc:
                    raise ConnectionError(f"EVAL_DASK_ADDRESS={self.address}: cannot reach the Dask scheduler "
                                          f"({exc}); start it, or unset EVAL_DASK_ADDRESS to evaluate in "
                                          f"process") from None
            self._owned.insert(0, self._client)
        return self._client

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        items = list(items)
        log.info("%d shard(s) on the Dask cluster at %s (%d workers)", len(items), self.client.scheduler.address,
                 len(self.client.scheduler_info()["workers"]))
        # pure=False: never a result kept from another evaluation (and no hashing of the combiner and the reader)
        futures = self.client.map(fn, items, pure=False)
        try:
            for f in futures:
                result = f.result()
                f.release()  # the worker may drop it now: the client holds the only copy it needs
                yield result
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        for thing in self._owned:  # the client first, then the cluster it started
            with contextlib.suppress(Exception):
                thing.close()
        self._owned, self._client = [], None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def backend_from_settings(settings) -> DaskBackend | None:
    """The Dask backend the settings ask for (``EVAL_DASK_ADDRESS``), or None: evaluate in this process."""
    if not settings.dask_address:
        return None
    return DaskBackend(settings.dask_address, n_workers=settings.dask_workers)
