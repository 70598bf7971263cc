"""Sensors and the nightly schedule of one task: the pipeline runs itself.

Three sensors and one schedule per task (spec), all reading the lake through the ``lake`` resource so a local
folder and ``s3://`` share one code path:

``<task>__new_model_sensor`` → evaluate job
    Scans the registry. A version is *complete* once its manifest exists (the manifest is written last); versions
    without one are ignored until a later tick. A complete version whose manifest validates (and whose artifact is
    present and matches the pinned sha256) is added as a dynamic partition and gets exactly one run
    (``run_key = <model>@<version>:<sha256[:16]>``). The cursor maps version → pinned sha256, so a daemon restart
    neither re-requests nor misses anything; run keys are a second guard. A bad manifest is reported (error log on
    the tick, skip message naming it) without blocking other versions, and retried only once its bytes change.
    If no validated snapshot exists yet the version is registered and left to the re-evaluation sensor.

``<task>__new_data_sensor`` → refresh job (snapshot, blocking data-quality check, drift)
    Fingerprint of the landing zone = sorted (path, size, mtime). A refresh is requested only when the fingerprint
    differs from the one last refreshed *and* is unchanged since the previous tick (files have settled), so a burst
    of files makes one run. ``run_key`` = fingerprint hash.

``<task>__reevaluation_sensor`` → evaluate job
    When ``snapshots/<task>/latest.json`` points at a snapshot whose data-quality result passed, requests one
    evaluation per (version, snapshot) for the champion and the open candidates (versions newer than the champion,
    or never evaluated, that have no result on this snapshot): ``run_key = <version>@<snapshot>``. This chains
    new data → refresh → validation → re-evaluation without run-status sensors and survives restarts. Runs already
    requested for the same (version, snapshot) by any sensor (found through run tags) are not requested again.
    After a successful nightly refresh whose snapshot did not change, the champion is NOT re-run (same data, same
    seed: the result would be identical, and re-running would overwrite the evidence a promotion points to);
    instead an observation of ``release_gates`` on the champion's partition records the night's monitoring
    outcome (verdict on the current snapshot), visible in the UI.

``<task>__nightly`` schedule → refresh job
    ``spec.monitoring.nightly_cron`` in ``spec.monitoring.timezone``; RUNNING by default (evaluation someone has to
    remember to switch on does not get run). The re-evaluation sensor then re-evaluates the champion (monitoring
    mode: absolute gates only; ``history/<task>/<model>/`` records it) when the snapshot changed.

Every run request carries tags (``eval/trigger``, ``eval/task``, ``eval/model``, ``eval/version``,
``eval/snapshot``) so operators see why a run happened. Sensor interval: EVAL_SENSOR_INTERVAL_SECONDS (default 10).
Requested runs execute their steps in one process (``run_config_for``; EVAL_RUN_EXECUTOR=multiprocess to opt out):
per-step processes cost ≈ 10 s each here and would break the ≤ 60 s turnaround.
Cross-sensor de-duplication reads run tags from the instance; it is exact with the daemon's default sequential
sensor evaluation (``sensors: use_threads: false``); with threaded sensors two sensors could race for one tick.
"""

import datetime as dt
import hashlib
import json
import os
from zoneinfo import ZoneInfo

import dagster as dg

from eval_pipeline import pipeline
from eval_pipeline.lake import Lake, LakeError
from eval_pipeline.registry import Registry, RegistryError, sha256_bytes, version_sort_key
from eval_pipeline.snapshot import DataError, Snapshot, list_source_files
from eval_pipeline.spec import EvalSpec
from resources import LakeResource

from .common import key, versions_partitions

DEFAULT_INTERVAL_SECONDS = 10
DEFAULT_VERIFY_MAX_MB = 256

TAG_TRIGGER = "eval/trigger"
TAG_TASK = "eval/task"
TAG_MODEL = "eval/model"
TAG_VERSION = "eval/version"
TAG_SNAPSHOT = "eval/snapshot"
TAG_NIGHT = "eval/night"


def sensor_interval_seconds() -> int:
    raw = os.environ.get("EVAL_SENSOR_INTERVAL_SECONDS", "").strip()
    try:
        return max(1, int(raw)) if raw else DEFAULT_INTERVAL_SECONDS
    except ValueError:
        return DEFAULT_INTERVAL_SECONDS


def run_config_for(job) -> dict:
    """Run config for sensor/schedule requests: the steps of one run execute in one process by default.

    With Dagster's default executor (multi_or_in_process) every step is a fresh process that re-imports pandas,
    Great Expectations, Evidently and the code location: ≈ 5–10 s per step, ≈ 1 min of overhead for the six steps of
    an evaluation, which alone would break the ≤ 60 s turnaround. The steps of one run are sequential anyway, so
    in-process loses nothing. EVAL_RUN_EXECUTOR=multiprocess restores the default. Jobs that declare their own
    executor get no executor config from here.
    """
    choice = os.environ.get("EVAL_RUN_EXECUTOR", "in_process").strip() or "in_process"
    executor = getattr(job, "executor_def", None)
    if choice not in ("in_process", "multiprocess") or (
            executor is not None and executor is not dg.multi_or_in_process_executor):
        return {}
    return {"execution": {"config": {choice: {}}}}


def _verify_max_bytes() -> int:
    raw = os.environ.get("EVAL_SENSOR_VERIFY_MAX_MB", "").strip()
    try:
        return int(float(raw) * 1024 * 1024) if raw else DEFAULT_VERIFY_MAX_MB * 1024 * 1024
    except ValueError:
        return DEFAULT_VERIFY_MAX_MB * 1024 * 1024


def _load_cursor(raw: str | None) -> dict:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _dump_cursor(value: dict) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# -- lake state shared by the sensors ---------------------------------------------------------------------------------
def latest_snapshot_id(lake: Lake, task: str) -> str | None:
    pointer = f"snapshots/{task}/latest.json"
    try:
        return lake.read_json(pointer)["snapshot_id"]
    except (FileNotFoundError, LakeError, KeyError, TypeError):
        return None


def quality_status(lake: Lake, spec: EvalSpec, snapshot_id: str) -> bool | None:
    """True/False: the snapshot's data-quality result; None: not validated yet."""
    ctx = pipeline.TaskContext(lake, spec)
    rel = pipeline.quality_paths(ctx, Snapshot(spec.task, snapshot_id, {}))[0]
    try:
        return bool(lake.read_json(rel).get("success"))
    except (FileNotFoundError, LakeError, AttributeError):
        return None


def validated_snapshot(lake: Lake, spec: EvalSpec) -> tuple[str | None, str]:
    """(snapshot id, "") when the latest snapshot passed data quality, else (None, why not)."""
    snapshot_id = latest_snapshot_id(lake, spec.task)
    if snapshot_id is None:
        return None, f"task '{spec.task}' has no snapshot yet"
    ok = quality_status(lake, spec, snapshot_id)
    if ok is None:
        return None, f"snapshot {snapshot_id} has not been validated yet"
    if not ok:
        return None, f"snapshot {snapshot_id} failed data quality"
    return snapshot_id, ""


def result_path(spec: EvalSpec, lake: Lake, version: str, snapshot_id: str) -> str:
    ctx = pipeline.TaskContext(lake, spec)
    return f"{pipeline.evaluation_dir(ctx, version, Snapshot(spec.task, snapshot_id, {}))}/result.json"


def _runs_for(instance, job_name: str, tags: dict, limit: int = 1, **filters) -> list:
    return list(instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, tags=tags, **filters), limit=limit))


def evaluation_requested(instance, spec: EvalSpec, job_name: str, version: str, snapshot_id: str | None = None) -> bool:
    """Whether any evaluation run for this version (on this snapshot) already exists, whoever requested it."""
    tags = {TAG_TASK: spec.task, TAG_VERSION: version}
    if snapshot_id:
        tags[TAG_SNAPSHOT] = snapshot_id
    return bool(_runs_for(instance, job_name, tags))


def _eval_tags(spec: EvalSpec, trigger: str, version: str, snapshot_id: str | None) -> dict:
    tags = {TAG_TRIGGER: trigger, TAG_TASK: spec.task, TAG_MODEL: spec.model.name, TAG_VERSION: version}
    if snapshot_id:
        tags[TAG_SNAPSHOT] = snapshot_id
    return tags


# -- new-model sensor -------------------------------------------------------------------------------------------------
def version_fingerprint(registry: Registry, name: str, version: str) -> str | None:
    """Cheap identity of a version folder: the manifest's bytes plus every file's name, size and mtime."""
    lake = registry.lake
    try:
        manifest_bytes = lake.read_bytes(registry.manifest_path(name, version))
    except FileNotFoundError:
        return None
    files = sorted((f["rel"], f.get("size"), f.get("mtime")) for f in lake.find(registry.version_dir(name, version)))
    return sha256_bytes(manifest_bytes + json.dumps(files).encode())


def check_version(registry: Registry, name: str, version: str, verify_max_bytes: int) -> tuple[bool, str]:
    """Validate one complete version: (True, pinned sha256) or (False, what is wrong).

    The manifest must validate, and the artifact must be present and (up to EVAL_SENSOR_VERIFY_MAX_MB, default 256)
    hash to the pinned sha256 before anything is requested; the run verifies again before loading it.
    """
    lake = registry.lake
    try:
        manifest = registry.manifest(name, version)
    except RegistryError as exc:
        return False, str(exc)
    artifact_rel = registry.artifact_path(manifest)
    try:
        info = lake.info(artifact_rel)
    except FileNotFoundError:
        return False, (f"model {manifest.ref}: manifest present but artifact {lake.uri(artifact_rel)} is missing "
                       f"(still being copied?)")
    if info.get("size") is not None and info["size"] <= verify_max_bytes:
        try:
            registry.verified_artifact(manifest)
        except RegistryError as exc:
            return False, str(exc)
    return True, manifest.sha256


def new_model_tick(context, lake: Lake, spec: EvalSpec, job_name: str, partitions_name: str,
                   run_config: dict | None = None):
    registry = Registry(lake)
    name = spec.model.name
    cursor = _load_cursor(context.cursor)
    done: dict = dict(cursor.get("done", {}))
    bad: dict = dict(cursor.get("bad", {}))
    verify_max = _verify_max_bytes()

    new_versions, problems, waiting = [], [], []
    for entry in registry.scan(name):
        version = entry["version"]
        if not entry["complete"] or version in done:
            continue  # half-written versions (no manifest yet) are picked up once their manifest lands
        fingerprint = version_fingerprint(registry, name, version)
        if fingerprint is None:
            continue
        known = bad.get(version)
        if isinstance(known, dict) and known.get("fingerprint") == fingerprint:
            problems.append(known.get("message", f"{name}@{version}: bad manifest"))  # unchanged: still bad
            continue
        ok, value = check_version(registry, name, version, verify_max)
        if not ok:
            context.log.error(f"not evaluating {name}@{version}: {value}")
            bad[version] = {"fingerprint": fingerprint, "message": value}
            problems.append(value)
            continue
        bad.pop(version, None)
        new_versions.append((version, value))

    snapshot_id, why = validated_snapshot(lake, spec) if new_versions else (None, "")
    existing = set(context.instance.get_dynamic_partitions(partitions_name))
    to_add = [v for v, _ in new_versions if v not in existing]
    run_requests = []
    for version, sha in new_versions:
        done[version] = sha
        if snapshot_id is None:
            waiting.append(version)
            continue
        if (evaluation_requested(context.instance, spec, job_name, version, snapshot_id)
                or lake.exists(result_path(spec, lake, version, snapshot_id))):  # e.g. evaluated by the CLI
            context.log.info(f"{name}@{version} already has an evaluation on snapshot {snapshot_id}")
            continue
        run_requests.append(dg.RunRequest(
            run_key=f"{name}@{version}:{sha[:16]}", partition_key=version, run_config=run_config,
            tags=_eval_tags(spec, "new_model", version, snapshot_id)))
        context.log.info(f"new model version {name}@{version} (sha256 {sha[:16]}): evaluation on {snapshot_id}")

    new_cursor = _dump_cursor({"done": done, "bad": bad})
    skip = None
    if not run_requests:
        parts = []
        if waiting:
            parts.append(f"registered {', '.join(f'{name}@{v}' for v in waiting)}; evaluation waits for a validated "
                         f"snapshot ({why}); the re-evaluation sensor will request it")
        if problems:
            parts.append(f"{len(problems)} version(s) with a bad manifest or artifact, not evaluated until fixed: "
                         + " | ".join(problems))
        skip = "; ".join(parts) or f"no new complete versions of {name}"
    return dg.SensorResult(
        run_requests=run_requests, skip_reason=skip, cursor=new_cursor,
        dynamic_partitions_requests=[versions_partitions(spec).build_add_request(to_add)] if to_add else [])


# -- new-data sensor --------------------------------------------------------------------------------------------------
def landing_fingerprint(lake: Lake, spec: EvalSpec) -> tuple[str, int]:
    files = list_source_files(lake, spec)
    rows = sorted((f["rel"], f.get("size"), f.get("mtime")) for f in files)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest(), len(rows)


def _landing_zone_is_snapshotted(lake: Lake, spec: EvalSpec) -> bool:
    """True when the latest snapshot was built from exactly the files (paths and sizes) now in the landing zone."""
    snapshot_id = latest_snapshot_id(lake, spec.task)
    if snapshot_id is None:
        return False
    try:
        manifest = lake.read_json(f"snapshots/{spec.task}/{snapshot_id}/manifest.json")
        landed = {(f["rel"], f.get("size")) for f in list_source_files(lake, spec)}
    except (FileNotFoundError, LakeError, DataError):
        return False
    return landed == {(f["path"], f.get("size")) for f in manifest.get("source_files", [])}


def new_data_tick(context, lake: Lake, spec: EvalSpec, run_config: dict | None = None):
    cursor = _load_cursor(context.cursor)
    try:
        fingerprint, n_files = landing_fingerprint(lake, spec)
    except DataError as exc:
        return dg.SkipReason(f"cannot list the landing zone of '{spec.task}': {exc}")
    last_run, last_seen = cursor.get("last_run"), cursor.get("last_seen")
    if n_files == 0:
        return dg.SensorResult(skip_reason=f"no data files under {spec.data.source}",
                               cursor=_dump_cursor({"last_run": last_run, "last_seen": fingerprint}))
    if last_run is None and _landing_zone_is_snapshotted(lake, spec):
        last_run = fingerprint  # a fresh cursor (new deployment) over data the latest snapshot already holds
    if fingerprint == last_run:
        return dg.SensorResult(skip_reason=f"no new files ({n_files} already refreshed)",
                               cursor=_dump_cursor({"last_run": last_run, "last_seen": fingerprint}))
    if fingerprint != last_seen:
        return dg.SensorResult(skip_reason=f"landing zone changed ({n_files} files); waiting one tick for files to "
                                           f"settle", cursor=_dump_cursor({"last_run": last_run,
                                                                           "last_seen": fingerprint}))
    context.log.info(f"{n_files} files in {spec.data.source} settled: requesting a refresh")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"data:{fingerprint[:24]}", run_config=run_config,
                                    tags={TAG_TRIGGER: "new_data", TAG_TASK: spec.task,
                                          "eval/files": str(n_files)})],
        cursor=_dump_cursor({"last_run": fingerprint, "last_seen": fingerprint}))


# -- re-evaluation sensor ---------------------------------------------------------------------------------------------
def reevaluation_tick(context, lake: Lake, spec: EvalSpec, job_name: str, refresh_job_name: str,
                      partitions_name: str, run_config: dict | None = None):
    registry = Registry(lake)
    name = spec.model.name
    cursor = _load_cursor(context.cursor)
    snapshot_id, why = validated_snapshot(lake, spec)
    if snapshot_id is None:
        return dg.SensorResult(skip_reason=f"nothing to re-evaluate: {why}", cursor=_dump_cursor(cursor))
    requested = set(cursor.get("requested", [])) if cursor.get("snapshot") == snapshot_id else set()

    champion = None
    try:
        champion = registry.champion(name)
    except (RegistryError, LakeError, KeyError) as exc:
        context.log.error(f"cannot read the champion of {name}: {exc}")
    partitions = set(context.instance.get_dynamic_partitions(partitions_name))
    complete = [e["version"] for e in registry.scan(name) if e["complete"] and e["version"] in partitions]

    targets = []
    for version in complete:
        if version in requested or lake.exists(result_path(spec, lake, version, snapshot_id)):
            continue
        if version == champion:
            targets.append((version, "champion"))
        elif (champion is None or version_sort_key(version) > version_sort_key(champion)
              or not evaluation_requested(context.instance, spec, job_name, version)):
            targets.append((version, "candidate"))

    # The nightly refresh: which night was handled last (by the refresh run's id).
    nightly = _runs_for(context.instance, refresh_job_name, {TAG_TRIGGER: "nightly", TAG_TASK: spec.task},
                        statuses=[dg.DagsterRunStatus.SUCCESS])
    nightly_run = nightly[0].dagster_run if nightly else None
    new_night = nightly_run is not None and nightly_run.run_id != cursor.get("nightly_run")

    run_requests, asset_events = [], []
    for version, role in targets:
        requested.add(version)
        if evaluation_requested(context.instance, spec, job_name, version, snapshot_id):
            continue  # e.g. the new-model sensor already asked for it
        trigger = "nightly" if (new_night and role == "champion") else "new_data"
        run_requests.append(dg.RunRequest(
            run_key=f"{version}@{snapshot_id}", partition_key=version, run_config=run_config,
            tags={**_eval_tags(spec, trigger, version, snapshot_id), "eval/role": role}))
        context.log.info(f"re-evaluating {role} {name}@{version} on snapshot {snapshot_id}")

    if new_night and champion and champion not in {v for v, _ in targets}:
        # Snapshot unchanged overnight: record the champion's monitoring outcome on the current data, no re-run.
        night = nightly_run.tags.get(TAG_NIGHT, nightly_run.run_id[:8])
        verdict = "not evaluated yet"
        try:
            verdict = lake.read_json(result_path(spec, lake, champion, snapshot_id)).get("verdict", verdict)
        except (FileNotFoundError, LakeError):
            pass
        asset_events.append(dg.AssetObservation(
            asset_key=key(spec, "release_gates"), partition=champion if champion in partitions else None,
            metadata={"nightly": night, "verdict": verdict, "snapshot_id": snapshot_id,
                      "version": champion, "refresh_run": nightly_run.run_id,
                      "note": "nightly monitoring: snapshot unchanged, so the champion's (deterministic) result on "
                              "it stands; no re-run"}))
        context.log.info(f"nightly {night}: champion {name}@{champion} on unchanged snapshot {snapshot_id}: {verdict}")

    new_cursor = {"snapshot": snapshot_id, "requested": sorted(requested, key=version_sort_key),
                  "nightly_run": nightly_run.run_id if nightly_run else cursor.get("nightly_run")}
    skip = None
    if not run_requests:
        skip = (f"snapshot {snapshot_id}: champion {champion or '(none)'} and open candidates already evaluated "
                f"or requested" + ("; nightly monitoring outcome recorded" if asset_events else ""))
    return dg.SensorResult(run_requests=run_requests, skip_reason=skip, cursor=_dump_cursor(new_cursor),
                           asset_events=asset_events)


# -- definitions ------------------------------------------------------------------------------------------------------
def build_automation(spec: EvalSpec, refresh_job, evaluate_job) -> dict:
    task = spec.task
    interval = sensor_interval_seconds()
    partitions_name = versions_partitions(spec).name
    running = dg.DefaultSensorStatus.RUNNING

    @dg.sensor(name=f"{task}__new_model_sensor", job=evaluate_job, minimum_interval_seconds=interval,
               default_status=running,
               description=f"New complete versions of model '{spec.model.name}' in the registry: add a partition "
                           f"and request exactly one evaluation each. Bad manifests are reported, not evaluated.")
    def new_model_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
        return new_model_tick(context, lake.get_lake(), spec, evaluate_job.name, partitions_name,
                              run_config_for(evaluate_job))

    @dg.sensor(name=f"{task}__new_data_sensor", job=refresh_job, minimum_interval_seconds=interval,
               default_status=running,
               description=f"New or changed files under {spec.data.source}: once they have settled for one tick, "
                           f"one refresh (snapshot, data-quality check, drift) for the whole batch.")
    def new_data_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
        return new_data_tick(context, lake.get_lake(), spec, run_config_for(refresh_job))

    @dg.sensor(name=f"{task}__reevaluation_sensor", job=evaluate_job, minimum_interval_seconds=interval,
               default_status=running,
               description="A new validated snapshot: re-evaluate the champion (monitoring) and open candidates on "
                           "it, once per (version, snapshot).")
    def reevaluation_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
        return reevaluation_tick(context, lake.get_lake(), spec, evaluate_job.name, refresh_job.name,
                                 partitions_name, run_config_for(evaluate_job))

    @dg.schedule(name=f"{task}__nightly", job=refresh_job, cron_schedule=spec.monitoring.nightly_cron,
                 execution_timezone=spec.monitoring.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Nightly monitoring: refresh and validate the snapshot and compute drift; the "
                             "re-evaluation sensor then re-checks the champion on the new data.")
    def nightly(context: dg.ScheduleEvaluationContext):
        when = context.scheduled_execution_time or dt.datetime.now(ZoneInfo(spec.monitoring.timezone))
        night = when.strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"nightly:{night}", run_config=run_config_for(refresh_job),
                             tags={TAG_TRIGGER: "nightly", TAG_TASK: task, TAG_NIGHT: night})

    return {"sensors": [new_model_sensor, new_data_sensor, reevaluation_sensor], "schedules": [nightly]}
