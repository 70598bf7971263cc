"""Real Evidently runs (no mocks) for eval_pipeline.drift, cross-checked against Evidently and scipy directly."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

from eval_pipeline.drift import compute_drift  # noqa: E402


def frames(n_ref: int, n_cur: int, seed: int = 0, shift: float = 1.0):
    rng = np.random.default_rng(seed)

    def one(n, s):
        return pd.DataFrame(
            {
                "shifted": rng.normal(10 + s, 2, n),
                "stable": rng.normal(0, 1, n),
                "carrier": rng.choice(["UA", "AA", "B6", "DL"], n, p=[0.4, 0.3, 0.2, 0.1]),
                "hour": rng.integers(5, 23, n),  # 18 distinct ints -> numeric
                "origin_code": rng.integers(0, 3, n),  # 3 distinct ints -> categorical by inference
            }
        )

    return one(n_ref, 0.0), one(n_cur, shift)


COLS = ["shifted", "stable", "carrier", "hour", "origin_code"]


def evidently_direct(ref, cur, num, cat, **preset_kw):
    """Evidently's own per-column scores and test statuses, computed independently of compute_drift."""
    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    snap = Report([DataDriftPreset(columns=num + cat, **preset_kw)], include_tests=True).run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
    )
    d = snap.dict()
    out = {}
    for m in d["metrics"]:
        if m["config"]["type"].endswith("ValueDrift"):
            status = [t["status"] for t in d["tests"] if t["metric_config"]["metric_id"] == m["id"] and t["id"] == "drift"]
            out[m["config"]["column"]] = (m["value"], m["config"]["method"], m["config"]["threshold"], status[0] == "FAIL")
    return out


def by_col(result):
    return {c["column"]: c for c in result.columns}


def test_small_reference_ks_matches_scipy_and_evidently():
    ref, cur = frames(600, 500, seed=1, shift=1.0)
    r = compute_drift(ref, cur, columns=COLS)
    cols = by_col(r)
    assert [c["column"] for c in r.columns] == COLS
    assert cols["carrier"]["kind"] == "categorical" and cols["origin_code"]["kind"] == "categorical"
    assert cols["shifted"]["kind"] == "numeric" and cols["hour"]["kind"] == "numeric"
    # reference <= 1000 rows: Kolmogorov-Smirnov p-value, identical to scipy's
    for c in ("shifted", "stable", "hour"):
        assert cols[c]["method"] == "K-S p_value" and cols[c]["method_id"] == "ks"
        assert cols[c]["score_type"] == "p_value" and cols[c]["threshold"] == 0.05
        p = stats.ks_2samp(ref[c], cur[c]).pvalue
        assert cols[c]["score"] == pytest.approx(p, rel=1e-12, abs=1e-300)
        assert cols[c]["drifted"] == (p <= 0.05)
    assert cols["carrier"]["method"] == "chi-square p_value"
    # same numbers and flags as Evidently run directly
    direct = evidently_direct(ref, cur, ["shifted", "stable", "hour"], ["carrier", "origin_code"])
    for c, (score, method, thr, drifted) in direct.items():
        assert cols[c]["score"] == pytest.approx(score, rel=1e-12)
        assert cols[c]["drifted"] is drifted and cols[c]["threshold"] == thr
    assert cols["shifted"]["drifted"] is True
    assert cols["stable"]["drifted"] is False
    assert r.sampled is False and r.reference_rows == 600 and r.current_rows == 500


def test_large_reference_wasserstein_matches_scipy_and_evidently():
    ref, cur = frames(3000, 2500, seed=2, shift=1.0)
    r = compute_drift(ref, cur, columns=COLS, drift_share=0.5)
    cols = by_col(r)
    for c in ("shifted", "stable", "hour"):
        assert cols[c]["method"] == "Wasserstein distance (normed)" and cols[c]["score_type"] == "distance"
        expected = stats.wasserstein_distance(ref[c], cur[c]) / max(float(np.std(ref[c])), 0.001)
        assert cols[c]["score"] == pytest.approx(expected, rel=1e-9)
        assert cols[c]["drifted"] == (expected >= 0.1)
    assert cols["carrier"]["method"] == "Jensen-Shannon distance"
    direct = evidently_direct(ref, cur, ["shifted", "stable", "hour"], ["carrier", "origin_code"])
    for c, (score, method, thr, drifted) in direct.items():
        assert cols[c]["score"] == pytest.approx(score, rel=1e-12)
        assert (cols[c]["method"], cols[c]["threshold"], cols[c]["drifted"]) == (method, thr, drifted)
    assert cols["shifted"]["drifted"] is True  # shift of half a std -> normed W ≈ 0.5
    assert not any(cols[c]["drifted"] for c in ("stable", "hour", "carrier", "origin_code"))
    assert r.n_drifted == 1 and r.share_drifted == pytest.approx(0.2) and r.dataset_drift is False
    # dataset drift once the share reaches drift_share
    r2 = compute_drift(ref, cur, columns=COLS, drift_share=0.2)
    assert r2.dataset_drift is True


def test_method_and_threshold_pass_through():
    ref, cur = frames(2000, 2000, seed=3, shift=0.3)
    r = compute_drift(ref, cur, columns=["shifted", "stable", "carrier"], method="psi", threshold=0.05)
    cols = by_col(r)
    assert {c["method"] for c in r.columns} == {"PSI"} and {c["threshold"] for c in r.columns} == {0.05}
    direct = evidently_direct(ref, cur, ["shifted", "stable"], ["carrier"], method="psi", threshold=0.05)
    for c, (score, _m, _t, drifted) in direct.items():
        assert cols[c]["score"] == pytest.approx(score, rel=1e-12) and cols[c]["drifted"] is drifted
    # a numeric-only method on a categorical column is refused up front, naming the column
    with pytest.raises(ValueError, match=r"'carrier' \(categorical\)"):
        compute_drift(ref, cur, columns=["shifted", "carrier"], method="ks")
    with pytest.raises(ValueError, match="unknown drift method"):
        compute_drift(ref, cur, columns=["shifted"], method="nope")
    # explicit categorical list overrides inference
    r3 = compute_drift(ref, cur, columns=["hour", "origin_code"], categorical=["hour"])
    assert {c["column"]: c["kind"] for c in r3.columns} == {"hour": "categorical", "origin_code": "numeric"}


def test_sampling_is_deterministic_for_a_seed():
    ref, cur = frames(30_000, 20_000, seed=4, shift=0.5)
    a = compute_drift(ref, cur, columns=COLS, max_rows=5_000, seed=7)
    b = compute_drift(ref.copy(), cur.copy(), columns=COLS, max_rows=5_000, seed=7)
    c = compute_drift(ref, cur, columns=COLS, max_rows=5_000, seed=8)
    assert a.sampled and a.reference_rows == 5_000 and a.current_rows == 5_000
    assert a.reference_rows_total == 30_000 and a.current_rows_total == 20_000
    sa, sb = (json.dumps(x.to_dict(), sort_keys=True, allow_nan=False) for x in (a, b))
    assert sa == sb
    assert [x["score"] for x in a.columns] != [x["score"] for x in c.columns]
    # the sample is the seeded one: Evidently on the same rows gives the same scores
    rng = np.random.default_rng(7)
    pos_r = np.sort(rng.choice(len(ref), 5_000, replace=False))
    rng = np.random.default_rng(7)
    pos_c = np.sort(rng.choice(len(cur), 5_000, replace=False))
    wd = stats.wasserstein_distance(ref["shifted"].iloc[pos_r], cur["shifted"].iloc[pos_c]) / np.std(
        ref["shifted"].iloc[pos_r]
    )
    assert by_col(a)["shifted"]["score"] == pytest.approx(wd, rel=1e-9)
    # not sampled when under the cap
    d = compute_drift(ref.head(900), cur.head(900), columns=["stable"], max_rows=None)
    assert d.sampled is False and d.reference_rows == 900


def test_outputs_html_markdown_dict():
    ref, cur = frames(500, 500, seed=5)
    r = compute_drift(ref, cur, columns=["shifted", "carrier"], title="flights: drift")
    assert "<html" in r.html.lower() and len(r.html) > 10_000
    d = r.to_dict()
    assert "html" not in d
    json.dumps(d, allow_nan=False)
    assert set(d["columns"][0]) >= {"column", "kind", "method", "score", "threshold", "drifted"}
    md = r.to_markdown()
    assert md.startswith("**flights: drift**") and "| `shifted` | numeric | K-S p_value |" in md


def test_errors_name_column_and_side():
    ref, cur = frames(200, 200)
    with pytest.raises(ValueError, match=r"'stable'.*missing from the current data"):
        compute_drift(ref, cur.drop(columns=["stable"]), columns=["shifted", "stable"])
    with pytest.raises(ValueError, match=r"'nope'.*missing from the reference data"):
        compute_drift(ref, cur, columns=["nope"])
    with pytest.raises(ValueError, match="reference data is empty"):
        compute_drift(ref.iloc[:0], cur, columns=["shifted"])
    with pytest.raises(ValueError, match="current data is empty"):
        compute_drift(ref, cur.iloc[:0], columns=["shifted"])
    with pytest.raises(ValueError, match="no non-null values in the current data"):
        compute_drift(ref, cur.assign(shifted=np.nan), columns=["shifted"])
