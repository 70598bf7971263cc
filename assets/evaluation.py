"""Evaluation assets of one task, one partition per evaluated (version, snapshot): scoring → metrics → report →
gates (the result JSON, which completes the evidence set) → promotion, and the model's history (trends).

A FAIL verdict is not a crash: the run succeeds, the non-blocking ``gates_pass`` check fails with severity ERROR and
names the deciding gate rows, and ``champion_promotion`` declines to materialize, saying why. A run marked Failure
means something broke (bad input, a model that cannot be loaded, a storage fault).

Every asset and check of a run reads the same inputs, carried by the run itself: the candidate version and the
snapshot from the partition key ``<version>@<snapshot_id>``, the candidate's sha256 and the baseline (version and
sha256, resolved once when the run was requested) from the run config (resource ``run_inputs``). Nothing is read back
from a shared pointer, so concurrent runs of one version on two snapshots, or a champion changing mid-run, cannot
mix inputs. A candidate is compared with its recorded baseline; without one (monitoring the champion, or no
champion yet) only absolute gates apply.
"""

import functools
import warnings

import dagster as dg

from eval_pipeline import alerts, pipeline, report
from eval_pipeline.markdown import md_table
from eval_pipeline.registry import RegistryError
from eval_pipeline.scoring import ScoringError
from eval_pipeline.snapshot import DataError
from eval_pipeline.spec import EvalSpec
from resources import LakeResource, SettingsResource

from .common import RunInputsResource, evaluations_partitions, key, task_context
from .history import history_asset, numeric_metadata
from .common import run_inputs as inputs_of_run

INPUT_ERRORS = (ScoringError, RegistryError, DataError, pipeline.EvaluationError)


def build_evaluation_assets(spec: EvalSpec) -> list:
    parts = evaluations_partitions(spec)
    step = functools.partial(_step_asset, spec, parts)
    predictions = step(
        "predictions", ["dataset_snapshot"], {"parquet"}, _score, _predictions_metadata,
        retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
        description="Scores of the candidate version and of the recorded baseline on the evaluation rows of the "
                    "partition's snapshot, in batches. Artifacts are loaded only after their sha256 matches both the "
                    "manifest and the run's recorded sha256.")
    evaluation = step(
        "evaluation", ["predictions"], {"python"}, _metrics, _evaluation_metadata,
        description="Metrics overall and per slice with Poisson-bootstrap intervals, and paired candidate-minus-"
                    "baseline deltas on the same resamples (skipped when the evidence set of these inputs is already "
                    "complete). The overall values are numeric metadata (candidate/<metric>, baseline/<metric>, "
                    "delta/<metric>, each with /ci_low and /ci_high at evaluation.confidence, unadjusted), so the "
                    "Plots tab draws them across evaluations. The gates are decided here: `verdict` and the gate "
                    "counts are final as soon as this step ends (release_gates writes them into the result JSON).")
    # The report comes before the gates' result JSON: the result is written last and completes the evidence set,
    # and a FAIL is still explained (a FAIL stops promotion, not the report).
    decision_report = step(
        "decision_report", ["evaluation", "drift_report"], {"html"}, _report, _report_metadata,
        description="The decision report: verdict, deciding gates, overall and slice tables, data quality, drift, "
                    "reproducibility manifest. Markdown here, self-contained HTML in the lake. Written for every "
                    "verdict (a FAIL needs explaining most).")
    release_gates = step(
        "release_gates", ["evaluation", "decision_report"], {"python"}, _decide, _gates_metadata,
        description="Gates decided on the interval of the delta (non-inferiority) or of the value (absolute), with "
                    "multiplicity control. Writes the result JSON, last: it completes the evidence set.")
    return [predictions, evaluation, release_gates, _gates_check(spec, release_gates), decision_report,
            _promotion_asset(spec, parts), history_asset(spec)]


def _step_asset(spec: EvalSpec, parts: dg.PartitionsDefinition, name: str, deps: list[str], kinds: set[str],
                step, metadata, description: str, **kwargs) -> dg.AssetsDefinition:
    """One partitioned evaluation asset (a partition per evaluated version and snapshot): run a pipeline step on this
    run's inputs and describe what it produced: ``step(ctx, inputs)``, ``metadata(context, ctx, inputs, output)``."""

    @dg.asset(key=key(spec, name), group_name=spec.task, partitions_def=parts, deps=[key(spec, d) for d in deps],
              kinds=kinds, description=description, **kwargs)
    def _asset(context: dg.AssetExecutionContext, lake: LakeResource, settings: SettingsResource,
               run_inputs: RunInputsResource) -> dg.MaterializeResult:
        ctx, inputs = _run_context(context, spec, lake, settings, run_inputs)
        try:
            out = step(ctx, inputs)
        except INPUT_ERRORS as exc:
            # Bad input does not heal on a retry (a tampered file, a model that raises, an unvalidated snapshot):
            # fail once, clearly. Transient storage faults (OSError and friends) still get the retry policy.
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        return dg.MaterializeResult(metadata={**_inputs_metadata(ctx, inputs), **metadata(context, ctx, inputs, out)})

    return _asset


def _run_context(context, spec: EvalSpec, lake: LakeResource, settings: SettingsResource,
                 run_inputs: RunInputsResource) -> tuple[pipeline.TaskContext, pipeline.EvalInputs]:
    """The task and this run's own inputs (partition key and run config)."""
    return task_context(spec, lake, settings), inputs_of_run(context, run_inputs)


def _inputs_metadata(ctx, inputs: pipeline.EvalInputs) -> dict:
    return {"version": inputs.version, "snapshot_id": inputs.snapshot_id,
            "baseline": f"{ctx.model_name}@{inputs.baseline}" if inputs.baseline else
            ("none (monitoring)" if inputs.monitoring else "none (no champion: absolute gates only)"),
            "baseline_sha256": inputs.baseline_sha256 or "",
            "evidence": pipeline.evaluation_dir(ctx, inputs)}


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


# -- the steps, each on the run's own snapshot (refused, never swapped, when not validated), and their metadata
def _score(ctx: pipeline.TaskContext, inputs: pipeline.EvalInputs) -> dict:
    return pipeline.score(ctx, pipeline.run_snapshot(ctx, inputs), inputs)


def _predictions_metadata(context, ctx, inputs, scored: dict) -> dict:
    for role, s in scored.items():
        how = "(cached)" if s["cached"] else f"in {s.get('seconds')} s"
        context.log.info(f"{role} {s['model']}@{s['version']}: {s['rows']} rows {how}")
    return {"dagster/row_count": scored["candidate"]["rows"],
            "models": dg.MetadataValue.md(md_table(["role", "model", "sha256", "rows", "cached"], [
                [role, f"{s['model']}@{s['version']}", s["sha256"][:16], s["rows"], s["cached"]]
                for role, s in scored.items()]))}


def _metrics(ctx: pipeline.TaskContext, inputs: pipeline.EvalInputs) -> tuple[bool, dict]:
    reused = pipeline.evidence_complete(ctx, inputs)
    return reused, pipeline.compute_metrics(ctx, pipeline.run_snapshot(ctx, inputs), inputs)


def _evaluation_metadata(context, ctx, inputs, out: tuple[bool, dict]) -> dict:
    reused, metrics = out
    if reused:
        context.log.info(f"evidence {pipeline.evaluation_dir(ctx, inputs)} is complete: re-used, nothing written")
    slices = metrics["slices"]
    for warning in metrics.get("warnings", []):
        context.log.warning(warning)
    # The gates are decided in this step (gates.json, next to the bootstrap replicates): the verdict is final here, so
    # the UI shows it now, before the report is drawn; release_gates then completes the evidence set with it.
    gates = ctx.lake.read_json(f"{pipeline.evaluation_dir(ctx, inputs)}/gates.json")
    context.log.info(f"verdict for {ctx.model_name}@{inputs.version}: {gates['verdict']} {gates.get('counts', {})} "
                     f"(evidence set completed by release_gates)")
    return {"reused": reused, "verdict": gates["verdict"],
            **{f"gates_{k.lower()}": dg.MetadataValue.int(int(v)) for k, v in gates.get("counts", {}).items()},
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in metrics.get("warnings", [])) or "none"),
            **numeric_metadata(metrics),
            "rows": dg.MetadataValue.int(int(metrics["n_rows"])),
            "slices_evaluated": sum(1 for s in slices if s.get("status") == "ok"),
            "slices_too_small": sum(1 for s in slices if s.get("status") != "ok"),
            "overall": dg.MetadataValue.md(_overall_table(metrics)),
            **_fairness_metadata(metrics.get("fairness")), **_suites_metadata(metrics.get("suites"))}


def _fairness_metadata(block: dict | None) -> dict:
    """The fairness section's disparities: a table, and numbers the Plots tab can draw (fairness/<metric>/<role>,
    role = candidate, baseline or delta). Nothing without a fairness section."""
    if not block:
        return {}
    from eval_pipeline.report_fairness import disparity_rows

    meta = {"fairness": dg.MetadataValue.md(md_table(*disparity_rows(block)))}
    d = block["disparities"]
    cells = {**{r: d["models"].get(r, {}) for r in ("candidate", "baseline")}, "delta": d.get("delta", {})}
    for role, by_metric in cells.items():
        for m, cell in by_metric.items():
            if cell.get("value") is not None:
                meta[f"fairness/{m}/{role}"] = dg.MetadataValue.float(cell["value"])
    return meta


def _suites_metadata(blocks: list | None) -> dict:
    """The evaluation suites: one row per suite (outcome, what decided it, failing ids) and each suite's verdict.
    Nothing without suites."""
    if not blocks:
        return {}
    from eval_pipeline.report_suites import SUMMARY_HEADER, summary_rows

    return {"suites": dg.MetadataValue.md(md_table(SUMMARY_HEADER, summary_rows(blocks))),
            **{f"suite/{b['name']}": b.get("verdict") or "not gated" for b in blocks}}


def _report(ctx: pipeline.TaskContext, inputs: pipeline.EvalInputs) -> dict:
    return pipeline.write_report(ctx, pipeline.run_snapshot(ctx, inputs), inputs)


def _report_metadata(context, ctx, inputs, out: dict) -> dict:
    context.log.info(f"report: {out['html_uri']}")
    meta = {"verdict": out["verdict"], "report": dg.MetadataValue.md(out["markdown"]),
            "html": dg.MetadataValue.path(out["html_uri"])}
    url = out.get("report_url") or ""
    if url.startswith("file://"):
        # a link the UI can open; on S3 the link would be a presigned URL, which carries the access key id, and
        # metadata is kept for good in the instance: there the report is reached through the lake path above
        meta["plots"] = dg.MetadataValue.md(out["plots_markdown"])
        meta["report_link"] = dg.MetadataValue.url(url)
    return meta


def _decide(ctx: pipeline.TaskContext, inputs: pipeline.EvalInputs) -> dict:
    result = pipeline.decide(ctx, pipeline.run_snapshot(ctx, inputs), inputs)
    alerts.notify(ctx.lake, ctx.spec, "verdict", result, None)  # FAIL (and INCONCLUSIVE where asked); never raises
    return result


def _gates_metadata(context, ctx, inputs, result: dict) -> dict:
    counts = result["gate_summary"].get("counts", {})
    context.log.info(f"verdict for {ctx.model_name}@{inputs.version}: {result['verdict']} {counts}")
    return {"verdict": result["verdict"],
            "mode": result["mode"],
            "candidate": result["candidate"]["ref"],
            **{f"gates_{k.lower()}": int(v) for k, v in counts.items()},
            "gates": dg.MetadataValue.md(md_table(report.GATE_HEADER, report.gate_rows(result))),
            "result_json": dg.MetadataValue.path(ctx.lake.uri(result["paths"]["result"]))}


def _gates_check(spec: EvalSpec, release_gates: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    # Partitioned like release_gates: each evaluation records its own partition's verdict (the UI shows the check per
    # version x snapshot, not a "latest" that flips between versions). Partitioned checks are a Dagster "preview"
    # feature in 1.13 (dagster is pinned exactly); its warning is silenced here, where we chose it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        return _gates_check_def(spec, release_gates)


def _gates_check_def(spec: EvalSpec, release_gates: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=release_gates, name="gates_pass", blocking=False,
                    partitions_def=release_gates.partitions_def,
                    description="The partition's own verdict (version x snapshot x baseline). FAIL: the check fails "
                                "with severity ERROR and names the deciding gate rows; INCONCLUSIVE: fails with "
                                "severity WARN. Not blocking: rejecting a candidate is the pipeline doing its job, so "
                                "the run succeeds and champion_promotion declines to materialize (a run marked "
                                "Failure means something broke).")
    def gates_pass(context: dg.AssetCheckExecutionContext, lake: LakeResource, settings: SettingsResource,
                   run_inputs: RunInputsResource) -> dg.AssetCheckResult:
        ctx, inputs = _run_context(context, spec, lake, settings, run_inputs)
        result = pipeline.load_result(ctx, inputs)
        verdict = result["verdict"]
        deciding = _deciding(result)
        counts = result["gate_summary"].get("counts", {})
        return dg.AssetCheckResult(
            passed=verdict == "PASS",
            severity=dg.AssetCheckSeverity.ERROR if verdict == "FAIL" else dg.AssetCheckSeverity.WARN,
            description=f"{verdict} for {ctx.model_name}@{inputs.version} on snapshot {inputs.snapshot_id}: "
                        + ("; ".join(_gate_sentence(g) for g in deciding[:3]) or "every gate cleared its bound")
                        + (f" (+{len(deciding) - 3} more)" if len(deciding) > 3 else ""),
            metadata={"verdict": verdict, "version": inputs.version, "snapshot_id": inputs.snapshot_id,
                      "candidate": result["candidate"]["ref"],
                      "baseline": (result["baseline"] or {}).get("ref", "none"), "mode": result["mode"],
                      **{f"gates_{k.lower()}": dg.MetadataValue.int(int(v)) for k, v in counts.items()},
                      "deciding_gates": dg.MetadataValue.md(
                          md_table(report.GATE_HEADER, report.gate_rows({"gates": deciding})) if deciding else "none"),
                      "result_json": dg.MetadataValue.path(ctx.lake.uri(result["paths"]["result"]))})

    return gates_pass


def _deciding(result: dict) -> list[dict]:
    """The gate rows whose outcome is the verdict (none for a PASS)."""
    verdict = result["verdict"]
    return [g for g in result["gates"] if g["outcome"] == verdict and verdict != "PASS"]


def _gate_sentence(g: dict) -> str:
    """``metric on slice: <the rule's decision>``, without the p-value and power sentences (the deciding_gates table
    keeps the whole rule)."""
    rule = (g.get("rule") or g["outcome"]).split(" (p = ")[0].split("; ")[0]
    return f"{g['metric']} on {g['slice']}: {rule}"


def _promotion_asset(spec: EvalSpec, parts: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(key=key(spec, "champion_promotion"), group_name=spec.task, partitions_def=parts,
              deps=[key(spec, "release_gates")], kinds={"python"}, output_required=False,
              description="Opt-in (EVAL_PROMOTE_ON_PASS or monitoring.promote_on_pass): a PASSing candidate becomes "
                          "champion, with an audit record — only if the champion is still the baseline it was "
                          "evaluated against (compare-and-swap). On FAIL or INCONCLUSIVE it is skipped: not "
                          "materialized; an observation (promoted=False, why) and the log say why.")
    def champion_promotion(context: dg.AssetExecutionContext, lake: LakeResource, settings: SettingsResource,
                           run_inputs: RunInputsResource):
        ctx, inputs = _run_context(context, spec, lake, settings, run_inputs)
        result = pipeline.load_result(ctx, inputs)
        enabled = settings.promote_on_pass or spec.monitoring.promote_on_pass
        if result["mode"] != "release":
            yield dg.MaterializeResult(metadata={"promoted": False, "why": "already champion (monitoring run)"})
            return
        if result["verdict"] != "PASS":
            # A rejected (or undecided) candidate: nothing to promote, and not a failure of the run.
            why = (f"verdict is {result['verdict']} against {(result['baseline'] or {}).get('ref', 'no baseline')}: "
                   + ("; ".join(_gate_sentence(g) for g in _deciding(result)[:3]) or "no gate decided"))
            context.log.warning(f"promotion skipped for {ctx.model_name}@{inputs.version}: {why}")
            yield dg.AssetObservation(asset_key=context.asset_key, partition=context.partition_key,
                                      metadata={"promoted": False, "skipped": True, "verdict": result["verdict"],
                                                "why": why})
            return
        if not enabled:
            yield dg.MaterializeResult(metadata={"promoted": False, "why": "promotion is opt-in and disabled"})
            return
        try:
            record = pipeline.promote(ctx, result)
        except pipeline.PromotionRefused as exc:
            # Not a run failure: the evaluation is sound, it is just stale (the re-evaluation sensor follows up).
            context.log.warning(f"not promoted: {exc}")
            yield dg.MaterializeResult(metadata={"promoted": False, "why": str(exc)})
            return
        context.log.info(f"promoted {ctx.model_name}@{inputs.version} to champion (was {record['previous']})")
        yield dg.MaterializeResult(metadata={"promoted": True, "previous": str(record["previous"]),
                                             "promoted_at": record["promoted_at"]})

    return champion_promotion
