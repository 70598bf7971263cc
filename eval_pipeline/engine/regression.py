"""Regression from sums.

Point estimates (exact): per slice, sums over rows of e = p - y, |e|, e^2, |e| / max(|y|, eps) and of y, taken with
rows in a canonical order (sorted by their values), so they do not depend on row order or chunking; R^2 uses the
two-pass sum of squares about the slice mean, as scikit-learn.

Bootstrap (Poisson bootstrap of centred sums, studentized on a log scale):

* Resampling. Each row gets a Poisson(1) weight; a replicate is the vector of weighted sums T* = sum_i w_i x_i of the
  per-row terms x_i = (d, d^2, d^4; per paired model e, |e|, e^2, e^4, e^2 d^2, ape, ape^2) and the total weight,
  with d = y - mean(y) (centred and, like e and ape, scaled to unit size before anything else: adding a constant to
  label and predictions leaves every term, hence every interval, unchanged). Up to ``K_EXACT`` rows per slice get
  exact Poisson weights: all rows of a slice that small, otherwise the ``K_EXACT`` most extreme rows (largest
  standardised |d|, |e|, ape), the ones that make sums of powers non-normal. The remaining "bulk" is drawn as its
  exact Poisson total weight plus a normal vector with the bulk's exact centred covariance (a CLT approximation,
  accurate because the bulk no longer holds the extreme rows). The paired models of a family share the weights, so
  candidate - baseline replicates are paired.
* Interval. A plain percentile interval of a mean of a skewed term (e^2 above all) is too short on the pessimistic
  side: resamples that miss the few large errors have both a small RMSE and a small spread. So each replicate is
  studentized, t* = (phi* - phi) / se*, with phi the metric on a log scale (log MAE, log MSE, log MAPE,
  log(1 - R^2) = log(MSE / var(y)); mean error as is) and se* its delta-method standard error *from the same
  resample*. Replicates are returned reflected, phi - se * t*, mapped back to the metric's scale; their percentile
  interval is then the bootstrap-t interval. The log scale keeps every replicate in range (RMSE, MAE, MAPE > 0,
  R^2 < 1).
* Heavy tails. When the per-row term's variance is infinite or nearly (t(3) errors for RMSE, lognormal errors) no
  bootstrap interval holds at these sizes, and the samples that lack the rare huge errors are exactly the ones whose
  intervals miss. Each interval then carries a diagnostic and ``reliable = False`` (``out["diagnostics"]``) when the
  metric's per-row term has a sample kurtosis above ``KURT_FRAC * n`` (the O(kurtosis / n) term of the interval's
  coverage error is then not small) or a Hill tail-index estimate below ``TAIL_MIN`` (variance likely infinite).
"""
from __future__ import annotations

import math

import numpy as np

from . import bootstrap as bs
from .accumulate import RowFamily
from .catalogue import REGRESSION
from .columns import check_finite, column, float_array

EPS = np.finfo(np.float64).eps
K_EXACT = 4096  # rows per slice with exact Poisson weights (all rows below this size)
STEP = 1 << 18  # rows per chunk for the sums over the bulk (memory bound, fixed so the sums' order is fixed)
KURT_FRAC = 0.1  # flag when the per-row term's sample kurtosis exceeds KURT_FRAC * n
TAIL_MIN = 1.75  # flag when the Hill tail index of the per-row term is below this (variance infinite below 2)
HILL_FRAC, HILL_MIN = 0.02, 20  # Hill estimator on the top 2 % of rows (at least 20)

# columns of the per-row term matrix: common ones, then NPER per model of the family
D, D2, D4 = 0, 1, 2
NC, NPER = 3, 7
E, AE, E2, E4, E2D2, APE, APE2 = range(NPER)
TERM = {"mean_error": "e", "mae": "|e|", "rmse": "e^2", "mape": "|e|/|y|"}


class RegressionFamily(RowFamily):
    """Regression: a numeric label and one numeric prediction column per model (role), kept per row."""

    task_type = REGRESSION

    def read(self, config, batch, offset):
        y = float_array(column(batch, config.label), config.label, offset)
        check_finite(y, config.label, offset, "finite numeric labels")
        rows = {"label": y}
        for role in config.roles:
            name = config.pred_columns[role]
            p = float_array(column(batch, name), name, offset)
            check_finite(p, name, offset, f"finite predictions (role '{role}')")
            rows[f"score:{role}"] = p
        return rows

    def predictions(self, config, role, cat):
        return cat(f"score:{role}")

    def compute(self, merged, slices, **kw):
        return compute(merged, slices, **kw)  # the module's function, looked up at call time


def _terms(d, es, apes):
    """(m, F) per-row terms for one chunk of rows (already centred and scaled)."""
    X = np.empty((d.size, NC + NPER * len(es)))
    np.multiply(d, d, out=X[:, D2])
    X[:, D] = d
    np.multiply(X[:, D2], X[:, D2], out=X[:, D4])
    for q, (e, ape) in enumerate(zip(es, apes)):
        c = NC + NPER * q
        X[:, c + E] = e
        np.abs(e, out=X[:, c + AE])
        np.multiply(e, e, out=X[:, c + E2])
        np.multiply(X[:, c + E2], X[:, c + E2], out=X[:, c + E4])
        np.multiply(X[:, c + E2], X[:, D2], out=X[:, c + E2D2])
        X[:, c + APE] = ape
        np.multiply(ape, ape, out=X[:, c + APE2])
    return X


def _phi_se(metric, W, S, k):
    """Metric on its studentization scale and its delta-method standard error, from total weight W (b,) and
    weighted sums S (b, F) (the original sample is W = n, S = plain sums)."""
    c = NC + NPER * k
    with np.errstate(all="ignore"):
        if metric == "mean_error":
            m = S[:, c + E] / W
            return m, np.sqrt(np.maximum(S[:, c + E2] / W - m * m, 0) / W)
        if metric in ("mae", "mape", "rmse"):
            j1, j2 = {"mae": (AE, E2), "mape": (APE, APE2), "rmse": (E2, E4)}[metric]
            m = S[:, c + j1] / W
            return np.log(m), np.sqrt(np.maximum(S[:, c + j2] / W - m * m, 0) / W) / m
        # r2: phi = log(1 - R^2) = log(mse) - log(var y); influence e^2/mse - d^2/var y (d about the full-sample
        # mean: re-centring at the resample's mean changes it only at second order)
        m = S[:, c + E2] / W
        md = S[:, D] / W
        s2 = S[:, D2] / W - md * md
        mpsi2 = (S[:, c + E4] / (m * m) - 2 * S[:, c + E2D2] / (m * s2) + S[:, D4] / (s2 * s2)) / W
        mpsi = 1 - (S[:, D2] / W) / s2
        return np.log(m) - np.log(s2), np.sqrt(np.maximum(mpsi2 - mpsi * mpsi, 0) / W)


def _reflect(metric, value, se, t):
    """Bootstrap-t replicates mapped back to the metric: their percentile interval is the bootstrap-t interval."""
    with np.errstate(all="ignore"):
        if metric == "mean_error":
            return value - se * t
        if metric in ("mae", "mape"):
            return value * np.exp(-se * t)
        if metric == "rmse":
            return value * np.exp(-0.5 * se * t)
        return 1 - (1 - value) * np.exp(-se * t)


def _hill(a):
    """Hill estimate of the tail index of a = |x - mean(x)| (partitioned in place) on its top HILL_FRAC share
    (None if too few rows)."""
    n = a.size
    k = max(HILL_MIN, int(math.ceil(HILL_FRAC * n)))
    if n < k + 2:
        return None
    a.partition(n - k - 1)
    top = a[n - k - 1:]
    xk = top[0]
    if not xk > 0:
        return math.inf
    h = float(np.sum(np.log(top[1:] / xk))) / k
    return math.inf if h <= 0 else 1.0 / h


def _diagnose(x):
    """Tail diagnostic of one metric's per-row term x (n,)."""
    n = x.size
    a = np.abs(x - np.sum(x) / n)
    sq = a * a
    s2 = float(np.sum(sq))
    s4 = float(np.dot(sq, sq))
    del sq
    kurt = n * s4 / (s2 * s2) if s2 > 0 else 0.0  # sample kurtosis m4 / m2^2 (3 for a normal term)
    tail = _hill(a) if s2 > 0 else math.inf
    why = []
    if kurt > KURT_FRAC * n:
        why.append(f"sample kurtosis of the per-row term {kurt:.4g} > {KURT_FRAC:g} x n = {KURT_FRAC * n:.4g}")
    if tail is not None and tail < TAIL_MIN:
        why.append(f"tail index of the per-row term {tail:.3g} < {TAIL_MIN:g} (its variance is likely infinite)")
    return {"reliable": not why, "kurtosis": kurt, "kurtosis_limit": KURT_FRAC * n,
            "tail_index": None if tail is None or math.isinf(tail) else tail, "tail_index_limit": TAIL_MIN,
            "reason": ("heavy tails: " + "; ".join(why) + "; the interval may be too narrow") if why else None}


def _top_rows(score, k):
    """Sorted indices of the k largest scores; ties at the cut go to the lowest indices (a choice that depends on
    the values only, never on how a selection algorithm happens to visit them)."""
    n = score.size
    cut = np.partition(score, n - k)[n - k]
    above = np.flatnonzero(score > cut)
    at = np.flatnonzero(score == cut)[: k - above.size]
    return np.sort(np.concatenate([above, at]))


def _factor(C, k):
    """L with L @ L.T = C (C: covariance of the F terms, possibly singular), built so that the draw of the columns
    that do not involve ape depends on their own block of C only: those columns are invariant to a shift of the
    label, ape columns are not, and a joint eigen-decomposition would let the ape columns reshuffle every draw.
    Non-ape block: eigen-decomposition of its correlation matrix (unit diagonal, so conditioning does not depend on
    units). Ape block: regression on the non-ape block plus the residual covariance's own factor."""
    F = C.shape[0]
    ape = np.zeros(F, bool)
    for q in range(k):
        ape[[NC + NPER * q + APE, NC + NPER * q + APE2]] = True
    a, b = np.flatnonzero(~ape), np.flatnonzero(ape)
    perm = np.concatenate([a, b])

    def sym_factor(M):
        sc = np.sqrt(np.maximum(np.diag(M), 0))
        sc[sc == 0] = 1.0
        w, V = np.linalg.eigh(M / np.outer(sc, sc))
        return sc[:, None] * (V * np.sqrt(np.clip(w, 0, None)))

    Caa, Cba, Cbb = C[np.ix_(a, a)], C[np.ix_(b, a)], C[np.ix_(b, b)]
    La = sym_factor(Caa)
    G = Cba @ np.linalg.pinv(Caa, hermitian=True)  # regression of the ape columns on the others
    Lb = sym_factor((Cbb - G @ Cba.T + (Cbb - G @ Cba.T).T) / 2)
    L = np.zeros((F, F))
    L[np.ix_(a, np.arange(a.size))] = La
    L[np.ix_(b, np.arange(a.size))] = G @ La
    L[np.ix_(b, a.size + np.arange(b.size))] = Lb
    del perm
    return L


def _poisson1_table():
    """Poisson(1) inverse CDF on 16-bit buckets: LUT[u] is the variate for every uniform in bucket u, AMB[u] marks
    the few buckets (8 of 65536) that straddle a CDF step and need the exact comparison."""
    cdf, p, c, k = [], math.exp(-1.0), 0.0, 0
    while c < 1.0 and k < 40:
        c += p
        cdf.append(c)
        k += 1
        p /= k
    cdf = np.array(cdf)
    cdf = cdf[cdf < 1.0]
    grid = np.arange(65537) / 65536.0
    lo = np.searchsorted(cdf, grid[:-1], side="right")
    hi = np.searchsorted(cdf, np.nextafter(grid[1:], 0), side="right")
    return cdf, lo.astype(np.float64), lo != hi


_CDF1, _LUT1, _AMB1 = _poisson1_table()


def _poisson1(rng, shape):
    """Exact Poisson(1) variates by inversion (to float64 resolution), about twice as fast as ``rng.poisson``: a
    16-bit table lookup decides all but ~1e-4 of the draws; those get a full-precision uniform in their bucket."""
    m = int(np.prod(shape))
    u = np.frombuffer(rng.bytes(2 * m), dtype="<u2")  # little-endian: the same variates on every platform
    w = _LUT1[u]
    idx = np.flatnonzero(_AMB1[u])
    if idx.size:
        w[idx] = np.searchsorted(_CDF1, (u[idx] + rng.random(idx.size)) / 65536.0, side="right")
    return w.reshape(shape)


def _replicate_sums(X_exact, bulk, n_boot, seed, stream):
    """(W (B,), S (B, F)) Poisson-bootstrap totals: exact weights for the rows of X_exact, CLT draw for the bulk."""
    def block(i, size):
        rng = bs.block_rng(seed, stream, i)
        w = _poisson1(rng, (size, X_exact.shape[0]))
        W = w.sum(axis=1)
        S = w @ X_exact
        if bulk is not None:
            nb, mean_b, L = bulk
            wb = rng.poisson(float(nb), size).astype(np.float64)
            z = rng.standard_normal((size, L.shape[1]))
            W = W + wb
            S = S + wb[:, None] * mean_b[None, :] + z @ L.T
        return W, S

    blocks = bs.run_blocks(n_boot, block, threads=1)
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def _point_estimates(ys, preds, sel, roles, metrics, j, values, reasons):
    """Exact values (and undefined reasons) of slice ``j`` into ``values`` / ``reasons``; returns (n, sst, stats)
    with stats: role -> (sum of squared errors, sum of absolute percentage errors)."""
    n = ys.size
    mean_y = np.sum(ys) / n if n else 0.0
    sst = float(np.sum((ys - mean_y) ** 2)) if n else 0.0
    stats = {}
    for r in roles:
        e = preds[r][sel] - ys
        if n:
            ae = np.abs(e)
            sse = float(np.sum(e * e))
            sape = float(np.sum(ae / np.maximum(np.abs(ys), EPS)))
            v = {"mae": float(np.sum(ae)) / n, "rmse": float(np.sqrt(sse / n)),
                 "r2": 1 - sse / sst if (n >= 2 and sst > 0) else np.nan,
                 "mape": sape / n, "mean_error": float(np.sum(e)) / n}
            stats[r] = (sse, sape)
        for m in metrics:
            if n == 0:
                reasons[r][m][j] = "empty slice"
            elif m == "r2" and n < 2:
                reasons[r][m][j] = "fewer than 2 rows"
            elif m == "r2" and np.isnan(v["r2"]):
                reasons[r][m][j] = "constant label in the slice (total sum of squares is 0)"
            else:
                values[r][m][j] = v[m]
                continue
            values[r][m][j] = np.nan
    return n, sst, stats


class _ScaledSlice:
    """One slice's rows in units where the label spread, each model's RMSE and MAPE are 1: the studentized
    statistics are scale-free, and unit-size columns keep the sums of 4th powers and the covariance well
    conditioned."""

    def __init__(self, ys, preds, sel, roles, sst, stats):
        n = ys.size
        self.n, self.ys = n, ys
        sy = math.sqrt(sst / n) if sst > 0 else 1.0
        # d = y - mean(y) measured from one of the slice's own rows: y - y_ref is exact for labels on a common grid
        # whatever their offset, where y - mean(y) would carry the rounding of the offset's magnitude
        yr = ys - ys[0]
        self.d = (yr - np.sum(yr) / n) / sy
        del yr
        self.scale = {r: (math.sqrt(stats[r][0] / n) or 1.0, stats[r][1] / n or 1.0) for r in roles}
        self.ps = {r: preds[r][sel] for r in roles}
        self.ayinv = 1.0 / np.maximum(np.abs(ys), EPS)

    def cols(self, r, ix=slice(None)):
        """(scaled error, scaled absolute percentage error) of model ``r`` on rows ``ix``."""
        e = self.ps[r][ix] - self.ys[ix]
        return e / self.scale[r][0], np.abs(e) * self.ayinv[ix] / self.scale[r][1]

    def terms(self, fam, ix):
        return _terms(self.d[ix], *zip(*[self.cols(r, ix) for r in fam]))


def _model_diagnostics(sc, r, metrics, values_r, j, cache):
    """metric -> tail diagnostic of model ``r``'s interval in slice ``j`` (defined metrics only)."""
    e, ape = sc.cols(r)
    dr = {}
    for m in metrics:
        if values_r[m][j] != values_r[m][j]:  # undefined metric: no interval to qualify
            continue
        if m == "mean_error":
            x = e
        elif m == "mae":
            x = np.abs(e)
        elif m == "rmse":
            x = e * e
        elif m == "mape":
            x = ape
        else:
            # R^2 rests on two means, of e^2 and of (y - mean y)^2: it is as reliable as the worse of them
            if "d2" not in cache:
                cache["d2"] = _diagnose(sc.d * sc.d)
            de, dd = _diagnose(e * e), cache["d2"]
            dr[m] = dict(de if not de["reliable"] or dd["reliable"] else dd, term="e^2 and (y - mean y)^2")
            if not de["reliable"] and not dd["reliable"]:
                dr[m]["reason"] = f"e^2: {de['reason']}; (y - mean y)^2: {dd['reason']}"
            continue
        dr[m] = dict(_diagnose(x), term=TERM[m])
    return dr


def _family_sums(sc, fam):
    """(exact-row terms, bulk (rows, mean, covariance factor) or None, plain sums S0) of one family in one slice."""
    n = sc.n
    k = len(fam)
    if n <= K_EXACT:
        exact = slice(None)
        bulk = None
    else:
        # the K_EXACT rows with the largest standardised |d| or |e - mean e| get exact weights (not ape:
        # it changes with a shift of the label, and the choice of rows must not); ties go to the first rows
        score = np.abs(sc.d)
        for r in fam:
            e = sc.cols(r)[0]
            score = np.maximum(score, np.abs(e - np.sum(e) / n))
        exact = _top_rows(score, K_EXACT)
        del score
        is_bulk = np.ones(n, bool)
        is_bulk[exact] = False
    F = NC + NPER * k
    X_exact = sc.terms(fam, exact)
    S0 = np.zeros(F)
    for lo in range(0, n, STEP):
        S0 += sc.terms(fam, slice(lo, lo + STEP)).sum(axis=0)
    if n > K_EXACT:
        nb = n - K_EXACT
        sum_b = S0 - X_exact.sum(axis=0)
        mean_b = sum_b / nb
        C = np.zeros((F, F))
        for lo in range(0, n, STEP):
            Xc = sc.terms(fam, slice(lo, lo + STEP))[is_bulk[lo:lo + STEP]] - mean_b
            C += Xc.T @ Xc
        bulk = (nb, mean_b, _factor(C, k))
    return X_exact, bulk, S0


def _family_replicates(sc, fam, fam_idx, j, metrics, values, reps, n_boot, seed):
    """Bootstrap-t replicates of every defined metric of the family's models in slice ``j``, into ``reps``."""
    n = sc.n
    X_exact, bulk, S0 = _family_sums(sc, fam)
    Wb, Sb = _replicate_sums(X_exact, bulk, n_boot, seed, fam_idx * 1_000_003 + j)
    for q, r in enumerate(fam):
        for m in metrics:
            val = values[r][m][j]
            if val != val:
                continue
            phi0, se0 = (x[0] for x in _phi_se(m, np.array([float(n)]), S0[None, :], q))
            if not (np.isfinite(phi0) and se0 > 0):
                # degenerate (e.g. a perfect model: every resample gives the same value)
                reps[r][m][:, j] = val
                continue
            phi, se = _phi_se(m, Wb, Sb, q)
            with np.errstate(all="ignore"):
                t = np.where(se > 0, (phi - phi0) / se, np.where(phi == phi0, 0.0, np.nan))
            # mean error is studentized on its own scale (the others on a log scale, free of units):
            # back to the label's units
            reps[r][m][:, j] = _reflect(m, val, se0 * (sc.scale[r][0] if m == "mean_error" else 1.0), t)


def _delta_diagnostics(diag_j, fam, metrics):
    """A paired delta's interval is as reliable as both models' intervals."""
    b, c = fam
    for m in metrics:
        db, dc = diag_j["models"][b].get(m), diag_j["models"][c].get(m)
        if db is None or dc is None:
            continue
        why = [f"{role}: {dd['reason']}" for role, dd in (("baseline", db), ("candidate", dc))
               if not dd["reliable"]]
        diag_j["delta"][m] = {"reliable": not why, "reason": "; ".join(why) or None}


def compute(merged, slices, *, metrics, n_boot, seed, families, role_family):
    """Point estimates, bootstrap-t replicates and tail diagnostics per slice (see the module docstring):
    ``{"n", "n_positive", "values", "reasons", "reps", "diagnostics"}``."""
    S = len(slices)
    A = len(merged.atom_values)
    atom_in = np.stack([sl.atom_mask for sl in slices], axis=1) if A else np.zeros((0, S), bool)
    roles = merged.config.roles
    y0 = merged.label
    keys = [merged.atom, y0] + [merged.preds[r] for r in roles]
    order = np.lexsort(keys[::-1]) if y0.size else np.zeros(0, np.int64)
    y = y0[order]
    a = merged.atom[order]
    preds = {r: merged.preds[r][order] for r in roles}
    n_s = np.zeros(S, dtype=np.int64)
    values = {r: {m: np.full(S, np.nan) for m in metrics} for r in roles}
    reasons = {r: {m: [None] * S for m in metrics} for r in roles}
    reps = {r: {m: np.full((n_boot, S), np.nan) for m in metrics} for r in roles} if n_boot else {}
    diagnostics = {}
    for j in range(S):
        sel = atom_in[a, j] if A else np.zeros(0, bool)
        if sel.all():
            sel = slice(None)  # every row (the overall slice): views, not copies
        ys = y[sel]
        n, sst, stats = _point_estimates(ys, preds, sel, roles, metrics, j, values, reasons)
        n_s[j] = n
        if not n_boot or n < 2:
            continue
        sc = _ScaledSlice(ys, preds, sel, roles, sst, stats)
        cache = {}
        diag_j = {"models": {r: _model_diagnostics(sc, r, metrics, values[r], j, cache) for r in roles},
                  "delta": {}}
        diagnostics[j] = diag_j
        for fam_idx, fam in enumerate(families):
            _family_replicates(sc, fam, fam_idx, j, metrics, values, reps, n_boot, seed)
        if len(families) and len(families[0]) == 2:
            _delta_diagnostics(diag_j, families[0], metrics)
    return {"n": n_s, "n_positive": None, "values": values, "reasons": reasons, "reps": reps,
            "diagnostics": diagnostics}
