"""Regression intervals: shift invariance, coverage under Gaussian and heavy-tailed errors, range, exactness.

Coverage simulations pack many independent datasets into one evaluation as slices (one slice per dataset), as in
test_statistical_validity.py. Truths are population values (RMSE, MAE, R^2 = 1 - E e^2 / var y) computed
analytically or from 4M draws. Assertions use the binomial standard error of a coverage estimate over R datasets:
a claimed-valid interval must cover within [93 %, 97 %] widened by two standard errors. Where the engine flags an
interval as unreliable (heavy tails) the test asserts the flag fires instead. ``pytest -s`` prints the matrix;
set EVAL_SLOW_TESTS=1 (or EVAL_SIM_SLOW=1) for the larger variants.
"""
import os

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm

from eval_pipeline.engine import SliceConfig, evaluate
from eval_pipeline.engine import regression

slow = pytest.mark.skipif(not (os.environ.get("EVAL_SLOW_TESTS") or os.environ.get("EVAL_SIM_SLOW")),
                          reason="long simulation; set EVAL_SLOW_TESTS=1 (or EVAL_SIM_SLOW=1)")
METRICS = ["mae", "rmse", "r2", "mape", "mean_error"]
SHIFT_INVARIANT = ["mae", "rmse", "r2", "mean_error"]  # mape divides by |y|, so a shift legitimately changes it


@pytest.fixture
def captured(monkeypatch):
    """The raw output of regression.compute (its per-slice diagnostics are not in the result yet)."""
    box = {}
    orig = regression.compute

    def wrap(*a, **k):
        box["out"] = orig(*a, **k)
        return box["out"]

    monkeypatch.setattr(regression, "compute", wrap)
    return box


def _grid_data(seed, n_a=1500, n_b=6000):
    """Labels and errors on a 2^-10 grid with |y| < 2^6: y + 1e9 and p + 1e9 are exact in float64, so e = p - y is
    bit-identical after the shift and any difference in the output comes from the engine. Slice b (and overall) is
    above K_EXACT rows, so both resampling paths are exercised."""
    rng = np.random.default_rng(seed)
    n = n_a + n_b
    q = 1024.0
    y = np.round(rng.normal(5, 3, n) * q) / q
    eb = np.round(rng.normal(0.3, 1.5, n) * q) / q
    ec = np.round(rng.standard_t(4, n) * q) / q
    return pd.DataFrame({"y": y, "b": y + eb, "c": y + ec, "g": np.repeat(["a", "b"], [n_a, n_b])})


def _eval(df, metrics, n_boot=200, seed=3, **kw):
    return evaluate(df, task_type="regression", label="y", predictions={"baseline": "b", "candidate": "c"},
                    slices=kw.pop("slices", SliceConfig(columns=["g"], min_size=1)), metrics=metrics,
                    n_boot=n_boot, seed=seed, **kw)


@pytest.mark.parametrize("offset", [1e6, 1e9])
def test_shift_invariance(offset):
    df = _grid_data(1)
    sh = df.copy()
    for c in ("y", "b", "c"):
        sh[c] = df[c] + offset
    assert np.array_equal(sh["b"] - sh["y"], df["b"] - df["y"])  # the premise: errors unchanged bit for bit
    r0, r1 = _eval(df, SHIFT_INVARIANT).to_dict(), _eval(sh, SHIFT_INVARIANT).to_dict()
    for s0, s1 in zip(r0["slices"], r1["slices"]):
        for role in ("baseline", "candidate"):
            for m in SHIFT_INVARIANT:
                a, b = s0["models"][role][m], s1["models"][role][m]
                assert np.isclose(a["value"], b["value"], rtol=1e-9, atol=1e-12), (s0["slice"], role, m)
                assert np.allclose(a["ci"], b["ci"], rtol=1e-9, atol=1e-12), (s0["slice"], role, m, a, b)
                for got in (a, b):
                    assert got["ci"][0] <= got["value"] <= got["ci"][1], (s0["slice"], role, m, got)
                    assert got["ci"][1] > got["ci"][0]  # no collapsed interval
        for m in SHIFT_INVARIANT:
            assert np.allclose(s0["delta"][m]["ci"], s1["delta"][m]["ci"], rtol=1e-9, atol=1e-12)
    r2 = r1["slices"][0]["models"]["candidate"]["r2"]
    assert r2["ci"][1] <= 1.0


def test_point_estimates_match_sklearn_and_intervals_in_range():
    rng = np.random.default_rng(8)
    n = 7000
    y = rng.lognormal(3, 0.7, n)
    df = pd.DataFrame({"y": y, "b": y + rng.standard_t(3, n), "c": y * (1 + rng.normal(0, 0.01, n)),
                       "g": rng.choice(["a", "b", "c"], n, p=[0.05, 0.35, 0.6])})
    df.loc[df.index[:40], "c"] = df["y"].iloc[:40]  # a few exact predictions
    res = _eval(df, METRICS, n_boot=300)
    for s in res.to_dict()["slices"]:
        sub = df if s["slice"] == "overall" else df[df.g == s["columns"]["g"]]
        for role, col in (("baseline", "b"), ("candidate", "c")):
            yt, yp = sub["y"].to_numpy(), sub[col].to_numpy()
            ref = {"mae": skm.mean_absolute_error(yt, yp), "rmse": skm.root_mean_squared_error(yt, yp),
                   "r2": skm.r2_score(yt, yp), "mape": skm.mean_absolute_percentage_error(yt, yp),
                   "mean_error": float(np.mean(yp - yt))}
            for m in METRICS:
                got = s["models"][role][m]
                assert abs(got["value"] - ref[m]) <= 1e-9 * max(1.0, abs(ref[m])), (s["slice"], role, m)
                assert got["ci"][0] <= got["value"] <= got["ci"][1], (s["slice"], role, m, got)
    # every replicate within the metric's range: r2 <= 1 (the candidate's R^2 is ~0.9999), errors >= 0
    for (sl, role, m), rep in res.replicates.items():
        if role == "delta":
            continue
        rep = rep[~np.isnan(rep)]
        assert rep.size == res.n_boot
        if m == "r2":
            assert rep.max() <= 1.0, (sl, role)
        elif m in ("rmse", "mae", "mape"):
            assert rep.min() >= 0.0, (sl, role, m)


def test_range_on_tiny_slices():
    """Small slices of a near-perfect model: recentred percentile replicates used to cross 0 and 1."""
    rng = np.random.default_rng(4)
    R, n = 60, 12
    y = rng.normal(0, 1, R * n)
    c = y + np.where(rng.random(R * n) < 0.8, 0.0, rng.normal(0, 0.05, R * n))
    df = pd.DataFrame({"y": y, "b": y + rng.normal(0, 1, R * n), "c": c, "g": np.repeat(np.arange(R), n)})
    res = _eval(df, ["rmse", "mae", "r2"], n_boot=200, slices=SliceConfig(columns=["g"], max_values=R, min_size=2))
    for s in res.to_dict()["slices"]:
        for role in ("baseline", "candidate"):
            rm, r2 = s["models"][role]["rmse"], s["models"][role]["r2"]
            assert rm["ci"][0] >= 0 and r2["ci"][1] <= 1, (s["slice"], role, rm, r2)
            assert rm["ci"][0] <= rm["value"] <= rm["ci"][1] and r2["ci"][0] <= r2["value"] <= r2["ci"][1]


def test_deterministic_whatever_row_order_and_chunking():
    df = _grid_data(2)
    rng = np.random.default_rng(0)
    shuffled = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    chunks = [shuffled.iloc[i:i + 997] for i in range(0, len(shuffled), 997)]
    a = _eval(df, METRICS, workers=1)
    b = _eval(chunks, METRICS, workers=2)
    assert a.to_json() == b.to_json()
    for k, v in a.replicates.items():
        assert np.array_equal(v, b.replicates[k], equal_nan=True), k


# ---------------------------------------------------------------- coverage

COV_METRICS = ["rmse", "mae", "r2", "mean_error"]


def _innov(kind, rng, N):
    if kind == "gauss":
        return rng.normal(size=N)
    if kind == "t3":
        return rng.standard_t(3, N)
    return np.exp(rng.normal(size=N)) - np.exp(0.5)  # centred lognormal(0, 1)


def _errors(kind, rng, N):
    """Baseline and candidate errors, correlated (shared innovation); the candidate is 10 % better in RMSE."""
    a, b = _innov(kind, rng, N), _innov(kind, rng, N)
    return a, 0.9 * (0.6 * a + 0.8 * b)


def _truth(kind):
    var = {"gauss": 1.0, "t3": 3.0, "lognorm": (np.e - 1) * np.e}[kind]
    eb, ec = _errors(kind, np.random.default_rng(123), 4_000_000)  # MAE of the mixed errors by simulation
    mae_b = np.sqrt(2 / np.pi) if kind == "gauss" else float(np.mean(np.abs(eb)))
    return {"baseline": {"rmse": np.sqrt(var), "mae": mae_b, "r2": 1 - var / 9, "mean_error": 0.0},
            "candidate": {"rmse": 0.9 * np.sqrt(var), "mae": float(np.mean(np.abs(ec))), "r2": 1 - 0.81 * var / 9,
                          "mean_error": 0.0}}


def _coverage(kind, R, n, B, seed, captured):
    rng = np.random.default_rng(seed)
    y = rng.normal(10, 3, R * n)
    eb, ec = _errors(kind, rng, R * n)
    df = pd.DataFrame({"y": y, "b": y + eb, "c": y + ec, "rep": np.repeat(np.arange(R), n)})
    res = evaluate(df, task_type="regression", label="y", predictions={"baseline": "b", "candidate": "c"},
                   slices=SliceConfig(columns=["rep"], max_values=R), metrics=COV_METRICS, n_boot=B,
                   seed=seed)
    diag = captured["out"]["diagnostics"]
    T = _truth(kind)
    rows = {}
    sl = res.slices[1:]
    for role in ("baseline", "candidate", "delta"):
        for m in COV_METRICS:
            if role == "delta":
                if m == "r2":
                    continue
                truth = T["candidate"][m] - T["baseline"][m]
                cis = [s["delta"][m]["ci"] for s in sl]
                flags = [not diag[j]["delta"][m]["reliable"] for j in range(1, len(res.slices))]
            else:
                truth = T[role][m]
                cis = [s["models"][role][m]["ci"] for s in sl]
                flags = [not diag[j]["models"][role][m]["reliable"] for j in range(1, len(res.slices))]
            hit = np.array([lo <= truth <= hi for lo, hi in cis])
            flags = np.array(flags)
            rows[(role, m)] = (hit.mean(), flags.mean(), hit[~flags].mean() if (~flags).any() else np.nan)
    print(f"\n[regression coverage] {kind} errors, {R} datasets x {n} rows, B={B}: "
          "role.metric coverage / share flagged unreliable / coverage where not flagged")
    for (role, m), (c, f, cu) in rows.items():
        print(f"  {role:9s} {m:5s} {c:6.1%}  flagged {f:6.1%}  unflagged {cu:6.1%}")
    return rows, diag[0]


def _check(kind, rows, overall, R, n):
    se = np.sqrt(0.95 * 0.05 / R)
    valid = {(r, m) for r in ("baseline", "candidate", "delta") for m in ("mae", "mean_error")}
    if kind == "gauss":
        valid |= {(r, m) for r in ("baseline", "candidate") for m in ("rmse", "r2")} | {("delta", "rmse")}
    for key, (cov, flagged, _) in rows.items():
        if key in valid:
            assert 0.93 - 2 * se <= cov <= 0.97 + 2 * se, (kind, key, cov)
            if kind == "gauss":
                # the Hill estimate on 2 % of 300 rows is noisy: at small n the flag is conservative (~20 %)
                assert flagged <= (0.05 if n >= 1000 else 0.25), (kind, key, flagged)
        else:
            # heavy tails: the interval is known not to hold (t(3): E e^4 is infinite), so it must say so
            assert flagged >= 0.85, (kind, key, flagged)
    if kind != "gauss":
        assert not overall["models"]["baseline"]["rmse"]["reliable"]
        assert "kurtosis" in overall["models"]["baseline"]["rmse"]["reason"] or \
            "tail index" in overall["models"]["baseline"]["rmse"]["reason"]


@pytest.mark.parametrize("kind", ["gauss", "t3", "lognorm"])
def test_coverage(kind, captured):
    R = 300
    rows, overall = _coverage(kind, R=R, n=1000, B=400, seed=11, captured=captured)
    _check(kind, rows, overall, R, 1000)


@slow
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gauss", "t3", "lognorm"])
@pytest.mark.parametrize("n", [300, 3000])
def test_coverage_long(kind, n, captured):
    R = 1500 if n == 300 else 600
    rows, overall = _coverage(kind, R=R, n=n, B=1000, seed=12, captured=captured)
    _check(kind, rows, overall, R, n)
