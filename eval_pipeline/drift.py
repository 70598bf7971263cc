"""Data, prediction, label and per-slice drift with Evidently 0.7's own methods on all rows (no Dagster here).

Entry point: :func:`compute_drift` -> :class:`DriftResult`.

Notes
-----
* Scores: every column of both windows is scored once, on **all** its rows, by the Evidently stattest that
  ``DataDriftPreset`` would call for it (``evidently.legacy.calculations.stattests``; default choice by reference
  size and number of distinct values, reproduced in :func:`eval_pipeline.drift_methods.choose_default_method`).
  See :mod:`eval_pipeline.drift_methods` for why this equals the preset's scores (tested to 1e-9) at a fraction of
  its cost (1M rows x 20 columns: seconds instead of minutes, ``bench/bench_drift.py``).
* Drifted: each method's own comparison, as Evidently applies it (K-S and Cramér-von Mises ``p <= threshold``;
  chi-square, Z and the other tests ``p < threshold``; Wasserstein, Jensen-Shannon, PSI, KL, Hellinger
  ``distance >= threshold``; energy distance ``>``). ``dataset_drift`` = ``share_drifted >= drift_share``.
* Numeric vs categorical columns: without an explicit ``categorical`` list, object / string / category / bool
  columns are categorical, and so is a numeric column with at most :data:`CATEGORICAL_MAX_UNIQUE` distinct values
  (over both windows). With a list, numeric columns are categorical only if listed; non-numeric columns are always
  categorical. Datetime columns are compared as numeric (seconds since the epoch).
* Prediction drift: each model's score column (reference window vs current window); label drift: the label
  column. Both use Evidently's default method choice (the spec's ``method`` applies to the features).
* Slice drift: per value of each slice column (its ``slice_max_values`` most frequent values over both windows,
  each with at least ``slice_min_rows`` rows in both windows), the drift of every other drift column within the
  slice and the share of drifted columns; the method is chosen on the slice's own rows, as Evidently would.
* Evidently's interactive HTML (the preset, plus ``ValueDrift`` for the predictions and the label) is built from a
  seeded sample of at most ``html_max_rows`` rows per window; the sample is stated in the HTML's title, in a banner
  at its top and in ``DriftResult.html_sample``. Its size is dominated by Evidently's inlined JavaScript (≈ 4 MB).
* Determinism: the scores, hence :meth:`DriftResult.to_json`, are the same bytes for the same inputs in every
  process, whatever ``PYTHONHASHSEED`` (categorical values are coded as integers before Evidently's binning).
* A snapshot's drift (``pipeline.drift``) is streamed in bounded memory by :mod:`eval_pipeline.drift_stream`, which
  calls :func:`compute_drift` on a row sample of each window (the whole window below ``drift.max_rows`` rows: the
  same scores as here) with ``exact=``: counts of all rows for kinds, method choice, slice sizes and the
  count-based methods.
"""

from __future__ import annotations

import html as _html
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .drift_methods import CATEGORICAL, NUMERIC, PreparedColumn, prepare_column, score_columns

__all__ = ["DriftResult", "compute_drift", "CATEGORICAL_MAX_UNIQUE", "DEFAULT_HTML_MAX_ROWS"]

CATEGORICAL_MAX_UNIQUE = 10
"""A numeric column with at most this many distinct values is treated as categorical (inference only)."""

DEFAULT_HTML_MAX_ROWS = 20_000
"""Rows per window in the sample Evidently's interactive HTML report is built from."""

# Evidently 0.7.23 stattests: registry name -> (display name, score type, comparison that means "drifted").
# (Display names alone do not tell p-values from distances: e.g. "Mann-Whitney U-rank test" and
# "Total-Variation-Distance" both return p-values.)
_STATTESTS: dict[str, tuple[str, str, str]] = {
    "ks": ("K-S p_value", "p_value", "<="),
    "cramer_von_mises": ("Cramer-von Mises", "p_value", "<="),
    "anderson": ("Anderson-Darling", "p_value", "<"),
    "chisquare": ("chi-square p_value", "p_value", "<"),
    "es": ("Epps-Singleton", "p_value", "<"),
    "fisher_exact": ("Fisher's Exact test", "p_value", "<"),
    "g_test": ("g_test", "p_value", "<"),
    "mannw": ("Mann-Whitney U-rank test", "p_value", "<"),
    "empirical_mmd": ("empirical_mmd", "p_value", "<"),
    "t_test": ("t_test", "p_value", "<"),
    "TVD": ("Total-Variation-Distance", "p_value", "<"),
    "z": ("Z-test p_value", "p_value", "<"),
    "ed": ("Energy-distance", "distance", ">"),
    "hellinger": ("Hellinger distance", "distance", ">="),
    "jensenshannon": ("Jensen-Shannon distance", "distance", ">="),
    "kl_div": ("Kullback-Leibler divergence", "distance", ">="),
    "psi": ("PSI", "distance", ">="),
    "wasserstein": ("Wasserstein distance (normed)", "distance", ">="),
}
_BY_DISPLAY = {v[0]: k for k, v in _STATTESTS.items()}
_CATEGORICAL_OK = {"chisquare", "fisher_exact", "g_test", "hellinger", "jensenshannon", "kl_div", "psi", "TVD", "z"}
_NUMERIC_OK = set(_STATTESTS) - {"chisquare", "fisher_exact", "g_test", "TVD", "z"}


def _method_id(method: str) -> str | None:
    """Registry name for an Evidently method given either its name or its display name."""
    if method in _STATTESTS:
        return method
    return _BY_DISPLAY.get(method)


def _jsonable(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return None if math.isnan(f) else (f if math.isfinite(f) else ("inf" if f > 0 else "-inf"))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    return str(obj)


@dataclass
class DriftResult:
    """Outcome of :func:`compute_drift`.

    ``columns`` items: ``{"column", "kind", "method", "method_id", "score", "threshold", "drifted", "score_type",
    "reference_rows", "current_rows"}``: ``method`` is Evidently's display name (e.g. ``"K-S p_value"``),
    ``method_id`` its stattest name (``"ks"``), ``score_type`` is ``"p_value"`` or ``"distance"``, the row counts
    are the non-missing values scored. ``prediction_drift`` items add ``"model"``; ``label_drift`` is one such item
    or ``None``; ``slices`` has one item per slice column (see :func:`compute_drift`).
    """

    title: str
    columns: list[dict]
    n_drifted: int
    share_drifted: float
    dataset_drift: bool
    drift_share: float
    reference_rows: int
    current_rows: int
    sampled: bool
    reference_rows_total: int
    current_rows_total: int
    seed: int
    max_rows: int | None
    prediction_drift: list[dict] = field(default_factory=list)
    label_drift: dict | None = None
    slices: list[dict] = field(default_factory=list)
    html_sample: dict | None = None
    html: str = field(repr=False, default="")
    evidently_result: dict = field(repr=False, default_factory=dict)
    streaming: dict | None = None  # how a snapshot's windows were streamed (eval_pipeline.drift_stream)
    stored: dict | None = field(repr=False, default=None)  # the drift JSON this result was read back from

    @classmethod
    def from_dict(cls, d: dict) -> "DriftResult":
        """A result read back from its drift JSON (:meth:`to_dict` returns that JSON unchanged; no HTML)."""
        names = {f for f in cls.__dataclass_fields__} - {"html", "evidently_result", "stored"}
        return cls(**{k: d.get(k) for k in names if k in d}, stored=d)

    def drifted_columns(self) -> list[str]:
        return [c["column"] for c in self.columns if c["drifted"]]

    def to_dict(self) -> dict:
        """JSON-safe and deterministic; no HTML."""
        if self.stored is not None:
            return self.stored
        import evidently

        return _jsonable(
            {
                "title": self.title,
                "columns": self.columns,
                "n_drifted": self.n_drifted,
                "share_drifted": self.share_drifted,
                "dataset_drift": self.dataset_drift,
                "drift_share": self.drift_share,
                "reference_rows": self.reference_rows,
                "current_rows": self.current_rows,
                "sampled": self.sampled,
                "reference_rows_total": self.reference_rows_total,
                "current_rows_total": self.current_rows_total,
                "seed": self.seed,
                "max_rows": self.max_rows,
                "prediction_drift": self.prediction_drift,
                "label_drift": self.label_drift,
                "slices": self.slices,
                "html_sample": self.html_sample,
                "engine": {"evidently": evidently.__version__,
                           "methods": "evidently.legacy.calculations.stattests, each column scored once on all rows"
                           if self.streaming is None or self.streaming.get("all_rows") else
                           "evidently.legacy.calculations.stattests; count-based methods from counts of all rows, "
                           "the others on the stated row sample (each column's sample_method)"},
                **({"streaming": self.streaming} if self.streaming is not None else {}),
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    def to_markdown(self) -> str:
        verdict = "DRIFT DETECTED" if self.dataset_drift else "no dataset drift"
        sample_note = ""
        if self.sampled:
            sample_note = (
                f" (sampled from {self.reference_rows_total:,} / {self.current_rows_total:,} rows, seed {self.seed})"
            )
        lines = [
            f"**{self.title}**: {verdict} — {self.n_drifted}/{len(self.columns)} columns drifted "
            f"(share {self.share_drifted:.2f}, dataset threshold {self.drift_share:.2f}); "
            f"reference {self.reference_rows:,} rows, current {self.current_rows:,} rows{sample_note}",
            "",
            "| column | kind | method | score | threshold | drifted |",
            "|---|---|---|---|---|---|",
        ]

        def row(name: str, c: dict) -> str:
            score = "n/a" if c["score"] is None else f"{c['score']:.4g}"
            thr = "n/a" if c["threshold"] is None else f"{c['threshold']:.4g}"
            return (f"| {name} | {c['kind']} | {c['method']} | {score} | {thr} | "
                    f"{'⚠️ yes' if c['drifted'] else 'no'} |")

        lines += [row(f"`{c['column']}`", c) for c in self.columns]
        if self.prediction_drift or self.label_drift:
            lines += ["", "Prediction and label drift:", "", "| what | kind | method | score | threshold | drifted |",
                      "|---|---|---|---|---|---|"]
            lines += [row(f"scores of `{p['model']}` (`{p['column']}`)", p) for p in self.prediction_drift]
            if self.label_drift:
                lines.append(row(f"label `{self.label_drift['column']}`", self.label_drift))
        for s in self.slices:
            drifting = [v for v in s["values"] if v["dataset_drift"]]
            lines += ["", f"Slices of `{s['column']}`: {len(drifting)} of {len(s['values'])} with dataset drift"
                          + (f"; {len(s['too_small'])} too small" if s["too_small"] else "")
                          + (f"; {s['values_dropped']} values beyond max_values" if s["values_dropped"] else "")]
            if drifting:
                lines.append(", ".join(f"`{v['value']}` ({v['n_drifted']}/{v['n_columns']})" for v in drifting))
        if self.html_sample:
            h = self.html_sample
            lines += ["", f"Interactive Evidently report: a sample of {h['reference_rows']:,} reference and "
                          f"{h['current_rows']:,} current rows (seed {h['seed']})."]
        return "\n".join(lines)


# -- input checks and kinds ------------------------------------------------------------------------------------------
def _sample_positions(n: int, max_rows: int | None, seed: int) -> np.ndarray | None:
    if max_rows is None or n <= max_rows:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def _sample(df: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    pos = _sample_positions(len(df), max_rows, seed)
    return df if pos is None else df.iloc[pos]


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _is_datetime(s: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(s.dtype)


def _n_distinct_upto(col: PreparedColumn, cap: int) -> int:
    from .drift_methods import _n_distinct_upto as nd

    r, c = col.reference, col.current
    return nd(r[~np.isnan(r)], c[~np.isnan(c)], cap)


def _prepare_all(ref: pd.DataFrame, cur: pd.DataFrame, columns: Sequence[str], categorical: list[str] | None,
                 forced: Mapping[str, str] | None = None) -> dict[str, PreparedColumn]:
    """Prepared columns with their kinds (see the module notes); ``forced``: kinds given by the caller."""
    out: dict[str, PreparedColumn] = {}
    for c in columns:
        r, k = ref[c], cur[c]
        kind = (forced or {}).get(c)
        if kind is None:
            if _is_datetime(r) and _is_datetime(k):
                kind = CATEGORICAL if categorical is not None and c in categorical else NUMERIC
            elif not (_is_numeric(r) and _is_numeric(k)):
                kind = CATEGORICAL
            elif categorical is not None:
                kind = CATEGORICAL if c in categorical else NUMERIC
        col = prepare_column(c, r, k, kind or NUMERIC)
        if kind is None:  # numeric, not listed: categorical when it has few distinct values
            if _n_distinct_upto(col, CATEGORICAL_MAX_UNIQUE) <= CATEGORICAL_MAX_UNIQUE:
                col = prepare_column(c, r, k, CATEGORICAL)
        out[c] = col
    return out


def _score_type(method_id: str | None) -> str | None:
    return _STATTESTS[method_id][1] if method_id in _STATTESTS else None


def _finish(row: dict) -> dict:
    row = dict(row)
    row["score_type"] = _score_type(row.get("method_id"))
    return row


# -- slices ----------------------------------------------------------------------------------------------------------
def _score_all(cols, method, threshold, n_jobs, where=None) -> list[dict]:
    """Every column on all the rows it has (``where``: the slice, for :class:`drift_stream.ExactCounts`)."""
    return score_columns(cols, method, threshold, n_jobs)


def _slice_drift(ref: pd.DataFrame, cur: pd.DataFrame, slice_col: str, prepared: dict[str, PreparedColumn],
                 *, method, threshold, drift_share, max_values, min_rows, n_jobs, exact=None) -> dict:
    codes = prepare_column(slice_col, ref[slice_col], cur[slice_col], CATEGORICAL)
    counted = exact.slice_values(slice_col) if exact is not None else None
    if counted is None:
        labels = codes.labels
        r_counts = np.bincount(codes.reference[codes.reference >= 0], minlength=len(labels))
        c_counts = np.bincount(codes.current[codes.current >= 0], minlength=len(labels))
    else:  # slice sizes from counts of all rows; the rows below from the sample
        labels, r_counts, c_counts = counted
    code_of = {v: i for i, v in enumerate(codes.labels)}
    score = exact.score if exact is not None else _score_all
    # most frequent over both windows first; ties by value (codes follow the sorted values)
    order = sorted(range(len(labels)), key=lambda i: (-(int(r_counts[i]) + int(c_counts[i])), i))
    kept, dropped = order[:max_values], order[max_values:]
    cols = [c for c in prepared if c != slice_col]
    values, too_small = [], []
    for i in kept:
        label = _jsonable(labels[i])
        n_r, n_c = int(r_counts[i]), int(c_counts[i])
        if min(n_r, n_c) < min_rows or not cols:
            too_small.append({"value": label, "reference_rows": n_r, "current_rows": n_c})
            continue
        j = code_of.get(labels[i], -2)
        r_idx, c_idx = np.flatnonzero(codes.reference == j), np.flatnonzero(codes.current == j)
        rows = score([prepared[c].take(r_idx, c_idx) for c in cols], method, threshold, n_jobs,
                     where=(slice_col, labels[i]))
        scored = [r for r in rows if r["score"] is not None]
        n_drifted = sum(r["drifted"] for r in scored)
        share = n_drifted / len(scored) if scored else 0.0
        values.append({
            "value": label, "reference_rows": n_r, "current_rows": n_c, "n_columns": len(scored),
            "n_drifted": n_drifted, "share_drifted": share, "dataset_drift": bool(scored) and share >= drift_share,
            "drifted_columns": [r["column"] for r in scored if r["drifted"]],
            "scores": {r["column"]: {"method_id": r["method_id"], "score": r["score"], "drifted": r["drifted"],
                                     **({"error": r["error"]} if "error" in r else {}),
                                     **({"sample_method": r["sample_method"]} if "sample_method" in r else {}),
                                     **({"sampled_rows": r["sampled_rows"]} if r.get("sampled_rows") else {})}
                       for r in rows},
        })
    return {"column": slice_col, "max_values": max_values, "min_rows": min_rows, "values": values,
            "too_small": too_small, "values_dropped": len(dropped)}


# -- the HTML --------------------------------------------------------------------------------------------------------
def _evidently_frame(prepared: Mapping[str, PreparedColumn], side: str, pos: np.ndarray | None) -> pd.DataFrame:
    data = {}
    for name, col in prepared.items():
        arr = getattr(col, side)
        if pos is not None:
            arr = arr[pos]
        if col.kind == NUMERIC:
            data[name] = pd.Series(arr, dtype="float64")
        else:
            labels = np.asarray(col.labels + [None], dtype=object)
            data[name] = pd.Series(labels[arr], dtype=object)  # code -1 -> None
    return pd.DataFrame(data)


def _html_report(prepared_features: dict[str, PreparedColumn], extra: dict[str, PreparedColumn], *,
                 method, threshold, drift_share, html_max_rows, seed, title, n_ref, n_cur, totals=None):
    """Evidently's report on a seeded sample of the ``n_ref`` / ``n_cur`` prepared rows; ``totals``: the windows'
    row counts when those rows are already a sample of them (streamed drift)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    allp = {**prepared_features, **extra}
    r_pos = _sample_positions(n_ref, html_max_rows, seed)
    c_pos = _sample_positions(n_cur, html_max_rows, seed)
    ref_df = _evidently_frame(allp, "reference", r_pos)
    cur_df = _evidently_frame(allp, "current", c_pos)
    t_ref, t_cur = totals or (n_ref, n_cur)
    where = ("on all rows" if totals is None else
             "from counts of all rows where the method allows, else on its stated row sample (sample_method)")
    sample = {"max_rows": html_max_rows, "seed": seed, "reference_rows": len(ref_df), "current_rows": len(cur_df),
              "reference_rows_total": t_ref, "current_rows_total": t_cur,
              "sampled": len(ref_df) < t_ref or len(cur_df) < t_cur,
              "note": f"Evidently's interactive report is built from this sample; the scores in the drift JSON "
                      f"are {where}."}
    stated = (f"{title} — Evidently report on a sample of {len(ref_df):,} of {t_ref:,} reference and "
              f"{len(cur_df):,} of {t_cur:,} current rows (seed {seed}); drift.json has the scores {where}")
    definition = DataDefinition(
        numerical_columns=[c for c, p in allp.items() if p.kind == NUMERIC],
        categorical_columns=[c for c, p in allp.items() if p.kind == CATEGORICAL],
    )
    metrics: list = [DataDriftPreset(columns=list(prepared_features), drift_share=drift_share, method=method,
                                     threshold=threshold)]
    metrics += [ValueDrift(column=c) for c in extra]
    report = Report(metrics, include_tests=True, metadata={"title": stated, "html_sample": json.dumps(sample)})
    snapshot = report.run(current_data=Dataset.from_pandas(cur_df, data_definition=definition),
                          reference_data=Dataset.from_pandas(ref_df, data_definition=definition))
    snapshot.set_name(stated)
    html = snapshot.get_html_str(as_iframe=False)
    esc = _html.escape(stated)
    html, n_titles = re.subn(r"<title>.*?</title>", lambda _m: f"<title>{esc}</title>", html, count=1,
                             flags=re.DOTALL)
    if not n_titles:
        html = html.replace("<head>", f"<head><title>{esc}</title>", 1)
    banner = (f'<div id="eval-pipeline-sample" style="font:14px sans-serif;padding:8px 12px;background:#fff8e1;'
              f'border-bottom:1px solid #e0c060">{esc}</div>')
    meta = f'<meta name="eval-pipeline-sample" content="{_html.escape(json.dumps(sample, sort_keys=True))}">'
    html = html.replace("<head>", "<head>" + meta, 1)
    body_at = html.find("<body")
    if body_at >= 0:
        end = html.find(">", body_at) + 1
        html = html[:end] + banner + html[end:]
    return html, sample, _jsonable(snapshot.dict())


# -- the entry point -------------------------------------------------------------------------------------------------
def _check_inputs(reference, current, columns, extra_needed, categorical, method, max_rows, html_max_rows,
                  drift_share, label_kind, slice_max_values, slice_min_rows, title) -> list | None:
    """Refuse what compute_drift cannot use, naming it; returns the categorical columns that are drift columns."""
    for side, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{title}: {side} data must be a pandas DataFrame, got {type(frame).__name__}")
        missing = [c for c in list(dict.fromkeys(columns + extra_needed)) if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{title}: column(s) {', '.join(repr(c) for c in missing)} missing from the {side} data"
            )
        if len(frame) == 0:
            raise ValueError(f"{title}: the {side} data is empty (0 rows)")
    if categorical is not None:
        # entries that are not drift columns are ignored (a spec may list all categorical features)
        categorical = [c for c in categorical if c in columns]
    if method is not None and method not in _STATTESTS:
        raise ValueError(f"{title}: unknown drift method {method!r}; expected one of {sorted(_STATTESTS)}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"{title}: max_rows must be >= 1 or None, got {max_rows}")
    if html_max_rows is not None and html_max_rows < 1:
        raise ValueError(f"{title}: html_max_rows must be >= 1 or None, got {html_max_rows}")
    if not 0.0 < drift_share <= 1.0:
        raise ValueError(f"{title}: drift_share must be within (0, 1], got {drift_share}")
    if label_kind not in (None, NUMERIC, CATEGORICAL):
        raise ValueError(f"{title}: label_kind must be 'numeric', 'categorical' or None, got {label_kind!r}")
    if slice_max_values < 1 or slice_min_rows < 0:
        raise ValueError(f"{title}: slice_max_values must be >= 1 and slice_min_rows >= 0")
    return categorical


def _check_prepared(prepared: dict, columns: list, method, title: str, exact=None) -> None:
    for c, col in prepared.items():
        if exact is not None:  # counts of all rows; the sample may miss a column's few values
            side = exact.missing_side(c)
            if side:
                raise ValueError(f"{title}: column {c!r} has no non-null values in the {side} data")
            continue
        for side, arr in (("reference", col.reference), ("current", col.current)):
            has_value = (~np.isnan(arr)).any() if col.kind == NUMERIC else (arr >= 0).any()
            if not has_value:
                raise ValueError(f"{title}: column {c!r} has no non-null values in the {side} data")
    if method is not None:
        bad = [c for c in columns if method not in (_CATEGORICAL_OK if prepared[c].kind == CATEGORICAL
                                                   else _NUMERIC_OK)]
        if bad:
            raise ValueError(
                f"{title}: drift method {method!r} does not apply to column(s) "
                + ", ".join(f"{c!r} ({prepared[c].kind})" for c in bad)
                + "; methods for both kinds: "
                + ", ".join(sorted(_CATEGORICAL_OK & _NUMERIC_OK))
            )


def _score_extras(ref_s, cur_s, predictions: dict, label_column, label_kind, n_jobs, score=_score_all):
    """Prediction and label drift with Evidently's default method (the spec's method is for the features)."""
    extra: dict[str, PreparedColumn] = {}
    pred_kinds = {col: (NUMERIC if _is_numeric(ref_s[col]) and _is_numeric(cur_s[col]) else CATEGORICAL)
                  for col in predictions.values()}
    extra.update(_prepare_all(ref_s, cur_s, list(predictions.values()), None, forced=pred_kinds))
    if label_column:
        forced = {label_column: label_kind} if label_kind else None
        extra.update(_prepare_all(ref_s, cur_s, [label_column], None, forced=forced))
    extra_cols = [c for c in dict.fromkeys(list(predictions.values()) + ([label_column] if label_column else []))]
    extra_rows = {r["column"]: _finish(r) for r in score([extra[c] for c in extra_cols], None, None, n_jobs)}
    prediction_drift = [{"model": m, **extra_rows[col]} for m, col in predictions.items()]
    label_drift = extra_rows[label_column] if label_column else None
    return extra, extra_cols, prediction_drift, label_drift


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame, *, columns: list[str],
                  categorical: list[str] | None = None, method: str | None = None, threshold: float | None = None,
                  drift_share: float = 0.5, max_rows: int | None = None, seed: int = 0, title: str = "Data drift",
                  prediction_columns: Mapping[str, str] | Sequence[str] | None = None,
                  label_column: str | None = None, label_kind: str | None = None,
                  slice_columns: Sequence[str] | None = None, slice_max_values: int = 50, slice_min_rows: int = 300,
                  html: bool = True, html_max_rows: int | None = DEFAULT_HTML_MAX_ROWS,
                  n_jobs: int | None = None, exact=None) -> DriftResult:
    """Drift of ``current`` against ``reference``: per column, per model's scores, of the label and per slice.

    Each column is scored once, on all rows, by the Evidently 0.7 method ``DataDriftPreset`` would use
    (see the module notes); the scores equal the preset's on the same frames.

    Parameters
    ----------
    reference, current : pandas.DataFrame
        The two windows (e.g. the training months and the last 31 days), holding every column named below.
    columns : list of str
        Feature columns to watch.
    categorical : list of str, optional
        Columns to treat as categorical (others that are not listed: numeric if numeric). ``None``: inferred (object,
        string, category and bool columns, and numeric columns with at most :data:`CATEGORICAL_MAX_UNIQUE`
        distinct values). Entries that are not in ``columns`` are ignored.
    method : str, optional
        Evidently stattest name for every feature column (``"ks"``, ``"wasserstein"``, ``"psi"``,
        ``"jensenshannon"``, ``"chisquare"``, ...). ``None``: Evidently's default choice per column (reference
        <= 1000 rows: K-S, chi-square or Z; more: normed Wasserstein or Jensen-Shannon).
    threshold : float, optional
        Drift threshold for ``method``; ``None``: the method's default (0.05 for tests, 0.1 for distances).
    drift_share : float, default 0.5
        Dataset (and slice) drift when at least this share of columns drifted.
    max_rows : int, optional
        Score only a seeded sample of at most this many rows per window. ``None`` (default): all rows.
    seed : int, default 0
        Seed of the samples (``max_rows`` and the HTML's); ``title`` names the result and the HTML report.
    prediction_columns : mapping of str to str, or list of str, optional
        Score columns present in both frames: ``{"candidate": "score_v2", "champion": "score_v1"}`` (model name to
        column), or a list of columns (each its own name). Compared reference vs current window per model.
    label_column : str, optional
        Label column present in both frames; ``label_kind`` ("categorical" / "numeric"; default: inferred).
    slice_columns : list of str, optional
        Columns whose values define slices; per slice, the drift of the other feature columns within it.
    slice_max_values : int, default 50
        Slices per slice column: its most frequent values over both windows (the rest counted in
        ``values_dropped``).
    slice_min_rows : int, default 300
        A slice needs at least this many rows in each window, else it is listed in ``too_small``.
    html : bool, default True
        Build Evidently's interactive HTML report on a sample of at most ``html_max_rows`` rows per window (``None``:
        all rows, slow: Evidently's preset). ``n_jobs``: threads for the column scores (default: up to 2).
    exact : eval_pipeline.drift_stream.ExactCounts, optional
        The frames are row samples of larger windows: kinds, methods, slice sizes, count-based scores from its counts.

    Returns
    -------
    DriftResult
        Per-column rows (``columns``), dataset drift, ``prediction_drift``, ``label_drift``, ``slices``,
        ``html`` and ``html_sample``. :meth:`DriftResult.to_dict` is the drift JSON (no HTML), the same bytes for
        the same inputs in every process.

    Raises
    ------
    ValueError
        Missing columns, empty windows, a column with no value in a window, an unknown or inapplicable method.
    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame({"x": rng.normal(0, 1, 500), "c": rng.choice(["a", "b", "c"], 500)})
    >>> cur = pd.DataFrame({"x": rng.normal(1, 1, 400), "c": rng.choice(["a", "b", "c"], 400)})
    >>> r = compute_drift(ref, cur, columns=["x", "c"], html=False)
    >>> [(c["column"], c["kind"], c["method"], c["drifted"]) for c in r.columns]
    [('x', 'numeric', 'K-S p_value', True), ('c', 'categorical', 'chi-square p_value', False)]
    >>> r.n_drifted, r.dataset_drift, r.reference_rows, r.current_rows
    (1, True, 500, 400)
    """
    columns = list(dict.fromkeys(columns or []))
    if not columns:
        raise ValueError(f"{title}: no columns given for drift detection")
    if isinstance(prediction_columns, Mapping):
        predictions = {str(k): str(v) for k, v in prediction_columns.items()}
    else:
        predictions = {str(c): str(c) for c in (prediction_columns or [])}
    slice_columns = list(dict.fromkeys(slice_columns or []))
    extra_needed = list(predictions.values()) + ([label_column] if label_column else []) + slice_columns
    categorical = _check_inputs(reference, current, columns, extra_needed, categorical, method, max_rows,
                                html_max_rows, drift_share, label_kind, slice_max_values, slice_min_rows, title)

    needed = list(dict.fromkeys(columns + extra_needed))
    ref_s = _sample(reference[needed], max_rows, seed)
    cur_s = _sample(current[needed], max_rows, seed)
    sampled = len(ref_s) < len(reference) or len(cur_s) < len(current)
    prepared = _prepare_all(ref_s, cur_s, columns, categorical, forced=exact.kinds if exact is not None else None)
    _check_prepared(prepared, columns, method, title, exact)
    score = exact.score if exact is not None else _score_all
    rows = [_finish(r) for r in score([prepared[c] for c in columns], method, threshold, n_jobs)]
    n_drifted = sum(r["drifted"] for r in rows)
    share = n_drifted / len(rows)
    extra, extra_cols, prediction_drift, label_drift = _score_extras(ref_s, cur_s, predictions, label_column,
                                                                      label_kind, n_jobs, score)

    slices = [
        _slice_drift(ref_s, cur_s, s, prepared, method=method, threshold=threshold, drift_share=drift_share,
                     max_values=slice_max_values, min_rows=slice_min_rows, n_jobs=n_jobs, exact=exact)
        for s in slice_columns
    ]
    html_str, html_sample, ev = "", None, {}
    if html:
        html_str, html_sample, ev = _html_report(
            prepared, {c: extra[c] for c in extra_cols if c not in prepared}, method=method, threshold=threshold,
            drift_share=drift_share, html_max_rows=html_max_rows, seed=seed, title=title, n_ref=len(ref_s),
            n_cur=len(cur_s), totals=None if exact is None else (exact.ref.rows, exact.cur.rows))
    return DriftResult(
        title=title, columns=rows, n_drifted=n_drifted, share_drifted=share, dataset_drift=bool(share >= drift_share),
        drift_share=drift_share, reference_rows=len(ref_s), current_rows=len(cur_s), sampled=sampled,
        reference_rows_total=len(reference), current_rows_total=len(current), seed=seed, max_rows=max_rows,
        prediction_drift=prediction_drift, label_drift=label_drift, slices=slices, html_sample=html_sample,
        html=html_str, evidently_result=ev)
