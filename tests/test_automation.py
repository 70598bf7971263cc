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
    "monitoring": {"nightly_cron": "30 3 * * 1-5", "timezone": "Europe/Berlin"},
}
PARTS = "auto__versions"


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
    for k in _shared_instance.get_dynamic_partitions(PARTS):
        _shared_instance.delete_dynamic_partition(PARTS, k)


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
    lake.write_json(f"snapshots/{task}/latest.json", {"snapshot_id": snapshot_id})
    lake.write_json(f"quality/{task}/{snapshot_id}/result.json", {"success": success, "results": []})


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
    assert [rr.partition_key for rr in r1.run_requests] == ["1"]
    req = r1.run_requests[0]
    sha = Registry(lake).manifest("auto_model", "1").sha256
    assert req.run_key == f"auto_model@1:{sha[:16]}"
    assert req.tags["eval/trigger"] == "new_model" and req.tags["eval/version"] == "1"
    assert req.tags["eval/snapshot"] == "snap1" and req.tags["eval/model"] == "auto_model"
    assert req.run_config == {"execution": {"config": {"in_process": {}}}}
    assert [list(d.partition_keys) for d in r1.dynamic_partitions_requests] == [["1"]]
    assert instance.get_dynamic_partitions(PARTS) == ["1"]

    # Same registry, cursor carried over (as after a daemon restart): nothing new.
    r2 = tick(sensor, instance, lake, r1.cursor)
    assert not r2.run_requests and not r2.dynamic_partitions_requests
    assert "no new complete versions" in skip_text(r2)

    # A second version: exactly one more request, for it only.
    register(lake, "2")
    r3 = tick(sensor, instance, lake, r2.cursor)
    assert [rr.partition_key for rr in r3.run_requests] == ["2"]
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
    assert [rr.partition_key for rr in r3.run_requests] == ["1"]
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
    assert [rr.partition_key for rr in r1.run_requests] == ["1"]  # the good version still runs
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
    assert [rr.partition_key for rr in r3.run_requests] == ["2"]
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
    assert [(rr.partition_key, rr.run_key) for rr in r2.run_requests] == [("1", "1@snap1")]


def test_existing_run_for_version_and_snapshot_is_not_requested_again(auto, lake, instance):
    validated(lake)
    register(lake, "1")
    create_run_for_test(instance, job_name=auto["evaluate"].name,
                        tags={"eval/task": "auto", "eval/version": "1", "eval/snapshot": "snap1"})
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
    lake.write_json("evaluations/auto/auto_model/4/snap1/result.json", {"verdict": "PASS"})
    sensor = auto["sensors"]["reevaluation_sensor"]

    r0 = tick(sensor, instance, lake)
    assert not r0.run_requests and "no snapshot" in skip_text(r0)
    validated(lake, "snap1", success=False)
    r1 = tick(sensor, instance, lake, r0.cursor)
    assert not r1.run_requests and "failed data quality" in skip_text(r1)

    validated(lake, "snap1")
    r2 = tick(sensor, instance, lake, r1.cursor)
    got = {rr.partition_key: rr for rr in r2.run_requests}
    assert sorted(got) == ["2", "3"]
    assert got["2"].run_key == "2@snap1" and got["2"].tags["eval/role"] == "champion"
    assert got["3"].tags["eval/role"] == "candidate" and got["3"].tags["eval/snapshot"] == "snap1"
    assert not tick(sensor, instance, lake, r2.cursor).run_requests  # cursor remembers

    # New data, new snapshot: the same champion and candidates again, once each.
    validated(lake, "snap2")
    r3 = tick(sensor, instance, lake, r2.cursor)
    assert sorted(rr.run_key for rr in r3.run_requests) == ["2@snap2", "3@snap2", "4@snap2"]


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
    lake.write_json("evaluations/auto/auto_model/1/snap1/result.json", {"verdict": "PASS"})
    sensor = auto["sensors"]["reevaluation_sensor"]
    r1 = tick(sensor, instance, lake)
    assert not r1.run_requests and not r1.asset_events

    create_run_for_test(instance, job_name=auto["refresh"].name, status=dg.DagsterRunStatus.SUCCESS,
                        tags={"eval/trigger": "nightly", "eval/task": "auto", "eval/night": "2026-11-20"})
    r2 = tick(sensor, instance, lake, r1.cursor)
    assert not r2.run_requests
    (obs,) = r2.asset_events
    assert obs.asset_key == dg.AssetKey(["auto", "release_gates"]) and obs.partition == "1"
    assert obs.metadata["verdict"].value == "PASS" and obs.metadata["nightly"].value == "2026-11-20"
    r3 = tick(sensor, instance, lake, r2.cursor)
    assert not r3.asset_events  # once per night

    # Next night the snapshot changed: the champion is re-run (monitoring) with the nightly trigger.
    validated(lake, "snap2")
    create_run_for_test(instance, job_name=auto["refresh"].name, status=dg.DagsterRunStatus.SUCCESS,
                        tags={"eval/trigger": "nightly", "eval/task": "auto", "eval/night": "2026-11-21"})
    r4 = tick(sensor, instance, lake, r3.cursor)
    assert [(rr.run_key, rr.tags["eval/trigger"]) for rr in r4.run_requests] == [("1@snap2", "nightly")]
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
    for s in auto["sensors"].values():
        assert s.default_status == dg.DefaultSensorStatus.RUNNING
        assert s.minimum_interval_seconds == 10
    assert auto["sensors"]["new_model_sensor"].job_name == "auto__evaluate"
    assert auto["sensors"]["reevaluation_sensor"].job_name == "auto__evaluate"
    assert auto["sensors"]["new_data_sensor"].job_name == "auto__refresh"
    monkeypatch.setenv("EVAL_SENSOR_INTERVAL_SECONDS", "3")
    refresh, evaluate = task_jobs(spec)
    assert all(s.minimum_interval_seconds == 3 for s in build_automation(spec, refresh, evaluate)["sensors"])


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
        dg.validate_run_config(job, run_config_for(job))


def test_run_config_opt_out(monkeypatch, auto):
    monkeypatch.setenv("EVAL_RUN_EXECUTOR", "multiprocess")
    assert run_config_for(auto["evaluate"]) == {"execution": {"config": {"multiprocess": {}}}}
    own = dg.define_asset_job("own", executor_def=dg.in_process_executor)
    assert run_config_for(own) == {}
