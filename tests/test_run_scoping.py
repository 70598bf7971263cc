"""Run-scoped inputs: each run evaluates exactly what its partition key and run config say, through real Dagster
(a temporary persistent instance) on a small real lake.

- a snapshot that is not validated fails the run, saying so; no other snapshot is evaluated instead;
- the baseline is resolved once and recorded (version and sha256): a champion change mid-run does not leak into the
  result, and the automatic promotion at the end refuses (compare-and-swap);
- the evidence set is content-keyed: a re-run writes nothing, another spec gets its own set;
- the result JSON holds no absolute path: two lake folders give byte-identical result JSON and report;
- the refresh run's data-quality check and drift report use the snapshot that run built, not latest.json;
- no per-version pointer file exists after an evaluation.
"""

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
import skops.io as sio
import yaml

from assets.automation import evaluation_request
from eval_pipeline import pipeline
from eval_pipeline.cli import run_evaluation
from eval_pipeline.definitions import build_definitions
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.spec import load_spec
from resources import LakeResource, SettingsResource

from .toy import TOY_SPEC, fit_model, land, toy_frame

TASK, MODEL = "toy", "toy_model"
EVIDENCE = {"metrics.json", "gates.json", "report.md", "report.html", "spec.yaml", "result.json",
            "error_analysis.json", "regressed_rows.parquet",  # these two: paired evaluations only
            "prediction_drift.json"}  # when the spec's drift is enabled


def _write_spec(path, **evaluation):
    path.write_text(yaml.safe_dump({**TOY_SPEC, "evaluation": {"bootstrap_replicates": 200, **evaluation}}))
    return str(path)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A lake with toy data (2 files), champion v1 and candidate v2 (skops), evaluated once through the CLI path."""
    root = tmp_path_factory.mktemp("scoping")
    lake = Lake(str(root / "lake"))
    frame = toy_frame(2000)
    land(lake, frame)
    reg = Registry(lake)
    reg.register(MODEL, "1", sio.dumps(fit_model(frame.iloc[:300], c=0.01)), flavor="sklearn-skops",
                 artifact_name="model.skops")
    reg.set_champion(MODEL, "1", reason="test setup")
    reg.register(MODEL, "2", sio.dumps(fit_model(frame.iloc[:1500])), flavor="sklearn-skops",
                 artifact_name="model.skops")
    reg.register(MODEL, "3", sio.dumps(fit_model(frame.iloc[:1000], c=0.2)), flavor="sklearn-skops",
                 artifact_name="model.skops")
    shutil.copytree(root / "lake", root / "pristine")  # the same inputs, never evaluated
    spec = _write_spec(root / "toy.yaml")
    code, result = run_evaluation(spec, lake.root, f"{MODEL}@2", str(root / "home"))
    assert code == {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}[result["verdict"]]
    return {"root": root, "spec": spec, "result": result, "frame": frame}


@pytest.fixture
def env(template, tmp_path):
    shutil.copytree(template["root"] / "lake", tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    spec = load_spec(template["spec"])
    return {**template, "lake": lake, "reg": Registry(lake), "ctx": pipeline.TaskContext(lake, spec),
            "spec_obj": spec, "tmp": tmp_path}


def _defs(lake, spec):
    return build_definitions([spec], resources={"lake": LakeResource(root=lake.root),
                                                "settings": SettingsResource(promote_on_pass=True)})


def _home(tmp_path) -> str:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return str(home)


def _file_state(lake, prefix):
    return {f["rel"]: (f["mtime"], lake.read_bytes(f["rel"])) for f in lake.find(prefix)}


def test_the_first_evaluation_records_its_inputs_and_leaves_no_pointer(env):
    result, reg = env["result"], env["reg"]
    assert result["baseline"] == {"ref": "toy_model@1", "name": MODEL, "version": "1", "flavor": "sklearn-skops",
                                  "sha256": reg.manifest(MODEL, "1").sha256}
    assert result["candidate"]["sha256"] == reg.manifest(MODEL, "2").sha256
    snap = result["dataset"]["snapshot_id"]
    folder = result["paths"]["folder"]
    assert folder == f"evaluations/{TASK}/{MODEL}/2/{snap}/vs-1-{result['evidence_id']}"
    # exactly one evidence set, nothing else under evaluations/ (no pinned_snapshot.json, no per-version latest.json)
    assert {f["rel"] for f in env["lake"].find("evaluations")} == {f"{folder}/{n}" for n in EVIDENCE}
    # result.json records the sha256 of every other member of its set
    import hashlib

    for name, digest in result["evidence_files"].items():
        assert hashlib.sha256(env["lake"].read_bytes(f"{folder}/{name}")).hexdigest() == digest, name


def test_a_snapshot_that_is_not_validated_fails_the_run_saying_so(env):
    lake, ctx, spec = env["lake"], env["ctx"], env["spec_obj"]
    good = env["result"]["dataset"]["snapshot_id"]
    # New data lands and is snapshotted but never validated (its refresh run has not reached the check yet).
    extra = toy_frame(200, seed=5).assign(id=lambda d: d["id"] + 10_000)
    lake.write_parquet("incoming/toy/part-9.parquet", extra)
    fresh = pipeline.refresh(ctx).snapshot_id
    assert fresh != good
    inputs = pipeline.EvalInputs("2", env["reg"].manifest(MODEL, "2").sha256, fresh, "1",
                                 env["reg"].manifest(MODEL, "1").sha256)
    with pytest.raises(pipeline.EvaluationError, match=f"snapshot {fresh} of task 'toy' has not been validated"):
        pipeline.resolve_inputs(ctx, "2", fresh)
    request = evaluation_request(spec, lake, inputs, "test", None, None)
    before = _file_state(lake, "evaluations")
    with dg.instance_for_test(temp_dir=_home(env["tmp"])) as instance:
        instance.add_dynamic_partitions(f"{TASK}__evaluations", [request.partition_key])
        run = _defs(lake, spec).resolve_job_def(f"{TASK}__evaluate").execute_in_process(
            instance=instance, partition_key=request.partition_key, run_config=request.run_config,
            tags=request.tags, raise_on_error=False)
    assert not run.success
    (failure,) = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == f"{TASK}__predictions"
    message = failure.event_specific_data.error.message
    assert f"this run evaluates snapshot {fresh} (partition 2@{fresh}), which cannot be used" in message
    assert "has not been validated yet" in message
    assert _file_state(lake, "evaluations") == before  # nothing evaluated instead, nothing touched
    assert not lake.exists(f"predictions/{TASK}/{fresh}")


def test_baseline_is_resolved_once_even_if_the_champion_changes_mid_run(env, monkeypatch):
    """The champion becomes v3 while v2's run is computing its metrics: the run still compares with v1 (its recorded
    baseline), never scores v3, names v1 and its sha256 in the result, and its promotion step refuses."""
    lake, reg = env["lake"], env["reg"]
    monkeypatch.setenv("EVAL_PROMOTE_ON_PASS", "1")
    spec = _write_spec(env["tmp"] / "other.yaml", seed=7)  # another spec: a new evidence set is computed
    orig = pipeline.compute_metrics

    def compute_metrics(ctx, snap, inputs):
        reg.set_champion(MODEL, "3", reason="promoted by someone else mid-run")
        return orig(ctx, snap, inputs)

    monkeypatch.setattr(pipeline, "compute_metrics", compute_metrics)
    home = env["tmp"] / "home"
    code, result = run_evaluation(spec, lake.root, f"{MODEL}@2", str(home))
    assert reg.champion(MODEL) == "3"
    assert (result["baseline"]["version"], result["baseline"]["sha256"]) == ("1", reg.manifest(MODEL, "1").sha256)
    assert result["mode"] == "release" and result["verdict"] == "PASS" and code == 0
    assert result["paths"]["folder"].split("/")[-1].startswith("vs-1-")
    snap = result["dataset"]["snapshot_id"]
    assert not lake.exists(f"predictions/{TASK}/{snap}/{MODEL}/3.parquet")
    overall = next(s for s in result["metrics"]["slices"] if s["slice"] == "overall")
    assert set(overall["models"]) == {"candidate", "baseline"}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ev = instance.get_latest_materialization_event(dg.AssetKey([TASK, "champion_promotion"]))
        meta = {k: v.value for k, v in ev.asset_materialization.metadata.items()}
    assert meta["promoted"] is False
    assert "evaluated against toy_model@1, but the champion is now toy_model@3" in meta["why"]
    assert [p["version"] for p in reg.promotions(MODEL)] == ["1", "3"]


def test_evidence_is_content_keyed_rerun_writes_nothing_and_another_spec_gets_its_own_set(env):
    lake, first = env["lake"], env["result"]
    before = _file_state(lake, "evaluations") | _file_state(lake, "history")
    code, again = run_evaluation(env["spec"], lake.root, f"{MODEL}@2", str(env["tmp"] / "home"))
    assert again == first
    assert _file_state(lake, "evaluations") | _file_state(lake, "history") == before  # not even rewritten
    with dg.DagsterInstance.from_config(str(env["tmp"] / "home")) as instance:
        ev = instance.get_latest_materialization_event(dg.AssetKey([TASK, "evaluation"]))
        assert ev.asset_materialization.metadata["reused"].value is True

    other = _write_spec(env["tmp"] / "more.yaml", bootstrap_replicates=300)
    code, second = run_evaluation(other, lake.root, f"{MODEL}@2", None)
    assert second["evidence_id"] != first["evidence_id"]
    assert second["reproducibility"]["spec_sha256"] == load_spec(other).spec_hash() != \
        first["reproducibility"]["spec_sha256"]
    assert second["reproducibility"]["bootstrap_replicates"] == 300
    after = _file_state(lake, "evaluations")
    assert {k: v for k, v in after.items() if k in before} == {k: v for k, v in before.items() if k in after}
    assert set(before) - set(after) == {f"history/{TASK}/{MODEL}/2-{first['dataset']['snapshot_id']}.json"}
    assert {Path(k).parent.name for k in after} == {first["paths"]["folder"].split("/")[-1],
                                                    second["paths"]["folder"].split("/")[-1]}


def test_result_holds_no_absolute_path_and_is_byte_identical_in_another_lake(env, tmp_path):
    first = env["result"]
    shutil.copytree(env["root"] / "pristine", tmp_path / "elsewhere" / "lake")
    other = Lake(str(tmp_path / "elsewhere" / "lake"))
    code, result = run_evaluation(env["spec"], other.root, f"{MODEL}@2", None)
    assert result == first
    for name in ("result.json", "report.md", "report.html", "metrics.json", "gates.json"):
        rel = f"{first['paths']['folder']}/{name}"
        assert other.read_bytes(rel) == env["lake"].read_bytes(rel), name
    text = other.read_text(result["paths"]["result"])
    for root in (other.root, env["lake"].root, str(tmp_path), "file://", os.sep + "tmp"):
        assert root not in text, root
    assert all(not v.startswith(("/", "s3://")) for v in result["paths"].values())


def test_refresh_checks_and_drift_use_the_snapshot_their_run_built(env, monkeypatch):
    """A concurrent refresh moves latest.json to another snapshot right after this run built its own: the run's
    data-quality check and drift report still validate / compare the snapshot this run built."""
    lake, ctx, spec = env["lake"], env["ctx"], env["spec_obj"]
    old = env["result"]["dataset"]["snapshot_id"]
    old_quality = _file_state(lake, f"quality/{TASK}/{old}")
    lake.write_parquet("incoming/toy/part-9.parquet",
                       toy_frame(300, seed=6).assign(id=lambda d: d["id"] + 20_000))
    orig = pipeline.refresh
    built = {}

    def refresh(c):
        snap = orig(c)
        built["id"] = snap.snapshot_id
        lake.write_json(f"snapshots/{TASK}/latest.json", {"snapshot_id": old})  # another refresh's pointer
        return snap

    monkeypatch.setattr(pipeline, "refresh", refresh)
    with dg.instance_for_test(temp_dir=_home(env["tmp"])) as instance:
        run = _defs(lake, spec).resolve_job_def(f"{TASK}__refresh").execute_in_process(
            instance=instance, raise_on_error=False)
    assert run.success
    new = built["id"]
    assert new != old and lake.read_json(f"snapshots/{TASK}/latest.json")["snapshot_id"] == old
    (check,) = run.get_asset_check_evaluations()
    assert check.passed and check.metadata["snapshot_id"].value == new
    assert lake.read_json(f"quality/{TASK}/{new}/result.json")["success"] is True
    assert _file_state(lake, f"quality/{TASK}/{old}") == old_quality  # the other snapshot was not re-validated
    drift = [e for e in run.get_asset_materialization_events()
             if e.event_specific_data.materialization.asset_key.path[-1] == "drift_report"]
    assert drift[0].event_specific_data.materialization.metadata["snapshot_id"].value == new
    assert lake.exists(f"drift/{TASK}/{new}/drift.json")
