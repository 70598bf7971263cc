"""A snapshot's drift in bounded memory: streamed summaries, exact counts where the method allows, a stated row
sample where it does not (no Dagster here).

Entry point: :func:`stream_drift` (what ``pipeline.drift`` runs) -> :class:`eval_pipeline.drift.DriftResult`.

Notes
-----
* Pass 1 (:func:`eval_pipeline.drift_summary.summarize_window`, once per window): value counts, non-missing counts,
  min/max, per-slice counts, and a bottom-k row sample of at most ``drift.max_rows`` rows per window. Never the whole
  window in pandas.
* **At most ``drift.max_rows`` rows in both windows**: the sample is the window itself, in snapshot order, and
  :func:`eval_pipeline.drift.compute_drift` runs on it exactly as before (every score the same bytes as on
  ``snapshot.read_window``'s frames); each column says ``"sample_method": "all rows"``.
* **Above the cap**: kinds and Evidently's default method choice come from the exact counts (reference size, distinct
  values). Chi-square, Z, Jensen-Shannon, PSI, KL, Hellinger (categorical) and the G-test are computed from exact
  value counts of all rows (``"counts of all rows"``); Jensen-Shannon, PSI and KL of a numeric column with more than
  20 reference values from a Sturges histogram of all rows, its edges from pass 1's min/max/size and its counts from
  pass 2 (``"histogram of all rows"``). Methods that need the values (K-S, normed Wasserstein, Anderson-Darling,
  Cramér-von Mises, energy distance, Mann-Whitney, t-test, Epps-Singleton, MMD, TVD, Fisher, numeric Hellinger) score
  the row sample (``"sample"``, with ``sampled_rows``): Evidently's own function on exactly those rows. A categorical
  column with more than ``CATEGORY_CAP`` values is scored on the sample too (``values_over_cap``: true when a
  sampled column's distinct values were not all counted).
* Slices above the cap: slice sizes and the ``min_size`` check from exact counts; count-based methods from the exact
  (slice value, column value) counts; the others on the sample's rows of that slice. The default method within a
  slice is chosen from exact counts (a numeric column's distinct values within a slice are known exactly only when
  the column has at most ``NUMERIC_VALUES_CAP`` values overall).
* Skip: ``drift.json`` records ``config_hash`` (the spec's drift, slices and columns parts, the task type, the seed
  and :data:`LAYOUT_VERSION`); :func:`load_current` returns the stored result when it matches.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from .drift_counts import BINNED_NUMERIC_METHODS, REFERENCE_VALUES_BINNED, counts_apply, score_from_counts, \
    sturges_edges
from .drift_methods import CATEGORICAL, NUMERIC, choose_default_method, score_columns
from .drift_summary import CATEGORY_CAP, NUMERIC_VALUES_CAP, SAMPLE_METHOD, WindowSummary, histogram_counts, \
    summarize_window
from .lake import LakeError
from .snapshot import DataError

__all__ = ["LAYOUT_VERSION", "config_hash", "load_current", "stream_drift", "ExactCounts"]

LAYOUT_VERSION = 2
"""Bump when drift.json's content or its computation changes: a stored result of another layout is recomputed."""


def config_hash(spec) -> str:
    """What a snapshot's drift depends on besides the snapshot: the spec's drift, slices and columns parts."""
    parts = {"layout": LAYOUT_VERSION, "drift": spec.drift.model_dump(mode="json"),
             "slices": spec.slices.model_dump(mode="json"), "columns": spec.columns.model_dump(mode="json"),
             "task_type": spec.task_type, "seed": spec.evaluation.seed, "task": spec.task}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def load_current(lake, json_rel: str, html_rel: str, spec):
    """The stored drift result when it exists (JSON and HTML) and was made by this drift config, else None."""
    from .drift import DriftResult

    if not (lake.exists(json_rel) and lake.exists(html_rel)):
        return None
    try:
        stored = lake.read_json(json_rel)
    except (ValueError, OSError, LakeError):  # unreadable: computed again and replaced
        return None
    if (stored.get("streaming") or {}).get("config_hash") != config_hash(spec):
        return None
    return DriftResult.from_dict(stored)


def _sorted_values(*dicts: dict) -> list:
    values = list(dict.fromkeys(v for d in dicts for v in d))
    try:
        return sorted(values)
    except TypeError:  # mixed types: first appearance, as prepare_column
        return values


def _union_distinct(a: dict | None, b: dict | None) -> int | None:
    return None if a is None or b is None else len(set(a) | set(b))


class ExactCounts:
    """The hooks :func:`eval_pipeline.drift.compute_drift` uses above the cap: kinds, method choice and scores
    from the two windows' summaries (see the module notes)."""

    def __init__(self, ref: WindowSummary, cur: WindowSummary, kinds: dict[str, str]):
        self.ref, self.cur, self.kinds = ref, cur, kinds
        self.histograms: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- per column, whole window or one slice value
    def _counts(self, name: str, where) -> tuple[dict | None, dict | None, int, int]:
        if where is None:
            return (self.ref.counts.get(name), self.cur.counts.get(name), self.ref.non_missing.get(name, 0),
                    self.cur.non_missing.get(name, 0))
        s, value = where
        out = []
        for side in (self.ref, self.cur):
            joint = side.slice_counts.get((s, name))
            out.append(None if joint is None else {v: n for (sv, v), n in joint.items() if sv == value})
        n = [(side.slice_non_missing.get((s, name)) or {}).get(value, 0) for side in (self.ref, self.cur)]
        return out[0], out[1], n[0], n[1]

    def method_for(self, name: str, kind: str, method: str | None, where=None) -> str:
        r, c, n_r, _ = self._counts(name, where)
        if method is not None:
            return method
        distinct = _union_distinct(r, c)
        return choose_default_method(kind, n_r, lambda cap: distinct if distinct is not None and distinct <= cap
                                     else cap + 1)

    def score(self, cols, method, threshold, n_jobs, where=None) -> list[dict]:
        rows: list[dict | None] = []
        sampled, chosen = [], []
        for col in cols:
            r, c, n_r, n_c = self._counts(col.name, where)
            base = {"column": col.name, "kind": col.kind, "reference_rows": n_r, "current_rows": n_c}
            if n_r == 0 or n_c == 0:
                side = "reference" if n_r == 0 else "current"
                rows.append({**base, "method_id": method, "method": None, "score": None, "threshold": threshold,
                             "drifted": False, "error": f"no non-missing value in the {side} data",
                             "sample_method": "counts of all rows", "sampled_rows": None})
                continue
            method_id = self.method_for(col.name, col.kind, method, where)
            counted = r is not None and c is not None  # both windows' values all counted (not past the cap)
            how = counts_apply(method_id, col.kind, len(r) if counted else None,
                               where is None and col.name in self.histograms)
            if how == "counts":
                values = _sorted_values(r, c)
                rc = np.array([r.get(v, 0) for v in values]), np.array([c.get(v, 0) for v in values])
                rows.append({**base, **score_from_counts(method_id, *rc, threshold),
                             "sample_method": "counts of all rows", "sampled_rows": None})
            elif how == "histogram":
                rows.append({**base, **score_from_counts(method_id, *self.histograms[col.name], threshold,
                                                         binned=True),
                             "sample_method": "histogram of all rows", "sampled_rows": None})
            else:
                rows.append(None)
                sampled.append((col, counted))
                chosen.append(method_id)
        scored = iter(score_columns([col for col, _ in sampled], method, threshold, n_jobs, chosen=chosen)
                      if sampled else [])
        flags = iter(counted for _, counted in sampled)
        out = []
        for row in rows:
            if row is None:
                row = next(scored)
                row = {**row, "sample_method": "sample",
                       "sampled_rows": {"reference": row["reference_rows"], "current": row["current_rows"]},
                       "values_over_cap": not next(flags)}
            out.append(row)
        return out

    def missing_side(self, name: str) -> str | None:
        for side, summary in (("reference", self.ref), ("current", self.cur)):
            if not summary.non_missing.get(name, 0):
                return side
        return None

    def slice_values(self, slice_col: str):
        """(values in sorted order, reference rows, current rows) of a slice column; None: counted past the cap."""
        r, c = self.ref.counts.get(slice_col), self.cur.counts.get(slice_col)
        if r is None or c is None:
            return None
        values = _sorted_values(r, c)
        return values, np.array([r.get(v, 0) for v in values]), np.array([c.get(v, 0) for v in values])


def _exact_kinds(ref: WindowSummary, cur: WindowSummary, columns, categorical) -> dict[str, str]:
    """Column kinds as :func:`eval_pipeline.drift._prepare_all` decides them on all rows."""
    from .drift import CATEGORICAL_MAX_UNIQUE, _is_datetime, _is_numeric

    kinds = {}
    for col in columns:
        r, k = ref.sample[col].to_pandas(), cur.sample[col].to_pandas()
        if _is_datetime(r) and _is_datetime(k):
            kinds[col] = CATEGORICAL if categorical is not None and col in categorical else NUMERIC
        elif not (_is_numeric(r) and _is_numeric(k)):
            kinds[col] = CATEGORICAL
        elif categorical is not None:
            kinds[col] = CATEGORICAL if col in categorical else NUMERIC
        else:
            distinct = _union_distinct(ref.counts.get(col), cur.counts.get(col))
            kinds[col] = CATEGORICAL if distinct is not None and distinct <= CATEGORICAL_MAX_UNIQUE else NUMERIC
    return kinds


def _histogram_pass(exact: ExactCounts, lake, snap, spec, columns, method) -> None:
    """Pass 2, only for numeric columns whose method bins a reference of more than 20 values."""
    edges = {}
    for col in columns:
        if exact.kinds.get(col) != NUMERIC or col not in exact.ref.min_max or col not in exact.cur.min_max:
            continue
        r = exact.ref.counts.get(col)
        if exact.method_for(col, NUMERIC, method) in BINNED_NUMERIC_METHODS and (
                r is None or len(r) > REFERENCE_VALUES_BINNED):
            (r_mn, r_mx), (c_mn, c_mx) = exact.ref.min_max[col], exact.cur.min_max[col]
            edges[col] = sturges_edges(min(r_mn, c_mn), max(r_mx, c_mx),
                                       exact.ref.non_missing[col] + exact.cur.non_missing[col])
    if edges:
        ref_h = histogram_counts(lake, snap, spec, spec.drift.reference, edges)
        cur_h = histogram_counts(lake, snap, spec, spec.drift.current, edges)
        exact.histograms = {c: (ref_h[c], cur_h[c]) for c in edges}


def stream_drift(lake, snap, spec, *, batch_size: int = 250_000):
    """The snapshot's drift (features, label, slices), reference vs current window of ``spec.drift``, in memory
    bounded by ``drift.max_rows`` rows per window plus the counts (see the module notes)."""
    from .drift import compute_drift

    cols = spec.drift_columns()
    label = spec.columns.label
    label_kind = "numeric" if spec.task_type == "regression" else "categorical"
    slice_cols = list(spec.slices.columns)
    categorical = list(spec.columns.categorical) or None
    counted_as_categories = set(categorical or []) | ({label} if label_kind == "categorical" else set())
    seed, max_rows = spec.evaluation.seed, spec.drift.max_rows
    read = list(dict.fromkeys(cols + [label] + slice_cols))
    summaries = {}
    for side in ("reference", "current"):
        summaries[side] = summarize_window(lake, snap, spec, getattr(spec.drift, side), read,
                                           categorical=counted_as_categories, slice_columns=slice_cols,
                                           max_rows=max_rows, seed=seed, batch_size=batch_size, sliced_columns=cols)
        if summaries[side].rows == 0:
            raise DataError(f"task '{spec.task}': the drift {side} window has no rows in snapshot "
                            f"{snap.snapshot_id} (time range {snap.manifest.get('time_range')}); adjust drift.{side}")
    ref, cur = summaries["reference"], summaries["current"]
    whole = ref.rows <= max_rows and cur.rows <= max_rows
    exact = None
    if not whole:
        exact = ExactCounts(ref, cur, _exact_kinds(ref, cur, cols, categorical))
        exact.kinds[label] = NUMERIC if label_kind == "numeric" else CATEGORICAL
        _histogram_pass(exact, lake, snap, spec, cols, spec.drift.method)
    result = compute_drift(
        ref.sample.select(read).to_pandas(), cur.sample.select(read).to_pandas(), columns=cols,
        categorical=categorical, method=spec.drift.method, threshold=spec.drift.threshold,
        drift_share=spec.drift.drift_share, max_rows=None, html_max_rows=min(max_rows, 20_000), seed=seed,
        label_column=label, label_kind=label_kind, slice_columns=slice_cols, slice_max_values=spec.slices.max_values,
        slice_min_rows=spec.slices.min_size, title=f"{spec.task}: drift, reference vs current", exact=exact)
    if whole:
        for row in result.columns + ([result.label_drift] if result.label_drift else []):
            row.update({"sample_method": "all rows", "sampled_rows": None})
    result.reference_rows_total, result.current_rows_total, result.sampled = ref.rows, cur.rows, not whole
    result.streaming = {
        "layout": LAYOUT_VERSION, "config_hash": config_hash(spec), "all_rows": whole,
        "sample": {"method": SAMPLE_METHOD, "max_rows": max_rows, "seed": seed, "reference_rows": ref.sample.num_rows,
                   "current_rows": cur.sample.num_rows},
        "category_cap": CATEGORY_CAP, "numeric_values_cap": NUMERIC_VALUES_CAP,
        "passes": 1 if exact is None or not exact.histograms else 2,
        "histogram_columns": sorted(exact.histograms) if exact else [],
    }
    return result
