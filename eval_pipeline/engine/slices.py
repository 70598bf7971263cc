"""Slice definitions over the merged atoms (an atom = one combination of values of all slice columns)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .accumulate import Merged, bin_labels, value_sort_key
from .config import SliceConfig
from .errors import EngineInputError


@dataclass
class SliceDef:
    name: str
    columns: dict  # column -> value label
    atom_mask: np.ndarray  # bool over canonical atoms
    group: str  # "overall", a column name, or "a x b" for a cross


def slice_columns(cfg: SliceConfig) -> list[str]:
    cols: list[str] = []
    for c in list(cfg.columns) + [c for cr in cfg.crosses for c in cr] + list(cfg.bins):
        if c not in cols:
            cols.append(c)
    return cols


def validate_config(cfg: SliceConfig):
    if not isinstance(cfg, SliceConfig):
        raise EngineInputError(f"slices: expected a SliceConfig, got {type(cfg).__name__}")
    for cr in cfg.crosses:
        if isinstance(cr, str) or len(cr) < 2:
            raise EngineInputError(f"slices.crosses: each cross needs a list of >= 2 columns, got {cr!r}")
    for c, edges in dict(cfg.bins).items():
        e = np.asarray(edges, dtype=float)
        if e.ndim != 1 or e.size < 1 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise EngineInputError(f"slices.bins['{c}']: expected strictly increasing finite edges, got {edges!r}")
    if cfg.min_size < 0 or cfg.max_values < 1 or cfg.min_positives < 0 or cfg.min_negatives < 0:
        raise EngineInputError("slices: min_size, min_positives and min_negatives must be >= 0 and max_values >= 1")


def build_slices(merged: Merged, cfg: SliceConfig) -> tuple[list[SliceDef], list[str]]:
    cols = merged.config.slice_columns
    n_atoms = len(merged.atom_values)
    atom_n = merged.atom_n
    warnings: list[str] = []
    out = [SliceDef("overall", {}, np.ones(n_atoms, dtype=bool), "overall")]

    # per column: kept values (in value order) and the atom -> value index
    kept: dict[str, list] = {}
    for j, c in enumerate(cols):
        vals = [av[j] for av in merged.atom_values]
        counts: dict = {}
        for v, k in zip(vals, atom_n.tolist()):
            counts[v] = counts.get(v, 0) + k
        if c in merged.config.bins:
            n_edges = len(merged.config.bins[c])
            # interior bins always (possibly empty); outer and null bins only when present
            order = [g for g in range(n_edges + 2) if 1 <= g < n_edges or counts.get(g, 0) > 0]
            kept[c] = order
        else:
            order = sorted(counts, key=value_sort_key)
            if len(order) > cfg.max_values:
                top = sorted(order, key=lambda v: (-counts[v], value_sort_key(v)))[: cfg.max_values]
                topset = set(map(_hashable, top))
                warnings.append(
                    f"slice column '{c}' has {len(order)} distinct values; kept the {cfg.max_values} largest "
                    f"(max_values), {len(order) - cfg.max_values} smaller values get no slice of their own"
                )
                order = [v for v in order if _hashable(v) in topset]
            kept[c] = order

    def label(c, v):
        if c in merged.config.bins:
            return bin_labels(list(merged.config.bins[c]))[v]
        return "null" if v is None else str(v)

    singles = list(cfg.columns) + [c for c in cfg.bins if c not in cfg.columns and not any(c in cr for cr in cfg.crosses)]
    for c in singles:
        j = cols.index(c)
        by_value: dict = {}
        for a, av in enumerate(merged.atom_values):
            by_value.setdefault(_hashable(av[j]), []).append(a)
        for v in kept[c]:
            mask = np.zeros(n_atoms, dtype=bool)
            mask[by_value.get(_hashable(v), [])] = True
            lab = label(c, v)
            out.append(SliceDef(f"{c}={lab}", {c: lab}, np.asarray(mask, dtype=bool), c))
    for cr in cfg.crosses:
        js = [cols.index(c) for c in cr]
        rank = {c: {_hashable(v): i for i, v in enumerate(kept[c])} for c in cr}
        combos = {}
        for a, av in enumerate(merged.atom_values):
            key = tuple(_hashable(av[j]) for j in js)
            if all(k in rank[c] for k, c in zip(key, cr)):
                combos.setdefault(key, []).append(a)
        for key in sorted(combos, key=lambda k: tuple(rank[c][x] for x, c in zip(k, cr))):
            mask = np.zeros(n_atoms, dtype=bool)
            mask[combos[key]] = True
            labs = {c: label(c, _unhash(x)) for c, x in zip(cr, key)}
            name = " & ".join(f"{c}={labs[c]}" for c in cr)
            out.append(SliceDef(name, labs, mask, " x ".join(cr)))
    return out, warnings


class _Null:
    def __repr__(self):
        return "null"


_NULL = _Null()


def _hashable(v):
    return _NULL if v is None else v


def _unhash(v):
    return None if v is _NULL else v
