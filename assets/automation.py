"""Sensors and schedules of one task (placeholder until the automation issue lands: none yet)."""

from eval_pipeline.spec import EvalSpec


def build_automation(spec: EvalSpec, refresh_job, evaluate_job) -> dict:
    return {"sensors": [], "schedules": []}
