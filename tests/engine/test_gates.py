"""Gate decisions: rule, outcomes, multiplicity, edge cases."""
import json

import pytest

from eval_pipeline.engine import EngineInputError, GateDef, SliceConfig, apply_gates, evaluate
from conftest import make_binary


@pytest.fixture(scope="module")
def result():
    df = make_binary(20000, seed=21)
    return evaluate(df, task_type="binary_classification", label="y", predictions={"baseline": "b", "candidate": "c"},
                    slices=SliceConfig(columns=["g"], min_size=100), metrics=["accuracy", "roc_auc", "log_loss"],
                    n_boot=400, seed=3)


def test_gate_rows_and_json(result):
    rep = apply_gates(result, [GateDef("roc_auc", "non_inferiority", margin=0.01, slices="all"),
                               GateDef("accuracy", "absolute", min=0.5),
                               GateDef("log_loss", "non_inferiority", margin=0.0)], multiplicity="holm")
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)
    assert list(d)[:4] == ["verdict", "multiplicity", "alpha", "counts"]
    assert d["alpha"] == pytest.approx(0.025)
    assert len(d["gates"]) == 5 + 1 + 1
    for g in d["gates"]:
        for k in ("gate", "metric", "slice", "kind", "role", "value", "baseline_value", "delta", "ci", "margin",
                  "bound", "n", "outcome", "rule", "p_value", "adjusted_alpha"):
            assert k in g
    # the candidate (c) is clearly better than the baseline: AUC gates PASS, lower bound above -margin
    auc = [g for g in d["gates"] if g["metric"] == "roc_auc"]
    assert all(g["outcome"] == "PASS" for g in auc)
    assert all(g["bound"] >= -0.01 and g["ci"][0] == g["bound"] for g in auc)
    assert "Holm-adjusted" in auc[0]["rule"] and "lower" in auc[0]["rule"] and "→ PASS" in auc[0]["rule"]
    ll = [g for g in d["gates"] if g["metric"] == "log_loss"][0]
    assert ll["outcome"] == "PASS" and ll["delta"] < 0 and "upper" in ll["rule"]  # lower is better
    assert d["verdict"] == "PASS"


def test_fail_when_candidate_much_worse(result):
    rep = apply_gates(result, [GateDef("roc_auc", "non_inferiority", margin=0.0, slices="g")], multiplicity="bh")
    # swap the roles: baseline is now the better model
    import copy

    r2 = copy.copy(result)
    r2.replicates = {(s, ("delta" if k == "delta" else k), m): (-v if k == "delta" else v)
                     for (s, k, m), v in result.replicates.items()}
    r2.slices = copy.deepcopy(result.slices)
    for s in r2.slices:
        for m, dv in s["delta"].items():
            if dv["value"] is not None:
                dv["value"] = -dv["value"]
    rep = apply_gates(r2, [GateDef("roc_auc", "non_inferiority", margin=0.0, slices="g")], multiplicity="bh")
    d = rep.to_dict()
    assert d["verdict"] == "FAIL" and d["counts"]["FAIL"] == 4
    assert "→ FAIL" in d["gates"][0]["rule"] and "BH-adjusted" in d["gates"][0]["rule"]


def test_inconclusive_cases():
    df = make_binary(3000, seed=22)
    res = evaluate(df, task_type="binary_classification", label="y", predictions={"baseline": "b", "candidate": "c"},
                   slices=SliceConfig(columns=["g"], crosses=[["g", "h"]], min_size=500), metrics=["accuracy"],
                   n_boot=200)
    d = apply_gates(res, [GateDef("accuracy", "non_inferiority", margin=0.01, slices=["g=a & h=1", "nope=1"])]).to_dict()
    assert [g["outcome"] for g in d["gates"]] == ["INCONCLUSIVE", "INCONCLUSIVE"]
    assert "too small" in d["gates"][0]["rule"] and "not found" in d["gates"][1]["rule"]
    assert d["verdict"] == "INCONCLUSIVE"
    solo = evaluate(df, task_type="binary_classification", label="y", predictions={"champion": "c"}, baseline=None,
                    candidate="champion", metrics=["accuracy"], n_boot=200)
    d = apply_gates(solo, [GateDef("accuracy", "non_inferiority", margin=0.01),
                           GateDef("accuracy", "absolute", min=0.5, max=0.99)]).to_dict()
    assert d["gates"][0]["outcome"] == "INCONCLUSIVE" and "no baseline" in d["gates"][0]["rule"]
    assert d["gates"][1]["outcome"] == "PASS" and d["gates"][1]["role"] == "champion"
    d = apply_gates(solo, [GateDef("accuracy", "absolute", min=0.97)]).to_dict()
    assert d["gates"][0]["outcome"] == "FAIL"


def test_gate_validation(result):
    with pytest.raises(EngineInputError, match="was not evaluated"):
        apply_gates(result, [GateDef("f1", "absolute", min=0.5)])
    with pytest.raises(EngineInputError, match="margin"):
        apply_gates(result, [GateDef("accuracy", "non_inferiority")])
    with pytest.raises(EngineInputError, match="multiplicity"):
        apply_gates(result, [], multiplicity="bonferroni")


def test_holm_more_conservative_than_none(result):
    gates = [GateDef("accuracy", "non_inferiority", margin=0.0, slices="all")]
    a = apply_gates(result, gates, multiplicity="none").to_dict()
    h = apply_gates(result, gates, multiplicity="holm").to_dict()
    assert a["counts"]["PASS"] >= h["counts"]["PASS"]
    assert all(g["adjusted_alpha"] <= 0.025 + 1e-15 for g in h["gates"])


# ---------------------------------------------------------------------------------- undefined replicates, resolution

import copy
import math
from fractions import Fraction

import numpy as np
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests

from eval_pipeline.engine.evaluate import EvaluationResult
from eval_pipeline.engine.gates import check_resolution, count_gate_rows, required_replicates

NEW_KEYS = ("replicates_used", "replicates_undefined", "se", "power", "mde", "n_needed")


def _with_reps(result, key, reps):
    """A copy of ``result`` whose replicates for ``key`` are replaced (the engine's own output otherwise)."""
    r2 = copy.copy(result)
    r2.replicates = dict(result.replicates)
    r2.replicates[key] = reps
    return r2


def _overall(result):
    """The result's overall slice entry."""
    return next(s for s in result.slices if s["slice"] == "overall")


def _synthetic(reps_by_slice, value=0.9, n=1000, confidence=0.95):
    """A one-model result with one slice per entry (accuracy value ``value``) and the given replicate arrays, so the
    p-values of an absolute gate are known exactly."""
    slices = [{"slice": name, "columns": {"s": name}, "n": n, "n_positive": n // 2, "status": "ok",
               "models": {"m": {"accuracy": {"value": value, "ci": None, "undefined": None}}}, "delta": {}}
              for name in reps_by_slice]
    B = max(len(r) for r in reps_by_slice.values())
    return EvaluationResult(task_type="binary_classification", n_rows=n * len(slices), threshold=0.5,
                            confidence=confidence, n_boot=B, seed=0, metrics=["accuracy"], roles=["m"],
                            baseline=None, candidate="m", slices=slices, warnings=[],
                            replicates={(name, "m", "accuracy"): np.asarray(r, dtype=float)
                                        for name, r in reps_by_slice.items()})


def test_all_undefined_replicates_inconclusive(result):
    # the issue's reproducer: a row whose replicates are all NaN raised IndexError (np.quantile of an empty array)
    B = result.n_boot
    r2 = _with_reps(result, ("g=a", "delta", "roc_auc"), np.full(B, np.nan))
    r2 = _with_reps(r2, ("g=b", "candidate", "accuracy"), np.full(B, np.nan))
    gates = [GateDef("roc_auc", "non_inferiority", margin=0.01, slices="all"),
             GateDef("accuracy", "absolute", min=0.5, slices="all")]
    d = apply_gates(r2, gates).to_dict()
    json.dumps(d, allow_nan=False)
    by = {(g["metric"], g["slice"]): g for g in d["gates"]}
    for key in (("roc_auc", "g=a"), ("accuracy", "g=b")):
        g = by[key]
        assert g["outcome"] == "INCONCLUSIVE" and g["p_value"] is None and g["adjusted_alpha"] is None
        assert g["rule"].startswith(f"all {B} bootstrap replicates") and "undefined" in g["rule"]
        assert g["replicates_used"] == 0 and g["replicates_undefined"] == B and g["mde"] is None
    # left out of the multiplicity family like the other untestable rows: 10 rows, 8 testable
    assert count_gate_rows(r2, gates) == 8 == d["resolution"]["k_rows"]
    ref = apply_gates(result, gates).to_dict()
    assert count_gate_rows(result, gates) == 10 == ref["resolution"]["k_rows"]
    lev = sorted(g["adjusted_alpha"] for g in d["gates"] if g["p_value"] is not None and g["outcome"] != "FAIL")
    assert lev[0] == pytest.approx(0.025 / 8)  # Holm's first level over the 8 testable rows


def test_all_undefined_from_the_engine():
    # the engine itself: one positive in slice g=b, so every resample that drops it has no AUC; with 3 replicates
    # and this seed all three are undefined (a NaN for a resample is the engine's contract for "metric absent").
    # If the engine stops producing NaN replicates here, the synthetic test above still covers the gate side.
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 400
    y = np.zeros(n, int)
    y[-1] = 1
    df = pd.DataFrame({"y": y, "b": rng.random(n), "c": rng.random(n), "g": ["a"] * (n // 2) + ["b"] * (n // 2)})
    for seed in range(200):
        res = evaluate(df, task_type="binary_classification", label="y",
                       predictions={"baseline": "b", "candidate": "c"}, slices=SliceConfig(columns=["g"], min_size=10),
                       metrics=["roc_auc"], n_boot=3, seed=seed)
        reps = res.replicates.get(("g=b", "candidate", "roc_auc"))
        if reps is not None and np.isnan(reps).all():
            break
    else:
        pytest.skip("the engine produced no all-undefined replicate row for any seed")
    d = apply_gates(res, [GateDef("roc_auc", "absolute", min=0.5, slices="g=b"),
                          GateDef("roc_auc", "non_inferiority", margin=0.0, slices="g=b")]).to_dict()
    assert [g["outcome"] for g in d["gates"]] == ["INCONCLUSIVE", "INCONCLUSIVE"]
    assert all("all 3 bootstrap replicates" in g["rule"] for g in d["gates"])


def test_partially_undefined_replicates_use_the_defined_ones(result):
    key = ("g=c", "delta", "roc_auc")
    reps = result.replicates[key].copy()
    B = reps.size
    holes = np.arange(0, B, 4)  # a quarter of the replicates undefined
    with_nan = reps.copy()
    with_nan[holes] = np.nan
    defined = np.delete(reps, holes)
    gate = [GateDef("roc_auc", "non_inferiority", margin=0.01, slices="g=c")]
    g = apply_gates(_with_reps(result, key, with_nan), gate, multiplicity="none").to_dict()["gates"][0]
    # the p-value is the bootstrap p-value of the defined replicates alone, B counting only those
    Bd = defined.size
    assert g["replicates_used"] == Bd and g["replicates_undefined"] == holes.size
    assert g["p_value"] == pytest.approx((1 + np.sum(defined <= -0.01)) / (Bd + 1))
    assert g["ci"][0] == pytest.approx(np.quantile(defined, 0.025))
    assert g["se"] == pytest.approx(np.std(defined, ddof=1))
    # ... and the row is the same as if only the defined replicates had been drawn, except that it says so
    h = apply_gates(_with_reps(result, key, defined), gate, multiplicity="none").to_dict()["gates"][0]
    assert (g["outcome"], g["p_value"], g["ci"], g["mde"]) == (h["outcome"], h["p_value"], h["ci"], h["mde"])
    assert f"from the {Bd} defined replicates ({holes.size} of {B} undefined" in g["rule"]
    assert h["replicates_undefined"] == 0 and "defined replicates" not in h["rule"]


@pytest.mark.parametrize("alpha_txt", ["0.025", "0.05", "0.01", "0.1", "0.005"])
def test_required_replicates_exact(alpha_txt):
    alpha = float(alpha_txt)
    a = Fraction(alpha_txt)  # exact reference: smallest B with 1 / (B + 1) <= alpha / k  <=>  B + 1 >= k / alpha
    for k in range(0, 120):
        exact = 0 if k == 0 else math.ceil(Fraction(k) / a) - 1
        assert required_replicates(k, alpha) == exact == required_replicates(k, alpha, "bh")
        if k:
            check_resolution(k, alpha, exact)
            if exact > 0:
                with pytest.raises(EngineInputError, match=f"needs n_boot >= {exact}"):
                    check_resolution(k, alpha, exact - 1)
    assert required_replicates(50, alpha, "none") == math.ceil(1 / a) - 1


def test_check_resolution_issue_numbers():
    assert required_replicates(26, 0.025) == 1039
    with pytest.raises(EngineInputError, match=r"n_boot = 1000 .* 26 gate rows .* needs n_boot >= 1039"):
        check_resolution(26, 0.025, 1000)
    check_resolution(26, 0.025, 1039)  # 1040 >= 26 / 0.025 = 1040
    # the default alpha is computed as (1 - 0.95) / 2 = 0.025000000000000022: the same answer
    assert required_replicates(26, (1 - 0.95) / 2) == 1039
    check_resolution(26, (1 - 0.95) / 2, 1039)
    check_resolution(26, 0.025, 39, "none")
    with pytest.raises(EngineInputError, match="needs n_boot >= 39"):
        check_resolution(26, 0.025, 38, "none")
    with pytest.raises(EngineInputError, match="BH can still decide"):
        check_resolution(26, 0.025, 1000, "bh")
    check_resolution(0, 0.025, 0)
    with pytest.raises(EngineInputError, match="multiplicity"):
        check_resolution(3, 0.025, 1000, "bonferroni")
    with pytest.raises(EngineInputError, match="alpha"):
        required_replicates(3, 1.5)


@pytest.mark.parametrize("alpha", [0.025, (1 - 0.95) / 2])
def test_apply_gates_resolution_26_rows(alpha):
    # 26 rows, every replicate far above the bound: each p_pass is the smallest attainable, 1 / (B + 1)
    for B, decided in ((1000, False), (1039, True)):
        res = _synthetic({f"s{i}": np.full(B, 0.9) for i in range(26)})
        rep = apply_gates(res, [GateDef("accuracy", "absolute", min=0.5, slices="all")], alpha=alpha)
        d = rep.to_dict()
        assert d["resolution"] == {"k_rows": 26, "n_boot": B, "required_n_boot": 1039, "sufficient": decided}
        if decided:
            assert d["counts"]["PASS"] == 26 and d["warnings"] == []
        else:
            assert d["counts"]["INCONCLUSIVE"] == 26 and len(d["warnings"]) == 1
            assert "needs n_boot >= 1039" in d["warnings"][0]
            assert all(g["mde"] is None and "no effect is detectable" in g["rule"] for g in d["gates"])


def _rand_pvals(rng, k):
    """A mix of clear effects (tiny p) and nulls (uniform), with ties."""
    p = np.where(rng.random(k) < 0.4, rng.random(k) * 0.01, rng.random(k))
    if k > 3:
        p[rng.integers(0, k)] = p[rng.integers(0, k)]
    return p


@pytest.fixture
def no_gc(monkeypatch):
    # statsmodels' Holm calls gc.collect() on every call (only to free memory): ~0.4 s each in a process holding
    # the module's fixtures, so hundreds of reference calls would take minutes
    import gc

    monkeypatch.setattr(gc, "collect", lambda *a, **k: 0)


@pytest.mark.parametrize("method,sm", [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjust_matches_statsmodels(method, sm, no_gc):
    from eval_pipeline.engine.gates import _adjust

    rng = np.random.default_rng(7)
    n_rej = 0
    for _ in range(500):
        k = int(rng.integers(1, 40))
        alpha = float(rng.choice([0.01, 0.025, 0.05, 0.1]))
        p = _rand_pvals(rng, k)
        rej, _lev = _adjust(list(p), alpha, method)
        ref = multipletests(p, alpha=alpha, method=sm)[0]
        assert rej == list(ref), (k, alpha, p)
        n_rej += sum(rej)
    assert n_rej > 500  # the comparison is not vacuous


@pytest.mark.parametrize("method,sm", [("holm", "holm"), ("bh", "fdr_bh"), ("none", None)])
def test_gate_decisions_match_statsmodels(method, sm, no_gc):
    # replicates with c values below the bound and B - c above: p_pass = (1 + c) / (B + 1) and
    # p_fail = (1 + B - c) / (B + 1) exactly, so the PASS and FAIL sets must be statsmodels' rejections
    rng = np.random.default_rng(11)
    B, alpha = 1999, 0.05
    for trial in range(30):
        k = int(rng.integers(2, 30))
        c = np.where(rng.random(k) < 0.35, rng.integers(0, 8, k),
                     np.where(rng.random(k) < 0.5, rng.integers(B - 8, B + 1, k), rng.integers(0, B + 1, k)))
        reps = {f"s{i:02d}": np.r_[np.full(ci, 0.4), np.full(B - ci, 0.6)] for i, ci in enumerate(c)}
        d = apply_gates(_synthetic(reps), [GateDef("accuracy", "absolute", min=0.5, slices="all")],
                        multiplicity=method, alpha=alpha).to_dict()
        p_pass, p_fail = (1 + c) / (B + 1), (1 + B - c) / (B + 1)
        if sm is None:
            ref_pass, ref_fail = p_pass <= alpha, p_fail <= alpha
        else:
            ref_pass = multipletests(p_pass, alpha=alpha, method=sm)[0]
            ref_fail = multipletests(p_fail, alpha=alpha, method=sm)[0]
        got = [g["outcome"] for g in d["gates"]]
        want = ["PASS" if a else ("FAIL" if b else "INCONCLUSIVE") for a, b in zip(ref_pass, ref_fail)]
        assert got == want, (trial, c)


def test_power_fields_and_n_needed(result):
    acc = _overall(result)["models"]["candidate"]["accuracy"]["value"]
    gates = [GateDef("accuracy", "non_inferiority", margin=0.0, slices="all"),
             GateDef("roc_auc", "absolute", min=0.5, max=0.99, slices="all"),
             GateDef("accuracy", "absolute", min=acc - 0.003, slices="all")]  # close to the estimates: undecided
    # unadjusted, so every row's PASS and FAIL levels are alpha (the fixture's B = 400 is too few for Holm over 15)
    d = apply_gates(result, gates, power=0.9, multiplicity="none").to_dict()
    json.dumps(d, allow_nan=False)
    assert d["power"] == 0.9 and d["resolution"]["sufficient"]
    assert apply_gates(result, gates).to_dict()["resolution"] == {"k_rows": 15, "n_boot": 400,
                                                                 "required_n_boot": 599, "sufficient": False}
    z = norm.ppf
    n_inc = 0
    for g in d["gates"]:
        for k in NEW_KEYS:
            assert k in g
        assert g["power"] == 0.9
        reps = result.replicates[(g["slice"], "delta" if g["kind"] == "non_inferiority" else "candidate", g["metric"])]
        se = float(np.std(reps, ddof=1))
        assert g["se"] == pytest.approx(se)
        if g["outcome"] != "FAIL":  # adjusted_alpha is the PASS level: the MDE's level
            a = g["adjusted_alpha"]
            assert g["mde"] == pytest.approx((z(1 - a) + z(0.9)) * se)
            assert "MDE at 90% power" in g["rule"]
        if g["outcome"] == "INCONCLUSIVE":
            n_inc += 1
            if g["kind"] == "non_inferiority":
                gap = g["delta"] + 0.0
            elif g["max"] is not None:
                gap = min(g["value"] - 0.5, 0.99 - g["value"])
            else:
                gap = g["value"] - g["min"]
            # PASS side at the PASS level; FAIL side at the FAIL level, halved for two bounds (Bonferroni)
            if gap > 0:
                target, lvl = "PASS", 0.025
            else:
                target, lvl = "FAIL", 0.025 / (2 if g["max"] is not None else 1)
            want = math.ceil(g["n"] * ((z(1 - lvl) + z(0.9)) * se / abs(gap)) ** 2)
            assert g["n_needed"] == want and f"n_needed ≈ {want} rows" in g["rule"] and f"to {target}" in g["rule"]
        else:
            assert g["n_needed"] is None
    assert n_inc >= 2
    with pytest.raises(EngineInputError, match="power"):
        apply_gates(result, [], power=1.0)


def test_n_needed_on_the_fail_side():
    # estimate 0.49 under min 0.5 but not significantly: n_needed at the FAIL level (both bounds: Bonferroni / 2)
    rng = np.random.default_rng(3)
    reps = 0.49 + rng.normal(0, 0.02, 2000)
    res = _synthetic({"overall": reps}, value=0.49, n=500)
    for gate, split in ((GateDef("accuracy", "absolute", min=0.5), 1), (GateDef("accuracy", "absolute", min=0.5,
                                                                                max=0.9), 2)):
        g = apply_gates(res, [gate], alpha=0.025).to_dict()["gates"][0]
        assert g["outcome"] == "INCONCLUSIVE"
        se = float(np.std(reps, ddof=1))
        want = math.ceil(500 * ((norm.ppf(1 - 0.025 / split) + norm.ppf(0.8)) * se / 0.01) ** 2)
        assert g["n_needed"] == want and "to FAIL" in g["rule"]
