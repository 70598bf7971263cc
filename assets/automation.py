"""Sensors and the nightly schedule of one task: the pipeline runs itself.

Three sensors and one schedule per task (spec), all reading the lake through the ``lake`` resource so a local
folder and ``s3://`` share one code path:

``<task>__new_model_sensor`` → evaluate job
    Scans the registry. A version is *complete* once its manifest exists (the manifest is written last); versions
    without one are ignored until a later tick. A complete version whose manifest validates (and whose artifact is
    present and matches the pinned sha256) is added to the accepted versions (dynamic partitions
    ``<task>__versions``) and gets exactly one run (``run_key = <model>@<version>:<sha256[:16]>``) on the newest
    validated snapshot, against the champion of that moment: the sensor resolves the inputs ONCE (candidate sha256,
    baseline version and sha256, snapshot) and puts them in the run (partition ``<version>@<snapshot>`` of
    ``<task>__evaluations``, resource ``run_inputs`` in the run config), so no step of the run looks them up again.
    The cursor maps version → pinned sha256, so a daemon restart neither re-requests nor misses anything; run keys
    are a second guard. A bad manifest is reported (error log on the tick, skip message naming it) without blocking
    other versions, and retried only once its bytes change. If no validated snapshot exists yet, or the model has no
    champion and the spec no absolute gate (nothing could be decided: the skip message says to name a first champion
    with ``eval-pipeline promote --initial``), the version is accepted and left to the re-evaluation sensor.

``<task>__new_data_sensor`` → refresh job (snapshot, blocking data-quality check, drift)
    Fingerprint of the landing zone = sorted (path, size, mtime). A refresh is requested only when the fingerprint
    differs from the one last refreshed *and* is unchanged since the previous tick (files have settled), so a burst
    of files makes one run. ``run_key`` = fingerprint hash. The check and the drift report of that run use the
    snapshot the run built (its materialization), not ``latest.json``.

``<task>__reevaluation_sensor`` → evaluate job
    When ``snapshots/<task>/latest.json`` points at a snapshot whose data-quality result passed, requests one
    evaluation for the champion (monitoring) and for each open candidate (accepted versions newer than the champion,
    or never evaluated) against the champion of NOW, unless the evidence set of exactly those inputs (candidate x
    baseline x snapshot x spec, its ``evidence_id``) exists or was requested: ``run_key =
    <version>@<snapshot>:<baseline>:<evidence_id>``. So new data → refresh → validation → re-evaluation, and a
    promotion → the open candidates are compared with the new champion (trigger ``new_champion``): a candidate that
    PASSed against the old champion can be promoted only after it PASSes against the new one (compare-and-swap in
    ``pipeline.promote``). Runs already requested for the same inputs by any sensor or the CLI (found through the
    ``eval/evidence`` run tag) are not requested again; this survives restarts.
    After a successful nightly refresh whose snapshot did not change, the champion is NOT re-run (same data, same
    seed: the result would be identical); instead an observation of ``release_gates`` on the champion's partition
    records the night's monitoring outcome (verdict on the current snapshot), visible in the UI.

``<task>__nightly`` schedule → refresh job
    ``spec.monitoring.nightly_cron`` in ``spec.monitoring.timezone``; RUNNING by default (evaluation someone has to
    remember to switch on does not get run). The re-evaluation sensor then re-evaluates the champion (monitoring
    mode: absolute gates only; ``history/<task>/<model>/`` records it) when the snapshot changed.

Every run request carries tags (``eval/trigger``, ``eval/task``, ``eval/model``, ``eval/version``,
``eval/snapshot``, ``eval/baseline``, ``eval/evidence``) so operators see why a run happened and against what. Sensor interval: EVAL_SENSOR_INTERVAL_SECONDS (default 10); the new-model sensor uses half of it less one second
(default 4: every loop of Dagster's 5-s sensor daemon), since someone waits for a new version's verdict (manifest -> verdict in the UI: bench/bench_turnaround.py).
Requested runs execute their steps in one process (``run_config_for``; EVAL_RUN_EXECUTOR=multiprocess to opt out):
per-step processes cost ≈ 10 s each here and would break the ≤ 60 s turnaround.
Cross-sensor de-duplication reads run tags from the instance; it is exact with the daemon's default sequential
sensor evaluation (``sensors: use_threads: false``); with threaded sensors two sensors could race for one tick.
Logging: one line per decision (a run requested, a refused version, a skip whose reason changed since the last tick)
at INFO (problems at ERROR, also only when they change); repeats and details at DEBUG.
"""

import datetime as dt
import hashlib
import json
import logging
from zoneinfo import ZoneInfo

import dagster as dg

from eval_pipeline import alerts, pipeline
from eval_pipeline.lake import Lake, LakeError
from eval_pipeline.registry import Registry, RegistryError, sha256_bytes, version_sort_key
from eval_pipeline.settings import load_settings
from eval_pipeline.snapshot import DataError, list_source_files, load_snapshot
from eval_pipeline.spec import EvalSpec
from resources import LakeResource

from .common import (TAG_BASELINE, TAG_EVIDENCE, TAG_FILES, TAG_MODEL, TAG_NIGHT, TAG_ROLE, TAG_SNAPSHOT, TAG_TASK,
                     TAG_TRIGGER, TAG_VERSION, evaluation_run_config, evaluations_partitions, key, versions_partitions)
from .history import numeric_metadata

# What makes an evaluation request skippable rather than an error: the lake or the registry is not ready for it.
RESOLVE_ERRORS = (pipeline.EvaluationError, RegistryError, DataError, LakeError, FileNotFoundError)


def run_config_for(job) -> dict:
    """Run config for sensor/schedule requests: the steps of one run execute in one process by default.

    With Dagster's default executor (multi_or_in_process) every step is a fresh process that re-imports pandas,
    Great Expectations, Evidently and the code location: ≈ 5–10 s per step, ≈ 1 min of overhead for the six steps of
    an evaluation, which alone would break the ≤ 60 s turnaround. The steps of one run are sequential anyway, so
    in-process loses nothing. EVAL_RUN_EXECUTOR=multiprocess restores the default. Jobs that declare their own
    executor get no executor config from here.
    """
    executor = getattr(job, "executor_def", None)
    if executor is not None and executor is not dg.multi_or_in_process_executor:
        return {}
    return {"execution": {"config": {load_settings(warn=False).run_executor: {}}}}


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


# -- sensor logging: one INFO line per decision, repeats and details at DEBUG -----------------------------------------
def _once(context, cursor: dict, new_cursor: dict, key: str, message: str, level: int = logging.INFO) -> dict:
    """Log ``message`` at ``level`` only when it differs from what the previous tick said under ``key`` (a short hash
    kept in the cursor), at DEBUG otherwise: a sensor repeating the same reason every 10 s buries what matters."""
    digest = hashlib.sha256(message.encode()).hexdigest()[:16] if message else None
    if message:
        context.log.log(level if digest != cursor.get(key) else logging.DEBUG, message)
    if digest:
        new_cursor[key] = digest
    else:
        new_cursor.pop(key, None)
    return new_cursor


def _skipped(context, cursor: dict, new_cursor: dict, reason: str, **result) -> dg.SensorResult:
    """A tick that requests nothing: its reason is logged at INFO only when it changed since the last tick."""
    _once(context, cursor, new_cursor, "said", f"skipped: {reason}")
    return dg.SensorResult(skip_reason=reason, cursor=_dump_cursor(new_cursor), **result)


# -- lake state shared by the sensors ---------------------------------------------------------------------------------
def validated_snapshot(ctx: pipeline.TaskContext) -> tuple[str | None, str]:
    """(snapshot id, "") when the latest snapshot passed data quality, else (None, why not)."""
    snapshot_id = pipeline.latest_snapshot_id(ctx)
    if snapshot_id is None:
        return None, f"task '{ctx.task}' has no snapshot yet"
    ok = pipeline.quality_status(ctx, snapshot_id)
    if ok is None:
        return None, f"snapshot {snapshot_id} has not been validated yet"
    if not ok:
        return None, f"snapshot {snapshot_id} failed data quality"
    return snapshot_id, ""


def _runs_for(instance, job_name: str, tags: dict, limit: int = 1, **filters) -> list:
    return list(instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, tags=tags, **filters), limit=limit))


def evaluation_requested(instance, spec: EvalSpec, job_name: str, version: str,
                         inputs: pipeline.EvalInputs | None = None, evidence: str | None = None) -> bool:
    """Whether an evaluation run for this version already exists, whoever requested it: any run of the version, or
    (with inputs) one for exactly these inputs: same candidate, baseline, snapshot and spec."""
    tags = {TAG_TASK: spec.task, TAG_VERSION: version}
    if inputs is not None:
        tags |= {TAG_SNAPSHOT: inputs.snapshot_id, TAG_EVIDENCE: evidence}
    return bool(_runs_for(instance, job_name, tags))


def baseline_tag(inputs: pipeline.EvalInputs) -> str:
    return "monitoring" if inputs.monitoring else (inputs.baseline or "none")


def _eval_tags(spec: EvalSpec, trigger: str, inputs: pipeline.EvalInputs, evidence: str) -> dict:
    return {TAG_TRIGGER: trigger, TAG_TASK: spec.task, TAG_MODEL: spec.model.name, TAG_VERSION: inputs.version,
            TAG_SNAPSHOT: inputs.snapshot_id, TAG_BASELINE: baseline_tag(inputs), TAG_EVIDENCE: evidence}


def evaluation_request(spec: EvalSpec, lake: Lake, inputs: pipeline.EvalInputs, trigger: str, run_key: str | None,
                       run_config: dict | None, **extra_tags) -> dg.RunRequest:
    """One evaluation run: partition <version>@<snapshot>, the inputs in its run config, tags saying why."""
    evidence = pipeline.evidence_id(pipeline.TaskContext(lake, spec), inputs)
    return dg.RunRequest(run_key=run_key or f"{inputs.partition_key}:{baseline_tag(inputs)}:{evidence}",
                         partition_key=inputs.partition_key, run_config=evaluation_run_config(inputs, run_config),
                         tags={**_eval_tags(spec, trigger, inputs, evidence), **extra_tags})


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
    ctx = pipeline.TaskContext(lake, spec)
    name = spec.model.name
    cursor = _load_cursor(context.cursor)
    done: dict = dict(cursor.get("done", {}))
    bad: dict = dict(cursor.get("bad", {}))
    new_versions, problems = _new_versions(context, registry, name, done, bad)
    for version, info in bad.items():  # a refused manifest is told once per fingerprint (alerts dedups by it)
        if isinstance(info, dict) and info.get("fingerprint"):
            alerts.notify(lake, spec, "refused_manifest", {"model": name, "version": version,
                                                           "reason": info.get("message", ""),
                                                           "fingerprint": info["fingerprint"]}, None)
    waiting, no_baseline = [], []
    snapshot_id, why = validated_snapshot(ctx) if new_versions else (None, "")
    existing = set(context.instance.get_dynamic_partitions(partitions_name))
    to_add = [v for v, _ in new_versions if v not in existing]
    run_requests = []
    for version, sha in new_versions:
        done[version] = sha
        if snapshot_id is None:
            waiting.append(version)
            continue
        try:
            # The baseline is resolved here, once, and travels in the run config: the run never looks it up again.
            inputs = pipeline.resolve_inputs(ctx, version, snapshot_id)
        except pipeline.NoBaselineError as exc:
            no_baseline.append(str(exc))  # the re-evaluation sensor takes it once a first champion is named
            continue
        except RESOLVE_ERRORS as exc:
            problems.append(f"{name}@{version}: {exc}")
            continue
        if inputs.candidate_sha256 != sha:
            done.pop(version)  # the manifest changed between the check and now: look again next tick
            continue
        request = evaluation_request(spec, lake, inputs, "new_model", f"{name}@{version}:{sha[:16]}", run_config)
        if (evaluation_requested(context.instance, spec, job_name, version, inputs, request.tags[TAG_EVIDENCE])
                or pipeline.evidence_complete(ctx, inputs)):  # e.g. evaluated by the CLI
            context.log.debug(f"{name}@{version} already has an evaluation on snapshot {snapshot_id} against "
                              f"{baseline_tag(inputs)}")
            continue
        run_requests.append(request)
        context.log.info(f"new model version {name}@{version} (sha256 {sha[:16]}): evaluation on {snapshot_id} "
                         f"against {baseline_tag(inputs)}")

    partition_requests = _partition_requests(context, spec, to_add, run_requests)
    if not run_requests:
        return _skipped(context, cursor, {"done": done, "bad": bad},
                        _new_model_skip(name, waiting, why, no_baseline, problems),
                        dynamic_partitions_requests=partition_requests)
    return dg.SensorResult(run_requests=run_requests, cursor=_dump_cursor({"done": done, "bad": bad}),
                           dynamic_partitions_requests=partition_requests)


def _new_versions(context, registry: Registry, name: str, done: dict, bad: dict) -> tuple[list, list[str]]:
    """The complete versions not handled yet whose manifest and artifact check out, as (version, pinned sha256), and
    what is wrong with the others. ``bad`` (version -> fingerprint and message) is updated: a bad version is looked
    at again only once its folder changes."""
    verify_max = load_settings(warn=False).sensor_verify_max_bytes
    new_versions, problems = [], []
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
    return new_versions, problems


def _new_model_skip(name: str, waiting: list[str], why: str, no_baseline: list[str], problems: list[str]) -> str:
    parts = []
    if waiting:
        parts.append(f"registered {', '.join(f'{name}@{v}' for v in waiting)}; evaluation waits for a validated "
                     f"snapshot ({why}); the re-evaluation sensor will request it")
    if no_baseline:
        parts.append(" | ".join(no_baseline))
    if problems:
        parts.append(f"{len(problems)} version(s) with a bad manifest or artifact, not evaluated until fixed: "
                     + " | ".join(problems))
    return "; ".join(parts) or f"no new complete versions of {name}"


def _partition_requests(context, spec: EvalSpec, versions: list[str], run_requests: list) -> list:
    """Add the accepted versions and the (version@snapshot) partitions the requested runs need."""
    out = [versions_partitions(spec).build_add_request(versions)] if versions else []
    parts = evaluations_partitions(spec)
    existing = set(context.instance.get_dynamic_partitions(parts.name))
    keys = sorted({r.partition_key for r in run_requests} - existing)
    return out + ([parts.build_add_request(keys)] if keys else [])


# -- new-data sensor --------------------------------------------------------------------------------------------------
def landing_fingerprint(lake: Lake, spec: EvalSpec) -> tuple[str, int]:
    from eval_pipeline.suites import landed_files

    files = landed_files(lake, spec)  # the task's landing zone and its evaluation suites' folders
    rows = sorted((f["rel"], f.get("size"), f.get("mtime")) for f in files)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest(), len(rows)


def _landing_zone_is_snapshotted(lake: Lake, spec: EvalSpec) -> bool:
    """True when the latest snapshot was built from exactly the files (paths and sizes) now in the landing zone."""
    snapshot_id = pipeline.latest_snapshot_id(pipeline.TaskContext(lake, spec))
    if snapshot_id is None:
        return False
    try:
        manifest = load_snapshot(lake, spec.task, snapshot_id).manifest
        landed = {(f["rel"], f.get("size")) for f in list_source_files(lake, spec)}
        if spec.suites:  # a case dropped in a suite's folder is new data too
            from eval_pipeline.suites import suites_snapshotted

            if not suites_snapshotted(lake, spec, manifest):
                return False
    except (FileNotFoundError, LakeError, DataError):
        return False
    return landed == {(f["path"], f.get("size")) for f in manifest.get("source_files", [])}


def new_data_tick(context, lake: Lake, spec: EvalSpec, run_config: dict | None = None):
    cursor = _load_cursor(context.cursor)
    try:
        fingerprint, n_files = landing_fingerprint(lake, spec)
    except DataError as exc:
        return _skipped(context, cursor, {k: v for k, v in cursor.items() if k != "said"},
                        f"cannot list the landing zone of '{spec.task}': {exc}")
    last_run, last_seen = cursor.get("last_run"), cursor.get("last_seen")
    if n_files == 0:
        return _skipped(context, cursor, {"last_run": last_run, "last_seen": fingerprint},
                        f"no data files under {spec.data.source}")
    if last_run is None and _landing_zone_is_snapshotted(lake, spec):
        last_run = fingerprint  # a fresh cursor (new deployment) over data the latest snapshot already holds
    if fingerprint == last_run:
        return _skipped(context, cursor, {"last_run": last_run, "last_seen": fingerprint},
                        f"no new files ({n_files} already refreshed)")
    if fingerprint != last_seen:
        return _skipped(context, cursor, {"last_run": last_run, "last_seen": fingerprint},
                        f"landing zone changed ({n_files} files); waiting one tick for files to settle")
    context.log.info(f"{n_files} files in {spec.data.source} settled: requesting a refresh")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"data:{fingerprint[:24]}", run_config=run_config,
                                    tags={TAG_TRIGGER: "new_data", TAG_TASK: spec.task,
                                          TAG_FILES: str(n_files)})],
        cursor=_dump_cursor({"last_run": fingerprint, "last_seen": fingerprint}))


# -- re-evaluation sensor ---------------------------------------------------------------------------------------------
def reevaluation_tick(context, lake: Lake, spec: EvalSpec, job_name: str, refresh_job_name: str,
                      partitions_name: str, run_config: dict | None = None):
    registry = Registry(lake)
    ctx = pipeline.TaskContext(lake, spec)
    name = spec.model.name
    cursor = _load_cursor(context.cursor)
    snapshot_id, why = validated_snapshot(ctx)
    if snapshot_id is None:
        return _skipped(context, cursor, {k: v for k, v in cursor.items() if k != "said"},
                        f"nothing to re-evaluate: {why}")
    # Requested evidence ids on this snapshot: (version, baseline, spec) triples already asked for.
    requested = set(cursor.get("requested", [])) if cursor.get("snapshot") == snapshot_id else set()

    champion, problems = None, []  # problems: logged at ERROR when they change, not on every tick
    try:
        champion = registry.champion(name)
    except (RegistryError, LakeError, KeyError) as exc:
        problems.append(f"cannot read the champion of {name}: {exc}")
    accepted = set(context.instance.get_dynamic_partitions(partitions_name))
    complete = [e["version"] for e in registry.scan(name) if e["complete"] and e["version"] in accepted]
    targets, no_baseline = _reevaluation_targets(context, ctx, job_name, complete, champion, snapshot_id, requested,
                                                 problems)

    # The nightly refresh: which night was handled last (by the refresh run's id).
    nightly = _runs_for(context.instance, refresh_job_name, {TAG_TRIGGER: "nightly", TAG_TASK: spec.task},
                        statuses=[dg.DagsterRunStatus.SUCCESS])
    nightly_run = nightly[0].dagster_run if nightly else None
    new_night = nightly_run is not None and nightly_run.run_id != cursor.get("nightly_run")

    run_requests, asset_events = [], []
    for inputs, role, evidence in targets:
        requested.add(evidence)
        if evaluation_requested(context.instance, spec, job_name, inputs.version, inputs, evidence):
            continue  # e.g. the new-model sensor already asked for it
        trigger = "nightly" if (new_night and role == "champion") else (
            "new_champion" if role == "candidate" and _baseline_changed(context, spec, job_name, inputs) else "new_data")
        run_requests.append(evaluation_request(spec, lake, inputs, trigger, None, run_config, **{TAG_ROLE: role}))
        context.log.info(f"re-evaluating {role} {name}@{inputs.version} on snapshot {snapshot_id} against "
                         f"{baseline_tag(inputs)}")

    if new_night and champion and champion not in {i.version for i, _, _ in targets}:
        asset_events.append(_nightly_observation(context, ctx, champion, snapshot_id, nightly_run))

    new_cursor = {"snapshot": snapshot_id, "requested": sorted(requested),
                  "nightly_run": nightly_run.run_id if nightly_run else cursor.get("nightly_run")}
    _once(context, cursor, new_cursor, "problems", " | ".join(problems), logging.ERROR)
    partition_requests = _partition_requests(context, spec, [], run_requests)
    if not run_requests:
        return _skipped(context, cursor, new_cursor,
                        f"snapshot {snapshot_id}: champion {champion or '(none)'} and open candidates already "
                        f"evaluated or requested" + ("; nightly monitoring outcome recorded" if asset_events else "")
                        + ("; " + " | ".join(no_baseline) if no_baseline else ""),
                        asset_events=asset_events, dynamic_partitions_requests=partition_requests)
    return dg.SensorResult(run_requests=run_requests, cursor=_dump_cursor(new_cursor), asset_events=asset_events,
                           dynamic_partitions_requests=partition_requests)


def _reevaluation_targets(context, ctx: pipeline.TaskContext, job_name: str, complete: list[str], champion: str | None,
                          snapshot_id: str, requested: set[str], problems: list[str]) -> tuple[list, list[str]]:
    """The champion (monitoring) and the open candidates (newer than the champion, or never evaluated) as (inputs,
    role, evidence id), unless already requested or evaluated; and why versions had nothing to be decided on. Each
    is evaluated against the champion of NOW; after a promotion that is a new baseline, hence a new evidence id.
    Versions whose inputs cannot be resolved are appended to ``problems``."""
    targets, no_baseline = [], []
    for version in complete:
        if version == champion:
            role = "champion"
        elif (champion is None or version_sort_key(version) > version_sort_key(champion)
              or not evaluation_requested(context.instance, ctx.spec, job_name, version)):
            role = "candidate"
        else:
            continue
        try:
            inputs = pipeline.resolve_inputs(ctx, version, snapshot_id)
        except pipeline.NoBaselineError as exc:
            no_baseline.append(str(exc))
            continue
        except RESOLVE_ERRORS as exc:
            problems.append(f"not re-evaluating {ctx.model_name}@{version}: {exc}")
            continue
        evidence = pipeline.evidence_id(ctx, inputs)
        if evidence in requested or pipeline.evidence_complete(ctx, inputs):
            continue
        targets.append((inputs, role, evidence))
    return targets, no_baseline


def _nightly_observation(context, ctx: pipeline.TaskContext, champion: str, snapshot_id: str,
                         nightly_run) -> dg.AssetObservation:
    """Snapshot unchanged overnight: the champion's monitoring outcome on the current data, recorded without a
    re-run (the result is deterministic)."""
    night = nightly_run.tags.get(TAG_NIGHT, nightly_run.run_id[:8])
    verdict, partition, numbers = "not evaluated yet", None, {}
    try:
        inputs = pipeline.resolve_inputs(ctx, champion, snapshot_id)
        partition = inputs.partition_key
        result = pipeline.load_result(ctx, inputs)
        verdict = result.get("verdict", verdict)
        numbers = numeric_metadata(result.get("metrics") or {})  # the night's numbers, for the Plots tab
    except (*RESOLVE_ERRORS, AttributeError):
        pass
    exists = partition in set(context.instance.get_dynamic_partitions(evaluations_partitions(ctx.spec).name))
    context.log.info(f"nightly {night}: champion {ctx.model_name}@{champion} on unchanged snapshot {snapshot_id}: "
                     f"{verdict}")
    return dg.AssetObservation(
        asset_key=key(ctx.spec, "release_gates"), partition=partition if exists else None,
        metadata={"nightly": night, "verdict": verdict, "snapshot_id": snapshot_id,
                  "version": champion, "refresh_run": nightly_run.run_id, **numbers,
                  "note": "nightly monitoring: snapshot unchanged, so the champion's (deterministic) result on "
                          "it stands; no re-run"})


def _baseline_changed(context, spec: EvalSpec, job_name: str, inputs: pipeline.EvalInputs) -> bool:
    """Whether this version was evaluated on this snapshot before, against another baseline (a promotion since)."""
    return bool(_runs_for(context.instance, job_name, {TAG_TASK: spec.task, TAG_VERSION: inputs.version,
                                                       TAG_SNAPSHOT: inputs.snapshot_id}))


# -- definitions ------------------------------------------------------------------------------------------------------
def build_automation(spec: EvalSpec, refresh_job, evaluate_job) -> dict:
    task = spec.task
    interval = load_settings(warn=False).sensor_interval_seconds
    partitions_name = versions_partitions(spec).name
    # Someone is waiting for a new version's verdict, and the tick is cheap (one listing of the model's registry
    # folder; only new manifests are read): the new-model sensor looks twice as often as the others, and one second
    # sooner: Dagster's sensor daemon loops every 5 s at most (MIN_INTERVAL_LOOP_TIME), and a sensor asking for exactly
    # 5 s is skipped by every loop that comes round a few milliseconds early, so a new version waited up to 10 s
    # (bench_turnaround: 2-9 s from manifest to run). At 4 s, every loop ticks it.
    new_model_interval = max(1, interval // 2 - 1)
    running = dg.DefaultSensorStatus.RUNNING

    @dg.sensor(name=f"{task}__new_model_sensor", job=evaluate_job, minimum_interval_seconds=new_model_interval,
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
