"""Power of the gate rows: a planted effect equal to the reported minimum detectable effect (MDE) must PASS with
probability close to the configured power.

Each simulation packs R independent datasets into one evaluation as slices (one slice per dataset) and gates every
slice with ``multiplicity='none'``, so each row is tested at the same level ``alpha`` and the R rows are R independent
trials. The MDE is a property of the design (slice size, se, level), so it is read off the rows first (mean over the R
rows) and the gate is then placed exactly MDE away from the truth: ``min = truth - MDE`` for an absolute gate;
``margin = MDE`` for a non-inferiority gate between two equally good models (true delta 0 = -margin + MDE). The PASS
rate over the R rows is compared with the power within its binomial standard error.

Shares near 0.5 are used on purpose: the MDE formula assumes the se does not depend on where the estimate falls,
which holds best there (at accuracy 0.85 the se grows as the estimate drops, and the PASS rate is ~2 points below the
power for that reason alone). Run with ``pytest -s`` to see the rates. The long variant (R = 3000, powers 0.5 / 0.8 /
0.9, also a binormal ROC AUC delta) is marked ``slow`` (``-m slow`` or ``EVAL_SIM_SLOW=1``, see conftest); measured:
PASS rates 0.488 / 0.775 / 0.881 (absolute accuracy), 0.504 / 0.791 / 0.891 (accuracy delta), 0.486 / 0.792 / 0.894
(AUC delta), binomial se 0.009 / 0.007 / 0.005: the MDE is at most ~2 points optimistic.
"""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from eval_pipeline.engine import GateDef, SliceConfig, apply_gates, evaluate

ALPHA = 0.025


def _accuracy_data(R, n, p, seed, paired):
    """R datasets x n rows; each model is right with probability p, independently (accuracy is exact counts)."""
    rng = np.random.default_rng(seed)
    N = R * n
    y = (rng.random(N) < 0.5).astype(int)
    cols = {"y": y, "rep": np.repeat(np.arange(R), n)}
    for name in ("c", "b") if paired else ("c",):
        pred = np.where(rng.random(N) < p, y, 1 - y)
        cols[name] = np.where(pred == 1, 0.9, 0.1)
    return pd.DataFrame(cols)


def _binormal_data(R, n, seed):
    """R datasets x n rows, two equally good, independent binormal scorers (d' = 1), well spread scores."""
    rng = np.random.default_rng(seed)
    N = R * n
    y = (rng.random(N) < 0.5).astype(int)
    cols = {"y": y, "rep": np.repeat(np.arange(R), n)}
    for name in ("c", "b"):
        cols[name] = 1 / (1 + np.exp(-(rng.normal(size=N) + y)))
    return pd.DataFrame(cols)


def _eval(df, paired, R, n_boot, seed, metric="accuracy"):
    preds = {"baseline": "b", "candidate": "c"} if paired else {"m": "c"}
    kw = {} if paired else {"baseline": None, "candidate": "m"}
    return evaluate(df, task_type="binary_classification", label="y", predictions=preds,
                    slices=SliceConfig(columns=["rep"], max_values=R, min_size=10), metrics=[metric],
                    n_boot=n_boot, seed=seed, **kw)


def _rows(res, gate, power):
    rep = apply_gates(res, [gate], multiplicity="none", alpha=ALPHA, power=power)
    return [g for g in rep.to_dict()["gates"] if g["slice"] != "overall"]


def _check_rate(rate, power, R, label):
    se = math.sqrt(power * (1 - power) / R)
    print(f"\n[power] {label}: PASS rate {rate:.3f} with the truth exactly MDE past the bound; configured power "
          f"{power} (binomial se {se:.3f}, R = {R})")
    # 3 binomial standard errors, plus 0.01 for the normal approximation the MDE formula rests on (bootstrap
    # p-values on a grid of 1/(B+1), accuracy on a grid of 1/n)
    assert abs(rate - power) <= 3 * se + 0.01, (label, rate, power)


def absolute_accuracy_rates(R, n, powers, seed, p=0.6, n_boot=1000):
    """{power: PASS rate} for an absolute accuracy gate placed MDE(power) below the true accuracy p."""
    res = _eval(_accuracy_data(R, n, p, seed, paired=False), False, R, n_boot, seed + 1)
    out = {}
    for power in powers:
        rows = _rows(res, GateDef("accuracy", "absolute", min=0.0, slices="all"), power)
        se_rep = float(np.mean([g["se"] for g in rows]))
        # independent reference: the binomial standard error of a share
        assert se_rep == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.03)
        mde = float(np.mean([g["mde"] for g in rows]))
        assert mde == pytest.approx((norm.ppf(1 - ALPHA) + norm.ppf(power)) * se_rep, rel=0.01)
        rows = _rows(res, GateDef("accuracy", "absolute", min=p - mde, slices="all"), power)
        assert all(g["power"] == power and g["mde"] is not None for g in rows)
        out[power] = float(np.mean([g["outcome"] == "PASS" for g in rows]))
    return out


def noninferior_rates(R, n, powers, seed, metric="accuracy", p=0.6, n_boot=1000):
    """{power: PASS rate} for a non-inferiority gate with margin = MDE(power) between two equally good models."""
    df = _accuracy_data(R, n, p, seed, paired=True) if metric == "accuracy" else _binormal_data(R, n, seed)
    res = _eval(df, True, R, n_boot, seed + 1, metric=metric)
    out = {}
    for power in powers:
        rows = _rows(res, GateDef(metric, "non_inferiority", margin=0.0, slices="all"), power)
        se_rep = float(np.mean([g["se"] for g in rows]))
        if metric == "accuracy":
            # independent reference: the difference of two independent binomial shares
            assert se_rep == pytest.approx(math.sqrt(2 * p * (1 - p) / n), rel=0.03)
        mde = float(np.mean([g["mde"] for g in rows]))
        rows = _rows(res, GateDef(metric, "non_inferiority", margin=mde, slices="all"), power)
        out[power] = float(np.mean([g["outcome"] == "PASS" for g in rows]))
    return out


def test_mde_absolute_accuracy_pass_rate_matches_power():
    R = 1000
    _check_rate(absolute_accuracy_rates(R, 1000, [0.8], seed=11)[0.8], 0.8, R, "absolute accuracy, n=1000")


def test_mde_non_inferiority_pass_rate_matches_power():
    R = 800
    _check_rate(noninferior_rates(R, 1000, [0.8], seed=21)[0.8], 0.8, R,
                "non-inferiority accuracy, equal models, n=1000")


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["absolute-accuracy", "noninferiority-accuracy", "noninferiority-roc_auc"])
def test_mde_pass_rate_matches_power_long(scenario):
    R, powers = 3000, [0.5, 0.8, 0.9]
    if scenario == "absolute-accuracy":
        rates = absolute_accuracy_rates(R, 1000, powers, seed=31)
    elif scenario == "noninferiority-accuracy":
        rates = noninferior_rates(R, 1000, powers, seed=41)
    else:  # well-spread binormal scores: AUC replicates from the engine's score-metric bootstrap
        rates = noninferior_rates(R, 1000, powers, seed=51, metric="roc_auc")
    for power in powers:
        _check_rate(rates[power], power, R, f"{scenario}, power {power}")
