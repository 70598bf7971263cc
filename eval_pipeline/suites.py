"""Evaluation suites: extra evaluation datasets of a task (``golden/``, ``edge_cases/``, ``incidents/`` ...), each its
own folder of files, its own expectations and its own gates; the verdict is the worst of the task's and theirs.

A suite is evaluated as a *derived task* (:func:`suite_spec`): the task's spec with the suite's folder as
``data.source``, the suite's expectations and gates, task name ``<task>__<suite>``, no drift and no robustness. So
its snapshot, data-quality result and predictions are the ordinary ones, stored under the derived task's name:
adding a case is dropping a file into the folder (the next refresh makes a new suite snapshot, whose id is part
of the task's snapshot id, so the evaluation is a new partition).

Two kinds:

- ``per_example: true``: every row must be right (binary: ``(score >= threshold) == label``; multiclass: the
  highest-probability class is the label; regression: ``|prediction - label| <= tolerance``). No statistics: any
  wrong row FAILs the suite, and the result lists the failing ids (the first :data:`MAX_IDS` in snapshot order,
  with the total), for the baseline too, and which failures are new (candidate wrong, baseline right).
- otherwise a metric suite: the engine's paired evaluation and the suite's gates (the same tri-state rule, their
  own multiplicity family).
"""
from __future__ import annotations

import numpy as np

from .lake import LakeError

MAX_IDS = 100


def suite_task(task: str, name: str) -> str:
    return f"{task}__{name}"


def suite_spec(spec, suite):
    """The derived task a suite is evaluated as (see the module docstring)."""
    data = spec.data.model_copy(update={"source": suite.source, "sql": None, "evaluation_start": None,
                                        "evaluation_end": None})
    drift = spec.drift.model_copy(update={"enabled": False})
    return spec.model_copy(update={"task": suite_task(spec.task, suite.name), "data": data, "drift": drift,
                                   "expectations": suite.expectations, "gates": list(suite.gates), "suites": [],
                                   "robustness": None, "fairness": None})


def correct_rows(task_type: str, label: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5,
                 classes: list | None = None, tolerance: float | None = None) -> np.ndarray:
    """Which rows a model gets right (per-example suites)."""
    if task_type == "binary_classification":
        return (scores >= threshold) == (label.astype(np.float64) == 1.0)
    if task_type == "multiclass_classification":
        pred = np.asarray(classes, dtype=object)[np.argmax(scores, axis=1)]
        return np.asarray([str(p) == str(y) for p, y in zip(pred, label)], dtype=bool)
    if task_type == "regression":
        return np.abs(scores - label.astype(np.float64)) <= float(tolerance)
    raise ValueError(f"per-example suites do not support task_type {task_type}")


class PerExample:
    """Streamed per-example outcome of one role: wrong-row count and the first MAX_IDS wrong ids (mergeable in
    snapshot order)."""

    def __init__(self):
        self.rows, self.wrong, self.ids, self.wrong_set = 0, 0, [], None

    def add(self, ids: np.ndarray, ok: np.ndarray) -> None:
        bad = ids[~ok]
        self.rows += len(ok)
        self.wrong += int(bad.size)
        if len(self.ids) < MAX_IDS:
            self.ids += [v.item() if hasattr(v, "item") else v for v in bad[:MAX_IDS - len(self.ids)]]

    def to_dict(self) -> dict:
        return {"rows": self.rows, "wrong": self.wrong, "right": self.rows - self.wrong,
                "failing_ids": self.ids, "failing_ids_truncated": self.wrong > len(self.ids)}


def per_example(batches, spec, suite, roles: dict) -> dict:
    """``roles``: role -> score column(s) in the joined batches (label and id columns of ``spec``). Returns the
    suite's per-example block: each role's outcome, the candidate's new failures, one gate row and the verdict."""
    out = {r: PerExample() for r in roles}
    new_ids, new_count = [], 0
    for frame in batches:
        ids = frame[spec.columns.id].to_numpy()
        label = frame[spec.columns.label].to_numpy()
        ok = {}
        for role, cols in roles.items():
            scores = frame[cols].to_numpy(dtype=np.float64)
            ok[role] = correct_rows(spec.task_type, label, scores, threshold=spec.model.threshold,
                                    classes=spec.model.classes, tolerance=suite.tolerance)
            out[role].add(ids, ok[role])
        if "baseline" in ok:
            fresh = ids[~ok["candidate"] & ok["baseline"]]
            new_count += int(fresh.size)
            new_ids += [v.item() if hasattr(v, "item") else v for v in fresh[:max(0, MAX_IDS - len(new_ids))]]
    cand = out["candidate"].to_dict()
    verdict = "PASS" if cand["rows"] and not cand["wrong"] else ("FAIL" if cand["wrong"] else "INCONCLUSIVE")
    shown = ", ".join(map(str, cand["failing_ids"][:10])) + (" …" if cand["wrong"] > 10 else "")
    rule = (f"{cand['wrong']} of {cand['rows']} examples wrong ({spec.columns.id}: {shown}) → FAIL" if cand["wrong"]
            else (f"all {cand['rows']} examples right → PASS" if cand["rows"] else "no examples → INCONCLUSIVE"))
    gate = {"gate": f"suite:{suite.name}:every_example", "metric": "per_example", "slice": suite.name,
            "kind": "per_example", "family": f"suite:{suite.name}", "value": cand["right"] / cand["rows"]
            if cand["rows"] else None, "n": cand["rows"], "outcome": verdict, "rule": rule,
            "baseline_value": None, "delta": None, "ci": None}  # every gate row has these keys; no statistics here
    block = {"kind": "per_example", "models": {r: o.to_dict() for r, o in out.items()}, "gates": [gate],
             "verdict": verdict}
    if "baseline" in out:
        block["new_failures"] = {"count": new_count, "ids": new_ids, "truncated": new_count > len(new_ids)}
    return block


# -- spec checks (called by spec.EvalSpec._consistent) -----------------------------------------------------------------
def _folder(path: str) -> str:
    return path.strip().rstrip("/") + "/"


def suite_problems(spec) -> list[str]:
    """'suites.<i>.<key>: what is wrong' lines: everything about the suites that can be known from the spec alone."""
    from .engine.gates import required_replicates

    problems, names, folders = [], {}, {}
    task_folder = _folder(spec.data.source) if spec.data.sql is None else None
    metrics = spec.metric_names()
    for i, s in enumerate(spec.suites):
        at = f"suites.{i}"
        if s.name in names:
            problems.append(f"{at}.name: {s.name!r} is also suites.{names[s.name]}; suite names must be unique")
        names.setdefault(s.name, i)
        here = _folder(s.source)
        if task_folder and (here.startswith(task_folder) or task_folder.startswith(here)):
            problems.append(f"{at}.source: {s.source!r} overlaps data.source {spec.data.source!r} (the task's files "
                            f"are listed recursively); give the suite a folder of its own beside it")
        for j, other in folders.items():
            if here.startswith(other) or other.startswith(here):
                problems.append(f"{at}.source: {s.source!r} overlaps suites.{j}.source; each suite needs its own "
                                f"folder")
        folders[i] = here
        problems += _kind_problems(spec, s, at)
        for k, g in enumerate(s.gates):
            if g.metric not in metrics:
                problems.append(f"{at}.gates.{k}.metric: {g.metric!r} is not in 'metrics' {metrics}")
            for t in [g.slices] if isinstance(g.slices, str) else list(g.slices):
                why = spec._gate_target_problem(t)
                if why:
                    problems.append(f"{at}.gates.{k}.slices: {why}")
    if problems:
        return problems
    ev = spec.evaluation
    alpha = (1.0 - ev.confidence) / 2.0
    for i, s in enumerate(spec.suites):  # each suite is its own multiplicity family: B must resolve it
        k = suite_spec(spec, s).gate_rows_lower_bound()
        need = required_replicates(k, alpha, ev.multiplicity) if k else 0
        if ev.bootstrap_replicates < need:
            problems.append(f"suites.{i}.gates: evaluation.bootstrap_replicates {ev.bootstrap_replicates} cannot "
                            f"decide suite {s.name!r}'s {k} gate row(s) ({ev.multiplicity}, one-sided alpha "
                            f"{alpha:g}); the minimum is {need}")
    return problems


def _kind_problems(spec, s, at: str) -> list[str]:
    out = []
    if s.per_example:
        if spec.task_type == "ranking":
            out.append(f"{at}.per_example: not available for ranking (a query's documents have no single right "
                       f"answer); use a metric suite with gates")
        if s.gates:
            out.append(f"{at}.gates: a per_example suite has no metric gates (every row must be right); remove "
                       f"them or set per_example: false")
        if spec.task_type == "regression" and s.tolerance is None:
            out.append(f"{at}.tolerance: required for a regression per_example suite (a row is right when "
                       f"|prediction - label| <= tolerance)")
    if s.tolerance is not None and not (s.per_example and spec.task_type == "regression"):
        out.append(f"{at}.tolerance: only for a regression per_example suite (this one is "
                   f"{'per_example' if s.per_example else 'a metric suite'}, task {spec.task_type})")
    return out


# -- refresh: one snapshot per suite, folded into the task's -----------------------------------------------------------
def refresh_suites(lake, spec) -> dict:
    """{suite: its snapshot id, None when its folder has no data file, or {"error": why} when its files cannot be
    used}, each built as the derived task's snapshot (incremental like the task's). The task's refresh folds this
    into its own snapshot id. A bad suite file does not stop the task's refresh: that suite is INCONCLUSIVE."""
    from .snapshot import DataError, list_source_files, refresh_files_snapshot

    out = {}
    for s in spec.suites:
        derived = suite_spec(spec, s)
        try:
            out[s.name] = (refresh_files_snapshot(lake, derived).snapshot_id if list_source_files(lake, derived)
                           else None)
        except DataError as exc:  # named relative to the lake root: the task's snapshot id must not depend on it
            out[s.name] = {"error": str(exc).replace(lake.root.rstrip("/") + "/", "")}
    return out


def landed_files(lake, spec) -> list[dict]:
    """The task's landed files and every suite's (the new-data sensor reacts to a case dropped in a suite)."""
    from .snapshot import list_source_files

    return list_source_files(lake, spec) + [f for s in spec.suites for f in list_source_files(lake, suite_spec(spec, s))]


def validate_suites(ctx, snap) -> dict:
    """Data quality of each suite snapshot with the suite's own expectations: {suite: success (None: no snapshot)}.
    A failing suite does not block the task: its block is INCONCLUSIVE with the reason (the verdict cannot PASS)."""
    from . import pipeline
    from .snapshot import load_snapshot

    out = {}
    for s in ctx.spec.suites:
        sid = (snap.manifest.get("suites") or {}).get(s.name)
        if not isinstance(sid, str):
            out[s.name] = None
            continue
        derived = pipeline.TaskContext(ctx.lake, suite_spec(ctx.spec, s), ctx.trusted_types)
        try:
            out[s.name] = pipeline.validate(derived, load_snapshot(ctx.lake, derived.task, sid)).success
        except (ValueError, OSError, LakeError):  # DataError, ...: the evaluation step says why (INCONCLUSIVE)
            out[s.name] = False
    return out


# -- evaluation ----------------------------------------------------------------------------------------------------
def evaluate_suites(ctx, snap, candidate, baseline) -> list[dict] | None:
    """Every suite's block (``metrics.json["suites"]``), in spec order; None without suites."""
    if not ctx.spec.suites:
        return None
    return [_evaluate_suite(ctx, snap, s, candidate, baseline) for s in ctx.spec.suites]


def _inconclusive(block: dict, reason: str) -> dict:
    gate = {"gate": f"suite:{block['name']}:data", "metric": "suite", "slice": block["name"], "kind": "suite",
            "family": f"suite:{block['name']}", "value": None, "baseline_value": None, "delta": None, "ci": None,
            "n": 0, "outcome": "INCONCLUSIVE", "rule": f"{reason} → INCONCLUSIVE"}
    return block | {"status": "inconclusive", "reason": reason, "gates": [gate], "verdict": "INCONCLUSIVE"}


def _evaluate_suite(ctx, snap, suite, candidate, baseline) -> dict:
    from . import pipeline
    from .evaluation_shards import ShardError, shard_reader
    from .scoring import ScoringError, score_model
    from .snapshot import load_snapshot

    derived = pipeline.TaskContext(ctx.lake, suite_spec(ctx.spec, suite), ctx.trusted_types)
    ids = snap.manifest.get("suites") or {}
    block = {"name": suite.name, "source": suite.source, "kind": "per_example" if suite.per_example else "metrics",
             "snapshot_id": ids.get(suite.name)}
    if suite.name not in ids:
        return _inconclusive(block, f"snapshot {snap.snapshot_id} was built before suite {suite.name!r} was "
                                    f"declared; refresh the dataset")
    if ids[suite.name] is None:
        return _inconclusive(block, f"no data files under {suite.source}")
    if isinstance(ids[suite.name], dict):
        return _inconclusive(block | {"snapshot_id": None}, f"its files cannot be used: {ids[suite.name]['error']}")
    try:
        ssnap = load_snapshot(ctx.lake, derived.task, ids[suite.name])
        quality = pipeline.validate(derived, ssnap)  # the stored result when the data-quality check made it
    except (ValueError, OSError, LakeError) as exc:  # DataError, ...
        return _inconclusive(block, f"its snapshot cannot be validated: {exc}")
    block["rows"] = ssnap.manifest.get("rows")
    if not quality.success:
        return _inconclusive(block, "data quality failed: " + "; ".join(map(str, quality.failures()[:5])))
    roles = {"candidate": candidate} | ({"baseline": baseline} if baseline else {})
    for role, manifest in roles.items():
        try:
            score_model(ctx.lake, ctx.registry, derived.spec, ssnap, manifest, ctx.trusted_types)
        except ScoringError as exc:  # a model that cannot score a case: the candidate fails it, a baseline cannot say
            if role == "baseline":
                return _inconclusive(block, f"the baseline {manifest.ref} could not score the suite: {exc}")
            gate = {"gate": f"suite:{suite.name}:scoring", "metric": "suite", "slice": suite.name, "kind": "suite",
                    "family": f"suite:{suite.name}", "value": None, "n": 0, "outcome": "FAIL",
                    "rule": f"the candidate {manifest.ref} could not score the suite: {exc} → FAIL"}
            return block | {"status": "error", "error": str(exc), "gates": [gate], "verdict": "FAIL"}
    try:
        reader = shard_reader(ctx.lake, derived.spec, ssnap, roles)
        if suite.per_example:
            cols = {r: pipeline._role_columns(derived.spec, r) for r in roles}
            return block | {"status": "ok"} | per_example(reader(), derived.spec, suite, cols)
        return block | {"status": "ok"} | _metric_suite(derived.spec, suite, reader, roles, baseline is not None)
    except ShardError as exc:
        raise pipeline.EvaluationError(f"suite {suite.name!r}: {exc}") from None


def _metric_suite(spec, suite, reader, roles: dict, paired: bool) -> dict:
    """The engine's paired evaluation of the suite's rows and its gates, decided as their own multiplicity family
    (without a baseline only absolute gates apply, like the task's)."""
    from . import pipeline
    from .engine import apply_gates, evaluate

    result = evaluate(reader(), **pipeline.engine_arguments(spec, roles, paired))
    gates = pipeline.gate_defs(suite.gates, paired)
    block = {"metrics": result.to_dict(), "gates": [], "verdict": None}
    if gates:
        report = apply_gates(result, gates, multiplicity=spec.evaluation.multiplicity).to_dict()
        # the suite's name in the gate and slice: its rows never pass for the task's (forest plots match slices)
        block["gates"] = [dict(g, gate=f"suite:{suite.name}:{g['gate']}", slice=f"{suite.name}:{g['slice']}",
                               family=f"suite:{suite.name}") for g in report["gates"]]
        block["verdict"] = report["verdict"]
        block["gate_summary"] = {k: v for k, v in report.items() if k != "gates"}
    return block


def with_suites(gates_dict: dict, blocks: list[dict] | None) -> dict:
    """The gates report with every suite's gate rows appended and the verdict the worst of the task's and the
    suites' (a suite without an applicable gate has no verdict and decides nothing)."""
    from .engine.gates import append_family

    if not blocks:
        return gates_dict
    out = append_family(gates_dict, [g for b in blocks for g in b.get("gates", [])], *(b.get("verdict") for b in blocks))
    out["suites"] = {b["name"]: b.get("verdict") for b in blocks}
    return out


def suites_snapshotted(lake, spec, manifest: dict) -> bool:
    """True when every suite's snapshot recorded in the task's ``manifest`` was built from exactly the files (paths
    and sizes) now in the suite's folder (the new-data sensor's check on a fresh cursor)."""
    from .snapshot import list_source_files, load_snapshot

    recorded = manifest.get("suites") or {}
    for s in spec.suites:
        derived = suite_spec(spec, s)
        landed = {(f["rel"], f.get("size")) for f in list_source_files(lake, derived)}
        sid = recorded.get(s.name, "missing")
        if not isinstance(sid, str) or sid == "missing":
            if sid == "missing" or landed:  # not recorded at all, or files landed in an empty or broken suite
                return False
            continue
        built = load_snapshot(lake, derived.task, sid).manifest.get("source_files", [])
        if landed != {(f["path"], f.get("size")) for f in built}:
            return False
    return True
