"""Sharded evaluation: map "add every batch of a shard into a fresh accumulator" over shards, merge, then extract.

    acc = map_merge(combiner, shards, read_shard, backend)        # anywhere: threads, processes, a cluster
    result = evaluate_accumulator(combiner, acc, ...)              # here, once: exact metrics and the bootstrap

A *shard* is any picklable description of some rows (a snapshot part, a row range); ``read_shard(shard)`` yields
its batches (pandas DataFrames or Arrow batches) and must be picklable too when the backend is remote. A shard may
carry ``row_offset`` (the index of its first row in the whole input) so that a bad row is named by its global index.

Why the result does not depend on the sharding: the accumulators are mergeable (TFMA ``CombineFn`` style, see
:mod:`.accumulate`): slice values and atoms are unified on merge and put in canonical order by ``finish``, exact
statistics sort rows by value or use exact integer / exact-float sums, and the bootstrap replicates are drawn once,
after the merge, from the merged cell counts with the seed. Accumulators are merged in shard order anyway, so the
merged accumulator itself is the same whatever the backend and the order in which shards finish.

A backend needs one method, ``map(fn, items)``: call ``fn(item)`` for every item (anywhere) and yield the results in
item order; and one attribute, ``remote``: True when ``fn`` runs in other processes or machines (then the combiner
and ``read_shard`` are pickled, and a spilling combiner's files must be on storage every worker and the client see).
:class:`LocalBackend` runs shards one after the other in this process; ``eval_pipeline.dask_backend.DaskBackend``
runs them on a Dask cluster. A Spark backend is ``sc.parallelize(items, len(items)).map(fn).collect()`` and a Ray
backend ``ray.get([ray.remote(fn).remote(i) for i in items])`` wrapped in such a class: about 50 lines each.

Spill mode (binary, :mod:`.spill`): with a remote backend, workers write their sorted runs into the client's own spill
directory (created under ``spill_dir`` before the map) through :class:`SharedSpillStorage`, which never removes it:
a worker's copy of the storage being garbage-collected must not delete runs the client still has to read. Each shard
is flushed to disk before it is returned, so accumulators travel as file references, not arrays. The client's
``evaluate_accumulator`` removes the directory at the end (``DiskStorage.cleanup``), as in a single process.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator

from .accumulate import Accumulator, Combiner
from .columns import n_rows
from .spill import DiskStorage


class LocalBackend:
    """Shards one after the other, in this process (the reference every other backend must match)."""

    remote = False

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        for item in items:
            yield fn(item)


class SharedSpillStorage(DiskStorage):
    """Spill storage writing into a directory owned by someone else (the client): never removes it, and travels
    to other processes (no lock or finalizer in its pickled state)."""

    def __init__(self, directory: str, spill_rows: int):
        super().__init__(directory, spill_rows)
        self._dir = directory

    @property
    def dir(self) -> str:
        if not os.path.isdir(self._dir):  # a worker on another machine that does not see the client's directory
            raise FileNotFoundError(f"spill directory {self._dir} is not visible here: with several machines, "
                                    f"EVAL_ENGINE_SPILL_DIR must be storage shared by the client and every worker")
        return self._dir

    def cleanup(self) -> None:
        """Nothing: the client's storage owns the directory and removes it after the extract step."""

    def __getstate__(self):
        return {"parent": self.parent, "rows": self.rows, "_dir": self._dir}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock, self._fin = threading.Lock(), None


def shard_accumulator(combiner: Combiner, read_shard: Callable, shard) -> Accumulator:
    """Every batch of one shard added to a fresh accumulator (what a worker runs). A spilling accumulator is
    flushed to disk first, so it carries file references only."""
    acc = combiner.create_accumulator()
    offset = int(getattr(shard, "row_offset", 0))
    for batch in read_shard(shard):
        combiner.add_batch(acc, batch, offset)
        offset += n_rows(batch)
    if isinstance(combiner.config.storage, DiskStorage):
        combiner.config.storage.flush(acc.store)
    return acc


def _for_workers(combiner: Combiner) -> Combiner:
    """The combiner as remote workers get it: a spilling one writes into the client's directory, never removes it."""
    storage = combiner.config.storage
    if not isinstance(storage, DiskStorage):
        return combiner
    shared = SharedSpillStorage(storage.dir, storage.rows)  # storage.dir: the client's own temp dir, created now
    return Combiner(dataclasses.replace(combiner.config, storage=shared))


def map_merge(combiner: Combiner, shards: Iterable, read_shard: Callable, backend=None) -> Accumulator:
    """One accumulator per shard (on ``backend``, default :class:`LocalBackend`), merged in shard order.

    The merged accumulator goes to :func:`.evaluate.evaluate_accumulator` (metrics, then the bootstrap, once)."""
    backend = backend or LocalBackend()
    worker = _for_workers(combiner) if backend.remote else combiner
    task = functools.partial(shard_accumulator, worker, read_shard)
    # one merge, in shard order, fed as the results arrive (a pairwise fold would re-map the earlier shards' cells
    # each time, and collecting them first would hold every shard's accumulator next to the merged one)
    return combiner.merge_accumulators(backend.map(task, list(shards)))


class ShardedRows:
    """An evaluation's rows as shards read (and accumulated) on a backend: pass it to :func:`.evaluate.evaluate`
    in place of the batches; every other argument, the validation and the extract step stay evaluate's own."""

    def __init__(self, shards: Iterable, read_shard: Callable, backend=None):
        self.shards, self.read_shard, self.backend = list(shards), read_shard, backend

    def accumulate(self, combiner: Combiner) -> Accumulator:
        return map_merge(combiner, self.shards, self.read_shard, self.backend)


def evaluate_shards(shards: Iterable, read_shard: Callable, backend=None, **arguments):
    """:func:`.evaluate.evaluate` over shards: the same keyword ``arguments`` and the same (byte-identical) result,
    with the rows read and accumulated shard by shard on ``backend``, and the extract step (bootstrap included) here."""
    from .evaluate import evaluate

    return evaluate(ShardedRows(shards, read_shard, backend), **arguments)
