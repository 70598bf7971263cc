"""One drift window of a snapshot, streamed once into bounded, mergeable summaries (no Dagster here).

:func:`summarize_window` reads the window's rows in record batches (``snapshot.iter_rows``) and keeps, per column:

* exact **value counts** while the column has at most :data:`CATEGORY_CAP` distinct values (categorical columns)
  or :data:`NUMERIC_VALUES_CAP` (numeric columns: enough to tell Evidently's "at most 5 / 10 / 20 values" rules);
  past the cap the counts are dropped and the result says so (``values_capped``);
* the number of non-missing values and, for numeric columns, their minimum and maximum (Sturges edges);
* per slice column, the same counts within each slice value (slice drift from counts);

and one **row sample** of at most ``max_rows`` rows (:class:`RowSample`): the rows whose seeded hash of the row id
is smallest (ties by position), kept in snapshot order. The hash depends on the id and the seed only, so the same
rows are picked whatever the batch size, and a window of at most ``max_rows`` rows is kept whole, in order: the
sample is then the window itself (what ``snapshot.read_window`` returns).

:func:`histogram_counts` is the optional second pass: Sturges histogram counts of numeric columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from .drift_methods import _numeric_values
from .snapshot import DataError, iter_rows

__all__ = ["CATEGORY_CAP", "NUMERIC_VALUES_CAP", "SAMPLE_METHOD", "RowSample", "WindowSummary", "window_bounds",
           "summarize_window", "histogram_counts", "row_hash", "sample_window"]

CATEGORY_CAP = 10_000
"""Distinct values counted per categorical column and window; a column with more is scored on the row sample."""

NUMERIC_VALUES_CAP = 32
"""Distinct values counted per numeric column and window (more than Evidently's 20-value binning rule needs)."""

SAMPLE_METHOD = ("bottom-k by seeded hash of the row id: the rows with the smallest "
                 "pandas.util.hash_array(id) mixed with the seed (ties by position), in snapshot order")


def row_hash(ids: pd.Series | np.ndarray, seed: int) -> np.ndarray:
    """Seeded 64-bit hash of each row id (same value in every process and batch)."""
    values = ids.to_numpy() if isinstance(ids, pd.Series) else np.asarray(ids)
    if values.dtype.kind not in "iuf":
        values = values.astype(object)
    h = pd.util.hash_array(values, categorize=False)
    return pd.util.hash_array(h ^ np.uint64((seed * 0x9E3779B97F4A7C15 + 1) % 2 ** 64), categorize=False)


class RowSample:
    """The ``k`` rows with the smallest (hash, position), merged batch by batch; bounded by ``2 * k`` rows."""

    def __init__(self, k: int):
        self.k = k
        self.tables: list[pa.Table] = []
        self.hashes = np.empty(0, dtype=np.uint64)
        self.positions = np.empty(0, dtype=np.int64)

    def add(self, batch: pa.RecordBatch, hashes: np.ndarray, start: int) -> None:
        positions = np.arange(start, start + batch.num_rows, dtype=np.int64)
        if len(self.hashes) >= self.k:  # only rows that can still enter the k smallest
            keep = hashes < np.partition(self.hashes, self.k - 1)[self.k - 1]
            batch, hashes, positions = batch.filter(pa.array(keep)), hashes[keep], positions[keep]
        if not batch.num_rows:
            return
        self.tables.append(pa.Table.from_batches([batch]))
        self.hashes = np.concatenate([self.hashes, hashes])
        self.positions = np.concatenate([self.positions, positions])
        if len(self.hashes) > 2 * self.k:
            self._prune()

    def _prune(self) -> None:
        order = np.lexsort((self.positions, self.hashes))[: self.k]
        order.sort()  # keeps snapshot order: rows are appended in increasing position
        table = pa.concat_tables(self.tables).take(pa.array(order))
        self.tables, self.hashes, self.positions = [table], self.hashes[order], self.positions[order]

    def table(self, schema: pa.Schema) -> pa.Table:
        if len(self.hashes) > self.k:
            self._prune()
        return pa.concat_tables(self.tables) if self.tables else schema.empty_table()


class _Coder:
    """Values to counts, merged batch by batch; ``None`` once more than ``cap`` distinct values were seen."""

    def __init__(self, cap: int):
        self.cap, self.ids, self.counts = cap, {}, np.zeros(0, dtype=np.int64)

    def codes(self, values: pd.Series | np.ndarray) -> np.ndarray | None:
        """Per row, the value's id (-1: missing or infinite); counts them. None: the cap was passed."""
        local, uniques = pd.factorize(values, use_na_sentinel=True)
        if len(uniques) > self.cap:  # past the cap whatever was seen before (checked before any Python loop)
            return None
        uniques = np.asarray(uniques, dtype=object)
        ids = np.array([-1 if _is_inf(v) else self.ids.setdefault(v, len(self.ids)) for v in uniques] + [-1],
                       dtype=np.int64)
        if len(self.ids) > self.cap:
            return None
        row_ids = ids[local]  # factorize's -1 picks the appended -1
        self.counts = _add_counts(self.counts, np.bincount(row_ids[row_ids >= 0], minlength=len(self.ids)))
        return row_ids

    def as_dict(self) -> dict:
        return {v: int(self.counts[i]) for v, i in self.ids.items() if i < len(self.counts) and self.counts[i]}


def _is_inf(v) -> bool:
    return isinstance(v, (float, np.floating)) and bool(np.isinf(v))


def _add_counts(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    if len(more) > len(total):
        total = np.concatenate([total, np.zeros(len(more) - len(total), dtype=np.int64)])
    total[: len(more)] += more
    return total


@dataclass
class WindowSummary:
    """What :func:`summarize_window` keeps of one window (see the module notes)."""

    rows: int
    sample: pa.Table
    counts: dict[str, dict | None]                    # column -> {value: rows} (None: more values than the cap)
    non_missing: dict[str, int]
    min_max: dict[str, tuple[float, float]]           # numeric columns with a value
    slice_counts: dict[tuple[str, str], dict | None] = field(default_factory=dict)  # (slice, col) -> {(s, v): n}
    slice_non_missing: dict[tuple[str, str], dict | None] = field(default_factory=dict)  # (slice, col) -> {s: n}


def window_bounds(snapshot, spec, window) -> tuple:
    """A drift window's [start, end): its dates, or the last N days before the snapshot's newest timestamp
    (``snapshot.read_window``'s rule)."""
    start, end = window.start, window.end
    if window.last_days is not None:
        if not spec.columns.timestamp:
            raise DataError(f"task '{spec.task}': a last_days window needs columns.timestamp")
        newest = pd.Timestamp(snapshot.manifest["time_range"][1])
        start, end = newest - pd.Timedelta(days=window.last_days), newest + pd.Timedelta(microseconds=1)
    return start, end


class _ColumnState:
    def __init__(self, numeric: bool, cap: int):
        self.numeric, self.coder = numeric, _Coder(cap)
        self.alive, self.n, self.mn, self.mx = True, 0, np.inf, -np.inf

    def add(self, s: pd.Series) -> tuple[np.ndarray | None, np.ndarray]:
        """Row ids of the values (None once capped) and the non-missing mask of one batch."""
        if self.numeric:
            x = _numeric_values(s)
            present = ~np.isnan(x)
            if present.any():
                self.mn, self.mx = min(self.mn, x[present].min()), max(self.mx, x[present].max())
            values = x
            head = x[:4096]
            if self.alive and len(np.unique(head[~np.isnan(head)])) > self.coder.cap:
                self.alive = False  # a continuous column: no hashing of all its values to learn that
        else:
            values = s
            present = None
        ids = self.coder.codes(values) if self.alive else None
        if ids is None:
            self.alive = False
            if present is None:
                present = (s.notna() & ~s.isin([np.inf, -np.inf])).to_numpy(dtype=bool)
        else:
            present = ids >= 0
        self.n += int(present.sum())
        return ids, present


def summarize_window(lake, snapshot, spec, window, columns: list[str], *, categorical: set[str],
                     slice_columns: list[str], max_rows: int, seed: int, batch_size: int = 250_000,
                     sliced_columns: list[str] | None = None) -> WindowSummary:
    """Stream one drift window (``window``: a ``spec.drift`` window) of ``columns`` (plus the id) into a
    :class:`WindowSummary`. ``categorical``: columns counted up to :data:`CATEGORY_CAP` values whatever their
    type (the others: non-numeric types too, numeric ones up to :data:`NUMERIC_VALUES_CAP`); ``sliced_columns``:
    the columns counted per slice value (default: all of ``columns``)."""
    start, end = window_bounds(snapshot, spec, window)
    id_col = spec.columns.id
    read = list(dict.fromkeys([id_col] + columns + slice_columns))
    sample, states, position = RowSample(max_rows), {}, 0
    joint: dict[tuple[str, str], dict] = {}
    joint_present: dict[tuple[str, str], dict] = {}
    schema = None
    for batch in iter_rows(lake, snapshot, read, timestamp=spec.columns.timestamp, start=start, end=end,
                           batch_size=batch_size):
        schema = batch.schema
        frame = batch.to_pandas()
        sample.add(batch, row_hash(frame[id_col], seed), position)
        position += batch.num_rows
        ids = {}
        for c in dict.fromkeys(columns + slice_columns):
            if c not in states:
                dtype = frame[c].dtype
                numeric = c not in categorical and (pd.api.types.is_datetime64_any_dtype(dtype) or (
                    pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)))
                # slice values are categories, however many
                cap = NUMERIC_VALUES_CAP if numeric and c not in slice_columns else CATEGORY_CAP
                states[c] = _ColumnState(numeric, cap)
            ids[c] = states[c].add(frame[c])
        for s in slice_columns:
            s_ids = ids[s][0]
            for c in (columns if sliced_columns is None else sliced_columns):
                if c != s:
                    _add_joint(joint, joint_present, (s, c), states[s], s_ids, states[c], *ids[c])
    inverse = {c: {i: v for v, i in st.coder.ids.items()} for c, st in states.items()}
    return WindowSummary(
        rows=position, sample=sample.table(schema) if schema is not None else pa.table({c: [] for c in read}),
        counts={c: st.coder.as_dict() if st.alive else None for c, st in states.items()},
        non_missing={c: st.n for c, st in states.items()},
        min_max={c: (float(st.mn), float(st.mx)) for c, st in states.items() if st.numeric and st.n},
        slice_counts={k: None if v is None else {(inverse[k[0]][p // (states[k[1]].coder.cap + 2)],
                                                  inverse[k[1]][p % (states[k[1]].coder.cap + 2)]): n
                                                 for p, n in v.items()} for k, v in joint.items()},
        slice_non_missing={k: None if v is None else {inverse[k[0]][i]: int(n) for i, n in enumerate(v) if n}
                           for k, v in joint_present.items()})


def _add_joint(joint, joint_present, key, s_state, s_ids, c_state, c_ids, c_present) -> None:
    """Counts of (slice value, column value) and non-missing values per slice value, for one batch."""
    if s_ids is None or (key in joint_present and joint_present[key] is None):
        joint[key] = joint_present[key] = None  # the slice column passed its cap: slices from the row sample
        return
    rows = (s_ids >= 0) & c_present
    joint_present[key] = _add_counts(joint_present.get(key, np.zeros(0, dtype=np.int64)),
                                     np.bincount(s_ids[rows], minlength=len(s_state.coder.ids)))
    if c_ids is None or (key in joint and joint[key] is None):
        joint[key] = None
        return
    rows = (s_ids >= 0) & (c_ids >= 0)
    pairs = s_ids[rows].astype(np.int64) * (c_state.coder.cap + 2) + c_ids[rows]
    uniq, n = np.unique(pairs, return_counts=True)
    acc = joint.setdefault(key, {})
    for p, k in zip(uniq.tolist(), n.tolist()):
        acc[p] = acc.get(p, 0) + k


def histogram_counts(lake, snapshot, spec, window, edges: dict[str, np.ndarray],
                     batch_size: int = 250_000) -> dict[str, np.ndarray]:
    """Second pass: per numeric column, ``np.histogram`` counts on the given edges (missing values left out)."""
    start, end = window_bounds(snapshot, spec, window)
    totals = {c: np.zeros(len(e) - 1, dtype=np.int64) for c, e in edges.items()}
    for batch in iter_rows(lake, snapshot, list(edges), timestamp=spec.columns.timestamp, start=start, end=end,
                           batch_size=batch_size):
        frame = batch.to_pandas()
        for c, e in edges.items():
            x = _numeric_values(frame[c])
            totals[c] += np.histogram(x[~np.isnan(x)], e)[0]
    return totals


def sample_window(lake, snapshot, spec, window, columns: list[str], *, max_rows: int, seed: int,
                  batch_size: int = 250_000) -> tuple[pd.DataFrame, int]:
    """The window's :class:`RowSample` of ``columns`` as a frame (at most ``max_rows`` rows, snapshot order: the
    whole window when it has no more) and the window's row count, streamed."""
    start, end = window_bounds(snapshot, spec, window)
    id_col = spec.columns.id
    read = list(dict.fromkeys([id_col] + columns))
    sample, position, schema = RowSample(max_rows), 0, None
    for batch in iter_rows(lake, snapshot, read, timestamp=spec.columns.timestamp, start=start, end=end,
                           batch_size=batch_size):
        schema = batch.schema
        sample.add(batch, row_hash(batch.column(id_col).to_pandas(), seed), position)
        position += batch.num_rows
    if schema is None:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}), 0
    return sample.table(schema).select(columns).to_pandas(), position
