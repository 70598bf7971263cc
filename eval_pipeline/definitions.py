"""Entry point for Dagster (workspace.yaml loads ``defs`` from here): one Definitions for every spec.

Specs come from EVAL_SPECS (files or folders, separated by ':'); by default the specs shipped in
eval_pipeline/specs/. This module and cli.py are the only places where the engine meets Dagster.
"""

from pathlib import Path

import dagster as dg

from assets import build_task_assets
from assets.automation import build_automation
from assets.common import RUN_INPUTS, RunInputsResource, evaluate_job_name, key, refresh_job_name
from resources import resources_from_env

from .settings import load_settings
from .spec import EvalSpec, load_spec

PACKAGED_SPECS = Path(__file__).parent / "specs"


def spec_paths() -> list[Path]:
    entries = [Path(p) for p in load_settings(warn=False).specs] or [PACKAGED_SPECS]
    paths: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            paths += sorted(entry.glob("*.y*ml"))
        elif entry != PACKAGED_SPECS:
            paths.append(entry)
    return paths


def load_specs() -> list[EvalSpec]:
    specs = [load_spec(p) for p in spec_paths()]
    seen: dict[str, int] = {}
    for s in specs:
        seen[s.task] = seen.get(s.task, 0) + 1
    dup = [t for t, n in seen.items() if n > 1]
    if dup:
        raise ValueError(f"two specs define the same task {dup}; task names must be unique")
    return specs


def task_jobs(spec: EvalSpec) -> list:
    dataset = dg.AssetSelection.assets(key(spec, "dataset_snapshot"), key(spec, "drift_report"))
    refresh = dg.define_asset_job(
        refresh_job_name(spec), selection=dataset,
        description="Refresh the snapshot from the landing zone, validate it (blocking) and compute drift.")
    evaluate = dg.define_asset_job(
        evaluate_job_name(spec), selection=dg.AssetSelection.groups(spec.task) - dataset,
        description="Score, measure, report, gate (and optionally promote) one model version on one snapshot (a "
                    "partition <version>@<snapshot_id>) against the baseline recorded in the run config.")
    return [refresh, evaluate]


def build_definitions(specs: list[EvalSpec] | None = None, resources: dict | None = None,
                      loggers: dict | None = None) -> dg.Definitions:
    specs = load_specs() if specs is None else specs
    assets, checks, jobs, sensors, schedules = [], [], [], [], []
    for spec in specs:
        for d in build_task_assets(spec):
            (checks if isinstance(d, dg.AssetChecksDefinition) else assets).append(d)
        task_jobs_ = task_jobs(spec)
        jobs += task_jobs_
        auto = build_automation(spec, *task_jobs_)
        sensors += auto["sensors"]
        schedules += auto["schedules"]
    resources = dict(resources or resources_from_env())
    # Each evaluation run's inputs (candidate sha256, baseline version and sha256) come from its own run config.
    resources.setdefault(RUN_INPUTS, RunInputsResource.configure_at_launch())
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, sensors=sensors, schedules=schedules,
                          resources=resources, loggers=loggers)


def __getattr__(name: str):
    # `defs` is built on first access (Dagster's loader, `dagster dev`), not when the CLI imports build_definitions.
    if name == "defs":
        global defs
        defs = build_definitions()
        return defs
    raise AttributeError(name)
