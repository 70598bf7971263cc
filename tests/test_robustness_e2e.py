"""Robustness stress tests end to end THROUGH DAGSTER (issue 12, part 2), with outcomes known from the models.

Toy task (tests/toy.py, 4,000 rows). Two perturbations of the spec, each gated on ROC AUC (max_drop 0.05):
``noise`` (Gaussian noise of 0.1 sd on ``a``: costs well under 0.05 AUC) and ``unseen_b`` (every ``b`` replaced by
a category never seen in training).

- ``@1`` champion and ``@3``: the toy logistic regression with ``OneHotEncoder(handle_unknown="ignore")``: an unseen
  category is encoded as all zeros and scoring goes on. Verdict PASS (its metric gate: identical to the champion).
- ``@2``: the same model with ``handle_unknown="error"``: scikit-learn raises on the unseen category. That is a
  finding, not a crash: the run succeeds, ``unseen_b`` has status error with scikit-learn's message, its gate FAILs
  and decides the verdict FAIL (exit code 1); ``noise`` still PASSes.
"""
import numpy as np
import pyarrow as pa
import pytest
import skops.io as sio
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import dagster as dg

from eval_pipeline.cli import run_evaluation
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.robustness import sample_rows
from eval_pipeline.snapshot import eval_rows, load_snapshot
from eval_pipeline.spec import load_spec

from .toy import TOY_SPEC, land, toy_frame

MODEL, TASK = "toy_model", "toy"
ROBUSTNESS = {"max_rows": 2500, "perturbations": [
    {"name": "noise", "kind": "gaussian_noise", "columns": ["a"], "scale": 0.1},
    {"name": "unseen_b", "kind": "unseen_category", "columns": ["b"]}],
    "gates": [{"metric": "roc_auc", "max_drop": 0.05}]}
SPEC = {**TOY_SPEC, "evaluation": {"bootstrap_replicates": 300}, "robustness": ROBUSTNESS}


def _model(frame, unknown):
    pre = ColumnTransformer([("num", StandardScaler(), ["a"]), ("cat", OneHotEncoder(handle_unknown=unknown), ["b"])])
    return make_pipeline(pre, LogisticRegression()).fit(frame[["a", "b"]], frame["y"])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("robustness")
    lake = Lake(str(root / "lake"))
    frame = toy_frame(4000, seed=11)
    land(lake, frame)
    reg = Registry(lake)
    train = frame.iloc[:1500]
    for version, unknown in (("1", "ignore"), ("2", "error"), ("3", "ignore")):
        reg.register(MODEL, version, sio.dumps(_model(train, unknown)), flavor="sklearn-skops",
                     artifact_name="model.skops")
    reg.set_champion(MODEL, "1", reason="test setup")
    spec_path = root / "toy.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    home = root / "home"
    runs = {v: run_evaluation(str(spec_path), lake.root, f"{MODEL}@{v}", str(home)) for v in ("2", "3")}
    return {"lake": lake, "frame": frame, "train": train, "spec_path": spec_path, "home": home, "runs": runs}


def test_a_model_that_raises_on_unseen_categories_fails_its_robustness_gate(evaluated):
    code, result = evaluated["runs"]["2"]
    assert code == 1 and result["verdict"] == "FAIL"
    outcomes = {g["gate"]: g["outcome"] for g in result["gates"]}
    assert outcomes == {"non_inferiority:roc_auc": "PASS", "robustness:noise:roc_auc": "PASS",
                        "robustness:unseen_b:roc_auc": "FAIL"}
    block = result["metrics"]["robustness"]
    unseen = {p["name"]: p for p in block["perturbations"]}["unseen_b"]
    assert unseen["status"] == "error" and "Found unknown categories" in unseen["error"]
    code, result = evaluated["runs"]["3"]
    assert code == 0 and result["verdict"] == "PASS"
    assert {g["gate"]: g["outcome"] for g in result["gates"]}["robustness:unseen_b:roc_auc"] == "PASS"


def test_clean_and_perturbed_numbers_are_sklearns_on_the_sampled_rows(evaluated):
    _, result = evaluated["runs"]["3"]
    lake = evaluated["lake"]
    spec = load_spec(str(evaluated["spec_path"]))
    snap = load_snapshot(lake, TASK, result["dataset"]["snapshot_id"])
    sample = sample_rows(eval_rows(lake, snap, spec, ["id", "y", "a", "b"]), "id", 2500, spec.evaluation.seed)
    assert len(sample) == 2500
    model = _model(evaluated["train"], "ignore")
    clean = model.predict_proba(sample[["a", "b"]])[:, 1]
    unseen = model.predict_proba(sample[["a", "b"]].assign(b="__unseen__"))[:, 1]
    cells = {p["name"]: p["metrics"]["roc_auc"] for p in result["metrics"]["robustness"]["perturbations"]}
    assert cells["noise"]["clean"] == pytest.approx(roc_auc_score(sample["y"], clean), abs=1e-12)
    assert cells["unseen_b"]["perturbed"] == pytest.approx(roc_auc_score(sample["y"], unseen), abs=1e-12)
    assert cells["unseen_b"]["delta"] == pytest.approx(roc_auc_score(sample["y"], unseen)
                                                       - roc_auc_score(sample["y"], clean), abs=1e-12)


def test_report_and_dagster_show_the_robustness_finding(evaluated):
    lake = evaluated["lake"]
    _, result = evaluated["runs"]["2"]
    html = lake.read_text(result["paths"]["report_html"])
    assert "<h2 id=robustness>Robustness</h2>" in html and "Found unknown categories" in html
    assert "## Robustness" in lake.read_text(result["paths"]["report_md"])
    with dg.DagsterInstance.from_config(str(evaluated["home"])) as instance:
        (run,) = instance.get_run_records(filters=dg.RunsFilter(
            job_name=f"{TASK}__evaluate", tags={"eval/task": TASK, "eval/version": "2"}))
        assert run.dagster_run.is_success  # a finding, not a crashed run
        events = instance.get_records_for_run(run.dagster_run.run_id,
                                              of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        (check,) = [e.event_log_entry.dagster_event.event_specific_data for e in events
                    if e.event_log_entry.dagster_event.event_specific_data.check_name == "gates_pass"]
        assert not check.passed and "robustness:unseen_b:roc_auc" in check.metadata["deciding_gates"].value
        assert "non_inferiority:roc_auc" not in check.metadata["deciding_gates"].value
        report = instance.get_latest_materialization_event(dg.AssetKey([TASK, "decision_report"]))
        assert "## Robustness" in report.asset_materialization.metadata["report"].value
