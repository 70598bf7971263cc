"""eval_pipeline.engine: exact, streaming, paired metrics with Poisson-bootstrap intervals and sound gates.

Public API: :func:`evaluate`, :class:`SliceConfig`, :class:`EvaluationResult`, :data:`METRICS`,
:class:`GateDef`, :func:`apply_gates`, :class:`GateReport`, :class:`EngineInputError`, and the streaming
(CombineFn-style) pieces :func:`make_combiner` / :func:`evaluate_accumulator`.
This package does not import dagster.
"""
from .config import GateDef, SliceConfig
from .errors import EngineInputError
from .evaluate import EvaluationResult, evaluate, evaluate_accumulator, make_combiner
from .gates import GateReport, apply_gates
from .registry import METRICS, MetricInfo, metrics_for

__all__ = ["evaluate", "SliceConfig", "EvaluationResult", "METRICS", "MetricInfo", "metrics_for", "GateDef",
           "apply_gates", "GateReport", "EngineInputError", "make_combiner", "evaluate_accumulator"]
