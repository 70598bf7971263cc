"""Real Great Expectations runs (no mocks) for eval_pipeline.quality."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_pipeline.quality import QualityResult, render_html, validate_dataset  # noqa: E402

AS_OF = pd.Timestamp("2013-02-10", tz="UTC")

SPEC = {
    "min_rows": 1000,
    "max_rows": None,
    "not_null": ["origin"],
    "max_null_fraction": {"dep_delay": 0.05},
    "ranges": {"distance": {"min": 0, "max": 6000}},
    "allowed_values": {"origin": ["EWR", "JFK", "LGA"]},
    "unique": [],
    "dtypes": {"distance": "numeric", "carrier": "string", "time_hour": "datetime"},
    "freshness": {"max_age_days": 45, "as_of": None},
}

KW = dict(
    expectations=SPEC,
    id_column="flight_id",
    label_column="delayed",
    timestamp_column="time_hour",
    feature_columns=["distance", "origin", "carrier", "dep_delay"],
    task_type="binary",
    source="flights snapshot",
    as_of=AS_OF.to_pydatetime(),
)


def make_frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dep_delay = rng.normal(5, 20, n)
    dep_delay[rng.random(n) < 0.02] = np.nan
    return pd.DataFrame(
        {
            "flight_id": np.arange(n),
            "delayed": rng.integers(0, 2, n),
            "time_hour": pd.Timestamp("2013-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 30 * 24, n), unit="h"),
            "distance": rng.uniform(80, 4983, n),
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "carrier": rng.choice(["UA", "AA", "B6", "DL"], n),
            "dep_delay": dep_delay,
        }
    )


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return make_frame()


def by_check(result: QualityResult, check: str, column=None) -> dict:
    hits = [r for r in result.results if r["check"] == check and (column is None or r["column"] == column)]
    assert len(hits) == 1, (check, column, hits)
    return hits[0]


def test_clean_frame_passes(clean):
    r = validate_dataset(clean, **KW)
    assert r.success, r.failures()
    assert r.failures() == []
    assert r.statistics["failed"] == 0
    assert r.statistics["evaluated"] == len(r.results) == r.statistics["successful"]
    checks = {x["check"] for x in r.results}
    assert {"schema", "dtype", "label_domain", "row_count", "not_null", "null_fraction", "range", "unique",
            "freshness", "allowed_values"} <= checks
    # GX's own result is there and agrees with the GX-run checks
    assert r.gx_result["success"] is True
    n_gx = sum(1 for x in r.results if x.get("engine") != "pandas")
    assert r.gx_result["statistics"]["evaluated_expectations"] == n_gx
    json.dumps(r.gx_result, allow_nan=False)
    md = r.to_markdown()
    assert "flights snapshot" in md and "PASSED" in md and "| ✅ |" in md


def test_null_label_fails_and_names_column(clean):
    df = clean.copy()
    df["delayed"] = df["delayed"].astype("float64")
    df.loc[[3, 50, 700], "delayed"] = np.nan
    r = validate_dataset(df, **KW)
    assert not r.success
    res = by_check(r, "not_null", "delayed")
    assert res["success"] is False
    assert res["observed"]["unexpected_count"] == 3
    assert "flights snapshot: column 'delayed' has 3 null values (0.1%); expected none" == res["message"]
    assert r.failures() == [res["message"]]


def test_missing_column_reported_and_other_checks_skipped(clean):
    df = clean.drop(columns=["distance"])
    r = validate_dataset(df, **KW)
    assert not r.success
    res = by_check(r, "schema", "distance")
    assert res["success"] is False and res["observed"] == {"exists": False}
    assert "feature column 'distance' is missing" in res["message"]
    # range and dtype checks on the missing column were skipped rather than crashing
    assert {s["expectation"] for s in r.skipped if s["column"] == "distance"} == {
        "expect_column_values_to_be_between", "expect_column_dtype_family"}
    assert "2 other check(s) on it were skipped" in res["message"]
    assert len(r.failures()) == 1
    # missing label: not-null / domain on it are skipped too, label named as such
    r2 = validate_dataset(clean.drop(columns=["delayed"]), **KW)
    assert any("label column 'delayed' is missing" in m for m in r2.failures())


def test_out_of_range_values(clean):
    df = clean.copy()
    df.loc[[1, 2], "distance"] = [-10.0, 9000.0]
    r = validate_dataset(df, **KW)
    res = by_check(r, "range", "distance")
    assert res["success"] is False
    assert res["observed"]["unexpected_count"] == 2
    assert sorted(res["observed"]["unexpected_examples"]) == [-10.0, 9000.0]
    assert "column 'distance' has 2 values" in res["message"] and "outside [0, 6000]" in res["message"]


def test_allowed_values_and_null_fraction(clean):
    df = clean.copy()
    df.loc[5, "origin"] = "XXX"
    df.loc[df.index[:300], "dep_delay"] = np.nan  # ≥ 10 % nulls > 5 % allowed
    r = validate_dataset(df, **KW)
    res = by_check(r, "allowed_values", "origin")
    assert res["success"] is False and "'XXX'" in res["message"]
    nf = by_check(r, "null_fraction", "dep_delay")
    assert nf["success"] is False and "exceeds the allowed 5%" in nf["message"]


def test_duplicate_ids(clean):
    df = clean.copy()
    df.loc[10, "flight_id"] = df.loc[11, "flight_id"]
    r = validate_dataset(df, **KW)
    res = by_check(r, "unique", "flight_id")
    assert res["success"] is False
    assert res["observed"]["unexpected_count"] == 2  # both rows sharing the id
    assert "column 'flight_id' has 2 rows" in res["message"] and "expected unique" in res["message"]


def test_stale_data_fails_freshness(clean):
    r = validate_dataset(clean, **{**KW, "as_of": pd.Timestamp("2013-06-01", tz="UTC").to_pydatetime()})
    res = by_check(r, "freshness", "time_hour")
    assert res["success"] is False
    assert "stale" in res["message"] and "expected within 45 days" in res["message"]
    assert res["observed"]["newest"] == clean["time_hour"].max().isoformat()
    # spec's as_of wins over the argument; naive timestamps are taken as UTC
    spec = {**SPEC, "freshness": {"max_age_days": 45, "as_of": "2013-02-01"}}
    naive = clean.assign(time_hour=clean["time_hour"].dt.tz_localize(None))
    r2 = validate_dataset(naive, **{**KW, "expectations": spec, "as_of": None})
    assert by_check(r2, "freshness", "time_hour")["success"] is True
    # string timestamps are parsed for the check
    strs = clean.assign(time_hour=clean["time_hour"].astype(str))
    r3 = validate_dataset(strs, **{**KW, "expectations": {**SPEC, "dtypes": {}}})
    assert by_check(r3, "freshness", "time_hour")["success"] is True


def test_wrong_label_domain(clean):
    df = clean.copy()
    df.loc[[0, 1], "delayed"] = 2
    r = validate_dataset(df, **KW)
    res = by_check(r, "label_domain", "delayed")
    assert res["success"] is False
    assert "binary label 'delayed' has 2 values" in res["message"] and "not in [0, 1]" in res["message"]
    # multiclass with explicit label_values
    r2 = validate_dataset(df, **{**KW, "task_type": "multiclass", "label_values": [0, 1, 2]})
    assert by_check(r2, "label_domain", "delayed")["success"] is True
    # regression: non-finite label
    reg = clean.assign(delayed=clean["dep_delay"].fillna(0.0))
    reg.loc[4, "delayed"] = np.inf
    r3 = validate_dataset(reg, **{**KW, "task_type": "regression"})
    res3 = by_check(r3, "label_domain", "delayed")
    assert res3["success"] is False and "1 non-finite value" in res3["message"]


def test_row_count_and_dtypes(clean):
    small = clean.head(500)
    r = validate_dataset(small, **KW)
    res = by_check(r, "row_count")
    assert res["success"] is False and res["observed"] == {"rows": 500}
    assert res["message"] == "flights snapshot: has 500 rows; expected at least 1000"
    r2 = validate_dataset(clean, **{**KW, "expectations": {**SPEC, "max_rows": 2000}})
    assert by_check(r2, "row_count")["success"] is False
    # defaults: empty spec -> min_rows 1, no freshness
    r3 = validate_dataset(clean, **{**KW, "expectations": {}})
    assert r3.success and not any(x["check"] == "freshness" for x in r3.results)
    bad = clean.assign(distance=clean["distance"].astype(str))
    r4 = validate_dataset(bad, **{**KW, "expectations": {**SPEC, "ranges": {}}})
    d = by_check(r4, "dtype", "distance")
    assert d["success"] is False and "expected numeric" in d["message"]


def test_to_dict_deterministic_and_json_safe(clean):
    df = clean.copy()
    df.loc[[3, 4], "distance"] = [np.nan, -1.0]
    df.loc[7, "origin"] = None
    a = validate_dataset(df, **KW)
    b = validate_dataset(df.copy(), **KW)
    sa = json.dumps(a.to_dict(), sort_keys=True, allow_nan=False)
    sb = json.dumps(b.to_dict(), sort_keys=True, allow_nan=False)
    assert sa == sb
    # the raw GX results do differ between runs (ids, times) – they are kept out of to_dict
    assert a.run_info["gx_validation_id"] != b.run_info["gx_validation_id"]
    assert "gx_result" not in a.to_dict()
    html = render_html(a)
    assert html.startswith("<!DOCTYPE html>") and "flights snapshot" in html and "FAILED" in html
    assert "<script" not in html


def test_one_million_rows_is_fast():
    import time

    big = make_frame(1_000_000, seed=1)
    t0 = time.perf_counter()
    r = validate_dataset(big, **KW)
    elapsed = time.perf_counter() - t0
    assert r.success, r.failures()
    assert elapsed < 10, elapsed


def test_spec_model_spellings(clean):
    """The lead's EvalSpec spells task types out and carries label_values inside the expectations section."""
    df = clean.copy()
    df.loc[0, "delayed"] = 2
    spec = {**SPEC, "label_values": [0, 1, 2]}
    r = validate_dataset(df, **{**KW, "expectations": spec, "task_type": "multiclass_classification"})
    assert by_check(r, "label_domain", "delayed")["success"] is True
    r2 = validate_dataset(df, **{**KW, "task_type": "binary_classification"})
    assert by_check(r2, "label_domain", "delayed")["success"] is False
    s = r2.statistics
    assert s["evaluated_expectations"] == s["evaluated"] and s["successful_expectations"] == s["successful"]
    assert s["unsuccessful_expectations"] == s["failed"] == 1
    with pytest.raises(ValueError, match="unknown task_type"):
        validate_dataset(df, **{**KW, "task_type": "clustering"})


# -- the typed spec and the expectation registry ----------------------------------------------------------------------
def _toy_spec(expectations: dict):
    from eval_pipeline.spec import parse_spec

    return parse_spec({
        "task": "flights", "task_type": "binary_classification", "data": {"source": "landing/flights"},
        "model": {"name": "flights"}, "drift": {"enabled": False},
        "columns": {"id": "flight_id", "label": "delayed", "timestamp": "time_hour",
                    "features": ["distance", "origin", "carrier", "dep_delay"]},
        "expectations": expectations})


def test_typed_spec_gives_the_bytes_of_the_keyword_call(clean):
    """The pipeline passes the EvalSpec; the result is the one the keyword form gives for the same section."""
    spec = _toy_spec({**SPEC, "freshness": {"max_age_days": 45, "as_of": "2013-02-10T00:00:00Z"},
                      "label_values": [0, 1]})
    df = clean.copy()
    df.loc[[1, 2], "distance"] = [-10.0, 9000.0]
    df.loc[5, "origin"] = "XXX"
    typed = validate_dataset(df, spec, source="flights snapshot")
    keyword = validate_dataset(
        df, expectations=spec.expectations.model_dump(mode="python"), id_column="flight_id", label_column="delayed",
        timestamp_column="time_hour", feature_columns=list(spec.columns.features), task_type=spec.task_type,
        label_values=spec.expectations.label_values, source="flights snapshot")
    assert typed.to_json() == keyword.to_json()
    assert render_html(typed) == render_html(keyword)
    assert not typed.success and len(typed.failures()) == 2
    with pytest.raises(TypeError, match="not both"):
        validate_dataset(df, spec, id_column="flight_id")


def test_every_kind_has_one_builder_and_a_new_kind_is_one_function(clean, monkeypatch):
    import great_expectations.expectations as gxe

    from eval_pipeline.quality_expectations import EXPECTATION_BUILDERS, Check

    r = validate_dataset(clean, **KW)
    assert {x["check"] for x in r.results} == set(EXPECTATION_BUILDERS)

    def column_count_checks(q):
        def describe(ok, res):
            n = res.get("observed_value")
            return {"columns": n}, f"has {n} columns"

        return [Check("column_count", None, gxe.ExpectTableColumnCountToEqual(value=len(q.frame.columns)), describe)]

    monkeypatch.setitem(EXPECTATION_BUILDERS, "column_count", column_count_checks)
    r2 = validate_dataset(clean, **KW)
    assert r2.results[:-1] == r.results
    assert r2.results[-1] == {"expectation": "expect_table_column_count_to_equal", "check": "column_count",
                              "column": None, "success": True, "observed": {"columns": 7},
                              "message": "flights snapshot: has 7 columns"}


def test_observed_shows_the_data_not_the_spec():
    """The 'observed' of each result (JSON and the HTML report's column) is what the data showed: the row count,
    null fractions, the column's min and max, unexpected counts and examples, the newest timestamp and its age, the
    dtype; never the spec's bounds (they are in the message)."""
    df = pd.DataFrame({
        "flight_id": [1, 2, 3, 4, 5, 6, 7, 8],
        "delayed": [0, 1, 1, 0, 1, 0, 1, 2],  # one label outside {0, 1}
        "time_hour": pd.Timestamp("2013-01-01", tz="UTC") + pd.to_timedelta([0, 1, 2, 3, 4, 5, 6, 48], unit="h"),
        "distance": [100.0, 250.0, np.nan, 7000.0, 300.0, 80.0, 400.0, 500.0],
        "origin": ["EWR", "JFK", "LGA", "EWR", "XXX", "JFK", "JFK", "LGA"],
        "carrier": ["UA"] * 8,
        "dep_delay": [1.0, np.nan, np.nan, 4.0, 5.0, 6.0, 7.0, 8.0],
    })
    spec = {**SPEC, "min_rows": 5, "max_null_fraction": {"dep_delay": 0.2}, "ranges": {"distance": {"min": 90,
                                                                                                    "max": 6000}}}
    r = validate_dataset(df, **{**KW, "expectations": spec})
    assert by_check(r, "row_count", None)["observed"] == {"rows": 8}
    rng = by_check(r, "range", "distance")["observed"]
    assert (rng["min"], rng["max"]) == (80.0, 7000.0)  # the data's, not the spec's 90 and 6000
    assert rng["unexpected_count"] == 2 and sorted(rng["unexpected_examples"]) == [80.0, 7000.0]
    nf = by_check(r, "null_fraction", "dep_delay")
    assert nf["success"] is False and nf["observed"]["null_fraction"] == 0.25 and nf["observed"]["unexpected_count"] == 2
    assert "max_null_fraction" not in nf["observed"]
    assert by_check(r, "not_null", "origin")["observed"]["null_fraction"] == 0.0
    allowed = by_check(r, "allowed_values", "origin")["observed"]
    assert allowed["unexpected_count"] == 1 and allowed["unexpected_examples"] == ["XXX"]
    label = by_check(r, "label_domain", "delayed")["observed"]
    assert label["unexpected_count"] == 1 and label["unexpected_examples"] == [2]
    assert by_check(r, "dtype", "distance")["observed"] == {"dtype": "float64"}
    fresh = by_check(r, "freshness", "time_hour")["observed"]
    newest = pd.Timestamp("2013-01-03", tz="UTC")
    assert fresh == {"newest": newest.isoformat(), "age_days": (AS_OF - newest) / pd.Timedelta(days=1)}
    page = render_html(r)  # the report's 'observed' column shows the data's extent, the message the spec's bounds
    (row,) = [tr for tr in page.split("<tr") if "outside [90, 6000]" in tr]
    observed_cell = row.split("<code>")[1]
    assert "&quot;max&quot;: 7000.0" in observed_cell and "&quot;min&quot;: 80.0" in observed_cell
    assert "6000" not in observed_cell
