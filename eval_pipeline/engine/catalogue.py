"""The metric catalogue: which metrics exist, for which task, which direction is better, and their definitions.

Every definition states the sufficient statistic the engine computes it from, and what happens at the edges.
An undefined value is reported as ``None`` with a reason; it is never replaced by 0.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
REGRESSION = "regression"
RANKING = "ranking"


@dataclass(frozen=True)
class MetricInfo:
    name: str
    task_types: tuple[str, ...]
    higher_is_better: bool
    description: str
    reference: str
    range: tuple[float, float] = (0.0, 1.0)  # the values the metric can take; intervals are kept inside it


def _m(name, task, hib, desc, ref, range=(0.0, 1.0)):
    return MetricInfo(name, (task,) if isinstance(task, str) else tuple(task), hib, desc, ref, range)


_NONNEG = (0.0, float("inf"))


_LIST = [
    # --- binary: from exact counts (tp, fp, tn, fn) at the threshold; predicted positive <=> score >= threshold
    _m("accuracy", (BINARY, MULTICLASS), True,
       "(tp + tn) / n (binary, prediction = score >= threshold); multiclass: share of rows whose argmax class "
       "(first maximum on ties) equals the label. From exact counts. Undefined for an empty slice.",
       "sklearn.metrics.accuracy_score"),
    _m("precision", BINARY, True,
       "tp / (tp + fp). From exact counts. Undefined (not 0) when nothing is predicted positive.",
       "sklearn.metrics.precision_score"),
    _m("recall", BINARY, True,
       "tp / (tp + fn) (true positive rate). From exact counts. Undefined when the slice has no positives.",
       "sklearn.metrics.recall_score"),
    _m("f1", BINARY, True,
       "2 tp / (2 tp + fp + fn). From exact counts. Undefined when there are no positives and no predicted positives.",
       "sklearn.metrics.f1_score"),
    _m("specificity", BINARY, True,
       "tn / (tn + fp) (true negative rate). From exact counts. Undefined when the slice has no negatives.",
       "sklearn.metrics.recall_score(pos_label=0)"),
    _m("balanced_accuracy", BINARY, True,
       "(recall + specificity) / 2. From exact counts. Undefined unless the slice has both classes "
       "(scikit-learn warns and averages over present classes instead).",
       "sklearn.metrics.balanced_accuracy_score"),
    _m("roc_auc", BINARY, True,
       "Mann-Whitney U / (P N): probability a random positive scores above a random negative, ties count 1/2 "
       "(= trapezoidal area under the ROC curve). Exact point estimate from the sorted distinct scores; "
       "undefined when the slice has a single class.",
       "sklearn.metrics.roc_auc_score"),
    _m("average_precision", BINARY, True,
       "sum over distinct thresholds t (descending) of (R(t) - R(t_prev)) * P(t), step-wise (no interpolation); tied "
       "scores form one threshold. Exact point estimate from the sorted distinct scores; undefined without positives.",
       "sklearn.metrics.average_precision_score"),
    _m("log_loss", BINARY, False,
       "mean of -[y log p + (1 - y) log(1 - p)] with p and 1 - p clipped to [eps, 1 - eps], eps = 2.22e-16 "
       "(float64 machine epsilon, as scikit-learn; float32 / float16 scores use their own epsilon, as scikit-learn). "
       "Undefined for an empty slice.",
       "sklearn.metrics.log_loss(labels=[0, 1])", _NONNEG),
    _m("brier", BINARY, False,
       "mean of (p - y)^2. Undefined for an empty slice.",
       "sklearn.metrics.brier_score_loss"),
    _m("ece", BINARY, False,
       "expected calibration error with `ece_bins` equal-width bins on [0, 1]: edges = numpy.linspace(0, 1, B + 1), "
       "a score s goes to bin searchsorted(edges, s, 'right') - 1 clipped to [0, B - 1] (so 1.0 is in the last bin); "
       "ECE = sum_b (n_b / n) |mean(y)_b - mean(p)_b| = (1/n) sum_b |sum(y)_b - sum(p)_b|; empty bins contribute 0. "
       "Undefined for an empty slice.",
       "reference implementation in tests (no scikit-learn equivalent)"),
    # --- multiclass
    _m("macro_f1", MULTICLASS, True,
       "unweighted mean over classes present in labels or predictions of 2 tp_k / (2 tp_k + fp_k + fn_k); "
       "prediction = argmax of the probability columns (first maximum on ties). From exact confusion counts.",
       "sklearn.metrics.f1_score(average='macro')"),
    _m("micro_f1", MULTICLASS, True,
       "2 sum tp / (2 sum tp + sum fp + sum fn) over classes (equals accuracy for single-label data).",
       "sklearn.metrics.f1_score(average='micro')"),
    _m("weighted_f1", MULTICLASS, True,
       "per-class F1 averaged with weights = true support of each class. From exact confusion counts.",
       "sklearn.metrics.f1_score(average='weighted')"),
    _m("top_k_accuracy", MULTICLASS, True,
       "share of rows whose label is among the `top_k` highest-probability classes; ties broken as scikit-learn "
       "(stable sort, the higher class index wins).",
       "sklearn.metrics.top_k_accuracy_score(labels=classes)"),
    # --- regression: from sums over rows (in a canonical order, so results do not depend on row order)
    _m("mae", REGRESSION, False, "mean |prediction - label|.", "sklearn.metrics.mean_absolute_error", _NONNEG),
    _m("rmse", REGRESSION, False, "sqrt(mean (prediction - label)^2).", "sklearn.metrics.root_mean_squared_error",
       _NONNEG),
    _m("r2", REGRESSION, True,
       "1 - sum (y - p)^2 / sum (y - mean y)^2. Undefined when the slice has fewer than 2 rows or a constant label "
       "(scikit-learn then returns 1.0 or 0.0 by convention).",
       "sklearn.metrics.r2_score", (float("-inf"), 1.0)),
    _m("mape", REGRESSION, False,
       "mean |p - y| / max(|y|, eps), eps = 2.22e-16, as a fraction (not percent), as scikit-learn.",
       "sklearn.metrics.mean_absolute_percentage_error", _NONNEG),
    _m("mean_error", REGRESSION, False,
       "mean (prediction - label): the bias; positive = over-prediction. Gates treat smaller as better; use an "
       "absolute gate with min and max for a two-sided bound.",
       "numpy.mean(pred - y)", (float("-inf"), float("inf"))),
]

# --- ranking: per-query values averaged over queries (.ranking); the cutoff k is part of the name, e.g. ndcg@10
RANKING_METRIC = re.compile(r"^(ndcg|map|mrr|recall|precision)(?:@([1-9][0-9]{0,5}))?$")
RANKING_SYNTAX = ("ndcg@K, map@K, mrr, mrr@K, recall@K, precision@K (K a whole number >= 1; ndcg and map without @K "
                  "use the whole list)")
_RANKING = {
    "ndcg": ("NDCG@k per query, averaged over queries: DCG@k / IDCG@k, gain = label (linear), discount "
             "1 / log2(position + 1), tied scores averaged (expected value over their orderings). A query whose "
             "labels are all 0 is skipped (ranking.no_relevant: skip) or counts 0 (zero, as scikit-learn).",
             "sklearn.metrics.ndcg_score per query (ignore_ties=False)"),
    "map": ("AP@k per query, averaged: (1 / min(k, R)) sum of precision@i over relevant documents at positions "
            "i <= k (R = relevant documents of the query, relevant = label >= ranking.relevance_min); ties averaged.",
            "reference implementation in tests (denominator min(k, R), not trec_eval map_cut's R)"),
    "mrr": ("1 / position of the first relevant document (0 if none in the top k), averaged over queries; ties "
            "averaged.", "reference implementation in tests"),
    "recall": ("relevant documents in the top k / R, averaged over queries; ties averaged.",
               "reference implementation in tests"),
    "precision": ("relevant documents in the top k / k (TREC P@k), averaged over queries; ties averaged.",
                  "reference implementation in tests"),
}


def ranking_metric(name: str) -> tuple[str, int | None] | None:
    """(base, k) of a ranking metric name such as ``ndcg@10`` or ``mrr`` (k None: the whole list), or None."""
    m = RANKING_METRIC.match(name) if isinstance(name, str) else None
    if m is None or (m.group(2) is None and m.group(1) in ("recall", "precision")):
        return None
    return m.group(1), None if m.group(2) is None else int(m.group(2))


def _ranking_info(name: str) -> MetricInfo | None:
    parsed = ranking_metric(name)
    if parsed is None:
        return None
    base, k = parsed
    desc, ref = _RANKING[base]
    return MetricInfo(name, (RANKING,), True, desc if k is None else f"(k = {k}) {desc}", ref)


class _Catalogue(dict):
    """The metrics by name; ranking names with any cutoff (``ndcg@5``) resolve on lookup, the defaults are listed."""

    def __missing__(self, name):
        info = _ranking_info(name)
        if info is None:
            raise KeyError(name)
        return info

    def __contains__(self, name):
        return dict.__contains__(self, name) or _ranking_info(name) is not None

    def get(self, name, default=None):
        return self[name] if name in self else default


_LIST += [_ranking_info(n) for n in ("ndcg@10", "map@10", "mrr", "recall@10", "precision@10")]
METRICS: dict[str, MetricInfo] = _Catalogue({m.name: m for m in _LIST})


def metrics_for(task_type: str) -> list[str]:
    """The catalogue's metrics of a task type (ranking: its default names; any cutoff is allowed, see
    :func:`is_metric_for`)."""
    return [m.name for m in _LIST if task_type in m.task_types]


def is_metric_for(name: str, task_type: str) -> bool:
    return name in METRICS and task_type in METRICS[name].task_types


def metric_syntax(task_type: str) -> str:
    """The valid metric names of a task type, as an error message shows them."""
    names = metrics_for(task_type)
    return f"{names} or any of {RANKING_SYNTAX}" if task_type == RANKING else str(names)
