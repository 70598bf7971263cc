"""What the lake holds, for people and scripts: `eval-pipeline status` (alias `models`).

For every registered model: its versions, its champion, each version's latest verdict and snapshot per task, and the
*pending* candidates: versions the pipeline still owes an evaluation against the current champion on the newest
validated snapshot (with the current spec). Read-only: it never writes to the lake or the registry.

Pending follows the re-evaluation sensor's notion of an open candidate (versions newer than the champion, or never
evaluated for the task), so a former champion or an old rejected version is not listed as pending forever. Without a
champion, a version is pending when the spec has an absolute gate (it can be decided alone) and it has no evaluation
on the newest validated snapshot; otherwise nothing can be decided until a first champion is named.

Specs tell which task(s) evaluate a model; evaluations of a model under a task whose spec is not loaded are still
shown (read from ``evaluations/<task>/<model>/``), but pending candidates need the spec (its hash, its gates).
"""

from types import SimpleNamespace

from . import pipeline
from .lake import Lake, LakeError
from .registry import Registry, RegistryError, version_sort_key
from .snapshot import DataError
from .spec import EvalSpec

READ_ERRORS = (RegistryError, LakeError, DataError, FileNotFoundError, KeyError, TypeError, ValueError)


def lake_status(lake: Lake, specs: list[EvalSpec]) -> dict:
    """Models, versions, champions, latest verdicts and pending candidates as one JSON-able dict."""
    registry = Registry(lake)
    by_model: dict[str, list[EvalSpec]] = {}
    for spec in specs:
        by_model.setdefault(spec.model.name, []).append(spec)
    try:
        registered = registry.model_names()
    except (LakeError, FileNotFoundError):
        registered = []
    names = sorted(set(registered) | set(by_model))
    models = [_model_status(lake, registry, name, by_model.get(name, []), name in registered) for name in names]
    return {"lake": lake.root, "specs": sorted(s.task for s in specs), "models": models}


def _model_status(lake: Lake, registry, name: str, specs: list[EvalSpec], registered: bool) -> dict:
    out = {"name": name, "registered": registered, "champion": None, "champion_since": None, "tasks": [],
           "versions": [], "pending": [], "problems": []}
    if not registered:
        out["problems"].append(f"no version of model '{name}' is registered under {lake.uri(registry.prefix)}")
        entries = []
    else:
        entries = registry.scan(name)
        try:
            out["champion"] = registry.champion(name)
            if out["champion"]:
                out["champion_since"] = lake.read_json(registry.champion_path(name)).get("promoted_at")
        except READ_ERRORS as exc:
            out["problems"].append(f"cannot read the champion of '{name}': {exc}")
    champion = out["champion"]

    versions = []
    for entry in entries:
        v = {"version": entry["version"], "state": "registered" if entry["complete"] else "incomplete",
             "champion": entry["version"] == champion, "flavor": None, "created_at": None, "latest": {},
             "evaluations": 0, "pending": []}
        if entry["complete"]:
            try:
                manifest = registry.manifest(name, entry["version"])
                v["flavor"], v["created_at"] = manifest.flavor, manifest.created_at.isoformat()
            except RegistryError as exc:
                v["state"], v["problem"] = "invalid", str(exc)
        versions.append(v)
    out["versions"] = versions

    # Tasks: the loaded specs of the model, and any other task the lake holds evaluations of it for.
    spec_tasks = {s.task: s for s in specs}
    for task in sorted(set(spec_tasks) | set(_evaluated_tasks(lake, name))):
        spec = spec_tasks.get(task)
        ctx = (pipeline.TaskContext(lake, spec) if spec
               else SimpleNamespace(lake=lake, task=task, model_name=name))  # enough for pipeline.results_of
        task_out = {"task": task, "spec": spec is not None, "newest_snapshot": None,
                    "newest_validated_snapshot": None, "note": ""}
        if spec:
            task_out.update(_snapshots(ctx))
        snapshot = task_out["newest_validated_snapshot"]
        for v in versions:
            if v["state"] != "registered":
                continue
            results = pipeline.results_of(ctx, v["version"])
            v["evaluations"] += len(results)
            if results:
                v["latest"][task] = _latest(results, champion, snapshot, spec)
            if spec:
                why = _pending_why(ctx, v, results, champion, snapshot)
                if why:
                    v["pending"].append(task)
                    out["pending"].append({"version": v["version"], "task": task, "why": why})
        if spec is None:
            task_out["note"] = (f"spec of task '{task}' not loaded (--spec / EVAL_SPECS): its evaluations are shown, "
                                f"pending candidates are not known")
        elif champion is None and not pipeline.has_absolute_gates(spec):
            task_out["note"] = (f"model '{name}' has no champion and spec '{task}' has no absolute gates: nothing can "
                                f"be decided; name the first champion with `eval-pipeline promote --initial`")
        out["tasks"].append(task_out)
    return out


def _evaluated_tasks(lake: Lake, name: str) -> list[str]:
    """Tasks with an ``evaluations/<task>/<name>/`` folder."""
    try:
        return [p.rsplit("/", 1)[-1] for p in lake.ls("evaluations") if lake.exists(f"{p}/{name}")]
    except (LakeError, FileNotFoundError):
        return []


def _snapshots(ctx: pipeline.TaskContext) -> dict:
    """The newest snapshot and the newest one that passed data quality (the one evaluations run on)."""
    out = {"newest_snapshot": pipeline.latest_snapshot_id(ctx), "newest_validated_snapshot": None}
    try:
        out["newest_validated_snapshot"] = pipeline.snapshot_for_evaluation(ctx)[0].snapshot_id
    except (pipeline.EvaluationError, *READ_ERRORS):
        pass
    return out


def _against(result: dict) -> str:
    if result.get("mode") == "monitoring":
        return "monitoring"
    return (result.get("baseline") or {}).get("ref") or "none"


def _latest(results: list[dict], champion: str | None, snapshot: str | None, spec: EvalSpec | None) -> dict:
    """The evaluation that says most about the version now: on the newest snapshot (results_of's order); among
    several there, the one with this spec against the current champion (or monitoring, for the champion)."""
    spec_hash = spec.spec_hash() if spec else None

    def counts_now(r: dict) -> tuple:
        baseline = (r.get("baseline") or {}).get("version")
        return (r.get("reproducibility", {}).get("spec_sha256") == spec_hash,
                baseline == champion or (baseline is None and r.get("mode") == "monitoring"))

    def snapshot_end(r: dict) -> str:
        return ((r.get("dataset") or {}).get("time_range") or [""])[-1] or ""

    _, best = max(enumerate(results), key=lambda ir: (snapshot_end(ir[1]), counts_now(ir[1]), ir[0]))
    dataset = best.get("dataset") or {}
    current_spec, against_champion = counts_now(best)
    return {"verdict": best.get("verdict"), "snapshot_id": dataset.get("snapshot_id"), "mode": best.get("mode"),
            "against": _against(best), "evidence_id": best.get("evidence_id"),
            "current": bool(spec and current_spec and against_champion and dataset.get("snapshot_id") == snapshot),
            "failed_gates": [f"{g.get('metric')} on {g.get('slice')}" for g in best.get("gates", [])
                             if g.get("outcome") not in (None, "PASS")],
            "result": (best.get("paths") or {}).get("result")}


def _pending_why(ctx: pipeline.TaskContext, v: dict, results: list[dict], champion: str | None,
                 snapshot: str | None) -> str:
    """Why the version still waits for an evaluation ("" when it does not)."""
    version, name = v["version"], ctx.model_name
    if version == champion:
        return ""
    if champion is not None and version_sort_key(version) < version_sort_key(champion) and results:
        return ""  # an older version already evaluated: not an open candidate (as the re-evaluation sensor sees it)
    if champion is None and not pipeline.has_absolute_gates(ctx.spec):
        return ""  # nothing could be decided (the task's note says what to do)
    against = f"{name}@{champion}" if champion else "no baseline (absolute gates only)"
    if snapshot is None:
        return f"waits for a validated snapshot of task '{ctx.task}', then an evaluation against {against}"
    spec_hash = ctx.spec.spec_hash()
    done = [r for r in results if (r.get("dataset") or {}).get("snapshot_id") == snapshot
            and r.get("mode") != "monitoring"
            and (r.get("baseline") or {}).get("version") == champion
            and r.get("reproducibility", {}).get("spec_sha256") == spec_hash]
    if done:
        return ""
    return f"never evaluated against {against} on snapshot {snapshot} with this spec"


# -- text rendering --------------------------------------------------------------------------------------------------
def render_text(status: dict) -> str:
    lines = [f"lake: {status['lake']}"]
    if not status["models"]:
        where = f"specs: {', '.join(status['specs'])}" if status["specs"] else "no specs loaded"
        lines.append(f"no models: nothing is registered in this lake and no spec names a model ({where}); register "
                     f"one with `eval-pipeline register`")
        return "\n".join(lines) + "\n"
    waiting = [m for m in status["models"] if not m["registered"]]
    if len(waiting) == len(status["models"]):
        lines.append("no models registered in this lake yet (register one with `eval-pipeline register`)")
    for m in waiting:
        tasks = ", ".join(t["task"] for t in m["tasks"] if t["spec"])
        lines.append(f"model {m['name']} (spec {tasks}): no version registered")
    for m in status["models"]:
        if not m["registered"]:
            continue
        lines.append("")
        champion = (f"{m['name']}@{m['champion']}" + (f" since {m['champion_since']}" if m["champion_since"] else "")
                    if m["champion"] else "none")
        lines.append(f"model {m['name']}: {len(m['versions'])} version(s), champion {champion}")
        for t in m["tasks"]:
            snap = t["newest_validated_snapshot"] or ("none validated" if t["spec"] else "?")
            extra = (f" (newest {t['newest_snapshot']} not validated)"
                     if t["newest_snapshot"] and t["newest_snapshot"] != t["newest_validated_snapshot"] else "")
            lines.append(f"  task {t['task']}: newest validated snapshot {snap}{extra}")
            if t["note"]:
                lines.append(f"    note: {t['note']}")
        for p in m["problems"]:
            lines.append(f"  {p}")
        if m["versions"]:
            lines.append(f"  {'version':<10} {'role':<10} {'task':<18} {'verdict':<13} {'snapshot':<18} against")
        for v in m["versions"]:
            role = ("champion" if v["champion"] else "pending" if v["pending"]
                    else v["state"] if v["state"] != "registered" else "candidate")
            latest = v["latest"] or {None: None}
            for i, (task, r) in enumerate(sorted(latest.items(), key=lambda kv: kv[0] or "")):
                head = f"  {v['version'] if i == 0 else '':<10} {role if i == 0 else '':<10} "
                if r is None:
                    what = v.get("problem") or ("never evaluated" if v["state"] == "registered"
                                                else "no manifest yet (being registered?)")
                    lines.append(f"{head}{'-':<18} {what}")
                    continue
                verdict = r["verdict"] + ("" if r["current"] else "*")
                lines.append(f"{head}{task:<18} {verdict:<13} {r['snapshot_id'] or '-':<18} {r['against']}"
                             + (f"  (failed: {', '.join(r['failed_gates'])})" if r["failed_gates"] else ""))
        if any(not r["current"] for v in m["versions"] for r in v["latest"].values()):
            lines.append("  * not against the current champion on the newest validated snapshot with the loaded spec")
        if m["pending"]:
            lines.append("  pending candidates:")
            lines += [f"    {m['name']}@{p['version']} ({p['task']}): {p['why']}" for p in m["pending"]]
        elif m["registered"]:
            lines.append("  pending candidates: none")
    return "\n".join(lines) + "\n"
