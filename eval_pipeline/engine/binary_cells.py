"""The binary family's store: sorted score runs (exact rank metrics), row pieces and joint bootstrap cells.

Per batch piece (<= 2**20 rows) and per model role, the rows' ``(score, label)`` keys — the float64 bit pattern of
the score shifted left by one bit, OR the label; for scores in [0, 1] this integer orders like (score, label) — are
sorted within each atom and appended as a run. Exact point estimates later sort the union of the runs of a slice.

Bootstrap cells per family of paired roles: (atom, label, score bin of each role) on the fixed grid
:func:`score_grid`. Each cell keeps its row count and, per role, integer sums of the per-row log loss, Brier term and
score in fixed point (quantum 2**-26, 2**-32, 2**-32); integer sums are exact and therefore independent of chunking
and row order. They only feed the cell means used by bootstrap replicates (never a point estimate), where a
quantum of 1.5e-8 is immaterial.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .binary_stats import EPS
from .score_cells import Q_BR, Q_LL, Q_S


@dataclass
class BinaryStore:
    """What a binary accumulator holds (its ``store``); where runs and row pieces live is ``config.storage``'s choice."""

    runs: dict = field(default_factory=dict)  # role -> atom id -> list of sorted (score, label) keys
    cells: dict = field(default_factory=dict)  # family index -> list of (keys, counts, int sums)
    rows: list = field(default_factory=list)  # row pieces grouped by atom (label + every model's score)
    score_bits: dict = field(default_factory=dict)  # role -> widest float width of its score input (bits)
    mem_rows: int = 0  # rows of runs held in memory since the last spill (spill mode)


def score_grid(threshold: float, ece_bins: int) -> np.ndarray:
    """Bin edges of the bootstrap cells: 0.05-wide bins, finer tails (0.001, 0.01, 0.99, 0.999), the threshold and
    the ECE edges (so count metrics and ECE bin totals are exact functions of the cell counts). About 24 bins per
    model, so a paired family has at most 2 x 24 x 24 cells per atom."""
    # the threshold as float64, float32 and float16: narrower scores are compared in their own precision
    thr = [threshold, float(np.float32(threshold)), float(np.float16(threshold))]
    e = np.concatenate([np.linspace(0, 1, 21), np.linspace(0, 1, ece_bins + 1), thr,
                        [0.001, 0.01, 0.99, 0.999]])
    return np.unique(e)


_LATTICE = 4096


def _bins(edges, s):
    """Bin index = searchsorted(edges, s, 'right') - 1 clipped to [0, G - 1], via a lattice lookup table plus three
    exact correction steps (identical result, ~10x faster than a binary search per row)."""
    G = edges.size - 1
    if np.min(np.diff(edges)) < 3.0 / _LATTICE:
        return np.clip(np.searchsorted(edges, s, side="right") - 1, 0, G - 1)
    lut = np.clip(np.searchsorted(edges, np.arange(_LATTICE + 1) / _LATTICE, side="right") - 2, 0, G - 1)
    b = lut[np.minimum((s * _LATTICE).astype(np.int64), _LATTICE)]
    ext = np.append(edges[1:], np.inf)  # ext[b] = right edge of bin b; the last bin is closed at 1.0
    ext[G - 1] = np.inf
    for _ in range(3):
        b += s >= ext[b]
    return b


def _reduce(keys, counts, sums):
    """Sum rows with equal keys (exact int64), keys sorted ascending."""
    if keys.size == 0:
        return keys, counts, sums
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]]))
    return k[starts], np.add.reduceat(counts[order], starts), np.add.reduceat(sums[:, order], starts, axis=1)


def add_rows(config, store, chunk):
    atom = chunk["atom"]
    y = chunk["label"].astype(np.int64)
    n = atom.size
    if n and (atom == atom[0]).all():
        order = None
        segs = [(int(atom[0]), 0, n)]
    else:
        order = np.argsort(atom.astype(np.int16) if atom.max() < 32767 else atom, kind="stable")  # radix sort
        a_sorted = atom[order]
        starts = np.flatnonzero(np.concatenate([[True], a_sorted[1:] != a_sorted[:-1]]))
        ends = np.append(starts[1:], n)
        segs = [(int(a_sorted[s]), int(s), int(e)) for s, e in zip(starts, ends)]
    G = config.grid.size - 1
    # the rows themselves, grouped by atom: the per-slice bootstrap cells of the score metrics (.score_cells) need
    # each row's label and every model's score together (pairing), with slice-specific bin edges known only at the end
    piece = {"seg_atom": np.array([a for a, _, _ in segs], dtype=np.int32),
             "seg_bounds": np.array([lo for _, lo, _ in segs] + [n], dtype=np.int64),
             "label": chunk["label"] if order is None else chunk["label"][order]}
    for role in config.roles:
        s = chunk[f"score:{role}"]
        store.score_bits[role] = max(store.score_bits.get(role, 0), chunk[f"bits:{role}"])
        piece[f"score:{role}"] = s if order is None else s[order]
        key = (s.view(np.int64) << 1) | y
        if order is not None:
            key = key[order]
        runs = store.runs.setdefault(role, {})
        for aid, lo, hi in segs:
            runs.setdefault(aid, []).append(np.sort(key[lo:hi]))
    store.rows.append(piece)
    config.storage.added(store, n)
    for f, fam in enumerate(config.families):
        ckey = atom.astype(np.int64) * 2 + y
        sums = []
        for role in fam:
            s = chunk[f"score:{role}"]
            ckey = ckey * G + _bins(config.grid, s)
            p1 = np.where(y == 1, s, 1 - s)
            ll = -np.log(np.clip(p1, EPS, 1 - EPS))
            sums += [np.rint(ll * Q_LL), np.rint((s - y) ** 2 * Q_BR), np.rint(s * Q_S)]
        space = (int(atom.max()) + 1) * 2 * G ** len(fam) if n else 0
        if space <= (1 << 22):
            cnt = np.bincount(ckey, minlength=space)
            keys = np.flatnonzero(cnt)
            tot = np.stack([np.bincount(ckey, weights=w, minlength=space)[keys] for w in sums])
            counts = cnt[keys]
        else:
            keys, inv, counts = np.unique(ckey, return_inverse=True, return_counts=True)
            inv = inv.ravel()
            tot = np.stack([np.bincount(inv, weights=w, minlength=keys.size) for w in sums])
        store.cells.setdefault(f, []).append((keys.astype(np.int64), counts.astype(np.int64), tot.astype(np.int64)))
        _compact(store, f)


def _compact(store, f, limit: int = 32):
    """Sum a family's cell pieces into one once there are ``limit`` of them (exact integers: the result does not
    depend on when this happens), so the pieces of many batches or merged shards never pile up."""
    lst = store.cells[f]
    if len(lst) >= limit:
        store.cells[f] = [_reduce(*map(np.concatenate, zip(*[(k, c) for k, c, _ in lst])),
                                np.concatenate([t for *_, t in lst], axis=1))]


def _cells_per_atom(config, fam):
    return 2 * (config.grid.size - 1) ** len(fam)


def merge_stores(config, out, a, lut):
    for role, bits in a.score_bits.items():
        out.score_bits[role] = max(out.score_bits.get(role, 0), bits)
    for piece in a.rows:
        out.rows.append(config.storage.remap_rows(piece, lut))
    for role, runs in a.runs.items():
        dst = out.runs.setdefault(role, {})
        for aid, lst in runs.items():
            dst.setdefault(int(lut[aid]), []).extend(lst)
    for f, lst in a.cells.items():
        per = _cells_per_atom(config, config.families[f])
        for k, c, t in lst:
            q, r = np.divmod(k, per)
            out.cells.setdefault(f, []).append((lut[q].astype(np.int64) * per + r, c, t))
            _compact(out, f)  # 40 shards x up to 32 pieces each held 2.4 GB at 10^8 rows before this


def finish_store(config, store, merged, lut):
    n_atoms = len(merged.atom_values)
    config.storage.flush(store)
    merged.runs = {role: {int(lut[aid]): lst for aid, lst in runs.items()} for role, runs in store.runs.items()}
    for f, fam in enumerate(config.families):
        lst = store.cells.get(f, [])
        per = _cells_per_atom(config, fam)
        if lst:
            k = np.concatenate([x[0] for x in lst])
            q, r = np.divmod(k, per)
            merged.cells[f] = _reduce(lut[q].astype(np.int64) * per + r, np.concatenate([x[1] for x in lst]),
                                      np.concatenate([x[2] for x in lst], axis=1))
        else:
            merged.cells[f] = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((3 * len(fam), 0), np.int64))
    merged.score_bits = dict(store.score_bits)
    merged.rows = [config.storage.remap_rows(piece, lut) for piece in store.rows]
    store.runs, store.cells, store.rows = {}, {}, []
    atom_n = np.zeros(n_atoms, dtype=np.int64)
    if config.roles:
        for aid, lst in merged.runs.get(config.roles[0], {}).items():
            atom_n[aid] = sum(x.size for x in lst)
    merged.atom_n = atom_n
