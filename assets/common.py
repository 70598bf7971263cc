"""Shared bits of the asset layer: building the engine's TaskContext from resources, the Dagster names of a task
(asset keys, jobs, partitions, run tags), and the run-scoped inputs of an evaluation run."""

import dagster as dg

from eval_pipeline import pipeline
from eval_pipeline.pipeline import EvalInputs, TaskContext
from eval_pipeline.snapshot import Snapshot, load_snapshot
from eval_pipeline.spec import EvalSpec
from resources import LakeResource, SettingsResource

RUN_INPUTS = "run_inputs"

# Run tags: why a run happened and against what (set by the sensors, the schedule and the CLI).
TAG_TRIGGER = "eval/trigger"
TAG_TASK = "eval/task"
TAG_MODEL = "eval/model"
TAG_VERSION = "eval/version"
TAG_SNAPSHOT = "eval/snapshot"
TAG_NIGHT = "eval/night"
TAG_FILES = "eval/files"
TAG_ROLE = "eval/role"
TAG_BASELINE = "eval/baseline"    # baseline version, "none" (no champion) or "monitoring" (the champion itself)
TAG_EVIDENCE = "eval/evidence"    # content key of (candidate x baseline x snapshot x spec): the de-duplication key


class RunInputsResource(dg.ConfigurableResource):
    """What one evaluation run compares, fixed when the run is launched (sensor, CLI, or the launchpad) and read by
    every asset and check of that run: the candidate's sha256 and the baseline (version and sha256) resolved ONCE.
    The candidate version and the snapshot are the partition key ``<version>@<snapshot_id>``.

    baseline / baseline_sha256 empty: no baseline (monitoring the champion, or no champion yet: absolute gates
    only). Required in the run config on purpose: an evaluation whose baseline nobody recorded cannot be promoted
    safely, so Dagster refuses to launch one.
    """

    candidate_sha256: str
    baseline: str
    baseline_sha256: str
    monitoring: bool = False


def run_inputs_config(inputs: EvalInputs) -> dict:
    """The run-config fragment that carries an evaluation's inputs."""
    return {"resources": {RUN_INPUTS: {"config": inputs.as_config()}}}


def evaluation_run_config(inputs: EvalInputs, base: dict | None = None) -> dict:
    """base (executor, loggers …) merged with the inputs' resources config."""
    out = dict(base or {})
    out["resources"] = {**(out.get("resources") or {}), **run_inputs_config(inputs)["resources"]}
    return out


def run_inputs(context, run_inputs_resource: RunInputsResource) -> EvalInputs:
    """The run's own inputs: partition key + run config. Raises a Failure naming what is malformed."""
    # Checks see the partition through the run's tag; assets through partition_key: the same value.
    key = context.run.tags.get("dagster/partition") or context.partition_key
    try:
        return EvalInputs.from_config(key, {
            "candidate_sha256": run_inputs_resource.candidate_sha256, "baseline": run_inputs_resource.baseline,
            "baseline_sha256": run_inputs_resource.baseline_sha256,
            "monitoring": run_inputs_resource.monitoring})
    except pipeline.EvaluationError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def task_context(spec: EvalSpec, lake: LakeResource, settings: SettingsResource) -> TaskContext:
    return TaskContext(lake.get_lake(), spec, trusted_types=settings.trusted_type_list() or None)


def key(spec: EvalSpec, name: str) -> dg.AssetKey:
    return dg.AssetKey([spec.task, name])


def refresh_job_name(spec: EvalSpec) -> str:
    """The job that refreshes the snapshot, validates it and computes drift."""
    return f"{spec.task}__refresh"


def evaluate_job_name(spec: EvalSpec) -> str:
    """The job that evaluates one partition <version>@<snapshot_id>."""
    return f"{spec.task}__evaluate"


def versions_partitions(spec: EvalSpec) -> dg.DynamicPartitionsDefinition:
    """The versions the new-model sensor accepted (manifest valid, sha256 matching): the re-evaluation sensor's
    list of versions to consider. Not a partitioning of any asset."""
    return dg.DynamicPartitionsDefinition(name=f"{spec.task}__versions")


def evaluations_partitions(spec: EvalSpec) -> dg.DynamicPartitionsDefinition:
    """One partition per evaluated (version, snapshot): key ``<version>@<snapshot_id>``."""
    return dg.DynamicPartitionsDefinition(name=f"{spec.task}__evaluations")


def _snapshot_id_of(event) -> str | None:
    mat = event.asset_materialization if event is not None else None
    value = mat.metadata.get("snapshot_id") if mat is not None else None
    return getattr(value, "value", value)


def run_snapshot(context, spec: EvalSpec, ctx: TaskContext) -> Snapshot:
    """The snapshot this run built: dataset_snapshot's materialization IN THIS RUN (never a lake pointer another
    refresh may have moved meanwhile). A check or drift report executed on its own falls back to the asset's latest
    materialization, which is what Dagster defines a check to be about."""
    snap_key = key(spec, "dataset_snapshot")
    instance = context.instance
    records = instance.get_records_for_run(context.run.run_id,
                                           of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    snapshot_id = None
    for record in records:
        entry = record.event_log_entry
        mat = entry.asset_materialization
        if mat is not None and mat.asset_key == snap_key:
            snapshot_id = _snapshot_id_of(entry)
    if snapshot_id is None:
        snapshot_id = _snapshot_id_of(instance.get_latest_materialization_event(snap_key))
    if snapshot_id is None:
        raise dg.Failure(description=f"task '{spec.task}': no dataset_snapshot was materialized (in this run or "
                                     f"before); materialize {snap_key.to_user_string()} first", allow_retries=False)
    return load_snapshot(ctx.lake, spec.task, snapshot_id)
