"""Seeded simulations: interval coverage, false-alarm rate of gates under equal models, power on a planted regression.

Each simulation packs many independent datasets into one evaluation as slices (one slice per replicate dataset), so
one engine call yields hundreds of independent intervals / gate matrices. Run with ``pytest -s`` to see the rates.
"""
import numpy as np
import pandas as pd
from scipy.stats import norm

from eval_pipeline.engine import GateDef, SliceConfig, apply_gates, evaluate


def test_coverage_of_95pct_intervals():
    R, n, pi = 800, 1000, 0.4
    rng = np.random.default_rng(2026)
    N = R * n
    y = (rng.random(N) < pi).astype(int)
    lat = rng.normal(size=N) + y  # binormal, d' = 1
    df = pd.DataFrame({"y": y, "s": 1 / (1 + np.exp(-lat)), "rep": np.repeat(np.arange(R), n)})
    truth = {"roc_auc": norm.cdf(1 / np.sqrt(2)), "accuracy": pi * norm.cdf(1) + (1 - pi) * 0.5,
             "brier": None}
    res = evaluate(df, task_type="binary_classification", label="y", predictions={"m": "s"}, baseline=None,
                   candidate="m", slices=SliceConfig(columns=["rep"], max_values=R), metrics=["accuracy", "roc_auc"],
                   n_boot=400, seed=5).to_dict()
    for m in ("roc_auc", "accuracy"):
        cis = [s["models"]["m"][m]["ci"] for s in res["slices"][1:]]
        cov = np.mean([lo <= truth[m] <= hi for lo, hi in cis])
        print(f"\n[coverage] {m}: 95% percentile interval covered the true value in {cov:.1%} of {R} datasets "
              f"(n={n}, B=400)")
        assert 0.93 <= cov <= 0.97, (m, cov)


def _paired(R, n, seed, planted=None):
    """R datasets x 4 slices; candidate and baseline equally good unless planted=(slice, flip share)."""
    rng = np.random.default_rng(seed)
    N = R * n * 4
    y = (rng.random(N) < 0.5).astype(int)
    base = rng.normal(size=N)
    b = 1 / (1 + np.exp(-(base + rng.normal(0, 1, N) + 1.2 * (2 * y - 1))))
    c = 1 / (1 + np.exp(-(base + rng.normal(0, 1, N) + 1.2 * (2 * y - 1))))
    part = np.tile(np.repeat(np.array(list("ABCD")), n), R)
    if planted:
        sl, share = planted
        m = (part == sl) & (rng.random(N) < share)
        c[m] = np.where(y[m] == 1, 0.2, 0.8)  # wrong and confident on a share of rows
    return pd.DataFrame({"y": y, "b": b, "c": c, "rep": np.repeat(np.arange(R), n * 4), "part": part})


def test_false_alarm_rate_under_equal_models():
    R, n, alpha = 300, 500, 0.05
    df = _paired(R, n, seed=7)
    res = evaluate(df, task_type="binary_classification", label="y", predictions={"baseline": "b", "candidate": "c"},
                   slices=SliceConfig(crosses=[["rep", "part"]], max_values=R), metrics=["accuracy", "roc_auc"],
                   n_boot=400, seed=9)
    names = [s["slice"] for s in res.slices[1:]]
    alarms, any_fail = 0, 0
    for r in range(R):
        mine = names[4 * r: 4 * r + 4]
        gates = [GateDef("accuracy", "non_inferiority", margin=0.0, slices=mine),
                 GateDef("roc_auc", "non_inferiority", margin=0.0, slices=mine)]
        d = apply_gates(res, gates, multiplicity="holm", alpha=alpha).to_dict()
        any_fail += d["verdict"] == "FAIL"
        alarms += d["counts"]["FAIL"]
    rate = any_fail / R
    print(f"\n[false alarms] equal models, margin 0, 8 gates (2 metrics x 4 slices) per run, Holm at alpha={alpha}: "
          f"runs with any FAIL {rate:.1%} of {R}; FAIL rows {alarms / (8 * R):.2%}")
    assert rate <= alpha


def test_planted_regression_is_caught():
    caught, clean_fail = 0, 0
    runs = 10
    df = _paired(runs, 4000, seed=11, planted=("C", 0.15))
    res = evaluate(df, task_type="binary_classification", label="y", predictions={"baseline": "b", "candidate": "c"},
                   slices=SliceConfig(crosses=[["rep", "part"]]), metrics=["accuracy"], n_boot=400, seed=2)
    drops = []
    for r in range(runs):
        mine = [f"rep={r} & part={p}" for p in "ABCD"]
        d = apply_gates(res, [GateDef("accuracy", "non_inferiority", margin=0.02, slices=mine)]).to_dict()
        out = {g["slice"]: g["outcome"] for g in d["gates"]}
        drops.append(next(g["delta"] for g in d["gates"] if g["slice"].endswith("C")))
        caught += out[f"rep={r} & part=C"] == "FAIL"
        clean_fail += sum(out[f"rep={r} & part={p}"] == "FAIL" for p in "ABD")
    print(f"\n[power] planted accuracy drop of {-np.mean(drops):.3f} (15% of rows made confidently wrong) in one slice "
          f"of 4,000 rows, margin 0.02: caught (FAIL) in {caught}/{runs} runs; clean slices FAILed {clean_fail} times")
    assert caught == runs and clean_fail == 0
