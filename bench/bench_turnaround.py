"""Benchmark (issue 11, "small runs are instant"): how long a new model version waits for its verdict.

(a) ``eval-pipeline evaluate`` of a NEW candidate on an unchanged, already validated demo snapshot (70,033 rows at
    the default ``--sample-frac 0.214``): wall seconds of the whole command (a fresh process: imports, Dagster, the
    evaluation job), ``--trials`` times, median. In the same run, the references:
    * the same command with ``--force-refresh`` (the refresh job runs; validation and drift may still re-use their
      results inside their steps);
    * cold: the same command on a copy of the lake without its quality and drift results and an empty DAGSTER_HOME
      (refresh, Great Expectations and Evidently all run: what ``evaluate`` did before this issue);
    * the bare import of Great Expectations and Evidently in a fresh process (what skipping them can save at most);
    * the floor: a fresh process that imports what ``evaluate`` imports, builds the definitions and opens the
      instance, and does no work (what any evaluation in a new process pays first);
    * warm: the second of two evaluations in one process (the work itself, every import paid);
    * the seconds of each step of one run, as the instance recorded them.
(b) manifest landed -> verdict visible in the UI: a real ``dagster dev`` (webserver + daemons, 127.0.0.1) over the
    same lake and DAGSTER_HOME with the DEFAULT sensor interval; a new version is written into the registry layout
    (artifact first, manifest last, as ``eval-pipeline register`` does); the clock stops when GraphQL shows the
    run's first materialization carrying the verdict (the ``evaluation`` asset: the gates are decided in that step;
    event time as stored, i.e. as the UI shows it). ``--ui-trials`` times, median, with the split: manifest -> run
    created (sensor), created -> started (queue, launch: a new process loads the code location), started -> verdict
    (the run's steps up to the gates); and manifest -> ``release_gates`` (report drawn, result JSON written).

Every candidate is a copy of the demo candidate's artifact under a new version (so it is scored, measured and reported
like any new version). Targets on a quiet machine (load average < 1): (a) <= 5 s, (b) <= 15 s median. The load
average is printed before and after; the last line is one JSON object.

    .venv/bin/python bench/bench_turnaround.py                       # both parts, 3 + 5 trials
    .venv/bin/python bench/bench_turnaround.py --parts a --trials 5
    .venv/bin/python bench/bench_turnaround.py --sample-frac 1.0      # the full demo (327k rows)
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from eval_pipeline.settings import write_local_instance_yaml  # noqa: E402

CLI = str(Path(sys.executable).with_name("eval-pipeline"))
MODEL = "flights_delay"
SPEC = ROOT / "eval_pipeline" / "specs" / "flights_delay.yaml"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _env(lake: Path, home: Path) -> dict:
    return {**os.environ, "EVAL_LAKE_ROOT": str(lake), "DAGSTER_HOME": str(home), "GX_ANALYTICS_ENABLED": "False",
            "DAGSTER_DISABLE_TELEMETRY": "1", "EVAL_SPECS": str(SPEC)}


def seed(lake: Path, home: Path, sample_frac: float) -> float:
    """The demo lake, its snapshot refreshed, validated and drift-checked, flights_delay@2 evaluated (not timed)."""
    write_local_instance_yaml(home)
    t0 = time.perf_counter()
    subprocess.run([CLI, "demo", "--lake", str(lake), "--dagster-home", str(home), "--sample-frac", str(sample_frac)],
                   env=_env(lake, home), check=True, capture_output=True)
    return time.perf_counter() - t0


def new_version(lake: Path, version: str) -> None:
    """A new version in the registry layout: the demo candidate's artifact under another version, manifest last."""
    from eval_pipeline.lake import Lake
    from eval_pipeline.registry import Registry

    reg = Registry(Lake(str(lake)))
    src = reg.manifest(MODEL, "2")
    reg.register(MODEL, version, reg.lake.read_bytes(reg.artifact_path(src)), flavor=src.flavor,
                 artifact_name=src.artifact, description=f"bench copy of {MODEL}@2")


def evaluate(lake: Path, home: Path, version: str, *extra: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([CLI, "evaluate", "--spec", str(SPEC), "--lake", str(lake), "--dagster-home", str(home),
                           "--candidate", f"{MODEL}@{version}", *extra], env=_env(lake, home), capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1, 3):
        raise RuntimeError(f"evaluate {version} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    how = next((line.split("] ", 1)[-1] for line in proc.stderr.splitlines()
                if "not running" in line or "running " + f"{MODEL}__refresh" in line), "?")
    print(f"  evaluate {MODEL}@{version} {' '.join(extra) or '(default)'}: {seconds:.2f} s  [{how}]", flush=True)
    return seconds


FLOOR = """
import sys
from eval_pipeline.cli import _instance
from eval_pipeline.definitions import build_definitions
from eval_pipeline.spec import load_spec
import matplotlib.figure, scipy.stats, skops.io, sklearn.ensemble  # what scoring, the engine and the report import
build_definitions([load_spec(sys.argv[1])]).resolve_job_def("flights_delay__evaluate")
_instance(sys.argv[2]).get_runs(limit=1)
"""


WARM = """
import sys, time
from eval_pipeline.cli import run_evaluation
spec, lake, home, first, second = sys.argv[1:]
run_evaluation(spec, lake, f"flights_delay@{first}", home)  # pays every import and first-use cost
t0 = time.perf_counter()
run_evaluation(spec, lake, f"flights_delay@{second}", home)
print(time.perf_counter() - t0)
"""


def warm_seconds(lake: Path, home: Path, first: str, second: str) -> float:
    """The second of two evaluations in one process: what the work itself takes (scoring, metrics, robustness,
    suites, report, Dagster's run) once every import and first-use cost is paid -- the part no start-up trick saves."""
    proc = subprocess.run([sys.executable, "-c", WARM, str(SPEC), str(lake), str(home), first, second],
                          env=_env(lake, home), check=True, capture_output=True, text=True, cwd=ROOT)
    return float(proc.stdout.strip().splitlines()[-1])


def floor_seconds(lake: Path, home: Path) -> float:
    """A fresh process that imports what `evaluate` imports, builds the definitions and opens the instance, and
    computes nothing: what any evaluation in a new process pays before its first row."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR, str(SPEC), str(home)], env=_env(lake, home), check=True,
                   capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def step_seconds(home: Path, version: str) -> dict:
    """Seconds per step of the newest evaluation run of ``version`` (STEP_START -> STEP_SUCCESS/FAILURE, as the
    instance stored them)."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=f"{MODEL}__evaluate", tags={"eval/version": version}),
                             limit=1)
    if not runs:
        return {}
    starts, out = {}, {}
    for record in instance.all_logs(runs[0].run_id):
        event = record.dagster_event
        if event is None or not record.step_key:
            continue
        if event.event_type_value == "STEP_START":
            starts[record.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and record.step_key in starts:
            out[record.step_key.split("__", 1)[-1]] = round(record.timestamp - starts[record.step_key], 2)
    return out


def import_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import great_expectations, evidently"], check=True,
                   env={**os.environ, "GX_ANALYTICS_ENABLED": "False"}, capture_output=True)
    return time.perf_counter() - t0


def cold_copy(lake: Path, work: Path, i: int) -> tuple[Path, Path]:
    """The lake without its quality and drift results, and an empty DAGSTER_HOME: what evaluate did before the skips
    (refresh, Great Expectations, Evidently, then the evaluation), on the same data and models."""
    cold_lake, cold_home = work / f"cold{i}" / "lake", work / f"cold{i}" / "dagster_home"
    shutil.rmtree(cold_lake.parent, ignore_errors=True)
    shutil.copytree(lake, cold_lake)
    for sub in ("quality", "drift"):
        shutil.rmtree(cold_lake / sub, ignore_errors=True)
    write_local_instance_yaml(cold_home)
    return cold_lake, cold_home


def part_a(lake: Path, home: Path, trials: int, start: int) -> dict:
    skip, force, cold = [], [], []
    new_version(lake, str(start))  # warm-up, not timed: page cache, and an instance validated by this code
    print("  warm-up:", end="")
    evaluate(lake, home, str(start))
    for i in range(trials):
        version = start + 1 + 3 * i
        new_version(lake, str(version))
        skip.append(evaluate(lake, home, str(version)))
        new_version(lake, str(version + 1))
        force.append(evaluate(lake, home, str(version + 1), "--force-refresh"))
        cold_lake, cold_home = cold_copy(lake, home.parent, i)
        new_version(cold_lake, str(version + 2))  # only there: the main lake's sensors must not see it later
        cold.append(evaluate(cold_lake, cold_home, str(version + 2)))
        shutil.rmtree(cold_lake.parent, ignore_errors=True)
    imports = [import_seconds() for _ in range(max(2, trials // 2))]
    floors = [floor_seconds(lake, home) for _ in range(max(2, trials // 2))]
    warm_first = start + 3 * trials + 1
    for v in (warm_first, warm_first + 1):
        new_version(lake, str(v))
    warm = warm_seconds(lake, home, str(warm_first), str(warm_first + 1))
    steps = step_seconds(home, str(start + 1 + 3 * (trials // 2)))  # the median-ish trial's steps
    out = {"evaluate_new_candidate_s": statistics.median(skip), "evaluate_force_refresh_s": statistics.median(force),
           "evaluate_cold_s": statistics.median(cold), "import_gx_evidently_s": statistics.median(imports),
           "floor_imports_definitions_instance_s": statistics.median(floors), "evaluate_steps_s": steps,
           "warm_process_evaluation_s": warm,
           "trials": trials, "evaluate_runs_s": [round(x, 2) for x in skip],
           "force_runs_s": [round(x, 2) for x in force], "cold_runs_s": [round(x, 2) for x in cold]}
    out["ratio_force_over_new"] = out["evaluate_force_refresh_s"] / out["evaluate_new_candidate_s"]
    out["ratio_cold_over_new"] = out["evaluate_cold_s"] / out["evaluate_new_candidate_s"]
    print(f"(a) new candidate, unchanged snapshot: median {out['evaluate_new_candidate_s']:.2f} s  |  "
          f"--force-refresh (job runs, per-step skips inside): {out['evaluate_force_refresh_s']:.2f} s "
          f"({out['ratio_force_over_new']:.2f}x)  |  cold (no quality/drift results, empty instance): "
          f"{out['evaluate_cold_s']:.2f} s ({out['ratio_cold_over_new']:.2f}x)  |  bare import of GX + Evidently: "
          f"{out['import_gx_evidently_s']:.2f} s", flush=True)
    print(f"    floor (a new process importing what evaluate imports, building the definitions, opening the "
          f"instance; no work): {out['floor_imports_definitions_instance_s']:.2f} s; a second evaluation in a "
          f"warm process (imports paid): {warm:.2f} s; steps of one run: {steps}", flush=True)
    return out


VERDICT_EVENTS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status
  eventConnection(limit: 5000) { events { __typename ... on MaterializationEvent { timestamp assetKey { path }
    metadataEntries { label ... on TextMetadataEntry { text } } } } } } } }"""


def _verdict_seen(server, version: str):
    """Once the run's release_gates materialization carries the verdict: (run, {asset: (event time, verdict)}) for
    every materialization of the run that carries one (``evaluation`` first: the gates are decided there)."""
    runs = server.runs(tags={"eval/version": version}, job=f"{MODEL}__evaluate")
    if not runs:
        return None
    run = runs[0]
    data = server.gql(VERDICT_EVENTS, {"id": run["runId"]})["runOrError"]
    if data.get("status") in ("FAILURE", "CANCELED"):
        raise RuntimeError(f"run {run['runId']} for {MODEL}@{version} ended {data['status']}")
    seen = {}
    for ev in data.get("eventConnection", {}).get("events", []):
        if ev["__typename"] == "MaterializationEvent":
            meta = {m["label"]: m.get("text") for m in ev["metadataEntries"]}
            if meta.get("verdict"):
                seen[ev["assetKey"]["path"][-1]] = (int(ev["timestamp"]) / 1000, meta["verdict"])
    return (run, seen) if "release_gates" in seen else None


def _idle(server) -> bool:
    return not [r for r in server.runs() if r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")]


def part_b(lake: Path, home: Path, trials: int, start: int, log: Path) -> dict:
    from tests._daemon_util import DagsterDev, wait_for

    env = {k: v for k, v in _env(lake, home).items() if k.startswith(("EVAL_", "GX_", "DAGSTER_"))}
    env.pop("EVAL_SENSOR_INTERVAL_SECONDS", None)  # the default interval
    server = DagsterDev(home, env, log).start()
    rows = []
    try:
        time.sleep(15)  # the first sensor ticks (re-evaluation of the champion on the snapshot, if any) ...
        wait_for(lambda: _idle(server), timeout=600, interval=1, what="no run in flight")  # ... have finished
        for i in range(trials):
            version = str(start + i)
            new_version(lake, version)
            landed = time.time()
            run, verdicts = wait_for(lambda: _verdict_seen(server, version), timeout=300, interval=0.25,
                                     what=f"verdict of {MODEL}@{version}")
            first = min(t for t, _ in verdicts.values())
            row = {"version": version, "total_s": first - landed,
                   "release_gates_s": verdicts["release_gates"][0] - landed,
                   "sensor_s": run["creationTime"] - landed,
                   "queue_launch_s": run["startTime"] - run["creationTime"],
                   "run_to_verdict_s": first - run["startTime"], "verdict": verdicts["release_gates"][1]}
            rows.append(row)
            print("  " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  flush=True)
            wait_for(lambda: _idle(server), timeout=300, interval=0.5, what="run finished")
    finally:
        server.stop()
    out = {"manifest_to_verdict_median_s": statistics.median(r["total_s"] for r in rows), "ui_trials": trials,
           **{f"{k}_median": statistics.median(r[k] for r in rows)
              for k in ("release_gates_s", "sensor_s", "queue_launch_s", "run_to_verdict_s")},
           "manifest_to_verdict_runs_s": [round(r["total_s"], 2) for r in rows]}
    print(f"(b) manifest -> verdict in the UI: median {out['manifest_to_verdict_median_s']:.2f} s (sensor "
          f"{out['sensor_s_median']:.2f} + queue/launch {out['queue_launch_s_median']:.2f} + run "
          f"{out['run_to_verdict_s_median']:.2f}); release_gates (evidence set complete): "
          f"{out['release_gates_s_median']:.2f} s", flush=True)
    return out


def _next_version(lake: Path) -> int:
    from eval_pipeline.lake import Lake
    from eval_pipeline.registry import Registry

    # + 3: the cold references' versions were registered in copies of the lake only
    return max([100] + [int(v) + 3 for v in Registry(Lake(str(lake))).versions(MODEL) if v.isdigit()])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="ab", help="a, b or ab")
    ap.add_argument("--trials", type=int, default=3, help="(a): new-candidate evaluations (and as many references)")
    ap.add_argument("--ui-trials", type=int, default=5, help="(b): versions registered under dagster dev")
    ap.add_argument("--sample-frac", type=float, default=0.214, help="demo fraction (0.214: a 70,033-row snapshot)")
    ap.add_argument("--workdir", help="keep the lake and DAGSTER_HOME here (default: a temp folder, removed)")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_turnaround_"))
    lake, home = work / "lake", work / "dagster_home"
    load_before = _load()
    print(f"load average before: {load_before}  (targets hold on a quiet machine: load < 1)", flush=True)
    result = {"bench": "turnaround", "sample_frac": args.sample_frac, "load_before": load_before}
    try:
        # --workdir of an earlier run: its lake and instance are re-used (new versions get higher numbers)
        result["seed_s"] = seed(lake, home, args.sample_frac) if not (lake / "registry").exists() else 0.0
        from eval_pipeline.lake import Lake
        from eval_pipeline.snapshot import load_snapshot
        result["snapshot_rows"] = load_snapshot(Lake(str(lake)), MODEL).manifest["rows"]
        print(f"demo seeded and evaluated in {result['seed_s']:.1f} s; snapshot rows {result['snapshot_rows']}",
              flush=True)
        if "a" in args.parts:
            result |= part_a(lake, home, args.trials, _next_version(lake))
        if "b" in args.parts:
            result |= part_b(lake, home, args.ui_trials, _next_version(lake), work / "dagster_dev.log")
    finally:
        result["load_after"] = _load()
        print(f"load average after: {result['load_after']}", flush=True)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    result["targets"] = {"evaluate_new_candidate_s": 5.0, "manifest_to_verdict_median_s": 15.0}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
