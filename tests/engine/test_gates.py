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
