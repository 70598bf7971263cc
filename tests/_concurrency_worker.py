"""One evaluation run in its own process, for tests/test_concurrency.py: real Dagster, a persistent DAGSTER_HOME
shared with other processes, the run's inputs given exactly as a sensor gives them (partition key + run config).

    python -m tests._concurrency_worker RUN.json

RUN.json: {"spec", "lake", "home", "request": {"partition_key", "run_config", "tags"}, "executor": "in_process" |
"multiprocess", "barrier": {"dir", "name", "wait_for": [names]} | null, "out": path}

The barrier holds the run inside its metrics step (after scoring) until every named peer has reached its own barrier
(or released it): runs that are meant to overlap provably do. The outcome is written to ``out`` as JSON.
"""

import json
import os
import sys
import time
from pathlib import Path

BARRIER_TIMEOUT = 90.0


def _config() -> dict:
    return json.loads(Path(os.environ["EVAL_WORKER_RUN"]).read_text())


def make_job():
    """Module-level so that dagster.reconstructable can rebuild the job in each step process (multiprocess)."""
    from eval_pipeline.definitions import build_definitions
    from eval_pipeline.spec import load_spec
    from resources import LakeResource, SettingsResource

    cfg = _config()
    spec = load_spec(cfg["spec"])
    defs = build_definitions([spec], resources={"lake": LakeResource(root=cfg["lake"]),
                                                "settings": SettingsResource()})
    return defs.resolve_job_def(f"{spec.task}__evaluate")


def _install_barrier(barrier: dict) -> None:
    from eval_pipeline import pipeline

    orig = pipeline.compute_metrics

    def compute_metrics(ctx, snap, inputs):
        folder = Path(barrier["dir"])
        (folder / barrier["name"]).write_text(str(time.time()))
        deadline = time.monotonic() + BARRIER_TIMEOUT
        while not all((folder / peer).exists() for peer in barrier["wait_for"]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"barrier {barrier['name']}: peers {barrier['wait_for']} never arrived")
            time.sleep(0.05)
        return orig(ctx, snap, inputs)

    pipeline.compute_metrics = compute_metrics


def main(run_file: str) -> int:
    os.environ["EVAL_WORKER_RUN"] = str(Path(run_file).resolve())
    cfg = _config()
    import dagster as dg

    request = cfg["request"]
    run_config = dict(request["run_config"])
    with dg.DagsterInstance.from_config(cfg["home"]) as instance:
        if cfg.get("executor") == "multiprocess":
            run_config["execution"] = {"config": {"multiprocess": {"max_concurrent": 2}}}
            tags = {**request["tags"], "dagster/partition": request["partition_key"]}
            with dg.execute_job(dg.reconstructable(make_job), instance=instance, run_config=run_config,
                                tags=tags, raise_on_error=False) as result:
                outcome = {"success": result.success, "run_id": result.run_id}
        else:
            if cfg.get("barrier"):
                _install_barrier(cfg["barrier"])
            result = make_job().execute_in_process(instance=instance, partition_key=request["partition_key"],
                                                   run_config=run_config, tags=request["tags"],
                                                   raise_on_error=False)
            outcome = {"success": result.success, "run_id": result.run_id}
    Path(cfg["out"]).write_text(json.dumps(outcome))
    return 0 if outcome["success"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
