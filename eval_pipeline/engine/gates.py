"""Release gates decided on bootstrap interval bounds, with multiplicity control across the gate matrix.

Each :class:`GateDef` expands to one *gate row* per targeted slice. A row tests one quantity ``x``:

- ``non_inferiority``: ``x = delta = candidate - baseline`` (paired replicates), turned into an "improvement" ``d``
  (``d = delta`` when higher is better, ``d = -delta`` otherwise, from ``METRICS[metric].higher_is_better``).
  The candidate is non-inferior when ``d > -margin``.
- ``absolute``: ``x`` = the candidate's value (or the only role's value); acceptable when ``x >= min`` and/or
  ``x <= max``.

Statistical rule. With ``B`` recentred bootstrap replicates ``x*`` of the row (see :mod:`.evaluate`), two one-sided
bootstrap p-values are computed:

- ``p_pass`` for H0 "unacceptable" (inferior / outside the bounds): for non-inferiority
  ``p_pass = (1 + #{d* <= -margin}) / (B + 1)``; for ``min``: ``(1 + #{x* < min}) / (B + 1)``; for ``max``:
  ``(1 + #{x* > max}) / (B + 1)``; with both bounds the larger of the two (intersection-union test).
- ``p_fail`` for H0 "acceptable": ``(1 + #{d* >= -margin}) / (B + 1)``; ``(1 + #{x* >= min}) / (B + 1)``;
  ``(1 + #{x* <= max}) / (B + 1)``; with both bounds twice the smallest (Bonferroni over the two sides).

Undefined replicates. A replicate is NaN when the metric does not exist on that resample (e.g. AUC on a resample
with no positive). ``B`` above counts the *defined* replicates only: NaN replicates are dropped, the row records
how many were used and dropped (``replicates_used`` / ``replicates_undefined``) and its rule says so. Dropping
them conditions on resamples where the metric exists, so with many undefined replicates the interval can be too
narrow. A row whose replicates are *all* undefined is INCONCLUSIVE with that reason.

The multiplicity procedure (``holm``: Holm step-down, family-wise error; ``bh``: Benjamini-Hochberg, false
discovery rate; ``none``) is applied at level ``alpha`` separately to the ``p_pass`` values and to the ``p_fail``
values of all testable rows (the gate matrix: every gate x slice). A row is

- **PASS** when its ``p_pass`` is rejected — equivalently the one-sided bound of ``x`` at the adjusted level
  (e.g. the lower ``1 - a`` quantile of the delta replicates) clears the margin/bound;
- **FAIL** when its ``p_fail`` is rejected — the whole interval at the adjusted level is past the margin/bound;
- **INCONCLUSIVE** otherwise, and always when the slice is ``too_small``, the slice does not exist, the value is
  undefined, there are no replicates (``n_boot = 0``), all replicates are undefined, or a non-inferiority gate has
  no baseline (the row records the reason and is left out of the multiplicity family).

So with equally good models (d = 0) and margin >= 0, the probability that *any* row FAILs is at most ``alpha``
(Holm) — the false-alarm guarantee — and a candidate passes only when the data show non-inferiority.
Default ``alpha`` = ``(1 - confidence) / 2`` (0.025 for 95 % intervals: the one-sided level of a two-sided 95 %
interval).

Resolution. The smallest attainable p-value is ``1 / (B + 1)``, and the smallest level a row is compared with is
``alpha / k`` for Holm and BH over ``k`` testable rows (``alpha`` for ``none``). So a row can only be decided when
``B + 1 >= k / alpha`` (:func:`required_replicates`; e.g. 26 rows at alpha 0.025 need B >= 1039, the default
B = 1000 lets Holm decide nothing). For BH this is the bound for a lone clear row; BH can still decide when many rows are
clear at once. :func:`check_resolution` raises :class:`EngineInputError` (for spec validation, with ``k`` known up
front as an upper bound); :func:`count_gate_rows` counts the testable rows of a result. :func:`apply_gates` does not
raise: it records ``resolution`` and a warning in the report, and each row's rule says when it cannot be decided
with the replicates it has.

Power. Each testable row reports its minimum detectable effect at the configured ``power`` (default 0.8):
``mde = (z_{1-a} + z_{power}) * se``, with ``se`` the standard deviation of the row's defined replicates of ``x``
and ``a`` the row's adjusted PASS level (``adjusted_alpha`` of a PASS/INCONCLUSIVE row). It is the distance by
which the true ``d`` must exceed ``-margin`` (or the true ``x`` clear ``min`` / ``max``) for the row to PASS with
probability ``power`` (normal approximation of the bootstrap test; for Holm the level is the one this row was
compared with, i.e. assuming the rows ranked ahead of it were decided). For an INCONCLUSIVE row, ``n_needed``
estimates the slice rows that would decide it with probability ``power`` if the true value equalled the current
estimate: ``se`` scales as ``1 / sqrt(n)``, so ``n_needed = n * ((z_{1-a} + z_{power}) * se / distance)^2`` with
``distance`` the gap between the estimate and ``-margin`` / the nearest bound (PASS side at the PASS level,
FAIL side at the FAIL level, halved with both bounds). Both numbers are ``None`` when they do not exist (no spread, estimate exactly on the
margin, too few replicates for the row's level, or Holm's first level ``alpha / k`` out of reach so that no row is
ever tested). Measured (``tests/engine/test_gates_power.py``, accuracy gates): a true effect equal to the MDE
passes within about 2 points of the configured power, slightly below it (the se is itself estimated per row).

Verdict: FAIL if any row FAILs, else INCONCLUSIVE if any row is INCONCLUSIVE, else PASS.

Row keys: ``gate, metric, slice, kind, role, value, baseline_value, delta, ci, margin, min, max, bound, n, outcome,
rule, p_value, adjusted_alpha`` and ``replicates_used, replicates_undefined, se, power, mde, n_needed`` (``None``
where not applicable); ``rule`` is the human-readable decision with the MDE / ``n_needed`` sentence. The report adds
``power``, ``resolution`` (``k_rows, n_boot, required_n_boot, sufficient``) and ``warnings``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from .config import GateDef
from .errors import EngineInputError
from .catalogue import METRICS
from .fairness import FAIRNESS_METRICS

# fairness disparities (engine/fairness.py) are gated like metrics: their direction and range come from here
_INFO = {**METRICS, **FAIRNESS_METRICS}

OUTCOMES = ("PASS", "FAIL", "INCONCLUSIVE")
MULTIPLICITY = ("holm", "bh", "none")

# p-values are (1 + j) / (B + 1) and levels alpha / m: when they are equal in exact arithmetic, float rounding may
# put either side on top (e.g. alpha = (1 - 0.95) / 2 = 0.025000000000000022). Comparisons therefore allow this
# relative slack, so that "B + 1 >= k / alpha" really is the condition under which the smallest p is decisive.
_REL_TOL = 1e-12


def _le(p: float, level: float) -> bool:
    return p <= level * (1.0 + _REL_TOL)


@dataclass
class GateReport:
    verdict: str
    multiplicity: str
    alpha: float
    gates: list = field(default_factory=list)
    power: float = 0.8
    resolution: dict | None = None
    warnings: list = field(default_factory=list)

    @property
    def counts(self) -> dict:
        return {o: sum(1 for g in self.gates if g["outcome"] == o) for o in OUTCOMES}

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "multiplicity": self.multiplicity, "alpha": self.alpha,
                "counts": self.counts, "power": self.power, "resolution": self.resolution,
                "warnings": list(self.warnings), "gates": self.gates}


# ---------------------------------------------------------------------------------------------------- resolution

def _check_k_alpha(k_rows, alpha, multiplicity):
    if multiplicity not in MULTIPLICITY:
        raise EngineInputError(f"multiplicity: expected 'holm', 'bh' or 'none', got {multiplicity!r}")
    if isinstance(k_rows, bool) or int(k_rows) != k_rows or k_rows < 0:
        raise EngineInputError(f"k_rows: expected an integer >= 0, got {k_rows!r}")
    if not (0 < alpha < 1):
        raise EngineInputError(f"alpha: expected 0 < alpha < 1, got {alpha}")


def smallest_level(k_rows: int, alpha: float, multiplicity: str = "holm") -> float:
    """The smallest level any one of ``k_rows`` rows is compared with: ``alpha / k`` (Holm, BH), ``alpha`` (none)."""
    _check_k_alpha(k_rows, alpha, multiplicity)
    return alpha if multiplicity == "none" else alpha / max(1, int(k_rows))


def required_replicates(k_rows: int, alpha: float, multiplicity: str = "holm") -> int:
    """Smallest ``B`` with ``1 / (B + 1) <= alpha / k`` (``alpha`` for ``multiplicity='none'``): below it the smallest
    attainable bootstrap p-value cannot reach the first adjusted level, so no row can PASS or FAIL.
    ``required_replicates(26, 0.025) == 1039``. 0 when there is nothing to decide (``k_rows = 0``)."""
    _check_k_alpha(k_rows, alpha, multiplicity)
    if k_rows == 0:
        return 0
    need = 1.0 / smallest_level(k_rows, alpha, multiplicity)  # B + 1 must reach this
    # the same slack as the decisions (_le), so that B = required passes and B = required - 1 does not
    return max(0, math.ceil(need * (1.0 - _REL_TOL)) - 1)


def _resolution_message(k_rows, alpha, n_boot, multiplicity, need) -> str:
    lvl = smallest_level(k_rows, alpha, multiplicity)
    fam = (f"with {multiplicity} over {k_rows} gate rows" if multiplicity != "none"
           else "without multiplicity adjustment")
    msg = (f"n_boot = {n_boot} bootstrap replicates cannot decide any gate row {fam} at alpha = {alpha:.4g}: the "
           f"smallest attainable p-value 1/(B+1) = {1.0 / (n_boot + 1):.4g} exceeds the smallest adjusted level "
           f"{lvl:.4g}; needs n_boot >= {need} (B + 1 >= k / alpha)")
    if multiplicity == "bh":
        msg += " for a lone clear row to be decided (BH can still decide when many rows are clear at once)"
    return msg


def check_resolution(k_rows: int, alpha: float, n_boot: int, multiplicity: str = "holm") -> None:
    """Raise :class:`EngineInputError` when ``n_boot`` replicates are too few to decide any of ``k_rows`` gate rows
    at one-sided level ``alpha`` (``n_boot + 1 < k_rows / alpha``; ``1 / alpha`` for ``'none'``), saying how many are
    needed. ``k_rows`` known before evaluating is an upper bound or estimate (slices may turn out too small or
    undefined); :func:`count_gate_rows` gives the exact number for a result."""
    _check_k_alpha(k_rows, alpha, multiplicity)
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 0:
        raise EngineInputError(f"n_boot: expected an integer >= 0, got {n_boot!r}")
    need = required_replicates(k_rows, alpha, multiplicity)
    if n_boot < need:
        raise EngineInputError(_resolution_message(k_rows, alpha, int(n_boot), multiplicity, need))


# ---------------------------------------------------------------------------------------------------- gate rows

def _targets(result, g: GateDef) -> list[str]:
    every = [s["slice"] for s in result.slices]
    names = [s["slice"] for s in result.slices if not s.get("fairness")]  # a fairness slice is named, never "all"
    spec = g.slices
    if spec == "overall":
        return ["overall"]
    if spec == "all":
        return names
    if isinstance(spec, str):
        spec = [spec]
    out = []
    for t in spec:
        if t in every:
            out.append(t)
            continue
        cols = [c.strip() for c in t.replace(" x ", " & ").split(" & ")]
        group = [s["slice"] for s in result.slices if s["slice"] != "overall" and list(s["columns"]) == cols]
        out.extend(group if group else [t])  # an unknown name stays: recorded as INCONCLUSIVE
    return list(dict.fromkeys(out))


def _validate(result, gates):
    for g in gates:
        if not isinstance(g, GateDef):
            raise EngineInputError(f"gates: expected GateDef objects, got {type(g).__name__}")
        if g.metric not in result.metrics:
            raise EngineInputError(f"gate '{g.name or g.metric}': metric '{g.metric}' was not evaluated "
                                   f"(evaluated: {result.metrics})")
        if g.kind == "absolute":
            if g.min is None and g.max is None:
                raise EngineInputError(f"gate '{g.name or g.metric}': an absolute gate needs min and/or max")
        elif g.kind == "non_inferiority":
            if g.margin is None or g.margin < 0:
                raise EngineInputError(f"gate '{g.name or g.metric}': non_inferiority needs a margin >= 0")
        else:
            raise EngineInputError(f"gate '{g.name or g.metric}': kind must be 'absolute' or 'non_inferiority', "
                                   f"got {g.kind!r}")


@dataclass
class _Test:
    """One testable row: its p-values and what the power figures need."""

    row: int
    p_pass: float
    p_fail: float
    reps: np.ndarray  # defined replicates of x (delta or value), in the metric's own direction
    n_sides_fail: int  # 2 for an absolute gate with both bounds (p_fail is Bonferroni over the sides)
    gap: float | None  # signed distance of the estimate from the decision boundary, > 0 on the PASS side
    unreliable: str = ""  # why the engine flags the tested interval as unreliable (heavy tails, near-perfect), if so
    blocks: str = "pass"  # what a flagged interval may not decide: "pass" (its misses are optimistic) or "both"


def _expand(result, gates, power=None):
    """The gate rows (dicts, untestable ones already carrying their reason) and the testable ones (:class:`_Test`)."""
    by_name = {s["slice"]: s for s in result.slices}
    paired = result.baseline is not None and result.candidate is not None
    abs_role = result.candidate if result.candidate in result.roles else (result.roles[0] if len(result.roles) == 1
                                                                          else result.candidate)
    rows, tests = [], []
    for g in gates:
        info = _INFO[g.metric]
        hib = info.higher_is_better
        name = g.name or f"{g.kind}:{g.metric}"
        for sname in _targets(result, g):
            s = by_name.get(sname)
            role = result.candidate if g.kind == "non_inferiority" else abs_role
            row = {"gate": name, "metric": g.metric, "slice": sname, "kind": g.kind, "role": role, "value": None,
                   "baseline_value": None, "delta": None, "ci": None,
                   "margin": g.margin if g.kind == "non_inferiority" else None,
                   "min": g.min, "max": g.max, "bound": None, "n": s["n"] if s else 0, "outcome": "INCONCLUSIVE",
                   "rule": "", "p_value": None, "adjusted_alpha": None,
                   "replicates_used": None, "replicates_undefined": None, "se": None, "power": power, "mde": None,
                   "n_needed": None}
            rows.append(row)
            if s is None:
                row["rule"] = f"slice '{sname}' not found in the result → INCONCLUSIVE"
                continue
            if s["status"] != "ok":
                # evaluate records why (rows below min_size, or too few positives / negatives) when it can
                why = s.get("too_small") or f"n = {s['n']} < min_size"
                row["rule"] = f"slice too small ({why}) → INCONCLUSIVE"
                continue
            mv = s["models"].get(role, {}).get(g.metric, {}) if role else {}
            row["value"] = mv.get("value")
            if paired:
                row["baseline_value"] = s["models"].get(result.baseline, {}).get(g.metric, {}).get("value")
                row["delta"] = s["delta"].get(g.metric, {}).get("value")
            if g.kind == "non_inferiority":
                if not paired:
                    row["rule"] = "no baseline to compare with (non-inferiority needs a paired baseline) → INCONCLUSIVE"
                    continue
                dv = s["delta"].get(g.metric, {})
                if dv.get("value") is None:
                    row["rule"] = f"delta undefined ({dv.get('undefined')}) → INCONCLUSIVE"
                    continue
                reps = result.replicates.get((sname, "delta", g.metric))
                what = "delta"
            else:
                if mv.get("value") is None:
                    row["rule"] = f"value undefined ({mv.get('undefined')}) → INCONCLUSIVE"
                    continue
                reps = result.replicates.get((sname, role, g.metric))
                what = g.metric
            if reps is None or np.asarray(reps).size == 0:
                row["rule"] = "no bootstrap replicates (n_boot = 0) → INCONCLUSIVE"
                continue
            reps = np.asarray(reps, dtype=np.float64)
            ok = ~np.isnan(reps)
            B, n_undef = int(ok.sum()), int(reps.size - ok.sum())
            row["replicates_used"], row["replicates_undefined"] = B, n_undef
            if B == 0:
                # np.quantile of an empty array raises; no replicate means no sampling law, so nothing to test
                row["rule"] = (f"all {reps.size} bootstrap replicates of {what} undefined (the metric does not exist "
                               f"on any resample, e.g. no positive or no negative drawn) → INCONCLUSIVE")
                continue
            reps = reps[ok]
            if g.kind == "non_inferiority":
                d = reps if hib else -reps
                p_pass = (1 + int(np.sum(d <= -g.margin))) / (B + 1)
                p_fail = (1 + int(np.sum(d >= -g.margin))) / (B + 1)
                point = row["delta"] if hib else -row["delta"]
                gap = point + g.margin
                sides = 1
            else:
                pp, pf, gaps = [], [], []
                if g.min is not None:
                    pp.append((1 + int(np.sum(reps < g.min))) / (B + 1))
                    pf.append((1 + int(np.sum(reps >= g.min))) / (B + 1))
                    gaps.append(row["value"] - g.min)
                if g.max is not None:
                    pp.append((1 + int(np.sum(reps > g.max))) / (B + 1))
                    pf.append((1 + int(np.sum(reps <= g.max))) / (B + 1))
                    gaps.append(g.max - row["value"])
                p_pass = max(pp)
                p_fail = min(1.0, len(pf) * min(pf))
                gap = min(gaps)  # the binding bound: nearest one inside, the violated one outside
                sides = len(pf)
            cell = dv if g.kind == "non_inferiority" else mv
            unreliable = ((cell.get("interval_warning") or "heavy-tailed errors")
                          if cell.get("interval_reliable") is False else "")
            tests.append(_Test(len(rows) - 1, p_pass, p_fail, reps, sides, gap, unreliable,
                               cell.get("interval_blocks", "pass")))
    return rows, tests


def count_gate_rows(result, gates: list[GateDef]) -> int:
    """The number ``k`` of testable gate rows of ``gates`` on ``result``: the multiplicity family (rows on missing,
    too-small or undefined slices, without replicates or without a baseline are left out). Use with
    :func:`check_resolution` / :func:`required_replicates`."""
    gates = list(gates)
    _validate(result, gates)
    return len(_expand(result, gates)[1])


# ---------------------------------------------------------------------------------------------------- decisions

def _adjust(pvals: list[float], alpha: float, method: str):
    """Return (rejected flags, level each p was compared with)."""
    k = len(pvals)
    rej = [False] * k
    lev = [alpha] * k
    if k == 0:
        return rej, lev
    order = sorted(range(k), key=lambda i: (pvals[i], i))
    if method == "none":
        return [_le(p, alpha) for p in pvals], lev
    if method == "holm":
        stopped = False
        for rank, i in enumerate(order):
            lev[i] = alpha / (k - rank)
            if not stopped and _le(pvals[i], lev[i]):
                rej[i] = True
            else:
                stopped = True
        return rej, lev
    # Benjamini-Hochberg
    cut = 0
    for rank, i in enumerate(order, start=1):
        if _le(pvals[i], rank * alpha / k):
            cut = rank
    for rank, i in enumerate(order, start=1):
        lev[i] = (cut if rank <= cut else rank) * alpha / k
        rej[i] = rank <= cut
    return rej, lev


def _q(x, a):
    return float(np.quantile(x, a))


def _bound_parts(row: dict, on_min, on_max) -> list[str]:
    """The text of an absolute gate's bounds, min first: ``on_min(min)`` and / or ``on_max(max)``."""
    return ([on_min(row["min"])] if row["min"] is not None else []) + (
        [on_max(row["max"])] if row["max"] is not None else [])


def _pct(a):
    v = 100 * (1 - a)
    return f"{v:.4g}%"


def _z(p):
    return NormalDist().inv_cdf(p)


def _power_figures(t: _Test, row: dict, lev_pass: float, lev_fail: float, power: float, blocked: str | None):
    """(se, mde, n_needed, text) of one testable row; see the module docstring. ``blocked``: why no row of the
    family can be decided (Holm with too few replicates), or None."""
    B = t.reps.size
    se = float(np.std(t.reps, ddof=1)) if B > 1 else None
    zp = _z(power)
    if se is None or not math.isfinite(se):
        return None, None, None, "; MDE unavailable (fewer than 2 defined replicates)"
    if blocked:
        return se, None, None, f"; no effect is detectable: {blocked}"
    if not _le(1.0 / (B + 1), lev_pass):
        # the row's PASS is out of reach whatever the effect: say what is missing instead of a meaningless MDE
        need = math.ceil((1.0 / lev_pass) * (1.0 - _REL_TOL)) - 1
        return se, None, None, (f"; no effect is detectable: with {B} replicates the smallest p-value "
                                f"1/(B+1) = {1.0 / (B + 1):.4g} > level {lev_pass:.4g} "
                                f"(needs >= {need} defined replicates)")
    mde = (_z(1.0 - lev_pass) + zp) * se
    m = row["metric"]
    if row["kind"] == "non_inferiority":
        if _INFO[m].higher_is_better:
            need_txt = f"a true delta ≥ -margin + MDE = {-row['margin'] + mde:.4g}"
        else:
            need_txt = f"a true delta ≤ margin - MDE = {row['margin'] - mde:.4g}"
    else:
        parts = _bound_parts(row, lambda lo: f"≥ min + MDE = {lo + mde:.4g}",
                             lambda hi: f"≤ max - MDE = {hi - mde:.4g}")
        need_txt = f"a true {m} {' and '.join(parts)}"
    text = (f"; MDE at {power:.0%} power and level {lev_pass:.4g}: {mde:.4g} ({need_txt} would PASS with "
            f"probability {power:.0%}; se = {se:.4g})")
    n_needed = None
    if row["outcome"] == "INCONCLUSIVE":
        n = row["n"]
        if t.gap is None or t.gap == 0 or se == 0:
            text += "; n_needed unavailable (the estimate sits on the margin/bound, or the replicates have no spread)"
        else:
            if t.gap > 0:
                target, z = "PASS", _z(1.0 - lev_pass)
            else:
                target, z = "FAIL", _z(1.0 - lev_fail / t.n_sides_fail)
            n_needed = int(math.ceil(n * ((z + zp) * se / abs(t.gap)) ** 2))
            text += (f"; n_needed ≈ {n_needed} rows in this slice (now {n}) to {target} with probability "
                     f"{power:.0%} if the true value equals the estimate (gap {abs(t.gap):.4g} to the "
                     f"margin/bound, se ∝ 1/√n)")
            if n_needed <= n:
                text += (" — the data already suffice by the normal approximation: the row sits at the edge of its "
                         "level or Holm's step-down stopped before it")
    return se, mde, n_needed, text


def _decide(t: _Test, row: dict, passed: bool, failed: bool, lev_pass: float, lev_fail: float, adj_name: str,
            power: float, blocked: str | None) -> None:
    """Fill one testable row's outcome, interval, p-value, rule and power figures from its multiplicity decisions."""
    p_pass, p_fail, reps = t.p_pass, t.p_fail, t.reps
    g_kind = row["kind"]
    info = _INFO[row["metric"]]
    a = lev_pass
    lo, hi = _q(reps, a), _q(reps, 1 - a)
    row["ci"] = [lo, hi]
    if passed:
        outcome, p, lvl = "PASS", p_pass, a
    elif failed:
        outcome, p, lvl = "FAIL", p_fail, lev_fail
        lo, hi = _q(reps, lvl), _q(reps, 1 - lvl)
        row["ci"] = [lo, hi]
    else:
        outcome, p, lvl = "INCONCLUSIVE", p_pass, a
    row["outcome"], row["p_value"], row["adjusted_alpha"] = outcome, p, lvl
    if g_kind == "non_inferiority":
        m = row["margin"]
        if info.higher_is_better:
            qty, thr_txt, thr = "delta", f"-margin ({-m:g})", -m
            bound = lo if outcome != "FAIL" else hi
            side = "lower" if outcome != "FAIL" else "upper"
            cmp_ok = "≥" if outcome == "PASS" else ("<" if outcome == "FAIL" else "vs")
        else:
            qty, thr_txt, thr = "delta", f"+margin ({m:g})", m
            bound = hi if outcome != "FAIL" else lo
            side = "upper" if outcome != "FAIL" else "lower"
            cmp_ok = "≤" if outcome == "PASS" else (">" if outcome == "FAIL" else "vs")
        row["bound"] = bound
        if outcome == "INCONCLUSIVE":
            row["rule"] = (f"{_pct(lvl)} interval of delta [{lo:.4g}, {hi:.4g}] contains {thr_txt} "
                           f"(p = {p:.4g} > {adj_name} level {lvl:.4g}) → INCONCLUSIVE")
        else:
            row["rule"] = (f"{side} {_pct(lvl)} bound of {qty} ({bound:.4g}) {cmp_ok} {thr_txt} → {outcome} "
                           f"(p = {p:.4g} ≤ {adj_name} level {lvl:.4g})")
    else:
        parts = _bound_parts(row, lambda b: f"lower {_pct(lvl)} bound ({lo:.4g}) vs min ({b:g})",
                             lambda b: f"upper {_pct(lvl)} bound ({hi:.4g}) vs max ({b:g})")
        row["bound"] = lo if row["min"] is not None else hi
        cmp = "≤" if outcome != "INCONCLUSIVE" else ">"
        row["rule"] = (f"{' and '.join(parts)} of {row['metric']} → {outcome} "
                       f"(p = {p:.4g} {cmp} {adj_name} level {lvl:.4g})")
    if row["replicates_undefined"]:
        used, undef = row["replicates_used"], row["replicates_undefined"]
        row["rule"] += (f"; p-values and interval from the {used} defined replicates ({undef} of {used + undef} "
                        f"undefined and dropped: this conditions on resamples where the metric exists, so the "
                        f"interval may be too narrow)")
    if t.unreliable and (outcome == "PASS" or (outcome == "FAIL" and t.blocks == "both")):
        # heavy-tailed regression errors make intervals too narrow on the optimistic side (a PASS is not supported,
        # a FAIL is conservative); near-perfect rankings with few labels miss either way (neither is supported)
        row["outcome"] = "INCONCLUSIVE"
        row["rule"] += f"; but the interval is flagged unreliable ({t.unreliable}) → INCONCLUSIVE"
    se, mde, n_needed, ptxt = _power_figures(t, row, a, lev_fail, power, blocked)
    row["se"], row["power"], row["mde"], row["n_needed"] = se, power, mde, n_needed
    row["rule"] += ptxt


def apply_gates(result, gates: list[GateDef], *, multiplicity: str = "holm", alpha: float | None = None,
                power: float = 0.8) -> GateReport:
    """Decide the gate matrix (every gate x targeted slice) on an evaluation result.

    Each row is PASS, FAIL or INCONCLUSIVE from one-sided bootstrap p-values, with multiplicity control across all
    testable rows; see the module docstring for the rule, the resolution condition and the power figures.

    Parameters
    ----------
    result : EvaluationResult
        The output of :func:`~eval_pipeline.engine.evaluate` (it must hold replicates: ``n_boot > 0``).
    gates : list of GateDef
        ``absolute`` gates (``min`` and/or ``max`` on the candidate's value) and ``non_inferiority`` gates
        (``candidate - baseline`` not worse than ``margin``), each on ``slices``: "overall", "all", slice names or
        a column / cross name standing for all of its slices.
    multiplicity : {"holm", "bh", "none"}, default "holm"
        Holm (family-wise error), Benjamini-Hochberg (false discovery rate) or no adjustment.
    alpha : float, optional
        One-sided level; default ``(1 - result.confidence) / 2``.
    power : float, default 0.8
        The power at which each row's minimum detectable effect (``mde``) and, for INCONCLUSIVE rows, the rows of
        data needed to decide (``n_needed``) are reported.

    Returns
    -------
    GateReport
        ``verdict`` (FAIL if any row FAILs, else INCONCLUSIVE if any row is, else PASS), ``gates`` (one dict per
        row with its outcome, p-value, adjusted level and a human-readable ``rule``), ``counts``, ``resolution``
        and ``warnings``.

    Raises
    ------
    EngineInputError
        A gate names a metric that was not evaluated, lacks its bounds or margin, or a level is out of range.

    Examples
    --------
    >>> import pandas as pd
    >>> from eval_pipeline.engine import GateDef, SliceConfig, apply_gates, evaluate
    >>> df = pd.DataFrame({"y": [0, 1, 1, 0, 1, 0, 1, 0] * 25,
    ...                    "old": [0.2, 0.7, 0.4, 0.6, 0.8, 0.6, 0.3, 0.1] * 25,
    ...                    "new": [0.1, 0.8, 0.6, 0.3, 0.9, 0.4, 0.45, 0.2] * 25,
    ...                    "region": ["north", "south"] * 100})
    >>> slices = SliceConfig(columns=["region"], min_size=50)
    >>> result = evaluate(df, task_type="binary_classification", label="y", slices=slices,
    ...                   predictions={"baseline": "old", "candidate": "new"}, metrics=["accuracy"], n_boot=200)
    >>> report = apply_gates(result, [GateDef("accuracy", "non_inferiority", margin=0.02, slices="all")])
    >>> report.verdict, report.counts
    ('PASS', {'PASS': 3, 'FAIL': 0, 'INCONCLUSIVE': 0})
    >>> [(g["slice"], g["outcome"], g["delta"]) for g in report.gates]
    [('overall', 'PASS', 0.375), ('region=north', 'PASS', 0.25), ('region=south', 'PASS', 0.5)]
    >>> report.gates[0]["rule"]
    'lower 99.17% bound of delta (0.29...) ≥ -margin (-0.02) → PASS (p = 0.004975 ≤ Holm-adjusted level 0.008333)...'
    """
    if multiplicity not in MULTIPLICITY:
        raise EngineInputError(f"multiplicity: expected 'holm', 'bh' or 'none', got {multiplicity!r}")
    alpha = float(alpha) if alpha is not None else (1.0 - result.confidence) / 2.0
    if not (0 < alpha < 0.5):
        raise EngineInputError(f"alpha: expected 0 < alpha < 0.5, got {alpha}")
    power = float(power)
    if not (0 < power < 1):
        raise EngineInputError(f"power: expected 0 < power < 1, got {power}")
    gates = list(gates)
    _validate(result, gates)
    rows, tests = _expand(result, gates, power)
    k = len(tests)
    n_boot = int(result.n_boot)
    need = required_replicates(k, alpha, multiplicity)
    resolution = {"k_rows": k, "n_boot": n_boot, "required_n_boot": need, "sufficient": n_boot >= need}
    warnings, blocked = [], None
    if k and n_boot < need:
        # not raised here: the rows are still reported (values, intervals), only no decision is reachable
        warnings.append("resolution: " + _resolution_message(k, alpha, n_boot, multiplicity, need))
        if multiplicity == "holm":
            # Holm's step-down starts at alpha / k: if the smallest p-value cannot reach it, no row is ever tested
            # at its own (larger) level, so no row has a detectable effect whatever its level says
            blocked = (f"Holm's first step needs a p-value <= alpha/k = {alpha / k:.4g} and the smallest attainable "
                       f"is 1/(B+1) = {1.0 / (n_boot + 1):.4g} (needs n_boot >= {need})")
    rej_p, lev_p = _adjust([t.p_pass for t in tests], alpha, multiplicity)
    rej_f, lev_f = _adjust([t.p_fail for t in tests], alpha, multiplicity)
    adj_name = {"holm": "Holm-adjusted", "bh": "BH-adjusted", "none": "unadjusted"}[multiplicity]
    for j, t in enumerate(tests):
        _decide(t, rows[t.row], rej_p[j], rej_f[j], lev_p[j], lev_f[j], adj_name, power, blocked)
    outcomes = [r["outcome"] for r in rows]
    verdict = "FAIL" if "FAIL" in outcomes else ("INCONCLUSIVE" if "INCONCLUSIVE" in outcomes or not rows else "PASS")
    return GateReport(verdict=verdict, multiplicity=multiplicity, alpha=alpha, gates=rows, power=power,
                      resolution=resolution, warnings=warnings)


_VERDICT_RANK = {"PASS": 0, "INCONCLUSIVE": 1, "FAIL": 2}


def worst_verdict(*verdicts) -> str | None:
    """FAIL over INCONCLUSIVE over PASS (the verdict rule across rows and families); None when none is given."""
    known = [v for v in verdicts if v in _VERDICT_RANK]
    return max(known, key=_VERDICT_RANK.get) if known else None


def append_family(gates_dict: dict, rows: list[dict], *verdicts) -> dict:
    """A gates report (``GateReport.to_dict()``) with another multiplicity family's gate rows appended (robustness,
    an evaluation suite): its verdict the worst of its own and ``verdicts`` (None: that family decides nothing), the
    outcome counts recounted. The input is not changed."""
    out = dict(gates_dict, gates=list(gates_dict["gates"]) + rows)
    out["verdict"] = worst_verdict(gates_dict.get("verdict"), *verdicts) or gates_dict.get("verdict")
    counts = dict(gates_dict.get("counts") or {})
    for g in rows:
        counts[g["outcome"]] = counts.get(g["outcome"], 0) + 1
    out["counts"] = counts
    return out
