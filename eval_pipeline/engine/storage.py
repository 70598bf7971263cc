"""Where the binary family keeps its sorted score runs and row pieces: the in-memory storage strategy.

The binary accumulator stores, per model role and atom, sorted runs of (score, label) keys (for exact rank metrics)
and row pieces (each row's label and every model's score, grouped by atom, for the per-slice bootstrap cells). A
storage strategy decides where they live and reads them back for the extract step; the numbers do not depend on it.
:class:`MemoryStorage` (default) keeps everything in memory; :class:`.spill.DiskStorage` (opt-in) writes runs and
pieces to temp files and streams them back, so RAM stays bounded.
"""
from __future__ import annotations

import numpy as np

from .binary_stats import atom_stats, rank_metrics_keys, sorted_union, split_keys


class MemoryStorage:
    """Runs and row pieces stay in memory."""

    def added(self, store, n_new: int) -> None:
        """Called after ``n_new`` rows were added to ``store`` (a ``.binary_cells.BinaryStore``)."""

    def flush(self, store) -> None:
        """Called by ``finish`` before the extract step."""

    def cleanup(self) -> None:
        """Remove whatever the storage holds outside the accumulators (nothing here)."""

    @staticmethod
    def load_rows(piece) -> dict:
        """A row piece's arrays (``seg_atom``, ``seg_bounds``, ``label``, ``score:<role>``)."""
        return piece

    @staticmethod
    def remap_rows(piece, lut):
        """A row piece with its atom ids mapped through ``lut``."""
        return dict(piece, seg_atom=lut[piece["seg_atom"]].astype(np.int32))

    def role_scores(self, role_runs: dict, n_atoms: int) -> "SortedScores":
        """The sorted keys of one model per atom; consumes ``role_runs`` (canonical atom -> list of runs)."""
        return SortedScores(role_runs, n_atoms)


class SortedScores:
    """One model's keys, one sorted array per atom (the runs are dropped as each atom is sorted: bounded peak)."""

    def __init__(self, role_runs: dict, n_atoms: int):
        self.keys = {}
        for aid in range(n_atoms):
            self.keys[aid] = sorted_union(role_runs.pop(aid, []))

    def atom_stats(self, aid: int, threshold: float, ece_edges: np.ndarray, eps: float) -> dict:
        """``.binary_stats.atom_stats`` of one atom."""
        return atom_stats(*split_keys(self.keys[aid]), threshold, ece_edges, eps)

    def rank_metrics(self, atoms: np.ndarray, n: int, P: int) -> tuple[float, float]:
        """(ROC AUC, average precision) of the union of ``atoms`` (``n`` rows, ``P`` positives)."""
        if atoms.size == 1:
            return rank_metrics_keys(self.keys[int(atoms[0])])
        key = np.concatenate([self.keys[int(a)] for a in atoms])
        key.sort()  # in place: no second copy
        return rank_metrics_keys(key)
