"""An evaluation's rows as shards: snapshot rows joined with every role's predictions, read with bounded memory.

The scoring step writes each model's predictions in evaluation-row order over the whole snapshot (the snapshot's
rows inside ``data.evaluation_start/end``, in snapshot order). So a shard is some snapshot rows plus the *matching row
range* of every predictions file: shard i covers evaluation rows ``[row_offset, row_offset + rows)``, where
``row_offset`` counts the evaluation rows of the shards before it (the timestamp column only, when there is a window;
the manifest's row counts when there is none).

One shard per snapshot part (one immutable parquet file per landed file, ``Snapshot.parts``). :class:`ShardReader`
reads one shard (or every row) and streams each predictions file in lockstep with the snapshot's batches, so no file
is ever read whole; it is picklable, so a Dask worker reads its own shard from the lake (see
:mod:`eval_pipeline.engine.shards`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa

from .lake import Lake
from .scoring import predictions_path, score_columns
from .snapshot import Snapshot, eval_rows
from .spec import EvalSpec

log = logging.getLogger(__name__)
BATCH_ROWS = 250_000  # rows per batch read from a predictions file


class ShardError(ValueError):
    """Predictions that cannot be joined with the snapshot's evaluation rows; the message names the model."""


class NotScoredError(ShardError):
    """A model with no predictions file for the snapshot."""


class OutOfStepError(ShardError):
    """Predictions whose rows do not line up with the snapshot's evaluation rows (re-score the model)."""


@dataclass(frozen=True)
class RowShard:
    """Some of a snapshot's evaluation rows: the snapshot ``parts`` (indices into ``Snapshot.parts``) and where those
    rows sit in the predictions files (``row_offset``, ``rows``)."""

    index: int
    row_offset: int
    rows: int
    parts: tuple[int, ...] = ()


def _windowed(spec: EvalSpec) -> bool:
    return bool(spec.columns.timestamp and (spec.data.evaluation_start or spec.data.evaluation_end))


def shard_rows(lake: Lake, snap: Snapshot, spec: EvalSpec, columns: list[str], shard: RowShard | None):
    """The snapshot's evaluation rows of one shard (None: all of them), in snapshot order."""
    if shard is None:
        return eval_rows(lake, snap, spec, columns)
    return eval_rows(lake, snap, spec, columns, parts=list(shard.parts))


def snapshot_shards(lake: Lake, snap: Snapshot, spec: EvalSpec) -> list[RowShard]:
    """One shard per snapshot part, with its evaluation-row range (a snapshot of the earlier one-file layout is one
    part); parts without evaluation rows are left out."""
    shards, offset = [], 0
    for i, part in enumerate(snap.parts):
        rows = int(part["rows"])
        if _windowed(spec):  # count the rows inside the window: the timestamp column only
            rows = sum(b.num_rows for b in shard_rows(lake, snap, spec, [spec.columns.timestamp],
                                                      RowShard(0, 0, 0, (i,))))
        if rows:
            shards.append(RowShard(len(shards), offset, rows, (i,)))
            offset += rows
    return shards


class _PredictionRows:
    """One predictions file from row ``start`` on, handed out ``take(n)`` rows at a time (one batch in memory)."""

    def __init__(self, lake: Lake, rel: str, columns: list[str], start: int):
        pf = lake.parquet_file(rel)
        meta, group, before = pf.metadata, 0, 0
        while group < meta.num_row_groups and before + meta.row_group(group).num_rows <= start:
            before += meta.row_group(group).num_rows
            group += 1
        self._batches = pf.iter_batches(batch_size=BATCH_ROWS, columns=columns,
                                        row_groups=list(range(group, meta.num_row_groups)))
        self._skip = start - before  # rows of the first row group before ``start``
        self._batch, self._pos = None, 0

    def take(self, n: int) -> pa.Table | None:
        pieces = []
        while n > 0:
            if self._batch is None or self._pos >= self._batch.num_rows:
                self._batch, self._pos = next(self._batches, None), 0
                if self._batch is None:
                    break
                self._pos, self._skip = min(self._skip, self._batch.num_rows), max(0, self._skip - self._batch.num_rows)
                continue
            k = min(n, self._batch.num_rows - self._pos)
            pieces.append(self._batch.slice(self._pos, k))
            self._pos += k
            n -= k
        return pa.Table.from_batches(pieces) if pieces else None


@dataclass
class ShardReader:
    """Reads the joined rows of a shard: ids, label and slice columns, and ``<role>__<column>`` per role and
    prediction column. ``predictions``: role -> (predictions file, model reference for errors)."""

    lake: Lake
    spec: EvalSpec
    snap: Snapshot
    predictions: dict[str, tuple[str, str]]
    score_columns: list[str]

    def __call__(self, shard: RowShard | None = None):
        spec = self.spec
        query = [spec.columns.query] if spec.columns.query else []  # ranking: rows are grouped by query
        base_cols = list(dict.fromkeys([spec.columns.id, spec.columns.label] + query + spec.slice_columns()
                                       + spec.fairness_columns()))  # the fairness pass reads the groups too
        start = 0 if shard is None else shard.row_offset
        streams = {role: _PredictionRows(self.lake, rel, [spec.columns.id] + self.score_columns, start)
                   for role, (rel, _) in self.predictions.items()}
        offset = start
        for batch in shard_rows(self.lake, self.snap, spec, base_cols, shard):
            n = batch.num_rows
            frame = batch.to_pandas()
            ids = batch.column(spec.columns.id)
            for role, stream in streams.items():
                part = stream.take(n)
                if part is None or part.num_rows != n or not part.column(spec.columns.id).combine_chunks().equals(ids):
                    raise OutOfStepError(f"predictions of {self.predictions[role][1]} are out of step with snapshot "
                                         f"{self.snap.snapshot_id} at row {offset}; re-score the model")
                for c in self.score_columns:
                    frame[f"{role}__{c}"] = part.column(c).to_numpy()
            offset += n
            yield frame


def shard_reader(lake: Lake, spec: EvalSpec, snap: Snapshot, roles: dict) -> ShardReader:
    """The reader of ``roles`` (role -> ``registry.ModelManifest``) on ``snap``; NotScoredError when a model has no
    predictions file for it."""
    files = {}
    for role, manifest in roles.items():
        rel = predictions_path(spec, snap, manifest)
        if not lake.exists(rel):
            raise NotScoredError(f"model {manifest.ref} has not been scored on snapshot {snap.snapshot_id}")
        files[role] = (rel, manifest.ref)
    return ShardReader(lake, spec, snap, files, score_columns(spec))


def spill_arguments(settings, task_type: str, rows: int, remote: bool) -> dict:
    """``spill_rows`` for a binary evaluation above ``EVAL_ENGINE_SPILL_ABOVE_ROWS`` rows when the operator did not
    choose (``EVAL_ENGINE_SPILL_ROWS`` / ``_DIR`` unset: then the engine reads them itself). Bit-identical results,
    bounded memory. Not with a remote Dask cluster without ``EVAL_ENGINE_SPILL_DIR``: the client's temp dir is
    not shared storage."""
    if task_type != "binary_classification" or settings.engine_spill_rows or settings.engine_spill_dir:
        return {}
    if not settings.engine_spill_above_rows or rows <= settings.engine_spill_above_rows:
        return {}
    if remote:
        log.warning("%d rows on a remote Dask cluster without EVAL_ENGINE_SPILL_DIR: no automatic spill, so this "
                    "process receives every row's scores from the workers (about %d MB); set EVAL_ENGINE_SPILL_DIR to "
                    "storage the workers and this process share", rows, rows * 70 // 2**20)
        return {}
    from .engine.spill import DEFAULT_SPILL_ROWS

    return {"spill_rows": DEFAULT_SPILL_ROWS}


def count_rows(lake: Lake, rel: str) -> int:
    """Rows of a parquet file, from its footer."""
    return lake.parquet_file(rel).metadata.num_rows

