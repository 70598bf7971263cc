"""Dataset assets of one task: the snapshot (with its blocking data-quality check) and the drift report."""

import dagster as dg

from eval_pipeline import alerts, pipeline
from eval_pipeline.markdown import md_table
from eval_pipeline.spec import EvalSpec
from resources import LakeResource, SettingsResource

from .common import key, run_snapshot, task_context


def build_dataset_assets(spec: EvalSpec) -> list:
    snapshot = _snapshot_asset(spec)
    return [snapshot, _quality_check(spec, snapshot), _drift_asset(spec, snapshot)]


def _snapshot_metadata(ctx: pipeline.TaskContext, snap) -> dict:
    m = snap.manifest
    return {
        "snapshot_id": snap.snapshot_id,
        "content_hash": m["content_hash"],
        "dagster/row_count": m["rows"],
        "path": dg.MetadataValue.path(ctx.lake.uri(snap.data_path)),
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
            return dg.MaterializeResult(metadata={"enabled": False})
        result = pipeline.drift(ctx, snap)
        summary = result.to_dict()
        alerts.notify(ctx.lake, spec, "drift", {**summary, "snapshot_id": snap.snapshot_id}, None)  # only on drift
        context.log.info(f"drift: {summary['n_drifted']} of {len(summary['columns'])} columns drifted")
        return dg.MaterializeResult(metadata={
            "snapshot_id": snap.snapshot_id,
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
