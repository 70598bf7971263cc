"""Races, with real Dagster: runs in separate processes on one persistent DAGSTER_HOME and one lake, launched exactly
as the sensors launch them (partition ``<version>@<snapshot>`` + the inputs in the run config).

- one version on two snapshots and two versions, all at once (a barrier inside the metrics step proves overlap);
- a CLI evaluation of the SAME version, with new data landing and a refresh moving the lake's pointers, while another
  run of that version sits between scoring and metrics (the case a shared per-version pointer got wrong);
- the multiprocess executor (each step its own process).

Every result must name, and have used, exactly its own inputs: snapshot id and row count, candidate and baseline
version and sha256, asserted against what the test set up.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import skops.io as sio
import yaml

from assets.automation import evaluation_request
from eval_pipeline import cli, pipeline
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.spec import load_spec

from .toy import TOY_SPEC, fit_model, toy_frame

REPO = Path(__file__).resolve().parents[1]
TASK, MODEL = "toy", "toy_model"
ROWS = {"S1": 2000, "S2": 3000}


def _land(lake, frame, name):
    lake.write_parquet(f"incoming/toy/{name}.parquet", frame.reset_index(drop=True))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Two validated snapshots (S1: 2,000 rows; S2: S1 + 1,000 rows), champion v1 and candidates v2, v3 (skops)."""
    root = tmp_path_factory.mktemp("concurrency")
    lake = Lake(str(root / "lake"))
    frame = toy_frame(4000)
    spec_path = root / "toy.yaml"
    spec_path.write_text(yaml.safe_dump({**TOY_SPEC, "drift": {"enabled": False},
                                         "evaluation": {"bootstrap_replicates": 200}}))
    spec = load_spec(str(spec_path))
    ctx = pipeline.TaskContext(lake, spec)
    _land(lake, frame.iloc[:1000], "part-0")
    _land(lake, frame.iloc[1000:2000], "part-1")
    s1 = pipeline.refresh(ctx)
    assert pipeline.validate(ctx, s1).success
    _land(lake, frame.iloc[2000:3000], "part-2")
    s2 = pipeline.refresh(ctx)
    assert pipeline.validate(ctx, s2).success
    reg = Registry(lake)
    for version, model in (("1", fit_model(frame.iloc[:300], c=0.01)), ("2", fit_model(frame.iloc[:2000])),
                           ("3", fit_model(frame.iloc[:1500], c=0.3))):
        reg.register(MODEL, version, sio.dumps(model), flavor="sklearn-skops", artifact_name="model.skops")
    reg.set_champion(MODEL, "1", reason="test setup")
    return {"root": root, "frame": frame, "snapshots": {"S1": s1.snapshot_id, "S2": s2.snapshot_id}}


@pytest.fixture
def env(template, tmp_path):
    shutil.copytree(template["root"] / "lake", tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    spec_path = str(template["root"] / "toy.yaml")
    spec = load_spec(spec_path)
    return {"lake": lake, "home": home, "spec_path": spec_path, "spec": spec, "tmp": tmp_path,
            "ctx": pipeline.TaskContext(lake, spec), "reg": Registry(lake), **template}


def _request(env, version, snap_label):
    inputs = pipeline.resolve_inputs(env["ctx"], version, env["snapshots"][snap_label])
    request = evaluation_request(env["spec"], env["lake"], inputs, "test", None, None)
    with dg.DagsterInstance.from_config(str(env["home"])) as instance:
        instance.add_dynamic_partitions(f"{TASK}__evaluations", [request.partition_key])
    return inputs, request


def _start(env, name, request, barrier=None, executor="in_process"):
    run_file = env["tmp"] / f"{name}.json"
    run_file.write_text(json.dumps({
        "spec": env["spec_path"], "lake": env["lake"].root, "home": str(env["home"]), "executor": executor,
        "request": {"partition_key": request.partition_key, "run_config": request.run_config, "tags": request.tags},
        "barrier": barrier, "out": str(env["tmp"] / f"{name}.out.json")}))
    log = open(env["tmp"] / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tests._concurrency_worker", str(run_file)], cwd=str(REPO),
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT)
    return {"name": name, "proc": proc, "log": log}


def _finish(env, worker, timeout=240):
    try:
        worker["proc"].wait(timeout=timeout)
    finally:
        if worker["proc"].poll() is None:
            worker["proc"].kill()
        worker["log"].close()
    out = env["tmp"] / f"{worker['name']}.out.json"
    assert out.exists(), (env["tmp"] / f"{worker['name']}.log").read_text()[-4000:]
    outcome = json.loads(out.read_text())
    assert outcome["success"], (env["tmp"] / f"{worker['name']}.log").read_text()[-4000:]
    return outcome


def _assert_own_inputs(env, inputs, snap_label, run_id=None):
    """The result and every materialization of the run name exactly these inputs; the metrics used its rows."""
    reg = env["reg"]
    result = pipeline.load_result(env["ctx"], inputs)
    assert result["dataset"]["snapshot_id"] == env["snapshots"][snap_label]
    assert result["dataset"]["rows"] == ROWS[snap_label] == result["metrics"]["n_rows"]
    assert result["candidate"]["version"] == inputs.version
    assert result["candidate"]["sha256"] == reg.manifest(MODEL, inputs.version).sha256
    assert result["baseline"]["version"] == "1"
    assert result["baseline"]["sha256"] == reg.manifest(MODEL, "1").sha256
    assert result["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE") and result["gates"]
    if run_id is not None:
        with dg.DagsterInstance.from_config(str(env["home"])) as instance:
            records = instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        mats = [r.event_log_entry.asset_materialization for r in records]
        assert {m.asset_key.path[-1] for m in mats} >= {"predictions", "evaluation", "decision_report",
                                                        "release_gates"}
        for m in mats:
            if m.asset_key.path[-1] == "history":
                assert m.partition is None  # the model's history gathers every partition
                continue
            assert m.partition == inputs.partition_key
            if "snapshot_id" in m.metadata:
                assert m.metadata["snapshot_id"].value == env["snapshots"][snap_label], m.asset_key
                assert m.metadata["baseline"].value == "toy_model@1", m.asset_key
    return result


def _no_shared_pointer(lake):
    names = {Path(f["rel"]).name for f in lake.find("evaluations")}
    assert names <= {"metrics.json", "gates.json", "report.md", "report.html", "spec.yaml", "result.json",
                     "error_analysis.json", "regressed_rows.parquet", "prediction_drift.json"}, names


def test_one_version_on_two_snapshots_and_two_versions_at_once(env):
    """Three runs at once, all inside their metrics step together: v2 on S1, v2 on S2 (one version, two snapshots)
    and v3 on S2 (two versions, one snapshot)."""
    barrier = env["tmp"] / "barrier"
    barrier.mkdir()
    runs = {"a": ("2", "S1"), "b": ("2", "S2"), "c": ("3", "S2")}
    started = {}
    for name, (version, snap) in runs.items():
        inputs, request = _request(env, version, snap)
        peers = [p for p in runs if p != name]
        started[name] = (inputs, _start(env, name, request, {"dir": str(barrier), "name": name, "wait_for": peers}))
    results = {}
    for name, (inputs, worker) in started.items():
        outcome = _finish(env, worker)
        results[name] = _assert_own_inputs(env, inputs, runs[name][1], outcome["run_id"])
    assert len({r["paths"]["folder"] for r in results.values()}) == 3
    assert results["b"]["candidate"]["sha256"] != results["c"]["candidate"]["sha256"]
    assert results["a"]["dataset"]["snapshot_id"] != results["b"]["dataset"]["snapshot_id"]
    _no_shared_pointer(env["lake"])


def test_cli_evaluation_of_the_same_version_and_data_landing_while_a_run_executes(env, capsys):
    """Run W evaluates v2 on S1 and stops between scoring and metrics. Meanwhile 1,000 new rows land and the CLI
    evaluates v2 too: its refresh builds and validates S3 and moves latest.json / validated.json, its run scores and
    decides v2 on S3. Then W resumes: it must finish on S1, with S1's rows."""
    barrier = env["tmp"] / "barrier"
    barrier.mkdir()
    inputs_w, req_w = _request(env, "2", "S1")
    w = _start(env, "w", req_w, {"dir": str(barrier), "name": "w", "wait_for": ["cli-done"]})
    try:
        deadline = time.monotonic() + 120
        while not (barrier / "w").exists():  # W has scored S1 and is inside its metrics step
            assert w["proc"].poll() is None, (env["tmp"] / "w.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "run W never reached its metrics step"
            time.sleep(0.1)
        _land(env["lake"], env["frame"].iloc[3000:4000], "part-3")  # data lands mid-run
        capsys.readouterr()
        code = cli.main(["evaluate", "--spec", env["spec_path"], "--lake", env["lake"].root,
                         "--candidate", "toy_model@2", "--dagster-home", str(env["home"])])
        out = capsys.readouterr()
        assert code in (0, 1, 3), out.err[-3000:]
    finally:
        (barrier / "cli-done").write_text("go")
    outcome = _finish(env, w)
    result_w = _assert_own_inputs(env, inputs_w, "S1", outcome["run_id"])

    s3 = env["lake"].read_json(f"snapshots/{TASK}/latest.json")["snapshot_id"]
    assert s3 not in env["snapshots"].values()
    assert env["lake"].read_json(f"snapshots/{TASK}/validated.json")["snapshot_id"] == s3
    inputs_cli = pipeline.EvalInputs("2", inputs_w.candidate_sha256, s3, "1", inputs_w.baseline_sha256)
    result_cli = pipeline.load_result(env["ctx"], inputs_cli)
    assert result_cli["dataset"]["rows"] == 4000 == result_cli["metrics"]["n_rows"]
    assert (result_cli["baseline"]["version"], result_cli["baseline"]["sha256"]) == ("1", inputs_w.baseline_sha256)
    assert f"result: {env['lake'].uri(result_cli['paths']['result'])}" in out.out
    assert result_w["dataset"]["snapshot_id"] == env["snapshots"]["S1"] != s3
    # W's report is about S1 too
    assert env["snapshots"]["S1"] in env["lake"].read_text(result_w["paths"]["report_md"])
    _no_shared_pointer(env["lake"])


def test_multiprocess_executor(env):
    inputs, request = _request(env, "3", "S1")
    outcome = _finish(env, _start(env, "mp", request, executor="multiprocess"), timeout=300)
    _assert_own_inputs(env, inputs, "S1", outcome["run_id"])
    with dg.DagsterInstance.from_config(str(env["home"])) as instance:
        starts = instance.get_records_for_run(outcome["run_id"], of_type=dg.DagsterEventType.STEP_START).records
        pids = {r.event_log_entry.dagster_event.pid for r in starts}
        run = instance.get_run_by_id(outcome["run_id"])
    assert len(starts) == 7 and len(pids) == 7, pids  # every step in its own process (6 partitioned + history)
    assert run.tags["eval/baseline"] == "1" and run.tags["dagster/partition"] == inputs.partition_key
