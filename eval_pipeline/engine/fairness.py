"""Fairness: per-group selection rate, true and false positive rates, and the disparities between groups, with
Poisson-bootstrap intervals paired across the baseline and the candidate.

Groups are the distinct values of the sensitive column (with several columns: every combination present in the data,
the intersectional groups fairlearn forms from several sensitive features); nulls form the value ``null``. The
columns need not be model features.

Sufficient statistic. Per group, the counts of rows in each cell (label, prediction of every role), prediction =
score >= threshold in the score's own float precision (as :mod:`.binary`). With two roles that is 8 cells per group:
(y, baseline predicts positive, candidate predicts positive). The accumulator is a dict group -> cell counts, so
:class:`FairnessCombiner` is mergeable (create / add / merge / finish, sums of integers: associative, commutative,
bit-identical whatever the chunking) and its memory is O(groups), independent of rows.

Per group and role (exact, from integer counts; the same arithmetic as fairlearn's ``selection_rate``,
``true_positive_rate``, ``false_positive_rate``):

- ``selection_rate`` = rows predicted positive / rows;
- ``true_positive_rate`` = tp / positives (undefined without positives);
- ``false_positive_rate`` = fp / negatives (undefined without negatives).

Disparities over the *eligible* groups (``n >= min_group_size``, the engine's ``slices.min_size`` rule: smaller groups
are reported with their counts and status ``too_small`` and left out of every disparity), exactly as fairlearn 0.15
defines them with ``method='between_groups'`` and ``agg='worst_case'``:

- ``demographic_parity_difference`` = max - min of the selection rate; ``demographic_parity_ratio`` = min / max;
- ``equal_opportunity_difference`` = max - min of the TPR; ``equal_opportunity_ratio`` = min / max;
- ``equalized_odds_difference`` = the larger of the TPR and FPR differences; ``equalized_odds_ratio`` = the
  smaller of the TPR and FPR ratios.

A disparity is undefined (``None`` with the reason, never 0) when fewer than two groups are eligible, when an
eligible group lacks the rate it needs (no positives for TPR, no negatives for FPR; fairlearn would silently use 0
there) or a ratio's largest rate is 0.

Bootstrap. With i.i.d. Poisson(1) row weights the weighted count of a cell is exactly Poisson(count), independently
across cells, so a replicate draws the cell counts of the eligible groups (:func:`.bootstrap.poisson_cells`, seeded
per block on its own stream ``FAIRNESS_STREAM``) and recomputes every rate and disparity from them. The cells are
joint over the roles, so the candidate's and the baseline's replicates come from the same resample and the delta
(candidate - baseline) is paired. Intervals are percentile intervals of the replicates (not recentred: the max - min
of noisy rates is biased upwards when the groups are truly equal, so an interval of a near-zero difference sits a
little above 0); a replicate where a rate is 0/0 is NaN and the gates drop it (see :mod:`.gates`).

Gates. :func:`gate_slice` turns the disparities into a slice entry of the evaluation result's shape, with replicates,
so :func:`.gates.apply_gates` decides fairness gates with the same tri-state rule and in the same multiplicity family
as every other gate (:func:`with_fairness`). The differences are "lower is better", the ratios "higher is better"
(:data:`FAIRNESS_METRICS`): a ``non_inferiority`` gate with margin m on a difference PASSes when the upper bound of
``candidate - baseline`` is <= m ("no worse than the champion's disparity + m"), an ``absolute`` gate with ``max``
when the upper bound of the candidate's disparity is <= max.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .accumulate import value_label, value_sort_key
from .bootstrap import block_rng, percentile_ci, poisson_cells, run_blocks
from .catalogue import BINARY, MetricInfo
from .columns import codes_and_uniques, column, float_array, float_bits, raise_bad, check_probabilities
from .errors import EngineInputError

FAIRNESS_STREAM = 9_001  # the seed stream of fairness replicates (the metric families use 0, 1, ...)
GROUP_RATES = ("selection_rate", "true_positive_rate", "false_positive_rate")
_REF = "fairlearn.metrics.{}(y_true, y_pred, sensitive_features=..., method='between_groups')"


def _fm(name, hib, desc):
    return MetricInfo(name, (BINARY,), hib, desc, _REF.format(name))


_LIST = [
    _fm("demographic_parity_difference", False, "max - min over the eligible groups of the selection rate"),
    _fm("demographic_parity_ratio", True, "min / max over the eligible groups of the selection rate"),
    _fm("equalized_odds_difference", False,
        "max(TPR difference, FPR difference), each max - min over the eligible groups"),
    _fm("equalized_odds_ratio", True, "min(TPR ratio, FPR ratio), each min / max over the eligible groups"),
    _fm("equal_opportunity_difference", False, "max - min over the eligible groups of the true positive rate"),
    _fm("equal_opportunity_ratio", True, "min / max over the eligible groups of the true positive rate"),
]
FAIRNESS_METRICS: dict[str, MetricInfo] = {m.name: m for m in _LIST}
# the group rates each disparity is computed from
_NEEDS = {"demographic_parity": ("selection_rate",), "equal_opportunity": ("true_positive_rate",),
          "equalized_odds": ("true_positive_rate", "false_positive_rate")}


def _needs(metric: str) -> tuple[str, ...]:
    return _NEEDS[metric.rsplit("_", 1)[0]]


# ---------------------------------------------------------------------------------------------------- accumulate

@dataclass
class FairnessCounts:
    """The finished accumulator: groups in canonical order and their cell counts ``(groups, 2 ** (1 + roles))``."""

    sensitive: list
    roles: list
    groups: list  # tuples of values, one per sensitive column (None = null)
    counts: np.ndarray  # int64

    def labels(self) -> list[str]:
        return [" & ".join(f"{c}={value_label(v)}" for c, v in zip(self.sensitive, g)) for g in self.groups]


class FairnessCombiner:
    """Mergeable per-group counts: ``create_accumulator`` / ``add_batch`` / ``merge_accumulators`` / ``finish``.

    Cell index of a row: ``y * 2**R + sum_r pred_r * 2**(R - 1 - r)`` over the ``R`` roles in ``predictions`` order.
    """

    def __init__(self, *, label: str, predictions: dict, sensitive, threshold: float = 0.5):
        sensitive = list(sensitive)
        if not sensitive or len(set(sensitive)) != len(sensitive):
            raise EngineInputError(f"fairness.sensitive: expected one or more distinct columns, got {sensitive!r}")
        if not predictions or not all(isinstance(c, str) for c in predictions.values()):
            raise EngineInputError("predictions: expected a mapping role -> one score column (binary)")
        if not 0.0 < float(threshold) <= 1.0:
            raise EngineInputError(f"threshold: expected 0 < threshold <= 1, got {threshold}")
        self.label, self.sensitive, self.threshold = label, sensitive, float(threshold)
        self.roles, self.pred_columns = list(predictions), dict(predictions)
        self.n_cells = 2 ** (1 + len(self.roles))

    def create_accumulator(self) -> dict:
        return {}

    def _cells(self, batch, offset: int) -> np.ndarray:
        y = float_array(column(batch, self.label), self.label, offset)
        bad = ~((y == 0) | (y == 1))
        if bad.any():
            raise_bad(self.label, "binary labels 0/1 (or bool)", bad, y, offset)
        R = len(self.roles)
        cell = y.astype(np.int64) << R
        for r, role in enumerate(self.roles):
            name = self.pred_columns[role]
            col = column(batch, name)
            p = float_array(col, name, offset)
            check_probabilities(p, name, offset, role, "scores")
            ftype = {16: np.float16, 32: np.float32}.get(float_bits(col), np.float64)
            # compared in the scores' own precision, like the binary family (float32 scores vs float32(threshold))
            cell |= (p.astype(ftype) >= ftype(self.threshold)).astype(np.int64) << (R - 1 - r)
        return cell

    def add_batch(self, acc: dict, batch, offset: int = 0) -> dict:
        cell = self._cells(batch, offset)
        codes, uniques = zip(*(codes_and_uniques(column(batch, c)) for c in self.sensitive))
        # one mixed-radix integer per row: (code of each column + 1, 0 = null) then the cell; counted with bincount
        # when the key space is small (the usual case), else by sorting (np.unique is ~20x slower on 2-d rows)
        radix = [len(u) + 1 for u in uniques] + [self.n_cells]
        key = np.zeros(cell.size, dtype=np.int64)
        for digit, r in zip([np.asarray(k, dtype=np.int64) + 1 for k in codes] + [cell], radix):
            key = key * r + digit
        space = int(np.prod(radix, dtype=object))
        if space <= max(4 * cell.size, 1 << 16):
            tally = np.bincount(key, minlength=space)
            keys = np.flatnonzero(tally)
            counts = tally[keys]
        elif space < 1 << 62:
            keys, counts = np.unique(key, return_counts=True)
        else:
            raise EngineInputError(f"fairness.sensitive {self.sensitive}: too many combinations of values in one "
                                   f"batch ({space:.3g}); use fewer or coarser group columns")
        for kk, n in zip(keys.tolist(), counts.tolist()):
            kk, c = divmod(kk, self.n_cells)
            digits = []
            for r in reversed(radix[:-1]):
                kk, d = divmod(kk, r)
                digits.append(d - 1)
            group = tuple(None if code < 0 else _plain(uniques[j][code]) for j, code in enumerate(reversed(digits)))
            acc.setdefault(group, np.zeros(self.n_cells, dtype=np.int64))[c] += n
        return acc

    def merge_accumulators(self, accs) -> dict:
        out: dict = {}
        for acc in accs:
            for group, c in acc.items():
                if group in out:
                    out[group] = out[group] + c
                else:
                    out[group] = c.copy()
        return out

    def finish(self, acc: dict) -> FairnessCounts:
        groups = sorted(acc, key=lambda g: tuple(value_sort_key(v) for v in g))
        counts = (np.stack([acc[g] for g in groups]) if groups
                  else np.zeros((0, self.n_cells), dtype=np.int64))
        return FairnessCounts(list(self.sensitive), list(self.roles), groups, counts)


def _plain(v):
    """A python scalar (numpy scalars from pandas, floats that are integers stay as they came)."""
    return v.item() if hasattr(v, "item") else v


# ---------------------------------------------------------------------------------------------------- rates

def _cell_bits(n_cells: int, n_roles: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(n_cells)
    return (c >> n_roles) & 1, (c >> (n_roles - 1 - r)) & 1


def group_rates(W: np.ndarray, n_roles: int, r: int) -> dict:
    """Selection rate, TPR and FPR of role index ``r`` from cell weights ``W`` of shape (groups, cells, ...);
    0/0 gives NaN (undefined)."""
    y, pred = _cell_bits(W.shape[1], n_roles, r)
    n = W.sum(axis=1)
    pos = W[:, y == 1].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"selection_rate": W[:, pred == 1].sum(axis=1) / n,
                "true_positive_rate": W[:, (y == 1) & (pred == 1)].sum(axis=1) / pos,
                "false_positive_rate": W[:, (y == 0) & (pred == 1)].sum(axis=1) / (n - pos)}


def _difference(x):
    return np.max(x, axis=0) - np.min(x, axis=0)  # NaN in, NaN out: an undefined group rate is not skipped


def _ratio(x):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.min(x, axis=0) / np.max(x, axis=0)


def disparities(rates: dict, metrics) -> dict:
    """Each disparity of ``metrics`` from the eligible groups' rates (arrays of shape (groups, ...))."""
    out = {}
    for m in metrics:
        agg = _difference if m.endswith("_difference") else _ratio
        parts = [agg(rates[k]) for k in _needs(m)]
        if len(parts) == 1:
            out[m] = parts[0]
        else:  # equalized odds, worst case: the larger difference, the smaller ratio
            out[m] = np.maximum(*parts) if m.endswith("_difference") else np.minimum(*parts)
    return out


def _undefined_reason(metric, labels, rates, n_eligible) -> str | None:
    if n_eligible < 2:
        return f"{n_eligible} group(s) with >= min_group_size rows; a disparity needs 2"
    for k in _needs(metric):
        bad = [lab for lab, v in zip(labels, rates[k]) if np.isnan(v)]
        if bad:
            what = "positive" if k == "true_positive_rate" else "negative"
            return f"group {bad[0]} has no {what} labels ({k} undefined)"
    return None


# ---------------------------------------------------------------------------------------------------- result

@dataclass
class FairnessResult:
    sensitive: list
    metrics: list
    roles: list
    baseline: str | None
    candidate: str | None
    min_group_size: int
    n_boot: int
    seed: int
    confidence: float
    groups: list  # dicts: group, values, n, n_positive, status, models[role][rate]
    disparities: dict  # models[role][metric] = {value, ci, undefined}; delta[metric] = {..., p_value}
    status: str  # "ok" or "too_small" (fewer than 2 eligible groups)
    too_small: str | None
    n_eligible_rows: int
    replicates: dict = field(default_factory=dict, repr=False)  # (role | "delta", metric) -> (B,)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        del d["replicates"]
        return d

    @property
    def slice_name(self) -> str:
        return slice_name(self.sensitive)


def slice_name(sensitive) -> str:
    """The gate-row slice of a fairness evaluation, e.g. ``fairness by age x religious``."""
    return "fairness by " + " x ".join(sensitive)


def _f(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) or np.isinf(x) else x


def _cell(value, reps, confidence, reason) -> dict:
    ci = None
    if reason is None and reps is not None and np.isfinite(reps).any():
        lo, hi = percentile_ci(reps, confidence)
        ci = [_f(lo), _f(hi)]
    return {"value": None if reason else _f(value), "ci": ci, "undefined": reason}


def _draw(counts: np.ndarray, n_roles: int, metrics, n_boot: int, seed: int):
    """Bootstrap replicates of every eligible group's rates and every disparity, per role: dicts of (..., B)."""
    G, C = counts.shape
    flat = counts.reshape(-1)

    def block(i, size):
        W = poisson_cells(block_rng(seed, FAIRNESS_STREAM, i), flat, size).reshape(G, C, size)
        out = []
        for r in range(n_roles):
            rates = group_rates(W, n_roles, r)
            out.append((rates, disparities(rates, metrics)))
        return out

    blocks = run_blocks(n_boot, block)
    per_role = []
    for r in range(n_roles):
        rates = {k: np.concatenate([b[r][0][k] for b in blocks], axis=-1) for k in GROUP_RATES}
        disp = {m: np.concatenate([b[r][1][m] for b in blocks], axis=-1) for m in metrics}
        per_role.append((rates, disp))
    return per_role


def evaluate_fairness(counts: FairnessCounts, *, metrics=None, min_group_size: int = 100, n_boot: int = 1000,
                      seed: int = 0, confidence: float = 0.95, baseline: str | None = "baseline",
                      candidate: str | None = "candidate") -> FairnessResult:
    """Per-group rates and disparities of the finished counts, with percentile intervals and paired deltas.

    ``metrics``: names from :data:`FAIRNESS_METRICS` (default all). ``min_group_size``: groups with fewer rows are
    ``too_small`` and left out of the disparities. ``baseline`` / ``candidate``: roles of the counts; the delta is
    ``candidate - baseline`` on the same resamples (only when both are roles).
    """
    metrics = list(metrics) if metrics else list(FAIRNESS_METRICS)
    bad = [m for m in metrics if m not in FAIRNESS_METRICS]
    if bad:
        raise EngineInputError(f"fairness.metrics: unknown {bad}; expected some of {list(FAIRNESS_METRICS)}")
    if not 0.0 < confidence < 1.0 or n_boot < 0 or min_group_size < 1:
        raise EngineInputError("fairness: expected 0 < confidence < 1, n_boot >= 0 and min_group_size >= 1")
    roles, R = counts.roles, len(counts.roles)
    labels = counts.labels()
    n = counts.counts.sum(axis=1)
    eligible = n >= min_group_size
    elig_counts = counts.counts[eligible]
    elig_labels = [lab for lab, e in zip(labels, eligible) if e]
    point = [group_rates(counts.counts.astype(np.float64), R, r) for r in range(R)]
    reps = _draw(elig_counts, R, metrics, n_boot, seed) if n_boot and elig_counts.shape[0] else None
    paired = baseline in roles and candidate in roles and baseline != candidate
    groups = _group_entries(counts, labels, n, eligible, point, reps, confidence, min_group_size)
    disp = {"models": {}, "delta": {}}
    replicates, values, reasons = {}, {}, {}
    for r, role in enumerate(roles):
        elig_rates = {k: v[eligible] for k, v in point[r].items()}
        values[role] = disparities(elig_rates, metrics)
        disp["models"][role] = {}
        for m in metrics:
            reasons[(role, m)] = _undefined_reason(m, elig_labels, elig_rates, int(eligible.sum()))
            rep = reps[r][1][m] if reps else None
            if rep is not None and reasons[(role, m)] is None:
                replicates[(role, m)] = rep
            disp["models"][role][m] = _cell(values[role][m], rep, confidence, reasons[(role, m)])
    if paired:
        b, c = roles.index(baseline), roles.index(candidate)
        for m in metrics:
            why = "; ".join(f"{k}: {w}" for k, w in (("baseline", reasons[(baseline, m)]),
                                                      ("candidate", reasons[(candidate, m)])) if w) or None
            dr = reps[c][1][m] - reps[b][1][m] if reps and why is None else None
            entry = _cell(values[candidate][m] - values[baseline][m], dr, confidence, why)
            entry["p_value"] = _p_value(dr) if dr is not None else None
            if dr is not None:
                replicates[("delta", m)] = dr
            disp["delta"][m] = entry
    n_elig = int(eligible.sum())
    too_small = None if n_elig >= 2 else (f"{n_elig} of {len(labels)} groups have >= min_group_size "
                                          f"({min_group_size}) rows; a disparity needs 2")
    return FairnessResult(
        sensitive=list(counts.sensitive), metrics=metrics, roles=list(roles),
        baseline=baseline if paired else None, candidate=candidate if candidate in roles else None,
        min_group_size=int(min_group_size), n_boot=int(n_boot), seed=int(seed), confidence=float(confidence),
        groups=groups, disparities=disp, status="ok" if too_small is None else "too_small", too_small=too_small,
        n_eligible_rows=int(n[eligible].sum()), replicates=replicates)


def _p_value(dr: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value of "delta = 0", as :mod:`.evaluate`."""
    ok = dr[~np.isnan(dr)]
    if not ok.size:
        return None
    k = 1 + min(int(np.sum(ok <= 0)), int(np.sum(ok >= 0)))
    return min(1.0, 2.0 * k / (ok.size + 1))


def _group_entries(counts, labels, n, eligible, point, reps, confidence, min_group_size) -> list:
    R = len(counts.roles)
    y, _ = _cell_bits(counts.counts.shape[1], R, 0)
    n_pos = counts.counts[:, y == 1].sum(axis=1)
    out, j = [], 0  # j: index among eligible groups (the replicates' rows)
    for g, (lab, values) in enumerate(zip(labels, counts.groups)):
        entry = {"group": lab, "values": {c: value_label(v) for c, v in zip(counts.sensitive, values)},
                 "n": int(n[g]), "n_positive": int(n_pos[g]),
                 "status": "ok" if eligible[g] else "too_small", "models": {}}
        if not eligible[g]:
            entry["too_small"] = f"{int(n[g])} rows < min_group_size {min_group_size}"
        for r, role in enumerate(counts.roles):
            cells = {}
            for k in GROUP_RATES:
                v = point[r][k][g]
                reason = None if not np.isnan(v) else ("no positive labels" if k == "true_positive_rate" else
                                                       "no negative labels" if k == "false_positive_rate" else
                                                       "no rows")
                rep = reps[r][0][k][j] if (reps and eligible[g]) else None
                cells[k] = _cell(v, rep, confidence, reason)
            entry["models"][role] = cells
        j += int(eligible[g])
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------------- gates

def gate_slice(fr: FairnessResult) -> tuple[dict, dict]:
    """The disparities as one slice entry of an evaluation result (marked ``"fairness": True``) and its
    replicates keyed like :attr:`.evaluate.EvaluationResult.replicates`, for :func:`.gates.apply_gates`."""
    name = fr.slice_name
    entry = {"slice": name, "columns": {}, "n": fr.n_eligible_rows, "n_positive": None, "status": fr.status,
             "fairness": True, "models": fr.disparities["models"], "delta": fr.disparities["delta"]}
    if fr.too_small:
        entry["too_small"] = fr.too_small
    return entry, {(name, k, m): v for (k, m), v in fr.replicates.items()}


def with_fairness(result, fr: FairnessResult):
    """A copy of an :class:`.evaluate.EvaluationResult` whose slices and replicates also hold the fairness slice,
    so one :func:`.gates.apply_gates` call decides metric and fairness gates in one multiplicity family. The
    original is unchanged (its ``to_dict`` stays the metrics file); ``all`` in a metric gate never targets the
    fairness slice."""
    entry, reps = gate_slice(fr)
    return dataclasses.replace(result, slices=list(result.slices) + [entry],
                               metrics=list(result.metrics) + [m for m in fr.metrics if m not in result.metrics],
                               replicates={**result.replicates, **reps})
