"""The evaluation steps as plain functions: what each Dagster asset calls, usable from a notebook or CI as well.

Each step reads its inputs from the lake and writes its outputs there (atomically), so steps can run in different
processes and runs. Outputs are keyed by what determines them (snapshot id, model version), never by run or time,
which makes re-runs idempotent and results byte-identical.

    quality/<task>/<snapshot>/result.json, report.html
    drift/<task>/<snapshot>/drift.json, drift.html
    predictions/<task>/<snapshot>/<model>/<version>.parquet
    evaluations/<task>/<model>/<version>/<snapshot>/vs-<baseline|none>-<evidence id>/
        metrics.json, gates.json, report.md, report.html, spec.yaml, then result.json LAST (marks the set complete)
    history/<task>/<model>/<version>-<snapshot>.json

An evaluation's inputs (candidate, baseline version and sha256, snapshot) are an ``EvalInputs`` resolved once before
it starts and passed to every step; no step looks up the champion or a "latest" pointer by itself.
"""

import contextlib
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field

from .lake import Lake, LakeError
from .packages import package_versions
from .registry import ModelManifest, Registry
from .scoring import score_columns, score_model
from .refresh import refresh_snapshot
from .robustness import with_robustness
from .snapshot import DataError, Snapshot, latest_pointer, load_snapshot
from .spec import EvalSpec, spec_text_from

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


# -- dataset and data quality ----------------------------------------------------------------------------------------
def refresh(ctx: TaskContext) -> Snapshot:
    return refresh_snapshot(ctx.lake, ctx.spec)


def quality_paths(ctx: TaskContext, snap: Snapshot | str) -> tuple[str, str]:
    """The data-quality result (JSON) and report (HTML) of a snapshot (or a snapshot id)."""
    base = f"quality/{ctx.task}/{snap if isinstance(snap, str) else snap.snapshot_id}"
    return f"{base}/result.json", f"{base}/report.html"


def validated_pointer(ctx: TaskContext) -> str:
    """The pointer to the newest snapshot that passed data quality."""
    return f"snapshots/{ctx.task}/validated.json"


def latest_snapshot_id(ctx: TaskContext) -> str | None:
    """The newest snapshot (validated or not); None when there is none yet or its pointer is unreadable."""
    try:
        return ctx.lake.read_json(latest_pointer(ctx.task))["snapshot_id"]
    except (FileNotFoundError, LakeError, KeyError, TypeError):
        return None


def validate(ctx: TaskContext, snap: Snapshot, *, batch_size: int = 250_000):
    """Great Expectations validation of the snapshot, streamed in batches of ``batch_size`` rows and merged exactly
    into the whole snapshot's result (:mod:`eval_pipeline.quality_merge`: bounded memory); the result is persisted
    whether it passes or not. A result already stored for this snapshot by the same expectations (its
    ``provenance.expectations_sha256`` and merge layout) is returned as it is, without importing or running GX,
    unless freshness is judged against the clock."""
    from .quality_merge import empty_frame, frames_from_arrow, reusable
    from .quality_result import QualityResult, render_html
    from .snapshot import iter_rows

    spec = ctx.spec
    json_rel, html_rel = quality_paths(ctx, snap)
    try:
        stored = ctx.lake.read_json(json_rel) if ctx.lake.exists(json_rel) else None
    except (LakeError, ValueError):  # unreadable: validate again and replace it
        stored = None
    if stored is not None and reusable(stored, spec):
        result = QualityResult.from_dict(stored)
        if not ctx.lake.exists(html_rel):
            ctx.lake.write_text(html_rel, render_html(result))
    else:
        from .quality_merge import validate_batches

        schema = dict(snap.manifest.get("schema") or {})
        columns = list(schema) or spec.all_columns()
        frames = frames_from_arrow(iter_rows(ctx.lake, snap, columns, batch_size=batch_size))
        result = validate_batches(frames, spec, source=f"{spec.task} snapshot {snap.snapshot_id}",
                                  empty=empty_frame(schema), expected_rows=snap.manifest.get("rows"))
        ctx.lake.write_json(json_rel, result.to_dict())
        ctx.lake.write_text(html_rel, render_html(result))
    if result.success:
        ctx.lake.write_json(validated_pointer(ctx), {"snapshot_id": snap.snapshot_id})
    if spec.suites:  # each suite's snapshot with its own expectations; a failing suite never blocks the task
        from .suites import validate_suites

        validate_suites(ctx, snap)
    return result


def snapshot_for_evaluation(ctx: TaskContext) -> tuple[Snapshot, str]:
    """The newest snapshot that passed data quality, and a note when that is not the newest snapshot.

    A bad delivery of data must not stop a model from being evaluated on the last good data, and must never be
    evaluated itself."""
    latest = load_snapshot(ctx.lake, ctx.task)
    pointer = validated_pointer(ctx)
    if not ctx.lake.exists(pointer):
        require_quality_passed(ctx, latest)  # raises with the reason (not validated yet / failed)
        return latest, ""
    validated = load_snapshot(ctx.lake, ctx.task, ctx.lake.read_json(pointer)["snapshot_id"])
    if validated.snapshot_id == latest.snapshot_id:
        return latest, ""
    return validated, (f"the newest snapshot {latest.snapshot_id} is not validated (or failed data quality); "
                       f"evaluating on the last validated snapshot {validated.snapshot_id}")


def quality_status(ctx: TaskContext, snapshot_id: str) -> bool | None:
    """True/False: whether the snapshot passed data quality; None: not validated yet (or its result is unreadable)."""
    try:
        return bool(ctx.lake.read_json(quality_paths(ctx, snapshot_id)[0]).get("success"))
    except (FileNotFoundError, LakeError, AttributeError):
        return None


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
def drift_paths(ctx: TaskContext, snap: Snapshot) -> tuple[str, str]:
    """The drift summary (JSON) and Evidently's report (HTML) of a snapshot."""
    base = f"drift/{ctx.task}/{snap.snapshot_id}"
    return f"{base}/drift.json", f"{base}/drift.html"


def drift(ctx: TaskContext, snap: Snapshot):
    """The snapshot's drift (features, label, slices), streamed in bounded memory (:mod:`eval_pipeline.drift_stream`):
    ``drift.json`` and ``drift.html``. Returns the stored result unchanged when ``drift.json`` of this snapshot was
    made by the same drift config (its ``streaming.config_hash``)."""
    from .drift_stream import load_current, stream_drift

    json_rel, html_rel = drift_paths(ctx, snap)
    stored = load_current(ctx.lake, json_rel, html_rel, ctx.spec)
    if stored is not None:
        return stored
    result = stream_drift(ctx.lake, snap, ctx.spec)
    ctx.lake.write_text(html_rel, result.html)
    ctx.lake.write_json(json_rel, result.to_dict())  # last: a complete pair, whose JSON says which config made it
    return result


# -- run inputs ------------------------------------------------------------------------------------------------------
# What one evaluation evaluates is fixed before it starts and carried by the run itself (Dagster: the partition key
# ``<version>@<snapshot_id>`` and the run config; CLI: the same), never read back from a shared pointer in the lake:
# two runs of one version on two snapshots, or one run while the champion changes, cannot see each other's inputs.
PARTITION_SEP = "@"  # never part of a version (registry names are [A-Za-z0-9_.-]) nor of a snapshot id (hex)


class NoBaselineError(EvaluationError):
    """Nothing to decide on: no champion to compare with and no absolute gate."""


@dataclass(frozen=True)
class EvalInputs:
    """The candidate, the baseline (recorded once, version and sha256) and the snapshot of one evaluation."""

    version: str
    candidate_sha256: str
    snapshot_id: str
    baseline: str | None = None          # None: no baseline (monitoring the champion, or no champion yet)
    baseline_sha256: str | None = None
    monitoring: bool = False             # the candidate was the champion when the inputs were resolved

    @property
    def partition_key(self) -> str:
        return f"{self.version}{PARTITION_SEP}{self.snapshot_id}"

    def as_config(self) -> dict:
        """The run-config form (every field a string: Dagster config has no Optional-vs-missing distinction)."""
        return {"candidate_sha256": self.candidate_sha256, "baseline": self.baseline or "",
                "baseline_sha256": self.baseline_sha256 or "", "monitoring": self.monitoring}

    @classmethod
    def from_config(cls, partition_key: str, config: dict) -> "EvalInputs":
        version, snapshot_id = split_partition_key(partition_key)
        baseline = config.get("baseline") or None
        sha = config.get("baseline_sha256") or None
        if (baseline is None) != (sha is None):
            raise EvaluationError(f"run inputs of {partition_key}: baseline {baseline!r} and baseline_sha256 "
                                  f"{sha!r} must be given together (both empty: no baseline)")
        if not config.get("candidate_sha256"):
            raise EvaluationError(f"run inputs of {partition_key}: candidate_sha256 is empty")
        return cls(version, config["candidate_sha256"], snapshot_id, baseline, sha, bool(config.get("monitoring")))


def split_partition_key(key: str) -> tuple[str, str]:
    """'<version>@<snapshot_id>' -> (version, snapshot_id), refusing anything else with the expected form."""
    version, sep, snapshot_id = (key or "").rpartition(PARTITION_SEP)
    if not sep or not version or not snapshot_id:
        raise EvaluationError(f"evaluation partition {key!r} must look like <version>@<snapshot_id>")
    return version, snapshot_id


def has_absolute_gates(spec: EvalSpec) -> bool:
    fairness = spec.fairness.gates if spec.fairness else []  # max / min fairness gates need no baseline either
    return any(g.kind == "absolute" for g in spec.gates) or any(not g.paired for g in fairness)


def no_baseline_message(ctx: TaskContext, version: str) -> str:
    return (f"model '{ctx.model_name}' has no champion and spec '{ctx.task}' has no absolute gates, so there is "
            f"nothing to decide {ctx.model_name}@{version} on: name the first champion with `eval-pipeline promote "
            f"--initial --spec <spec> --lake <lake> --version <V>` (then candidates are compared with it), or add "
            f"an absolute gate to the spec")


def resolve_inputs(ctx: TaskContext, version: str, snapshot_id: str | None = None) -> EvalInputs:
    """Resolve an evaluation's inputs ONCE: the candidate's sha256, the champion now (version and sha256) as the
    baseline, and the snapshot (given, or the newest validated one). A snapshot that is not validated is refused."""
    if snapshot_id is None:
        snap, _ = snapshot_for_evaluation(ctx)
    else:
        snap = load_snapshot(ctx.lake, ctx.task, snapshot_id)
    require_quality_passed(ctx, snap)
    candidate = ctx.registry.manifest(ctx.model_name, version)
    champion = ctx.registry.champion(ctx.model_name)
    if champion is None and not has_absolute_gates(ctx.spec):
        raise NoBaselineError(no_baseline_message(ctx, version))
    if champion is None or champion == version:
        return EvalInputs(version, candidate.sha256, snap.snapshot_id, monitoring=champion == version)
    baseline = ctx.registry.manifest(ctx.model_name, champion)
    return EvalInputs(version, candidate.sha256, snap.snapshot_id, baseline.version, baseline.sha256)


def _pinned_manifest(ctx: TaskContext, version: str, sha256: str, role: str) -> ModelManifest:
    manifest = ctx.registry.manifest(ctx.model_name, version)
    if manifest.sha256 != sha256:
        raise EvaluationError(f"{role} {manifest.ref}: its manifest now pins sha256 {manifest.sha256[:16]}…, but "
                              f"this evaluation was launched for sha256 {sha256[:16]}…; the version changed after "
                              f"the run was requested, so it is not evaluated: request a new evaluation")
    return manifest


def run_models(ctx: TaskContext, inputs: EvalInputs) -> tuple[ModelManifest, ModelManifest | None]:
    """The candidate and the recorded baseline (not a fresh champion lookup), each checked against its sha256."""
    candidate = _pinned_manifest(ctx, inputs.version, inputs.candidate_sha256, "candidate")
    baseline = (_pinned_manifest(ctx, inputs.baseline, inputs.baseline_sha256, "baseline")
                if inputs.baseline else None)
    return candidate, baseline


def run_snapshot(ctx: TaskContext, inputs: EvalInputs) -> Snapshot:
    """The run's own snapshot; refused (never replaced by another) when it is not validated."""
    snap = load_snapshot(ctx.lake, ctx.task, inputs.snapshot_id)
    try:
        require_quality_passed(ctx, snap)
    except EvaluationError as exc:
        raise EvaluationError(f"this run evaluates snapshot {inputs.snapshot_id} (partition "
                              f"{inputs.partition_key}), which cannot be used: {exc}") from None
    return snap


def gate_defs(gates, paired: bool) -> list:
    """The engine's GateDefs for a spec's gate list (the task's, an evaluation suite's). Without a baseline
    (``paired`` false), non-inferiority has nothing to compare with: only absolute gates apply."""
    from .engine import GateDef

    return [GateDef(metric=g.metric, kind=g.kind, min=g.min, max=g.max, margin=g.margin,
                    slices=g.slices if isinstance(g.slices, str) else list(g.slices), name=g.name)
            for g in gates if paired or g.kind == "absolute"]


def engine_arguments(spec: EvalSpec, roles, paired: bool) -> dict:
    """The engine's ``evaluate`` arguments for a spec (the task's, or an evaluation suite's derived spec): the
    ``roles``' prediction columns, slices, metrics, model options and the evaluation section."""
    from .engine import SliceConfig

    ev = spec.evaluation
    return dict(
        task_type=spec.task_type, label=spec.columns.label,
        predictions={role: _role_columns(spec, role) for role in roles},
        slices=SliceConfig(**spec.slices.engine_kwargs(SliceConfig)),  # incl. slices.min_positives / min_negatives
        metrics=spec.metric_names(), threshold=spec.model.threshold, classes=spec.model.classes,
        top_k=spec.model.top_k, ece_bins=ev.ece_bins, n_boot=ev.bootstrap_replicates, seed=ev.seed,
        confidence=ev.confidence, baseline="baseline" if paired else None, candidate="candidate",
        **spec.engine_task_options())  # ranking: the query column, relevance_min, no_relevant


def _gate_defs(ctx: TaskContext, inputs: EvalInputs):
    gates = gate_defs(ctx.spec.gates, inputs.baseline is not None)
    if not gates and inputs.baseline is None and not inputs.monitoring and not has_absolute_gates(ctx.spec):
        raise NoBaselineError(no_baseline_message(ctx, inputs.version))
    return gates


# -- models ----------------------------------------------------------------------------------------------------------
def score(ctx: TaskContext, snap: Snapshot, inputs: EvalInputs) -> dict:
    from .dask_backend import backend_from_settings
    from .settings import load_settings

    require_quality_passed(ctx, snap)
    candidate, baseline = run_models(ctx, inputs)
    # EVAL_DASK_ADDRESS: a model flavor is scored one snapshot part per Dask task (the same bytes as in process); a
    # local cluster starts only if a model actually needs scoring (the client is made on first use).
    backend = backend_from_settings(load_settings(warn=False))
    with backend if backend is not None else contextlib.nullcontext():
        out = {"candidate": score_model(ctx.lake, ctx.registry, ctx.spec, snap, candidate, ctx.trusted_types,
                                        backend=backend)}
        if baseline is not None:
            out["baseline"] = score_model(ctx.lake, ctx.registry, ctx.spec, snap, baseline, ctx.trusted_types,
                                          backend=backend)
    return out


def prediction_drift(ctx: TaskContext, snap: Snapshot, inputs: EvalInputs, roles: dict | None = None) -> dict | None:
    """The run's models' score distributions, drift reference vs current window of the snapshot (they score the
    drift windows themselves): ``prediction_drift.json`` in the evidence folder, returned; None (logged, no file)
    when drift is disabled or a window is empty. See :mod:`eval_pipeline.prediction_drift`."""
    from .prediction_drift import write_prediction_drift

    if roles is None:
        candidate, baseline = run_models(ctx, inputs)
        roles = {"candidate": candidate} | ({"baseline": baseline} if baseline else {})
    return write_prediction_drift(ctx.lake, ctx.registry, ctx.spec, snap, evaluation_dir(ctx, inputs), roles,
                                  ctx.trusted_types)


# -- evidence: one content-keyed set per (candidate x baseline x snapshot x spec) ------------------------------------
EVIDENCE_FILES = ("metrics.json", "gates.json", "report.md", "report.html")  # result.json is written last


def evidence_id(ctx: TaskContext, inputs: EvalInputs) -> str:
    """Content key of an evaluation: the candidate's and baseline's sha256, the snapshot (content-addressed) and the
    spec's hash. Same key, same bytes (the evaluation is deterministic); a different spec or baseline, another set."""
    key = json.dumps({"candidate": inputs.candidate_sha256, "baseline": inputs.baseline_sha256,
                      "snapshot": inputs.snapshot_id, "spec": ctx.spec.spec_hash(),
                      "monitoring": inputs.monitoring}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def evaluation_dir(ctx: TaskContext, inputs: EvalInputs) -> str:
    """evaluations/<task>/<model>/<version>/<snapshot>/<vs-BASELINE | monitoring | vs-none>-<evidence id>, relative
    to the lake root: the folder name says what it was compared with, the id makes it content-keyed."""
    against = "monitoring" if inputs.monitoring else f"vs-{inputs.baseline or 'none'}"
    return (f"evaluations/{ctx.task}/{ctx.model_name}/{inputs.version}/{inputs.snapshot_id}/"
            f"{against}-{evidence_id(ctx, inputs)}")


def evidence_complete(ctx: TaskContext, inputs: EvalInputs) -> bool:
    """result.json is written last, after every other member of the set: its presence marks the set complete."""
    return ctx.lake.exists(f"{evaluation_dir(ctx, inputs)}/result.json")


def evidence_paths(folder: str) -> dict:
    return {"folder": folder, "result": f"{folder}/result.json", "metrics": f"{folder}/metrics.json",
            "gates": f"{folder}/gates.json", "report_md": f"{folder}/report.md",
            "report_html": f"{folder}/report.html"}


# -- metrics and gates -----------------------------------------------------------------------------------------------
def _engine_batches(ctx: TaskContext, snap: Snapshot, roles: dict[str, ModelManifest]):
    """Evaluation rows joined with each role's predictions, streamed in snapshot order: every predictions file is
    read in lockstep with the snapshot's batches (bounded memory). The per-shard reader is
    ``evaluation_shards.shard_reader`` (what ``compute_metrics`` hands to a Dask cluster)."""
    from .evaluation_shards import ShardError, shard_reader

    try:
        yield from shard_reader(ctx.lake, ctx.spec, snap, roles)()
    except ShardError as exc:
        raise EvaluationError(str(exc)) from None


def _role_columns(spec: EvalSpec, role: str):
    cols = [f"{role}__{c}" for c in score_columns(spec)]
    return cols if spec.task_type == "multiclass_classification" else cols[0]


def compute_metrics(ctx: TaskContext, snap: Snapshot, inputs: EvalInputs) -> dict:
    """Metrics with intervals and paired deltas, and the gates applied to them; returns the metrics dict.

    Gates are decided here, next to the bootstrap replicates they need (replicates are large and are not
    persisted). A complete evidence set for these inputs already exists: nothing is recomputed or rewritten.
    """
    from .dask_backend import backend_from_settings
    from .engine import apply_gates, evaluate
    from .engine.shards import evaluate_shards
    from .evaluation_shards import ShardError, count_rows, shard_reader, snapshot_shards, spill_arguments
    from .settings import load_settings

    folder = evaluation_dir(ctx, inputs)
    if evidence_complete(ctx, inputs):
        return ctx.lake.read_json(f"{folder}/metrics.json")
    spec = ctx.spec
    candidate, baseline = run_models(ctx, inputs)
    gates = _gate_defs(ctx, inputs)
    roles = {"candidate": candidate} | ({"baseline": baseline} if baseline else {})
    args = engine_arguments(spec, roles, baseline is not None)
    # EVAL_DASK_ADDRESS: one Dask task per snapshot shard, merged and bootstrapped here (byte-identical result)
    settings = load_settings(warn=False)
    backend = backend_from_settings(settings)
    try:
        reader = shard_reader(ctx.lake, spec, snap, roles)
        rows = count_rows(ctx.lake, reader.predictions["candidate"][0])
        args |= spill_arguments(settings, spec.task_type, rows, remote=settings.dask_address not in (None, "local"))
        if backend is None:
            result = evaluate(reader(), **args)
        else:
            with backend:
                result = evaluate_shards(snapshot_shards(ctx.lake, snap, spec), reader, backend, **args)
        # fairness: per-group counts in their own streamed pass, gated with the metric gates (fairness_step.py)
        from .fairness_step import add_fairness

        gated, gates, fairness = add_fairness(spec, result, gates, reader, args["predictions"], baseline is not None)
    except ShardError as exc:
        raise EvaluationError(str(exc)) from None
    report = apply_gates(gated, gates, multiplicity=spec.evaluation.multiplicity)
    metrics = result.to_dict() | ({"fairness": fairness} if fairness else {})
    robust = _robustness(ctx, snap, candidate)
    if robust is not None:
        metrics["robustness"] = robust
    from .suites import evaluate_suites, with_suites

    suites = evaluate_suites(ctx, snap, candidate, baseline)  # one block and one gate family per evaluation suite
    if suites is not None:
        metrics["suites"] = suites
    # Members of the set before result.json; a crash here leaves an incomplete set that the next run redoes.
    ctx.lake.write_json(f"{folder}/metrics.json", metrics)
    ctx.lake.write_json(f"{folder}/gates.json", with_suites(with_robustness(report.to_dict(), robust), suites))
    return metrics


def _robustness(ctx: TaskContext, snap: Snapshot, candidate: ModelManifest) -> dict | None:
    """The candidate re-scored on the spec's perturbations (eval_pipeline.robustness): its own gate family."""
    from .robustness import RobustnessError, evaluate_robustness

    try:
        return evaluate_robustness(ctx.lake, ctx.registry, ctx.spec, snap, candidate, ctx.trusted_types)
    except RobustnessError as exc:
        raise EvaluationError(str(exc)) from None


def build_result(ctx: TaskContext, snap: Snapshot, inputs: EvalInputs) -> dict:
    """The machine-readable result (verdict, gates, metrics, hashes) from the persisted step outputs; no writes.

    Paths are relative to the lake root, so identical evaluations in two lakes give byte-identical JSON."""
    spec = ctx.spec
    candidate, baseline = run_models(ctx, inputs)
    folder = evaluation_dir(ctx, inputs)
    metrics_dict = ctx.lake.read_json(f"{folder}/metrics.json")
    gates_dict = ctx.lake.read_json(f"{folder}/gates.json")
    quality = ctx.lake.read_json(quality_paths(ctx, snap)[0])
    return {
        "schema_version": 1,
        "task": spec.task,
        "task_type": spec.task_type,
        "mode": "monitoring" if inputs.monitoring else "release",
        "verdict": gates_dict["verdict"],
        "candidate": _model_entry(candidate),
        "baseline": _model_entry(baseline) if baseline else None,
        "evidence_id": evidence_id(ctx, inputs),
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
        "paths": evidence_paths(folder),
    }


def decide(ctx: TaskContext, snap: Snapshot, inputs: EvalInputs) -> dict:
    """Commit the evidence set: result.json, written LAST (it records the sha256 of every other member), then one
    line of metric history. A complete set is returned as it is (re-running the same thing writes nothing)."""
    folder = evaluation_dir(ctx, inputs)
    if evidence_complete(ctx, inputs):
        return ctx.lake.read_json(f"{folder}/result.json")
    result = build_result(ctx, snap, inputs)
    missing = [n for n in EVIDENCE_FILES if not ctx.lake.exists(f"{folder}/{n}")]
    if missing:
        raise EvaluationError(f"evidence set {folder} is incomplete ({', '.join(missing)} missing); the evaluation "
                              f"and report steps must run before the result is written")
    ctx.lake.write_text(f"{folder}/spec.yaml", spec_text_from(ctx.spec))  # what asked for this result
    result["evidence_files"] = {n: hashlib.sha256(ctx.lake.read_bytes(f"{folder}/{n}")).hexdigest()
                                for n in EVIDENCE_FILES + ("spec.yaml",)}
    ctx.lake.write_json(f"{folder}/result.json", result)
    ctx.lake.write_json(f"history/{ctx.task}/{ctx.model_name}/{inputs.version}-{snap.snapshot_id}.json", {
        "task": ctx.task, "model": ctx.model_name, "version": inputs.version, "snapshot_id": snap.snapshot_id,
        "baseline": result["baseline"]["ref"] if result["baseline"] else None, "evidence_id": result["evidence_id"],
        "mode": result["mode"], "verdict": result["verdict"],
        "time_range": snap.manifest.get("time_range"),
        "overall": _overall(result["metrics"]),
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


def load_result(ctx: TaskContext, inputs: EvalInputs) -> dict:
    rel = f"{evaluation_dir(ctx, inputs)}/result.json"
    if not ctx.lake.exists(rel):
        raise EvaluationError(f"{ctx.model_name}@{inputs.version} has no complete evaluation on snapshot "
                              f"{inputs.snapshot_id} against {_baseline_words(ctx, inputs.baseline)} with this spec "
                              f"(no {ctx.lake.uri(rel)})")
    return ctx.lake.read_json(rel)


def _baseline_words(ctx: TaskContext, baseline: str | None) -> str:
    return f"{ctx.model_name}@{baseline}" if baseline else "no baseline"


def results_of(ctx: TaskContext, version: str) -> list[dict]:
    """Every complete evaluation of a version in the lake (any snapshot, baseline or spec), oldest snapshot first."""
    out = []
    for f in ctx.lake.find(f"evaluations/{ctx.task}/{ctx.model_name}/{version}"):
        if f["rel"].endswith("/result.json"):
            try:
                out.append(ctx.lake.read_json(f["rel"]))
            except (FileNotFoundError, LakeError):
                continue
    return sorted(out, key=lambda r: ((r.get("dataset") or {}).get("time_range") or [""])[-1] or "")


# -- report and promotion --------------------------------------------------------------------------------------------
def write_report(ctx: TaskContext, snap: Snapshot, inputs: EvalInputs) -> dict:
    from .report import render_markdown

    folder = evaluation_dir(ctx, inputs)
    paths = evidence_paths(folder)
    # Returns markdown, html_uri, verdict, report_url (file:// or presigned) and plots_markdown (the key plots as an
    # embedded PNG + the link, for Dagster metadata): eval_pipeline.report_html.write_report_files.
    from .report_html import reused_report, write_report_files

    if evidence_complete(ctx, inputs):
        return reused_report(ctx, paths, ctx.lake.read_json(paths["result"])["verdict"])
    result = build_result(ctx, snap, inputs)
    quality = ctx.lake.read_json(quality_paths(ctx, snap)[0])
    drift_rel = f"drift/{ctx.task}/{snap.snapshot_id}/drift.json"
    drift_summary = ctx.lake.read_json(drift_rel) if ctx.lake.exists(drift_rel) else None
    md = render_markdown(result, quality, drift_summary)
    # The report names lake files relative to the lake root, like the result JSON (same bytes in any lake); the
    # HTML (plots from the evaluation rows, streamed) is eval_pipeline.report_html's.
    candidate, baseline = run_models(ctx, inputs)  # the run's pinned models: the report's curves score them
    roles = {"candidate": candidate} | ({"baseline": baseline} if baseline else {})
    if baseline is not None and not inputs.monitoring:  # paired only: error_analysis.json + regressed_rows.parquet
        from .error_analysis import write_error_analysis

        write_error_analysis(ctx.lake, ctx.spec, snap, folder, _engine_batches(ctx, snap, roles),
                             baseline_ref=baseline.ref, candidate_ref=candidate.ref)
    prediction_drift(ctx, snap, inputs, roles)  # prediction_drift.json, before the report that shows it
    return write_report_files(ctx, snap, inputs, result, quality, drift_summary, md, paths, roles)


class PromotionRefused(EvaluationError):
    """A promotion that must not happen; the message says why in the operator's terms."""


PROMOTION_LOCK_SECONDS = 120  # a lock older than this was left by a crashed promoter


@contextlib.contextmanager
def promotion_lock(ctx: TaskContext, wait_seconds: float = 15.0):
    """Serialise promotions of one model (the compare and the swap happen under it): an exclusively created lock
    object in the registry (O_EXCL locally, a conditional PUT on S3), removed afterwards; a stale one (crashed
    holder, older than PROMOTION_LOCK_SECONDS) is broken."""
    rel = ctx.registry.promotion_lock_path(ctx.model_name)
    deadline = time.monotonic() + wait_seconds
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "at": time.time()}).encode()
    while not ctx.lake.create_exclusive(rel, body):
        try:
            try:
                held = ctx.lake.read_json(rel)
                since = float(held.get("at", 0))
            except (LakeError, ValueError, AttributeError, TypeError):
                # A holder that crashed between creating and filling it: judge its age by the object's mtime.
                held, since = "a holder whose lock is unreadable", ctx.lake.info(rel).get("mtime") or 0.0
        except FileNotFoundError:
            continue  # released meanwhile: try again at once
        if time.time() - since > PROMOTION_LOCK_SECONDS:
            ctx.lake.delete(rel)
            continue
        if time.monotonic() > deadline:
            raise PromotionRefused(f"another promotion of model '{ctx.model_name}' is in progress (lock "
                                   f"{ctx.lake.uri(rel)} held by {held}); try again")
        time.sleep(0.1)
    try:
        yield
    finally:
        ctx.lake.delete(rel)


def promote(ctx: TaskContext, result: dict) -> dict:
    """Compare-and-swap: make the evaluated candidate champion only if the champion NOW is the baseline it was
    evaluated against (version and sha256) and its verdict is PASS. Otherwise PromotionRefused says why."""
    name = ctx.model_name
    cand = result["candidate"]["ref"]
    version = result["candidate"]["version"]
    snapshot_id = result["dataset"]["snapshot_id"]
    if result["reproducibility"]["spec_sha256"] != ctx.spec.spec_hash():
        raise PromotionRefused(f"{cand}: this evaluation used another spec (sha256 "
                               f"{result['reproducibility']['spec_sha256'][:16]}…); evaluate it with this spec")
    if result["mode"] == "monitoring":
        raise PromotionRefused(f"{cand} was the champion when it was evaluated (monitoring); nothing to promote")
    baseline = result.get("baseline")
    if baseline is None:
        raise PromotionRefused(f"{cand} was evaluated without a baseline (model '{name}' had no champion); name "
                               f"the first champion with `eval-pipeline promote --initial`")
    if result["verdict"] != "PASS":
        raise PromotionRefused(f"{cand} is {result['verdict']} against {baseline['ref']} on snapshot "
                               f"{snapshot_id}; only a PASS can be promoted")
    with promotion_lock(ctx):
        champion = ctx.registry.champion(name)
        if champion == version:
            raise PromotionRefused(f"{cand} is already the champion; nothing to promote")
        if champion != baseline["version"]:
            raise PromotionRefused(
                f"{cand} was evaluated against {baseline['ref']}, but the champion is now "
                f"{f'{name}@{champion}' if champion else 'none'}: it must be re-evaluated against the current "
                f"champion before it can be promoted (the re-evaluation sensor requests that evaluation; by hand: "
                f"`eval-pipeline evaluate --candidate {cand}`)")
        current = ctx.registry.manifest(name, champion)
        if current.sha256 != baseline["sha256"]:
            raise PromotionRefused(f"{cand} was evaluated against {baseline['ref']} with sha256 "
                                   f"{baseline['sha256'][:16]}…, but that version now pins {current.sha256[:16]}…; "
                                   f"re-evaluate it")
        evidence = {"result": result["paths"]["result"], "evidence_id": result.get("evidence_id"),
                    "snapshot_id": snapshot_id, "spec_sha256": result["reproducibility"]["spec_sha256"],
                    "candidate_sha256": result["candidate"]["sha256"],
                    "baseline": baseline["ref"], "baseline_sha256": baseline["sha256"],
                    "gates": [{k: g.get(k) for k in ("gate", "metric", "slice", "outcome", "rule")}
                              for g in result["gates"]]}
        return ctx.registry.set_champion(name, version, evidence=evidence,
                                         reason=f"passed {len(result['gates'])} gates against {baseline['ref']} on "
                                                f"snapshot {snapshot_id}")


def promote_initial(ctx: TaskContext, version: str, by: str, note: str = "") -> dict:
    """Name the FIRST champion of a model by hand (audited): refused when the model already has one."""
    name = ctx.model_name
    manifest = ctx.registry.manifest(name, version)  # must be registered and valid
    with promotion_lock(ctx):
        champion = ctx.registry.champion(name)
        if champion is not None:
            raise PromotionRefused(f"model '{name}' already has a champion ({name}@{champion}); --initial only names "
                                   f"the first one. Promote a candidate that PASSed against it instead")
        failed = [r for r in results_of(ctx, version) if r.get("verdict") == "FAIL"
                  and r["reproducibility"]["spec_sha256"] == ctx.spec.spec_hash()]
        if failed:
            r = failed[-1]
            raise PromotionRefused(f"{manifest.ref} FAILed its evaluation on snapshot {r['dataset']['snapshot_id']} "
                                   f"({r['paths']['result']}); a failing version is not named champion")
        evidence = {"initial": True, "by": by, "sha256": manifest.sha256, "note": note,
                    "command": "eval-pipeline promote --initial"}
        return ctx.registry.set_champion(name, version, evidence=evidence,
                                         reason=f"first champion of '{name}', named by {by}"
                                                + (f": {note}" if note else ""))


def result_for_promotion(ctx: TaskContext, version: str, snapshot_id: str | None = None) -> dict:
    """The evaluation that can justify promoting a version now: against the current champion, with this spec (on
    the given snapshot, or the one evaluation there is, or the one on the newest validated snapshot)."""
    name = ctx.model_name
    ref = f"{name}@{version}"
    champion = ctx.registry.champion(name)
    if champion is None:
        raise PromotionRefused(f"model '{name}' has no champion yet, so {ref} has nothing to replace: name the first "
                               f"champion with `eval-pipeline promote --initial --version <V>` (audited)")
    if champion == version:
        raise PromotionRefused(f"{ref} is already the champion; nothing to promote")
    where = f" on snapshot {snapshot_id}" if snapshot_id else ""
    results = [r for r in results_of(ctx, version)
               if not snapshot_id or r["dataset"]["snapshot_id"] == snapshot_id]
    if not results:
        raise PromotionRefused(f"{ref} has never been evaluated{where} (no result under "
                               f"{ctx.lake.uri(f'evaluations/{ctx.task}/{name}/{version}')}): evaluate it first, "
                               f"`eval-pipeline evaluate --candidate {ref}`")
    same_spec = [r for r in results if r["reproducibility"]["spec_sha256"] == ctx.spec.spec_hash()]
    if not same_spec:
        raise PromotionRefused(f"{ref} was evaluated{where} only with another version of spec '{ctx.task}'; "
                               f"evaluate it with this spec first")
    current = [r for r in same_spec if (r.get("baseline") or {}).get("version") == champion]
    if not current:
        against = sorted({(r.get("baseline") or {}).get("ref") or "no baseline" for r in same_spec})
        raise PromotionRefused(f"{ref} was evaluated{where} against {', '.join(against)}, but the champion is now "
                               f"{name}@{champion}: it must be re-evaluated against the current champion first (the "
                               f"re-evaluation sensor requests that; by hand: `eval-pipeline evaluate --candidate "
                               f"{ref}`)")
    snapshots = sorted({r["dataset"]["snapshot_id"] for r in current})
    if len(snapshots) > 1:
        try:
            newest = snapshot_for_evaluation(ctx)[0].snapshot_id
        except (EvaluationError, DataError, LakeError, FileNotFoundError):
            newest = None
        current = [r for r in current if r["dataset"]["snapshot_id"] == newest]
        if not current:
            raise PromotionRefused(f"{ref} was evaluated against {name}@{champion} on several snapshots "
                                   f"({', '.join(snapshots)}); say which one with --snapshot")
    return current[-1]
