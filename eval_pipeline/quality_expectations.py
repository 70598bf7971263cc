"""The data-quality checks: one builder per expectation kind, on Great Expectations' own expectation classes.

A builder reads :class:`QualityInputs` (the frame, the typed ``expectations`` section and the column roles) and
returns the :class:`Check` objects of its kind. :data:`EXPECTATION_BUILDERS` lists them in the order their results
are reported; adding an expectation kind is adding a builder there.

Each check carries a ``describe(success, gx_result) -> (observed, message)`` function that turns GX's result into
what a person reads; messages leave out the dataset's name (the caller prefixes it). ``observed`` holds what the
DATA showed (row count, null fraction, unexpected count and examples, the column's min and max, the newest timestamp
and its age, the dtype), never the spec's bounds: those are in the message and the result's ``parameters``.

Two rules hold for every kind:

* A check on a column that is not in the frame is *not* sent to GX (GX would raise a metric error per
  expectation); it is recorded in ``skipped`` and the column's ``expect_column_to_exist`` check names it.
* ``dtypes`` are checked with ``pandas.api.types`` rather than GX's ``expect_column_values_to_be_in_type_list``:
  in GX 1.24 with pandas 3 that expectation observes ``int64`` for an ``Int64`` column and still fails, sees
  ``str`` / ``Timestamp`` / ``CategoricalDtypeType`` for string / tz-aware / categorical columns, and checks
  object columns element by element. These checks have no GX expectation (``expectation is None``).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from .jsonsafe import to_jsonsafe
from .spec import EvalSpec, ExpectationsSpec


class _LazyGXE:
    """``great_expectations.expectations``, imported on first use: the import takes 3-6 s, and a pipeline step that
    finds its quality result already there must not pay it."""

    def __getattr__(self, name: str) -> Any:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations.expectations as module

        return getattr(module, name)


gxe = _LazyGXE()

__all__ = ["ColumnRoles", "QualityInputs", "Check", "EXPECTATION_BUILDERS", "DTYPE_FAMILIES", "dtype_family_ok"]

DTYPE_FAMILIES = ("numeric", "integer", "string", "datetime", "boolean")
DTYPE_EXPECTATION = "expect_column_dtype_family"  # the name pandas-evaluated dtype checks report under
# the spec spells task types out; the short spellings are accepted too
_TASK_ALIASES = {
    "binary_classification": "binary",
    "multiclass_classification": "multiclass",
    "regression": "regression",
    "ranking": "ranking",
    "binary": "binary",
    "multiclass": "multiclass",
}
_MAX_EXAMPLES = 5

Describe = Callable[[bool, dict], tuple[dict, str]]


# --------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ColumnRoles:
    """What the columns are (the spec's ``columns`` section), the task type and the label's allowed values."""

    id: str
    label: str
    timestamp: str | None
    features: tuple[str, ...]
    task: str  # binary, multiclass or regression
    label_values: list | None = None

    @classmethod
    def create(cls, *, id: str, label: str, timestamp: str | None, features, task_type: str,
               label_values=None, source: str = "dataset") -> ColumnRoles:
        if task_type not in _TASK_ALIASES:
            raise ValueError(f"{source}: unknown task_type {task_type!r}; expected one of {sorted(_TASK_ALIASES)}")
        values = None if label_values is None else list(label_values)
        return cls(id, label, timestamp, tuple(features or ()), _TASK_ALIASES[task_type], values)

    @classmethod
    def from_spec(cls, spec: EvalSpec) -> ColumnRoles:
        c = spec.columns
        return cls.create(id=c.id, label=c.label, timestamp=c.timestamp, features=c.features,
                          task_type=spec.task_type, label_values=spec.expectations.label_values)


@dataclass(frozen=True)
class FreshnessReference:
    """The time freshness is judged at (UTC), where it came from (``spec``, ``argument`` or ``clock``) and the
    cut-off: the newest timestamp must not be older than ``as_of - max_age_days``."""

    as_of: pd.Timestamp
    origin: str
    max_age_days: float

    @property
    def cutoff(self) -> pd.Timestamp:
        return self.as_of - pd.Timedelta(days=float(self.max_age_days))


@dataclass
class QualityInputs:
    """What the builders read; ``skipped`` collects the checks left out because their column is missing."""

    frame: pd.DataFrame
    expectations: ExpectationsSpec
    roles: ColumnRoles
    freshness: FreshnessReference | None = None
    skipped: list[dict] = field(default_factory=list)

    @classmethod
    def create(cls, frame: pd.DataFrame, expectations: ExpectationsSpec, roles: ColumnRoles,
               as_of: _dt.datetime | None, source: str) -> QualityInputs:
        fresh = expectations.freshness
        if fresh is None:
            return cls(frame, expectations, roles)
        if not roles.timestamp:
            raise ValueError(f"{source}: freshness requires a timestamp_column")
        # the spec's as_of wins over the argument; the clock is read once, here
        if fresh.as_of is not None:
            ref = FreshnessReference(_to_utc_timestamp(fresh.as_of), "spec", fresh.max_age_days)
        elif as_of is not None:
            ref = FreshnessReference(_to_utc_timestamp(as_of), "argument", fresh.max_age_days)
        else:
            ref = FreshnessReference(pd.Timestamp.now(tz="UTC"), "clock", fresh.max_age_days)
        return cls(frame, expectations, roles, ref)

    def has_column(self, column: str, expectation_type: str) -> bool:
        """True if ``column`` is in the frame; otherwise the check is recorded as skipped."""
        if column in self.frame.columns:
            return True
        self.skipped.append({"expectation": expectation_type, "column": column,
                             "reason": f"column '{column}' is missing"})
        return False

    def on_column(self, kind: str, expectation: Any, describe: Describe) -> list[Check]:
        """The GX check of ``expectation`` on its column, or none (recorded as skipped) if the column is missing."""
        column = expectation.column
        if not self.has_column(column, expectation.expectation_type):
            return []
        return [Check(kind, column, expectation, describe)]


@dataclass
class Check:
    """One check: a GX expectation, or (``expectation is None``) an outcome computed with pandas (``passed``)."""

    kind: str  # what it checks: schema, dtype, label_domain, row_count, not_null, ...
    column: str | None
    expectation: Any  # a GX Expectation, or None
    describe: Describe
    passed: bool | None = None
    column_data: pd.Series | None = None  # what GX sees as ``column`` instead of the frame's own (parsed values)
    # what the builder measured with pandas (a range's extent, a dtype); ``describe`` reads them from its result
    # argument, so a batched run can pass the facts merged over all batches instead
    facts: dict = field(default_factory=dict)

    @property
    def expectation_type(self) -> str:
        return self.expectation.expectation_type if self.expectation is not None else DTYPE_EXPECTATION


def _dtype_check(kind: str, column: str, passed: bool, dtype: Any, message: Callable[[str, bool], str]) -> Check:
    """A check evaluated with pandas on a column's dtype; ``message(dtype, passed)`` words it."""
    def describe(ok: bool, res: dict) -> tuple[dict, str]:
        return {"dtype": res["dtype"]}, message(res["dtype"], ok)

    return Check(kind, column, None, describe, passed=passed, facts={"dtype": str(dtype)})


# --------------------------------------------------------------------------------------------- message helpers
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
        v = to_jsonsafe(v)
        if v not in seen:
            seen.append(v)
        if len(seen) >= _MAX_EXAMPLES:
            break
    return "; e.g. " + ", ".join(repr(v) for v in seen)


def _fmt_values(values: list) -> str:
    shown = [repr(to_jsonsafe(v)) for v in values[:20]]
    more = f", … ({len(values)} values)" if len(values) > 20 else ""
    return "[" + ", ".join(shown) + more + "]"


def _fmt_ts(value: Any) -> str:
    if value is None:
        return "None"
    try:
        return pd.Timestamp(value).isoformat()
    except (TypeError, ValueError):
        return str(value)


def _to_utc_timestamp(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        return ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


def _map_observed(res: dict) -> dict:
    """The counts of a column-map expectation's result, and up to five distinct unexpected values."""
    keys = ("element_count", "unexpected_count", "unexpected_percent", "missing_count", "missing_percent")
    obs = {k: res.get(k) for k in keys if k in res}
    if "partial_unexpected_list" in res:
        examples: list = []
        for v in to_jsonsafe(res["partial_unexpected_list"]):
            if v not in examples:
                examples.append(v)
        obs["unexpected_examples"] = examples[:_MAX_EXAMPLES]
    return obs


def _null_share(res: dict) -> dict:
    """The observed null fraction of a not-null expectation's column (None for an empty column)."""
    n, total = res.get("unexpected_count"), res.get("element_count")
    return {"null_fraction": n / total if n is not None and total else None}


def _unexpected(subject: str, noun: str, ok: str, problem: str, *, examples: bool = True,
                extra: dict | Callable[[dict], dict] | None = None) -> Describe:
    """Describe a column-map expectation: ``ok`` when it holds, else
    ``"<subject> has <n nouns> (<percent>)<problem>[; e.g. <examples>]"``. ``extra``: more observed values (a dict,
    or a function of GX's result)."""

    def describe(success: bool, res: dict) -> tuple[dict, str]:
        observed = {**_map_observed(res), **((extra(res) if callable(extra) else extra) or {})}
        if success:
            return observed, ok
        n, p = res.get("unexpected_count", 0), res.get("unexpected_percent")
        shown = _fmt_examples(res.get("partial_unexpected_list")) if examples else ""
        return observed, f"{subject} has {_plural(n, noun)} ({_fmt_pct(p)}){problem}{shown}"

    return describe


def _in_set(column: str, values: list, what: str) -> Describe:
    return _unexpected(f"{what} '{column}'", "value", f"all values of {what} '{column}' are in {_fmt_values(values)}",
                       f" not in {_fmt_values(values)}")


# --------------------------------------------------------------------------------------------- dtypes
def dtype_family_ok(series: pd.Series, family: str) -> bool:
    """Whether ``series`` has a dtype of ``family`` (one of :data:`DTYPE_FAMILIES`); booleans are not numbers, and
    object columns are strings when all their non-null values are ``str``."""
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
                non_null = series.dropna()
                return bool(non_null.map(type).eq(str).all()) if len(non_null) else True
            return True
        if isinstance(dt, pd.CategoricalDtype):
            return pd.api.types.is_string_dtype(dt.categories.dtype)
        return False
    raise ValueError(f"unknown dtype family {family!r}; expected one of {DTYPE_FAMILIES}")


# --------------------------------------------------------------------------------------------- builders
def schema_checks(q: QualityInputs) -> list[Check]:
    """Every column the roles or the expectations name exists (each named once, with all its roles)."""
    r, e = q.roles, q.expectations
    named = [(r.id, "id column"), (r.label, "label column")]
    named += [(r.timestamp, "timestamp column")] if r.timestamp else []
    named += [(c, "feature column") for c in r.features]
    roles: dict[str, list[str]] = {}
    for column, role in named:
        if role not in roles.setdefault(column, []):
            roles[column].append(role)
    for column in [*e.not_null, *e.unique, *e.max_null_fraction, *e.ranges, *e.allowed_values, *e.dtypes]:
        roles.setdefault(column, ["column referenced by the expectations spec"])
    return [Check("schema", column, gxe.ExpectColumnToExist(column=column), _exists(column, " / ".join(rs), q.skipped))
            for column, rs in roles.items()]


def _exists(column: str, role: str, skipped: list[dict]) -> Describe:
    def describe(success: bool, res: dict) -> tuple[dict, str]:
        if success:
            return {"exists": True}, f"{role} '{column}' exists"
        n = sum(1 for s in skipped if s["column"] == column)  # read after every builder has run
        extra = f"; {n} other check(s) on it were skipped" if n else ""
        return {"exists": False}, f"{role} '{column}' is missing from the data{extra}"

    return describe


def dtype_checks(q: QualityInputs) -> list[Check]:
    """``dtypes``: each column's dtype is of the family named (checked with pandas, see the module notes)."""
    checks = []
    for column, family in sorted(q.expectations.dtypes.items()):
        if q.has_column(column, DTYPE_EXPECTATION):
            ok = dtype_family_ok(q.frame[column], family)
            checks.append(_dtype_check("dtype", column, ok, q.frame[column].dtype, _dtype_words(column, family)))
    return checks


def _dtype_words(column: str, family: str) -> Callable[[str, bool], str]:
    def message(dtype: str, ok: bool) -> str:
        return f"column '{column}' has dtype {dtype}" + (f" ({family} as expected)" if ok else f"; expected {family}")

    return message


def row_count_checks(q: QualityInputs) -> list[Check]:
    """``min_rows`` (default 1) and ``max_rows``."""
    lo, hi = q.expectations.min_rows, q.expectations.max_rows
    bound = f"at least {lo}" + (f" and at most {hi}" if hi is not None else "")

    def describe(success: bool, res: dict) -> tuple[dict, str]:
        n = res.get("observed_value")
        return {"rows": n}, (f"has {n} rows ({bound} required)" if success else f"has {n} rows; expected {bound}")

    return [Check("row_count", None, gxe.ExpectTableRowCountToBeBetween(min_value=lo, max_value=hi), describe)]


def not_null_checks(q: QualityInputs) -> list[Check]:
    """No nulls in the id, label and timestamp columns, nor in the ``not_null`` columns."""
    r = q.roles
    columns = [r.id, r.label] + ([r.timestamp] if r.timestamp else [])
    columns += [c for c in dict.fromkeys(q.expectations.not_null) if c not in columns]
    return [check for c in columns for check in q.on_column(
        "not_null", gxe.ExpectColumnValuesToNotBeNull(column=c),
        _unexpected(f"column '{c}'", "null value", f"column '{c}' has no null values", "; expected none",
                    examples=False, extra=_null_share))]


def null_fraction_checks(q: QualityInputs) -> list[Check]:
    """``max_null_fraction``: at most that fraction of a column's values are null."""
    return [check for c, frac in sorted(q.expectations.max_null_fraction.items()) for check in q.on_column(
        "null_fraction", gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=1.0 - frac), _null_fraction(c, frac))]


def _null_fraction(column: str, frac: float) -> Describe:
    def describe(success: bool, res: dict) -> tuple[dict, str]:
        observed = {**_map_observed(res), **_null_share(res)}
        n, p = res.get("unexpected_count", 0), res.get("unexpected_percent")
        verdict = "within" if success else "exceeds"
        return observed, (f"column '{column}' has {_plural(n, 'null value')} ({_fmt_pct(p)}); "
                          f"{verdict} the allowed {_fmt_pct(frac * 100)}")

    return describe


def range_checks(q: QualityInputs) -> list[Check]:
    """``ranges``: every value of a column is within ``[min, max]`` (either bound may be left out)."""
    checks = []
    for c, rng in sorted(q.expectations.ranges.items()):
        lo, hi = rng.min, rng.max
        if lo is None and hi is None:
            continue
        bound = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        found = q.on_column("range", gxe.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi),
                            _unexpected(f"column '{c}'", "value", f"all values of column '{c}' are within {bound}",
                                        f" outside {bound}", extra=lambda res: res.get("extent", {})))
        for check in found:
            check.facts = {"extent": _extent(q.frame[c])}
        checks += found
    return checks


def _extent(series: pd.Series) -> dict:
    """The observed min and max of a column's non-null values (GX's map result has only the unexpected ones)."""
    values = series.dropna()
    if values.empty:
        return {"min": None, "max": None}
    try:  # raw values (made JSON-safe with the rest of 'observed'): a batched run merges them
        return {"min": values.min(), "max": values.max()}
    except (TypeError, ValueError):  # values that do not compare (mixed types): GX's counts say the rest
        return {}


def allowed_values_checks(q: QualityInputs) -> list[Check]:
    """``allowed_values``: every value of a column is one of those listed."""
    return [check for c, values in sorted(q.expectations.allowed_values.items()) for check in q.on_column(
        "allowed_values", gxe.ExpectColumnValuesToBeInSet(column=c, value_set=list(values)),
        _in_set(c, list(values), "column"))]


def label_domain_checks(q: QualityInputs) -> list[Check]:
    """Classification labels are in ``label_values`` (binary default ``[0, 1]``); regression labels are finite
    numbers (nulls are the not-null check's business)."""
    r = q.roles
    if r.task == "regression" or (r.task == "ranking" and r.label_values is None):  # graded relevance: numbers
        return _finite_label_checks(q)
    domain = list(r.label_values) if r.label_values is not None else ([0, 1] if r.task == "binary" else None)
    if domain is None:
        return []
    return q.on_column("label_domain", gxe.ExpectColumnValuesToBeInSet(column=r.label, value_set=domain),
                       _in_set(r.label, domain, f"{r.task} label"))


def _finite_label_checks(q: QualityInputs) -> list[Check]:
    column = q.roles.label
    if not q.has_column(column, gxe.ExpectColumnValuesToBeBetween.expectation_type):
        return []
    if not dtype_family_ok(q.frame[column], "numeric"):
        return [_dtype_check("label_domain", column, False, q.frame[column].dtype,
                             lambda dtype, _: f"regression label '{column}' has dtype {dtype}; expected numeric")]
    big = float(np.finfo(np.float64).max)
    subject = f"regression label '{column}'"
    expectation = gxe.ExpectColumnValuesToBeBetween(column=column, min_value=-big, max_value=big)
    return [Check("label_domain", column, expectation, _unexpected(
        subject, "non-finite value", f"all values of {subject} are finite", "; expected finite numbers"))]


def unique_checks(q: QualityInputs) -> list[Check]:
    """The id column's values are unique, and those of the ``unique`` columns."""
    columns = [q.roles.id] + [c for c in q.expectations.unique if c != q.roles.id]
    return [check for c in columns for check in q.on_column(
        "unique", gxe.ExpectColumnValuesToBeUnique(column=c),
        _unexpected(f"column '{c}'", "row", f"values of column '{c}' are unique",
                    " sharing a duplicated value; expected unique"))]


def freshness_checks(q: QualityInputs) -> list[Check]:
    """``freshness``: the newest timestamp is at most ``max_age_days`` old. Naive timestamps are taken to be UTC;
    string timestamps are parsed for this check (and GX sees the parsed column)."""
    ref, column = q.freshness, q.roles.timestamp
    if ref is None or not q.has_column(column, gxe.ExpectColumnMaxToBeBetween.expectation_type):
        return []
    series, note, parsed = q.frame[column], "", None
    if not pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = parsed = pd.to_datetime(series, errors="coerce", utc=True)
        note = f" (parsed from {q.frame[column].dtype})"
    tz = getattr(series.dtype, "tz", None)
    cutoff = ref.cutoff.tz_convert(tz) if tz is not None else ref.cutoff.tz_localize(None)
    unit = getattr(series.dtype, "unit", None)
    if unit:
        cutoff = cutoff.as_unit(unit)
    expectation = gxe.ExpectColumnMaxToBeBetween(column=column, min_value=cutoff.to_pydatetime())
    return [Check("freshness", column, expectation, _fresh(column, note, ref), column_data=parsed)]


def _fresh(column: str, note: str, ref: FreshnessReference) -> Describe:
    def describe(success: bool, res: dict) -> tuple[dict, str]:
        newest = res.get("observed_value")
        observed = {"newest": to_jsonsafe(newest)}  # the reference time and the allowed age are in parameters
        if newest is None or (not isinstance(newest, str) and pd.isna(newest)):
            return observed, f"timestamp column '{column}'{note} has no valid timestamps; cannot check freshness"
        try:
            age = (ref.as_of - _to_utc_timestamp(newest)) / pd.Timedelta(days=1)
            age_s = f"{age:.1f} days before as_of {ref.as_of.isoformat()}"
            observed["age_days"] = round(float(age), 6)
        except (TypeError, ValueError):
            age_s = f"as_of {ref.as_of.isoformat()}"
        newest_s = f"newest '{column}'{note} is {_fmt_ts(newest)} ({age_s})"
        if success:
            return observed, f"{newest_s}; within {ref.max_age_days} days"
        return observed, f"data is stale: {newest_s}; expected within {ref.max_age_days} days"

    return describe


ExpectationBuilder = Callable[[QualityInputs], list[Check]]

# Every kind of check, in the order its results are reported (the order is part of the result's bytes).
EXPECTATION_BUILDERS: dict[str, ExpectationBuilder] = {
    "schema": schema_checks,
    "dtype": dtype_checks,
    "row_count": row_count_checks,
    "not_null": not_null_checks,
    "null_fraction": null_fraction_checks,
    "range": range_checks,
    "allowed_values": allowed_values_checks,
    "label_domain": label_domain_checks,
    "unique": unique_checks,
    "freshness": freshness_checks,
}
