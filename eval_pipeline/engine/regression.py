"""Regression from sums.

Point estimates (exact): per slice, sums over rows of e = p - y, |e|, e^2, |e| / max(|y|, eps) and of y, taken with
rows in a canonical order (sorted by their values), so they do not depend on row order or chunking; R^2 uses the
two-pass sum of squares about the slice mean, as scikit-learn.

Bootstrap (moment-matched Poisson bootstrap, an approximation): with Poisson(1) row weights the vector of weighted
sums T* = sum_i w_i x_i, x_i = (1, y, y^2, e_r, |e_r|, e_r^2, ape_r for each paired model r), has exactly mean
sum_i x_i and covariance sum_i x_i x_i^T. Replicates draw T* from the normal distribution with these two exact
moments (per slice; the paired models share the draw), then apply each metric's formula to T*. This is the CLT
approximation of the Poisson bootstrap of the sums (skewness of the sums is not reproduced); replicates are
recentred on the exact point estimate like the other tasks.
"""
from __future__ import annotations

import numpy as np

from . import bootstrap as bs

EPS = np.finfo(np.float64).eps


def _metrics_from_sums(T, fam, metrics):
    """T: (F, b) sums vector -> role -> metric -> (b,)"""
    n, sy, syy = T[0], T[1], T[2]
    out = {}
    with np.errstate(all="ignore"):
        sst = syy - sy * sy / n
        for k, r in enumerate(fam):
            se, sae, see, sape = T[3 + 4 * k: 7 + 4 * k]
            out[r] = {"mae": sae / n, "rmse": np.sqrt(np.maximum(see, 0) / n), "r2": 1 - see / sst,
                      "mape": sape / n, "mean_error": se / n}
    return out


def compute(merged, slices, *, metrics, n_boot, seed, families, role_family):
    S = len(slices)
    A = len(merged.atom_values)
    atom_in = np.stack([sl.atom_mask for sl in slices], axis=1) if A else np.zeros((0, S), bool)
    roles = merged.spec.roles
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
    for j in range(S):
        sel = atom_in[a, j] if A else np.zeros(0, bool)
        ys = y[sel]
        n = ys.size
        n_s[j] = n
        cols = {}
        for r in roles:
            e = preds[r][sel] - ys
            ae = np.abs(e)
            cols[r] = (e, ae, e * e, ae / np.maximum(np.abs(ys), EPS))
            if n:
                mean_y = np.sum(ys) / n
                sst = float(np.sum((ys - mean_y) ** 2))
                sse = float(np.sum(cols[r][2]))
                v = {"mae": float(np.sum(ae)) / n, "rmse": float(np.sqrt(sse / n)),
                     "r2": 1 - sse / sst if (n >= 2 and sst > 0) else np.nan,
                     "mape": float(np.sum(cols[r][3])) / n, "mean_error": float(np.sum(e)) / n}
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
        if not n_boot or n < 2:
            continue
        for fam_idx, fam in enumerate(families):
            X = [np.ones(n), ys, ys * ys]
            for r in fam:
                X += list(cols[r])
            F = len(X)
            mom = np.zeros((F, F))
            step = 1 << 20
            for s0 in range(0, n, step):
                Xc = np.column_stack([x[s0:s0 + step] for x in X])
                mom += Xc.T @ Xc
            mean = mom[0]
            w, V = np.linalg.eigh(mom)
            L = V * np.sqrt(np.clip(w, 0, None))
            point = _metrics_from_sums(mean[:, None], fam, metrics)

            def block(i, size, L=L, mean=mean, fam=fam, fam_idx=fam_idx, j=j):
                rng = bs.block_rng(seed, fam_idx * 1_000_003 + j, i)
                z = rng.standard_normal((L.shape[1], size))
                return _metrics_from_sums(mean[:, None] + L @ z, fam, metrics)

            blocks = bs.run_blocks(n_boot, block, threads=1)
            for r in fam:
                for m in metrics:
                    raw = np.concatenate([b[r][m] for b in blocks])
                    reps[r][m][:, j] = raw - point[r][m][0] + values[r][m][j]
    return {"n": n_s, "n_positive": None, "values": values, "reasons": reasons, "reps": reps}
