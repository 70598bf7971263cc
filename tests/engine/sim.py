"""Seeded simulation machinery for the binary score-metric validity suite (issue 8, item 5).

Used by ``tests/engine/test_simulation.py`` (a representative subset, plus ``slow`` variants) and by
``bench/sim_matrix.py`` (the full matrix). Only the engine's public API is used: ``evaluate``, ``apply_gates``,
``GateDef``, ``SliceConfig``.

Data model (every generator)
----------------------------
``y ~ Bernoulli(pi)``; each model has a latent ``z = d * (y - pi) + e`` with ``e ~ N(0, 1)`` and a *monotone* score
shape ``s = shape(z)``. Because every shape is strictly increasing, the population ROC AUC of a model is exactly
``Phi(d / sqrt(2))`` whatever its shape (binormal, equal variances): that is the analytic AUC truth.
Pairings of the candidate with the baseline:
  - ``indep``: independent noises ``e_b``, ``e_c`` (errors independent given the label);
  - ``corr``: ``e = sqrt(0.9) * shared + sqrt(0.1) * own`` (strongly correlated errors, corr 0.9);
  - ``ident``: ``z_c = 1.3 * z_b`` — the candidate is a monotone transform of the baseline (identical rankings), so
    the AUC (and AP) of the two models are equal on *every* resample: the true delta is exactly 0 and a correct
    paired AUC delta interval is exactly [0, 0].
Score shapes: ``spread`` (binormal through a sigmoid), ``band01`` / ``band51`` / ``band90`` (all scores inside
[0.01, 0.05), [0.51, 0.54], [0.90, 0.93]: each one grid bin of width 0.05 of the current engine), ``bimodal``
(scores piled near 0.05-0.1 and 0.9-0.95), ``overconf`` (logit x 4: scores pushed to 0/1 with confident errors),
``nearperfect`` (d = 3.29, AUC = 0.99).
Slice sizes: ``n1000`` (1000 rows, 40 % positives), ``rare`` (2000 rows, 2 % positives, ~40 positives),
``few`` (200 rows, 15 % positives, ~30 positives).

Truth targets (what a 95 % interval must cover)
-----------------------------------------------
- ROC AUC: analytic population value ``Phi(d / sqrt(2))`` (the Mann-Whitney estimator is unbiased for it given the
  class counts); delta: difference of the two (exactly 0 for ``ident``).
- log loss, Brier, accuracy: population means, by Monte Carlo on >= 2.4 million rows of the generator (these
  estimators are sample means, hence unbiased; MC standard error <= 1/45 of a dataset's standard error).
- average precision and ECE: these estimators are *biased* in finite samples (AP: strongly so with few positives;
  ECE: a sum of absolute values), and what a bootstrap percentile interval estimates is then the finite-sample
  estimand ``E[estimator at this slice size]``, not the infinite-population value. So their truth is the mean of the
  exact (sklearn-equivalent) finite-sample estimate over >= 1,000 independent simulated datasets of the same size
  (>= 2.4 million rows in total; the MC error of the target is <= 1/30 of a dataset's standard error, which moves
  coverage by < 0.1 point). Deltas of AP / ECE: mean of the per-dataset delta (= difference of the two means).
The delta of a pair of exchangeable models (false-FAIL cells) is 0 for every metric by symmetry.

Assertions (see :func:`coverage_bounds`)
----------------------------------------
Coverage over R independent datasets must lie in [0.93, 0.97] widened by 2 binomial standard errors of R at the
nominal 95 % (SE = sqrt(0.95 * 0.05 / R)); a false-FAIL rate over R runs must be <= alpha + 2 * sqrt(alpha (1 -
alpha) / R). When a delta is structurally zero on every dataset (identical rankings for AUC/AP; accuracy when both
models predict the same class on every row), the only correct interval is [0, 0]: there coverage is 100 % and only
the lower bound (and "contains 0") applies; likewise for the ECE delta (see :attr:`Check.upper_applies`).
ECE value intervals must still cover E[ECE_n] at >= 93 %: the plain row-level percentile bootstrap
(:func:`run_reference_cell`) measured ~0.88-0.90 there on a spread slice (its replicates sit above the biased
estimate), so a valid engine needs a bias-aware ECE interval (e.g. recentring on the exact estimate).

Packing: R independent datasets go into ONE ``evaluate`` call, one slice per dataset (``rep`` column), or
``rep x part`` crosses for the gate matrices.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.stats import norm

from eval_pipeline.engine import GateDef, SliceConfig, apply_gates, evaluate

TASK = "binary_classification"
SCORE_METRICS = ["roc_auc", "average_precision", "log_loss", "brier", "ece"]
METRICS = SCORE_METRICS + ["accuracy"]  # accuracy: a count metric, the control
RANGES = {"roc_auc": (0.0, 1.0), "average_precision": (0.0, 1.0), "log_loss": (0.0, math.inf),
          "brier": (0.0, 1.0), "ece": (0.0, 1.0), "accuracy": (0.0, 1.0)}
DELTA_RANGES = {m: (-(hi if math.isfinite(hi) else math.inf), hi) for m, (lo, hi) in RANGES.items()}
EPS = np.finfo(np.float64).eps
ECE_BINS = 10
THRESHOLD = 0.5
NOMINAL = 0.95
ALPHA = 0.025  # one-sided default of apply_gates at confidence 0.95
TRUTH_ROWS = 2_400_000


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    return math.log(p / (1 - p))


# --- score shapes: strictly increasing maps latent -> (0, 1) ------------------------------------------------------
def _spread(z, pi):
    return _sigmoid(z + _logit(pi))


def _band(lo, hi):
    def f(z, pi):
        return lo + (hi - lo) * _sigmoid(z)
    return f


def _bimodal(z, pi):
    return _sigmoid(z + _logit(pi) + 2.5 * np.sign(z))


def _overconf(z, pi):
    return _sigmoid(4.0 * z + _logit(pi))


SHAPES = {"spread": _spread, "band01": _band(0.01, 0.05), "band51": _band(0.51, 0.54), "band90": _band(0.90, 0.93),
          "bimodal": _bimodal, "overconf": _overconf, "nearperfect": _spread}
SHAPE_D = {"nearperfect": 3.29}  # Phi(3.29 / sqrt 2) = 0.990; every other shape d = 1.0 (AUC 0.760)
SIZES = {"n1000": (1000, 0.40), "rare": (2000, 0.02), "few": (200, 0.15)}
PAIRINGS = ("indep", "corr", "ident")
CORR = 0.9


@dataclass(frozen=True)
class Gen:
    """One generator: baseline and candidate shapes, size, pairing, and the candidate's separation factor."""
    shape_b: str
    shape_c: str
    size: str
    pairing: str
    c_gain: float = 1.0  # d_c = d_b * c_gain (coverage cells use a slightly better candidate; false-FAIL uses 1.0)

    @property
    def n(self):
        return SIZES[self.size][0]

    @property
    def pi(self):
        return SIZES[self.size][1]

    @property
    def d_b(self):
        return SHAPE_D.get(self.shape_b, 1.0)

    @property
    def d_c(self):
        return SHAPE_D.get(self.shape_c, 1.0) * self.c_gain

    @property
    def label(self):
        sh = self.shape_b if self.shape_b == self.shape_c else f"{self.shape_b}/{self.shape_c}"
        return f"{sh}-{self.size}-{self.pairing}"


def draw(gen: Gen, N: int, rng: np.random.Generator):
    """N rows of (y, baseline score, candidate score)."""
    pi = gen.pi
    y = rng.random(N) < pi
    yc = y - pi
    if gen.pairing == "corr":
        shared = rng.normal(size=N)
        e_b = math.sqrt(CORR) * shared + math.sqrt(1 - CORR) * rng.normal(size=N)
        e_c = math.sqrt(CORR) * shared + math.sqrt(1 - CORR) * rng.normal(size=N)
    else:
        e_b = rng.normal(size=N)
        e_c = rng.normal(size=N) if gen.pairing == "indep" else None
    z_b = gen.d_b * yc + e_b
    z_c = 1.3 * z_b if gen.pairing == "ident" else gen.d_c * yc + e_c
    b = SHAPES[gen.shape_b](z_b, pi)
    c = SHAPES[gen.shape_c](z_c, pi)
    return y.astype(np.int8), b, c


# --- exact per-dataset estimators on (M, n) matrices (continuous scores: no ties) --------------------------------
def ap_rows(Y, S):
    order = np.argsort(-S, axis=1, kind="stable")
    Ys = np.take_along_axis(Y, order, axis=1).astype(np.float64)
    tp = np.cumsum(Ys, axis=1)
    k = np.arange(1, Y.shape[1] + 1)
    P = Ys.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(P > 0, (Ys * tp / k).sum(axis=1) / P, np.nan)


def ece_rows(Y, S, bins=ECE_BINS):
    M, n = Y.shape
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.searchsorted(edges, S, side="right") - 1, 0, bins - 1) + bins * np.arange(M)[:, None]
    sy = np.bincount(idx.ravel(), weights=Y.ravel().astype(np.float64), minlength=M * bins).reshape(M, bins)
    sp = np.bincount(idx.ravel(), weights=S.ravel(), minlength=M * bins).reshape(M, bins)
    return np.abs(sy - sp).sum(axis=1) / n


def log_loss_rows(y, s):
    p = np.clip(s, EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@lru_cache(maxsize=None)
def truth(gen: Gen, seed: int = 12345) -> dict:
    """{"baseline": {metric: value}, "candidate": {...}, "delta": {...}} — see the module docstring for the targets."""
    n = gen.n
    M = max(1000, -(-TRUTH_ROWS // n))
    rng = np.random.default_rng([seed, zlib.crc32(repr(gen).encode())])
    y, b, c = draw(gen, M * n, rng)
    out = {"baseline": {}, "candidate": {}}
    Y = y.reshape(M, n)
    # analytic AUC: every shape is strictly increasing in a binormal latent with unit variances
    auc = {"baseline": norm.cdf(gen.d_b / math.sqrt(2)), "candidate": norm.cdf(gen.d_c / math.sqrt(2))}
    if gen.pairing == "ident":  # z_c = 1.3 z_b: same ranking as the baseline
        auc["candidate"] = auc["baseline"]
    per = {}
    for role, s in (("baseline", b), ("candidate", c)):
        S = s.reshape(M, n)
        o = out[role]
        o["roc_auc"] = float(auc[role])
        o["log_loss"] = float(log_loss_rows(y, s).mean())
        o["brier"] = float(((s - y) ** 2).mean())
        o["accuracy"] = float(((s >= THRESHOLD) == (y == 1)).mean())
        per[role] = {"average_precision": ap_rows(Y, S), "ece": ece_rows(Y, S)}
        o["average_precision"] = float(np.nanmean(per[role]["average_precision"]))
        o["ece"] = float(per[role]["ece"].mean())
    out["delta"] = {m: out["candidate"][m] - out["baseline"][m] for m in METRICS}
    out["delta"]["roc_auc"] = 0.0 if gen.pairing == "ident" else out["delta"]["roc_auc"]
    if gen.pairing == "ident":  # identical rankings: AP equal on every dataset
        out["delta"]["average_precision"] = 0.0
    return out


def packed_frame(gen: Gen, R: int, seed: int, parts: int = 1) -> pd.DataFrame:
    """R independent datasets (x ``parts`` independent slices each), one ``rep`` (and ``part``) value per dataset."""
    rng = np.random.default_rng(seed)
    n = gen.n
    N = R * parts * n
    y, b, c = draw(gen, N, rng)
    df = pd.DataFrame({"y": y, "b": b, "c": c, "rep": np.repeat(np.arange(R), parts * n)})
    if parts > 1:
        df["part"] = np.tile(np.repeat(np.arange(parts), n), R)
    return df


# --- coverage ---------------------------------------------------------------------------------------------------
@dataclass
class CellResult:
    gen: Gen
    R: int
    n_boot: int
    values: dict = field(default_factory=dict)  # (role, metric) -> array (R,)
    lo: dict = field(default_factory=dict)
    hi: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)
    flagged: dict = field(default_factory=dict)  # (role, metric) -> bool array: interval flagged unreliable
    seconds: float = 0.0


@lru_cache(maxsize=None)
def run_cell(gen: Gen, R: int = 400, n_boot: int = 400, seed: int = 2026) -> CellResult:
    """Evaluate R packed datasets of ``gen`` in one engine call; per-dataset values and 95 % intervals."""
    import time
    df = packed_frame(gen, R, seed)
    t0 = time.perf_counter()
    res = evaluate(df, task_type=TASK, label="y", predictions={"baseline": "b", "candidate": "c"},
                   slices=SliceConfig(columns=["rep"], max_values=R, min_size=min(100, gen.n)), metrics=METRICS,
                   n_boot=n_boot, seed=seed + 1, confidence=NOMINAL, threshold=THRESHOLD, ece_bins=ECE_BINS)
    out = CellResult(gen=gen, R=R, n_boot=n_boot, seconds=time.perf_counter() - t0)
    by_rep = {s["columns"].get("rep"): s for s in res.slices if "rep" in s["columns"]}
    reps = [by_rep[r] if r in by_rep else by_rep[str(r)] for r in range(R)]
    for role in ("baseline", "candidate", "delta"):
        for m in METRICS:
            v, lo, hi = np.full(R, np.nan), np.full(R, np.nan), np.full(R, np.nan)
            flag = np.zeros(R, bool)
            for i, s in enumerate(reps):
                e = s["delta"].get(m, {}) if role == "delta" else s["models"][role].get(m, {})
                flag[i] = e.get("interval_reliable") is False
                if e.get("value") is not None:
                    v[i] = e["value"]
                if e.get("ci") is not None:
                    lo[i], hi[i] = e["ci"]
            out.values[(role, m)], out.lo[(role, m)], out.hi[(role, m)] = v, lo, hi
            out.flagged[(role, m)] = flag
    out.truth = truth(gen)
    return out


def coverage_bounds(R: int, nominal_lo=0.93, nominal_hi=0.97, p=NOMINAL):
    se = math.sqrt(p * (1 - p) / R)
    return nominal_lo - 2 * se, nominal_hi + 2 * se, se


@dataclass
class Check:
    role: str
    metric: str
    coverage: float
    se: float
    lo_bound: float
    hi_bound: float
    degenerate: bool
    mean_width: float
    zero_width: float  # share of datasets with a zero-width interval
    out_of_range: int  # intervals leaving the metric's range
    missing: int  # datasets without an interval
    miss_low: int  # truth below the interval
    miss_high: int
    lattice: bool = False
    flagged: float = 0.0  # share of datasets whose interval the engine flags unreliable (excluded from coverage)
    n_assessed: int = 0

    @property
    def assessable(self):
        # A delta whose point estimate is exactly 0 on >= 5 % of the datasets while the truth is not 0 lives on a
        # lattice with an atom at 0 (accuracy on rare events: both models predict nothing positive); every
        # bootstrap interval of such a dataset is [0, 0] and misses the truth, so coverage says nothing about
        # validity there: it is reported, not asserted (the range check still applies).
        # The engine may flag an interval it cannot vouch for (near-perfect AUC with few positives); coverage is
        # asserted on the unflagged ones, and a cell where almost everything is flagged is reported, not asserted.
        return not self.lattice and self.n_assessed >= 50

    @property
    def upper_applies(self):
        # No upper bound (a) for a structurally-zero delta: the correct interval is [0, 0] and covers 100 %;
        # (b) for the ECE delta: ECE is a sum of absolute values, and the exact row-level percentile bootstrap
        # (run_reference_cell) itself covers 100 % of ECE deltas when the models' errors are correlated (measured);
        # a conservative ECE delta only costs power, so only the lower bound is a validity requirement there.
        # (c) when the engine flagged some intervals: flags are chosen from each dataset's own estimate (near-perfect
        # AUC), so the unflagged rest is a selected sample whose coverage is biased upwards; only the lower bound
        # is a validity requirement for it.
        return not (self.degenerate or (self.role == "delta" and self.metric == "ece") or self.flagged > 0)

    @property
    def ok(self):
        cov_ok = not self.assessable or (
            self.coverage >= self.lo_bound and (not self.upper_applies or self.coverage <= self.hi_bound))
        return cov_ok and self.out_of_range == 0 and self.missing == 0

    def describe(self):
        lat = " (lattice, not asserted)" if self.lattice else ""
        return (f"{self.role}:{self.metric}{lat} coverage {self.coverage:.3f} (SE {self.se:.3f}, allowed "
                f"[{self.lo_bound:.3f}, {f'{self.hi_bound:.3f}' if self.upper_applies else '1'}]), misses low/high "
                f"{self.miss_low}/{self.miss_high}, mean width {self.mean_width:.4g}, zero-width {self.zero_width:.0%}, "
                f"out of range {self.out_of_range}, missing {self.missing}")


def check(cell: CellResult, role: str, metric: str) -> Check:
    t = cell.truth[role][metric]
    v, lo, hi = cell.values[(role, metric)], cell.lo[(role, metric)], cell.hi[(role, metric)]
    R = cell.R
    have = ~np.isnan(lo) & ~np.isnan(hi)
    flag = cell.flagged.get((role, metric), np.zeros(R, bool))
    tol = 1e-12
    covered = have & (lo - tol <= t) & (t <= hi + tol)
    rng_lo, rng_hi = (DELTA_RANGES if role == "delta" else RANGES)[metric]
    oor = int(np.sum(have & ((lo < rng_lo - tol) | (hi > rng_hi + tol))))
    degenerate = role == "delta" and bool(np.all(v == 0.0)) and t == 0.0
    lattice = role == "delta" and t != 0.0 and float(np.mean(v == 0.0)) >= 0.05
    judged = ~flag
    n_judged = int(judged.sum())
    lo_b, hi_b, se = coverage_bounds(max(n_judged, 1))
    width = np.where(have, hi - lo, np.nan)
    cov = float(covered[judged].mean()) if n_judged else float("nan")
    return Check(role=role, metric=metric, coverage=cov, se=se, lo_bound=lo_b, hi_bound=hi_b,
                 degenerate=degenerate, mean_width=float(np.nanmean(width)) if have.any() else float("nan"),
                 zero_width=float(np.mean(have & (width == 0))), out_of_range=oor, missing=int(np.sum(~have)),
                 miss_low=int(np.sum(have & (t < lo - tol))), miss_high=int(np.sum(have & (t > hi + tol))),
                 lattice=lattice, flagged=float(flag.mean()), n_assessed=n_judged)


def check_cell(cell: CellResult):
    return [check(cell, role, m) for role in ("baseline", "candidate", "delta") for m in METRICS]


# --- false-FAIL of the gate matrix under equally good models ----------------------------------------------------
@dataclass(frozen=True)
class FFCase:
    gen: Gen  # c_gain must be 1.0 and the pairing exchangeable (or shapes whose gated metrics are rank-only)
    metrics: tuple
    parts: int = 2
    margin: float = 0.0

    @property
    def label(self):
        return f"{self.gen.label} [{','.join(self.metrics)}] x{self.parts} slices m={self.margin:g}"


@dataclass
class FFResult:
    case: FFCase
    R: int
    n_boot: int
    rate: float
    se: float
    bound: float
    fail_rows: dict  # metric -> FAIL rows
    k: int
    seconds: float

    @property
    def ok(self):
        return self.rate <= self.bound

    def describe(self):
        return (f"false-FAIL {self.rate:.3f} of {self.R} runs (SE {self.se:.3f}, allowed <= {self.bound:.3f}); "
                f"{self.k} gate rows/run, Holm, alpha {ALPHA}, B={self.n_boot}; FAIL rows by metric {self.fail_rows}")


def ff_n_boot(k: int, alpha: float = ALPHA) -> int:
    """Smallest round B such that Holm's first step can decide (1/(B+1) <= alpha/k) with one replicate to spare."""
    return int(max(400, math.ceil(2 * k / alpha / 100.0) * 100))


@lru_cache(maxsize=None)
def run_false_fail(case: FFCase, R: int = 400, n_boot: int | None = None, seed: int = 77) -> FFResult:
    import time
    gen = case.gen
    k = len(case.metrics) * case.parts
    B = n_boot or ff_n_boot(k)
    df = packed_frame(gen, R, seed, parts=case.parts)
    cols = ["rep", "part"] if case.parts > 1 else ["rep"]
    sc = (SliceConfig(crosses=[cols], max_values=R, min_size=min(100, gen.n)) if case.parts > 1
          else SliceConfig(columns=["rep"], max_values=R, min_size=min(100, gen.n)))
    t0 = time.perf_counter()
    res = evaluate(df, task_type=TASK, label="y", predictions={"baseline": "b", "candidate": "c"}, slices=sc,
                   metrics=list(case.metrics), n_boot=B, seed=seed + 1, confidence=NOMINAL, threshold=THRESHOLD,
                   ece_bins=ECE_BINS)
    groups: dict = {}
    for s in res.slices:
        if "rep" in s["columns"] and set(s["columns"]) == set(cols):
            groups.setdefault(str(s["columns"]["rep"]), []).append(s["slice"])
    assert len(groups) == R and all(len(v) == case.parts for v in groups.values()), "packing lost slices"
    any_fail, rows = 0, {m: 0 for m in case.metrics}
    for names in groups.values():
        gates = [GateDef(m, "non_inferiority", margin=case.margin, slices=names) for m in case.metrics]
        rep = apply_gates(res, gates, multiplicity="holm", alpha=ALPHA).to_dict()
        any_fail += rep["verdict"] == "FAIL"
        for g in rep["gates"]:
            rows[g["metric"]] += g["outcome"] == "FAIL"
    rate = any_fail / R
    se = math.sqrt(ALPHA * (1 - ALPHA) / R)
    return FFResult(case=case, R=R, n_boot=B, rate=rate, se=se, bound=ALPHA + 2 * se, fail_rows=rows, k=k,
                    seconds=time.perf_counter() - t0)


# --- the matrix --------------------------------------------------------------------------------------------------
SHAPE_NAMES = ("spread", "band01", "band51", "band90", "bimodal", "overconf", "nearperfect")


def coverage_cells():
    """Every shape x size x pairing; the candidate is slightly better (d x 1.15) except for identical rankings."""
    return [Gen(sh, sh, size, p, c_gain=1.0 if p == "ident" else 1.15)
            for sh in SHAPE_NAMES for size in SIZES for p in PAIRINGS]


# default (CI) subset: narrow band [0.01, 0.05) on rare events, identical rankings with few positives in a band,
# correlated errors, near-perfect, bimodal
DEFAULT_CELLS = [
    Gen("band01", "band01", "rare", "indep", 1.15),
    Gen("band51", "band51", "few", "ident", 1.0),
    Gen("spread", "spread", "n1000", "corr", 1.15),
    Gen("nearperfect", "nearperfect", "n1000", "indep", 1.15),
]

ALL_SIX = tuple(METRICS)
RANK = ("roc_auc", "average_precision")


def false_fail_cases():
    return [
        # the reproducer: equally good models, candidate's scores in one narrow band (grid bin)
        FFCase(Gen("spread", "band51", "n1000", "indep"), RANK),
        FFCase(Gen("spread", "band01", "rare", "indep"), RANK),
        FFCase(Gen("spread", "band90", "n1000", "corr"), RANK),
        FFCase(Gen("band51", "band51", "n1000", "corr"), ALL_SIX),
        FFCase(Gen("band01", "band01", "rare", "indep"), ALL_SIX),
        FFCase(Gen("spread", "spread", "n1000", "indep"), ALL_SIX),
        FFCase(Gen("spread", "spread", "n1000", "corr"), ALL_SIX),
        FFCase(Gen("spread", "spread", "rare", "corr"), ALL_SIX),
        FFCase(Gen("spread", "spread", "few", "indep"), ALL_SIX),
        FFCase(Gen("bimodal", "bimodal", "n1000", "corr"), ALL_SIX),
        FFCase(Gen("overconf", "overconf", "n1000", "indep"), ALL_SIX),
        FFCase(Gen("nearperfect", "nearperfect", "few", "indep"), ALL_SIX),
        FFCase(Gen("spread", "spread", "n1000", "corr"), RANK, parts=1, margin=0.0),
    ]


DEFAULT_FF = [FFCase(Gen("spread", "band51", "n1000", "indep"), RANK)]


# --- reference: exact row-level Poisson bootstrap (slow, numpy) -------------------------------------------------
# Used by bench/sim_matrix.py (column "ref") to show that every assertion of the suite is attainable by a correct
# bootstrap on the very same datasets: a cell the engine fails but the reference passes is an engine defect, not a
# quirk of the suite. It recomputes every metric exactly on each resample (integer Poisson(1) row weights).
def _ref_reps(y, s, W, metrics):
    out = {}
    yf = y.astype(np.float64)
    if "roc_auc" in metrics:
        o = np.argsort(s, kind="stable")
        Wo, yo = W[:, o], yf[o]
        wp, wn = Wo * yo, Wo * (1 - yo)
        neg_before = np.cumsum(wn, axis=1) - wn
        P, N = wp.sum(1), wn.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["roc_auc"] = (wp * neg_before).sum(1) / (P * N)
    if "average_precision" in metrics:
        o = np.argsort(-s, kind="stable")
        Wo, yo = W[:, o], yf[o]
        tp, tot = np.cumsum(Wo * yo, axis=1), np.cumsum(Wo, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = np.where(tot > 0, tp / np.maximum(tot, 1), 0.0)
            out["average_precision"] = (Wo * yo * prec).sum(1) / (Wo * yo).sum(1)
    n_w = W.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if "log_loss" in metrics:
            out["log_loss"] = W @ log_loss_rows(yf, s) / n_w
        if "brier" in metrics:
            out["brier"] = W @ ((s - yf) ** 2) / n_w
        if "accuracy" in metrics:
            out["accuracy"] = W @ ((s >= THRESHOLD) == (y == 1)).astype(np.float64) / n_w
        if "ece" in metrics:
            edges = np.linspace(0, 1, ECE_BINS + 1)
            idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, ECE_BINS - 1)
            oh = np.zeros((s.size, ECE_BINS))
            oh[np.arange(s.size), idx] = 1.0
            out["ece"] = np.abs(W @ (oh * yf[:, None]) - W @ (oh * s[:, None])).sum(1) / n_w
    return out


@lru_cache(maxsize=None)
def run_reference_cell(gen: Gen, R: int = 200, n_boot: int = 400, seed: int = 2026) -> CellResult:
    """The reference bootstrap on the first R datasets of :func:`run_cell`'s packing (same seed, same data)."""
    import time
    df = packed_frame(gen, R, seed)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + 99)
    n = gen.n
    y_all, b_all, c_all = df["y"].to_numpy(), df["b"].to_numpy(), df["c"].to_numpy()
    out = CellResult(gen=gen, R=R, n_boot=n_boot)
    acc = {(role, m): ([], [], []) for role in ("baseline", "candidate", "delta") for m in METRICS}
    q = [(1 - NOMINAL) / 2, 1 - (1 - NOMINAL) / 2]
    for r in range(R):
        sl = slice(r * n, (r + 1) * n)
        y, b, c = y_all[sl], b_all[sl], c_all[sl]
        W = rng.poisson(1.0, size=(n_boot, n)).astype(np.float64)
        ones = np.ones((1, n))
        pb, pc = _ref_reps(y, b, ones, METRICS), _ref_reps(y, c, ones, METRICS)
        rb, rc = _ref_reps(y, b, W, METRICS), _ref_reps(y, c, W, METRICS)
        for m in METRICS:
            for role, pt, rep in (("baseline", pb[m][0], rb[m]), ("candidate", pc[m][0], rc[m]),
                                  ("delta", pc[m][0] - pb[m][0], rc[m] - rb[m])):
                lo, hi = np.nanquantile(rep, q)
                acc[(role, m)][0].append(pt)
                acc[(role, m)][1].append(lo)
                acc[(role, m)][2].append(hi)
    for k, (v, lo, hi) in acc.items():
        out.values[k], out.lo[k], out.hi[k] = np.array(v), np.array(lo), np.array(hi)
    out.truth = truth(gen)
    out.seconds = time.perf_counter() - t0
    return out
