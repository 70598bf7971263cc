"""Entry point for Dagster (workspace.yaml loads ``defs`` from here): one Definitions for every spec.

Specs come from EVAL_SPECS (files or folders, separated by ':'); by default the specs shipped in
eval_pipeline/specs/. This module and cli.py are the only places where the engine meets Dagster.
"""

import os
from pathlib import Path

import dagster as dg

from assets import build_task_assets
from assets.automation import build_automation
from resources import resources_from_env

from .spec import EvalSpec, load_spec

PACKAGED_SPECS = Path(__file__).parent / "specs"


def spec_paths() -> list[Path]:
    raw = os.environ.get("EVAL_SPECS", "")
    entries = [Path(p) for p in raw.split(os.pathsep) if p.strip()] or [PACKAGED_SPECS]
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
    prefix = spec.task
    refresh = dg.define_asset_job(
        f"{prefix}__refresh",
        selection=dg.AssetSelection.assets([prefix, "dataset_snapshot"], [prefix, "drift_report"]),
        description="Refresh the snapshot from the landing zone, validate it (blocking) and compute drift.")
    evaluate = dg.define_asset_job(
        f"{prefix}__evaluate",
        selection=dg.AssetSelection.groups(prefix) - dg.AssetSelection.assets(
            [prefix, "dataset_snapshot"], [prefix, "drift_report"]),
        description="Score, measure, gate, report (and optionally promote) one model version (a partition).")
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
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, sensors=sensors, schedules=schedules,
                          resources=resources or resources_from_env(), loggers=loggers)


def __getattr__(name: str):
    # `defs` is built on first access (Dagster's loader, `dagster dev`), not when the CLI imports build_definitions.
    if name == "defs":
        global defs
        defs = build_definitions()
        return defs
    raise AttributeError(name)
