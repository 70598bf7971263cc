"""Opt-in external-memory mode for the binary accumulator (exact, bit-identical to the in-memory mode).

Enabled by ``evaluate(..., spill_dir=..., spill_rows=...)`` (or ``make_combiner``; or the environment variables
``EVAL_ENGINE_SPILL_ROWS`` / ``EVAL_ENGINE_SPILL_DIR``). Only the binary task spills; multiclass / regression stay
in memory.

Accumulate: once an accumulator holds ``spill_rows`` rows of sorted (score, label) keys in memory, for every model
role the runs of each atom are merged (concatenate + sort) and appended to one raw little-endian int64 file in a
private temp directory; the accumulator keeps only :class:`SpilledRun` references (file, offset, length). ``finish``
spills what is left, so the extract step starts with every key on disk. The temp directory is removed by
:func:`cleanup` (``evaluate`` / ``evaluate_accumulator`` call it in a ``finally``; a ``weakref.finalize`` is the
backstop).

Extract: an atom or slice with at most ``spill_rows`` rows is loaded, sorted and handed to the very functions of the
in-memory mode. A larger one is streamed: a k-way merge of its sorted runs (:func:`merge_chunks`, bounded buffers
per run, read with ``np.fromfile`` — no memory map, so pages read do not stay resident) yields sorted chunks of keys;
tie groups may straddle chunk boundaries (a carried last group). Loss and score sums are exact
(:class:`.exact.ExactSum`, in both modes), so streaming them chunk by chunk gives the in-memory numbers; the average
precision terms are written to a temp file and summed with ``np.sum`` over the whole vector (a file-backed map), as
the in-memory mode sums them. Integer quantities (counts, Mann-Whitney U) are order-free. Result: bit-identical numbers, and memory bounded by
``spill_rows`` and the merge budget, not by rows.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
import weakref

import numpy as np

from .binary_stats import CHUNK, add_rows, atom_stats, empty_stats, rank_metrics_keys, sorted_union, split_keys
from .errors import EngineInputError
from .storage import MemoryStorage

DEFAULT_SPILL_ROWS = 2_000_000
MAX_MERGE = 1 << 20  # keys per merged chunk (upper bound)
INF_KEY = np.iinfo(np.int64).max


# ----------------------------------------------------------------------------------------------- configuration
class DiskStorage(MemoryStorage):
    """The binary family's external-memory storage: where and when to spill; owns the (lazily created) private temp
    directory; reads runs and row pieces back (:meth:`role_scores`, :meth:`load_rows`)."""

    def __init__(self, spill_dir: str | None, spill_rows: int):
        if int(spill_rows) < 1:
            raise EngineInputError(f"spill_rows: expected an integer >= 1, got {spill_rows!r}")
        self.parent = spill_dir
        self.rows = int(spill_rows)
        self._dir = None
        self._lock = threading.Lock()
        self._fin = None

    @property
    def dir(self) -> str:
        with self._lock:
            if self._dir is None or not os.path.isdir(self._dir):
                if self.parent is not None:
                    os.makedirs(self.parent, exist_ok=True)
                self._dir = tempfile.mkdtemp(prefix="eval_engine_spill_", dir=self.parent)
                self._fin = weakref.finalize(self, shutil.rmtree, self._dir, True)
            return self._dir

    def new_path(self, suffix=".i64") -> str:
        return os.path.join(self.dir, uuid.uuid4().hex + suffix)

    def cleanup(self):
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    @property
    def budget(self) -> int:
        return max(16, min(self.rows, MAX_MERGE))

    # -- the storage strategy (see .storage.MemoryStorage)
    def added(self, store, n_new: int) -> None:
        store.mem_rows += n_new
        if store.mem_rows >= self.rows:
            spill_store(self, store)

    def flush(self, store) -> None:
        spill_store(self, store)  # everything goes to disk before the extract step

    @staticmethod
    def load_rows(piece) -> dict:
        return piece.load() if isinstance(piece, SpilledRows) else piece

    @staticmethod
    def remap_rows(piece, lut):
        if isinstance(piece, SpilledRows):
            return piece.remapped(lut)
        return MemoryStorage.remap_rows(piece, lut)

    def role_scores(self, role_runs: dict, n_atoms: int) -> "StreamedScores":
        return StreamedScores(self, role_runs)


def resolve(spill_dir=None, spill_rows=None) -> DiskStorage | None:
    """None (in-memory) unless ``spill_dir`` / ``spill_rows`` or ``EVAL_ENGINE_SPILL_ROWS`` / ``_DIR`` is set."""
    if spill_dir is None and spill_rows is None:
        env_rows = os.environ.get("EVAL_ENGINE_SPILL_ROWS")
        env_dir = os.environ.get("EVAL_ENGINE_SPILL_DIR")
        if not env_rows and not env_dir:
            return None
        spill_rows = int(env_rows) if env_rows else None
        spill_dir = env_dir or None
    return DiskStorage(spill_dir, DEFAULT_SPILL_ROWS if spill_rows is None else spill_rows)


# ----------------------------------------------------------------------------------------------- runs on disk
class SpilledRun:
    """A sorted run of int64 keys stored in a raw file at ``offset`` (elements)."""

    __slots__ = ("path", "offset", "size")

    def __init__(self, path, offset, size):
        self.path, self.offset, self.size = path, int(offset), int(size)

    def read(self, start=0, count=None) -> np.ndarray:
        count = self.size - start if count is None else min(count, self.size - start)
        if count <= 0:
            return np.zeros(0, np.int64)
        return np.fromfile(self.path, dtype="<i8", count=count, offset=8 * (self.offset + start)).astype(
            np.int64, copy=False)


def _load(run) -> np.ndarray:
    return run if isinstance(run, np.ndarray) else run.read()


class SpilledRows:
    """A row piece (labels and every model's scores, grouped by atom; see ``.binary_cells.add_rows``) stored in a
    raw file; the small segment arrays stay in memory."""

    __slots__ = ("path", "offset", "n", "roles", "seg_atom", "seg_bounds")

    def __init__(self, path, offset, n, roles, seg_atom, seg_bounds):
        self.path, self.offset, self.n, self.roles = path, int(offset), int(n), list(roles)
        self.seg_atom, self.seg_bounds = seg_atom, seg_bounds

    def remapped(self, lut) -> "SpilledRows":
        return SpilledRows(self.path, self.offset, self.n, self.roles, lut[self.seg_atom].astype(np.int32),
                           self.seg_bounds)

    def load(self) -> dict:
        out = {"seg_atom": self.seg_atom, "seg_bounds": self.seg_bounds,
               "label": np.fromfile(self.path, dtype=np.int8, count=self.n, offset=self.offset)}
        off = self.offset + self.n
        for r in self.roles:
            out[f"score:{r}"] = np.fromfile(self.path, dtype="<f8", count=self.n, offset=off).astype(np.float64,
                                                                                                   copy=False)
            off += 8 * self.n
        return out


def _spill_rows(cfg, store):
    mem = [p for p in store.rows if not isinstance(p, SpilledRows)]
    if not mem:
        return
    path = cfg.new_path(".rows")
    kept, off = [p for p in store.rows if isinstance(p, SpilledRows)], 0
    with open(path, "wb") as f:
        for p in mem:
            roles = [k[len("score:"):] for k in p if k.startswith("score:")]
            n = p["label"].size
            p["label"].astype(np.int8, copy=False).tofile(f)
            for r in roles:
                p[f"score:{r}"].astype("<f8", copy=False).tofile(f)
            kept.append(SpilledRows(path, off, n, roles, p["seg_atom"], p["seg_bounds"]))
            off += n * (1 + 8 * len(roles))
    store.rows = kept


def spill_store(cfg, store):
    """Write every in-memory run and row piece of ``store`` to disk (runs: one file per role, atoms consecutive, each
    atom sorted; row pieces: one file per spill)."""
    _spill_rows(cfg, store)
    for role, runs in store.runs.items():
        path = None
        f = None
        off = 0
        try:
            for aid in sorted(runs):
                lst = runs[aid]
                mem = [x for x in lst if isinstance(x, np.ndarray) and x.size]
                if not mem:
                    runs[aid] = [x for x in lst if not isinstance(x, np.ndarray)]
                    continue
                k = mem[0] if len(mem) == 1 else np.sort(np.concatenate(mem))
                if f is None:
                    path = cfg.new_path()
                    f = open(path, "wb")
                k.astype("<i8", copy=False).tofile(f)
                runs[aid] = [x for x in lst if not isinstance(x, np.ndarray)] + [SpilledRun(path, off, k.size)]
                off += k.size
                del k, mem
        finally:
            if f is not None:
                f.close()
    store.mem_rows = 0


# ----------------------------------------------------------------------------------------------- k-way merge
class _Reader:
    def __init__(self, run, m):
        self.run, self.m = run, m
        self.next = 0  # index in run of the first element not yet in buf
        self.buf = np.zeros(0, np.int64)
        self.fill()

    def fill(self):
        if self.buf.size * 2 >= self.m or self.next >= self.run.size:
            return
        want = self.m - self.buf.size
        if isinstance(self.run, np.ndarray):
            new = self.run[self.next:self.next + want]
        else:
            new = self.run.read(self.next, want)
        self.next += new.size
        self.buf = np.concatenate([self.buf, new]) if self.buf.size else new

    @property
    def done(self):
        return self.buf.size == 0 and self.next >= self.run.size

    @property
    def last(self):  # an upper bound on what may be taken now without breaking order
        return int(self.buf[-1]) if self.next < self.run.size else INF_KEY


def merge_chunks(runs, budget):
    """Yield sorted int64 chunks (each <= ~budget keys) whose concatenation is the sorted union of ``runs``."""
    runs = [r for r in runs if r.size]
    if not runs:
        return
    m = max(16, budget // len(runs))
    readers = [_Reader(r, m) for r in runs]
    while True:
        readers = [r for r in readers if not r.done]
        if not readers:
            return
        b = min(r.last for r in readers)
        parts = []
        for r in readers:
            k = r.buf.size if b == INF_KEY else int(np.searchsorted(r.buf, b, side="right"))
            if k:
                parts.append(r.buf[:k])
                r.buf = r.buf[k:]
        chunk = np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
        if len(parts) > 1:
            chunk.sort()
        for r in readers:
            r.fill()
        yield chunk


# ----------------------------------------------------------------------------------------------- exact statistics
def atom_size(runs) -> int:
    return int(sum(r.size for r in runs))


class StreamedScores:
    """One model's runs per atom, on disk: an atom or slice of at most ``spill_rows`` rows is loaded and handed to the
    in-memory functions; a larger one is streamed through a k-way merge (same numbers)."""

    def __init__(self, cfg: DiskStorage, role_runs: dict):
        self.cfg, self.runs = cfg, role_runs

    def atom_stats(self, aid: int, threshold: float, ece_edges: np.ndarray, eps: float) -> dict:
        runs = self.runs.get(aid, [])
        if atom_size(runs) <= self.cfg.rows:
            return atom_stats(*split_keys(sorted_union([_load(r) for r in runs])), threshold, ece_edges, eps)
        stats = empty_stats(ece_edges.size - 1)
        for key in merge_chunks(runs, self.cfg.budget):
            add_rows(stats, *split_keys(key), threshold, ece_edges, eps)
        return stats

    def rank_metrics(self, atoms: np.ndarray, n: int, P: int) -> tuple[float, float]:
        runs = [r for a in atoms for r in self.runs.get(int(a), [])]
        return rank_metrics(runs, n, P, self.cfg.rows, self.cfg.budget, self.cfg)


def rank_metrics(runs, n, P, limit, budget, cfg):
    """``.binary_stats.rank_metrics_keys`` of the sorted union of ``runs`` (n rows, P positives), bit-identical."""
    if n <= limit:
        parts = [_load(r) for r in runs]
        k = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            k.sort()
        return rank_metrics_keys(k)
    N = n - P
    u2 = 0
    ties = False
    before = cp_before = 0
    carry = None  # (score bits, pos, neg) of the last, possibly unfinished, tie group
    n_terms = 0
    tpath = cfg.new_path(".ap.f64")
    tf = open(tpath, "wb")

    def emit(gbits, pos, neg):
        nonlocal u2, ties, before, cp_before, n_terms
        cnt = pos + neg
        if cnt.size == 0:
            return
        if not ties and np.any(cnt > 1):
            ties = True
        bef = before + np.cumsum(cnt) - cnt
        cpb = cp_before + np.cumsum(pos) - pos
        u2 += int(np.sum(pos * (2 * (bef - cpb) + neg)))
        has = pos > 0
        tp_ge = P - cpb
        tot_ge = n - bef
        t = pos[has] * (tp_ge[has] / tot_ge[has])
        t.astype("<f8", copy=False).tofile(tf)
        n_terms += t.size
        before += int(cnt.sum())
        cp_before += int(pos.sum())

    try:
        for key in merge_chunks(runs, budget):
            sb = key >> 1
            y = (key & 1).astype(np.int64)
            starts = np.flatnonzero(np.concatenate([[True], sb[1:] != sb[:-1]]))
            pos = np.add.reduceat(y, starts)
            neg = np.diff(np.append(starts, key.size)) - pos
            gb = sb[starts]
            if carry is not None:
                if gb[0] == carry[0]:
                    pos[0] += carry[1]
                    neg[0] += carry[2]
                else:
                    gb = np.concatenate([[carry[0]], gb])
                    pos = np.concatenate([[carry[1]], pos])
                    neg = np.concatenate([[carry[2]], neg])
            carry = (int(gb[-1]), int(pos[-1]), int(neg[-1]))
            emit(gb[:-1], pos[:-1], neg[:-1])
        if carry is not None:
            emit(np.array([carry[0]]), np.array([carry[1]], np.int64), np.array([carry[2]], np.int64))
    finally:
        tf.close()
    try:
        if before != n or cp_before != P:
            raise RuntimeError(f"spill merge saw {before} rows / {cp_before} positives, expected {n} / {P}")
        auc = ap = np.nan
        if P:
            if not ties:
                if N:
                    auc = (u2 // 2) / (P * N)
                tot = 0.0
                for a in range(0, n_terms, CHUNK):
                    tot += float(np.sum(np.fromfile(tpath, dtype="<f8", count=min(CHUNK, n_terms - a),
                                                     offset=8 * a)))
                ap = tot / P
            else:
                if N:
                    auc = u2 / (2 * P * N)
                # np.sum of the whole vector, as the in-memory mode (a file-backed map: the pages are cache)
                ap = float(np.sum(np.memmap(tpath, dtype="<f8", mode="r", shape=(n_terms,)))) / P
        return auc, ap
    finally:
        os.remove(tpath)
