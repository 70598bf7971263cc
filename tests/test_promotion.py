"""Promotion through Dagster: opt-in, only on PASS, with an audit record; never on FAIL or INCONCLUSIVE."""

import pytest
import yaml

import dagster as dg

from eval_pipeline.cli import run_evaluation
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry

from .toy import TOY_SPEC, fit_model, land, register_joblib, toy_frame


@pytest.fixture
def toy_lake(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    reg = Registry(lake)
    frame = toy_frame(4000)
    land(lake, frame)
    register_joblib(reg, "1", fit_model(frame.iloc[:300], c=0.001))  # weak champion
    reg.set_champion("toy_model", "1", reason="initial")
    register_joblib(reg, "2", fit_model(frame.iloc[:2000]))          # clearly better candidate
    return lake, reg, tmp_path


def _spec(tmp_path, gates, name="spec.yaml"):
    spec = {**TOY_SPEC, "gates": gates, "evaluation": {"bootstrap_replicates": 400}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _promotion_metadata(home, partition):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ev = instance.get_latest_materialization_event(dg.AssetKey(["toy", "champion_promotion"]))
        return None if ev is None else {k: v.value for k, v in ev.asset_materialization.metadata.items()}


def test_pass_is_promoted_only_when_opted_in(toy_lake, monkeypatch):
    lake, reg, tmp = toy_lake
    spec = _spec(tmp, [{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.02}])
    monkeypatch.delenv("EVAL_PROMOTE_ON_PASS", raising=False)
    code, result = run_evaluation(spec, lake.root, "toy_model@2", dagster_home=str(tmp / "h1"))
    assert code == 0 and result["verdict"] == "PASS"
    assert reg.champion("toy_model") == "1"
    assert _promotion_metadata(tmp / "h1", "2") == {"promoted": False, "why": "promotion is opt-in and disabled"}

    monkeypatch.setenv("EVAL_PROMOTE_ON_PASS", "1")
    code, result = run_evaluation(spec, lake.root, "toy_model@2", dagster_home=str(tmp / "h2"))
    assert code == 0
    assert reg.champion("toy_model") == "2"
    audit = reg.promotions("toy_model")[-1]
    assert audit["version"] == "2" and audit["previous"] == "1"
    assert audit["evidence"]["result"] == result["paths"]["result"]
    assert [g["outcome"] for g in audit["evidence"]["gates"]] == ["PASS"]
    assert _promotion_metadata(tmp / "h2", "2")["promoted"] is True


def test_inconclusive_is_never_promoted(toy_lake, monkeypatch):
    lake, reg, tmp = toy_lake
    monkeypatch.setenv("EVAL_PROMOTE_ON_PASS", "1")
    # A gate on a slice that is not in the data cannot be decided: INCONCLUSIVE, whatever else passes.
    spec = _spec(tmp, [{"metric": "accuracy", "kind": "absolute", "min": 0.5, "slices": "b=y"},
                       {"metric": "roc_auc", "kind": "absolute", "max": 0.999, "slices": "b=nope"}])
    code, result = run_evaluation(spec, lake.root, "toy_model@2", dagster_home=str(tmp / "h"))
    assert code == 3 and result["verdict"] == "INCONCLUSIVE"
    assert reg.champion("toy_model") == "1"
    assert reg.promotions("toy_model")[-1]["version"] == "1"
