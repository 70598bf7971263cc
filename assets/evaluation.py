"""Evaluation assets of one task, one partition per model version: scoring → metrics → gates → report → promotion.

A candidate partition is compared with the champion (baseline); the champion's own partition is monitoring: it is
evaluated alone against absolute gates. The snapshot a partition is evaluated on is pinned by the scoring step so
every later step of the same evaluation reads the same data even if a refresh lands meanwhile.
"""

import dagster as dg

from eval_pipeline import pipeline, report
from eval_pipeline.registry import RegistryError
from eval_pipeline.scoring import ScoringError
from eval_pipeline.snapshot import DataError, load_snapshot
from eval_pipeline.spec import EvalSpec
from resources import LakeResource, SettingsResource

from .common import key, md_table, task_context, versions_partitions

INPUT_ERRORS = (ScoringError, RegistryError, DataError, pipeline.EvaluationError)


def _pin_path(ctx, version: str) -> str:
    return f"evaluations/{ctx.task}/{ctx.model_name}/{version}/pinned_snapshot.json"


def _pinned(ctx, version: str):
    return load_snapshot(ctx.lake, ctx.task, ctx.lake.read_json(_pin_path(ctx, version))["snapshot_id"])


def _overall_table(metrics: dict) -> str:
    overall = next(s for s in metrics["slices"] if s["slice"] == "overall")
    rows = []
    for metric in metrics["metrics"]:
        row = [metric]
        for role in metrics.get("roles", list(overall["models"])):
            cell = overall["models"].get(role, {}).get(metric, {})
            ci = cell.get("ci")
            row.append(f"{cell.get('value'):.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if cell.get("value") is not None and ci
                       else (f"{cell['value']:.4f}" if cell.get("value") is not None else f"undefined: {cell.get('undefined')}"))
        d = overall.get("delta", {}).get(metric)
        if d:
            ci = d.get("ci")
            row.append(f"{d['value']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]" if d.get("value") is not None and ci else "—")
        rows.append(row)
    roles = metrics.get("roles", list(overall["models"]))
    header = ["metric"] + roles + (["Δ candidate − baseline"] if overall.get("delta") else [])
    return md_table(header, rows)


def build_evaluation_assets(spec: EvalSpec) -> list:
    task = spec.task
    parts = versions_partitions(spec)

    @dg.asset(key=key(spec, "predictions"), group_name=task, partitions_def=parts, deps=[key(spec, "dataset_snapshot")],
              kinds={"parquet"}, retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
              description="Scores of the candidate version and of the champion (baseline) on the evaluation rows, "
                          "in batches. Artifacts are loaded only after their sha256 matches the manifest.")
    def predictions(context: dg.AssetExecutionContext, lake: LakeResource,
                    settings: SettingsResource) -> dg.MaterializeResult:
        ctx = task_context(spec, lake, settings)
        version = context.partition_key
        requested = context.run.tags.get("eval/snapshot")  # the snapshot a sensor asked for, if any
        if requested and pipeline.quality_passed(ctx, requested):
            snap, note = load_snapshot(ctx.lake, task, requested), ""
        else:
            snap, note = pipeline.snapshot_for_evaluation(ctx)
        if note:
            context.log.warning(note)
        ctx.lake.write_json(_pin_path(ctx, version), {"snapshot_id": snap.snapshot_id})
        try:
            scored = pipeline.score(ctx, snap, version)
        except INPUT_ERRORS as exc:
            # Bad input does not heal on a retry (a tampered file, a model that raises): fail once, clearly.
            # Transient storage faults (OSError and friends) still get the retry policy.
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        for role, s in scored.items():
            how = "(cached)" if s["cached"] else f"in {s.get('seconds')} s"
            context.log.info(f"{role} {s['model']}@{s['version']}: {s['rows']} rows {how}")
        return dg.MaterializeResult(metadata={
            "snapshot_id": snap.snapshot_id,
            "dagster/row_count": scored["candidate"]["rows"],
            "models": dg.MetadataValue.md(md_table(["role", "model", "sha256", "rows", "cached"], [
                [role, f"{s['model']}@{s['version']}", s["sha256"][:16], s["rows"], s["cached"]]
                for role, s in scored.items()])),
        })

    @dg.asset(key=key(spec, "evaluation"), group_name=task, partitions_def=parts, deps=[predictions], kinds={"python"},
              description="Metrics overall and per slice with Poisson-bootstrap intervals, and paired "
                          "candidate-minus-baseline deltas on the same resamples.")
    def evaluation(context: dg.AssetExecutionContext, lake: LakeResource,
                   settings: SettingsResource) -> dg.MaterializeResult:
        ctx = task_context(spec, lake, settings)
        version = context.partition_key
        snap = _pinned(ctx, version)
        result = pipeline.compute_metrics(ctx, snap, version)
        metrics = result.to_dict()
        slices = metrics["slices"]
        for warning in metrics.get("warnings", []):
            context.log.warning(warning)
        return dg.MaterializeResult(metadata={
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in metrics.get("warnings", [])) or "none"),
            "snapshot_id": snap.snapshot_id,
            "rows": metrics["n_rows"],
            "slices_evaluated": sum(1 for s in slices if s.get("status") == "ok"),
            "slices_too_small": sum(1 for s in slices if s.get("status") != "ok"),
            "overall": dg.MetadataValue.md(_overall_table(metrics)),
            "metrics_json": dg.MetadataValue.path(
                ctx.lake.uri(f"{pipeline.evaluation_dir(ctx, version, snap)}/metrics.json")),
        })

    @dg.asset(key=key(spec, "release_gates"), group_name=task, partitions_def=parts, deps=[evaluation],
              kinds={"python"},
              description="Gates decided on the interval of the delta (non-inferiority) or of the value (absolute), "
                          "with multiplicity control. Writes the result JSON.")
    def release_gates(context: dg.AssetExecutionContext, lake: LakeResource,
                      settings: SettingsResource) -> dg.MaterializeResult:
        ctx = task_context(spec, lake, settings)
        version = context.partition_key
        snap = _pinned(ctx, version)
        result = pipeline.decide(ctx, snap, version)
        counts = result["gate_summary"].get("counts", {})
        context.log.info(f"verdict for {ctx.model_name}@{version}: {result['verdict']} {counts}")
        return dg.MaterializeResult(metadata={
            "verdict": result["verdict"],
            "mode": result["mode"],
            "candidate": result["candidate"]["ref"],
            "baseline": result["baseline"]["ref"] if result["baseline"] else "none (monitoring)",
            **{f"gates_{k.lower()}": int(v) for k, v in counts.items()},
            "gates": dg.MetadataValue.md(md_table(report.GATE_HEADER, report.gate_rows(result))),
            "result_json": dg.MetadataValue.path(result["paths"]["result"]),
        })

    @dg.asset_check(asset=release_gates, name="gates_pass", blocking=True,
                    description="Blocking: a FAIL verdict stops promotion (and anything else downstream of the "
                                "gates); INCONCLUSIVE warns.")
    def gates_pass(context: dg.AssetCheckExecutionContext, lake: LakeResource,
                   settings: SettingsResource) -> dg.AssetCheckResult:
        ctx = task_context(spec, lake, settings)
        version = context.run.tags.get("dagster/partition") or context.partition_key
        result = pipeline.load_result(ctx, _pinned(ctx, version), version)
        verdict = result["verdict"]
        deciding = [g for g in result["gates"] if g["outcome"] == verdict and verdict != "PASS"]
        return dg.AssetCheckResult(
            passed=verdict == "PASS",
            severity=dg.AssetCheckSeverity.ERROR if verdict == "FAIL" else dg.AssetCheckSeverity.WARN,
            description=f"{verdict}: " + ("; ".join(f"{g['metric']} on {g['slice']}: {g['rule']}" for g in deciding[:3])
                                          or "every gate cleared its bound"),
            metadata={"verdict": verdict, "version": version,
                      "deciding_gates": dg.MetadataValue.md(md_table(["metric", "slice", "outcome", "rule"], [
                          [g["metric"], g["slice"], g["outcome"], g.get("rule", "")] for g in deciding]) if deciding
                          else "none")})

    # The report hangs off `evaluation`, not off `release_gates`: a FAIL must still be explained to the person who
    # acts on it. What the blocking gates check stops is promotion.
    @dg.asset(key=key(spec, "decision_report"), group_name=task, partitions_def=parts,
              deps=[evaluation, key(spec, "drift_report")], kinds={"html"},
              description="The decision report: verdict, deciding gates, overall and slice tables, data quality, "
                          "drift, reproducibility manifest. Markdown here, self-contained HTML in the lake. Written "
                          "for every verdict (a FAIL needs explaining most).")
    def decision_report(context: dg.AssetExecutionContext, lake: LakeResource,
                        settings: SettingsResource) -> dg.MaterializeResult:
        ctx = task_context(spec, lake, settings)
        version = context.partition_key
        out = pipeline.write_report(ctx, _pinned(ctx, version), version)
        context.log.info(f"report: {out['html_uri']}")
        return dg.MaterializeResult(metadata={"verdict": out["verdict"], "report": dg.MetadataValue.md(out["markdown"]),
                                              "html": dg.MetadataValue.path(out["html_uri"])})

    @dg.asset(key=key(spec, "champion_promotion"), group_name=task, partitions_def=parts,
              deps=[release_gates, decision_report],
              kinds={"python"},
              description="Opt-in (EVAL_PROMOTE_ON_PASS or monitoring.promote_on_pass): a PASSing candidate becomes "
                          "champion, with an audit record. Never on FAIL or INCONCLUSIVE.")
    def champion_promotion(context: dg.AssetExecutionContext, lake: LakeResource,
                           settings: SettingsResource) -> dg.MaterializeResult:
        ctx = task_context(spec, lake, settings)
        version = context.partition_key
        snap = _pinned(ctx, version)
        result = pipeline.load_result(ctx, snap, version)
        enabled = settings.promote_on_pass or spec.monitoring.promote_on_pass
        if result["mode"] != "release":
            return dg.MaterializeResult(metadata={"promoted": False, "why": "already champion (monitoring run)"})
        if not enabled or result["verdict"] != "PASS":
            why = "promotion is opt-in and disabled" if not enabled else f"verdict is {result['verdict']}"
            return dg.MaterializeResult(metadata={"promoted": False, "why": why})
        record = pipeline.promote(ctx, snap, version)
        context.log.info(f"promoted {ctx.model_name}@{version} to champion (was {record['previous']})")
        return dg.MaterializeResult(metadata={"promoted": True, "previous": str(record["previous"]),
                                              "promoted_at": record["promoted_at"]})

    return [predictions, evaluation, release_gates, gates_pass, decision_report, champion_promotion]

