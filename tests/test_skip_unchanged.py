"""Unchanged work is skipped, changed work is not (issue 11): `eval-pipeline evaluate` of a new candidate on a snapshot
this Dagster instance already refreshed, validated and drift-checked under the same spec runs only the evaluation job;
new landed data, a changed spec or a snapshot that failed data quality still run the refresh job (refresh, blocking
data-quality check, drift). Real Dagster instance in a temporary DAGSTER_HOME, real GX and Evidently, real models.
"""

import json

import dagster as dg
import pandas as pd
import pytest
import skops.io as sio
import yaml

from assets.common import key
from eval_pipeline import pipeline
from eval_pipeline.cli import run_evaluation
from eval_pipeline.definitions import build_definitions
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.snapshot import load_snapshot
from eval_pipeline.spec import load_spec
from resources import LakeResource, SettingsResource

from .toy import TOY_SPEC, fit_model, land, toy_frame

MODEL = "toy_model"
SPEC = {**TOY_SPEC, "evaluation": {"bootstrap_replicates": 50}}


def _runs(home, job: str) -> list:
    instance = dg.DagsterInstance.from_config(str(home))
    return [r for r in instance.get_runs() if r.job_name == job]


@pytest.fixture
def toy(tmp_path):
    """A toy lake (2000 rows in two files), champion v1 and two candidates (v2, v3: different models), a spec file,
    and a DAGSTER_HOME the CLI keeps its runs in."""
    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame(2000)
    land(lake, frame)
    reg = Registry(lake)
    for version, rows in (("1", slice(0, 1000)), ("2", slice(500, 1500)), ("3", slice(1000, 2000))):
        reg.register(MODEL, version, sio.dumps(fit_model(frame.iloc[rows])), flavor="sklearn-skops",
                     artifact_name="model.skops")
    reg.set_champion(MODEL, "1", reason="test setup")
    spec_path = tmp_path / "toy.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    return {"lake": lake, "frame": frame, "spec": str(spec_path), "home": tmp_path / "dagster_home",
            "tmp": tmp_path}


def _evaluate(toy, version: str, spec: str | None = None, **kwargs):
    code, result = run_evaluation(spec or toy["spec"], toy["lake"].root, f"{MODEL}@{version}", str(toy["home"]),
                                  **kwargs)
    return code, result


def test_new_candidate_on_unchanged_snapshot_runs_only_the_evaluation_and_new_data_refreshes_again(toy, capsys):
    lake, spec = toy["lake"], load_spec(toy["spec"])
    ctx = pipeline.TaskContext(lake, spec)

    code, first = _evaluate(toy, "2")
    assert code in (0, 1, 3)
    assert len(_runs(toy["home"], "toy__refresh")) == 1
    snapshot_id = pipeline.latest_snapshot_id(ctx)
    assert first["dataset"]["snapshot_id"] == snapshot_id
    quality_json = pipeline.quality_paths(ctx, snapshot_id)[0]
    quality_before = lake.read_bytes(quality_json)
    capsys.readouterr()

    # A new candidate, nothing landed: no refresh run at all (hence no validation, no drift), one evaluation run.
    code, second = _evaluate(toy, "3")
    err = capsys.readouterr().err
    assert code in (0, 1, 3), err
    assert len(_runs(toy["home"], "toy__refresh")) == 1, err
    assert f"snapshot {snapshot_id} unchanged, validated and its drift computed" in err
    assert len(_runs(toy["home"], "toy__evaluate")) == 2
    assert lake.read_bytes(quality_json) == quality_before
    # The evaluation ran on that snapshot, over every evaluation row of it (the toy's 2000 rows).
    assert second["candidate"]["ref"] == f"{MODEL}@3" and second["dataset"]["snapshot_id"] == snapshot_id
    # The verdict is on the evaluation asset as soon as the gates are decided (before the report is drawn).
    with dg.DagsterInstance.from_config(str(toy["home"])) as instance:
        mat = instance.get_latest_materialization_event(key(spec, "evaluation")).asset_materialization
    assert mat.partition == f"3@{snapshot_id}" and mat.metadata["verdict"].value == second["verdict"]
    assert sum(mat.metadata[f"gates_{k.lower()}"].value for k in ("PASS", "FAIL", "INCONCLUSIVE")) == len(
        second["gates"])
    assert _rows_evaluated(ctx, "3", snapshot_id) == len(toy["frame"])

    # New data lands: the refresh job runs again, builds a new snapshot, validates it and computes its drift.
    shift = toy["frame"]["ts"].max() - toy["frame"]["ts"].min() + pd.Timedelta(hours=1)
    more = toy_frame(400, seed=7).assign(id=lambda f: f["id"] + 10_000, ts=lambda f: f["ts"] + shift)
    lake.write_parquet("incoming/toy/part-9.parquet", more)
    code, third = _evaluate(toy, "3")
    err = capsys.readouterr().err
    assert code in (0, 1, 3), err
    assert len(_runs(toy["home"], "toy__refresh")) == 2, err
    new_id = pipeline.latest_snapshot_id(ctx)
    assert new_id != snapshot_id and third["dataset"]["snapshot_id"] == new_id
    assert pipeline.quality_status(ctx, new_id) is True
    assert lake.exists(pipeline.drift_paths(ctx, load_snapshot(lake, "toy", new_id))[0])
    assert _rows_evaluated(ctx, "3", new_id) == len(toy["frame"]) + len(more)

    # --force-refresh runs the refresh job even though nothing changed.
    _evaluate(toy, "2", force_refresh=True)
    assert len(_runs(toy["home"], "toy__refresh")) == 3


def _rows_evaluated(ctx, version: str, snapshot_id: str) -> int:
    folder = pipeline.evaluation_dir(ctx, pipeline.resolve_inputs(ctx, version, snapshot_id))
    return json.loads(ctx.lake.read_text(f"{folder}/metrics.json"))["n_rows"]


def test_a_changed_spec_refreshes_validation_and_drift_again(toy, capsys):
    _evaluate(toy, "2")
    assert len(_runs(toy["home"], "toy__refresh")) == 1
    # Same data, another drift threshold: the old drift report (and quality result) were computed under another spec.
    changed = toy["tmp"] / "toy_changed.yaml"
    changed.write_text(yaml.safe_dump({**SPEC, "drift": {**SPEC["drift"], "threshold": 0.2}}))
    capsys.readouterr()
    code, _ = _evaluate(toy, "3", spec=str(changed))
    err = capsys.readouterr().err
    assert code in (0, 1, 3), err
    assert len(_runs(toy["home"], "toy__refresh")) == 2
    assert "validated under another spec" in err


def test_a_snapshot_that_failed_data_quality_is_never_skipped(toy, capsys):
    lake = toy["lake"]
    bad = toy_frame(200, seed=3).assign(id=lambda f: f["id"] + 50_000, y=2)  # label outside {0, 1}
    lake.write_parquet("incoming/toy/part-bad.parquet", bad)
    for n in (1, 2):
        code, result = _evaluate(toy, "2")
        err = capsys.readouterr().err
        assert code == 2 and result is None
        assert "data quality FAILED" in err
        assert len(_runs(toy["home"], "toy__refresh")) == n  # validated again, never skipped
    assert _runs(toy["home"], "toy__evaluate") == []


def test_the_new_model_sensor_requests_the_evaluation_job_only(toy):
    """A new model version never re-runs refresh, validation or drift: the sensor's job selects none of them."""
    spec = load_spec(toy["spec"])
    defs = build_definitions([spec], resources={"lake": LakeResource(root=toy["lake"].root),
                                                "settings": SettingsResource()})
    sensor = defs.resolve_sensor_def("toy__new_model_sensor")
    job = defs.resolve_job_def(sensor.job_name)
    selected = set(job.asset_layer.executable_asset_keys)
    assert key(spec, "predictions") in selected and key(spec, "release_gates") in selected
    assert not selected & {key(spec, "dataset_snapshot"), key(spec, "drift_report")}
    checks = {c.name for c in job.asset_layer.asset_graph.asset_check_keys if c.asset_key in selected}
    assert "data_quality" not in checks


IMPORTS_OF_A_RUN = """
import json, sys
from eval_pipeline.cli import _run
code = _run(["evaluate", "--spec", sys.argv[1], "--lake", sys.argv[2], "--dagster-home", sys.argv[3],
             "--candidate", sys.argv[4]])
print(json.dumps({"code": code, "evidently": "evidently" in sys.modules,
                  "great_expectations": "great_expectations" in sys.modules}))
"""


def test_a_new_candidate_on_a_validated_snapshot_imports_neither_great_expectations_nor_evidently(toy):
    """Importing GX and Evidently costs about 6 s here: a run that validates nothing and computes no data drift must
    not pay it. Prediction drift (every evaluation's report) scores continuous model outputs with K-S / normed
    Wasserstein, computed without Evidently (eval_pipeline.drift_methods._NATIVE)."""
    import subprocess
    import sys

    _evaluate(toy, "2")  # refresh, validation and drift: this process imports GX and Evidently, not the next one
    proc = subprocess.run([sys.executable, "-c", IMPORTS_OF_A_RUN, toy["spec"], toy["lake"].root, str(toy["home"]),
                           f"{MODEL}@3"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] in (0, 1, 3), proc.stderr[-3000:]
    assert "not running toy__refresh" in proc.stderr
    assert out == {"code": out["code"], "evidently": False, "great_expectations": False}, proc.stderr[-3000:]
    ctx = pipeline.TaskContext(toy["lake"], load_spec(toy["spec"]))
    snapshot_id = pipeline.latest_snapshot_id(ctx)
    folder = pipeline.evaluation_dir(ctx, pipeline.resolve_inputs(ctx, "3", snapshot_id))
    drift = json.loads(toy["lake"].read_text(f"{folder}/prediction_drift.json"))
    assert {m["role"] for m in drift["models"]} == {"candidate", "baseline"}
    assert {m["method_id"] for m in drift["models"]} <= {"ks", "wasserstein"} and drift["models"]
