"""Binary classification: exact point estimates and Poisson-bootstrap replicates.

Point estimates (exact):
    Per model, rows are sorted once by (score, label). For each slice the sorted subsequence gives the exact counts at
    the threshold (tp, fp, tn, fn), the distinct-score groups for ROC AUC (Mann-Whitney U in integer arithmetic) and
    average precision, and the per-row log loss / Brier / ECE sums, summed in that canonical order (so they do not
    depend on row order or chunking). Scores given as float32 (float16) are compared with the threshold and clipped
    for log loss in their own precision, as numpy and scikit-learn do (:func:`role_precision`).

Bootstrap replicates (Poisson, drawn per cell, never per row), two kinds of cells:
    - Count metrics (accuracy ... balanced accuracy) and ECE: cells (atom, label, grid bin of each paired model) on a
      fixed grid whose edges include the threshold and the ECE edges, so every count metric and every ECE bin's
      label total is an *exact* function of the cell weights; the ECE score totals use each cell's mean score.
    - ROC AUC, average precision, log loss, Brier: per-slice joint cells whose bin edges are order statistics of that
      slice's own scores (:mod:`.score_cells`), so the resampling keeps its resolution however narrow the band the
      slice's scores sit in, and two models with the same ranking get identical replicates.
    Both are joint over the paired models (a replicate reweights the same rows for baseline and candidate), and each
    replicate is recentred on the exact point estimate: exact + (binned replicate - binned point). Replicates are
    then kept inside the metric's range (``MetricInfo.range``) and the interval is their percentile interval.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import bootstrap as bs
from . import score_cells
from .exact import ExactSum, add_grouped, exact_sum
from .spill import load_rows

COUNT_METRICS = ("accuracy", "precision", "recall", "f1", "specificity", "balanced_accuracy")
SCORE_METRICS = ("roc_auc", "average_precision", "log_loss", "brier", "ece")
EPS = np.finfo(np.float64).eps


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def count_metrics(tp, fp, tn, fn) -> dict:
    """All count metrics from (arrays of) the confusion counts; NaN where undefined."""
    P, N = tp + fn, tn + fp
    rec, spec = _div(tp, P), _div(tn, N)
    return {
        "accuracy": _div(tp + tn, P + N),
        "precision": _div(tp, tp + fp),
        "recall": rec,
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "specificity": spec,
        "balanced_accuracy": np.where((P > 0) & (N > 0), (rec + spec) / 2, np.nan),
    }


def undefined_reason(metric: str, n: int, P: int, tp: int, fp: int) -> str | None:
    N = n - P
    if n == 0:
        return "empty slice"
    if metric in ("precision",) and tp + fp == 0:
        return "no predicted positives at the threshold (tp + fp = 0)"
    if metric in ("recall", "average_precision") and P == 0:
        return "no positive labels in the slice"
    if metric == "f1" and P == 0 and tp + fp == 0:
        return "no positive labels and no predicted positives"
    if metric == "specificity" and N == 0:
        return "no negative labels in the slice"
    if metric in ("balanced_accuracy", "roc_auc") and (P == 0 or N == 0):
        return "single-class slice (needs both labels)"
    return None


def hist_metrics(pos, neg, tb, ll, br, ysum_e, ssum_e) -> dict:
    """Metrics from weighted histograms. pos/neg: (..., G) weights per score bin (ascending); tb: first predicted-
    positive bin; ll/br: (...) weighted loss sums; ysum_e/ssum_e: (..., E) per ECE bin."""
    P = pos.sum(-1)
    N = neg.sum(-1)
    n = P + N
    tp = pos[..., tb:].sum(-1)
    fp = neg[..., tb:].sum(-1)
    out = count_metrics(tp, fp, N - fp, P - tp)
    negbelow = np.cumsum(neg, -1) - neg
    out["roc_auc"] = _div((pos * (negbelow + 0.5 * neg)).sum(-1), P * N)
    tp_ge = np.cumsum(pos[..., ::-1], -1)[..., ::-1]
    tot_ge = tp_ge + np.cumsum(neg[..., ::-1], -1)[..., ::-1]
    out["average_precision"] = _div((pos * _div(tp_ge, tot_ge)).sum(-1, where=pos > 0), P) if pos.size else np.nan
    out["log_loss"] = _div(ll, n)
    out["brier"] = _div(br, n)
    out["ece"] = _div(np.abs(ysum_e - ssum_e).sum(-1), n)
    return out


def _slice_keys(merged, role, atoms):
    runs = merged.runs.get(role, {})
    parts = [x for aid in atoms for x in runs.get(int(aid), [])]
    if not parts:
        return np.zeros(0, np.int64)
    return np.sort(np.concatenate(parts)) if len(parts) > 1 else parts[0]


def role_precision(merged, role):
    """(threshold, log-loss eps) of one model in its scores' own precision, as scikit-learn and numpy treat them:
    float32 scores are compared with float32(threshold) (numpy's ``s >= t``) and clipped with float32's machine
    epsilon (``sklearn.metrics.log_loss``). Scores are float64 unless every batch delivered them narrower."""
    ftype = {16: np.float16, 32: np.float32}.get(merged.score_bits.get(role, 64), np.float64)
    return float(ftype(merged.spec.threshold)), float(np.finfo(ftype).eps)


def _atom_stats(s, y, threshold, ece_edges, eps=EPS):
    """Additive exact statistics of one atom (rows sorted by (score, label)); loss and score sums are
    :class:`.exact.ExactSum` (exact, so they do not depend on the order or grouping of rows)."""
    n = s.size
    P = int(np.count_nonzero(y))
    idx = int(np.searchsorted(s, threshold, side="left"))
    fn = int(np.count_nonzero(y[:idx]))
    p1 = np.where(y == 1, s, 1 - s)
    E = ece_edges.size - 1
    bounds = np.concatenate([[0], np.searchsorted(s, ece_edges[1:-1], side="left"), [n]])
    ysum = np.diff(np.concatenate([[0], np.cumsum(y, dtype=np.int64)])[bounds]).astype(np.float64)
    ssum = [ExactSum() for _ in range(E)]
    add_grouped(ssum, s, np.repeat(np.arange(E), np.diff(bounds)))
    return {"n": n, "P": P, "tp": P - fn, "fp": (n - idx) - (P - fn),
            "ll": ExactSum().add(-np.log(np.clip(p1, eps, 1 - eps))), "br": ExactSum().add((s - y) ** 2),
            "ysum": ysum, "ssum": ssum}


_CHUNK = 1 << 20


def _label_bits(key):
    if np.little_endian:
        return key.view(np.uint8)[::8] & 1  # the low byte of each key, without an int64 temporary
    return (key & 1).astype(np.uint8)


def _has_score_ties(key) -> bool:
    for a in range(0, key.size - 1, _CHUNK):
        k = key[a:a + _CHUNK + 1]
        if np.any((k[1:] >> 1) == (k[:-1] >> 1)):
            return True
    return False


def _rank_metrics_keys(key):
    """ROC AUC and AP from sorted (score, label) keys; the tie-free fast path works in bounded chunks."""
    n = key.size
    if n == 0 or _has_score_ties(key):
        return _rank_metrics((key >> 1).view(np.float64), (key & 1).astype(np.int8))
    pos_idx = np.flatnonzero(_label_bits(key))
    P = int(pos_idx.size)
    N = n - P
    auc = ap = np.nan
    if P:
        # no tied scores: U = sum of positive positions - P (P - 1) / 2; AP from each positive's own threshold
        if N:
            u = int(pos_idx.sum(dtype=np.int64)) - P * (P - 1) // 2
            auc = u / (P * N)
        tot = 0.0
        for a in range(0, P, _CHUNK):
            pi = pos_idx[a:a + _CHUNK]
            tot += float(np.sum((P - np.arange(a, a + pi.size)) / (n - pi)))
        ap = tot / P
    return auc, ap


def _rank_metrics(s, y):
    """Exact ROC AUC (integer Mann-Whitney U) and average precision of rows sorted by (score, label)."""
    n = s.size
    pos_idx = np.flatnonzero(y)
    P = int(pos_idx.size)
    N = n - P
    auc = ap = np.nan
    cumy = np.cumsum(y, dtype=np.int64)
    if n and P:
        ends = np.append(np.flatnonzero(s[1:] != s[:-1]), n - 1)
        cp = cumy[ends]
        cn = ends + 1 - cp
        pos_g = np.diff(cp, prepend=0)
        neg_g = np.diff(cn, prepend=0)
        if N:
            auc = int(np.sum(pos_g * (2 * (cn - neg_g) + neg_g))) / (2 * P * N)
        has = pos_g > 0
        tp_ge = P - (cp - pos_g)
        tot_ge = n - (ends + 1 - (pos_g + neg_g))
        ap = float(np.sum(pos_g[has] * (tp_ge[has] / tot_ge[has]))) / P
    return auc, ap


def compute(merged, slices, *, metrics, threshold, ece_bins, n_boot, seed, families, role_family):
    spec = merged.spec
    S = len(slices)
    n_atoms = len(merged.atom_values)
    atom_in = np.stack([sl.atom_mask for sl in slices], axis=1) if n_atoms else np.zeros((0, S), bool)  # (A, S)
    ece_edges = np.linspace(0.0, 1.0, ece_bins + 1)
    n_s = np.array([int(merged.atom_n[atom_in[:, j]].sum()) for j in range(S)], dtype=np.int64)
    want_rank = any(m in metrics for m in ("roc_auc", "average_precision"))
    values, reasons, counts_info = {}, {}, {}
    role_thr, role_eps = {}, {}
    for role in spec.roles:
        threshold, eps = role_thr[role], role_eps[role] = role_precision(merged, role)
        vals = {m: np.full(S, np.nan) for m in metrics}
        why = {m: [None] * S for m in metrics}
        npos = np.zeros(S, dtype=np.int64)
        atom_keys = {}
        cfg = spec.spill
        if cfg is not None:  # external-memory mode (.spill): same numbers, bounded memory
            from . import spill as _sp

            role_runs = merged.runs.get(role, {})
            stats = {aid: _sp.atom_stats(role_runs.get(aid, []), threshold, ece_edges, cfg.rows, cfg.budget, eps)
                     for aid in range(n_atoms)}
        else:
            for aid in range(n_atoms):  # one sorted array per atom; drop the runs as we go to bound peak memory
                atom_keys[aid] = _slice_keys(merged, role, [aid])
                merged.runs.get(role, {}).pop(aid, None)
            stats = {aid: _atom_stats((k >> 1).view(np.float64), (k & 1).astype(np.int8), threshold, ece_edges, eps)
                     for aid, k in atom_keys.items()}
        for j in range(S):
            atoms = np.flatnonzero(atom_in[:, j])
            st = [stats[int(a)] for a in atoms]
            n = sum(x["n"] for x in st)
            P = sum(x["P"] for x in st)
            tp = sum(x["tp"] for x in st)
            fp = sum(x["fp"] for x in st)
            v = {k: float(x) for k, x in count_metrics(*(np.array(c, dtype=np.float64)
                                                          for c in (tp, fp, n - P - fp, P - tp))).items()}
            if n:
                v["log_loss"] = ExactSum.total(x["ll"] for x in st).value() / n
                v["brier"] = ExactSum.total(x["br"] for x in st).value() / n
                ysum = np.sum([x["ysum"] for x in st], axis=0)  # integer counts: exact
                ssum = np.array([ExactSum.total(x["ssum"][e] for x in st).value() for e in range(ece_bins)])
                v["ece"] = exact_sum(np.abs(ysum - ssum)) / n
            else:
                v["log_loss"] = v["brier"] = v["ece"] = np.nan
            v["roc_auc"] = v["average_precision"] = np.nan
            if want_rank and n and cfg is not None:
                runs = [r for a in atoms for r in role_runs.get(int(a), [])]
                v["roc_auc"], v["average_precision"] = _sp.rank_metrics(runs, n, P, cfg.rows, cfg.budget, cfg)
            elif want_rank and n:
                if atoms.size == 1:
                    key = atom_keys[int(atoms[0])]
                else:
                    key = np.concatenate([atom_keys[int(a)] for a in atoms])
                    key.sort()  # in place: no second copy
                v["roc_auc"], v["average_precision"] = _rank_metrics_keys(key)
                del key
            npos[j] = P
            for m in metrics:
                vals[m][j] = v[m]
                why[m][j] = undefined_reason(m, n, P, tp, fp) if np.isnan(v[m]) else None
        del atom_keys
        if cfg is not None:
            merged.runs.pop(role, None)
        values[role], reasons[role] = vals, why
        counts_info[role] = npos
    reps = {}
    if n_boot > 0 and merged.n_rows > 0:
        grid_metrics = [m for m in metrics if m not in score_cells.METRICS]
        cell_metrics = [m for m in metrics if m in score_cells.METRICS]
        rows = merged.rows
        for fam_idx, fam in enumerate(families):
            fam_reps = {r: {} for r in fam}
            if grid_metrics:
                got = _bootstrap_family(fam_idx, fam, merged, atom_in, values, grid_metrics, role_thr, ece_edges,
                                        n_boot, seed)
                for r in got:
                    fam_reps[r].update(got[r])
            if cell_metrics:
                got = score_cells.replicates(rows, load_rows, atom_in, n_s, fam, fam_idx, values, cell_metrics,
                                             role_eps, ece_edges, n_boot, seed)
                for r in got:
                    fam_reps[r].update(got[r])
            reps.update(fam_reps)
        merged.rows = []
    return {"n": n_s, "n_positive": counts_info[spec.roles[0]] if spec.roles else None,
            "values": values, "reasons": reasons, "reps": reps}


def _bootstrap_family(fam_idx, fam, merged, atom_in, values, metrics, role_thr, ece_edges, n_boot, seed):
    from .binary_cells import Q_BR, Q_LL, Q_S

    A, S = atom_in.shape
    E = ece_edges.size - 1
    edges = merged.spec.grid
    G = edges.size - 1
    cells, counts, sums = merged.cells[fam_idx]
    C = cells.size
    if C == 0:
        return {}
    rest = cells.copy()
    cell_bins = {}
    for role in reversed(fam):
        rest, cell_bins[role] = np.divmod(rest, G)
    cell_atom, cell_y = np.divmod(rest, 2)
    ci, si = np.nonzero(atom_in[cell_atom])  # (cell, slice) memberships
    cnt_f = counts.astype(np.float64)
    eb_of_bin = np.clip(np.searchsorted(ece_edges, edges[:-1], side="right") - 1, 0, E - 1)
    rows, cols, data, layout, off = [], [], [], {}, 0
    for k, role in enumerate(fam):
        ll_mean = sums[3 * k] / Q_LL / cnt_f
        br_mean = sums[3 * k + 1] / Q_BR / cnt_f
        s_mean = sums[3 * k + 2] / Q_S / cnt_f
        b = cell_bins[role]
        h0 = off
        ll0 = h0 + S * 2 * G
        br0 = ll0 + S
        ss0 = br0 + S
        layout[role] = (h0, ll0, br0, ss0)
        off = ss0 + S * E
        rows += [ci, ci, ci, ci]
        cols += [h0 + (si * 2 + cell_y[ci]) * G + b[ci], ll0 + si, br0 + si, ss0 + si * E + eb_of_bin[b[ci]]]
        data += [np.ones(ci.size), ll_mean[ci], br_mean[ci], s_mean[ci]]
    MT = sp.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(C, off)).T.tocsr()
    agg = np.zeros((G, E))
    agg[np.arange(G), eb_of_bin] = 1.0

    def metrics_from(H):  # H: (K, b)
        out = {}
        for role in fam:
            h0, ll0, br0, ss0 = layout[role]
            h = H[h0:ll0].reshape(S, 2, G, -1)
            neg, pos = np.moveaxis(h[:, 0], 1, -1), np.moveaxis(h[:, 1], 1, -1)  # (S, b, G)
            ssum_e = np.moveaxis(H[ss0:ss0 + S * E].reshape(S, E, -1), 1, -1)
            tb = int(np.searchsorted(edges, role_thr[role], side="left"))  # the threshold is a grid edge
            out[role] = hist_metrics(pos, neg, tb, H[ll0:ll0 + S], H[br0:br0 + S], pos @ agg, ssum_e)
        return out  # role -> metric -> (S, b)

    point = metrics_from(MT @ cnt_f[:, None])

    def block(i, size):
        W = bs.poisson_cells(bs.block_rng(seed, fam_idx, i), counts, size)
        return metrics_from(MT @ W)

    blocks = bs.run_blocks(n_boot, block)
    reps = {}
    for role in fam:
        reps[role] = {}
        for m in metrics:
            r = np.concatenate([blk[role][m] for blk in blocks], axis=1).T  # (B, S)
            reps[role][m] = r - point[role][m][:, 0][None, :] + values[role][m][None, :]
    return reps
