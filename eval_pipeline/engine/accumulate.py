"""The mergeable accumulator (TFMA ``CombineFn`` style), generic over the task's metric family.

``Combiner.create_accumulator() -> add_batch(acc, batch) -> merge_accumulators([...]) -> finish(acc)``.

What is generic (here): the *atom* id of each row (the combination of the row's values in every slice column; slices
are unions of atoms), the dictionaries of slice values, and their merge (value dictionaries unified, atom ids
remapped). What depends on the task is delegated to a :class:`Family` (``.binary.BinaryFamily``,
``.multiclass.MulticlassFamily``, ``.regression.RegressionFamily``): reading the label and prediction columns, and
what the accumulator stores per row (binary: the sorted (score, label) runs, bootstrap cells and row pieces; multiclass:
argmax class and top-k hit; regression: the prediction), how it is merged and finished. Merging is associative and
commutative. ``finish`` puts everything in a *canonical* order (values sorted, atoms sorted by their values), so every
number computed afterwards — including the bootstrap replicates, which are drawn from cell counts of the merged data
with the seed — is bit-identical whatever the chunking or row order.

Memory: the store is O(rows): binary keeps 8 bytes per row per model (the sorted (score, label) keys needed for *exact*
rank metrics; see :mod:`.binary_cells`); multiclass ~6 bytes per row plus 3 per model; regression 12 bytes plus 8 per
model. The bootstrap cells are O(atoms x bins), independent of rows. Binary only: with ``CombinerConfig.storage`` a
:class:`.spill.DiskStorage` the runs go to temp files whenever an accumulator holds ``spill_rows`` rows of them, so
RAM stays bounded; the numbers do not change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .columns import codes_and_uniques, column, float_array, n_rows

NULL = None  # the value of a null slice cell
MAX_PIECE = 1 << 18


def _fmt_num(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:g}"


def bin_labels(edges: list[float]) -> list[str]:
    """Labels of the bins of a binned slice column: ``(-inf, e0)``, ``[e0, e1)``, ..., ``[e_last, inf)``, ``null``."""
    labels = [f"(-inf, {_fmt_num(edges[0])})"]
    labels += [f"[{_fmt_num(a)}, {_fmt_num(b)})" for a, b in zip(edges[:-1], edges[1:])]
    labels.append(f"[{_fmt_num(edges[-1])}, inf)")
    labels.append("null")
    return labels


def value_sort_key(v):
    """The canonical order of slice values: booleans, numbers, strings, null."""
    if v is None:
        return (3, 0, "")
    if isinstance(v, (bool, np.bool_)):
        return (0, int(v), "")
    if isinstance(v, (int, float, np.integer, np.floating)):
        return (1, float(v), "")
    return (2, 0, str(v))


def value_label(v) -> str:
    if v is None:
        return "null"
    return str(v)


class Family:
    """The task-specific steps of the combiner (one subclass per task type; TFMA's create / add / merge / extract).

    ``create`` makes an empty store, ``read`` checks and reduces one batch's label and prediction columns to per-row
    arrays, ``add`` appends those rows (with their ``"atom"``) to the store, ``merge`` adds another accumulator's
    store (its atom ids mapped through ``lut``), ``finish`` moves the store into the :class:`Merged` data (atoms
    mapped to canonical ids through ``lut``) and ``compute`` extracts per-slice point estimates and replicates.
    """

    task_type: str = ""

    def create(self, config: "CombinerConfig"):
        raise NotImplementedError

    def read(self, config: "CombinerConfig", batch, offset: int) -> dict:
        raise NotImplementedError

    def add(self, config: "CombinerConfig", store, rows: dict) -> None:
        raise NotImplementedError

    def merge(self, config: "CombinerConfig", out, store, lut: np.ndarray) -> None:
        raise NotImplementedError

    def finish(self, config: "CombinerConfig", store, merged: "Merged", lut: np.ndarray) -> None:
        raise NotImplementedError

    def compute(self, merged: "Merged", slices: list, **kw) -> dict:
        raise NotImplementedError


class RowFamily(Family):
    """A family whose store is the list of per-row array dicts (multiclass, regression): ``finish`` concatenates them
    and sets ``merged.atom``, ``merged.label``, ``merged.preds`` (role -> :meth:`predictions`) and ``merged.atom_n``."""

    label_dtype = np.float64

    def create(self, config):
        return []

    def add(self, config, store, rows):
        store.append(rows)

    def merge(self, config, out, store, lut):
        out.extend(dict(ch, atom=lut[ch["atom"]]) for ch in store)

    def predictions(self, config, role, cat):
        """The merged prediction arrays of one role from ``cat(key, dtype)`` (the concatenation of a row array)."""
        raise NotImplementedError

    def finish(self, config, store, merged, lut):
        def cat(key, dtype=None):
            if not store:
                return np.zeros(0, dtype=dtype or np.float64)
            return np.concatenate([ch[key] for ch in store])

        merged.atom = lut[cat("atom", np.int32)] if store else np.zeros(0, np.int32)
        label = cat("label", self.label_dtype)
        merged.label = label.astype(self.label_dtype, copy=False) if label.size else np.zeros(0, self.label_dtype)
        merged.preds = {r: self.predictions(config, r, cat) for r in config.roles}
        store.clear()
        n_atoms = len(merged.atom_values)
        merged.atom_n = np.bincount(merged.atom, minlength=n_atoms) if n_atoms else np.zeros(0, np.int64)


@dataclass
class CombinerConfig:
    """What one evaluation's accumulators read and how (validated by ``evaluate.make_combiner``); shared by all
    accumulators of the evaluation. Not the YAML ``EvalSpec``: this is the engine's own, resolved configuration."""

    task_type: str
    family: Family  # the task's add / merge / finish / compute steps
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
    storage: object = None  # binary: where sorted runs and row pieces live (.binary_stats.MemoryStorage / .spill)
    query: str | None = None  # ranking: the query id column (.ranking)
    relevance_min: float = 1.0  # ranking: a document is relevant when its label >= this
    no_relevant: str = "skip"  # ranking: queries without relevant documents are skipped or count 0


@dataclass
class Accumulator:
    n_rows: int = 0
    values: list = field(default_factory=list)  # per slice column: dict value -> gid (binned: fixed domain)
    atoms: dict = field(default_factory=dict)  # tuple of gids -> atom id
    store: object = None  # the family's rows (see Family.create)


class Combiner:
    """create / add_batch / merge / finish for one :class:`CombinerConfig`."""

    def __init__(self, config: CombinerConfig):
        self.config = config

    # -- create
    def create_accumulator(self) -> Accumulator:
        acc = Accumulator(store=self.config.family.create(self.config))
        for c in self.config.slice_columns:
            acc.values.append(None if c in self.config.bins else {})
        return acc

    # -- add
    def add_batch(self, acc: Accumulator, batch, row_offset: int | None = None) -> Accumulator:
        """Add one batch. ``row_offset``: index of the batch's first row in the whole input (for error messages;
        defaults to the rows this accumulator has seen)."""
        n = n_rows(batch)
        if n == 0:
            return acc
        if n > MAX_PIECE:  # bounded pieces: cache-friendly, and keeps the integer sums below 2**53 per piece
            for start in range(0, n, MAX_PIECE):
                piece = batch.iloc[start:start + MAX_PIECE] if isinstance(batch, pd.DataFrame) else batch.slice(start, MAX_PIECE)
                self.add_batch(acc, piece, None if row_offset is None else row_offset + start)
            return acc
        off = acc.n_rows if row_offset is None else row_offset
        rows = self.config.family.read(self.config, batch, off)
        rows["atom"] = self._atoms(acc, batch)
        self.config.family.add(self.config, acc.store, rows)
        acc.n_rows += n
        return acc

    def _atoms(self, acc, batch) -> np.ndarray:
        config = self.config
        n = n_rows(batch)
        if not config.slice_columns:
            if () not in acc.atoms:
                acc.atoms[()] = len(acc.atoms)
            return np.full(n, acc.atoms[()], dtype=np.int32)
        gids, sizes = [], []
        for j, c in enumerate(config.slice_columns):
            col = column(batch, c)
            if c in config.bins:
                edges = np.asarray(config.bins[c], dtype=np.float64)
                x = float_array(col, c, acc.n_rows)
                g = np.searchsorted(edges, x, side="right").astype(np.int64)  # 0 .. len(edges)
                g[np.isnan(x)] = len(edges) + 1
                gids.append(g)
                sizes.append(len(edges) + 2)
            else:
                codes, uniq = codes_and_uniques(col)
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
        """Merge in the order given. ``accs`` may be a generator (a backend's results as they arrive): each is merged
        and dropped, so only the merged accumulator is held, not every shard's as well."""
        out = self.create_accumulator()
        for a in accs:
            col_maps = []
            for j, c in enumerate(self.config.slice_columns):
                if c in self.config.bins:
                    col_maps.append(None)
                    continue
                inv = {g: v for v, g in a.values[j].items()}
                col_maps.append({g: out.values[j].setdefault(inv[g], len(out.values[j])) for g in sorted(inv)})
            lut = np.zeros(max(len(a.atoms), 1), dtype=np.int32)
            for tup, aid in a.atoms.items():
                new = tuple(g if m is None else m[g] for g, m in zip(tup, col_maps))
                lut[aid] = out.atoms.setdefault(new, len(out.atoms))
            self.config.family.merge(self.config, out.store, a.store, lut)
            out.n_rows += a.n_rows
        return out

    # -- finish
    def finish(self, acc: Accumulator) -> "Merged":
        return Merged.build(self.config, acc)


@dataclass
class Merged:
    """Merged data: canonical atoms and values; the family's rows (set by ``Family.finish``).

    Every computation downstream is order-free (integer counts, exact sums) or first sorts rows by their values, so
    the store order never leaks into a number. ``finish`` consumes the accumulator's store to keep peak memory down.
    """

    config: CombinerConfig
    n_rows: int
    atom_values: list  # canonical atom index -> tuple of (python value or bin code) per slice column
    atom_labels: list  # canonical atom index -> tuple of labels per slice column
    atom_n: np.ndarray | None = None  # rows per canonical atom
    # row families (multiclass, regression): per row, in store order
    atom: np.ndarray | None = None  # canonical atom index
    label: np.ndarray | None = None
    preds: dict = field(default_factory=dict)  # role -> array(s) (regression: score; multiclass: (pred, hit))
    # binary
    runs: dict = field(default_factory=dict)  # role -> canonical atom -> list of sorted keys
    cells: dict = field(default_factory=dict)  # family index -> (keys, counts, int sums)
    rows: list = field(default_factory=list)  # row pieces (see .binary_cells.add_rows)
    score_bits: dict = field(default_factory=dict)  # role -> 16, 32 or 64 (see .binary.role_precision)

    @staticmethod
    def build(config: CombinerConfig, acc: Accumulator) -> "Merged":
        cols = config.slice_columns
        # canonical value ranks per column
        ranks = []
        labels = []
        for j, c in enumerate(cols):
            if c in config.bins:
                lab = bin_labels(list(config.bins[c]))
                ranks.append(None)
                labels.append(lab)
            else:
                vals = sorted(acc.values[j].keys(), key=value_sort_key)
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
                    labs.append(value_label(v))
            atom_values.append(tuple(vals))
            atom_labels.append(tuple(labs))

        merged = Merged(config, acc.n_rows, atom_values, atom_labels)
        config.family.finish(config, acc.store, merged, lut)
        acc.store = None  # the store now lives in ``merged`` only
        return merged
