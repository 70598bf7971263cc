"""Issue 10, items 2 and 3, through real Dagster (a persistent temporary instance) on the toy task:

- a FAIL verdict is a SUCCESSFUL run whose gates check failed (severity ERROR, deciding rows in its metadata) and
  whose champion_promotion did not materialize (an observation says why); a broken model artifact fails the run;
- every evaluation records numeric metadata (read back from the instance for two materializations), the gates check
  carries each partition's own version and verdict, and the ``<task>/history`` asset gathers ``history/`` into a
  table (values equal to the result JSONs') and a deterministic trend plot.
"""

import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml

from eval_pipeline import history
from eval_pipeline.cli import run_evaluation
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.spec import parse_spec

from .toy import TOY_SPEC, fit_model, land, toy_frame

TASK, MODEL = "toy", "toy_model"
GATES = [{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.02},
         {"metric": "accuracy", "kind": "absolute", "min": 0.55}]


def _register(reg, version, model):
    reg.register(MODEL, version, sio.dumps(model), flavor="sklearn-skops", artifact_name="model.skops")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Champion v1 (weak); v2 fitted on flipped labels (FAILs the AUC gate); v3 clearly better (PASSes). Both
    evaluated through the CLI path into one persistent Dagster instance."""
    root = tmp_path_factory.mktemp("trends")
    lake = Lake(str(root / "lake"))
    frame = toy_frame(4000)
    land(lake, frame)
    reg = Registry(lake)
    _register(reg, "1", fit_model(frame.iloc[:300], c=0.001))
    reg.set_champion(MODEL, "1", reason="test setup")
    _register(reg, "2", fit_model(frame.iloc[:1000].assign(y=1 - frame["y"].iloc[:1000])))
    _register(reg, "3", fit_model(frame.iloc[:2000]))
    shutil.copytree(root / "lake", root / "pristine")
    spec_path = root / "toy.yaml"
    # drift off: Evidently is not what these tests are about, and it costs seconds per run
    spec_path.write_text(yaml.safe_dump({**TOY_SPEC, "gates": GATES, "evaluation": {"bootstrap_replicates": 400},
                                         "drift": {"enabled": False}}))
    home = root / "home"
    results = {}
    for version, (code, verdict) in {"2": (1, "FAIL"), "3": (0, "PASS")}.items():
        got_code, results[version] = run_evaluation(str(spec_path), lake.root, f"{MODEL}@{version}",
                                                    dagster_home=str(home))
        assert (got_code, results[version]["verdict"]) == (code, verdict), results[version]["gates"]
    return {"root": root, "lake": lake, "reg": reg, "spec": str(spec_path), "home": home, "results": results}


def _eval_run(instance, version):
    (record,) = instance.get_run_records(filters=dg.RunsFilter(
        job_name=f"{TASK}__evaluate", tags={"eval/task": TASK, "eval/version": version}))
    return record.dagster_run


def _events(instance, run_id, event_type):
    return [r.event_log_entry for r in instance.get_records_for_run(run_id, of_type=event_type).records]


def _check_evaluation(instance, run_id, name="gates_pass"):
    (entry,) = [e for e in _events(instance, run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
                if e.dagster_event.event_specific_data.check_name == name]
    return entry.dagster_event.event_specific_data


def _overall(result, role, metric):
    overall = next(s for s in result["metrics"]["slices"] if s["slice"] == "overall")
    return (overall["delta"] if role == "delta" else overall["models"][role])[metric]


# -- item 3: a rejected candidate is not a crash ---------------------------------------------------------------------
def test_fail_verdict_is_a_successful_run_with_a_failed_check_and_no_promotion(evaluated):
    result = evaluated["results"]["2"]
    partition = f"2@{result['dataset']['snapshot_id']}"
    with dg.DagsterInstance.from_config(str(evaluated["home"])) as instance:
        run = _eval_run(instance, "2")
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert not _events(instance, run.run_id, dg.DagsterEventType.STEP_FAILURE)
        check = _check_evaluation(instance, run.run_id)
        assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR
        assert check.partition == partition  # each version's own outcome, per partition
        meta = {k: v.value for k, v in check.metadata.items()}
        assert (meta["verdict"], meta["version"], meta["snapshot_id"]) == ("FAIL", "2", result["dataset"]["snapshot_id"])
        assert meta["baseline"] == "toy_model@1" and meta["gates_fail"] >= 1
        deciding = [g for g in result["gates"] if g["outcome"] == "FAIL"]
        assert deciding and all(g["rule"] in meta["deciding_gates"] for g in deciding)
        assert check.description.startswith("FAIL for toy_model@2") and "roc_auc on overall" in check.description

        # champion_promotion: skipped (not materialized), an observation says why
        promotions = instance.fetch_materializations(dg.AssetKey([TASK, "champion_promotion"]), limit=10).records
        assert partition not in {r.asset_materialization.partition for r in promotions}
        (obs,) = instance.fetch_observations(dg.AssetKey([TASK, "champion_promotion"]), limit=10).records
        assert obs.asset_observation.partition == partition
        why = {k: v.value for k, v in obs.asset_observation.metadata.items()}
        assert why["promoted"] is False and why["verdict"] == "FAIL"
        assert why["why"].startswith("verdict is FAIL against toy_model@1: roc_auc on overall")
        # the rest of the chain ran: release_gates and the history asset materialized in that run
        mats = {e.dagster_event.asset_key.path[-1]
                for e in _events(instance, run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)}
        assert {"predictions", "evaluation", "decision_report", "release_gates", "history"} <= mats
        assert "champion_promotion" not in mats
    assert evaluated["reg"].champion(MODEL) == "1"


def test_broken_model_artifact_is_a_failed_run(evaluated, tmp_path):
    shutil.copytree(evaluated["root"] / "pristine", tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    # stored as it is (no register-time check): the bytes are pinned but are not a skops file
    Registry(lake).register(MODEL, "4", b"not a model at all", flavor="sklearn-skops", artifact_name="model.skops")
    home = tmp_path / "home"
    code, result = run_evaluation(evaluated["spec"], lake.root, f"{MODEL}@4", dagster_home=str(home))
    assert code == 2 and result is None
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = _eval_run(instance, "4")
        assert run.status == dg.DagsterRunStatus.FAILURE
        (failure,) = _events(instance, run.run_id, dg.DagsterEventType.STEP_FAILURE)
        assert failure.step_key == f"{TASK}__predictions"
        assert not _events(instance, run.run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    assert not lake.exists(f"history/{TASK}/{MODEL}")


# -- item 2: trends -------------------------------------------------------------------------------------------------
def test_each_evaluation_records_numeric_metadata_and_its_own_gate_outcome(evaluated):
    results = evaluated["results"]
    with dg.DagsterInstance.from_config(str(evaluated["home"])) as instance:
        records = instance.fetch_materializations(dg.AssetKey([TASK, "evaluation"]), limit=10).records
        assert len(records) == 2
        for rec in records:
            mat = rec.asset_materialization
            version = mat.partition.split("@")[0]
            result = results[version]
            for metric in ("roc_auc", "accuracy"):
                for role in ("candidate", "baseline", "delta"):
                    cell = _overall(result, role, metric)
                    entry = mat.metadata[f"{role}/{metric}"]
                    assert isinstance(entry, dg.FloatMetadataValue) and entry.value == cell["value"]
                    low, high = mat.metadata[f"{role}/{metric}/ci_low"], mat.metadata[f"{role}/{metric}/ci_high"]
                    assert isinstance(low, dg.FloatMetadataValue) and [low.value, high.value] == cell["ci"]
            assert isinstance(mat.metadata["rows"], dg.IntMetadataValue)
            assert mat.metadata["rows"].value == result["metrics"]["n_rows"] == 4000
        # the gates check of each partition says that partition's version and verdict
        outcomes = {}
        for version in ("2", "3"):
            check = _check_evaluation(instance, _eval_run(instance, version).run_id)
            outcomes[version] = (check.metadata["version"].value, check.metadata["verdict"].value, check.passed)
        assert outcomes == {"2": ("2", "FAIL", False), "3": ("3", "PASS", True)}


def test_history_asset_gathers_both_evaluations(evaluated):
    lake, results = evaluated["lake"], evaluated["results"]
    frame = lake.read_parquet(f"trends/{TASK}/{MODEL}/history.parquet")
    assert len(frame) == 2 and sorted(frame["version"]) == ["2", "3"]
    for _, row in frame.iterrows():
        result = results[row["version"]]
        assert row["verdict"] == result["verdict"] and row["mode"] == "release"
        assert row["baseline"] == "toy_model@1" and row["snapshot_id"] == result["dataset"]["snapshot_id"]
        assert row["evidence_id"] == result["evidence_id"]
        for metric in result["metrics"]["metrics"]:
            assert row[f"candidate/{metric}"] == _overall(result, "candidate", metric)["value"]
            assert row[f"baseline/{metric}"] == _overall(result, "baseline", metric)["value"]
            assert row[f"delta/{metric}"] == pytest.approx(_overall(result, "delta", metric)["value"], abs=1e-12)
    for name in ("trend.svg", "trend.png"):
        assert lake.exists(f"trends/{TASK}/{MODEL}/{name}")
    svg = lake.read_bytes(f"trends/{TASK}/{MODEL}/trend.svg").decode()
    assert "gate min 0.55" in svg and "margin 0.02" in svg  # the thresholds are drawn in (svg text stays text)
    with dg.DagsterInstance.from_config(str(evaluated["home"])) as instance:
        mats = instance.fetch_materializations(dg.AssetKey([TASK, "history"]), limit=10).records
        assert len(mats) == 2  # one per evaluation run, unpartitioned
        meta = mats[0].asset_materialization.metadata  # newest first
        assert meta["dagster/row_count"].value == 2
        assert meta["trend"].value.startswith("![trend](data:image/png;base64,")
        assert "| 2 | release | FAIL |" in meta["table"].value and "| 3 | release | PASS |" in meta["table"].value
        # the champion of that snapshot is v1 (the baseline of both release evaluations)
        assert meta["champion"].value == "toy_model@1"
        assert meta["champion/roc_auc"].value == _overall(results["3"], "baseline", "roc_auc")["value"]

    # the same history gives the same bytes (parquet and plot)
    spec = parse_spec(yaml.safe_load(open(evaluated["spec"])), "toy spec")
    before = {n: lake.read_bytes(f"trends/{TASK}/{MODEL}/{n}") for n in ("history.parquet", "trend.svg", "trend.png")}
    history.write_history(lake, spec)
    assert {n: lake.read_bytes(f"trends/{TASK}/{MODEL}/{n}") for n in before} == before


# -- the plain-Python part on synthetic history lines ---------------------------------------------------------------
def _line(version, snapshot, end, mode, verdict, baseline, cand, base=None):
    overall = {"candidate": {"roc_auc": cand}} | ({"baseline": {"roc_auc": base}} if base is not None else {})
    return {"task": TASK, "model": MODEL, "version": version, "snapshot_id": snapshot, "mode": mode,
            "verdict": verdict, "baseline": baseline, "evidence_id": f"e{version}{snapshot}",
            "time_range": ["2024-01-01T00:00:00", end], "overall": overall}


def test_champion_series_follows_the_champion_across_snapshots(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    lines = [_line("1", "s2", "2024-02-01", "monitoring", "PASS", None, 0.80),
             _line("2", "s2", "2024-02-01", "release", "PASS", "toy_model@1", 0.83, 0.80),
             _line("1", "s1", "2024-01-01", "monitoring", "PASS", None, 0.81),
             _line("3", "s3", "2024-03-01", "release", "FAIL", "toy_model@2", 0.70, 0.84)]
    for e in lines:
        lake.write_json(f"history/{TASK}/{MODEL}/{e['version']}-{e['snapshot_id']}.json", e)
    lake.write_json(f"history/{TASK}/other_model/1-s1.json", _line("1", "s1", "2024-01-01", "monitoring", "PASS",
                                                                   None, 0.1))
    entries = history.load_entries(lake, TASK, MODEL)
    assert [(e["version"], e["snapshot_id"]) for e in entries] == [("1", "s1"), ("1", "s2"), ("2", "s2"), ("3", "s3")]
    frame = history.history_frame(entries, ["roc_auc"])
    assert list(frame.columns[:7]) == history.BASE_COLUMNS
    assert np.isnan(frame.loc[0, "delta/roc_auc"]) and frame.loc[2, "delta/roc_auc"] == pytest.approx(0.03)
    series = history.champion_series(frame, ["roc_auc"])
    assert [(s["snapshot_id"], s["champion"], s["roc_auc"]) for s in series] == [
        ("s1", "1", 0.81), ("s2", "1", 0.80), ("s3", "2", 0.84)]
    spec = parse_spec({**TOY_SPEC, "gates": GATES, "evaluation": {"bootstrap_replicates": 400}}, "toy spec")
    assert history.key_metrics(spec) == ["roc_auc", "accuracy"]
    assert history.thresholds(spec, "roc_auc") == {"min": [], "max": [], "margin": [0.02]}
    assert history.thresholds(spec, "accuracy") == {"min": [0.55], "max": [], "margin": []}
    out = history.write_history(lake, spec)
    assert out["metrics"] == ["roc_auc", "accuracy"] and len(out["frame"]) == 4
    assert isinstance(lake.read_parquet(out["paths"]["parquet"]), pd.DataFrame)


def test_metric_points_keys_are_stable_and_skip_undefined():
    metrics = {"metrics": ["roc_auc", "log_loss"], "roles": ["candidate", "baseline"], "n_rows": 10,
               "slices": [{"slice": "overall", "models": {
                   "candidate": {"roc_auc": {"value": 0.7, "ci": [0.6, 0.8]}, "log_loss": {"value": None}},
                   "baseline": {"roc_auc": {"value": 0.65, "ci": [0.55, 0.75]}, "log_loss": {"value": 0.5}}},
                   "delta": {"roc_auc": {"value": 0.05, "ci": [-0.01, 0.11]}, "log_loss": {"value": None}}}]}
    assert history.metric_points(metrics) == {
        "candidate/roc_auc": 0.7, "candidate/roc_auc/ci_low": 0.6, "candidate/roc_auc/ci_high": 0.8,
        "baseline/roc_auc": 0.65, "baseline/roc_auc/ci_low": 0.55, "baseline/roc_auc/ci_high": 0.75,
        "baseline/log_loss": 0.5, "delta/roc_auc": 0.05, "delta/roc_auc/ci_low": -0.01,
        "delta/roc_auc/ci_high": 0.11, "rows": 10.0}
