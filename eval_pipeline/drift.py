"""Data-drift detection with Evidently 0.7 (``Report`` + ``DataDriftPreset``), no Dagster here.

Entry point: :func:`compute_drift` -> :class:`DriftResult`.

Notes
-----
* Numeric vs categorical columns are declared explicitly through ``DataDefinition``. Without an explicit
  ``categorical`` list: object / string / category / bool columns are categorical, and so is a numeric column
  with at most :data:`CATEGORICAL_MAX_UNIQUE` distinct values (over both sampled sides). With a list, numeric
  columns are categorical only if listed; non-numeric columns are always categorical. Datetime columns are
  compared as numeric (seconds since the epoch).
* Each side is downsampled to at most ``max_rows`` rows with ``numpy.random.default_rng(seed)`` (positions
  drawn without replacement, original order kept), so results are deterministic for a seed.
* The per-column ``drifted`` flag is taken from Evidently's own per-column test (``include_tests=True``), which
  applies each method's own comparison. These differ by method in Evidently 0.7.23: K-S and Cramér-von Mises
  use ``p <= threshold``; chi-square, Z, Mann-Whitney, T-test, ... use ``p < threshold``; Wasserstein,
  Jensen-Shannon, PSI, KL, Hellinger use ``distance >= threshold``; energy distance uses ``>``.
  If a test is ever missing, :func:`_derive_drifted` applies the same rules.
* ``dataset_drift`` = ``share_drifted >= drift_share`` (Evidently's rule; also its ``DriftedColumnsCount`` test).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

__all__ = ["DriftResult", "compute_drift", "CATEGORICAL_MAX_UNIQUE"]

CATEGORICAL_MAX_UNIQUE = 10
"""A numeric column with at most this many distinct values is treated as categorical (inference only)."""

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
    return str(obj)


@dataclass
class DriftResult:
    """Outcome of :func:`compute_drift`.

    ``columns`` items: ``{"column", "kind", "method", "method_id", "score", "threshold", "drifted",
    "score_type"}``: ``method`` is Evidently's display name (e.g. ``"K-S p_value"``), ``method_id`` its stattest
    name (``"ks"``), ``score_type`` is ``"p_value"`` or ``"distance"``.
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
    html: str = field(repr=False, default="")
    evidently_result: dict = field(repr=False, default_factory=dict)

    def drifted_columns(self) -> list[str]:
        return [c["column"] for c in self.columns if c["drifted"]]

    def to_dict(self) -> dict:
        """JSON-safe and deterministic; no HTML."""
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
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

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
        for c in self.columns:
            score = "n/a" if c["score"] is None else f"{c['score']:.4g}"
            thr = "n/a" if c["threshold"] is None else f"{c['threshold']:.4g}"
            lines.append(
                f"| `{c['column']}` | {c['kind']} | {c['method']} | {score} | {thr} | {'⚠️ yes' if c['drifted'] else 'no'} |"
            )
        return "\n".join(lines)


def _sample(df: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    if max_rows is None or len(df) <= max_rows:
        return df
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(len(df), size=max_rows, replace=False))
    return df.iloc[pos]


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _prepare(ref: pd.Series, cur: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    if kind == "numeric":
        if pd.api.types.is_datetime64_any_dtype(ref.dtype) or pd.api.types.is_datetime64_any_dtype(cur.dtype):
            conv = lambda s: _epoch_seconds(s)  # noqa: E731
        else:
            conv = lambda s: pd.to_numeric(s, errors="coerce").astype("float64")  # noqa: E731
        return conv(ref), conv(cur)
    # categorical: plain object values; category dtype / nullable bools would otherwise be handled inconsistently
    conv = lambda s: s.astype(object).where(s.notna(), None)  # noqa: E731
    return conv(ref), conv(cur)


def _epoch_seconds(s: pd.Series) -> pd.Series:
    ts = pd.to_datetime(s, errors="coerce", utc=True)
    out = (ts - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)
    return out.astype("float64")


def _score_type(method: str) -> str | None:
    mid = _method_id(method)
    return _STATTESTS[mid][1] if mid else None


def _derive_drifted(method: str, score: float | None, threshold: float | None) -> bool:
    """Evidently 0.7.23's per-method rule (fallback when its per-column test result is missing)."""
    if score is None or threshold is None or (isinstance(score, float) and math.isnan(score)):
        return False
    mid = _method_id(method)
    op = _STATTESTS[mid][2] if mid else ">="
    return {"<=": score <= threshold, "<": score < threshold, ">": score > threshold, ">=": score >= threshold}[op]


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: list[str],
    categorical: list[str] | None = None,
    method: str | None = None,
    threshold: float | None = None,
    drift_share: float = 0.5,
    max_rows: int | None = 100_000,
    seed: int = 0,
    title: str = "Data drift",
) -> DriftResult:
    """Per-column and dataset drift of ``current`` against ``reference`` with Evidently's ``DataDriftPreset``.

    ``method`` / ``threshold`` are passed to the preset for all columns (Evidently stattest names such as
    ``"ks"``, ``"wasserstein"``, ``"psi"``, ``"jensenshannon"``, ``"chisquare"``); ``None`` = Evidently's defaults.
    """
    columns = list(dict.fromkeys(columns or []))
    if not columns:
        raise ValueError(f"{title}: no columns given for drift detection")
    for side, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{title}: {side} data must be a pandas DataFrame, got {type(frame).__name__}")
        missing = [c for c in columns if c not in frame.columns]
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
    if not 0.0 < drift_share <= 1.0:
        raise ValueError(f"{title}: drift_share must be within (0, 1], got {drift_share}")

    ref_s = _sample(reference[columns], max_rows, seed)
    cur_s = _sample(current[columns], max_rows, seed)
    sampled = len(ref_s) < len(reference) or len(cur_s) < len(current)

    kinds: dict[str, str] = {}
    for c in columns:
        numeric = _is_numeric(ref_s[c]) and _is_numeric(cur_s[c])
        is_dt = pd.api.types.is_datetime64_any_dtype(ref_s[c].dtype) and pd.api.types.is_datetime64_any_dtype(
            cur_s[c].dtype
        )
        if is_dt:
            kinds[c] = "categorical" if categorical is not None and c in categorical else "numeric"
        elif not numeric:
            kinds[c] = "categorical"
        elif categorical is not None:
            kinds[c] = "categorical" if c in categorical else "numeric"
        else:
            n_unique = pd.concat([ref_s[c], cur_s[c]], ignore_index=True).nunique(dropna=True)
            kinds[c] = "categorical" if n_unique <= CATEGORICAL_MAX_UNIQUE else "numeric"

    if method is not None:
        bad = [
            c for c in columns
            if method not in (_CATEGORICAL_OK if kinds[c] == "categorical" else _NUMERIC_OK)
        ]
        if bad:
            raise ValueError(
                f"{title}: drift method {method!r} does not apply to column(s) "
                + ", ".join(f"{c!r} ({kinds[c]})" for c in bad)
                + "; methods for both kinds: "
                + ", ".join(sorted(_CATEGORICAL_OK & _NUMERIC_OK))
            )

    ref_d: dict[str, pd.Series] = {}
    cur_d: dict[str, pd.Series] = {}
    for c in columns:
        r, k = _prepare(ref_s[c].reset_index(drop=True), cur_s[c].reset_index(drop=True), kinds[c])
        ref_d[c], cur_d[c] = r, k
        for side, s in (("reference", r), ("current", k)):
            if s.notna().sum() == 0:
                raise ValueError(f"{title}: column {c!r} has no non-null values in the {side} data")
    ref_df = pd.DataFrame(ref_d, columns=columns)
    cur_df = pd.DataFrame(cur_d, columns=columns)

    definition = DataDefinition(
        numerical_columns=[c for c in columns if kinds[c] == "numeric"],
        categorical_columns=[c for c in columns if kinds[c] == "categorical"],
    )
    preset = DataDriftPreset(columns=columns, drift_share=drift_share, method=method, threshold=threshold)
    report = Report([preset], include_tests=True, metadata={"title": title})
    snapshot = report.run(
        current_data=Dataset.from_pandas(cur_df, data_definition=definition),
        reference_data=Dataset.from_pandas(ref_df, data_definition=definition),
    )
    snapshot.set_name(title)
    ev = snapshot.dict()

    value_drift: dict[str, dict] = {}
    count_metric: dict | None = None
    for m in ev.get("metrics", []):
        mtype = (m.get("config") or {}).get("type", "")
        if mtype.endswith(":ValueDrift"):
            value_drift[m["config"]["column"]] = m
        elif mtype.endswith(":DriftedColumnsCount"):
            count_metric = m
    tests_by_metric: dict[str, list[dict]] = {}
    for t in ev.get("tests", []):
        mid = (t.get("metric_config") or {}).get("metric_id")
        tests_by_metric.setdefault(mid, []).append(t)

    rows: list[dict] = []
    for c in columns:
        m = value_drift.get(c)
        if m is None:
            raise RuntimeError(f"{title}: Evidently returned no drift result for column {c!r}")
        cfg = m["config"]
        score = m.get("value")
        score = None if score is None or (isinstance(score, float) and math.isnan(score)) else float(score)
        meth = str(cfg.get("method"))
        mid = _method_id(meth)
        thr = cfg.get("threshold")
        thr = None if thr is None else float(thr)
        drift_tests = [t for t in tests_by_metric.get(m["id"], []) if t.get("id") == "drift"]
        if drift_tests:
            drifted = drift_tests[0]["status"] == "FAIL"
        else:
            drifted = _derive_drifted(meth, score, thr)
        rows.append(
            {
                "column": c,
                "kind": kinds[c],
                "method": _STATTESTS[mid][0] if mid else meth,
                "method_id": mid or meth,
                "score_type": _score_type(meth),
                "score": score,
                "threshold": thr,
                "drifted": bool(drifted),
            }
        )

    n_drifted = sum(r["drifted"] for r in rows)
    share = n_drifted / len(rows)
    dataset_drift = share >= drift_share
    if count_metric is not None:
        # consistency with Evidently's own count (same per-column tests underneath)
        ev_count = int(round((count_metric.get("value") or {}).get("count", n_drifted)))
        if ev_count != n_drifted:
            raise RuntimeError(
                f"{title}: drifted-column count mismatch: per-column tests say {n_drifted}, "
                f"Evidently's DriftedColumnsCount says {ev_count}"
            )

    html = snapshot.get_html_str(as_iframe=False)
    html = html.replace("<title>", "<title>" + _html_escape(title) + " — ", 1) if "<title>" in html else html

    return DriftResult(
        title=title,
        columns=rows,
        n_drifted=n_drifted,
        share_drifted=share,
        dataset_drift=bool(dataset_drift),
        drift_share=drift_share,
        reference_rows=len(ref_df),
        current_rows=len(cur_df),
        sampled=sampled,
        reference_rows_total=len(reference),
        current_rows_total=len(current),
        seed=seed,
        max_rows=max_rows,
        html=html,
        evidently_result=_jsonable(ev),
    )


def _html_escape(s: str) -> str:
    import html as _h

    return _h.escape(s)
