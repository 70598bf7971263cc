"""``evaluate``: stream batches through the accumulator, then compute exact metrics and paired bootstrap intervals.

Intervals: percentile intervals of ``n_boot`` Poisson-bootstrap replicates at level ``confidence`` (see
:mod:`.bootstrap`, :mod:`.binary`, :mod:`.multiclass`, :mod:`.regression` for what each replicate resamples).
Deltas are ``candidate - baseline`` computed replicate by replicate on the *same* resample (joint cells of the
two models), so their interval reflects the paired uncertainty. ``p_value`` of a delta is the two-sided bootstrap
p-value of "delta = 0": ``min(1, 2 * min(1 + #{d* <= 0}, 1 + #{d* >= 0}) / (B + 1))``.
"""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import spill
from .accumulate import Combiner, CombinerConfig
from .binary import BinaryFamily
from .binary_cells import score_grid
from .bootstrap import percentile_ci
from .catalogue import BINARY, METRICS, MULTICLASS, RANKING, REGRESSION, is_metric_for, metric_syntax
from .columns import as_batch_list, n_rows
from .config import SliceConfig
from .errors import EngineInputError
from .multiclass import MulticlassFamily
from .ranking import NO_RELEVANT, RankingFamily
from .regression import RegressionFamily
from .slices import build_slices, slice_columns, validate_config
from .storage import MemoryStorage

FAMILIES = {BINARY: BinaryFamily(), MULTICLASS: MulticlassFamily(), REGRESSION: RegressionFamily(),
            RANKING: RankingFamily()}


def _f(x):
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


@dataclass
class EvaluationResult:
    task_type: str
    n_rows: int
    threshold: float | None
    confidence: float
    n_boot: int
    seed: int
    metrics: list
    roles: list
    baseline: str | None
    candidate: str | None
    slices: list  # list of dicts (JSON shape)
    warnings: list
    replicates: dict = field(default_factory=dict, repr=False)  # (slice, role|"delta", metric) -> array (B,)

    def to_dict(self) -> dict:
        return {
            "task_type": self.task_type, "n_rows": self.n_rows, "threshold": self.threshold,
            "confidence": self.confidence, "n_boot": self.n_boot, "seed": self.seed, "bootstrap": "poisson",
            "metrics": list(self.metrics), "roles": list(self.roles), "baseline": self.baseline,
            "candidate": self.candidate, "slices": self.slices, "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)


def _validate(task_type, label, predictions, metrics, threshold, classes, top_k, ece_bins, n_boot, confidence,
              baseline, candidate):
    if task_type not in FAMILIES:
        raise EngineInputError(f"task_type: expected one of {list(FAMILIES)}, got {task_type!r}")
    valid = metric_syntax(task_type)
    if not metrics:
        raise EngineInputError(f"metrics: expected a non-empty list; valid for {task_type}: {valid}")
    for m in metrics:
        if not is_metric_for(m, task_type):
            raise EngineInputError(f"metric '{m}' is not available for {task_type}; valid metrics: {valid}")
    if len(set(metrics)) != len(metrics):
        raise EngineInputError(f"metrics: duplicate names in {list(metrics)}")
    if not predictions:
        raise EngineInputError("predictions: expected a mapping role -> column name(s)")
    if task_type == MULTICLASS:
        if not classes or len(classes) < 2:
            raise EngineInputError("classes: multiclass evaluation needs the list of >= 2 classes")
        for r, cols in predictions.items():
            if isinstance(cols, str) or len(cols) != len(classes):
                raise EngineInputError(
                    f"predictions['{r}']: expected a list of {len(classes)} probability columns in classes order")
        if top_k < 1:
            raise EngineInputError(f"top_k: expected >= 1, got {top_k}")
    else:
        for r, c in predictions.items():
            if not isinstance(c, str):
                raise EngineInputError(f"predictions['{r}']: expected one column name, got {c!r}")
    if task_type == BINARY and not (0.0 < float(threshold) <= 1.0):
        raise EngineInputError(f"threshold: expected 0 < threshold <= 1, got {threshold}")
    if ece_bins < 1:
        raise EngineInputError(f"ece_bins: expected >= 1, got {ece_bins}")
    if n_boot < 0:
        raise EngineInputError(f"n_boot: expected >= 0, got {n_boot}")
    if not (0.0 < confidence < 1.0):
        raise EngineInputError(f"confidence: expected 0 < confidence < 1, got {confidence}")
    for name, r in (("baseline", baseline), ("candidate", candidate)):
        if r is not None and r not in predictions:
            raise EngineInputError(f"{name}: role '{r}' is not in predictions (roles: {list(predictions)})")


def _validate_ranking(task_type, query, relevance_min, no_relevant):
    if task_type != RANKING:
        return
    if not isinstance(query, str) or not query:
        raise EngineInputError("query: ranking needs the query id column (one row per query and document)")
    if not (math.isfinite(float(relevance_min)) and float(relevance_min) > 0):
        raise EngineInputError(f"relevance_min: expected a number > 0 (relevant = label >= it), got {relevance_min}")
    if no_relevant not in NO_RELEVANT:
        raise EngineInputError(f"no_relevant: expected one of {list(NO_RELEVANT)}, got {no_relevant!r}")


def _flag_interval(cell: dict, diag: dict | None) -> None:
    """Mark an interval the engine cannot vouch for (regression with heavy-tailed errors, see ``.regression``;
    near-perfect binary rankings with few labels of a class, see ``.binary``)."""
    if diag is not None and not diag.get("reliable", True):
        cell["interval_reliable"] = False
        cell["interval_warning"] = diag.get("reason")
        cell["interval_blocks"] = diag.get("blocks", "pass")  # which gate decisions it cannot support


def _size_status(n: int, n_pos: int | None, cfg: SliceConfig, unit: str = "rows") -> tuple[str, str | None]:
    """("ok", None) or ("too_small", why): rows below ``min_size``, or (binary) a class below its minimum."""
    if n < cfg.min_size:
        return "too_small", f"{n} {unit} < slices.min_size {cfg.min_size}"
    if n_pos is not None and n_pos < cfg.min_positives:
        return "too_small", f"{n_pos} positive labels < slices.min_positives {cfg.min_positives}"
    if n_pos is not None and n - n_pos < cfg.min_negatives:
        return "too_small", f"{n - n_pos} negative labels < slices.min_negatives {cfg.min_negatives}"
    return "ok", None


def _families(roles, baseline, candidate):
    if baseline is not None and candidate is not None and baseline != candidate:
        return [(baseline, candidate)] + [(r,) for r in roles if r not in (baseline, candidate)]
    return [(r,) for r in roles]


def make_combiner(*, task_type, label, predictions, slices: SliceConfig, threshold=0.5, classes=None, top_k=3,
                  ece_bins=10, baseline="baseline", candidate="candidate", spill_dir=None,
                  spill_rows=None, query=None, relevance_min=1.0, no_relevant="skip") -> Combiner:
    """The streaming combiner (create_accumulator / add_batch / merge_accumulators) for one evaluation.

    ``spill_dir`` / ``spill_rows`` (or the environment variables ``EVAL_ENGINE_SPILL_DIR`` /
    ``EVAL_ENGINE_SPILL_ROWS``): opt-in external-memory mode for binary tasks (:mod:`.spill`) — each accumulator
    writes its sorted score runs to a private temp directory under ``spill_dir`` (default: the system temp dir)
    once it holds ``spill_rows`` rows (default 2,000,000); results are bit-identical to the in-memory mode.
    :func:`evaluate_accumulator` removes the temp files."""
    validate_config(slices)
    roles = list(predictions)
    config = CombinerConfig(
        task_type=task_type, family=FAMILIES[task_type], label=label, roles=roles, pred_columns=dict(predictions),
        slice_columns=slice_columns(slices), bins={k: list(v) for k, v in dict(slices.bins).items()},
        threshold=float(threshold), classes=list(classes) if classes is not None else None, top_k=int(top_k),
        families=_families(roles, baseline, candidate), grid=score_grid(float(threshold), int(ece_bins)),
        ece_bins=int(ece_bins), query=query, relevance_min=float(relevance_min), no_relevant=no_relevant)
    if task_type == BINARY:
        config.storage = spill.resolve(spill_dir, spill_rows) or MemoryStorage()
    return Combiner(config)


def _cleanup(config: CombinerConfig) -> None:
    if config.storage is not None:
        config.storage.cleanup()


def evaluate(batches, *, task_type, label, predictions, slices: SliceConfig = SliceConfig(), metrics,
             threshold=0.5, classes=None, top_k=3, ece_bins=10, n_boot=1000, seed=0, confidence=0.95,
             baseline="baseline", candidate="candidate", workers=None, spill_dir=None,
             spill_rows=None, query=None, relevance_min=1.0, no_relevant="skip") -> EvaluationResult:
    """Evaluate one or more models (roles) on streamed batches: exact metrics per slice, paired bootstrap intervals.

    Parameters
    ----------
    batches : pandas.DataFrame, pyarrow.Table, pyarrow.RecordBatch or iterable of them
        The evaluation rows, streamed: batches are added to mergeable accumulators and never held together.
        Or a :class:`.shards.ShardedRows`: shards read and accumulated on a backend (a Dask cluster), then merged.
    task_type : {"binary_classification", "multiclass_classification", "regression", "ranking"}
    label : str
        The label column (binary: 0/1 or bool; multiclass: values in ``classes``; regression: numbers).
    predictions : mapping of str to str or list of str
        Role (e.g. ``"baseline"``, ``"candidate"``) -> its prediction column (binary: the positive-class
        probability; regression: the prediction), or for multiclass the list of probability columns in ``classes``
        order.
    slices : SliceConfig, default SliceConfig()
        Which slices besides ``overall``: single columns, crosses, binned numeric columns, minimum sizes.
    metrics : list of str
        Names from :data:`~eval_pipeline.engine.METRICS` valid for ``task_type``.
    threshold : float, default 0.5
        Binary: a row is predicted positive when its score >= threshold (in the score's own float precision).
    classes : list, optional
        Multiclass: the class labels, in the order of the probability columns.
    top_k : int, default 3
        Multiclass: k of ``top_k_accuracy``.
    ece_bins : int, default 10
        Equal-width bins of the expected calibration error.
    n_boot : int, default 1000
        Poisson-bootstrap replicates (0: point estimates only).
    seed : int, default 0
        Seed of the replicates; the result is a function of the data, the arguments and the seed only.
    confidence : float, default 0.95
        Level of the percentile intervals.
    baseline, candidate : str or None, default "baseline", "candidate"
        The roles compared: deltas are ``candidate - baseline`` on the same resamples (paired).
    workers : int, optional
        Accumulators consuming the batches on threads (default: min(2, CPUs)); the result does not depend on it.
    spill_dir, spill_rows : optional
        Opt-in external-memory mode for binary tasks (:mod:`.spill`; also ``EVAL_ENGINE_SPILL_DIR`` /
        ``EVAL_ENGINE_SPILL_ROWS``): bit-identical results with memory bounded independently of rows; temp files
        are removed at the end.
    query, relevance_min, no_relevant : ranking only (:mod:`.ranking`)
        The query id column; a document is relevant when its label >= ``relevance_min`` (default 1); queries
        without relevant documents are left out of the metrics they make undefined (``"skip"``) or count 0
        (``"zero"``). A slice's ``n`` counts queries.

    Returns
    -------
    EvaluationResult
        ``slices``: one dict per slice (``slice``, ``columns``, ``n``, ``n_positive``, ``status`` "ok" or
        "too_small", per role ``models[role][metric] = {"value", "ci", "undefined"}`` and ``delta[metric]`` with a
        ``p_value``); an undefined value is ``None`` with the reason in ``undefined``. ``to_json()`` gives the
        stored form; ``replicates`` the bootstrap replicates the gates use.

    Raises
    ------
    EngineInputError
        A bad argument or input column; the message names it and what was expected.

    Examples
    --------
    >>> import pandas as pd
    >>> from eval_pipeline.engine import SliceConfig, evaluate
    >>> df = pd.DataFrame({"y": [0, 1, 1, 0, 1, 0, 1, 0] * 25,
    ...                    "old": [0.2, 0.7, 0.4, 0.6, 0.8, 0.6, 0.3, 0.1] * 25,
    ...                    "new": [0.1, 0.8, 0.6, 0.3, 0.9, 0.4, 0.45, 0.2] * 25,
    ...                    "region": ["north", "south"] * 100})
    >>> result = evaluate(df, task_type="binary_classification", label="y",
    ...                   predictions={"baseline": "old", "candidate": "new"},
    ...                   slices=SliceConfig(columns=["region"], min_size=50),
    ...                   metrics=["accuracy", "roc_auc"], n_boot=200, seed=0)
    >>> [(s["slice"], s["n"], s["n_positive"], s["status"]) for s in result.slices]
    [('overall', 200, 100, 'ok'), ('region=north', 100, 75, 'ok'), ('region=south', 100, 25, 'ok')]
    >>> result.slices[0]["models"]["candidate"]["accuracy"]
    {'value': 0.875, 'ci': [0.834..., 0.914...], 'undefined': None}
    >>> result.slices[0]["delta"]["accuracy"]
    {'value': 0.375, 'ci': [0.302..., 0.439...], 'undefined': None, 'p_value': 0.00995...}
    """
    metrics = list(metrics)
    predictions = dict(predictions)
    # None means "the default" (callers pass spec fields that only apply to some task types)
    threshold = 0.5 if threshold is None else threshold
    top_k = 3 if top_k is None else top_k
    ece_bins = 10 if ece_bins is None else ece_bins
    n_boot = 1000 if n_boot is None else n_boot
    seed = 0 if seed is None else seed
    confidence = 0.95 if confidence is None else confidence
    _validate(task_type, label, predictions, metrics, threshold, classes, top_k, ece_bins, n_boot, confidence,
              baseline, candidate)
    _validate_ranking(task_type, query, relevance_min, no_relevant)
    comb = make_combiner(task_type=task_type, label=label, predictions=predictions, slices=slices,
                         threshold=threshold, classes=classes, top_k=top_k, ece_bins=ece_bins, baseline=baseline,
                         candidate=candidate, spill_dir=spill_dir, spill_rows=spill_rows, query=query,
                         relevance_min=relevance_min, no_relevant=no_relevant)
    try:
        if hasattr(batches, "accumulate"):  # rows in shards on a backend (.shards.ShardedRows)
            acc = batches.accumulate(comb)
        else:
            acc = _consume(comb, as_batch_list(batches), workers)
        res = evaluate_accumulator(comb, acc, slices=slices, metrics=metrics, n_boot=n_boot, seed=seed,
                                   confidence=confidence)
    finally:
        _cleanup(comb.config)
    if res.baseline is None and res.candidate is None and candidate in predictions:
        res.candidate = candidate
    return res


def _consume(comb, batches, workers):
    workers = workers or min(2, os.cpu_count() or 1)
    if workers <= 1:
        acc = comb.create_accumulator()
        off = 0
        for b in batches:
            comb.add_batch(acc, b, off)
            off += n_rows(b)
        return acc
    accs = [comb.create_accumulator() for _ in range(workers)]
    pools = [ThreadPoolExecutor(max_workers=1) for _ in range(workers)]
    pending = [None] * workers
    try:
        off = 0
        for i, b in enumerate(batches):
            w = i % workers
            if pending[w] is not None:
                pending[w].result()  # bounded: at most one batch in flight per worker
            pending[w] = pools[w].submit(comb.add_batch, accs[w], b, off)
            off += n_rows(b)
        for f in pending:
            if f is not None:
                f.result()
    finally:
        for p in pools:
            p.shutdown(wait=True, cancel_futures=True)
    return comb.merge_accumulators(accs)


def evaluate_accumulator(comb: Combiner, acc, *, slices, metrics, n_boot=1000, seed=0, confidence=0.95,
                         ece_bins=None) -> EvaluationResult:
    """The ``extract`` step: metrics and intervals from a (merged) accumulator. It consumes the accumulator.
    The threshold, ECE bins and the baseline/candidate pairing are fixed by :func:`make_combiner`."""
    config = comb.config
    if ece_bins is not None and int(ece_bins) != config.ece_bins:
        raise EngineInputError(f"ece_bins: the combiner was made with {config.ece_bins}, got {ece_bins}")
    ece_bins = config.ece_bins
    fam0 = config.families[0] if config.families else ()
    baseline, candidate = (fam0[0], fam0[1]) if len(fam0) == 2 else (None, None)
    if len(config.roles) == 1:
        candidate = config.roles[0]
    bad = [m for m in metrics if not is_metric_for(m, config.task_type)]
    if bad:
        raise EngineInputError(f"metric '{bad[0]}' is not available for {config.task_type}; "
                               f"valid metrics: {metric_syntax(config.task_type)}")
    try:
        return _extract(comb, acc, config, slices, metrics, n_boot, seed, confidence, ece_bins, baseline, candidate)
    finally:
        _cleanup(config)


def _extract(comb, acc, config, slices, metrics, n_boot, seed, confidence, ece_bins, baseline, candidate):
    merged = comb.finish(acc)
    sdefs, warnings = build_slices(merged, slices)
    roles = config.roles
    paired = baseline is not None and candidate is not None and baseline != candidate
    families = config.families
    role_family = {r: i for i, f in enumerate(families) for r in f}
    kw = dict(metrics=metrics, n_boot=n_boot, seed=seed, families=families, role_family=role_family)
    out = config.family.compute(merged, sdefs, **kw)
    warnings += out.get("warnings", [])  # what the family wants the reader to know (ranking: skipped queries)

    B = n_boot
    for r in out["reps"]:  # replicates stay inside the metric's range (recentring could push them out)
        for m, rep in out["reps"][r].items():
            lo, hi = METRICS[m].range
            np.clip(rep, lo, hi, out=rep)
    ci_all = {}  # (role, metric) -> (lo, hi) arrays over slices, computed in one vectorised call
    if B:
        for r in roles:
            for m in metrics:
                rep = out["reps"].get(r, {}).get(m)
                if rep is not None:
                    ci_all[(r, m)] = percentile_ci(rep, confidence)
    slices_out, replicates = [], {}
    for j, sd in enumerate(sdefs):
        n = int(out["n"][j])
        n_pos = int(out["n_positive"][j]) if out.get("n_positive") is not None else None
        status, why_small = _size_status(n, n_pos, slices, "queries" if config.task_type == RANKING else "rows")
        entry = {"slice": sd.name, "columns": dict(sd.columns), "n": n, "n_positive": n_pos,
                 "status": status, "models": {}, "delta": {}}
        if why_small:
            entry["too_small"] = why_small
        diag = out.get("diagnostics", {}).get(j, {})  # intervals the engine flags (heavy tails, near-perfect)
        if status == "ok":
            for r in roles:
                md = {}
                for m in metrics:
                    v = out["values"][r][m][j]
                    reason = out["reasons"][r][m][j]
                    ci = None
                    rep = out["reps"].get(r, {}).get(m) if B else None
                    if rep is not None and reason is None:
                        replicates[(sd.name, r, m)] = rep[:, j]
                        lo, hi = ci_all[(r, m)][0][j], ci_all[(r, m)][1][j]
                        ci = [_f(lo), _f(hi)] if _f(lo) is not None else None
                    md[m] = {"value": _f(v) if reason is None else None, "ci": ci, "undefined": reason}
                    _flag_interval(md[m], diag.get("models", {}).get(r, {}).get(m))
                entry["models"][r] = md
            if paired:
                for m in metrics:
                    rb, rc = out["reasons"][baseline][m][j], out["reasons"][candidate][m][j]
                    if rb or rc:
                        why = "; ".join(f"{k}: {w}" for k, w in (("baseline", rb), ("candidate", rc)) if w)
                        entry["delta"][m] = {"value": None, "ci": None, "undefined": why, "p_value": None}
                        continue
                    d = out["values"][candidate][m][j] - out["values"][baseline][m][j]
                    ci, p = None, None
                    if B and m in out["reps"].get(candidate, {}):
                        dr = out["reps"][candidate][m][:, j] - out["reps"][baseline][m][:, j]
                        replicates[(sd.name, "delta", m)] = dr
                        lo, hi = percentile_ci(dr, confidence)
                        ci = [_f(lo), _f(hi)] if _f(lo) is not None else None
                        ok = dr[~np.isnan(dr)]
                        if ok.size:
                            k = 1 + min(int(np.sum(ok <= 0)), int(np.sum(ok >= 0)))
                            p = min(1.0, 2.0 * k / (ok.size + 1))
                    entry["delta"][m] = {"value": _f(d), "ci": ci, "undefined": None, "p_value": p}
                    _flag_interval(entry["delta"][m], diag.get("delta", {}).get(m))
        slices_out.append(entry)
    return EvaluationResult(
        task_type=config.task_type, n_rows=int(merged.n_rows),
        threshold=float(config.threshold) if config.task_type == BINARY else None, confidence=float(confidence),
        n_boot=int(n_boot), seed=int(seed), metrics=list(metrics), roles=list(roles),
        baseline=baseline if paired or baseline in roles else None,
        candidate=candidate if paired or candidate in roles else None,
        slices=slices_out, warnings=warnings, replicates=replicates)
