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
  ``(1 + #{x* <= max}) / (B + 1)``; with both bounds twice the smaller (Bonferroni over the two sides).

The multiplicity procedure (``holm``: Holm step-down, family-wise error; ``bh``: Benjamini-Hochberg, false
discovery rate; ``none``) is applied at level ``alpha`` separately to the ``p_pass`` values and to the ``p_fail``
values of all testable rows (the gate matrix: every gate x slice). A row is

- **PASS** when its ``p_pass`` is rejected — equivalently the one-sided bound of ``x`` at the adjusted level
  (e.g. the lower ``1 - a`` quantile of the delta replicates) clears the margin/bound;
- **FAIL** when its ``p_fail`` is rejected — the whole interval at the adjusted level is past the margin/bound;
- **INCONCLUSIVE** otherwise, and always when the slice is ``too_small``, the slice does not exist, the value is
  undefined, there are no replicates (``n_boot = 0``), or a non-inferiority gate has no baseline (the row records
  the reason and is left out of the multiplicity family).

So with equally good models (d = 0) and margin >= 0, the probability that *any* row FAILs is at most ``alpha``
(Holm) — the false-alarm guarantee — and a candidate passes only when the data show non-inferiority.
Default ``alpha`` = ``(1 - confidence) / 2`` (0.025 for 95 % intervals: the one-sided level of a two-sided 95 %
interval). Resolution: the smallest attainable p-value is ``1 / (B + 1)``, so with Holm over ``k`` rows a PASS
needs ``B + 1 >= k / alpha`` replicates (e.g. 40 rows at alpha 0.025 need B >= 1600).
Verdict: FAIL if any row FAILs, else INCONCLUSIVE if any row is INCONCLUSIVE, else PASS.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import GateDef
from .errors import EngineInputError
from .registry import METRICS

OUTCOMES = ("PASS", "FAIL", "INCONCLUSIVE")


@dataclass
class GateReport:
    verdict: str
    multiplicity: str
    alpha: float
    gates: list = field(default_factory=list)

    @property
    def counts(self) -> dict:
        return {o: sum(1 for g in self.gates if g["outcome"] == o) for o in OUTCOMES}

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "multiplicity": self.multiplicity, "alpha": self.alpha,
                "counts": self.counts, "gates": self.gates}


def _targets(result, g: GateDef) -> list[str]:
    names = [s["slice"] for s in result.slices]
    spec = g.slices
    if spec == "overall":
        return ["overall"]
    if spec == "all":
        return names
    if isinstance(spec, str):
        spec = [spec]
    out = []
    for t in spec:
        if t in names:
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


def _adjust(pvals: list[float], alpha: float, method: str):
    """Return (rejected flags, level each p was compared with)."""
    k = len(pvals)
    rej = [False] * k
    lev = [alpha] * k
    if k == 0:
        return rej, lev
    order = sorted(range(k), key=lambda i: (pvals[i], i))
    if method == "none":
        return [p <= alpha for p in pvals], lev
    if method == "holm":
        stopped = False
        for rank, i in enumerate(order):
            lev[i] = alpha / (k - rank)
            if not stopped and pvals[i] <= lev[i]:
                rej[i] = True
            else:
                stopped = True
        return rej, lev
    # Benjamini-Hochberg
    cut = 0
    for rank, i in enumerate(order, start=1):
        if pvals[i] <= rank * alpha / k:
            cut = rank
    for rank, i in enumerate(order, start=1):
        lev[i] = (cut if rank <= cut else rank) * alpha / k
        rej[i] = rank <= cut
    return rej, lev


def _q(x, a):
    return float(np.quantile(x, a))


def _pct(a):
    v = 100 * (1 - a)
    return f"{v:.4g}%"


def apply_gates(result, gates: list[GateDef], *, multiplicity: str = "holm", alpha: float | None = None) -> GateReport:
    """Evaluate the gate matrix on an :class:`EvaluationResult`; see the module docstring for the rule."""
    if multiplicity not in ("holm", "bh", "none"):
        raise EngineInputError(f"multiplicity: expected 'holm', 'bh' or 'none', got {multiplicity!r}")
    alpha = float(alpha) if alpha is not None else (1.0 - result.confidence) / 2.0
    if not (0 < alpha < 0.5):
        raise EngineInputError(f"alpha: expected 0 < alpha < 0.5, got {alpha}")
    gates = list(gates)
    _validate(result, gates)
    by_name = {s["slice"]: s for s in result.slices}
    paired = result.baseline is not None and result.candidate is not None
    abs_role = result.candidate if result.candidate in result.roles else (result.roles[0] if len(result.roles) == 1
                                                                          else result.candidate)
    rows, tests = [], []  # tests: (row index, p_pass, p_fail, reps in "improvement" units, threshold, sign)
    for g in gates:
        info = METRICS[g.metric]
        hib = info.higher_is_better
        name = g.name or f"{g.kind}:{g.metric}"
        for sname in _targets(result, g):
            s = by_name.get(sname)
            role = result.candidate if g.kind == "non_inferiority" else abs_role
            row = {"gate": name, "metric": g.metric, "slice": sname, "kind": g.kind, "role": role, "value": None,
                   "baseline_value": None, "delta": None, "ci": None,
                   "margin": g.margin if g.kind == "non_inferiority" else None,
                   "min": g.min, "max": g.max, "bound": None, "n": s["n"] if s else 0, "outcome": "INCONCLUSIVE",
                   "rule": "", "p_value": None, "adjusted_alpha": None}
            rows.append(row)
            if s is None:
                row["rule"] = f"slice '{sname}' not found in the result → INCONCLUSIVE"
                continue
            if s["status"] != "ok":
                row["rule"] = f"slice too small (n = {s['n']} < min_size) → INCONCLUSIVE"
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
            else:
                if mv.get("value") is None:
                    row["rule"] = f"value undefined ({mv.get('undefined')}) → INCONCLUSIVE"
                    continue
                reps = result.replicates.get((sname, role, g.metric))
            if reps is None:
                row["rule"] = "no bootstrap replicates (n_boot = 0) → INCONCLUSIVE"
                continue
            reps = reps[~np.isnan(reps)]
            B = reps.size
            if g.kind == "non_inferiority":
                d = reps if hib else -reps
                p_pass = (1 + int(np.sum(d <= -g.margin))) / (B + 1)
                p_fail = (1 + int(np.sum(d >= -g.margin))) / (B + 1)
            else:
                pp, pf = [], []
                if g.min is not None:
                    pp.append((1 + int(np.sum(reps < g.min))) / (B + 1))
                    pf.append((1 + int(np.sum(reps >= g.min))) / (B + 1))
                if g.max is not None:
                    pp.append((1 + int(np.sum(reps > g.max))) / (B + 1))
                    pf.append((1 + int(np.sum(reps <= g.max))) / (B + 1))
                p_pass = max(pp)
                p_fail = min(1.0, len(pf) * min(pf))
            tests.append((len(rows) - 1, p_pass, p_fail, reps))
    rej_p, lev_p = _adjust([t[1] for t in tests], alpha, multiplicity)
    rej_f, lev_f = _adjust([t[2] for t in tests], alpha, multiplicity)
    adj_name = {"holm": "Holm-adjusted", "bh": "BH-adjusted", "none": "unadjusted"}[multiplicity]
    for k, (ri, p_pass, p_fail, reps) in enumerate(tests):
        row = rows[ri]
        g_kind = row["kind"]
        info = METRICS[row["metric"]]
        a = lev_p[k]
        lo, hi = _q(reps, a), _q(reps, 1 - a)
        row["ci"] = [lo, hi]
        if rej_p[k]:
            outcome, p, lvl = "PASS", p_pass, a
        elif rej_f[k]:
            outcome, p, lvl = "FAIL", p_fail, lev_f[k]
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
            parts = []
            if row["min"] is not None:
                parts.append(f"lower {_pct(lvl)} bound ({lo:.4g}) vs min ({row['min']:g})")
            if row["max"] is not None:
                parts.append(f"upper {_pct(lvl)} bound ({hi:.4g}) vs max ({row['max']:g})")
            row["bound"] = lo if row["min"] is not None else hi
            cmp = "≤" if outcome != "INCONCLUSIVE" else ">"
            row["rule"] = (f"{' and '.join(parts)} of {row['metric']} → {outcome} "
                           f"(p = {p:.4g} {cmp} {adj_name} level {lvl:.4g})")
    outcomes = [r["outcome"] for r in rows]
    verdict = "FAIL" if "FAIL" in outcomes else ("INCONCLUSIVE" if "INCONCLUSIVE" in outcomes or not rows else "PASS")
    return GateReport(verdict=verdict, multiplicity=multiplicity, alpha=alpha, gates=rows)
