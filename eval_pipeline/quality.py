"""Data-quality validation with Great Expectations 1.x, called directly (no Dagster here).

Entry points: :func:`validate_dataset` -> :class:`QualityResult`, and :func:`render_html`.

Design notes
------------
* GX runs in an *ephemeral* context built per call (≈ 10 ms), with progress bars and analytics off.
* Every expectation carries ``meta={"check_id": ...}`` so results are mapped back to our own check list
  (GX does not return results in suite order).
* Expectations on a column that does not exist are *not* sent to GX (GX would raise a metric error per
  expectation); the column's ``expect_column_to_exist`` fails instead and names the skipped checks.
* ``dtypes`` are checked with ``pandas.api.types`` rather than GX's ``expect_column_values_to_be_in_type_list``:
  in GX 1.24 with pandas 3 that expectation observes ``int64`` for an ``Int64`` column and still fails, sees
  ``str`` / ``Timestamp`` / ``CategoricalDtypeType`` for string / tz-aware / categorical columns, and checks
  object columns element by element. These results carry ``"engine": "pandas"``.
* ``to_dict()`` is deterministic (no run ids or run times). Run metadata lives in ``QualityResult.run_info``
  and in ``gx_result`` (GX's own ``to_json_dict()``), neither of which is part of ``to_dict()``.
  Note: when freshness uses the wall clock (no ``as_of`` given anywhere), the freshness cut-off and the
  age in its message depend on the clock.
"""

from __future__ import annotations

import datetime as _dt
import html as _html
import json
import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

__all__ = ["QualityResult", "validate_dataset", "render_html", "DTYPE_FAMILIES"]

DTYPE_FAMILIES = ("numeric", "integer", "string", "datetime", "boolean")
_TASK_TYPES = ("binary", "multiclass", "regression")
# the spec model spells task types out; both spellings are accepted
_TASK_ALIASES = {
    "binary_classification": "binary",
    "multiclass_classification": "multiclass",
    "regression": "regression",
    "binary": "binary",
    "multiclass": "multiclass",
}
_MAX_EXAMPLES = 5


# --------------------------------------------------------------------------------------------- JSON helpers
def _jsonable(obj: Any) -> Any:
    """Convert GX / numpy / pandas values into strict-JSON-safe Python values (NaN -> None)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if obj is pd.NaT:
        return None
    if isinstance(obj, (pd.Timestamp, _dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, (pd.Timedelta, _dt.timedelta)):
        return str(obj)
    try:
        if pd.isna(obj):
            return None
    except (TypeError, ValueError):
        pass
    return str(obj)


def _fmt_pct(p: float | None) -> str:
    if p is None:
        return "?%"
    if 0 < p < 0.01:
        return "<0.01%"
    return f"{p:.3g}%"


def _plural(n: Any, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _fmt_examples(values: list | None) -> str:
    if not values:
        return ""
    seen: list = []
    for v in values:
        v = _jsonable(v)
        if v not in seen:
            seen.append(v)
        if len(seen) >= _MAX_EXAMPLES:
            break
    return "; e.g. " + ", ".join(repr(v) for v in seen)


def _fmt_values(values: list) -> str:
    shown = [repr(_jsonable(v)) for v in values[:20]]
    more = f", … ({len(values)} values)" if len(values) > 20 else ""
    return "[" + ", ".join(shown) + more + "]"


def _fmt_ts(value: Any) -> str:
    if value is None:
        return "None"
    try:
        return pd.Timestamp(value).isoformat()
    except (TypeError, ValueError):
        return str(value)


# --------------------------------------------------------------------------------------------- result types
@dataclass
class QualityResult:
    """Outcome of :func:`validate_dataset`.

    ``results`` items: ``{"expectation", "column", "success", "observed", "message", "check"}`` (+ ``"engine"``
    for checks not run by GX). ``gx_result`` is GX's raw ``to_json_dict()`` (made strict-JSON-safe); it contains
    run ids and times and is therefore kept out of :meth:`to_dict`.
    """

    source: str
    success: bool
    results: list[dict]
    statistics: dict
    gx_result: dict = field(repr=False)
    skipped: list[dict] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    run_info: dict = field(default_factory=dict)

    def failures(self) -> list[str]:
        return [r["message"] for r in self.results if not r["success"]]

    def to_dict(self) -> dict:
        """JSON-safe and deterministic (same data and arguments -> identical ``json.dumps(sort_keys=True)``)."""
        return _jsonable(
            {
                "source": self.source,
                "success": self.success,
                "statistics": self.statistics,
                "results": self.results,
                "skipped": self.skipped,
                "parameters": self.parameters,
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_markdown(self, max_rows: int = 50) -> str:
        s = self.statistics
        status = "PASSED" if self.success else "FAILED"
        lines = [
            f"**{self.source}**: data quality {status} — {s['successful']}/{s['evaluated']} expectations met"
            + (f", {s['failed']} failed" if s["failed"] else ""),
            "",
            "| | expectation | column | result |",
            "|---|---|---|---|",
        ]
        # failures first, then passes, each in check order
        ordered = [r for r in self.results if not r["success"]] + [r for r in self.results if r["success"]]
        for r in ordered[:max_rows]:
            mark = "✅" if r["success"] else "❌"
            col = f"`{r['column']}`" if r["column"] is not None else ""
            msg = r["message"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {mark} | {r['expectation']} | {col} | {msg} |")
        if len(ordered) > max_rows:
            lines.append(f"| | … | | {len(ordered) - max_rows} more results |")
        return "\n".join(lines)


def render_html(result: QualityResult) -> str:
    """Small self-contained HTML page of a :class:`QualityResult` (no external assets)."""
    esc = _html.escape
    s = result.statistics
    status = "PASSED" if result.success else "FAILED"
    rows = []
    for r in result.results:
        cls = "ok" if r["success"] else "fail"
        observed = json.dumps(_jsonable(r["observed"]), sort_keys=True, default=str)
        if len(observed) > 400:
            observed = observed[:400] + "…"
        rows.append(
            f'<tr class="{cls}"><td>{"✔" if r["success"] else "✘"}</td><td>{esc(r["expectation"])}</td>'
            f'<td>{esc(str(r["column"]) if r["column"] is not None else "")}</td><td>{esc(r["message"])}</td>'
            f"<td><code>{esc(observed)}</code></td></tr>"
        )
    skipped = ""
    if result.skipped:
        items = "".join(
            f"<li>{esc(k['expectation'])} on <code>{esc(str(k['column']))}</code>: {esc(k['reason'])}</li>"
            for k in result.skipped
        )
        skipped = f"<h2>Skipped checks</h2><ul>{items}</ul>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Data quality: {esc(result.source)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse;width:100%;font-size:14px}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f3f3f3}} tr.fail td{{background:#fde8e8}} tr.ok td:first-child{{color:#2a7a2a}}
tr.fail td:first-child{{color:#b00020;font-weight:bold}} code{{font-size:12px;word-break:break-all}}
.status-PASSED{{color:#2a7a2a}} .status-FAILED{{color:#b00020}}
</style></head><body>
<h1>Data quality: {esc(result.source)} — <span class="status-{status}">{status}</span></h1>
<p>{s['evaluated']} expectations evaluated, {s['successful']} met, {s['failed']} failed.</p>
<table><thead><tr><th></th><th>expectation</th><th>column</th><th>result</th><th>observed</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
{skipped}
</body></html>
"""


# --------------------------------------------------------------------------------------------- checks
@dataclass
class _Check:
    check_id: str
    check: str  # semantic group: schema, dtype, label_domain, row_count, not_null, ...
    column: str | None
    expectation: Any  # a GX Expectation, or None for pandas-evaluated checks
    describe: Callable[[bool, dict, dict], tuple[dict, str]]  # (success, gx result, exception) -> (observed, msg)
    expectation_type: str = ""
    precomputed: bool | None = None  # outcome of a pandas-evaluated check (expectation is None)


def _dtype_family_ok(series: pd.Series, family: str) -> bool:
    dt = series.dtype
    if family == "numeric":
        return pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt)
    if family == "integer":
        return pd.api.types.is_integer_dtype(dt) and not pd.api.types.is_bool_dtype(dt)
    if family == "boolean":
        return pd.api.types.is_bool_dtype(dt)
    if family == "datetime":
        return pd.api.types.is_datetime64_any_dtype(dt)
    if family == "string":
        if pd.api.types.is_string_dtype(dt) and not isinstance(dt, pd.CategoricalDtype):
            if dt == object:
                # object columns: accept when all non-null values are str
                non_null = series.dropna()
                return bool(non_null.map(type).eq(str).all()) if len(non_null) else True
            return True
        if isinstance(dt, pd.CategoricalDtype):
            return pd.api.types.is_string_dtype(dt.categories.dtype)
        return False
    raise ValueError(f"unknown dtype family {family!r}; expected one of {DTYPE_FAMILIES}")


def _to_utc_timestamp(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        return ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


def _gx_context():
    cfg = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=cfg)


def validate_dataset(
    df: pd.DataFrame,
    *,
    expectations: dict,
    id_column: str,
    label_column: str,
    timestamp_column: str | None,
    feature_columns: list[str],
    task_type: str,
    label_values: list | None = None,
    source: str = "dataset",
    as_of: _dt.datetime | None = None,
) -> QualityResult:
    """Validate ``df`` against the spec's ``expectations`` section with Great Expectations 1.x.

    Always checks: required columns exist (id, label, timestamp, features), dtypes (if given), label domain,
    row count, non-null id/label/timestamp (+ ``not_null``), ``max_null_fraction``, ``ranges``,
    ``allowed_values``, uniqueness of the id (+ ``unique``), and freshness (if ``freshness`` is given).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    if task_type not in _TASK_ALIASES:
        raise ValueError(f"{source}: unknown task_type {task_type!r}; expected one of {sorted(_TASK_ALIASES)}")
    task_type = _TASK_ALIASES[task_type]
    spec = dict(expectations or {})
    if label_values is None and spec.get("label_values") is not None:
        label_values = list(spec["label_values"])
    present = set(df.columns)
    checks: list[_Check] = []
    skipped: list[dict] = []
    missing_reported: dict[str, _Check] = {}
    counter = iter(range(10**9))

    def new_id(kind: str, column: str | None) -> str:
        return f"{next(counter):03d}:{kind}:{column if column is not None else ''}"

    # ---------------------------------------------------------------- schema: column existence
    roles: dict[str, list[str]] = {}

    def add_role(col: str, role: str) -> None:
        roles.setdefault(col, [])
        if role not in roles[col]:
            roles[col].append(role)

    add_role(id_column, "id column")
    add_role(label_column, "label column")
    if timestamp_column:
        add_role(timestamp_column, "timestamp column")
    for c in feature_columns or []:
        add_role(c, "feature column")
    # columns referenced only by spec sections
    referenced: list[str] = []
    for key in ("not_null", "unique"):
        referenced += list(spec.get(key) or [])
    for key in ("max_null_fraction", "ranges", "allowed_values", "dtypes"):
        referenced += list((spec.get(key) or {}).keys())
    for c in referenced:
        if c not in roles:
            add_role(c, "column referenced by the expectations spec")

    def exist_describe(col: str, role: str):
        def d(ok: bool, res: dict, exc: dict):
            if ok:
                return {"exists": True}, f"{source}: {role} '{col}' exists"
            skipped_here = [s["expectation"] for s in skipped if s["column"] == col]
            extra = f"; {len(skipped_here)} other check(s) on it were skipped" if skipped_here else ""
            return {"exists": False}, f"{source}: {role} '{col}' is missing from the data{extra}"

        return d

    for col, rs in roles.items():
        role = " / ".join(rs)
        ck = _Check(new_id("schema", col), "schema", col, gxe.ExpectColumnToExist(column=col), exist_describe(col, role))
        checks.append(ck)
        if col not in present:
            missing_reported[col] = ck

    def column_ok(col: str, expectation_type: str) -> bool:
        if col in present:
            return True
        skipped.append(
            {"expectation": expectation_type, "column": col, "reason": f"column '{col}' is missing"}
        )
        return False

    # ---------------------------------------------------------------- dtypes (pandas-evaluated)
    for col, family in sorted((spec.get("dtypes") or {}).items()):
        if family not in DTYPE_FAMILIES:
            raise ValueError(f"{source}: dtypes.{col}: unknown family {family!r}; expected one of {DTYPE_FAMILIES}")
        if not column_ok(col, "expect_column_dtype_family"):
            continue
        ok = _dtype_family_ok(df[col], family)
        observed = {"dtype": str(df[col].dtype), "expected": family}
        msg = (
            f"{source}: column '{col}' has dtype {df[col].dtype} ({family} as expected)"
            if ok
            else f"{source}: column '{col}' has dtype {df[col].dtype}; expected {family}"
        )
        checks.append(
            _Check(
                new_id("dtype", col), "dtype", col, None,
                lambda *_, o=observed, m=msg: (o, m),
                expectation_type="expect_column_dtype_family",
                precomputed=ok,
            )
        )

    # ---------------------------------------------------------------- row count
    min_rows = spec.get("min_rows")
    min_rows = 1 if min_rows is None else int(min_rows)
    max_rows = spec.get("max_rows")
    max_rows = None if max_rows is None else int(max_rows)

    def rows_describe(ok: bool, res: dict, exc: dict):
        n = res.get("observed_value")
        bound = f"at least {min_rows}" + (f" and at most {max_rows}" if max_rows is not None else "")
        if ok:
            return {"rows": n}, f"{source}: has {n} rows ({bound} required)"
        return {"rows": n}, f"{source}: has {n} rows; expected {bound}"

    checks.append(
        _Check(
            new_id("row_count", None), "row_count", None,
            gxe.ExpectTableRowCountToBeBetween(min_value=min_rows, max_value=max_rows),
            rows_describe,
        )
    )

    # ---------------------------------------------------------------- map-expectation message helper
    def map_observed(res: dict) -> dict:
        keys = ("element_count", "unexpected_count", "unexpected_percent", "missing_count", "missing_percent")
        obs = {k: res.get(k) for k in keys if k in res}
        if "partial_unexpected_list" in res:
            examples: list = []
            for v in _jsonable(res["partial_unexpected_list"]):
                if v not in examples:
                    examples.append(v)
            obs["unexpected_examples"] = examples[:_MAX_EXAMPLES]
        return obs

    # ---------------------------------------------------------------- nulls
    required_non_null = [id_column, label_column] + ([timestamp_column] if timestamp_column else [])
    for c in spec.get("not_null") or []:
        if c not in required_non_null:
            required_non_null.append(c)

    def not_null_describe(col: str):
        def d(ok: bool, res: dict, exc: dict):
            obs = map_observed(res)
            n, p = res.get("unexpected_count", 0), res.get("unexpected_percent")
            if ok:
                return obs, f"{source}: column '{col}' has no null values"
            return obs, f"{source}: column '{col}' has {_plural(n, 'null value')} ({_fmt_pct(p)}); expected none"

        return d

    for col in required_non_null:
        if column_ok(col, "expect_column_values_to_not_be_null"):
            checks.append(
                _Check(new_id("not_null", col), "not_null", col,
                       gxe.ExpectColumnValuesToNotBeNull(column=col), not_null_describe(col))
            )

    def null_fraction_describe(col: str, frac: float):
        def d(ok: bool, res: dict, exc: dict):
            obs = map_observed(res)
            obs["max_null_fraction"] = frac
            n, p = res.get("unexpected_count", 0), res.get("unexpected_percent")
            verdict = "within" if ok else "exceeds"
            return obs, (
                f"{source}: column '{col}' has {_plural(n, 'null value')} ({_fmt_pct(p)}); "
                f"{verdict} the allowed {_fmt_pct(frac * 100)}"
            )

        return d

    for col, frac in sorted((spec.get("max_null_fraction") or {}).items()):
        frac = float(frac)
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"{source}: max_null_fraction.{col} must be within [0, 1], got {frac}")
        if column_ok(col, "expect_column_values_to_not_be_null"):
            checks.append(
                _Check(new_id("null_fraction", col), "null_fraction", col,
                       gxe.ExpectColumnValuesToNotBeNull(column=col, mostly=1.0 - frac),
                       null_fraction_describe(col, frac))
            )

    # ---------------------------------------------------------------- ranges
    def range_describe(col: str, lo, hi, what: str = "value"):
        def d(ok: bool, res: dict, exc: dict):
            obs = map_observed(res)
            obs.update({"min": lo, "max": hi})
            bound = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            if ok:
                return obs, f"{source}: all {what}s of column '{col}' are within {bound}"
            n, p = res.get("unexpected_count", 0), res.get("unexpected_percent")
            return obs, (
                f"{source}: column '{col}' has {_plural(n, what)} ({_fmt_pct(p)}) outside {bound}"
                f"{_fmt_examples(res.get('partial_unexpected_list'))}"
            )

        return d

    for col, rng in sorted((spec.get("ranges") or {}).items()):
        rng = dict(rng or {})
        lo, hi = rng.get("min"), rng.get("max")
        if lo is None and hi is None:
            continue
        if column_ok(col, "expect_column_values_to_be_between"):
            checks.append(
                _Check(new_id("range", col), "range", col,
                       gxe.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi),
                       range_describe(col, lo, hi))
            )

    # ---------------------------------------------------------------- allowed values
    def in_set_describe(col: str, values: list, what: str):
        def d(ok: bool, res: dict, exc: dict):
            obs = map_observed(res)
            if ok:
                return obs, f"{source}: all values of {what} '{col}' are in {_fmt_values(values)}"
            n, p = res.get("unexpected_count", 0), res.get("unexpected_percent")
            return obs, (
                f"{source}: {what} '{col}' has {_plural(n, 'value')} ({_fmt_pct(p)}) not in {_fmt_values(values)}"
                f"{_fmt_examples(res.get('partial_unexpected_list'))}"
            )

        return d

    for col, values in sorted((spec.get("allowed_values") or {}).items()):
        values = list(values)
        if column_ok(col, "expect_column_values_to_be_in_set"):
            checks.append(
                _Check(new_id("allowed_values", col), "allowed_values", col,
                       gxe.ExpectColumnValuesToBeInSet(column=col, value_set=values),
                       in_set_describe(col, values, "column"))
            )

    # ---------------------------------------------------------------- label domain
    if task_type in ("binary", "multiclass"):
        domain = list(label_values) if label_values is not None else ([0, 1] if task_type == "binary" else None)
        if domain is not None and column_ok(label_column, "expect_column_values_to_be_in_set"):
            checks.append(
                _Check(new_id("label_domain", label_column), "label_domain", label_column,
                       gxe.ExpectColumnValuesToBeInSet(column=label_column, value_set=domain),
                       in_set_describe(label_column, domain, f"{task_type} label"))
            )
    else:  # regression: numeric and finite (nulls are covered by the not-null check)
        if column_ok(label_column, "expect_column_values_to_be_between"):
            if _dtype_family_ok(df[label_column], "numeric"):
                big = float(np.finfo(np.float64).max)

                def finite_describe(ok: bool, res: dict, exc: dict, col=label_column):
                    obs = map_observed(res)
                    if ok:
                        return obs, f"{source}: all values of regression label '{col}' are finite"
                    n, p = res.get("unexpected_count", 0), res.get("unexpected_percent")
                    return obs, (
                        f"{source}: regression label '{col}' has {_plural(n, 'non-finite value')} ({_fmt_pct(p)}); "
                        f"expected finite numbers{_fmt_examples(res.get('partial_unexpected_list'))}"
                    )

                checks.append(
                    _Check(new_id("label_domain", label_column), "label_domain", label_column,
                           gxe.ExpectColumnValuesToBeBetween(column=label_column, min_value=-big, max_value=big),
                           finite_describe)
                )
            else:
                dt = df[label_column].dtype
                ck = _Check(
                    new_id("label_domain", label_column), "label_domain", label_column, None,
                    lambda *_ , dt=dt: ({"dtype": str(dt), "expected": "numeric"},
                                        f"{source}: regression label '{label_column}' has dtype {dt}; expected numeric"),
                    expectation_type="expect_column_dtype_family",
                    precomputed=False,
                )
                checks.append(ck)

    # ---------------------------------------------------------------- uniqueness
    unique_cols = [id_column] + [c for c in (spec.get("unique") or []) if c != id_column]

    def unique_describe(col: str):
        def d(ok: bool, res: dict, exc: dict):
            obs = map_observed(res)
            if ok:
                return obs, f"{source}: values of column '{col}' are unique"
            n, p = res.get("unexpected_count", 0), res.get("unexpected_percent")
            return obs, (
                f"{source}: column '{col}' has {_plural(n, 'row')} ({_fmt_pct(p)}) sharing a duplicated value; expected unique"
                f"{_fmt_examples(res.get('partial_unexpected_list'))}"
            )

        return d

    for col in unique_cols:
        if column_ok(col, "expect_column_values_to_be_unique"):
            checks.append(
                _Check(new_id("unique", col), "unique", col,
                       gxe.ExpectColumnValuesToBeUnique(column=col), unique_describe(col))
            )

    # ---------------------------------------------------------------- freshness
    freshness = spec.get("freshness")
    data = df
    run_info: dict = {}
    parameters: dict = {
        "task_type": task_type,
        "id_column": id_column,
        "label_column": label_column,
        "timestamp_column": timestamp_column,
        "feature_columns": list(feature_columns or []),
        "min_rows": min_rows,
        "max_rows": max_rows,
    }
    if freshness:
        freshness = dict(freshness)
        max_age_days = freshness.get("max_age_days")
        if max_age_days is None:
            raise ValueError(f"{source}: freshness.max_age_days is required when freshness is given")
        if not timestamp_column:
            raise ValueError(f"{source}: freshness requires a timestamp_column")
        spec_as_of = freshness.get("as_of")
        if spec_as_of is not None:
            ref, ref_src = _to_utc_timestamp(spec_as_of), "spec"
        elif as_of is not None:
            ref, ref_src = _to_utc_timestamp(as_of), "argument"
        else:
            ref, ref_src = pd.Timestamp.now(tz="UTC"), "clock"
            run_info["freshness_as_of"] = ref.isoformat()
        cutoff_utc = ref - pd.Timedelta(days=float(max_age_days))
        parameters["freshness"] = {
            "max_age_days": max_age_days,
            "as_of": ref.isoformat() if ref_src != "clock" else "now (UTC)",
        }
        if column_ok(timestamp_column, "expect_column_max_to_be_between"):
            col = timestamp_column
            ser = df[col]
            note = ""
            if not pd.api.types.is_datetime64_any_dtype(ser.dtype):
                # string / object timestamps: parse for this check only (shallow copy of the frame)
                parsed = pd.to_datetime(ser, errors="coerce", utc=True)
                data = df.assign(**{col: parsed})
                ser = parsed
                note = f" (parsed from {df[col].dtype})"
            tz = getattr(ser.dtype, "tz", None)
            # naive timestamps are taken to be UTC
            cutoff = cutoff_utc.tz_convert(tz) if tz is not None else cutoff_utc.tz_localize(None)
            unit = getattr(ser.dtype, "unit", None)
            if unit:
                cutoff = cutoff.as_unit(unit)

            def fresh_describe(ok: bool, res: dict, exc: dict, col=col, note=note):
                newest = res.get("observed_value")
                obs = {"newest": _jsonable(newest), "max_age_days": max_age_days}
                if ref_src != "clock":
                    obs["as_of"] = ref.isoformat()
                    obs["cutoff"] = cutoff_utc.isoformat()
                if newest is None or (not isinstance(newest, str) and pd.isna(newest)):
                    return obs, f"{source}: timestamp column '{col}'{note} has no valid timestamps; cannot check freshness"
                try:
                    age = (ref - _to_utc_timestamp(newest)) / pd.Timedelta(days=1)
                    age_s = f"{age:.1f} days before as_of {ref.isoformat()}"
                except (TypeError, ValueError):
                    age_s = f"as_of {ref.isoformat()}"
                if ok:
                    return obs, (f"{source}: newest '{col}'{note} is {_fmt_ts(newest)} ({age_s}); "
                                 f"within {max_age_days} days")
                return obs, (f"{source}: data is stale: newest '{col}'{note} is {_fmt_ts(newest)} ({age_s}); "
                             f"expected within {max_age_days} days")

            checks.append(
                _Check(new_id("freshness", col), "freshness", col,
                       gxe.ExpectColumnMaxToBeBetween(column=col, min_value=cutoff.to_pydatetime()),
                       fresh_describe)
            )

    # ---------------------------------------------------------------- run GX
    context = _gx_context()
    suffix = uuid.uuid4().hex[:8]
    ds = context.data_sources.add_pandas(f"eval_pipeline_{suffix}")
    batch_def = ds.add_dataframe_asset(f"dataset_{suffix}").add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(name=f"quality_{suffix}", meta={"source": source})
    gx_checks = [c for c in checks if c.expectation is not None]
    for c in gx_checks:
        c.expectation.meta = {"check_id": c.check_id}
        suite.add_expectation(c.expectation)
        c.expectation_type = c.expectation.expectation_type
    suite = context.suites.add(suite)
    vd = gx.ValidationDefinition(name=f"validate_{suffix}", data=batch_def, suite=suite)
    gx_run = vd.run(batch_parameters={"dataframe": data}, result_format="SUMMARY")
    by_id = {}
    for er in gx_run.results:
        meta = er.expectation_config.meta or {}
        by_id[meta.get("check_id")] = er

    results: list[dict] = []
    for c in checks:
        if c.expectation is None:
            ok = bool(c.precomputed)
            observed, message = c.describe(ok, {}, {})
        else:
            er = by_id.get(c.check_id)
            if er is None:  # should not happen
                ok, observed, message = False, {}, f"{source}: GX returned no result for {c.expectation_type}"
            else:
                ok = bool(er.success)
                exc = er.exception_info or {}
                raised = _exception_message(exc)
                if raised:
                    ok = False
                    observed = {"error": raised}
                    where = f" on column '{c.column}'" if c.column else ""
                    message = f"{source}: {c.expectation_type}{where} could not be evaluated: {raised}"
                else:
                    observed, message = c.describe(ok, dict(er.result or {}), exc)
        entry = {
            "expectation": c.expectation_type,
            "check": c.check,
            "column": c.column,
            "success": ok,
            "observed": _jsonable(observed),
            "message": message,
        }
        if c.expectation is None:
            entry["engine"] = "pandas"
        results.append(entry)

    n_ok = sum(r["success"] for r in results)
    statistics = {
        "evaluated": len(results),
        "successful": n_ok,
        "failed": len(results) - n_ok,
        # the same counts under GX's key names
        "evaluated_expectations": len(results),
        "successful_expectations": n_ok,
        "unsuccessful_expectations": len(results) - n_ok,
        "success_percent": round(100.0 * n_ok / len(results), 4) if results else None,
    }
    gx_dict = _jsonable(gx_run.to_json_dict())
    run_info.update(
        {
            "gx_validation_id": (gx_dict.get("meta") or {}).get("validation_id"),
            "gx_run_id": (gx_dict.get("meta") or {}).get("run_id"),
            "great_expectations_version": gx.__version__,
        }
    )
    return QualityResult(
        source=source,
        success=statistics["failed"] == 0,
        results=results,
        statistics=statistics,
        gx_result=gx_dict,
        skipped=skipped,
        parameters=parameters,
        run_info=run_info,
    )


def _exception_message(exc: Any) -> str | None:
    """GX puts either {'raised_exception': ..., 'exception_message': ...} or {metric_id: {...}} here."""
    if not isinstance(exc, dict) or not exc:
        return None
    if "raised_exception" in exc:
        return exc.get("exception_message") if exc.get("raised_exception") else None
    for v in exc.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return v.get("exception_message") or "unknown error"
    return None
