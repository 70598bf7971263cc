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
    assert "<title>flights: drift — Evidently report on a sample of 500 of 500 reference" in r.html
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


# -- full-scale methods: equal to the preset, Evidently's own method choice ------------------------------------------
def mixed_frames(n_ref: int, n_cur: int, seed: int = 0):
    """Numeric and categorical columns of every cardinality the default choice distinguishes, with NaN / inf / None."""
    rng = np.random.default_rng(seed)

    def one(n, s):
        df = pd.DataFrame({
            "cont": rng.normal(10 + s, 2, n),
            "cont_gaps": rng.lognormal(0 + s / 4, 1, n),
            "many_ints": rng.integers(0, 60 + int(10 * s), n),
            "four_vals": rng.choice([0.0, 1.0, 2.5, 7.0], n, p=[0.4 - s / 10, 0.3, 0.2, 0.1 + s / 10]),
            "two_vals": rng.choice([3, 8], n, p=[0.5 + s / 8, 0.5 - s / 8]),
            "carrier": rng.choice(["UA", "AA", "B6", "DL", "EV"], n, p=[0.3, 0.3 - s / 10, 0.2, 0.1, 0.1 + s / 10]),
            "flag": rng.choice(["yes", "no"], n, p=[0.7 - s / 10, 0.3 + s / 10]),
            "code": rng.integers(0, 12, n),  # numeric values declared categorical
        })
        df.loc[rng.choice(n, n // 50, replace=False), "cont_gaps"] = np.nan
        df.loc[rng.choice(n, 3, replace=False), "cont_gaps"] = np.inf
        carrier = df["carrier"].astype(object)
        carrier[rng.choice(n, n // 40, replace=False)] = None
        df["carrier"] = carrier
        return df

    return one(n_ref, 0.0), one(n_cur, 1.0)


MIXED_NUM = ["cont", "cont_gaps", "many_ints", "four_vals", "two_vals"]
MIXED_CAT = ["carrier", "flag", "code"]


def preset_scores(ref, cur, num, cat, **preset_kw):
    """Report(DataDriftPreset) run on the given frames: column -> (score, method display name, threshold, drifted)."""
    return evidently_direct(ref, cur, num, cat, **preset_kw)


MAX_ABS_DIFF = {}


@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract")  # Evidently's Dataset stats on +-inf
@pytest.mark.parametrize("n_ref,n_cur", [(600, 500), (1001, 700), (3000, 2500), (60_000, 55_000)])
def test_full_scale_scores_equal_the_preset_column_by_column(n_ref, n_cur):
    ref, cur = mixed_frames(n_ref, n_cur, seed=n_ref)
    if n_ref == 1001:  # 1001 rows, one missing in 'cont': 1000 scored -> Evidently picks K-S there, not Wasserstein
        ref.loc[5, "cont"] = np.nan
    r = compute_drift(ref, cur, columns=MIXED_NUM + MIXED_CAT, categorical=MIXED_CAT, html=False)
    ours = by_col(r)
    preset = preset_scores(ref, cur, MIXED_NUM, MIXED_CAT)
    assert set(preset) == set(ours)
    worst = 0.0
    for c, (score, method, thr, drifted) in preset.items():
        assert ours[c]["method"] == method, c
        assert ours[c]["threshold"] == thr and ours[c]["drifted"] is drifted, c
        worst = max(worst, abs(ours[c]["score"] - score))
        assert abs(ours[c]["score"] - score) <= 1e-9, (c, ours[c]["score"], score)
    MAX_ABS_DIFF[(n_ref, n_cur)] = worst
    print(f"max |ours - preset| at {n_ref}/{n_cur} rows: {worst:.3g}")
    methods = {c: ours[c]["method_id"] for c in ours}
    if n_ref == 600:
        assert methods == {"cont": "ks", "cont_gaps": "ks", "many_ints": "ks", "four_vals": "chisquare",
                           "two_vals": "z", "carrier": "chisquare", "flag": "z", "code": "chisquare"}
    elif n_ref == 1001:
        assert methods["cont"] == "ks" and methods["cont_gaps"] == "ks"  # 1001 - 1 and 1001 - ~23 missing rows
        assert methods["many_ints"] == "wasserstein" and methods["flag"] == "jensenshannon"
    else:  # (60k rows: integer-valued columns are sorted by counting before Wasserstein)
        assert methods == {"cont": "wasserstein", "cont_gaps": "wasserstein", "many_ints": "wasserstein",
                           "four_vals": "jensenshannon", "two_vals": "jensenshannon", "carrier": "jensenshannon",
                           "flag": "jensenshannon", "code": "jensenshannon"}
    assert ours["cont"]["reference_rows"] == n_ref - (1 if n_ref == 1001 else 0)
    assert ours["cont_gaps"]["reference_rows"] == n_ref - n_ref // 50 - 3  # NaN and +-inf dropped, as Evidently


@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract")
@pytest.mark.parametrize("method,threshold", [("psi", 0.05), ("hellinger", None), ("jensenshannon", 0.05)])
def test_method_given_for_all_columns_equals_the_preset(method, threshold):
    ref, cur = mixed_frames(2000, 1500, seed=11)
    r = compute_drift(ref, cur, columns=MIXED_NUM + MIXED_CAT, categorical=MIXED_CAT, method=method,
                      threshold=threshold, html=False)
    ours = by_col(r)
    for c, (score, m, thr, drifted) in preset_scores(ref, cur, MIXED_NUM, MIXED_CAT, method=method,
                                                     threshold=threshold).items():
        assert m == method  # the preset's config keeps the name it was given
        assert (ours[c]["method_id"], ours[c]["threshold"], ours[c]["drifted"]) == (method, thr, drifted), c
        assert abs(ours[c]["score"] - score) <= 1e-9, c


def test_default_choice_is_evidentlys_on_every_boundary():
    """Evidently picks the method from the data (rows left after dropping missing values, distinct values of both
    sides together): our choice equals its own ``get_stattest`` on each side of each boundary."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    from eval_pipeline.drift_methods import CATEGORICAL, NUMERIC, prepare_column, score_column

    rng = np.random.default_rng(0)
    checked = 0
    for n_ref in (999, 1000, 1001, 1002):
        for n_values in (1, 2, 3, 5, 6, 7, 40):
            for kind in (NUMERIC, CATEGORICAL):
                vals = np.arange(n_values, dtype=float) * 1.5 - 3.0
                ref = pd.Series(rng.choice(vals, n_ref))
                cur = pd.Series(rng.choice(vals, 800))
                ref.iloc[:2] = [np.nan, np.inf]  # dropped before the choice: 1001 -> 999 rows is "small"
                if n_values >= 2:
                    cur.iloc[:2] = [-0.0, 0.0]  # one value, not two
                if kind == CATEGORICAL:
                    ref = ref.map(lambda v: v if pd.isna(v) or np.isinf(v) else f"v{v}").astype(object)
                    cur = cur.map(lambda v: f"v{abs(v)}").astype(object)
                clean_r = ref.replace([-np.inf, np.inf], np.nan).dropna()
                clean_c = cur.replace([-np.inf, np.inf], np.nan).dropna()
                ctype = ColumnType.Numerical if kind == NUMERIC else ColumnType.Categorical
                expected = get_stattest(clean_r, clean_c, ctype, None).name
                got = score_column(prepare_column("x", ref, cur, kind))
                assert got["method_id"] == expected, (n_ref, n_values, kind, got["method_id"], expected)
                checked += 1
    assert checked == 56


def test_native_ks_and_wasserstein_equal_evidentlys_stattest_float_for_float():
    """The two methods computed without importing Evidently (drift_methods._NATIVE) give the same floats, thresholds
    and decisions as Evidently's own StatTest objects on what real scores look like: a narrow band, heavy ties, a
    constant reference (norm floored at 0.001), a near-perfect model's 0/1 mass, tiny windows, big offsets, NaN/inf
    (dropped first), and a user threshold."""
    from evidently.legacy.calculations.stattests import ks_stat_test, wasserstein_stat_test
    from evidently.legacy.core import ColumnType

    from eval_pipeline.drift_methods import NUMERIC, _clean, prepare_column, score_column

    rng = np.random.default_rng(7)
    cases = {
        "narrow_band": (0.30 + 0.002 * rng.random(5000), 0.301 + 0.002 * rng.random(4000)),
        "ties": (np.round(rng.random(3000), 2), np.round(rng.random(2500) ** 1.2, 2)),
        "constant_reference": (np.full(2000, 0.25), 0.25 + 0.001 * rng.standard_normal(1500)),
        "near_perfect": (np.r_[np.full(1900, 1e-6), np.full(1100, 1 - 1e-6)], np.r_[np.full(1000, 1e-6), 0.9 + 0.1 * rng.random(500)]),
        "tiny": (rng.random(12), rng.random(7) + 0.3),
        "offset": (1e6 + rng.standard_normal(1500), 1e6 + 0.2 + rng.standard_normal(1800)),
        "missing_inf": (np.r_[rng.random(1200), np.nan, np.inf], np.r_[rng.random(900), -np.inf, np.nan]),
    }
    checked = 0
    for name, (r, c) in cases.items():
        col = prepare_column("score", pd.Series(r), pd.Series(c), NUMERIC)
        ref, cur = _clean(col)
        for test, threshold in ((ks_stat_test, None), (wasserstein_stat_test, None), (ks_stat_test, 0.01),
                                (wasserstein_stat_test, 0.3)):
            got = score_column(col, chosen=test.name, threshold=threshold)
            # Fed sorted, as this module always fed Evidently's object: the same float.
            res = test(pd.Series(np.sort(ref)), pd.Series(np.sort(cur)), ColumnType.Numerical, threshold)
            assert got["method_id"] == test.name and got["method"] == test.display_name, name
            assert got["score"] == float(res.drift_score), (name, test.name, got["score"], res.drift_score)
            assert (got["threshold"], got["drifted"]) == (res.actual_threshold, bool(res.drifted)), (name, test.name)
            # Fed in row order, as the preset does: only np.std's summation order differs (last digits).
            raw = test(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, threshold)
            assert got["score"] == pytest.approx(float(raw.drift_score), rel=1e-12, abs=1e-300), (name, test.name)
            checked += 1
    assert checked == 28


def test_prediction_and_label_drift():
    rng = np.random.default_rng(21)

    def window(n, shift):
        y = rng.binomial(1, 0.25 + shift / 10, n)
        return pd.DataFrame({
            "x": rng.normal(0, 1, n),
            "score_v1": np.clip(rng.beta(2, 5, n), 0, 1),
            "score_v2": np.clip(rng.beta(2 + 3 * shift, 5, n), 0, 1),
            "delayed": y,
        })

    ref, cur = window(4000, 0.0), window(3000, 1.0)
    r = compute_drift(ref, cur, columns=["x"], prediction_columns={"candidate": "score_v2", "champion": "score_v1"},
                      label_column="delayed", html=False)
    preds = {p["model"]: p for p in r.prediction_drift}
    assert list(preds) == ["candidate", "champion"]
    assert preds["candidate"]["column"] == "score_v2" and preds["candidate"]["method_id"] == "wasserstein"
    assert preds["candidate"]["drifted"] is True and preds["champion"]["drifted"] is False
    assert r.label_drift["column"] == "delayed" and r.label_drift["kind"] == "categorical"
    assert r.label_drift["method_id"] == "jensenshannon"
    direct = evidently_direct(ref, cur, ["score_v1", "score_v2"], ["delayed"])
    for c, row in (("score_v2", preds["candidate"]), ("score_v1", preds["champion"]), ("delayed", r.label_drift)):
        assert abs(row["score"] - direct[c][0]) <= 1e-9 and row["drifted"] is direct[c][3]
    # predictions and label are not features: the dataset drift share is over the features only
    assert [c["column"] for c in r.columns] == ["x"] and r.n_drifted == 0
    d = r.to_dict()
    assert d["prediction_drift"][0]["model"] == "candidate" and d["label_drift"]["column"] == "delayed"
    md = r.to_markdown()
    assert "scores of `candidate` (`score_v2`)" in md and "label `delayed`" in md
    # a list of score columns names the models by their columns
    r2 = compute_drift(ref, cur, columns=["x"], prediction_columns=["score_v1"], html=False)
    assert r2.prediction_drift[0]["model"] == "score_v1" and r2.label_drift is None
    with pytest.raises(ValueError, match=r"'nope'.*missing from the reference data"):
        compute_drift(ref, cur, columns=["x"], label_column="nope", html=False)


def test_slice_drift_share_caps_and_scores():
    rng = np.random.default_rng(5)

    def window(n, drifting):
        seg = rng.choice(["A", "B", "C", "D", "E"], n, p=[0.45, 0.35, 0.17, 0.02, 0.01])
        a = rng.normal(0, 1, n) + np.where((seg == "A") & drifting, 1.0, 0.0)
        b = rng.normal(0, 1, n) + np.where((seg == "A") & drifting, 1.0, 0.0)
        return pd.DataFrame({"seg": seg, "a": a, "b": b, "c": rng.choice(["x", "y"], n)})

    ref, cur = window(20_000, False), window(10_000, True)
    r = compute_drift(ref, cur, columns=["seg", "a", "b", "c"], slice_columns=["seg"], slice_max_values=4,
                      slice_min_rows=300, html=False)
    (s,) = r.slices
    assert s["column"] == "seg" and s["values_dropped"] == 1  # E is the 5th most frequent value
    by_value = {v["value"]: v for v in s["values"]}
    assert list(by_value) == ["A", "B", "C"]  # most frequent first
    assert [t["value"] for t in s["too_small"]] == ["D"] and s["too_small"][0]["current_rows"] < 1000
    a = by_value["A"]
    assert a["n_columns"] == 3 and set(a["scores"]) == {"a", "b", "c"}  # the slice column itself is not scored
    assert a["drifted_columns"] == ["a", "b"] and a["share_drifted"] == pytest.approx(2 / 3) and a["dataset_drift"]
    assert by_value["B"]["n_drifted"] == 0 and not by_value["B"]["dataset_drift"]
    # a slice's scores are Evidently's on the slice's rows
    ref_a, cur_a = ref[ref["seg"] == "A"], cur[cur["seg"] == "A"]
    direct = evidently_direct(ref_a.reset_index(drop=True), cur_a.reset_index(drop=True), ["a", "b"], ["c"])
    for c in ("a", "b", "c"):
        assert abs(a["scores"][c]["score"] - direct[c][0]) <= 1e-9 and a["scores"][c]["drifted"] is direct[c][3]
    assert a["reference_rows"] == len(ref_a) and a["current_rows"] == len(cur_a)
    # a small slice gets the small-sample tests, as Evidently would choose for its rows
    r_small = compute_drift(ref, cur, columns=["a"], slice_columns=["seg"], slice_min_rows=100, html=False)
    c_slice = {v["value"]: v for v in r_small.slices[0]["values"]}["C"]
    assert c_slice["reference_rows"] > 1000 and c_slice["scores"]["a"]["method_id"] == "wasserstein"
    d_slice = {v["value"]: v for v in r_small.slices[0]["values"]}["D"]
    assert d_slice["reference_rows"] <= 1000 and d_slice["scores"]["a"]["method_id"] == "ks"
    json.dumps(r.to_dict(), allow_nan=False)
    assert "Slices of `seg`: 1 of 3 with dataset drift" in r.to_markdown()


_DETERMINISM_SCRIPT = """
import sys, numpy as np, pandas as pd
sys.path.insert(0, {root!r})
from eval_pipeline.drift import compute_drift
rng = np.random.default_rng(3)
cats = ["c%d" % i for i in range(40)]
def w(n, s):
    return pd.DataFrame({{"cat": rng.choice(cats, n), "x": rng.normal(s, 1, n), "seg": rng.choice(["p", "q"], n),
                          "y": rng.integers(0, 2, n), "score": rng.beta(2, 5 + s, n)}})
ref, cur = w(5000, 0.0), w(4000, 0.3)
r = compute_drift(ref, cur, columns=["cat", "x"], prediction_columns={{"m": "score"}}, label_column="y",
                  slice_columns=["seg"], slice_min_rows=100, html=False)
sys.stdout.write(r.to_json())
"""


def test_drift_json_is_the_same_bytes_across_processes():
    """Evidently's Jensen-Shannon sums over a set of values whose order follows PYTHONHASHSEED; ours must not."""
    import os
    import subprocess

    root = str(Path(__file__).resolve().parents[1])
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT.format(root=root)], env=env,
                              capture_output=True, text=True, timeout=300, check=True)
        outs.append(proc.stdout)
    assert outs[0] == outs[1]
    d = json.loads(outs[0])
    assert {c["method_id"] for c in d["columns"]} == {"jensenshannon", "wasserstein"}
    assert d["label_drift"]["method_id"] == "jensenshannon" and d["slices"][0]["values"]


def test_html_is_built_from_a_stated_bounded_sample():
    ref, cur = frames(30_000, 20_000, seed=9, shift=0.5)
    ref["score"] = np.linspace(0, 1, len(ref))
    cur["score"] = np.linspace(0.1, 1, len(cur))
    r = compute_drift(ref, cur, columns=["shifted", "carrier"], prediction_columns={"model": "score"},
                      html_max_rows=2_000, seed=3, title="t: drift")
    h = r.html_sample
    assert (h["reference_rows"], h["current_rows"], h["max_rows"], h["seed"]) == (2_000, 2_000, 2_000, 3)
    assert (h["reference_rows_total"], h["current_rows_total"], h["sampled"]) == (30_000, 20_000, True)
    stated = "sample of 2,000 of 30,000 reference and 2,000 of 20,000 current rows (seed 3)"
    title = r.html[r.html.index("<title>"):r.html.index("</title>")]
    assert stated in title and "t: drift" in title
    assert 'id="eval-pipeline-sample"' in r.html and stated in r.html
    assert r.to_dict()["html_sample"] == h
    # the scores are on all rows, not on the sample
    assert r.reference_rows == 30_000 and r.current_rows == 20_000 and not r.sampled
    # Evidently's report has the preset's columns and the prediction's ValueDrift
    cols = {m["config"].get("column") for m in r.evidently_result["metrics"] if m["config"]["type"].endswith("ValueDrift")}
    assert cols == {"shifted", "carrier", "score"}


def test_sorting_shortcut_gives_numpys_sorted_array():
    from eval_pipeline.drift_methods import _sorted

    rng = np.random.default_rng(1)
    cases = [rng.integers(-50, 3000, 80_000).astype(float), rng.normal(0, 1, 80_000),
             np.r_[rng.integers(0, 9, 60_000).astype(float), 2.0 ** 60],  # range too wide: np.sort
             np.r_[rng.integers(0, 9, 60_000).astype(float), 0.5]]  # not integer-valued: np.sort
    for a in cases:
        assert np.array_equal(_sorted(a), np.sort(a))
