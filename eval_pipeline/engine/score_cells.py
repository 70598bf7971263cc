"""Bootstrap replicates of the score metrics (ROC AUC, average precision, log loss, Brier) from per-slice cells.

Why per slice and adaptive. A Poisson-bootstrap replicate is drawn per *cell* (a group of rows), never per row, so its
cost does not grow with the rows. Rows in one cell are resampled together, which is harmless only when a cell's rows
are nearly interchangeable for the metric. For rank metrics that means a cell must span a small share of the slice's
own ranks: fixed score bins (0.05 wide) put every row of a slice whose scores sit in [0.51, 0.54] into one or two
cells, so every replicate ties them all and the AUC interval collapses. Here each slice gets its own bin edges per
model: order statistics of the slice's scores (all rows, positives only and negatives only, with finer steps in both
tails), so every slice has ~20-38 bins per model wherever its scores lie. A bin then holds at most ~1/16 of the
slice's rows and ~1/8 of either class, which is what the rank metrics' sampling law depends on (the variance lost to
ties within a bin is of the order of the squared bin share, < 1 %).

Pairing. Cells are joint: (label, bin of model 1, bin of model 2) for a baseline/candidate family, so a replicate
reweights the same rows for both models and the delta's interval is the paired one, whether the two models' errors
are independent or strongly correlated. Two models that rank rows identically (one score a strictly increasing
function of the other) get identical partitions, hence identical binned replicates: their AUC and AP delta is 0 in
every replicate, as it is in every real resample.

Replicates. AUC and AP of a replicate are computed from the reweighted histogram (a bin = tied scores); log loss and
Brier from each cell's exact mean loss. Each replicate is recentred on the exact point estimate
(exact + binned replicate - binned point), as everywhere in the engine.

Determinism. Edges are order statistics of a deterministic sample of the slice's rows: all rows up to ``SAMPLE_CAP``,
beyond that the rows whose first model's (score, label) key hashes below a cut (a function of the multiset of rows,
never of their order or chunking; the same rows for every model of the family). Cell counts are integers and cell
loss sums are integer fixed-point sums, so cells do not depend on row order either.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from . import bootstrap as bs

METRICS = ("roc_auc", "average_precision", "log_loss", "brier", "ece")
Q_LL = float(1 << 26)  # fixed-point quanta of the per-row log loss / Brier term (exact integer sums)
Q_BR = float(1 << 32)
Q_S = float(1 << 32)
SMALL_CLASS = 64  # a class with at most this many rows in a slice gets an edge per distinct score
SAMPLE_CAP = 1 << 17  # rows per slice used for the edges (all rows of a smaller slice)
_FR_ALL = np.unique(np.concatenate([np.arange(1, 16) / 16, [1 / 128, 1 / 32, 1 - 1 / 32, 1 - 1 / 128]]))
_FR_CLASS = np.unique(np.concatenate([np.arange(1, 8) / 8, [1 / 32, 1 - 1 / 32]]))
_SEED_TAG = 0x5C0E


def _mix64(k: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread 64-bit hash of each key."""
    z = k.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _order_stats(x: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    if x.size == 0:
        return np.zeros(0)
    pos = np.clip((fractions * x.size).astype(np.int64), 0, x.size - 1)
    return np.partition(x, np.unique(pos))[pos]


def _class_edges(x: np.ndarray) -> np.ndarray:
    # a class with few rows drives the rank metrics' variance (AP with 40 positives, say): each of its rows gets its
    # own edge, so its interleaving with the other class is resampled exactly
    return np.unique(x) if x.size <= SMALL_CLASS else _order_stats(x, _FR_CLASS)


def slice_edges(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Interior bin edges of one model on one slice: order statistics of all scores, of the positives' and of the
    negatives' scores (every distinct score of a class with at most ``SMALL_CLASS`` rows). A row goes to bin
    ``searchsorted(edges, s, 'right')``, so tied scores never split."""
    parts = [_order_stats(s, _FR_ALL), _class_edges(s[y == 1]), _class_edges(s[y == 0])]
    return np.unique(np.concatenate(parts))


def _segments(piece, in_slice: np.ndarray):
    """Row ranges of a piece (rows grouped by atom) that belong to a slice; None means every row."""
    keep = in_slice[piece["seg_atom"]]
    if keep.all():
        return None
    b = piece["seg_bounds"]
    return [(int(b[i]), int(b[i + 1])) for i in np.flatnonzero(keep)]


def _take(arr, ranges):
    if ranges is None:
        return arr
    if len(ranges) == 1:
        return arr[ranges[0][0]:ranges[0][1]]
    return np.concatenate([arr[a:b] for a, b in ranges]) if ranges else arr[:0]


def _losses(s, y, eps):
    p1 = np.where(y == 1, s, 1 - s)
    ll = -np.log(np.clip(p1, eps, 1 - eps))
    return np.rint(ll * Q_LL), np.rint((s - y) ** 2 * Q_BR), np.rint(s * Q_S)


def _by_worker(rows, load, fn, workers: int = 2):
    """Run ``fn(list_of_loaded_pieces_iterator)`` on ``workers`` threads, each over every ``workers``-th piece; the
    partial results are merged by the caller with order-free operations (integer sums, order statistics)."""
    workers = max(1, min(workers, len(rows)))

    def run(w):
        return fn(load(p) for p in rows[w::workers])
    if workers == 1:
        return [run(0)]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(run, range(workers)))


def build_cells(rows, load, atom_in: np.ndarray, slice_n: np.ndarray, fam, eps: dict, ece_edges: np.ndarray):
    """Per slice: (bin maps per role, cell keys, counts, integer sums of log loss, Brier term and score per role).

    A role's cell bins are its rank edges (order statistics) refined by the ECE edges, so each bin lies inside one ECE
    bin; the rank metrics use the bins of the rank edges alone (``rank_of``), which keeps two models with the same
    ranking on identical partitions.

    Two passes over the pieces: the edge sample, then the cells (numpy releases the GIL in the heavy calls, so the
    pieces are shared between two threads)."""
    A, S = atom_in.shape
    cap = int(min(SAMPLE_CAP, max(4096, (1 << 24) // max(S, 1))))
    cut = [None if n <= cap else np.uint64(min(int(2 ** 64 * cap / n), 2 ** 64 - 1)) for n in slice_n.tolist()]
    first = fam[0]

    def sample(pieces):
        got = [[] for _ in range(S)]
        for piece in pieces:
            y = piece["label"]
            h = None
            if any(c is not None for c in cut):
                h = _mix64((piece[f"score:{first}"].view(np.int64) << 1) | y)
            for j in range(S):
                if slice_n[j] == 0:
                    continue
                rg = _segments(piece, atom_in[:, j])
                if cut[j] is not None:
                    keep = np.flatnonzero(_take(h, rg) < cut[j])
                    yy = _take(y, rg)[keep]
                    cols = [_take(piece[f"score:{r}"], rg)[keep] for r in fam]
                else:
                    yy = _take(y, rg)
                    cols = [_take(piece[f"score:{r}"], rg) for r in fam]
                if yy.size:
                    got[j].append((yy, cols))
        return got

    parts = _by_worker(rows, load, sample)
    edges = []
    for j in range(S):
        got = [t for part in parts for t in part[j]]
        if not got:
            edges.append([np.zeros(0) for _ in fam])
            continue
        yy = np.concatenate([t[0] for t in got])
        edges.append([slice_edges(np.concatenate([t[1][k] for t in got]), yy) for k in range(len(fam))])
    del parts
    inner = ece_edges[1:-1]
    fine = [[np.union1d(e, inner) for e in edges[j]] for j in range(S)]
    maps = [[(np.concatenate([[0], np.searchsorted(e, f, side="right")]),
              np.clip(np.searchsorted(ece_edges, np.concatenate([[0.0], f]), side="right") - 1, 0, inner.size))
             for e, f in zip(edges[j], fine[j])] for j in range(S)]
    edges = fine
    sizes = [[e.size + 1 for e in edges[j]] for j in range(S)]
    space = [2 * int(np.prod(sz)) for sz in sizes]

    def cells(pieces):
        cnt = [np.zeros(space[j], np.int64) if slice_n[j] else None for j in range(S)]
        sums = [np.zeros((3 * len(fam), space[j]), np.int64) if slice_n[j] else None for j in range(S)]
        for piece in pieces:
            y = piece["label"]
            losses = [_losses(piece[f"score:{r}"], y, eps[r]) for r in fam]
            for j in range(S):
                if slice_n[j] == 0:
                    continue
                rg = _segments(piece, atom_in[:, j])
                yy = _take(y, rg)
                if yy.size == 0:
                    continue
                key = yy.astype(np.int64)
                for k, r in enumerate(fam):
                    b = np.searchsorted(edges[j][k], _take(piece[f"score:{r}"], rg), side="right")
                    key = key * sizes[j][k] + b
                cnt[j] += np.bincount(key, minlength=space[j])
                for k in range(len(fam)):
                    for q in range(3):
                        w = _take(losses[k][q], rg)
                        sums[j][3 * k + q] += np.bincount(key, weights=w, minlength=space[j]).astype(np.int64)
        return cnt, sums

    parts = _by_worker(rows, load, cells)
    cnt, sums = parts[0]
    for c2, s2 in parts[1:]:  # integer sums: the merge order does not matter
        for j in range(S):
            if cnt[j] is not None:
                cnt[j] += c2[j]
                sums[j] += s2[j]
    out = []
    for j in range(S):
        if cnt[j] is None:
            out.append(None)
            continue
        nz = np.flatnonzero(cnt[j])
        out.append((sizes[j], nz, cnt[j][nz], sums[j][:, nz], maps[j]))
    return out


def _features(per_slice, fam, E):
    """Sparse (features x cells) matrix over every slice's cells, and the cell counts. Features, per slice and role:
    the negative and the positive histogram over the role's rank bins (padded to a common ``G`` so every slice has
    the same layout and the metrics are computed for all slices at once), the log-loss and Brier sums, and per ECE
    bin the positives and the score sum."""
    R = len(fam)
    G = max((int(m[0].max()) + 1 for c in per_slice if c is not None for m in c[4]), default=1)
    F = 2 * G + 2 + 2 * E
    rows, cols, data, counts, off = [], [], [], [], 0
    for j, cells in enumerate(per_slice):
        if cells is None or cells[1].size == 0:
            continue
        sizes, keys, cnt, sums, maps = cells
        rest = keys.copy()
        bins = [None] * R
        for k in reversed(range(R)):
            rest, bins[k] = np.divmod(rest, sizes[k])
        y = rest
        ci = off + np.arange(keys.size)
        cf = cnt.astype(np.float64)
        pos = np.flatnonzero(y == 1)
        for k in range(R):
            rank_of, ece_of = maps[k]
            base = (j * R + k) * F
            eb = ece_of[bins[k]]
            rows += [base + y * G + rank_of[bins[k]], np.full(keys.size, base + 2 * G),
                     np.full(keys.size, base + 2 * G + 1), base + 2 * G + 2 + eb[pos], base + 2 * G + 2 + E + eb]
            cols += [ci, ci, ci, ci[pos], ci]
            data += [np.ones(keys.size), sums[3 * k] / Q_LL / cf, sums[3 * k + 1] / Q_BR / cf, np.ones(pos.size),
                     sums[3 * k + 2] / Q_S / cf]
        counts.append(cnt)
        off += keys.size
    S = len(per_slice)
    if not counts:
        return None, np.zeros(0, np.int64), G
    M = sp.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(S * R * F, off))
    return M, np.concatenate(counts), G


def _metrics(H, G, E):
    """AUC, AP, log loss, Brier, ECE from H of shape (S, R, F, b) (layout of :func:`_features`) -> (S, R, b)."""
    neg, pos = H[:, :, :G], H[:, :, G:2 * G]
    P, N = pos.sum(2), neg.sum(2)
    with np.errstate(divide="ignore", invalid="ignore"):
        negbelow = np.cumsum(neg, 2) - neg
        auc = (pos * (negbelow + 0.5 * neg)).sum(2) / (P * N)
        tp_ge = np.cumsum(pos[:, :, ::-1], 2)[:, :, ::-1]
        tot_ge = tp_ge + np.cumsum(neg[:, :, ::-1], 2)[:, :, ::-1]
        prec = tp_ge / np.where(tot_ge > 0, tot_ge, 1)
        ap = (pos * prec).sum(2) / P
        n = P + N
        e0 = 2 * G + 2
        ece = np.abs(H[:, :, e0:e0 + E] - H[:, :, e0 + E:e0 + 2 * E]).sum(2) / n
        ok = n > 0
        return {"roc_auc": np.where((P > 0) & (N > 0), auc, np.nan), "average_precision": np.where(P > 0, ap, np.nan),
                "log_loss": np.where(ok, H[:, :, 2 * G] / n, np.nan), "brier": np.where(ok, H[:, :, 2 * G + 1] / n, np.nan),
                "ece": np.where(ok, ece, np.nan)}


def replicates(rows, load, atom_in, slice_n, fam, fam_idx, values, metrics, eps, ece_edges, n_boot, seed):
    """role -> metric -> (n_boot, S) recentred replicates of the score metrics in ``metrics``."""
    wanted = [m for m in METRICS if m in metrics]
    S, R = atom_in.shape[1], len(fam)
    reps = {r: {m: np.full((n_boot, S), np.nan) for m in wanted} for r in fam}
    if not wanted or n_boot == 0:
        return reps
    E = ece_edges.size - 1
    M, counts, G = _features(build_cells(rows, load, atom_in, slice_n, fam, eps, ece_edges), fam, E)
    if M is None:
        return reps
    shape = (S, R, 2 * G + 2 + 2 * E, -1)
    point = _metrics((M @ counts.astype(np.float64)[:, None]).reshape(shape), G, E)

    def block(i, size):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), _SEED_TAG, fam_idx, i])))
        out = _metrics((M @ bs.poisson_cells(rng, counts, size)).reshape(shape), G, E)
        return {m: out[m] for m in wanted}

    blocks = bs.run_blocks(n_boot, block)
    for k, r in enumerate(fam):
        for m in wanted:
            binned = np.concatenate([b[m][:, k, :] for b in blocks], axis=1).T  # (B, S)
            exact = values[r][m]
            reps[r][m] = np.where(np.isfinite(exact), exact + (binned - point[m][:, k, 0]), np.nan)
        if "ece" in reps[r]:
            reps[r]["ece"] = _median_on_estimate(reps[r]["ece"], values[r]["ece"])
    return reps


def _median_on_estimate(reps: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """ECE is a sum of absolute values, so the plug-in estimate sits above its expectation and a resample's ECE sits
    above the estimate again by about as much: percentile intervals then miss the expected ECE too often (0.90 in
    the simulation matrix, for the engine and for an exact row-level bootstrap alike). Shifting each slice's
    replicates so that their median is the estimate removes that second bias; the interval is for the expected ECE
    at the slice's size, and always contains the estimate."""
    with warnings.catch_warnings():  # an all-NaN column (undefined slice) has no median: it stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(reps, axis=0)
    return reps + np.where(np.isfinite(med), exact - med, 0.0)[None, :]
