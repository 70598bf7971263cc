"""Exact binary statistics: the count metrics, ROC AUC and average precision of sorted keys, and the additive
per-atom statistics of log loss, Brier and ECE.

A *key* is the float64 bit pattern of a score shifted left by one bit, OR the label; for scores in [0, 1] the integer
orders like (score, label), so sorting keys sorts rows canonically. Functions here see sorted keys (or the rows they
encode) and return exact numbers; where the keys live (memory or disk) is the storage's business (:mod:`.storage`,
:mod:`.spill`).
"""
from __future__ import annotations

import numpy as np

from .exact import ExactSum, add_grouped

EPS = np.finfo(np.float64).eps


def split_keys(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of keys."""
    return (key >> 1).view(np.float64), (key & 1).astype(np.int8)


def sorted_union(runs: list) -> np.ndarray:
    """The sorted concatenation of sorted in-memory key runs (the run itself when there is one)."""
    if not runs:
        return np.zeros(0, np.int64)
    return np.sort(np.concatenate(runs)) if len(runs) > 1 else runs[0]


def divide(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def count_metrics(tp, fp, tn, fn) -> dict:
    """All count metrics from (arrays of) the confusion counts; NaN where undefined."""
    P, N = tp + fn, tn + fp
    rec, spec = divide(tp, P), divide(tn, N)
    return {
        "accuracy": divide(tp + tn, P + N),
        "precision": divide(tp, tp + fp),
        "recall": rec,
        "f1": divide(2 * tp, 2 * tp + fp + fn),
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
    out["roc_auc"] = divide((pos * (negbelow + 0.5 * neg)).sum(-1), P * N)
    tp_ge = np.cumsum(pos[..., ::-1], -1)[..., ::-1]
    tot_ge = tp_ge + np.cumsum(neg[..., ::-1], -1)[..., ::-1]
    out["average_precision"] = divide((pos * divide(tp_ge, tot_ge)).sum(-1, where=pos > 0), P) if pos.size else np.nan
    out["log_loss"] = divide(ll, n)
    out["brier"] = divide(br, n)
    out["ece"] = divide(np.abs(ysum_e - ssum_e).sum(-1), n)
    return out


def empty_stats(n_ece_bins: int) -> dict:
    """The additive statistics of no rows (see :func:`add_rows`)."""
    return {"n": 0, "P": 0, "tp": 0, "fp": 0, "ll": ExactSum(), "br": ExactSum(), "ysum": np.zeros(n_ece_bins),
            "ssum": [ExactSum() for _ in range(n_ece_bins)]}


def add_rows(stats: dict, s, y, threshold, ece_edges, eps=EPS) -> dict:
    """Add rows sorted by (score, label) to the additive exact statistics ``stats`` of an atom: counts (rows,
    positives, tp and fp at the threshold), per ECE bin the label count and score sum, and the log loss and Brier
    sums. Sums are :class:`.exact.ExactSum`, so adding an atom's rows in consecutive sorted chunks gives the same
    statistics as adding them at once."""
    n = s.size
    P = int(np.count_nonzero(y))
    idx = int(np.searchsorted(s, threshold, side="left"))
    fn = int(np.count_nonzero(y[:idx]))
    stats["n"] += n
    stats["P"] += P
    stats["tp"] += P - fn
    stats["fp"] += (n - idx) - (P - fn)
    p1 = np.where(y == 1, s, 1 - s)
    stats["ll"].add(-np.log(np.clip(p1, eps, 1 - eps)))
    stats["br"].add((s - y) ** 2)
    E = ece_edges.size - 1
    bounds = np.concatenate([[0], np.searchsorted(s, ece_edges[1:-1], side="left"), [n]])
    stats["ysum"] += np.diff(np.concatenate([[0], np.cumsum(y, dtype=np.int64)])[bounds])  # integers: exact
    add_grouped(stats["ssum"], s, np.repeat(np.arange(E), np.diff(bounds)))
    return stats


def atom_stats(s, y, threshold, ece_edges, eps=EPS) -> dict:
    """The additive exact statistics of one atom's rows (sorted by (score, label)); see :func:`add_rows`."""
    return add_rows(empty_stats(ece_edges.size - 1), s, y, threshold, ece_edges, eps)


CHUNK = 1 << 20


def _label_bits(key):
    if np.little_endian:
        return key.view(np.uint8)[::8] & 1  # the low byte of each key, without an int64 temporary
    return (key & 1).astype(np.uint8)


def _has_score_ties(key) -> bool:
    for a in range(0, key.size - 1, CHUNK):
        k = key[a:a + CHUNK + 1]
        if np.any((k[1:] >> 1) == (k[:-1] >> 1)):
            return True
    return False


def rank_metrics_keys(key):
    """ROC AUC and AP from sorted (score, label) keys; the tie-free fast path works in bounded chunks."""
    n = key.size
    if n == 0 or _has_score_ties(key):
        return _rank_metrics(*split_keys(key))
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
        for a in range(0, P, CHUNK):
            pi = pos_idx[a:a + CHUNK]
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
