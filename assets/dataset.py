"""Dataset assets of one task: the snapshot (with its blocking data-quality check) and the drift report."""

import datetime as dt
import hashlib

import dagster as dg

from eval_pipeline import alerts, pipeline
from eval_pipeline.markdown import md_table
from eval_pipeline.spec import EvalSpec
from resources import LakeResource, SettingsResource

from .common import key, run_snapshot, task_context

SPEC_FINGERPRINT = "spec_fingerprint"  # metadata key: which spec a quality result / drift report was computed under


def build_dataset_assets(spec: EvalSpec) -> list:
    snapshot = _snapshot_asset(spec)
    return [snapshot, _quality_check(spec, snapshot), _drift_asset(spec, snapshot)]


def _snapshot_metadata(ctx: pipeline.TaskContext, snap) -> dict:
    m = snap.manifest
    return {
        "snapshot_id": snap.snapshot_id,
        "content_hash": m["content_hash"],
        "dagster/row_count": m["rows"],
        "path": dg.MetadataValue.path(ctx.lake.uri(snap.manifest_path)),
        "parts": len(snap.parts),
        "time_range": " → ".join(str(t) for t in (m.get("time_range") or [])),
        "source_files": len(m["source_files"]),
        "sources": dg.MetadataValue.md(md_table(["file", "rows", "sha256"], [
            [s["path"], s["rows"], s["sha256"][:16]] for s in m["source_files"]])),
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn(name, dtype) for name, dtype in m["schema"].items()]),
    }


def _snapshot_asset(spec: EvalSpec) -> dg.AssetsDefinition:
    @dg.asset(key=key(spec, "dataset_snapshot"), group_name=spec.task, kinds={"parquet"},
              description=f"Versioned snapshot of everything landed under {spec.data.source}: content-hashed, "
                          "sorted, typed. Re-used when nothing new landed.")
    def dataset_snapshot(context: dg.AssetExecutionContext, lake: LakeResource,
                         settings: SettingsResource) -> dg.MaterializeResult:
        ctx = task_context(spec, lake, settings)
        snap = pipeline.refresh(ctx)
        m = snap.manifest
        context.log.info(f"snapshot {snap.snapshot_id}: {m['rows']} rows from {len(m['source_files'])} files")
        return dg.MaterializeResult(data_version=dg.DataVersion(snap.snapshot_id),
                                    metadata=_snapshot_metadata(ctx, snap))

    return dataset_snapshot


def _this_runs_snapshot(context, spec: EvalSpec, lake: LakeResource, settings: SettingsResource):
    """(TaskContext, the snapshot this run built): never latest.json, which another refresh may have moved."""
    ctx = task_context(spec, lake, settings)
    return ctx, run_snapshot(context, spec, ctx)


def _quality_check(spec: EvalSpec, snapshot: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=snapshot, name="data_quality", blocking=True,
                    description="Great Expectations: schema, nulls, label domain, ranges, uniqueness, freshness, row "
                                "count. Blocking: evaluation does not run on bad data.")
    def data_quality(context: dg.AssetCheckExecutionContext, lake: LakeResource,
                     settings: SettingsResource) -> dg.AssetCheckResult:
        ctx, snap = _this_runs_snapshot(context, spec, lake, settings)
        result = pipeline.validate(ctx, snap)
        for msg in result.failures():
            context.log.error(msg)
        stats = result.statistics
        return dg.AssetCheckResult(
            passed=bool(result.success),
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(result.failures()[:3]) or "all expectations met",
            metadata={
                "snapshot_id": snap.snapshot_id,
                SPEC_FINGERPRINT: spec_fingerprint(spec),
                "evaluated": stats.get("evaluated_expectations"),
                "failed": stats.get("unsuccessful_expectations"),
                "results": dg.MetadataValue.md(result.to_markdown()),
                "report": dg.MetadataValue.path(ctx.lake.uri(pipeline.quality_paths(ctx, snap)[1])),
            })

    return data_quality


def _drift_asset(spec: EvalSpec, snapshot: dg.AssetsDefinition) -> dg.AssetsDefinition:
    @dg.asset(key=key(spec, "drift_report"), group_name=spec.task, deps=[snapshot], kinds={"evidently"},
              description="Evidently data drift, reference window vs current window of the snapshot. HTML in the lake, "
                          "per-column summary here.")
    def drift_report(context: dg.AssetExecutionContext, lake: LakeResource,
                     settings: SettingsResource) -> dg.MaterializeResult:
        ctx, snap = _this_runs_snapshot(context, spec, lake, settings)
        if not spec.drift.enabled:
            return dg.MaterializeResult(metadata={"enabled": False, "snapshot_id": snap.snapshot_id,
                                                  SPEC_FINGERPRINT: spec_fingerprint(spec)})
        result = pipeline.drift(ctx, snap)
        summary = result.to_dict()
        alerts.notify(ctx.lake, spec, "drift", {**summary, "snapshot_id": snap.snapshot_id}, None)  # only on drift
        context.log.info(f"drift: {summary['n_drifted']} of {len(summary['columns'])} columns drifted")
        return dg.MaterializeResult(metadata={
            "snapshot_id": snap.snapshot_id,
            SPEC_FINGERPRINT: spec_fingerprint(spec),
            "dataset_drift": bool(summary["dataset_drift"]),
            # numeric, stable keys: the Plots tab draws them across nights
            "drifted_columns": dg.MetadataValue.int(int(summary["n_drifted"])),
            "columns_checked": dg.MetadataValue.int(len(summary["columns"])),
            "share_drifted": dg.MetadataValue.float(float(summary["share_drifted"])),
            **{f"rows/{w}": dg.MetadataValue.int(int(summary[f"{w}_rows_total"])) for w in ("reference", "current")
               if summary.get(f"{w}_rows_total") is not None},
            "columns": dg.MetadataValue.md(result.to_markdown()),
            "html": dg.MetadataValue.path(ctx.lake.uri(pipeline.drift_paths(ctx, snap)[1])),
        })

    return drift_report


# -- skipping unchanged work ------------------------------------------------------------------------------------------
def spec_fingerprint(spec: EvalSpec) -> str:
    """What a quality result and a drift report were computed under: the whole spec (conservative: any change to it
    re-validates once), plus today's date when freshness is judged against the clock (a result from yesterday says
    nothing about today's freshness)."""
    text = spec.model_dump_json()
    fresh = spec.expectations.freshness
    if fresh is not None and fresh.as_of is None:
        text += dt.datetime.now(dt.timezone.utc).strftime("|clock:%Y-%m-%d")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _value(metadata: dict, name: str):
    value = (metadata or {}).get(name)
    return getattr(value, "value", value)


def current_dataset(instance: dg.DagsterInstance, ctx: pipeline.TaskContext):
    """(snapshot, "") when the landing zone's snapshot is unchanged AND this instance already validated it (passed)
    and computed its drift under the same spec, with both results still in the lake: a run for a new candidate then
    needs neither refresh, validation nor drift. Otherwise (None, why).

    The refresh itself is the test of "unchanged": snapshots are content-addressed, so the same landed files give the
    same snapshot id, and an unchanged landing zone is re-used without re-reading old files. New or changed files
    give a new id, which no check has passed yet: the caller runs the refresh job (refresh, validation, drift)."""
    spec = ctx.spec
    if spec.data.sql is not None:  # its refresh runs the query: once, in the job
        return None, "a SQL source is refreshed by the refresh job"
    try:
        snap = pipeline.refresh(ctx)
    except Exception as exc:  # noqa: BLE001 - the refresh job reports it properly, with its own error handling
        return None, f"refresh needs the job: {type(exc).__name__}: {exc}"
    sid, fingerprint = snap.snapshot_id, spec_fingerprint(spec)
    record = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(key(spec, "dataset_snapshot"), "data_quality"))
    evaluation = record.event.dagster_event.event_specific_data if record and record.event else None
    if evaluation is None or _value(evaluation.metadata, "snapshot_id") != sid:
        return None, f"snapshot {sid} has not been validated in this instance"
    if _value(evaluation.metadata, SPEC_FINGERPRINT) != fingerprint:
        return None, f"snapshot {sid} was validated under another spec (or another day, for clock freshness)"
    if not evaluation.passed or not pipeline.quality_status(ctx, sid):
        return None, f"snapshot {sid} failed data quality (or its result is gone from the lake)"
    drift = instance.get_latest_materialization_event(key(spec, "drift_report"))
    meta = drift.asset_materialization.metadata if drift and drift.asset_materialization else {}
    if _value(meta, "snapshot_id") != sid or _value(meta, SPEC_FINGERPRINT) != fingerprint:
        return None, f"drift of snapshot {sid} under this spec has not been computed in this instance"
    if spec.drift.enabled and not ctx.lake.exists(pipeline.drift_paths(ctx, snap)[0]):
        return None, f"drift of snapshot {sid} is gone from the lake"
    return snap, ""
