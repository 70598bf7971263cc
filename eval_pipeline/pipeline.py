"""The evaluation steps as plain functions: what each Dagster asset calls, usable from a notebook or CI as well.

Each step reads its inputs from the lake and writes its outputs there (atomically), so steps can run in different
processes and runs. Outputs are keyed by what determines them (snapshot id, model version), never by run or time,
which makes re-runs idempotent and results byte-identical.

    quality/<task>/<snapshot>/result.json, report.html
    drift/<task>/<snapshot>/drift.json, drift.html
    predictions/<task>/<snapshot>/<model>/<version>.parquet
    evaluations/<task>/<model>/<version>/<snapshot>/metrics.json, gates.json, result.json, report.md, report.html
    history/<task>/<model>/<version>-<snapshot>.json
"""

from dataclasses import dataclass, field
from importlib import metadata


from .lake import Lake
from .registry import ModelManifest, Registry
from .scoring import predictions_path, score_columns, score_model
from .snapshot import DataError, Snapshot, eval_rows, load_snapshot, read_window, refresh_snapshot
from .spec import EvalSpec, spec_text_from

PACKAGES = ("eval-pipeline", "dagster", "pandas", "numpy", "pyarrow", "scikit-learn", "great-expectations",
            "evidently", "s3fs", "skops")


class EvaluationError(ValueError):
    """A step that cannot proceed; the message says which input is at fault."""


@dataclass
class TaskContext:
    lake: Lake
    spec: EvalSpec
    trusted_types: list[str] | None = None
    registry: Registry = field(init=False)

    def __post_init__(self) -> None:
        self.registry = Registry(self.lake)

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def model_name(self) -> str:
        return self.spec.model.name


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# -- dataset and data quality ----------------------------------------------------------------------------------------
def refresh(ctx: TaskContext) -> Snapshot:
    return refresh_snapshot(ctx.lake, ctx.spec)


def quality_paths(ctx: TaskContext, snap: Snapshot) -> tuple[str, str]:
    base = f"quality/{ctx.task}/{snap.snapshot_id}"
    return f"{base}/result.json", f"{base}/report.html"


def validate(ctx: TaskContext, snap: Snapshot):
    """Great Expectations validation of the snapshot; the result is persisted whether it passes or not."""
    from .quality import render_html, validate_dataset

    frame = ctx.lake.read_parquet(snap.data_path)
    spec = ctx.spec
    result = validate_dataset(
        frame, expectations=spec.expectations.model_dump(mode="python"), id_column=spec.columns.id,
        label_column=spec.columns.label, timestamp_column=spec.columns.timestamp,
        feature_columns=list(spec.columns.features), task_type=spec.task_type,
        label_values=spec.expectations.label_values, source=f"{spec.task} snapshot {snap.snapshot_id}")
    json_rel, html_rel = quality_paths(ctx, snap)
    ctx.lake.write_json(json_rel, result.to_dict())
    ctx.lake.write_text(html_rel, render_html(result))
    if result.success:
        ctx.lake.write_json(f"snapshots/{ctx.task}/validated.json", {"snapshot_id": snap.snapshot_id})
    return result


def snapshot_for_evaluation(ctx: TaskContext) -> tuple[Snapshot, str]:
    """The newest snapshot that passed data quality, and a note when that is not the newest snapshot.

    A bad delivery of data must not stop a model from being evaluated on the last good data, and must never be
    evaluated itself."""
    latest = load_snapshot(ctx.lake, ctx.task)
    pointer = f"snapshots/{ctx.task}/validated.json"
    if not ctx.lake.exists(pointer):
        require_quality_passed(ctx, latest)  # raises with the reason (not validated yet / failed)
        return latest, ""
    validated = load_snapshot(ctx.lake, ctx.task, ctx.lake.read_json(pointer)["snapshot_id"])
    if validated.snapshot_id == latest.snapshot_id:
        return latest, ""
    return validated, (f"the newest snapshot {latest.snapshot_id} is not validated (or failed data quality); "
                       f"evaluating on the last validated snapshot {validated.snapshot_id}")


def quality_passed(ctx: TaskContext, snapshot_id: str) -> bool:
    rel = f"quality/{ctx.task}/{snapshot_id}/result.json"
    return ctx.lake.exists(rel) and bool(ctx.lake.read_json(rel).get("success"))


def require_quality_passed(ctx: TaskContext, snap: Snapshot) -> dict:
    """Refuse to evaluate on a snapshot whose data-quality validation failed or never ran (defence in depth:
    Dagster's blocking check stops the same run; this also stops later runs on the same bad snapshot)."""
    json_rel, _ = quality_paths(ctx, snap)
    if not ctx.lake.exists(json_rel):
        raise EvaluationError(f"snapshot {snap.snapshot_id} of task '{ctx.task}' has not been validated yet; "
                              f"run the data-quality check first")
    result = ctx.lake.read_json(json_rel)
    if not result.get("success"):
        failed = [r.get("message") for r in result.get("results", []) if not r.get("success")]
        raise EvaluationError(f"snapshot {snap.snapshot_id} of task '{ctx.task}' failed data quality: "
                              + "; ".join(str(m) for m in failed[:5]))
    return result


# -- drift -----------------------------------------------------------------------------------------------------------
def drift(ctx: TaskContext, snap: Snapshot):
    from .drift import compute_drift

    spec = ctx.spec
    cols = spec.drift_columns()
    reference = read_window(ctx.lake, snap, spec, cols, spec.drift.reference)
    current = read_window(ctx.lake, snap, spec, cols, spec.drift.current)
    if reference.empty or current.empty:
        side = "reference" if reference.empty else "current"
        raise DataError(f"task '{spec.task}': the drift {side} window has no rows in snapshot {snap.snapshot_id} "
                        f"(time range {snap.manifest.get('time_range')}); adjust drift.{side}")
    categorical = list(spec.columns.categorical) or None
    result = compute_drift(reference, current, columns=cols, categorical=categorical, method=spec.drift.method,
                           threshold=spec.drift.threshold, drift_share=spec.drift.drift_share,
                           max_rows=spec.drift.max_rows, seed=spec.evaluation.seed,
                           title=f"{spec.task}: drift, reference vs current")
    base = f"drift/{ctx.task}/{snap.snapshot_id}"
    ctx.lake.write_json(f"{base}/drift.json", result.to_dict())
    ctx.lake.write_text(f"{base}/drift.html", result.html)
    return result


# -- models ----------------------------------------------------------------------------------------------------------
def resolve_pair(ctx: TaskContext, version: str) -> tuple[ModelManifest, ModelManifest | None]:
    """The candidate version and the baseline it is compared with (the champion; none if it is the champion)."""
    candidate = ctx.registry.manifest(ctx.model_name, version)
    champion = ctx.registry.champion(ctx.model_name)
    if champion is None or champion == version:
        return candidate, None
    return candidate, ctx.registry.manifest(ctx.model_name, champion)


def score(ctx: TaskContext, snap: Snapshot, version: str) -> dict:
    require_quality_passed(ctx, snap)
    candidate, baseline = resolve_pair(ctx, version)
    out = {"candidate": score_model(ctx.lake, ctx.registry, ctx.spec, snap, candidate, ctx.trusted_types)}
    if baseline is not None:
        out["baseline"] = score_model(ctx.lake, ctx.registry, ctx.spec, snap, baseline, ctx.trusted_types)
    return out


# -- metrics and gates -----------------------------------------------------------------------------------------------
def evaluation_dir(ctx: TaskContext, version: str, snap: Snapshot) -> str:
    return f"evaluations/{ctx.task}/{ctx.model_name}/{version}/{snap.snapshot_id}"


def _engine_batches(ctx: TaskContext, snap: Snapshot, roles: dict[str, ModelManifest]):
    """Evaluation rows joined with each role's predictions, streamed in snapshot order."""
    spec = ctx.spec
    cols = score_columns(spec)
    preds = {}
    for role, manifest in roles.items():
        rel = predictions_path(spec, snap, manifest)
        if not ctx.lake.exists(rel):
            raise EvaluationError(f"model {manifest.ref} has not been scored on snapshot {snap.snapshot_id}")
        preds[role] = ctx.lake.parquet_file(rel).read()
    base_cols = list(dict.fromkeys([spec.columns.id, spec.columns.label] + spec.slice_columns()))
    offset = 0
    for batch in eval_rows(ctx.lake, snap, spec, base_cols):
        n = batch.num_rows
        frame = batch.to_pandas()
        ids = batch.column(spec.columns.id)
        for role, table in preds.items():
            part = table.slice(offset, n)
            if part.num_rows != n or not part.column(spec.columns.id).combine_chunks().equals(ids):
                raise EvaluationError(f"predictions of {roles[role].ref} are out of step with snapshot "
                                      f"{snap.snapshot_id} at row {offset}; re-score the model")
            for c in cols:
                frame[f"{role}__{c}"] = part.column(c).to_numpy()
        offset += n
        yield frame


def _role_columns(spec: EvalSpec, role: str):
    cols = [f"{role}__{c}" for c in score_columns(spec)]
    return cols if spec.task_type == "multiclass_classification" else cols[0]


def compute_metrics(ctx: TaskContext, snap: Snapshot, version: str):
    """Metrics with intervals and paired deltas, and the gates applied to them.

    Gates are decided here, next to the bootstrap replicates they need (replicates are large and are not
    persisted); the release_gates step turns the persisted gate outcomes into the verdict and result JSON.
    """
    from .engine import GateDef, SliceConfig, apply_gates, evaluate

    spec = ctx.spec
    candidate, baseline = resolve_pair(ctx, version)
    roles = {"candidate": candidate} | ({"baseline": baseline} if baseline else {})
    s = spec.slices
    result = evaluate(
        _engine_batches(ctx, snap, roles), task_type=spec.task_type, label=spec.columns.label,
        predictions={role: _role_columns(spec, role) for role in roles},
        slices=SliceConfig(columns=list(s.columns), crosses=[list(c) for c in s.crosses],
                           bins={k: list(v) for k, v in s.bins.items()}, min_size=s.min_size,
                           max_values=s.max_values),
        metrics=spec.metric_names(), threshold=spec.model.threshold, classes=spec.model.classes,
        top_k=spec.model.top_k, ece_bins=spec.evaluation.ece_bins, n_boot=spec.evaluation.bootstrap_replicates,
        seed=spec.evaluation.seed, confidence=spec.evaluation.confidence,
        baseline="baseline" if baseline else None, candidate="candidate")
    # Monitoring the champion alone: non-inferiority has nothing to compare with, so only absolute gates apply.
    gates = [GateDef(metric=g.metric, kind=g.kind, min=g.min, max=g.max, margin=g.margin,
                     slices=g.slices if isinstance(g.slices, str) else list(g.slices), name=g.name)
             for g in spec.gates if baseline is not None or g.kind == "absolute"]
    report = apply_gates(result, gates, multiplicity=spec.evaluation.multiplicity)
    folder = evaluation_dir(ctx, version, snap)
    ctx.lake.write_json(f"{folder}/metrics.json", result.to_dict())
    ctx.lake.write_json(f"{folder}/gates.json", report.to_dict())
    return result


def build_result(ctx: TaskContext, snap: Snapshot, version: str) -> dict:
    """The machine-readable result (verdict, gates, metrics, hashes) from the persisted step outputs; no writes."""
    spec = ctx.spec
    candidate, baseline = resolve_pair(ctx, version)
    folder = evaluation_dir(ctx, version, snap)
    metrics_dict = ctx.lake.read_json(f"{folder}/metrics.json")
    gates_dict = ctx.lake.read_json(f"{folder}/gates.json")
    quality = ctx.lake.read_json(quality_paths(ctx, snap)[0])
    result = {
        "schema_version": 1,
        "task": spec.task,
        "task_type": spec.task_type,
        "mode": "release" if baseline is not None else "monitoring",
        "verdict": gates_dict["verdict"],
        "candidate": _model_entry(candidate),
        "baseline": _model_entry(baseline) if baseline else None,
        "gates": gates_dict["gates"],
        "gate_summary": {k: v for k, v in gates_dict.items() if k != "gates"},
        "metrics": metrics_dict,
        "dataset": {"snapshot_id": snap.snapshot_id, "content_hash": snap.manifest["content_hash"],
                    "data_sha256": snap.manifest.get("data_sha256"), "rows": snap.manifest["rows"],
                    "time_range": snap.manifest.get("time_range"),
                    "evaluation_window": [_iso(spec.data.evaluation_start), _iso(spec.data.evaluation_end)]},
        "data_quality": {"success": quality.get("success"), "statistics": quality.get("statistics")},
        "reproducibility": {"spec_sha256": spec.spec_hash(), "seed": spec.evaluation.seed,
                            "bootstrap_replicates": spec.evaluation.bootstrap_replicates,
                            "packages": package_versions()},
        "paths": {"folder": ctx.lake.uri(folder), "result": ctx.lake.uri(f"{folder}/result.json"),
                  "report_html": ctx.lake.uri(f"{folder}/report.html")},
    }
    return result


def decide(ctx: TaskContext, snap: Snapshot, version: str) -> dict:
    """Write the result JSON and one line of metric history. Returns the result dict."""
    result = build_result(ctx, snap, version)
    folder = evaluation_dir(ctx, version, snap)
    ctx.lake.write_text(f"{folder}/spec.yaml", spec_text_from(ctx.spec))  # what asked for this result
    ctx.lake.write_json(f"{folder}/result.json", result)
    metrics_dict = result["metrics"]
    ctx.lake.write_json(f"history/{ctx.task}/{ctx.model_name}/{version}-{snap.snapshot_id}.json", {
        "task": ctx.task, "model": ctx.model_name, "version": version, "snapshot_id": snap.snapshot_id,
        "mode": result["mode"], "verdict": result["verdict"],
        "time_range": snap.manifest.get("time_range"),
        "overall": _overall(metrics_dict),
    })
    return result


def _iso(d) -> str | None:
    return d.isoformat() if d else None


def _model_entry(m: ModelManifest) -> dict:
    return {"ref": m.ref, "name": m.name, "version": m.version, "flavor": m.flavor, "sha256": m.sha256}


def _overall(metrics_dict: dict) -> dict:
    for s in metrics_dict.get("slices", []):
        if s["slice"] == "overall":
            return {role: {k: v.get("value") for k, v in vals.items()} for role, vals in s["models"].items()}
    return {}


def load_result(ctx: TaskContext, snap: Snapshot, version: str) -> dict:
    return ctx.lake.read_json(f"{evaluation_dir(ctx, version, snap)}/result.json")


def history(ctx: TaskContext) -> list[dict]:
    return [ctx.lake.read_json(p) for p in ctx.lake.ls(f"history/{ctx.task}/{ctx.model_name}")]


# -- report and promotion --------------------------------------------------------------------------------------------
def write_report(ctx: TaskContext, snap: Snapshot, version: str) -> dict:
    from .report import render_html, render_markdown

    folder = evaluation_dir(ctx, version, snap)
    result = build_result(ctx, snap, version)
    quality = ctx.lake.read_json(quality_paths(ctx, snap)[0])
    drift_rel = f"drift/{ctx.task}/{snap.snapshot_id}/drift.json"
    drift_summary = ctx.lake.read_json(drift_rel) if ctx.lake.exists(drift_rel) else None
    md = render_markdown(result, quality, drift_summary, spec=ctx.spec)
    html = render_html(result, quality, drift_summary, spec=ctx.spec,
                       drift_html_uri=ctx.lake.uri(f"drift/{ctx.task}/{snap.snapshot_id}/drift.html"))
    ctx.lake.write_text(f"{folder}/report.md", md)
    ctx.lake.write_text(f"{folder}/report.html", html)
    ctx.lake.write_json(f"evaluations/{ctx.task}/{ctx.model_name}/{version}/latest.json",
                        {"snapshot_id": snap.snapshot_id, "verdict": result["verdict"]})
    return {"markdown": md, "html_uri": ctx.lake.uri(f"{folder}/report.html"), "verdict": result["verdict"]}


def promote(ctx: TaskContext, snap: Snapshot, version: str) -> dict | None:
    """Make a PASSing candidate the champion (opt-in). Never on FAIL or INCONCLUSIVE."""
    result = load_result(ctx, snap, version)
    if result["mode"] != "release":
        return None
    if result["verdict"] != "PASS":
        raise EvaluationError(f"{ctx.model_name}@{version} is {result['verdict']}; only a PASS can be promoted")
    evidence = {"result": result["paths"]["result"], "snapshot_id": snap.snapshot_id,
                "spec_sha256": result["reproducibility"]["spec_sha256"],
                "baseline": result["baseline"]["ref"] if result["baseline"] else None,
                "gates": [{k: g.get(k) for k in ("gate", "metric", "slice", "outcome", "rule")} for g in result["gates"]]}
    return ctx.registry.set_champion(ctx.model_name, version, evidence=evidence,
                                     reason=f"passed {len(result['gates'])} gates on snapshot {snap.snapshot_id}")
