"""Multiclass classification from exact count cells.

Per row the engine keeps the label, and per model the predicted class (argmax of the probability columns, first
maximum on ties) and whether the label is in the top-k classes (scikit-learn's tie rule). Cells are
(atom, label, predicted class and top-k hit of each paired model); every metric is an exact function of the cell
counts (confusion matrix per slice), so point estimates are exact and Poisson-bootstrap replicates are exact
Poisson draws of the cell counts (no approximation beyond the bootstrap itself).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from . import bootstrap as bs
from .accumulate import RowFamily
from .binary_stats import divide
from .catalogue import MULTICLASS
from .columns import check_probabilities, column, float_array, raise_bad


class MulticlassFamily(RowFamily):
    """Multiclass classification: a label among ``classes``, one probability column per class per model (role).
    Per row the store keeps the label's class index and, per model, the argmax class and the top-k hit."""

    task_type = MULTICLASS
    label_dtype = np.int16

    def read(self, config, batch, offset):
        col = column(batch, config.label)
        if isinstance(col, pa.Array):
            col = pd.Series(col.to_pylist())
        idx = pd.Index(config.classes).get_indexer(pd.Series(col).to_numpy(dtype=object))
        bad = idx < 0
        if bad.any():
            raise_bad(config.label, f"labels in classes {config.classes}", bad, pd.Series(col).to_numpy(object),
                      offset)
        y = idx.astype(np.int16)
        rows = {"label": y}
        for role in config.roles:
            mats = []
            for c in config.pred_columns[role]:
                p = float_array(column(batch, c), c, offset)
                check_probabilities(p, c, offset, role, "class probabilities")
                mats.append(p)
            P = np.column_stack(mats)
            k = min(config.top_k, P.shape[1])
            order = np.argsort(P, axis=1, kind="mergesort")[:, ::-1][:, :k]  # as sklearn.top_k_accuracy_score
            rows[f"pred:{role}"] = np.argmax(P, axis=1).astype(np.int16)
            rows[f"hit:{role}"] = (order == y[:, None]).any(axis=1)
        return rows

    def predictions(self, config, role, cat):
        return cat(f"pred:{role}", np.int16).astype(np.int16), cat(f"hit:{role}", bool).astype(bool)

    def compute(self, merged, slices, **kw):
        return compute(merged, slices, **kw)


def confusion_metrics(C, hits):
    """C: (..., K, K) confusion weights [true, pred]; hits: (...) top-k hits. Returns metric -> (...)"""
    n = C.sum((-1, -2))
    tp = np.diagonal(C, axis1=-2, axis2=-1)
    support = C.sum(-1)
    predicted = C.sum(-2)
    fp, fn = predicted - tp, support - tp
    f1 = divide(2 * tp, 2 * tp + fp + fn)
    present = (support + predicted) > 0
    with np.errstate(invalid="ignore"):
        macro = divide(np.where(present, f1, 0).sum(-1), present.sum(-1).astype(float))
        weighted = divide(np.where(support > 0, f1 * support, 0).sum(-1), support.sum(-1))
    acc = divide(tp.sum(-1), n)
    micro = divide(2 * tp.sum(-1), 2 * tp.sum(-1) + fp.sum(-1) + fn.sum(-1))
    return {"accuracy": acc, "macro_f1": macro, "micro_f1": micro, "weighted_f1": weighted,
            "top_k_accuracy": divide(hits, n)}


def compute(merged, slices, *, metrics, n_boot, seed, families, role_family):
    K = len(merged.config.classes)
    S = len(slices)
    A = len(merged.atom_values)
    atom_in = np.stack([sl.atom_mask for sl in slices], axis=1) if A else np.zeros((0, S), bool)
    values, reasons, reps = {}, {}, {}
    n_s = None
    for fam_idx, fam in enumerate(families):
        key = merged.atom.astype(np.int64) * K + merged.label
        for r in fam:
            pred, hit = merged.preds[r]
            key = (key * K + pred) * 2 + hit
        cells, counts = np.unique(key, return_counts=True)
        rest = cells.copy()
        cb = {}
        for r in reversed(fam):
            rest, h = np.divmod(rest, 2)
            rest, p = np.divmod(rest, K)
            cb[r] = (p, h)
        c_atom, c_y = np.divmod(rest, K)
        ci, si = np.nonzero(atom_in[c_atom]) if cells.size else (np.zeros(0, int), np.zeros(0, int))
        rows, cols, data, off, layout = [], [], [], 0, {}
        for r in fam:
            p, h = cb[r]
            layout[r] = off
            rows += [ci, ci]
            cols += [off + (si * K + c_y[ci]) * K + p[ci], off + S * K * K + si]
            data += [np.ones(ci.size), h[ci].astype(float)]
            off += S * K * K + S
        MT = sp.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(cells.size, off)).T.tocsr()

        def metrics_from(H):
            out = {}
            for r in fam:
                o = layout[r]
                C = np.moveaxis(H[o:o + S * K * K].reshape(S, K, K, -1), -1, 1)  # (S, b, K, K)
                out[r] = confusion_metrics(C, H[o + S * K * K:o + S * K * K + S])
            return out

        point = metrics_from(MT @ counts.astype(np.float64)[:, None])
        Hn = (MT @ counts.astype(np.float64)[:, None])
        n_s = Hn[layout[fam[0]]:layout[fam[0]] + S * K * K].reshape(S, K * K).sum(1).astype(np.int64)
        for r in fam:
            values[r] = {m: point[r][m][:, 0] for m in metrics}
            reasons[r] = {m: ["empty slice" if n_s[j] == 0 else None for j in range(S)] for m in metrics}
        if n_boot > 0 and cells.size:
            def block(i, size):
                return metrics_from(MT @ bs.poisson_cells(bs.block_rng(seed, fam_idx, i), counts, size))
            blocks = bs.run_blocks(n_boot, block)
            for r in fam:
                reps[r] = {m: np.concatenate([b[r][m] for b in blocks], axis=1).T for m in metrics}
    return {"n": n_s, "n_positive": None, "values": values, "reasons": reasons, "reps": reps}
