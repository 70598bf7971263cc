"""Data-quality validation in bounded memory: the GX suite runs on each batch, and the per-batch outcomes merge
exactly into the outcome of the whole dataset.

Entry point: :func:`validate_batches` (``quality.validate_batches`` forwards here). It takes the same spec or
keywords as :func:`eval_pipeline.quality.validate_dataset` and an iterable of pandas frames in dataset order, and
returns the :class:`~eval_pipeline.quality_result.QualityResult` that ``validate_dataset`` gives for the frames
concatenated: the same ``results``, ``statistics``, ``skipped`` and ``parameters`` (tests/test_quality_batches.py
compares them, and every merged GX result dict, with GX's own run on the whole frame).

How: every batch goes through the real GX suite (one ephemeral context and suite for all batches). From each
expectation's per-batch result the *metrics* GX computed it from are read back (row count, null count, unexpected
count, the first 20 unexpected values and their index labels, a column's max, the table's columns); those metrics
are mergeable, and the merged ones go through the expectation's own ``_validate`` (GX's code for ``success``,
percents, ``partial_unexpected_counts``), so nothing is re-implemented or approximated.

Supported expectation kinds (the spec's ``expectations`` section and the column roles) and how each merges:

=================  ==========================================  ===================================================
check              GX expectation                              merge
=================  ==========================================  ===================================================
schema             expect_column_to_exist                      ``table.columns``: identical in every batch
dtype              (pandas: ``dtype_family_ok``)               passes when it passes in every batch; the reported
                                                               dtype is the one pandas gives the concatenation
                                                               (int64 + float64 -> float64, bool + object -> object)
row_count          expect_table_row_count_to_be_between        ``table.row_count``: the sum
not_null           expect_column_values_to_not_be_null         counts: sums; partial lists: the first 20 in order
null_fraction      expect_column_values_to_not_be_null(mostly) as not_null; ``mostly`` judged on the totals
range              expect_column_values_to_be_between          as not_null; the observed min / max: min of minima,
                                                               max of maxima
allowed_values     expect_column_values_to_be_in_set           as not_null
label_domain       expect_column_values_to_be_in_set, or       as not_null (a non-numeric regression label is a
                   ..._to_be_between(+-float max)              dtype check, merged as dtype)
unique             expect_column_values_to_be_unique           row and null counts: sums; duplicates across
                                                               batches: :class:`DuplicateFinder` (exact)
freshness          expect_column_max_to_be_between             ``column.max``: max of the batch maxima
=================  ==========================================  ===================================================

Also merged, for kinds a builder may add: expect_column_min_to_be_between (``column.min``: min of the minima).
An expectation that raises on a batch (a bad parameter) is reported as not evaluated with that batch's error
message, which may be worded differently from the whole frame's.

Values a batch reports (unexpected examples, min, max) are cast to the dtype of the whole column: a batch without
nulls of an integer column with nulls elsewhere is int64 in pandas, the whole column float64.

Expectations that cannot be merged exactly from these metrics (quantiles, medians, KL divergence, means: GX's pandas
mean is a float sum whose rounding depends on the order, distinct-value sets: unbounded) are not in the spec; an
expectation kind without a merge rule here is refused with an error naming it (never approximated or sampled). A
new kind adds a rule in :func:`_merge_rule`.

Uniqueness across batches (:class:`DuplicateFinder`): each batch's non-null values, with their row ordinals and
index labels, are hashed into ``P`` partitions appended to files in a temporary folder; equal values always land in
the same partition (numbers are hashed as float64, so 5 and 5.0 meet). At the end each partition is read alone and
its duplicates found exactly with ``pandas.Series.duplicated(keep=False)`` on the values themselves (hashes only
route, never decide). Memory bound: one batch, plus one partition, about ``rows / P`` values with two int64 arrays,
times ~3 for pandas' hash table; ``P`` defaults to ``ceil(expected_rows / 2**21)`` (>= 1), i.e. ~2M values per
partition (~150 MB for int64 ids). The merged state besides is O(checks x 20 values).

The persisted result gets a ``provenance`` entry: the method, the merge layout version (:data:`MERGE_LAYOUT`), the
rows and :func:`expectations_fingerprint` (what ``pipeline.validate`` compares to skip an unchanged validation).
Batch counts and partitions are run information (``run_info``), so the bytes do not depend on the batch size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .jsonsafe import to_jsonsafe
from .quality import (SuiteRunner, build_checks, check_id, describe_outcome, quality_result, result_entry,
                      section_and_roles, _exception_message)
from .quality_expectations import Check, ColumnRoles, QualityInputs
from .quality_result import QualityResult
from .spec import EvalSpec, ExpectationsSpec

__all__ = ["MERGE_LAYOUT", "validate_batches", "expectations_fingerprint", "frames_from_arrow", "DuplicateFinder"]

MERGE_LAYOUT = 1  # bump when a merge rule or the persisted provenance changes: stored results are then re-validated
PARTIAL = 20  # GX's partial_unexpected_count in the SUMMARY result format
ROWS_PER_PARTITION = 2 ** 21
_RESULT_FORMAT = {"result_format": "SUMMARY"}


# --------------------------------------------------------------------------------------------- fingerprint
def expectations_fingerprint(section: ExpectationsSpec, roles: ColumnRoles) -> str:
    """sha256 of what decides the checks (the expectations section, the column roles, the merge layout)."""
    data = {"expectations": section.model_dump(mode="json"), "merge_layout": MERGE_LAYOUT,
            "roles": {"id": roles.id, "label": roles.label, "timestamp": roles.timestamp,
                      "features": list(roles.features), "task": roles.task, "label_values": roles.label_values}}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def spec_fingerprint(spec: EvalSpec) -> str:
    return expectations_fingerprint(spec.expectations, ColumnRoles.from_spec(spec))


def frames_from_arrow(batches: Iterable[Any]) -> Iterator[pd.DataFrame]:
    """Arrow record batches as pandas frames indexed by their row number in the dataset (as the whole frame is)."""
    offset = 0
    for batch in batches:
        frame = batch.to_pandas()
        frame.index = pd.RangeIndex(offset, offset + len(frame))
        offset += len(frame)
        yield frame


# --------------------------------------------------------------------------------------------- dtypes
class ColumnDtypes:
    """The dtypes each column had in the batches, and the one pandas gives the whole column."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}

    def add(self, frame: pd.DataFrame) -> None:
        for column, dtype in frame.dtypes.items():
            self.seen.setdefault(column, {}).setdefault(str(dtype), dtype)

    def whole(self, column: str) -> Any:
        dtypes = list(self.seen.get(column, {}).values())
        if len(dtypes) == 1:
            return dtypes[0]
        return pd.concat([pd.Series([], dtype=d) for d in dtypes]).dtype

    def cast(self, column: str | None, batch_dtype: Any, values: list) -> list:
        """``values`` of a batch whose column had ``batch_dtype``, as the whole column's dtype holds them."""
        if column is None or batch_dtype is None or not values:
            return values
        whole = self.whole(column)
        if str(whole) == str(batch_dtype):
            return values
        try:
            return pd.Series(values, dtype=batch_dtype).astype(whole).tolist()
        except (TypeError, ValueError):
            return values


# --------------------------------------------------------------------------------------------- uniqueness
class DuplicateFinder:
    """Exact duplicates of one column over all batches, in bounded memory (see the module notes)."""

    def __init__(self, folder: str, partitions: int):
        self.folder, self.partitions = folder, max(1, int(partitions))
        os.makedirs(folder, exist_ok=True)

    def _path(self, p: int) -> str:
        return os.path.join(self.folder, f"part-{p:05d}.pkl")

    def add(self, values: pd.Series, ordinals: np.ndarray, labels: np.ndarray) -> None:
        keep = values.notna().to_numpy()
        values, ordinals, labels = values[keep].reset_index(drop=True), ordinals[keep], labels[keep]
        if not len(values):
            return
        same = labels.dtype.kind in "iu" and np.array_equal(labels, ordinals)  # numbered as the whole: spill once
        route = _route(values) % np.uint64(self.partitions) if self.partitions > 1 else np.zeros(len(values), int)
        for p in np.unique(route):
            m = route == p
            with open(self._path(int(p)), "ab") as fh:  # our own temporary files, read back by finish() only
                pickle.dump((ordinals[m], None if same else labels[m], values[m].reset_index(drop=True)), fh)

    def finish(self, whole_dtype: Any) -> tuple[int, list, list]:
        """(rows sharing a value with another row, the first 20 such values and their index labels in order)."""
        count, best = 0, (np.empty(0, np.int64), np.empty(0, object), [])
        for p in range(self.partitions):
            chunks = _read_chunks(self._path(p))
            if not chunks:
                continue
            ordinals = np.concatenate([c[0] for c in chunks])
            labels = np.concatenate([c[0] if c[1] is None else np.asarray(c[1]) for c in chunks])
            values = pd.concat([c[2] for c in chunks], ignore_index=True)
            if str(values.dtype) != str(whole_dtype):
                values = values.astype(whole_dtype)  # as the whole column compares them (int -> float)
            dup = values.duplicated(keep=False).to_numpy()
            count += int(dup.sum())
            if dup.any():
                o = np.concatenate([best[0], ordinals[dup]])
                lab = np.concatenate([best[1], labels[dup]])
                val = list(best[2]) + values[dup].tolist()
                first = np.argsort(o, kind="stable")[:PARTIAL]
                best = (o[first], lab[first], [val[i] for i in first])
        return count, best[2], [_py(x) for x in best[1]]


def _route(values: pd.Series) -> np.ndarray:
    """Partition hashes: equal values (as the whole column compares them) get equal hashes."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        numbers = values.to_numpy(dtype="float64") + 0.0  # 5 and 5.0 meet, -0.0 becomes 0.0
        return pd.util.hash_array(numbers)
    return pd.util.hash_array(values.astype(str).to_numpy(dtype=object))


def _read_chunks(path: str) -> list:
    if not os.path.exists(path):
        return []
    chunks = []
    with open(path, "rb") as fh:
        while True:
            try:
                chunks.append(pickle.load(fh))
            except EOFError:
                return chunks


def _py(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


# --------------------------------------------------------------------------------------------- merge rules
@dataclass
class _Merge:
    """What one check's per-batch outcomes add up to; ``check`` is the newest batch's (for wording)."""

    check: Check
    raised: str | None = None

    def add(self, check: Check, er: Any, frame: pd.DataFrame, run: _BatchedRun) -> None:
        self.check = check
        if er is None:  # should not happen
            self.raised = self.raised or "GX returned no result"
        self.raised = self.raised or _exception_message(er.exception_info or {})
        if not self.raised:
            self.add_result(dict(er.result or {}), frame, run)

    def add_result(self, res: dict, frame: pd.DataFrame, run: _BatchedRun) -> None:
        raise NotImplementedError

    def metrics(self, run: _BatchedRun) -> dict:
        raise NotImplementedError

    def facts(self, run: _BatchedRun) -> dict:
        return dict(self.check.facts)

    def outcome(self, run: _BatchedRun) -> tuple[bool, dict]:
        """(success, GX's result dict) from the merged metrics, by the expectation's own ``_validate``."""
        if self.raised:
            return False, {}
        out = self.check.expectation._validate(metrics=self.metrics(run), runtime_configuration=_RESULT_FORMAT)
        return bool(out["success"]), dict(out.get("result") or {})


@dataclass
class _PandasMerge(_Merge):
    """A check evaluated with pandas on a column's dtype: passes when every batch passes."""

    passed: bool = True

    def add(self, check: Check, er: Any, frame: pd.DataFrame, run: _BatchedRun) -> None:
        self.check, self.passed = check, self.passed and bool(check.passed)

    def facts(self, run: _BatchedRun) -> dict:
        return {**self.check.facts, "dtype": str(run.dtypes.whole(self.check.column))}

    def outcome(self, run: _BatchedRun) -> tuple[bool, dict]:
        return self.passed, {}


@dataclass
class _ColumnsMerge(_Merge):
    columns: list = field(default_factory=list)

    def add_result(self, res: dict, frame: pd.DataFrame, run: _BatchedRun) -> None:
        self.columns = list(frame.columns)

    def metrics(self, run: _BatchedRun) -> dict:
        return {"table.columns": self.columns}


@dataclass
class _RowCountMerge(_Merge):
    rows: int = 0

    def add_result(self, res: dict, frame: pd.DataFrame, run: _BatchedRun) -> None:
        self.rows += int(res["observed_value"])

    def metrics(self, run: _BatchedRun) -> dict:
        return {"table.row_count": self.rows}


@dataclass
class _ExtremeMerge(_Merge):
    """``column.max`` (or ``column.min``): the extreme of the batches' non-null extremes; a null if none has one."""

    metric: str = "column.max"
    value: Any = None
    dtype: Any = None
    empty: Any = None
    seen: bool = False

    def add_result(self, res: dict, frame: pd.DataFrame, run: _BatchedRun) -> None:
        v = res.get("observed_value")
        if v is None or (not isinstance(v, (list, dict)) and pd.isna(v)):
            if self.empty is None:  # what GX reports for a column without values (NaT, None)
                self.empty = v
            return
        better = self.value is None or (v > self.value if self.metric == "column.max" else v < self.value)
        if better:  # cast to the whole column's dtype at the end, once every batch's dtype is known
            self.value, self.dtype = v, frame[self.check.column].dtype if self.check.column_data is None else None
        self.seen = True

    def metrics(self, run: _BatchedRun) -> dict:
        if not self.seen:
            return {self.metric: self.empty}
        (value,) = run.dtypes.cast(self.check.column, self.dtype, [self.value])
        return {self.metric: value}


@dataclass
class _MapMerge(_Merge):
    """A column-map expectation: counts add up, the first 20 unexpected values (and index labels) in order."""

    rows: int = 0
    nulls: int | None = 0
    unexpected: int = 0
    values: list = field(default_factory=list)
    index: list = field(default_factory=list)
    extent: dict | None = None
    finder: DuplicateFinder | None = None

    def add_result(self, res: dict, frame: pd.DataFrame, run: _BatchedRun) -> None:
        column = self.check.column
        self.rows += int(res["element_count"])
        self.nulls = None if self.nulls is None or "missing_count" not in res else self.nulls + res["missing_count"]
        if "extent" in self.check.facts:
            self._add_extent(self.check.facts["extent"], frame[column].dtype, run)
        if self.finder is not None:
            ordinals = np.arange(run.rows, run.rows + len(frame), dtype=np.int64)
            self.finder.add(frame[column], ordinals, frame.index.to_numpy())
            return
        self.unexpected += int(res["unexpected_count"])
        need = PARTIAL - len(self.index)
        if need > 0 and res.get("partial_unexpected_list"):
            dtype = frame[column].dtype if self.check.column_data is None else None
            values = list(res["partial_unexpected_list"][:need])
            self.values.append((dtype, values))  # cast at the end, once every batch's dtype is known
            self.index += list(res.get("partial_unexpected_index_list", [])[:need])

    def _add_extent(self, extent: dict, dtype: Any, run: _BatchedRun) -> None:
        """Keep the smallest min and largest max as (value, its batch's dtype)."""
        if self.extent is None:
            self.extent = {"min": None, "max": None}
        if not extent or not self.extent:  # values that do not compare: so does the whole column
            self.extent = {}
            return
        for key, beats in (("min", lambda a, b: a < b), ("max", lambda a, b: a > b)):
            if extent[key] is None:
                continue
            try:
                if self.extent[key] is None or beats(extent[key], self.extent[key][0]):
                    self.extent[key] = (extent[key], dtype)
            except TypeError:
                self.extent = {}
                return

    def facts(self, run: _BatchedRun) -> dict:
        if self.extent is None:
            return dict(self.check.facts)
        extent = {k: None if v is None else run.dtypes.cast(self.check.column, v[1], [v[0]])[0]
                  for k, v in self.extent.items()}
        return {**self.check.facts, "extent": extent}

    def metrics(self, run: _BatchedRun) -> dict:
        mm = self.check.expectation.map_metric
        index, unexpected = self.index, self.unexpected
        values = [v for dtype, chunk in self.values for v in run.dtypes.cast(self.check.column, dtype, chunk)]
        if self.finder is not None:
            unexpected, values, index = self.finder.finish(run.dtypes.whole(self.check.column))
        metrics = {"table.row_count": self.rows, f"{mm}.unexpected_count": unexpected,
                   f"{mm}.unexpected_values": values, f"{mm}.unexpected_index_list": index}
        if self.nulls is not None:
            metrics["column_values.nonnull.unexpected_count"] = self.nulls
        return metrics


# map metrics whose verdict on a row depends on other rows: merged by DuplicateFinder, or refused
_CROSS_ROW = {"column_values.unique"}
SUPPORTED = ("expect_column_to_exist", "expect_table_row_count_to_be_between", "expect_column_max_to_be_between",
             "expect_column_min_to_be_between", "expect_column_values_to_not_be_null",
             "expect_column_values_to_be_between", "expect_column_values_to_be_in_set",
             "expect_column_values_to_be_unique")


def _merge_rule(check: Check, run: _BatchedRun) -> _Merge:
    """The merge of a check's kind; an expectation without an exact merge is refused (never approximated)."""
    if check.expectation is None:
        return _PandasMerge(check)
    kind = check.expectation.expectation_type
    if kind not in SUPPORTED:
        raise ValueError(f"{run.source}: expectation {kind} (check '{check.kind}') has no exact merge across "
                         f"batches; supported: {', '.join(SUPPORTED)}; validate the whole frame instead")
    if kind == "expect_column_to_exist":
        return _ColumnsMerge(check)
    if kind == "expect_table_row_count_to_be_between":
        return _RowCountMerge(check)
    if kind in ("expect_column_max_to_be_between", "expect_column_min_to_be_between"):
        return _ExtremeMerge(check, metric="column.max" if "max" in kind else "column.min")
    merge = _MapMerge(check)
    if check.expectation.map_metric in _CROSS_ROW:
        merge.finder = DuplicateFinder(os.path.join(run.spill_folder(), f"check-{len(run.merges):03d}"),
                                       run.partitions)
    return merge


def _gx_json(res: dict) -> dict:
    """A result dict as GX's own ``to_json_dict`` writes it (NaT as 'NaT', numpy values as Python ones)."""
    from great_expectations.util import convert_to_json_serializable

    return convert_to_json_serializable(res)


# --------------------------------------------------------------------------------------------- the batched run
_ROLE_KEYS = ("expectations", "id_column", "label_column", "timestamp_column", "feature_columns", "task_type",
              "label_values")


class _BatchedRun:
    """One validation over many batches: the suite runner, the per-check merges and the column dtypes."""

    def __init__(self, section: ExpectationsSpec, roles: ColumnRoles, source: str, as_of: Any, partitions: int,
                 spill_dir: str | None):
        self.section, self.roles, self.source, self.as_of = section, roles, source, as_of
        self.partitions, self.spill_dir, self._spill = partitions, spill_dir, None
        self.runner = SuiteRunner(source)
        self.dtypes = ColumnDtypes()
        self.first: QualityInputs | None = None
        self.signature: list | None = None
        self.merges: list[_Merge] = []
        self.rows = self.batches = 0

    def spill_folder(self) -> str:
        if self._spill is None:
            self._spill = tempfile.mkdtemp(prefix="quality-unique-", dir=self.spill_dir)
        return self._spill

    def close(self) -> None:
        if self._spill is not None:
            import shutil

            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None

    def add(self, frame: pd.DataFrame) -> None:
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{self.source}: batch {self.batches} is a {type(frame).__name__}, not a DataFrame")
        inputs = QualityInputs.create(frame, self.section, self.roles, self.as_of, self.source)
        if self.first is None:
            self.first = inputs
        else:  # the clock (when freshness reads it) is read once, for every batch
            inputs.freshness = self.first.freshness
        checks = build_checks(inputs)
        signature = [(c.kind, c.column, c.expectation_type) for c in checks]
        if self.signature is None:
            self.signature = signature
            for check in checks:
                self.merges.append(_merge_rule(check, self))
        elif signature != self.signature:
            raise ValueError(f"{self.source}: batch {self.batches} gives other checks than the first batch "
                             f"(its columns or dtypes differ): {signature} vs {self.signature}")
        self.dtypes.add(frame)
        gx_run = self.runner.run(frame, checks)
        by_id = {(er.expectation_config.meta or {}).get("check_id"): er for er in gx_run.results}
        for i, (check, merge) in enumerate(zip(checks, self.merges)):
            merge.add(check, by_id.get(check_id(i, check)), frame, self)
        self.rows += len(frame)
        self.batches += 1

    def finish(self) -> QualityResult:
        results, gx_results = [], []
        for merge in self.merges:
            success, res = merge.outcome(self)
            check = merge.check
            check.facts = merge.facts(self)
            results.append(result_entry(check, *describe_outcome(check, success, res, merge.raised), self.source))
            if check.expectation is not None:
                gx_results.append({"expectation_config": check.expectation.configuration.to_json_dict(),
                                   "success": success, "result": _gx_json(res),
                                   "exception_info": {"raised_exception": bool(merge.raised),
                                                      "exception_message": merge.raised}})
        n_ok = sum(r["success"] for r in gx_results)
        gx_dict = to_jsonsafe({"success": n_ok == len(gx_results), "results": gx_results,
                               "statistics": {"evaluated_expectations": len(gx_results),
                                              "successful_expectations": n_ok},
                               "meta": {"batched": True, "batches": self.batches}})
        provenance = {"method": "batched", "merge_layout": MERGE_LAYOUT, "rows": self.rows,
                      "expectations_sha256": expectations_fingerprint(self.section, self.roles)}
        result = quality_result(self.source, self.first, results, gx_dict, provenance)
        result.run_info.update({"batches": self.batches, "unique_partitions": self.partitions,
                                "great_expectations_version": self.runner.version})
        return result


def validate_batches(batches: Iterable[pd.DataFrame], spec: EvalSpec | None = None, *, source: str = "dataset",
                     as_of: Any = None, empty: pd.DataFrame | None = None, expected_rows: int | None = None,
                     partitions: int | None = None, spill_dir: str | None = None, **roles: Any) -> QualityResult:
    """Validate a dataset given as frames in order, in bounded memory; the result of the whole dataset.

    Parameters
    ----------
    batches : iterable of pandas.DataFrame
        The dataset's rows in order, every frame with the same columns; a frame's index labels are what GX reports
        as ``partial_unexpected_index_list`` (``frames_from_arrow`` numbers them as the whole frame would).
    spec, source, as_of, expectations, id_column, label_column, timestamp_column, feature_columns, task_type, \
label_values
        As for :func:`eval_pipeline.quality.validate_dataset`.
    empty : pandas.DataFrame, optional
        A frame with the dataset's columns and dtypes, validated when ``batches`` yields nothing (0 rows).
    expected_rows : int, optional
        The dataset's row count if known (sizes the uniqueness partitions: ``ceil(rows / 2**21)``).
    partitions : int, optional
        The number of uniqueness partitions (overrides ``expected_rows``; default 16 without either).
    spill_dir : str, optional
        Where the uniqueness partitions are written (a temporary folder inside it, removed at the end).

    Returns
    -------
    QualityResult
        The whole dataset's result, plus ``provenance`` (method, merge layout, rows, expectations fingerprint);
        ``gx_result`` holds the merged GX result dicts (``results[i]["result"]``) and ``run_info`` the batch count.

    Raises
    ------
    TypeError
        A batch is not a DataFrame; roles given wrongly (as ``validate_dataset``).
    ValueError
        No batch and no ``empty`` frame; batches whose columns give different checks; an expectation kind without
        an exact merge.
    """
    unknown = set(roles) - set(_ROLE_KEYS)
    if unknown:
        raise TypeError(f"{source}: unknown argument(s) {sorted(unknown)}")
    section, column_roles = section_and_roles(spec, source, **{k: roles.get(k) for k in _ROLE_KEYS})
    if partitions is None:
        partitions = max(1, math.ceil(expected_rows / ROWS_PER_PARTITION)) if expected_rows else 16
    run = _BatchedRun(section, column_roles, source, as_of, partitions, spill_dir)
    try:
        for frame in batches:
            run.add(frame)
        if run.batches == 0:
            if empty is None:
                raise ValueError(f"{source}: no rows to validate and no empty frame naming the columns")
            run.add(empty)
        return run.finish()
    finally:
        run.close()


# --------------------------------------------------------------------------------------------- pipeline helpers
def reusable(stored: Any, spec: EvalSpec) -> bool:
    """Whether a stored quality result was made by these expectations and merge layout, so validating again would
    give the same bytes. Never when freshness is judged against the clock (the verdict depends on when it ran)."""
    fresh = spec.expectations.freshness
    if fresh is not None and fresh.as_of is None:
        return False
    prov = stored.get("provenance") if isinstance(stored, dict) else None
    return (isinstance(prov, dict) and prov.get("merge_layout") == MERGE_LAYOUT
            and prov.get("expectations_sha256") == spec_fingerprint(spec)
            and isinstance(stored.get("results"), list) and "success" in stored)


def empty_frame(schema: dict[str, str]) -> pd.DataFrame:
    """A 0-row frame with a snapshot's columns, from its manifest's Arrow type names (for a snapshot without rows;
    a type name Arrow cannot read back gives an object column)."""
    import re

    import pyarrow as pa

    fields = []
    for name, type_name in schema.items():
        ts = re.fullmatch(r"timestamp\[(\w+)(?:, tz=(.+))?\]", type_name)
        try:
            arrow_type = pa.timestamp(ts.group(1), ts.group(2)) if ts else pa.type_for_alias(type_name)
        except (ValueError, KeyError, TypeError):
            arrow_type = pa.null()
        fields.append(pa.field(name, arrow_type))
    return pa.schema(fields).empty_table().to_pandas()
