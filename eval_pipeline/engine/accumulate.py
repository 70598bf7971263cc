"""Input checking and the mergeable accumulator (TFMA ``CombineFn`` style).

``Combiner.create_accumulator() -> add_batch(acc, batch) -> merge_accumulators([...]) -> finish(acc)``.

What an accumulator holds (per row, compactly): the *atom* id (the combination of the row's values in every slice
column; slices are unions of atoms), the label and, per model role, the reduced prediction (binary: the score;
multiclass: argmax class and top-k hit; regression: the prediction). Merging concatenates these stores and unifies
the value dictionaries, so it is associative and commutative. ``finish`` puts everything in a *canonical* order
(values sorted, atoms sorted by their values, rows sorted by their values), so every number computed afterwards —
including the bootstrap replicates, which are drawn from cell counts of the merged data with the seed — is
bit-identical whatever the chunking or row order.

Memory: the store is O(rows): binary keeps 8 bytes per row per model (the sorted (score, label) keys, grouped by
atom; see :mod:`.binary_cells`); multiclass keeps ~6 bytes per row plus 3 per model; regression 12 bytes plus 8 per
model. This is the price of *exact* rank metrics (ROC AUC and average precision need the full multiset of scores;
no bounded-memory summary gives them exactly). The bootstrap cells are O(atoms x bins), independent of rows.
Binary only: with ``Spec.spill`` set (:mod:`.spill`) the runs are written to temp files whenever an accumulator holds
``spill_rows`` rows of them, so RAM stays bounded; the numbers do not change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import EngineInputError
from .catalogue import BINARY, MULTICLASS, REGRESSION

NULL = None  # the value of a null slice cell
MAX_PIECE = 1 << 18


def _fmt_num(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:g}"


def _bin_labels(edges: list[float]) -> list[str]:
    labels = [f"(-inf, {_fmt_num(edges[0])})"]
    labels += [f"[{_fmt_num(a)}, {_fmt_num(b)})" for a, b in zip(edges[:-1], edges[1:])]
    labels.append(f"[{_fmt_num(edges[-1])}, inf)")
    labels.append("null")
    return labels


def _value_sort_key(v):
    if v is None:
        return (3, 0, "")
    if isinstance(v, (bool, np.bool_)):
        return (0, int(v), "")
    if isinstance(v, (int, float, np.integer, np.floating)):
        return (1, float(v), "")
    return (2, 0, str(v))


def _value_label(v) -> str:
    if v is None:
        return "null"
    return str(v)


def _as_batch_list(batches):
    if isinstance(batches, (pd.DataFrame, pa.RecordBatch, pa.Table)):
        return [batches]
    return batches


def _column(batch, name: str):
    if isinstance(batch, pd.DataFrame):
        if name not in batch.columns:
            raise EngineInputError(f"column '{name}' is missing from the input (columns: {list(batch.columns)})")
        return batch[name]
    names = batch.schema.names
    if name not in names:
        raise EngineInputError(f"column '{name}' is missing from the input (columns: {names})")
    col = batch.column(names.index(name))
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col


def _n_rows(batch) -> int:
    return len(batch) if isinstance(batch, pd.DataFrame) else batch.num_rows


def _float_array(col, name: str, offset: int) -> np.ndarray:
    try:
        if isinstance(col, pd.Series):
            if col.dtype == object:
                col = pd.to_numeric(col)
            return col.to_numpy(dtype=np.float64, na_value=np.nan)
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise EngineInputError(f"column '{name}': expected numbers ({exc})") from None


def _float_bits(col) -> int:
    """16 / 32 for half / single precision float input, else 64 (ints, decimals, objects are read as float64)."""
    if isinstance(col, pd.Series):
        dt = col.dtype
        return 8 * dt.itemsize if dt.kind == "f" and dt.itemsize in (2, 4) else 64
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    return 32 if pa.types.is_float32(t) else 16 if pa.types.is_float16(t) else 64


def _raise_bad(name: str, what: str, bad: np.ndarray, values, offset: int):
    idx = np.flatnonzero(bad)
    first = int(idx[0])
    raise EngineInputError(
        f"column '{name}': expected {what}; {idx.size} row(s) violate it "
        f"(first at row {offset + first}: {values[first]!r})"
    )


def _check_finite(x: np.ndarray, name: str, offset: int, what: str):
    bad = ~np.isfinite(x)
    if bad.any():
        _raise_bad(name, what + " (no NaN/inf/null)", bad, x, offset)


def _codes_and_uniques(col):
    """(codes with -1 for null, list of python values) for a slice column of one batch."""
    if isinstance(col, pd.Series):
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        uniq = [u.item() if hasattr(u, "item") else u for u in np.asarray(uniques, dtype=object)]
        return np.asarray(codes, dtype=np.int64), uniq
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    idx = col.indices
    codes = pc.fill_null(pc.cast(idx, pa.int64()), -1).to_numpy(zero_copy_only=False)
    uniq = col.dictionary.to_pylist()
    return codes.astype(np.int64, copy=False), uniq


@dataclass
class Spec:
    """Validated evaluation spec shared by all accumulators of one evaluation."""

    task_type: str
    label: str
    roles: list[str]
    pred_columns: dict  # role -> column name or list of column names
    slice_columns: list[str]  # every column used by any slice, in first-appearance order
    bins: dict
    threshold: float
    classes: list | None
    top_k: int
    families: list = field(default_factory=list)  # tuples of roles sharing bootstrap cells (paired models)
    grid: np.ndarray | None = None  # binary: score-bin edges of the bootstrap cells
    ece_bins: int = 10
    spill: object = None  # binary: a :class:`.spill.SpillConfig` (opt-in external-memory mode) or None


@dataclass
class Accumulator:
    n_rows: int = 0
    values: list = field(default_factory=list)  # per slice column: dict value -> gid (binned: fixed domain)
    atoms: dict = field(default_factory=dict)  # tuple of gids -> atom id
    chunks: list = field(default_factory=list)  # multiclass/regression: list of dicts of per-row arrays
    runs: dict = field(default_factory=dict)  # binary: role -> atom id -> list of sorted (score, label) keys
    cells: dict = field(default_factory=dict)  # binary: family index -> list of (keys, counts, int sums)
    rows: list = field(default_factory=list)  # binary: row pieces grouped by atom (label + every model's score)
    score_bits: dict = field(default_factory=dict)  # binary: role -> widest float width of its score input (bits)
    mem_rows: int = 0  # binary + spill mode: rows of runs held in memory since the last spill


class Combiner:
    """create / add_batch / merge / finish for one :class:`Spec`."""

    def __init__(self, spec: Spec):
        self.spec = spec

    # -- create
    def create_accumulator(self) -> Accumulator:
        acc = Accumulator()
        for c in self.spec.slice_columns:
            acc.values.append(None if c in self.spec.bins else {})
        return acc

    # -- add
    def add_batch(self, acc: Accumulator, batch, row_offset: int | None = None) -> Accumulator:
        """Add one batch. ``row_offset``: index of the batch's first row in the whole input (for error messages;
        defaults to the rows this accumulator has seen)."""
        spec = self.spec
        n = _n_rows(batch)
        if n == 0:
            return acc
        if n > MAX_PIECE:  # bounded pieces: cache-friendly, and keeps the integer sums below 2**53 per piece
            for start in range(0, n, MAX_PIECE):
                piece = batch.iloc[start:start + MAX_PIECE] if isinstance(batch, pd.DataFrame) else batch.slice(start, MAX_PIECE)
                self.add_batch(acc, piece, None if row_offset is None else row_offset + start)
            return acc
        off = acc.n_rows if row_offset is None else row_offset
        chunk = {"label": self._label(batch, off)}
        for role in spec.roles:
            chunk.update(self._prediction(batch, role, chunk["label"], off))
        chunk["atom"] = self._atoms(acc, batch)
        if spec.task_type == BINARY:
            from .binary_cells import add_binary

            add_binary(spec, acc, chunk)
        else:
            acc.chunks.append(chunk)
        acc.n_rows += n
        return acc

    def _label(self, batch, off):
        spec = self.spec
        col = _column(batch, spec.label)
        if spec.task_type == MULTICLASS:
            if isinstance(col, pa.Array):
                col = pd.Series(col.to_pylist())
            idx = pd.Index(spec.classes).get_indexer(pd.Series(col).to_numpy(dtype=object))
            bad = idx < 0
            if bad.any():
                _raise_bad(spec.label, f"labels in classes {spec.classes}", bad, pd.Series(col).to_numpy(object), off)
            return idx.astype(np.int16)
        y = _float_array(col, spec.label, off)
        if spec.task_type == BINARY:
            bad = ~((y == 0) | (y == 1))
            if bad.any():
                _raise_bad(spec.label, "binary labels 0/1 (or bool)", bad, y, off)
            return y.astype(np.int8)
        _check_finite(y, spec.label, off, "finite numeric labels")
        return y

    def _prediction(self, batch, role, y, off):
        spec = self.spec
        cols = spec.pred_columns[role]
        if spec.task_type == MULTICLASS:
            mats = []
            for c in cols:
                p = _float_array(_column(batch, c), c, off)
                _check_finite(p, c, off, f"finite class probabilities (role '{role}')")
                bad = (p < 0) | (p > 1)
                if bad.any():
                    _raise_bad(c, f"probabilities in [0, 1] (role '{role}')", bad, p, off)
                mats.append(p)
            P = np.column_stack(mats)
            pred = np.argmax(P, axis=1).astype(np.int16)
            k = min(spec.top_k, P.shape[1])
            order = np.argsort(P, axis=1, kind="mergesort")[:, ::-1][:, :k]  # as sklearn.top_k_accuracy_score
            hit = (order == y[:, None]).any(axis=1)
            return {f"pred:{role}": pred, f"hit:{role}": hit}
        col = _column(batch, cols)
        p = _float_array(col, cols, off)
        if spec.task_type == BINARY:
            _check_finite(p, cols, off, f"finite scores (role '{role}')")
            bad = (p < 0) | (p > 1)
            if bad.any():
                _raise_bad(cols, f"probabilities in [0, 1] (role '{role}')", bad, p, off)
            p = p + 0.0  # -0.0 -> 0.0 so bit patterns sort like values
            return {f"score:{role}": p, f"bits:{role}": _float_bits(col)}
        else:
            _check_finite(p, cols, off, f"finite predictions (role '{role}')")
        return {f"score:{role}": p}

    def _atoms(self, acc, batch) -> np.ndarray:
        spec = self.spec
        n = _n_rows(batch)
        if not spec.slice_columns:
            key = np.zeros(n, dtype=np.int64)
            if () not in acc.atoms:
                acc.atoms[()] = len(acc.atoms)
            return np.full(n, acc.atoms[()], dtype=np.int32)
        gids, sizes = [], []
        for j, c in enumerate(spec.slice_columns):
            col = _column(batch, c)
            if c in spec.bins:
                edges = np.asarray(spec.bins[c], dtype=np.float64)
                x = _float_array(col, c, acc.n_rows)
                g = np.searchsorted(edges, x, side="right").astype(np.int64)  # 0 .. len(edges)
                g[np.isnan(x)] = len(edges) + 1
                gids.append(g)
                sizes.append(len(edges) + 2)
            else:
                codes, uniq = _codes_and_uniques(col)
                d = acc.values[j]
                lut = np.empty(len(uniq) + 1, dtype=np.int64)
                for i, u in enumerate(uniq):
                    lut[i] = d.setdefault(u, len(d))
                lut[-1] = d.setdefault(NULL, len(d)) if (codes < 0).any() else -1
                gids.append(lut[codes])
                sizes.append(len(d))
        key = np.zeros(n, dtype=np.int64)
        mult = 1
        for g, s in zip(reversed(gids), reversed(sizes)):
            key += g * mult
            mult *= s
        if mult <= (1 << 24):
            present = np.flatnonzero(np.bincount(key, minlength=mult))
            lut = np.zeros(mult, dtype=np.int32)
            inv = None
        else:
            present, inv = np.unique(key, return_inverse=True)
        ids = np.empty(present.size, dtype=np.int32)
        for i, k in enumerate(present.tolist()):
            tup = []
            for s in reversed(sizes):
                k, r = divmod(k, s)
                tup.append(r)
            ids[i] = acc.atoms.setdefault(tuple(reversed(tup)), len(acc.atoms))
        if inv is None:
            lut[present] = ids
            return lut[key]
        return ids[inv.ravel()]

    # -- merge
    def merge_accumulators(self, accs) -> Accumulator:
        accs = list(accs)
        out = self.create_accumulator()
        for a in accs:
            col_maps = []
            for j, c in enumerate(self.spec.slice_columns):
                if c in self.spec.bins:
                    col_maps.append(None)
                    continue
                inv = {g: v for v, g in a.values[j].items()}
                col_maps.append({g: out.values[j].setdefault(inv[g], len(out.values[j])) for g in sorted(inv)})
            lut = np.zeros(max(len(a.atoms), 1), dtype=np.int32)
            for tup, aid in a.atoms.items():
                new = tuple(g if m is None else m[g] for g, m in zip(tup, col_maps))
                lut[aid] = out.atoms.setdefault(new, len(out.atoms))
            for ch in a.chunks:
                ch = dict(ch)
                ch["atom"] = lut[ch["atom"]]
                out.chunks.append(ch)
            if self.spec.task_type == BINARY:
                from .binary_cells import merge_binary

                merge_binary(self.spec, out, a, lut)
            out.n_rows += a.n_rows
        return out

    # -- finish
    def finish(self, acc: Accumulator) -> "Merged":
        return Merged.build(self.spec, acc)


@dataclass
class Merged:
    """Merged data: canonical atoms and values; rows in store order.

    Every computation downstream is order-free (integer counts) or first sorts rows by their values, so the store
    order never leaks into a number. ``finish`` consumes the accumulator's store to keep peak memory down.
    """

    spec: Spec
    n_rows: int
    atom_values: list  # canonical atom index -> tuple of (python value or bin code) per slice column
    atom_labels: list  # canonical atom index -> tuple of labels per slice column
    atom: np.ndarray  # per row canonical atom index (rows in canonical order)
    label: np.ndarray
    preds: dict  # role -> array(s) (regression: 'score'; multiclass: ('pred', 'hit')); binary: {}
    runs: dict = field(default_factory=dict)  # binary: role -> canonical atom -> list of sorted keys
    cells: dict = field(default_factory=dict)  # binary: family index -> (keys, counts, int sums)
    atom_n: np.ndarray | None = None  # rows per canonical atom
    rows: list = field(default_factory=list)  # binary: row pieces (see .binary_cells.add_binary)
    score_bits: dict = field(default_factory=dict)  # binary: role -> 16, 32 or 64 (see .binary.role_precision)

    @staticmethod
    def build(spec: Spec, acc: Accumulator) -> "Merged":
        cols = spec.slice_columns
        # canonical value ranks per column
        ranks = []
        labels = []
        for j, c in enumerate(cols):
            if c in spec.bins:
                lab = _bin_labels(list(spec.bins[c]))
                ranks.append(None)
                labels.append(lab)
            else:
                vals = sorted(acc.values[j].keys(), key=_value_sort_key)
                ranks.append({v: r for r, v in enumerate(vals)})
                labels.append(None)
        inv_vals = [None if acc.values[j] is None else {g: v for v, g in acc.values[j].items()} for j in range(len(cols))]

        def canon(tup):
            return tuple(g if ranks[j] is None else ranks[j][inv_vals[j][g]] for j, g in enumerate(tup))

        items = sorted(acc.atoms.items(), key=lambda kv: canon(kv[0]))
        lut = np.zeros(max(len(acc.atoms), 1), dtype=np.int32)
        atom_values, atom_labels = [], []
        for new_id, (tup, old_id) in enumerate(items):
            lut[old_id] = new_id
            vals, labs = [], []
            for j, g in enumerate(tup):
                if ranks[j] is None:
                    vals.append(g)
                    labs.append(labels[j][g])
                else:
                    v = inv_vals[j][g]
                    vals.append(v)
                    labs.append(_value_label(v))
            atom_values.append(tuple(vals))
            atom_labels.append(tuple(labs))

        def cat(key, dtype=None):
            if not acc.chunks:
                return np.zeros(0, dtype=dtype or np.float64)
            return np.concatenate([ch[key] for ch in acc.chunks])

        atom = lut[cat("atom", np.int32)] if acc.chunks else np.zeros(0, np.int32)
        label = cat("label", np.int8 if spec.task_type == BINARY else None)
        preds = {}
        if spec.task_type == MULTICLASS:
            label = label.astype(np.int16) if label.size else np.zeros(0, np.int16)
            for r in spec.roles:
                preds[r] = (cat(f"pred:{r}", np.int16).astype(np.int16), cat(f"hit:{r}", bool).astype(bool))
        elif spec.task_type == REGRESSION:
            for r in spec.roles:
                preds[r] = cat(f"score:{r}")
        acc.chunks = []  # the store now lives here only
        merged = Merged(spec, acc.n_rows, atom_values, atom_labels, atom, label, preds)
        if spec.task_type == BINARY:
            from .binary_cells import finish_binary

            finish_binary(spec, acc, merged, lut)
        else:
            merged.atom_n = np.bincount(atom, minlength=len(atom_values)) if len(atom_values) else np.zeros(0, np.int64)
        return merged
