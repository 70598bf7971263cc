"""Shared bits of the asset layer: building the engine's TaskContext from resources, and asset keys per task."""

import dagster as dg

from eval_pipeline.pipeline import TaskContext
from eval_pipeline.spec import EvalSpec
from resources import LakeResource, SettingsResource


def task_context(spec: EvalSpec, lake: LakeResource, settings: SettingsResource) -> TaskContext:
    return TaskContext(lake.get_lake(), spec, trusted_types=settings.trusted_type_list() or None)


def key(spec: EvalSpec, name: str) -> dg.AssetKey:
    return dg.AssetKey([spec.task, name])


def versions_partitions(spec: EvalSpec) -> dg.DynamicPartitionsDefinition:
    """One partition per model version of the task's model; the new-model sensor adds them."""
    return dg.DynamicPartitionsDefinition(name=f"{spec.task}__versions")


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)
