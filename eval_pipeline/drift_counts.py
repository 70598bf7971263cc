"""Evidently 0.7's count-based drift methods computed from exact value counts or histogram counts (no Dagster here).

Why: chi-square, Z, Jensen-Shannon, PSI, Kullback-Leibler, Hellinger (categorical) and the G-test read a column
only through ``value_counts()``, ``unique()`` and its length (``evidently.legacy.calculations.stattests``:
``_chi_stat_test``, ``_z_stat_test``, ``get_binned_data``, ``_hellinger_distance``, ``_g_stat_test``), so
counts merged over any number of batches give the same score as Evidently on all rows, in memory bounded by the
number of distinct values. For a numeric column whose reference has more than 20 distinct values,
``get_binned_data`` bins on ``np.histogram_bin_edges(reference + current, "sturges")``, which depends only on the
minimum, the maximum and the number of values of both windows together (:func:`sturges_edges`), so a first pass
gives the edges and a second pass the histogram counts: also exact.

The arithmetic below is Evidently's, operation for operation, on integer codes of the values (codes in sorted-value
order, as :func:`eval_pipeline.drift_methods.prepare_column` makes them); the keys are iterated in the order of a
``set`` of those codes, as Evidently's own ``set(...) | set(...)`` does. Scores agree with Evidently's functions on
the full columns to rounding (tested to 1e-12).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["COUNT_METHODS", "BINNED_NUMERIC_METHODS", "counts_apply", "score_from_counts", "sturges_edges",
           "REFERENCE_VALUES_BINNED"]

COUNT_METHODS = frozenset({"chisquare", "z", "jensenshannon", "psi", "kl_div", "hellinger", "g_test"})
"""Methods computed exactly from value counts (any column whose distinct values were all counted)."""

BINNED_NUMERIC_METHODS = frozenset({"jensenshannon", "psi", "kl_div"})
"""Methods computed exactly from a Sturges histogram when a numeric reference has more than 20 distinct values."""

REFERENCE_VALUES_BINNED = 20
"""Evidently's ``get_binned_data``: a numeric reference with more distinct values than this is binned (Sturges)."""

# (display name, drifted comparison); copied from Evidently 0.7.23's StatTest objects and their functions
_META = {
    "chisquare": ("chi-square p_value", "<"), "z": ("Z-test p_value", "<"), "g_test": ("g_test", "<"),
    "jensenshannon": ("Jensen-Shannon distance", ">="), "psi": ("PSI", ">="),
    "kl_div": ("Kullback-Leibler divergence", ">="), "hellinger": ("Hellinger distance", ">="),
}
_DEFAULT_THRESHOLD = {"chisquare": 0.05, "z": 0.05, "g_test": 0.05, "jensenshannon": 0.1, "psi": 0.1,
                      "kl_div": 0.1, "hellinger": 0.1}


def counts_apply(method_id: str, kind: str, reference_distinct: int | None, binned_available: bool) -> str | None:
    """How ``method_id`` can be computed without the raw values: ``"counts"``, ``"histogram"`` or None (it needs
    the values: a sample). ``reference_distinct``: the reference's distinct values when all were counted, else
    None."""
    if method_id not in COUNT_METHODS:
        return None
    if kind == "categorical":
        return "counts" if reference_distinct is not None else None
    # numeric: Hellinger bins on the distinct values themselves, the rest bin like categoricals up to 20 values
    if reference_distinct is not None and reference_distinct <= REFERENCE_VALUES_BINNED:
        return None if method_id == "hellinger" else "counts"
    if method_id in BINNED_NUMERIC_METHODS and binned_available:
        return "histogram"
    return None


def sturges_edges(minimum: float, maximum: float, size: int) -> np.ndarray:
    """``np.histogram_bin_edges(a, bins="sturges")`` of a float array ``a`` known only by its min, max and size."""
    mn, mx = np.float64(minimum), np.float64(maximum)
    first, last = mn, mx
    if first == last:
        first, last = first - 0.5, last + 0.5
    width = (mx - mn) / (np.log2(size) + 1.0)
    n_bins = int(np.ceil((last - first) / width)) if width else 1
    return np.linspace(first, last, n_bins + 1, endpoint=True, dtype=np.float64)


def _keys(r: np.ndarray, c: np.ndarray) -> list[int]:
    # Evidently: list(set(reference.dropna().unique()) | set(current.dropna().unique())) on integer codes
    return list(set(np.flatnonzero(r).tolist()) | set(np.flatnonzero(c).tolist()))


def _feel_zeroes(p: np.ndarray) -> None:
    smallest = min(p[p != 0])
    np.place(p, p == 0, smallest / 10 ** 6 if smallest <= 0.0001 else 0.0001)


def _percents(r: np.ndarray, c: np.ndarray, binned: bool, feel_zeroes: bool) -> tuple[np.ndarray, np.ndarray]:
    n_r, n_c = int(r.sum()), int(c.sum())
    if binned:  # histogram counts, every bin in order
        rp, cp = r / n_r, c / n_c
    else:
        keys = _keys(r, c)
        rp = np.array([r[k] / n_r for k in keys])
        cp = np.array([c[k] / n_c for k in keys])
    if feel_zeroes:
        _feel_zeroes(rp)
        _feel_zeroes(cp)
    return rp, cp


def _score(method_id: str, r: np.ndarray, c: np.ndarray, binned: bool) -> float:
    from scipy import stats
    from scipy.spatial import distance

    if method_id == "jensenshannon":
        rp, cp = _percents(r, c, binned, False)
        return float(distance.jensenshannon(rp, cp, None))
    if method_id == "psi":
        rp, cp = _percents(r, c, binned, True)
        return float(np.sum((rp - cp) * np.log(rp / cp)))
    if method_id == "kl_div":
        rp, cp = _percents(r, c, binned, True)
        return float(stats.entropy(rp, cp))
    n_r, n_c = int(r.sum()), int(c.sum())
    keys = _keys(r, c)
    if method_id == "chisquare":
        k_norm = n_c / n_r
        return float(stats.chisquare([c[k] for k in keys], [r[k] * k_norm for k in keys])[1])
    if method_id == "g_test":
        return float(stats.power_divergence([c[k] for k in keys], [r[k] for k in keys],
                                            lambda_="log-likelihood")[1])
    if method_id == "hellinger":  # categorical: sum over keys of sqrt(p_ref * p_cur)
        total = 0.0
        for k in keys:
            total += math.sqrt(float(r[k] / n_r) * float(c[k] / n_c))
        return float(math.sqrt(1 - np.clip(total, 0, 1)))
    if method_id == "z":
        if np.count_nonzero(r) == 1 and np.count_nonzero(c) == 1 and np.flatnonzero(r)[0] == np.flatnonzero(c)[0]:
            return 1.0
        from scipy.stats import norm

        first = min(keys)  # sorted keys: 0 for the first value, 1 for every other
        p1, p2 = float(n_r - r[first]) / n_r, float(n_c - c[first]) / n_c
        pooled = float(p1 * n_r + p2 * n_c) / (n_r + n_c)
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n_r + 1.0 / n_c))
        return float(2 * (1 - norm.cdf(np.abs(z))))
    raise ValueError(f"method {method_id!r} is not computed from counts")


def score_from_counts(method_id: str, reference: np.ndarray, current: np.ndarray, threshold: float | None,
                      *, binned: bool = False) -> dict:
    """Evidently's ``method_id`` from counts: ``reference[i]``, ``current[i]`` are the number of rows with the value
    of code ``i`` (codes in sorted-value order), or of histogram bin ``i`` when ``binned``.

    Returns ``{"method_id", "method", "score", "threshold", "drifted"}`` as Evidently's StatTest would."""
    r, c = np.asarray(reference, dtype=np.int64), np.asarray(current, dtype=np.int64)
    thr = _DEFAULT_THRESHOLD[method_id] if threshold is None else float(threshold)
    score = _score(method_id, r, c, binned)
    display, op = _META[method_id]
    drifted = score < thr if op == "<" else score >= thr
    return {"method_id": method_id, "method": display, "score": None if math.isnan(score) else score,
            "threshold": thr, "drifted": bool(drifted)}
