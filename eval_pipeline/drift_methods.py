"""Evidently 0.7's per-column drift methods on all rows, without the preset's repeated work (no Dagster here).

``DataDriftPreset`` computes each column's drift several times (``ValueDrift``, ``DriftedColumnsCount`` and the
render's ``DatasetDriftMetric`` / ``DataDriftTable``), each time with histograms, correlations and plot data, on
unsorted object/float columns. Here each column is scored once by **the same Evidently stattest object** the preset
calls (``evidently.legacy.calculations.stattests``: ``StatTest.__call__`` -> ``_wasserstein_distance_norm``,
``_jensenshannon``, ``_ks_stat_test``, ``_chi_stat_test``, ``_z_stat_test``, ...), on the values Evidently would pass
it, prepared so that the call is cheap and deterministic:

* cleaning as in ``evidently.legacy.calculations.data_drift.get_one_column_drift``: +-inf become missing, missing
  values are dropped (per side);
* the default method is chosen by :func:`choose_default_method`, a copy of Evidently 0.7.23's
  ``registry._get_default_stattest`` rules computed from counts instead of a ``pd.concat(...).nunique()`` of both
  sides (tested against Evidently's own ``get_stattest`` on every boundary);
* numeric columns are passed **sorted** to the methods that sort internally anyway (``wasserstein``, ``ks``,
  ``ed``): scipy's ``argsort`` / ``mergesort`` are then near-linear (1M rows: ≈ 0.35 s instead of ≈ 1.5 s). Only
  ``np.std`` of the reference (Wasserstein's norm) sums in another order: last-digit differences (≈ 1e-16);
* categorical columns are passed as **integer codes** (one code per distinct value, codes in sorted-value order
  when the values sort): Evidently's binning keys come from a ``set`` of the values, whose iteration order for
  strings depends on ``PYTHONHASHSEED`` and changes the Jensen-Shannon sum in the last digits between processes.
  Integers hash to themselves, so the scores are the same bytes in every process. The partition of rows and the
  counts are the same, so are the scores (to rounding; tested to 1e-9 against the preset);
* the default methods of a continuous column, K-S and normed Wasserstein, are computed here with the same scipy calls
  as Evidently's implementations (equal float for float to its ``StatTest``, tested), so that a run that needs only
  them (prediction drift of a model's scores, in every evaluation) does not import Evidently (3-4 s here);
* the default methods (K-S, chi-square, Z, Wasserstein, Jensen-Shannon) are pure functions of their inputs, so
  columns are scored on a small thread pool (numpy's sorts and searches release the GIL). Methods that use
  numpy's global random state (``TVD``, ``empirical_mmd`` permutation tests) always run one column at a time.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

__all__ = ["NUMERIC", "CATEGORICAL", "PreparedColumn", "prepare_column", "choose_default_method", "score_column",
           "score_columns", "SMALL_REFERENCE_ROWS"]

NUMERIC = "numeric"
CATEGORICAL = "categorical"

SMALL_REFERENCE_ROWS = 1000
"""Evidently 0.7.23: a reference with at most this many (non-null) rows gets the statistical tests."""

# Methods whose result does not depend on the order of the values and which sort them internally: fed sorted values.
_SORTED_INPUT = {"wasserstein", "ks", "ed"}
# Methods that are pure functions of their inputs (no global random state): safe on a thread pool.
_THREAD_SAFE = {"ks", "wasserstein", "jensenshannon", "chisquare", "z", "psi", "kl_div", "hellinger", "ed", "g_test",
                "fisher_exact", "t_test", "mannw", "anderson", "cramer_von_mises", "es"}


_DEFAULT_TESTS = {  # registry name -> the StatTest object _get_default_stattest returns
    "ks": lambda st: st.ks_stat_test,
    "chisquare": lambda st: st.chi_stat_test,
    "z": lambda st: st.z_stat_test,
    "wasserstein": lambda st: st.wasserstein_stat_test,
    "jensenshannon": lambda st: st.jensenshannon_stat_test,
}


def _ks_p_value(ref: pd.Series, cur: pd.Series, threshold: float) -> tuple[float, bool]:
    """Evidently 0.7.23 ``ks_stattest._ks_stat_test``: the two-sided p-value of scipy's K-S test."""
    from scipy.stats import ks_2samp

    p_value = float(ks_2samp(ref, cur)[1])
    return p_value, p_value <= threshold


def _wasserstein_normed(ref: pd.Series, cur: pd.Series, threshold: float) -> tuple[float, bool]:
    """Evidently 0.7.23 ``wasserstein_distance_norm._wasserstein_distance_norm``: scipy's distance over the
    reference's standard deviation (``np.std`` of the Series, as Evidently calls it; at least 0.001)."""
    from scipy.stats import wasserstein_distance

    norm = max(float(np.std(ref)), 0.001)
    value = float(wasserstein_distance(ref, cur) / norm)
    return value, value >= threshold


# Default methods computed here without Evidently: name -> (Evidently's display name, default threshold, function).
_NATIVE = {"ks": ("K-S p_value", 0.05, _ks_p_value),
           "wasserstein": ("Wasserstein distance (normed)", 0.1, _wasserstein_normed)}


@dataclass
class PreparedColumn:
    """One column of both windows in the form the scoring uses.

    ``numeric``: float64 arrays, NaN for missing or infinite. ``categorical``: int64 codes, ``-1`` for missing or
    infinite; equal values get equal codes on both sides. ``labels[code]`` is the value of a code.
    """

    name: str
    kind: str
    reference: np.ndarray
    current: np.ndarray
    labels: list | None = None

    def take(self, ref_idx: np.ndarray, cur_idx: np.ndarray) -> "PreparedColumn":
        """The same column restricted to some rows of each side (e.g. one slice)."""
        return PreparedColumn(self.name, self.kind, self.reference[ref_idx], self.current[cur_idx], self.labels)


def _stattests():
    # Imported on first use: importing evidently costs seconds.
    from evidently.legacy.calculations import stattests
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    return stattests, get_registered_stattest, ColumnType


def _numeric_values(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        ts = pd.to_datetime(s, errors="coerce", utc=True)
        out = ((ts - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype="float64",
                                                                                                 na_value=np.nan)
    elif pd.api.types.is_numeric_dtype(s.dtype) and not isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
        out = s.to_numpy(dtype="float64")  # a view when it is float64 already: copied below only if changed
    else:
        out = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    inf = np.isinf(out)
    if inf.any():
        out = out.copy()
        out[inf] = np.nan
    return out


def _sorted(a: np.ndarray) -> np.ndarray:
    """``np.sort(a)``; integer-valued data with a modest range by counting instead (same values, O(n)).

    (A zero's sign may differ from the data's: -0.0 == 0.0 for every method fed sorted values.)
    """
    if len(a) > 50_000:
        head = a[:1000]
        if np.array_equal(head, np.floor(head)):
            lo, hi = a.min(), a.max()
            if hi - lo <= 2 * len(a) and -(2.0 ** 52) < lo and hi < 2.0 ** 52:
                shifted = a - lo  # exact: integers below 2**52
                ints = shifted.astype(np.int64)
                if np.array_equal(ints, shifted):
                    counts = np.bincount(ints)
                    present = np.flatnonzero(counts)
                    return np.repeat(lo + present.astype(np.float64), counts[present])
    return np.sort(a)


def _is_inf(v) -> bool:
    try:
        return bool(isinstance(v, (float, np.floating)) and np.isinf(v))
    except TypeError:
        return False


def prepare_column(name: str, reference: pd.Series, current: pd.Series, kind: str) -> PreparedColumn:
    """Convert one column of both windows (see :class:`PreparedColumn`)."""
    if kind == NUMERIC:
        return PreparedColumn(name, kind, _numeric_values(reference), _numeric_values(current))
    if kind != CATEGORICAL:
        raise ValueError(f"column {name!r}: unknown kind {kind!r}")
    # Missing values get code -1 from factorize; Evidently also drops +-inf (replace([-inf, inf], nan).dropna()).
    r_codes, r_uniq = pd.factorize(reference, use_na_sentinel=True)
    c_codes, c_uniq = pd.factorize(current, use_na_sentinel=True)
    r_uniq, c_uniq = pd.Index(np.asarray(r_uniq, dtype=object)), pd.Index(np.asarray(c_uniq, dtype=object))
    union = r_uniq.append(c_uniq).unique()
    union = union[[not _is_inf(v) for v in union]]
    try:
        union = union.sort_values()
    except TypeError:  # values of mixed types: codes in order of first appearance (still hash-independent)
        pass
    # code of each side's unique value in the union (-1: an infinite value), then of each row
    r_map = np.append(union.get_indexer(r_uniq).astype(np.int64), -1)
    c_map = np.append(union.get_indexer(c_uniq).astype(np.int64), -1)
    ref = r_map[np.asarray(r_codes, dtype=np.int64)]  # factorize's -1 picks the appended -1
    cur = c_map[np.asarray(c_codes, dtype=np.int64)]
    return PreparedColumn(name, kind, ref, cur, list(union))


def _clean(col: PreparedColumn) -> tuple[np.ndarray, np.ndarray]:
    def keep(a: np.ndarray, missing: np.ndarray) -> np.ndarray:
        return a[~missing] if missing.any() else a

    if col.kind == NUMERIC:
        return keep(col.reference, np.isnan(col.reference)), keep(col.current, np.isnan(col.current))
    return keep(col.reference, col.reference < 0), keep(col.current, col.current < 0)


def _n_distinct_upto(ref: np.ndarray, cur: np.ndarray, cap: int) -> int:
    """Distinct values of ``ref`` and ``cur`` together (NaN-free), exact up to ``cap``; ``cap + 1`` means more."""
    for a in (ref, cur):
        if len(np.unique(a[:4096])) > cap:
            return cap + 1
    n = len(np.union1d(np.unique(ref), np.unique(cur)))
    return n if n <= cap else cap + 1


def choose_default_method(kind: str, reference_rows: int, n_values: Callable[[int], int]) -> str:
    """Evidently 0.7.23's default drift method (``stattests.registry._get_default_stattest``), by registry name.

    ``reference_rows`` is the reference's row count after dropping missing values; ``n_values(cap)`` the number of
    distinct values of both sides together, exact up to ``cap`` (Evidently: ``pd.concat([ref, cur]).nunique()``).

    >>> choose_default_method("numeric", 1000, lambda cap: 6), choose_default_method("numeric", 1001, lambda cap: 6)
    ('ks', 'wasserstein')
    >>> choose_default_method("categorical", 1000, lambda cap: 2), choose_default_method("numeric", 5000, lambda cap: 5)
    ('z', 'jensenshannon')
    """
    if reference_rows <= SMALL_REFERENCE_ROWS:
        if kind == NUMERIC:
            n = n_values(5)
            if n <= 5:
                return "chisquare" if n > 2 else "z"
            return "ks"
        return "chisquare" if n_values(2) > 2 else "z"
    if kind == NUMERIC:
        return "jensenshannon" if n_values(5) <= 5 else "wasserstein"
    return "jensenshannon"


def score_column(col: PreparedColumn, method: str | None = None, threshold: float | None = None,
                 chosen: str | None = None) -> dict:
    """Drift of one prepared column with Evidently's own stattest; ``method=None``: Evidently's default choice
    (``chosen``: that choice made already, from counts of all rows, when the column is a sample of them).

    Returns ``{"column", "kind", "method_id", "method", "score", "threshold", "drifted", "reference_rows",
    "current_rows"}`` (rows: non-missing values scored). A side with no value left gives ``score=None``,
    ``drifted=False`` and ``"error"`` (Evidently refuses such a column).
    """
    ref, cur = _clean(col)
    out = {"column": col.name, "kind": col.kind, "reference_rows": int(len(ref)), "current_rows": int(len(cur))}
    if len(ref) == 0 or len(cur) == 0:
        side = "reference" if len(ref) == 0 else "current"
        return {**out, "method_id": method, "method": None, "score": None, "threshold": threshold, "drifted": False,
                "error": f"no non-missing value in the {side} data"}
    name = None
    if method is None:
        name = chosen or choose_default_method(col.kind, len(ref), lambda cap: _n_distinct_upto(ref, cur, cap))
        if col.kind == NUMERIC and name in _NATIVE:
            # The two default methods of a continuous column, without importing Evidently (seconds): the very
            # scipy calls of Evidently 0.7's implementations (tested equal, float for float, to its StatTest).
            ref, cur = _sorted(ref), _sorted(cur)
            display, default_threshold, func = _NATIVE[name]
            actual = default_threshold if threshold is None else threshold
            score, drifted = func(pd.Series(ref, copy=False), pd.Series(cur, copy=False), actual)
            return {**out, "method_id": name, "method": display, "score": None if math.isnan(score) else score,
                    "threshold": float(actual), "drifted": bool(drifted)}
    stattests, get_registered_stattest, ColumnType = _stattests()
    ctype = ColumnType.Numerical if col.kind == NUMERIC else ColumnType.Categorical
    if name is not None:
        # Evidently calls the chosen StatTest object itself, whatever its declared feature types (a numeric column
        # with <= 5 values and a small reference gets the chi-square / Z test), so the object is taken by name here.
        test = _DEFAULT_TESTS[name](stattests)
    else:
        test = get_registered_stattest(method, ctype)
    if col.kind == NUMERIC and test.name in _SORTED_INPUT:
        ref, cur = _sorted(ref), _sorted(cur)
    res = test(pd.Series(ref, copy=False), pd.Series(cur, copy=False), ctype, threshold)
    score = float(res.drift_score)
    return {**out, "method_id": test.name, "method": test.display_name,
            "score": None if math.isnan(score) else score, "threshold": float(res.actual_threshold),
            "drifted": bool(res.drifted)}


def score_columns(cols: Sequence[PreparedColumn], method: str | None = None, threshold: float | None = None,
                  n_jobs: int | None = None, chosen: Sequence[str | None] | None = None) -> list[dict]:
    """:func:`score_column` for each column, in order; on up to ``n_jobs`` threads (default: up to 2 CPUs) when
    the method is thread-safe (every default method is). ``chosen``: per column, see :func:`score_column`."""
    if n_jobs is None:
        n_jobs = min(2, os.cpu_count() or 1)
    chosen = list(chosen) if chosen is not None else [None] * len(cols)
    if n_jobs <= 1 or len(cols) <= 1 or (method is not None and method not in _THREAD_SAFE):
        return [score_column(c, method, threshold, ch) for c, ch in zip(cols, chosen)]
    if method is not None:
        _stattests()  # an Evidently method for every column: import once, before the threads
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        return list(pool.map(lambda a: score_column(a[0], method, threshold, a[1]), zip(cols, chosen)))
