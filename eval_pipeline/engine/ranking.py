"""Ranking (``task_type: ranking``): per-query metrics, merged across batches, with a query-level bootstrap.

Input: one row per (query, document): the query id column, a graded relevance label (finite, >= 0) and, per model,
one score (higher = ranked earlier). Rows of a query may arrive in any batch and any order: the store keeps every
row (query key, label, scores, slice atom) until ``finish``; merging concatenates. Per-query values are computed
after the merge, so they do not depend on chunking or row order.

Metrics of one query (positions 1-based, ``k`` the cutoff, ``rel_i = label_i >= relevance_min``, ``R`` the number of
relevant documents of the query; ``@k`` omitted = the whole list):

* ``ndcg@k``: DCG@k / IDCG@k with gain = label (linear, as scikit-learn; not 2^label - 1) and discount
  1 / log2(position + 1); IDCG@k is the DCG@k of the labels sorted descending. Equal to
  ``sklearn.metrics.ndcg_score([labels], [scores], k=k)`` (``ignore_ties=False``).
* ``map@k``: AP@k = (1 / min(k, R)) * sum over relevant documents at positions i <= k of precision@i. The
  denominator min(k, R) (common in IR and LTR libraries) keeps a perfect top k at 1; trec_eval's ``map_cut`` divides
  by R instead, which caps a query with more than k relevant documents below 1.
* ``mrr`` / ``mrr@k``: 1 / position of the first relevant document (0 when none is in the top k).
* ``recall@k``: relevant documents in the top k / R.  ``precision@k``: relevant documents in the top k / k (TREC's
  P@k: a query with fewer than k documents cannot reach 1).

Ties: documents with equal scores are in no particular order, so every metric is its *expected value over all
orderings of tied documents* (McSherry & Najork, ECIR 2008). For NDCG that is exactly scikit-learn's tie-averaged DCG;
for the others it is computed in closed form (AP: the expected precision at a tied relevant document's position is
linear in the number of other relevant documents of the tie group above it, a hypergeometric mean; MRR: the position
of the first relevant document of a tie group follows P(J = j) = C(g - j, r - 1) / C(g, r)). A constant scorer thus
gets the metric of a random ranking, not of the input order.

Queries without relevant documents (``no_relevant``): ``"skip"`` (default) leaves them out of a metric whose value is
undefined for them (NDCG: IDCG = 0, i.e. every label is 0; the others: R = 0) and reports how many were skipped;
``"zero"`` counts them as 0 (scikit-learn's convention for NDCG of an all-zero query).

Slice value of a query: slices are query attributes; a slice column must be constant within a query, otherwise the
engine refuses the input naming the column and the query (a document-level attribute would change the ranking
problem, not select queries). A slice's ``n`` (and ``slices.min_size``) counts *queries*.

Bootstrap (query-level, i.e. cluster bootstrap): each query gets a Poisson(1) weight per replicate; a replicate's
metric is the weighted mean of the per-query values over the slice's queries (defined ones only). The weight of a
query is a function of the seed, the replicate index and the query id only (a SplitMix64 counter hash of a 64-bit
BLAKE2b key of the id), so it does not depend on row order, chunking or which other queries exist, and baseline and
candidate get the same weights (paired deltas).
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import scipy.sparse as sp
from scipy.special import gammaln

from . import bootstrap as bs
from .accumulate import RowFamily
from .catalogue import RANKING, ranking_metric
from .columns import check_finite, codes_and_uniques, column, float_array, raise_bad
from .errors import EngineInputError

NO_RELEVANT = ("skip", "zero")
_U64 = np.uint64
_MASK = (1 << 64) - 1
# cumulative Poisson(1) probabilities; P(w > 24) < 1e-25, far below the 2**-53 resolution of the uniforms
_POISSON_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(25)])


# -- query ids ------------------------------------------------------------------------------------------------------
def _query_text(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return f"b:{bool(value)}"
    if isinstance(value, (int, np.integer)):
        return f"i:{int(value)}"
    if isinstance(value, (float, np.floating)):
        return f"i:{int(value)}" if float(value).is_integer() else f"f:{float(value)!r}"
    return f"s:{value}"


def query_key(value) -> int:
    """A stable 64-bit key of a query id (the same in every process; 3 and 3.0 are the same query)."""
    return int.from_bytes(hashlib.blake2b(_query_text(value).encode(), digest_size=8).digest(), "little")


def _query_keys(col, name: str, offset: int):
    codes, uniq = codes_and_uniques(col)
    bad = codes < 0
    if bad.any():
        raise_bad(name, "a query id on every row (no null)", bad, np.full(codes.size, None, dtype=object), offset)
    keys = np.array([query_key(u) for u in uniq], dtype=_U64)
    return keys[codes], dict(zip(keys.tolist(), uniq))


# -- the family -----------------------------------------------------------------------------------------------------
class RankingFamily(RowFamily):
    """Ranking: per row the query key, the graded label and one score per model; per-query values after the merge."""

    task_type = RANKING

    def read(self, config, batch, offset):
        keys, names = _query_keys(column(batch, config.query), config.query, offset)
        y = float_array(column(batch, config.label), config.label, offset)
        check_finite(y, config.label, offset, "finite relevance labels")
        if (y < 0).any():
            raise_bad(config.label, "relevance labels >= 0 (graded relevance)", y < 0, y, offset)
        rows = {"label": y, "query": keys, "query_names": names}
        for role in config.roles:
            name = config.pred_columns[role]
            s = float_array(column(batch, name), name, offset)
            check_finite(s, name, offset, f"finite scores (role '{role}')")
            rows[f"score:{role}"] = s
        return rows

    def predictions(self, config, role, cat):
        return cat(f"score:{role}")

    def finish(self, config, store, merged, lut):
        names: dict = {}
        for ch in store:
            for k, v in ch["query_names"].items():
                if _query_text(names.setdefault(k, v)) != _query_text(v):
                    raise EngineInputError(f"column '{config.query}': query ids {names[k]!r} and {v!r} have the "
                                           f"same 64-bit key; rename one of them")
        keys = np.concatenate([ch["query"] for ch in store]) if store else np.zeros(0, _U64)
        super().finish(config, store, merged, lut)
        merged.query_key = keys
        merged.query_names = names

    def compute(self, merged, slices, **kw):
        return compute(merged, slices, **kw)


# -- per-query values -------------------------------------------------------------------------------------------------
class _Ranked:
    """The rows of every query in one model's ranked order (query, score descending, label ascending) with their
    tie groups: the structure every metric is computed from."""

    def __init__(self, qidx, label, score, relevance_min):
        order = np.lexsort((label, -score, qidx))
        q, s = qidx[order], score[order]
        self.y = label[order]
        self.rel = (self.y >= relevance_min).astype(np.float64)
        n = q.size
        self.qstart = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
        qsize = np.diff(np.r_[self.qstart, n])
        self.pos = np.arange(n) - np.repeat(self.qstart, qsize)  # 0-based position within the query
        new = np.r_[True, (q[1:] != q[:-1]) | (s[1:] != s[:-1])]
        self.gstart = np.flatnonzero(new)
        gsize = np.diff(np.r_[self.gstart, n])
        gq = q[self.gstart]
        self.qgstart = np.flatnonzero(np.r_[True, gq[1:] != gq[:-1]])  # first group of each query
        self.before = np.repeat(self.pos[self.gstart], gsize)  # per row: documents above its tie group
        self.g = np.repeat(gsize, gsize).astype(np.float64)  # per row: size of its tie group
        self.j = (self.pos - self.before + 1).astype(np.float64)  # per row: 1-based position inside its group
        r_g = np.add.reduceat(self.rel, self.gstart)
        self.r = np.repeat(r_g, gsize)  # per row: relevant documents of its group
        cum = np.r_[0.0, np.cumsum(self.rel)]
        rb_g = cum[self.gstart] - np.repeat(cum[self.qstart], np.diff(np.r_[self.qgstart, self.gstart.size]))
        self.r_before = np.repeat(rb_g, gsize)  # per row: relevant documents above its group
        self.R = np.add.reduceat(self.rel, self.qstart)  # per query

    def per_query(self, x):
        return np.add.reduceat(x, self.qstart)

    def per_group(self, x):
        return np.add.reduceat(x, self.gstart)


def _discount(pos, k):
    d = 1.0 / np.log2(pos + 2.0)
    return np.where(pos < k, d, 0.0)


def _ndcg(rk: _Ranked, ideal_y, k):
    d = _discount(rk.pos, k)
    gains = rk.per_group(rk.y) / np.diff(np.r_[rk.gstart, rk.y.size])  # mean gain of each tie group
    dcg = np.add.reduceat(gains * rk.per_group(d), rk.qgstart)
    idcg = rk.per_query(ideal_y * d)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / idcg, 0.0), idcg > 0


def _hits(rk: _Ranked, k):
    """Expected relevant documents in the top k (tied groups straddling k contribute in proportion)."""
    inside = np.clip(k - rk.before, 0, rk.g) / rk.g  # per row: share of its group inside the top k
    return rk.per_query(rk.rel * inside)


def _ap(rk: _Ranked, k):
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(rk.g > 1, (rk.r - 1) / np.maximum(rk.g - 1, 1), 0.0)
        rank = rk.before + rk.j
        term = (rk.r / rk.g) * (rk.r_before + 1 + (rk.j - 1) * c) / rank
    term = np.where((rk.r > 0) & (rank <= k), term, 0.0)
    denom = np.minimum(k, rk.R)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rk.R > 0, rk.per_query(term) / denom, 0.0)


def _log_comb(a, b):
    return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)


def _rr(rk: _Ranked, k):
    first = (rk.r > 0) & (rk.r_before == 0)  # rows of the first tie group holding a relevant document
    g, r, j = rk.g, np.maximum(rk.r, 1), rk.j
    ok = first & (g - j >= r - 1)
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.exp(_log_comb(np.where(ok, g - j, 0), np.where(ok, r - 1, 0)) - _log_comb(g, r))
    rank = rk.before + j
    return rk.per_query(np.where(ok & (rank <= k), p / rank, 0.0))


def query_values(qidx, label, score, metrics, relevance_min):
    """metric -> (per-query value, per-query defined flag), queries in ``qidx`` order (0 .. Q-1, all present)."""
    rk = _Ranked(qidx, label, score, relevance_min)
    ideal_y = None
    out = {}
    has_rel = rk.R > 0
    for m in metrics:
        base, k = ranking_metric(m)
        k = math.inf if k is None else k
        if base == "ndcg":
            if ideal_y is None:
                ideal_y = label[np.lexsort((-label, qidx))]
            out[m] = _ndcg(rk, ideal_y, k)
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            if base == "recall":
                v = np.where(has_rel, _hits(rk, k) / rk.R, 0.0)
            elif base == "precision":
                v = _hits(rk, k) / k
            elif base == "map":
                v = _ap(rk, k)
            else:
                v = _rr(rk, k)
        out[m] = (v, has_rel)
    return out


# -- query-level bootstrap weights ------------------------------------------------------------------------------------
def _splitmix64(x):
    z = x + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def query_weights(keys: np.ndarray, seed: int, start: int, size: int) -> np.ndarray:
    """(Q, size) Poisson(1) weights of replicates ``start .. start + size - 1``: a function of (seed, replicate,
    query key) only."""
    with np.errstate(over="ignore"):
        base = _splitmix64(keys.astype(_U64) ^ _splitmix64(np.array([int(seed) & _MASK], dtype=_U64)))
        b = np.arange(start + 1, start + size + 1, dtype=_U64) * _U64(0xD1B54A32D192ED03)
        x = _splitmix64(base[:, None] + b[None, :])
    u = (x >> _U64(11)).astype(np.float64) * 2.0 ** -53
    return np.searchsorted(_POISSON_CDF, u, side="right").astype(np.float64)


# -- compute ----------------------------------------------------------------------------------------------------------
def _query_atoms(merged, qidx):
    """The slice atom of each query; refused when a slice column varies within a query."""
    atom = merged.atom
    order = np.lexsort((atom, qidx))
    a, q = atom[order], qidx[order]
    start = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    end = np.r_[start[1:], q.size] - 1
    lo, hi = a[start], a[end]
    if (lo != hi).any():
        i = int(np.flatnonzero(lo != hi)[0])
        va, vb = merged.atom_values[lo[i]], merged.atom_values[hi[i]]
        cols = [c for c, x, y in zip(merged.config.slice_columns, va, vb) if x != y]
        labels = [lab for lab, x, y in zip(merged.atom_labels[lo[i]], va, vb) if x != y]
        other = [lab for lab, x, y in zip(merged.atom_labels[hi[i]], va, vb) if x != y]
        qname = merged.query_names.get(int(merged.query_key[order[start[i]]]))
        raise EngineInputError(
            f"slice column '{cols[0]}' varies within query {qname!r} of column '{merged.config.query}' "
            f"(values {labels[0]} and {other[0]}); ranking slices must be query attributes, constant within a query")
    return lo


def _kind(metric: str) -> str:
    """Which queries a metric is defined on: NDCG needs a positive label, the others a relevant document."""
    return "ndcg" if ranking_metric(metric)[0] == "ndcg" else "relevant"


def _weighted_sums(merged, slices, metrics, qidx, Q):
    """The sparse (slice x feature, query) matrix whose product with query weights gives, per slice, the weighted sum
    of every (role, metric) value over its defined queries, then the weighted count of defined queries per kind."""
    config = merged.config
    S = len(slices)
    member = np.zeros((S, 0), bool)
    if Q:
        qatom = _query_atoms(merged, qidx)
        member = np.stack([sl.atom_mask[qatom] for sl in slices])  # (S, Q)
    kinds = list(dict.fromkeys(_kind(m) for m in metrics))
    defined, feats = {}, []
    for r in config.roles:
        vals = query_values(qidx, merged.label, merged.preds[r], metrics, config.relevance_min) if Q else {}
        for m in metrics:
            v, d = vals[m] if Q else (np.zeros(0), np.zeros(0, bool))
            d = np.ones(Q, bool) if config.no_relevant == "zero" else d
            defined.setdefault(_kind(m), d)  # the same for every role: it depends on the labels only
            feats.append(np.where(d, v, 0.0))
    feats += [defined[k].astype(np.float64) for k in kinds]
    F = len(feats)
    V = np.stack(feats)
    si, qi = np.nonzero(member)
    rows = (si[:, None] * F + np.arange(F)[None, :]).ravel()
    MX = sp.csr_matrix((V[:, qi].T.ravel(), (rows, np.repeat(qi, F))), shape=(S * F, Q))
    return MX, F, kinds, defined, member.sum(1).astype(np.int64)


def compute(merged, slices, *, metrics, n_boot, seed, families, role_family):
    """Per-slice means of per-query values and their query-level Poisson-bootstrap replicates."""
    config = merged.config
    roles, S = config.roles, len(slices)
    keys_u, qidx = np.unique(merged.query_key, return_inverse=True)  # canonical query order: by key
    qidx = qidx.ravel()
    Q = keys_u.size
    MX, F, kinds, defined, n_q = _weighted_sums(merged, slices, metrics, qidx, Q)
    n_vals = len(roles) * len(metrics)

    def means(H):  # (S * F, b) weighted sums -> role -> metric -> (S, b) weighted means; and the counts (S, kind, b)
        H = H.reshape(S, F, -1)
        den = H[:, n_vals:]
        out = {r: {} for r in roles}
        for f, (r, m) in enumerate((r, m) for r in roles for m in metrics):
            d = den[:, kinds.index(_kind(m))]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[r][m] = np.where(d > 0, H[:, f] / d, np.nan)
        return out, den

    point, den0 = means(MX @ np.ones((Q, 1)))
    values = {r: {m: point[r][m][:, 0] for m in metrics} for r in roles}
    reasons = {r: {m: [None] * S for m in metrics} for r in roles}
    for m in metrics:
        why = ("no query with a positive label (IDCG = 0)" if _kind(m) == "ndcg" else
               f"no query with a relevant document (label >= {config.relevance_min:g})")
        for j in np.flatnonzero(den0[:, kinds.index(_kind(m)), 0] == 0):
            for r in roles:
                reasons[r][m][j] = "empty slice" if n_q[j] == 0 else why
    reps = {}
    if n_boot > 0 and Q:
        blocks = bs.run_blocks(n_boot, lambda i, size: means(MX @ query_weights(keys_u, seed, i * bs.BLOCK, size))[0])
        reps = {r: {m: np.concatenate([b[r][m] for b in blocks], axis=1).T for m in metrics} for r in roles}
    warnings = []
    if config.no_relevant == "skip":
        for k in kinds:
            skipped = int((~defined[k]).sum())
            what = "NDCG (every label 0)" if k == "ndcg" else "map/mrr/recall/precision (no relevant document)"
            if skipped:
                warnings.append(f"ranking: {skipped} of {Q} queries left out of {what} (ranking.no_relevant: skip)")
    return {"n": n_q, "n_positive": None, "values": values, "reasons": reasons, "reps": reps, "warnings": warnings}
