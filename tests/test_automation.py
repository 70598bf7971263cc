"""Unit tests of the sensors and the nightly schedule with Dagster's test contexts, on a small temporary lake.

No real models are needed: the sensors only look at the registry layout, manifests, hashes and lake pointers.
"""

import json
import time

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from assets.automation import build_automation, landing_fingerprint, run_config_for
from eval_pipeline.definitions import build_definitions, task_jobs
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.spec import parse_spec
from resources import LakeResource, SettingsResource

SPEC = {
    "task": "auto",
    "task_type": "binary_classification",
    "data": {"source": "incoming/auto"},
    "columns": {"id": "id", "label": "y", "timestamp": "ts", "features": ["a"]},
    "model": {"name": "auto_model"},
    "metrics": ["roc_auc"],
    # an absolute gate: without a champion, a version is still decidable (evaluated alone)
    "gates": [{"metric": "roc_auc", "kind": "absolute", "min": 0.5}],
    "monitoring": {"nightly_cron": "30 3 * * 1-5", "timezone": "Europe/Berlin"},
}
PARTS = "auto__versions"
EVALS = "auto__evaluations"


@pytest.fixture
def spec():
    return parse_spec(SPEC, "automation test spec")


@pytest.fixture
def lake(tmp_path):
    return Lake(str(tmp_path / "lake"))


@pytest.fixture(scope="module")
def _shared_instance():
    with dg.instance_for_test() as inst:  # ≈ 3 s to create: one per module, wiped between tests
        yield inst


@pytest.fixture
def instance(_shared_instance):
    yield _shared_instance
    _shared_instance.wipe()
    for name in (PARTS, EVALS):
        for k in _shared_instance.get_dynamic_partitions(name):
            _shared_instance.delete_dynamic_partition(name, k)


@pytest.fixture
def auto(spec):
    refresh, evaluate = task_jobs(spec)
    out = build_automation(spec, refresh, evaluate)
    sensors = {s.name.split("__", 1)[1]: s for s in out["sensors"]}
    return {"sensors": sensors, "schedule": out["schedules"][0], "refresh": refresh, "evaluate": evaluate}


def register(lake, version, payload=b"predictions", name="auto_model"):
    return Registry(lake).register(name, version, payload + version.encode(), flavor="predictions",
                                   artifact_name="preds.parquet", id_column="id", score_columns=["p"])


def validated(lake, snapshot_id="snap1", success=True, task="auto"):
    lake.write_json(f"snapshots/{task}/{snapshot_id}/manifest.json", {"snapshot_id": snapshot_id, "rows": 10})
    lake.write_json(f"snapshots/{task}/latest.json", {"snapshot_id": snapshot_id})
    lake.write_json(f"quality/{task}/{snapshot_id}/result.json", {"success": success, "results": []})


def sha(lake, version, name="auto_model"):
    return Registry(lake).manifest(name, version).sha256


def inputs_of(req) -> dict:
    """The run-scoped inputs a request carries in its run config."""
    return req.run_config["resources"]["run_inputs"]["config"]


def tick(sensor, instance, lake, cursor=None):
    """One evaluation of a sensor, then what the daemon would do with its partition requests."""
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": LakeResource(root=lake.root)})
    result = sensor(ctx)
    if isinstance(result, dg.SkipReason):
        result = dg.SensorResult(skip_reason=result, cursor=cursor)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def skip_text(result) -> str:
    return result.skip_reason.skip_message if result.skip_reason else ""


# -- new-model sensor -------------------------------------------------------------------------------------------------
def test_new_version_gets_one_run_and_a_partition(auto, lake, instance):
    validated(lake)
    register(lake, "1")
    sensor = auto["sensors"]["new_model_sensor"]
    r1 = tick(sensor, instance, lake)
    assert [rr.partition_key for rr in r1.run_requests] == ["1@snap1"]
    req = r1.run_requests[0]
    assert req.run_key == f"auto_model@1:{sha(lake, '1')[:16]}"
    assert req.tags["eval/trigger"] == "new_model" and req.tags["eval/version"] == "1"
    assert req.tags["eval/snapshot"] == "snap1" and req.tags["eval/model"] == "auto_model"
    assert req.tags["eval/baseline"] == "none"  # no champion: evaluated alone on the absolute gate
    assert req.run_config == {"execution": {"config": {"in_process": {}}},
                              "resources": {"run_inputs": {"config": {
                                  "candidate_sha256": sha(lake, "1"), "baseline": "", "baseline_sha256": "",
                                  "monitoring": False}}}}
    assert [list(d.partition_keys) for d in r1.dynamic_partitions_requests] == [["1"], ["1@snap1"]]
    assert instance.get_dynamic_partitions(PARTS) == ["1"]
    assert instance.get_dynamic_partitions(EVALS) == ["1@snap1"]

    # Same registry, cursor carried over (as after a daemon restart): nothing new.
    r2 = tick(sensor, instance, lake, r1.cursor)
    assert not r2.run_requests and not r2.dynamic_partitions_requests
    assert "no new complete versions" in skip_text(r2)

    # A second version: exactly one more request, for it only.
    # A second version, after version 1 became champion: exactly one more request, against version 1 (sha256 too).
    Registry(lake).set_champion("auto_model", "1")
    register(lake, "2")
    r3 = tick(sensor, instance, lake, r2.cursor)
    assert [rr.partition_key for rr in r3.run_requests] == ["2@snap1"]
    assert r3.run_requests[0].tags["eval/baseline"] == "1"
    assert inputs_of(r3.run_requests[0]) == {"candidate_sha256": sha(lake, "2"), "baseline": "1",
                                             "baseline_sha256": sha(lake, "1"), "monitoring": False}
    assert instance.get_dynamic_partitions(PARTS) == ["1", "2"]


def test_half_written_version_is_ignored_until_its_manifest_lands(auto, lake, instance):
    validated(lake)
    registry = Registry(lake)
    lake.write_bytes("registry/auto_model/1/preds.parquet", b"predictions1")  # artifact first, no manifest yet
    sensor = auto["sensors"]["new_model_sensor"]
    r1 = tick(sensor, instance, lake)
    assert not r1.run_requests and not r1.dynamic_partitions_requests
    r2 = tick(sensor, instance, lake, r1.cursor)
    assert not r2.run_requests
    assert instance.get_dynamic_partitions(PARTS) == []
    # The writer finishes: the manifest is written last.
    lake.delete("registry/auto_model/1/preds.parquet")
    registry.register("auto_model", "1", b"predictions1", flavor="predictions", artifact_name="preds.parquet")
    r3 = tick(sensor, instance, lake, r2.cursor)
    assert [rr.partition_key for rr in r3.run_requests] == ["1@snap1"]
    r4 = tick(sensor, instance, lake, r3.cursor)
    assert not r4.run_requests


@pytest.mark.parametrize("problem", ["not json", "missing field", "wrong version"])
def test_bad_manifest_is_reported_and_does_not_block_others(auto, lake, instance, problem):
    validated(lake)
    register(lake, "1")
    good = json.loads(lake.read_text("registry/auto_model/1/manifest.json"))
    lake.write_bytes("registry/auto_model/2/preds.parquet", b"predictions2")
    if problem == "not json":
        lake.write_text("registry/auto_model/2/manifest.json", "{not json")
    elif problem == "missing field":
        lake.write_json("registry/auto_model/2/manifest.json",
                        {k: v for k, v in {**good, "version": "2"}.items() if k != "sha256"})
    else:
        lake.write_json("registry/auto_model/2/manifest.json", good)  # says it is version 1
    sensor = auto["sensors"]["new_model_sensor"]
    r1 = tick(sensor, instance, lake)
    assert [rr.partition_key for rr in r1.run_requests] == ["1@snap1"]  # the good version still runs
    assert "2" in json.loads(r1.cursor)["bad"]
    assert instance.get_dynamic_partitions(PARTS) == ["1"]

    r2 = tick(sensor, instance, lake, r1.cursor)
    assert not r2.run_requests
    text = skip_text(r2)
    assert "auto_model@2" in text and "bad manifest" in text  # visible on every tick while it stays broken

    # Fixed manifest (its bytes changed): retried and evaluated once.
    lake.delete("registry/auto_model/2", recursive=True)
    register(lake, "2")
    r3 = tick(sensor, instance, lake, r2.cursor)
    assert [rr.partition_key for rr in r3.run_requests] == ["2@snap1"]
    assert "2" not in json.loads(r3.cursor)["bad"]
    assert not tick(sensor, instance, lake, r3.cursor).run_requests


def test_tampered_artifact_is_not_trusted(auto, lake, instance):
    validated(lake)
    register(lake, "1")
    lake.write_bytes("registry/auto_model/1/preds.parquet", b"something else")
    r1 = tick(auto["sensors"]["new_model_sensor"], instance, lake)
    assert not r1.run_requests
    assert "sha256" in skip_text(r1) and "auto_model@1" in skip_text(r1)


def test_no_validated_snapshot_registers_and_defers(auto, lake, instance):
    register(lake, "1")
    sensor = auto["sensors"]["new_model_sensor"]
    r1 = tick(sensor, instance, lake)
    assert not r1.run_requests
    assert instance.get_dynamic_partitions(PARTS) == ["1"]
    assert "waits for a validated snapshot" in skip_text(r1)
    # The re-evaluation sensor takes it once data is validated.
    validated(lake)
    r2 = tick(auto["sensors"]["reevaluation_sensor"], instance, lake)
    assert [rr.partition_key for rr in r2.run_requests] == ["1@snap1"]
    assert r2.run_requests[0].run_key.startswith("1@snap1:none:")


def test_existing_run_for_version_and_snapshot_is_not_requested_again(auto, lake, instance):
    validated(lake)
    register(lake, "1")
    from eval_pipeline import pipeline

    spec = parse_spec(SPEC, "automation test spec")
    inputs = pipeline.resolve_inputs(pipeline.TaskContext(lake, spec), "1", "snap1")
    evidence = pipeline.evidence_id(pipeline.TaskContext(lake, spec), inputs)
    # a run for the same version and snapshot but another baseline (or spec) is not the same evaluation
    create_run_for_test(instance, job_name=auto["evaluate"].name,
                        tags={"eval/task": "auto", "eval/version": "1", "eval/snapshot": "snap1",
                              "eval/evidence": "0123456789abcdef"})
    assert [rr.partition_key for rr in tick(auto["sensors"]["new_model_sensor"], instance, lake).run_requests] == \
        ["1@snap1"]
    instance.wipe()
    create_run_for_test(instance, job_name=auto["evaluate"].name,
                        tags={"eval/task": "auto", "eval/version": "1", "eval/snapshot": "snap1",
                              "eval/evidence": evidence})
    r1 = tick(auto["sensors"]["new_model_sensor"], instance, lake)
    assert not r1.run_requests
    assert instance.get_dynamic_partitions(PARTS) == ["1"]


# -- new-data sensor --------------------------------------------------------------------------------------------------
def test_burst_of_files_makes_one_refresh(auto, lake, instance, spec):
    sensor = auto["sensors"]["new_data_sensor"]
    r0 = tick(sensor, instance, lake)
    assert not r0.run_requests and "no data files" in skip_text(r0)
    for i in range(3):
        lake.write_bytes(f"incoming/auto/2024-0{i + 1}.parquet", b"x" * (i + 1))
    r1 = tick(sensor, instance, lake, r0.cursor)
    assert not r1.run_requests and "settle" in skip_text(r1)
    for i in range(3, 8):  # more of the burst lands between ticks
        lake.write_bytes(f"incoming/auto/2024-0{i + 1}.parquet", b"x" * (i + 1))
    lake.write_bytes("incoming/auto/_tmp_upload.parquet", b"partial")  # temp files are ignored
    r2 = tick(sensor, instance, lake, r1.cursor)
    assert not r2.run_requests
    r3 = tick(sensor, instance, lake, r2.cursor)
    assert len(r3.run_requests) == 1
    req = r3.run_requests[0]
    assert req.tags["eval/trigger"] == "new_data" and req.tags["eval/files"] == "8"
    assert req.run_key == f"data:{landing_fingerprint(lake, spec)[0][:24]}"
    r4 = tick(sensor, instance, lake, r3.cursor)
    r5 = tick(sensor, instance, lake, r4.cursor)
    assert not r4.run_requests and not r5.run_requests and "no new files" in skip_text(r5)

    # A changed file (same name, new content) is new data too.
    time.sleep(0.01)
    lake.write_bytes("incoming/auto/2024-01.parquet", b"replaced")
    r6 = tick(sensor, instance, lake, r5.cursor)
    r7 = tick(sensor, instance, lake, r6.cursor)
    assert not r6.run_requests and len(r7.run_requests) == 1 and r7.run_requests[0].run_key != req.run_key


def test_fresh_cursor_over_already_snapshotted_files_requests_nothing(auto, lake, instance, spec):
    """A new deployment (or a wiped cursor) must not re-refresh data the latest snapshot already holds."""
    sensor = auto["sensors"]["new_data_sensor"]
    for i in range(2):
        lake.write_bytes(f"incoming/auto/2024-0{i + 1}.parquet", b"x" * (i + 1))
    lake.write_json("snapshots/auto/latest.json", {"snapshot_id": "s1"})
    lake.write_json("snapshots/auto/s1/manifest.json", {"source_files": [
        {"path": f["rel"], "size": f["size"]} for f in lake.find("incoming/auto")]})
    r1 = tick(sensor, instance, lake)
    r2 = tick(sensor, instance, lake, r1.cursor)
    assert not r1.run_requests and not r2.run_requests and "no new files" in skip_text(r2)
    lake.write_bytes("incoming/auto/2024-03.parquet", b"new month")
    r3 = tick(sensor, instance, lake, r2.cursor)
    r4 = tick(sensor, instance, lake, r3.cursor)
    assert not r3.run_requests and len(r4.run_requests) == 1


# -- re-evaluation sensor ---------------------------------------------------------------------------------------------
def write_result(lake, spec, version, snapshot_id, result):
    """A complete evidence set (its result.json) for version on snapshot against the current champion."""
    from eval_pipeline import pipeline

    ctx = pipeline.TaskContext(lake, spec)
    lake.write_json(f"{pipeline.evaluation_dir(ctx, pipeline.resolve_inputs(ctx, version, snapshot_id))}/result.json",
                    result)


def _partitions(instance, *versions):
    instance.add_dynamic_partitions(PARTS, list(versions))


def test_new_snapshot_reevaluates_champion_and_open_candidates(auto, lake, instance, spec):
    for v in ("1", "2", "3", "4"):
        register(lake, v)
    _partitions(instance, "1", "2", "3", "4")
    Registry(lake).set_champion("auto_model", "2")
    # version 1 is older than the champion and was evaluated before; version 4 already has a result on snap1
    create_run_for_test(instance, job_name=auto["evaluate"].name,
                        tags={"eval/task": "auto", "eval/version": "1", "eval/snapshot": "old"})
    validated(lake, "snap1")
    write_result(lake, spec, "4", "snap1", {"verdict": "PASS"})  # version 4 already evaluated against 2 on snap1
    lake.delete("snapshots/auto/latest.json")
    lake.delete("quality/auto/snap1/result.json")
    sensor = auto["sensors"]["reevaluation_sensor"]

    r0 = tick(sensor, instance, lake)
    assert not r0.run_requests and "no snapshot" in skip_text(r0)
    validated(lake, "snap1", success=False)
    r1 = tick(sensor, instance, lake, r0.cursor)
    assert not r1.run_requests and "failed data quality" in skip_text(r1)

    validated(lake, "snap1")
    r2 = tick(sensor, instance, lake, r1.cursor)
    got = {rr.partition_key: rr for rr in r2.run_requests}
    assert sorted(got) == ["2@snap1", "3@snap1"]
    assert got["2@snap1"].run_key.startswith("2@snap1:monitoring:") and got["2@snap1"].tags["eval/role"] == "champion"
    assert inputs_of(got["2@snap1"])["monitoring"] is True and inputs_of(got["2@snap1"])["baseline"] == ""
    assert got["3@snap1"].tags["eval/role"] == "candidate" and got["3@snap1"].tags["eval/snapshot"] == "snap1"
    assert inputs_of(got["3@snap1"])["baseline"] == "2" and inputs_of(got["3@snap1"])["baseline_sha256"] == sha(lake, "2")
    assert not tick(sensor, instance, lake, r2.cursor).run_requests  # cursor remembers

    # New data, new snapshot: the same champion and candidates again, once each.
    validated(lake, "snap2")
    r3 = tick(sensor, instance, lake, r2.cursor)
    assert sorted(rr.partition_key for rr in r3.run_requests) == ["2@snap2", "3@snap2", "4@snap2"]


def test_reevaluation_skips_runs_requested_by_the_new_model_sensor(auto, lake, instance):
    validated(lake)
    register(lake, "1")
    r1 = tick(auto["sensors"]["new_model_sensor"], instance, lake)
    (req,) = r1.run_requests
    create_run_for_test(instance, job_name=auto["evaluate"].name, tags=req.tags)  # what the daemon would launch
    r2 = tick(auto["sensors"]["reevaluation_sensor"], instance, lake)
    assert not r2.run_requests


def test_nightly_on_unchanged_snapshot_records_monitoring_outcome(auto, lake, instance):
    register(lake, "1")
    _partitions(instance, "1")
    Registry(lake).set_champion("auto_model", "1")
    validated(lake)
    write_result(lake, parse_spec(SPEC, "spec"), "1", "snap1", {"verdict": "PASS"})
    instance.add_dynamic_partitions(EVALS, ["1@snap1"])
    sensor = auto["sensors"]["reevaluation_sensor"]
    r1 = tick(sensor, instance, lake)
    assert not r1.run_requests and not r1.asset_events

    create_run_for_test(instance, job_name=auto["refresh"].name, status=dg.DagsterRunStatus.SUCCESS,
                        tags={"eval/trigger": "nightly", "eval/task": "auto", "eval/night": "2026-11-20"})
    r2 = tick(sensor, instance, lake, r1.cursor)
    assert not r2.run_requests
    (obs,) = r2.asset_events
    assert obs.asset_key == dg.AssetKey(["auto", "release_gates"]) and obs.partition == "1@snap1"
    assert obs.metadata["verdict"].value == "PASS" and obs.metadata["nightly"].value == "2026-11-20"
    r3 = tick(sensor, instance, lake, r2.cursor)
    assert not r3.asset_events  # once per night

    # Next night the snapshot changed: the champion is re-run (monitoring) with the nightly trigger.
    validated(lake, "snap2")
    create_run_for_test(instance, job_name=auto["refresh"].name, status=dg.DagsterRunStatus.SUCCESS,
                        tags={"eval/trigger": "nightly", "eval/task": "auto", "eval/night": "2026-11-21"})
    r4 = tick(sensor, instance, lake, r3.cursor)
    assert [(rr.partition_key, rr.tags["eval/trigger"]) for rr in r4.run_requests] == [("1@snap2", "nightly")]
    assert not r4.asset_events


# -- nightly schedule and wiring --------------------------------------------------------------------------------------
def test_nightly_schedule_uses_spec_cron_and_timezone(auto, instance):
    schedule = auto["schedule"]
    assert schedule.cron_schedule == "30 3 * * 1-5"
    assert schedule.execution_timezone == "Europe/Berlin"
    assert schedule.job_name == "auto__refresh"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    import datetime as dt
    from zoneinfo import ZoneInfo

    when = dt.datetime(2026, 11, 20, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    req = schedule.evaluate_tick(ctx).run_requests[0]
    assert req.run_key == "nightly:2026-11-20"
    assert req.tags["eval/trigger"] == "nightly" and req.tags["eval/night"] == "2026-11-20"


def test_sensor_settings(auto, monkeypatch, spec):
    for name, s in auto["sensors"].items():
        assert s.default_status == dg.DefaultSensorStatus.RUNNING
        # someone waits for a verdict: under the daemon's 5-s loop, so that no loop skips it
        assert s.minimum_interval_seconds == (4 if name == "new_model_sensor" else 10)
    assert auto["sensors"]["new_model_sensor"].job_name == "auto__evaluate"
    assert auto["sensors"]["reevaluation_sensor"].job_name == "auto__evaluate"
    assert auto["sensors"]["new_data_sensor"].job_name == "auto__refresh"
    monkeypatch.setenv("EVAL_SENSOR_INTERVAL_SECONDS", "3")
    refresh, evaluate = task_jobs(spec)
    intervals = {s.name.split("__", 1)[1]: s.minimum_interval_seconds
                 for s in build_automation(spec, refresh, evaluate)["sensors"]}
    assert intervals == {"new_model_sensor": 1, "new_data_sensor": 3, "reevaluation_sensor": 3}


def test_definitions_load_with_automation(spec, tmp_path):
    defs = build_definitions([spec], resources={"lake": LakeResource(root=str(tmp_path)),
                                                "settings": SettingsResource()})
    repo = defs.get_repository_def()
    assert {s.name for s in repo.sensor_defs} == {"auto__new_model_sensor", "auto__new_data_sensor",
                                                  "auto__reevaluation_sensor"}
    assert [s.name for s in repo.schedule_defs] == ["auto__nightly"]
    # the executor config the sensors attach is valid for both jobs
    for job_name in ("auto__refresh", "auto__evaluate"):
        job = defs.resolve_job_def(job_name)
        assert run_config_for(job) == {"execution": {"config": {"in_process": {}}}}
    dg.validate_run_config(defs.resolve_job_def("auto__refresh"), run_config_for(defs.resolve_job_def("auto__refresh")))
    # An evaluation cannot be launched without its inputs (the recorded baseline) in the run config …
    evaluate = defs.resolve_job_def("auto__evaluate")
    with pytest.raises(dg.DagsterInvalidConfigError, match="run_inputs"):
        dg.validate_run_config(evaluate, run_config_for(evaluate))
    # … and with them it validates.
    from assets.common import evaluation_run_config
    from eval_pipeline.pipeline import EvalInputs

    dg.validate_run_config(evaluate, evaluation_run_config(EvalInputs("2", "a" * 64, "snap1", "1", "b" * 64),
                                                           run_config_for(evaluate)))


def test_run_config_opt_out(monkeypatch, auto):
    monkeypatch.setenv("EVAL_RUN_EXECUTOR", "multiprocess")
    assert run_config_for(auto["evaluate"]) == {"execution": {"config": {"multiprocess": {}}}}
    own = dg.define_asset_job("own", executor_def=dg.in_process_executor)
    assert run_config_for(own) == {}
