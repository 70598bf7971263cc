"""eval_pipeline.engine: exact, streaming, paired metrics with Poisson-bootstrap intervals and sound gates.

Public API: :func:`evaluate`, :class:`SliceConfig`, :class:`EvaluationResult`, :data:`METRICS`,
:class:`GateDef`, :func:`apply_gates`, :class:`GateReport`, :class:`EngineInputError`, and the streaming
(CombineFn-style) pieces :func:`make_combiner` / :func:`evaluate_accumulator`.
This package does not import dagster.

Layout (imports run one way, top to bottom): ``shards`` (sharded evaluation: map shards to accumulators on a
backend, merge in shard order, then ``evaluate`` once; it imports ``evaluate`` only inside that call) -> ``evaluate``
(entry point, result) -> the metric families ``binary`` / ``multiclass`` / ``regression`` / ``ranking`` (each a
:class:`.accumulate.Family`: create / add / merge / finish / compute) -> ``accumulate`` (the generic combiner: atoms,
slice values, merge) and ``slices``; the binary family's parts ``binary_cells`` (its store and bootstrap cells),
``storage`` / ``spill`` (where its sorted runs and row pieces live: memory or disk), ``binary_stats`` (exact
statistics of sorted scores) and ``score_cells``; at the bottom ``columns`` (input checking), ``exact``,
``bootstrap``, ``catalogue`` (the metrics), ``config``, ``errors``. ``gates`` decides release gates on a result;
``fairness`` (per-group counts, rates, disparities and their bootstrap, a mergeable combiner of its own) sits beside
the families, and ``gates`` imports its metric definitions so fairness gates are decided by the same rule.

What is exact and what is approximated
--------------------------------------
Exact (to floating-point rounding, checked against scikit-learn to 1e-9 in tests/engine):
  every point estimate — count metrics from integer counts; ROC AUC from the integer Mann-Whitney U over the sorted
  distinct scores (ties count 1/2); average precision from the same sorted scores; log loss, Brier and ECE
  from exact, order-free sums (``.exact.ExactSum``: correctly rounded); regression errors from sums taken in a
  canonical (sorted) row order; multiclass metrics from exact confusion counts.
  Results are bit-identical whatever the chunking, row order or number of worker threads.
Bootstrap (Poisson, seeded, reproducible bit for bit):
  - binary: count metrics and ECE from cells (atom, label, fixed score-grid bin of each paired model) whose edges
    include the threshold and the ECE edges (count metrics are exact functions of the cell weights); ROC AUC, AP, log
    loss and Brier from per-slice joint cells on order statistics of the slice's own scores (``.score_cells``), so
    the intervals keep their resolution in any score band; exact Poisson for cells with < 100 rows, skewness-
    corrected normal (Cornish-Fisher) for larger ones; replicates recentred on the exact point estimate;
  - multiclass: cell weights of (atom, label, predicted class, top-k hit per model) — same sampler, every metric an
    exact function of the weights;
  - regression: moment-matched normal approximation of the Poisson bootstrap of the sufficient sums (``.regression``).
  Intervals are percentile intervals of the (recentred) replicates, kept inside each metric's range; measured
  coverage is in tests/engine (test_simulation.py; the full matrix: bench/sim_matrix.py).
Memory: O(rows) for binary (8 bytes per row per model for the sorted scores needed for *exact* AUC/AP, plus 1 byte
and 8 per model for the row pieces the per-slice bootstrap cells are built from) and for multiclass/regression (the reduced per-row values); the bootstrap itself is O(cells), independent of rows.
Opt-in external memory for binary (``evaluate(..., spill_dir=..., spill_rows=2_000_000)`` or the environment
variables ``EVAL_ENGINE_SPILL_ROWS`` / ``EVAL_ENGINE_SPILL_DIR``; :mod:`.spill`): the sorted score runs and the row
pieces go to temp files (about 17 bytes per row per model on disk, removed afterwards) and the exact metrics are computed by a k-way merge
with the same exact sums, so results are bit-identical to the in-memory mode while RAM is bounded by
``spill_rows`` per worker, not by rows.
"""
from .config import GateDef, SliceConfig
from .errors import EngineInputError
from .evaluate import EvaluationResult, evaluate, evaluate_accumulator, make_combiner
from .gates import GateReport, apply_gates, check_resolution, count_gate_rows, required_replicates
from .catalogue import METRICS, MetricInfo, metrics_for

__all__ = ["evaluate", "SliceConfig", "EvaluationResult", "METRICS", "MetricInfo", "metrics_for", "GateDef",
           "apply_gates", "GateReport", "EngineInputError", "make_combiner", "evaluate_accumulator",
           "check_resolution", "count_gate_rows", "required_replicates"]
