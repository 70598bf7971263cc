"""Dagster assets and checks: thin wrappers around the eval_pipeline engine, built per evaluation spec."""

from eval_pipeline.spec import EvalSpec

from .dataset import build_dataset_assets
from .evaluation import build_evaluation_assets


def build_task_assets(spec: EvalSpec) -> list:
    """All assets and asset checks of one task (one spec)."""
    return build_dataset_assets(spec) + build_evaluation_assets(spec)
