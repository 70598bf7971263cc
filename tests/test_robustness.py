"""Robustness stress tests (eval_pipeline.robustness) on real scikit-learn models, checked against sklearn metrics."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from eval_pipeline.registry import ModelManifest
from eval_pipeline.robustness import (RobustnessError, id_hash, perturb, run_robustness, sample_rows, shift_mask)
from eval_pipeline.robustness_spec import PerturbationSpec
from eval_pipeline.scoring import LoadedModel
from eval_pipeline.spec import SpecError
from tests.toy import toy_frame, toy_spec

ROB = {"max_rows": 3000, "perturbations": [
    {"name": "noise", "kind": "gaussian_noise", "columns": ["a"], "scale": 3.0},
    {"name": "swap_b", "kind": "swap_category", "columns": ["b"], "fraction": 0.5},
    {"name": "unseen_b", "kind": "unseen_category", "columns": ["b"]},
    {"name": "far", "kind": "covariate_shift", "columns": ["a"], "strength": 1.0},
], "gates": [{"metric": "roc_auc", "max_drop": 0.05}]}


def _model(frame, unknown="ignore"):
    pre = ColumnTransformer([("num", StandardScaler(), ["a"]), ("cat", OneHotEncoder(handle_unknown=unknown), ["b"])])
    return make_pipeline(pre, LogisticRegression()).fit(frame[["a", "b"]], frame["y"])


def _loaded(model):
    m = ModelManifest(name="toy_model", version="v1", flavor="sklearn-joblib", artifact="model.joblib", sha256="0" * 64,
                      created_at="2026-01-01T00:00:00Z")
    return LoadedModel(m, model=model)


@pytest.fixture(scope="module")
def data():
    return toy_frame(4000, seed=3)


@pytest.fixture(scope="module")
def spec():
    return toy_spec(robustness=ROB, evaluation={"bootstrap_replicates": 400})


def test_sample_is_the_smallest_hashes_whatever_the_batches(data):
    ref = data.iloc[np.argsort(id_hash(data["id"], 0), kind="stable")[:500]].reset_index(drop=True)
    for size in (97, 1000, 4000):
        batches = [data.iloc[i:i + size] for i in range(0, len(data), size)]
        got = sample_rows(batches, "id", 500, seed=0)
        pd.testing.assert_frame_equal(got, ref)


def test_perturbations_do_what_they_say(data, spec):
    x = data[["a", "b"]]
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    noisy = perturb(x, PerturbationSpec(name="n", kind="gaussian_noise", columns=["a"], scale=0.5), spec, rng())
    assert abs(np.std(noisy["a"] - x["a"]) / (0.5 * np.std(x["a"])) - 1) < 0.05
    assert (noisy["b"] == x["b"]).all()
    miss = perturb(x, PerturbationSpec(name="m", kind="missing", columns=["b"], fraction=0.3), spec, rng())
    assert 0.25 < miss["b"].isna().mean() < 0.35 and (miss.loc[miss["b"].notna(), "b"].tolist() == x.loc[miss["b"].notna(), "b"].tolist())
    swap = perturb(x, PerturbationSpec(name="s", kind="swap_category", columns=["b"]), spec, rng())
    assert (swap["b"] != x["b"]).all() and set(swap["b"]) <= set(x["b"])
    edge = perturb(x, PerturbationSpec(name="e", kind="boundary", columns=["a"]), spec, rng())
    assert set(edge["a"]) == {x["a"].min(), x["a"].max()}
    out = perturb(x, PerturbationSpec(name="o", kind="out_of_range", columns=["a"], factor=1.0), spec, rng())
    assert ((out["a"] < x["a"].min()) | (out["a"] > x["a"].max())).all()


def test_kind_and_column_type_are_checked(data, spec):
    with pytest.raises(RobustnessError, match="column 'b' is categorical"):
        perturb(data, PerturbationSpec(name="n", kind="gaussian_noise", columns=["b"]), spec, np.random.default_rng(0))
    with pytest.raises(SpecError, match=r"robustness.perturbations.0.columns: \['zz'\] are not in columns.features"):
        toy_spec(robustness={"perturbations": [{"name": "x", "kind": "missing", "columns": ["zz"]}]})
    with pytest.raises(SpecError, match="robustness.gates.0.metric: 'mae'"):
        toy_spec(robustness={"gates": [{"metric": "mae", "max_drop": 0.1}]})


def test_deltas_match_sklearn_and_gates_decide_known_outcomes(data, spec):
    model = _model(data.iloc[:2000])
    sample = data.iloc[2000:].reset_index(drop=True)
    out = run_robustness(sample, _loaded(model), spec)
    by = {p["name"]: p for p in out["perturbations"]}
    clean = model.predict_proba(sample[["a", "b"]])[:, 1]
    y = sample["y"]
    # noise x3 sd on the main predictor: the same perturbation recomputed here, the metrics by scikit-learn
    noisy = perturb(sample[["a", "b"]], spec.robustness.perturbations[0], spec, np.random.default_rng([0, 0]))
    pert = model.predict_proba(noisy)[:, 1]
    m = by["noise"]["metrics"]
    assert m["roc_auc"]["clean"] == pytest.approx(roc_auc_score(y, clean), abs=1e-12)
    assert m["roc_auc"]["perturbed"] == pytest.approx(roc_auc_score(y, pert), abs=1e-12)
    assert m["accuracy"]["delta"] == pytest.approx(accuracy_score(y, pert >= 0.5) - accuracy_score(y, clean >= 0.5), abs=1e-12)
    assert m["roc_auc"]["delta"] < -0.1 and m["roc_auc"]["ci"][1] < -0.05
    assert by["noise"]["verdict"] == "FAIL"
    # b barely matters (0.8 logit for one value): swapping half of it costs far less than 0.05 AUC
    assert by["swap_b"]["verdict"] == "PASS", by["swap_b"]["gates"]
    # the shifted population is a subset; its delta is sklearn on the kept rows minus sklearn on all rows
    keep = shift_mask(sample, spec.robustness.perturbations[3], spec, 0)
    assert 0.1 < keep.mean() < 0.9 and by["far"]["rows"] == keep.sum()
    want = roc_auc_score(y[keep], clean[keep]) - roc_auc_score(y, clean)
    assert by["far"]["metrics"]["roc_auc"]["delta"] == pytest.approx(want, abs=1e-12)
    assert by["far"]["verdict"] in ("PASS", "INCONCLUSIVE", "FAIL")
    assert out["verdict"] == "FAIL"


def test_a_model_that_raises_is_a_finding(data, spec):
    strict = _model(data.iloc[:2000], unknown="error")  # OneHotEncoder raises on a category it never saw
    out = run_robustness(data.iloc[2000:].reset_index(drop=True), _loaded(strict), spec)
    unseen = {p["name"]: p for p in out["perturbations"]}["unseen_b"]
    assert unseen["status"] == "error" and "Found unknown categories" in unseen["error"]
    assert [g["outcome"] for g in unseen["gates"]] == ["FAIL"] and unseen["verdict"] == "FAIL"


def test_reproducible(data, spec):
    model = _model(data.iloc[:2000])
    sample = data.iloc[2000:].reset_index(drop=True)
    one = json.dumps(run_robustness(sample, _loaded(model), spec), sort_keys=True, default=str)
    two = json.dumps(run_robustness(sample, _loaded(model), spec), sort_keys=True, default=str)
    assert one == two
