"""Reproducers of the interval defects found in review (issue 8), each checked against an independent fact.

The coverage and false-FAIL matrix is in test_simulation.py; these are the single-dataset cases."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import accuracy_score, log_loss

from eval_pipeline.engine import SliceConfig, evaluate

BIN = "binary_classification"


def _two_models(n, seed, lo=0.0, hi=1.0, monotone=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    lat = rng.normal(size=n) + y
    b = lo + (hi - lo) / (1 + np.exp(-lat))
    if monotone:  # a strictly increasing transform of the baseline: the same ranking
        c = lo + (hi - lo) / (1 + np.exp(-1.3 * lat - 0.2))
    else:
        c = lo + (hi - lo) / (1 + np.exp(-(lat + 0.7 * rng.normal(size=n))))
    return pd.DataFrame({"y": y, "b": b, "c": c})


def _eval(df, metrics, **kw):
    return evaluate(df, task_type=BIN, label="y", predictions={"baseline": "b", "candidate": "c"}, metrics=metrics,
                    n_boot=kw.pop("n_boot", 300), seed=1, **kw).to_dict()


def test_narrow_band_intervals_have_width():
    """Scores squashed into [0.51, 0.54] used to fall into one fixed bin: a zero-width AUC interval."""
    df = _two_models(3000, 0, 0.51, 0.54)
    ov = _eval(df, ["roc_auc", "average_precision", "log_loss", "brier"])["slices"][0]
    for m in ("roc_auc", "average_precision"):
        lo, hi = ov["models"]["candidate"][m]["ci"]
        assert hi - lo > 0.02, (m, lo, hi)  # an AUC from 900 positives has a standard error ~0.01
        assert lo <= ov["models"]["candidate"][m]["value"] <= hi
    lo, hi = ov["delta"]["roc_auc"]["ci"]
    assert lo < ov["delta"]["roc_auc"]["value"] < hi and hi - lo > 0.005


def test_identical_rankings_have_an_exactly_zero_auc_delta():
    """Every resample ranks the rows identically under both models, so their AUC and AP are equal in every one."""
    df = _two_models(5000, 1, monotone=True)
    res = _eval(df, ["roc_auc", "average_precision", "log_loss"], slices=SliceConfig(columns=[]))
    d = res["slices"][0]["delta"]
    for m in ("roc_auc", "average_precision"):
        assert d[m]["value"] == 0.0 and d[m]["ci"] == [0.0, 0.0], (m, d[m])
    assert d["log_loss"]["ci"][1] - d["log_loss"]["ci"][0] > 0  # calibration differs, so log loss does


def test_intervals_stay_in_range_near_perfect_model():
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.5).astype(int)
    s = np.clip(y * 0.97 + rng.normal(0, 0.02, 400), 0, 1)
    df = pd.DataFrame({"y": y, "b": s, "c": s})
    ov = _eval(df, ["roc_auc", "average_precision", "brier", "log_loss", "ece"])["slices"][0]
    for m, (lo_b, hi_b) in {"roc_auc": (0, 1), "average_precision": (0, 1), "brier": (0, 1), "ece": (0, 1),
                            "log_loss": (0, np.inf)}.items():
        lo, hi = ov["models"]["candidate"][m]["ci"]
        assert lo_b <= lo <= hi <= hi_b, (m, lo, hi)


def test_float32_scores_are_thresholded_and_clipped_in_float32():
    """numpy compares float32 scores with float32(threshold); scikit-learn clips float32 with float32's epsilon."""
    rng = np.random.default_rng(4)
    n = 2000
    y = (rng.random(n) < 0.4).astype(int)
    s = rng.random(n).astype(np.float32)
    s[:200] = np.float32(0.7)  # exactly at float32(0.7) = 0.69999999, below the float64 0.7
    s[200:210] = 0.0  # log loss of a positive at 0 is clipped at eps
    y[200:210] = 1
    for batch in (pd.DataFrame({"y": y, "s": s}), pa.table({"y": y, "s": s})):
        res = evaluate(batch, task_type=BIN, label="y", predictions={"m": "s"}, baseline=None, candidate="m",
                       metrics=["accuracy", "log_loss"], threshold=0.7, n_boot=0).to_dict()
        ov = res["slices"][0]["models"]["m"]
        assert ov["accuracy"]["value"] == pytest.approx(accuracy_score(y, s >= 0.7), abs=1e-12)
        assert ov["log_loss"]["value"] == pytest.approx(log_loss(y, s), rel=1e-6)


def test_min_positives_marks_a_slice_too_small_and_says_why():
    rng = np.random.default_rng(5)
    n = 1200
    g = np.repeat(["a", "b"], n // 2)
    y = np.where(g == "a", rng.random(n) < 0.4, rng.random(n) < 0.015).astype(int)  # b: ~9 positives in 600
    df = pd.DataFrame({"y": y, "b": rng.random(n), "c": rng.random(n), "g": g})
    res = _eval(df, ["roc_auc"], slices=SliceConfig(columns=["g"], min_size=100, min_positives=30, min_negatives=30))
    by = {s["slice"]: s for s in res["slices"]}
    assert by["g=a"]["status"] == "ok"
    assert by["g=b"]["status"] == "too_small" and "min_positives 30" in by["g=b"]["too_small"]
    assert by["g=b"]["models"] == {}


def test_percentile_interval_fast_path_equals_numpys_nanquantile():
    """percentile_ci takes np.quantile when no replicate is NaN (it runs ~1,000 times an evaluation): the bounds must
    be numpy's nanquantile's, float for float, on what replicates look like (ties, a narrow band, one slice or many,
    B = 2 ... 1001), and NaN replicates (a resample without positives) must still be ignored."""
    from eval_pipeline.engine.bootstrap import percentile_ci

    rng = np.random.default_rng(3)
    for trial in range(200):
        b = int(rng.choice([2, 50, 999, 1000, 1001]))
        shape = (b,) if trial % 2 else (b, int(rng.integers(1, 40)))
        reps = np.round(0.7 + 1e-3 * rng.standard_normal(shape), int(rng.integers(2, 9)))
        for confidence in (0.95, 0.99, 0.9983):
            lo, hi = percentile_ci(reps, confidence)
            a = (1 - confidence) / 2
            assert np.array_equal(lo, np.nanquantile(reps, a, axis=0))
            assert np.array_equal(hi, np.nanquantile(reps, 1 - a, axis=0))
    reps = rng.random((1000, 3))
    reps[::7, 1] = np.nan
    lo, hi = percentile_ci(reps, 0.95)
    kept = reps[~np.isnan(reps[:, 1]), 1]
    a = (1 - 0.95) / 2
    assert lo[1] == pytest.approx(np.quantile(kept, a), rel=1e-12)
    assert hi[1] == pytest.approx(np.quantile(kept, 1 - a), rel=1e-12)
    assert np.array_equal(lo, np.nanquantile(reps, a, axis=0))  # the NaN path is numpy's nanquantile, as before
