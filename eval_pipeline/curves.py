"""Row-level summaries for the report's plots, streamed and mergeable, bounded in size whatever the data size.

What the decision report draws from rows (ROC / PR curves, reliability diagram, score distributions, confusion
matrices) is computed here from *fine score histograms*: per model and per label, the count and the score sum of
each of ``bins`` equal-width bins on [0, 1] (bin of a score ``s``: ``searchsorted(edges, s, 'right') - 1`` clipped to
``[0, bins - 1]``, as the engine's ECE bins, so 1.0 is in the last bin). Histograms of two batches add up, so a
10^8-row evaluation is summarised batch by batch in O(bins) memory, and the result does not depend on the batch size
(counts are integers; score sums are only used for the reliability diagram's mean predicted value).

At a threshold equal to a bin edge ``t = edges[i]``, "score >= t" is exactly "bin >= i": the curve points below are
the *exact* operating points at those thresholds (they equal scikit-learn's ``roc_curve`` at the same thresholds);
only rows tied within a bin are merged (the area under the binned curve counts them as ties, 1/2). With 10,000 bins
the AUC of the binned curve is within ~1e-4 of the exact one on real data; the curves are then thinned to at most
``max_points`` points (evenly along the curve's length), so the report stays small at any data size.

Binary: ``BinaryHist`` per model (plus the exact confusion matrix at the decision threshold). Multiclass:
``MulticlassHist`` (one-vs-rest histograms of each class's probability, and the K x K confusion matrix of the argmax,
first maximum on ties, as the engine). Regression: ``RegressionHist`` (residual histogram and a predicted-vs-actual
2-D histogram over ranges found in a first streamed pass).

Entry points: :func:`report_curves` (reads the evaluation rows' labels and each model's predictions from the lake,
streamed) and :func:`curves_from_batches` (any iterator of ``(labels, {role: scores})``, e.g. for tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from .scoring import predictions_path, score_columns
from .snapshot import eval_rows

DEFAULT_BINS = 10_000
MAX_POINTS = 2_000
DIST_BINS = 50          # score-distribution histogram (aggregated from the fine bins)
REG_BINS = 60           # regression: residual histogram and predicted-vs-actual grid


def _fine_index(scores: np.ndarray, bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.searchsorted(edges, scores, side="right") - 1
    return np.clip(idx, 0, bins - 1)


# -- accumulators ----------------------------------------------------------------------------------------------------
@dataclass
class BinaryHist:
    """Fine histograms of one model's scores per label, and the exact confusion matrix at ``threshold``."""

    bins: int = DEFAULT_BINS
    threshold: float = 0.5
    counts: np.ndarray = field(default=None)     # (2, bins) int64: row 0 label 0, row 1 label 1
    sums: np.ndarray = field(default=None)       # (2, bins) float64: sum of scores
    confusion: np.ndarray = field(default=None)  # (2, 2) int64: [[tn, fp], [fn, tp]]

    def __post_init__(self):
        if self.counts is None:
            self.counts = np.zeros((2, self.bins), np.int64)
            self.sums = np.zeros((2, self.bins), np.float64)
            self.confusion = np.zeros((2, 2), np.int64)

    def update(self, y: np.ndarray, s: np.ndarray) -> "BinaryHist":
        y = np.asarray(y).astype(np.int64, copy=False)
        s = np.asarray(s, dtype=np.float64)
        idx = _fine_index(s, self.bins)
        for lab in (0, 1):
            m = y == lab
            self.counts[lab] += np.bincount(idx[m], minlength=self.bins)
            self.sums[lab] += np.bincount(idx[m], weights=s[m], minlength=self.bins)
        pred = (s >= self.threshold).astype(np.int64)
        self.confusion += np.bincount(y * 2 + pred, minlength=4).reshape(2, 2)
        return self

    def merge(self, other: "BinaryHist") -> "BinaryHist":
        self.counts += other.counts
        self.sums += other.sums
        self.confusion += other.confusion
        return self


@dataclass
class MulticlassHist:
    """One-vs-rest fine histograms of each class's probability, and the argmax confusion matrix."""

    classes: list
    bins: int = DEFAULT_BINS
    counts: np.ndarray = field(default=None)     # (K, 2, bins): class k, label == k (1) or not (0)
    confusion: np.ndarray = field(default=None)  # (K, K): true class row, predicted class column

    def __post_init__(self):
        k = len(self.classes)
        if self.counts is None:
            self.counts = np.zeros((k, 2, self.bins), np.int64)
            self.confusion = np.zeros((k, k), np.int64)

    def update(self, y: np.ndarray, p: np.ndarray) -> "MulticlassHist":
        k = len(self.classes)
        y = np.asarray(y, dtype=np.int64)   # class indices
        p = np.asarray(p, dtype=np.float64).reshape(len(y), k)
        for c in range(k):
            idx = _fine_index(p[:, c], self.bins)
            hit = (y == c).astype(np.int64)
            self.counts[c] += np.bincount(hit * self.bins + idx, minlength=2 * self.bins).reshape(2, self.bins)
        pred = np.argmax(p, axis=1)          # first maximum on ties, as the engine
        self.confusion += np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
        return self

    def merge(self, other: "MulticlassHist") -> "MulticlassHist":
        self.counts += other.counts
        self.confusion += other.confusion
        return self


@dataclass
class RegressionHist:
    """Residual histogram and predicted-vs-actual grid over fixed ranges (found by a first pass)."""

    value_range: tuple[float, float]
    residual_range: tuple[float, float]
    bins: int = REG_BINS
    residuals: np.ndarray = field(default=None)  # (bins,)
    grid: np.ndarray = field(default=None)       # (bins, bins): actual row, predicted column

    def __post_init__(self):
        if self.residuals is None:
            self.residuals = np.zeros(self.bins, np.int64)
            self.grid = np.zeros((self.bins, self.bins), np.int64)

    @staticmethod
    def _idx(x, lo, hi, bins):
        if hi <= lo:
            return np.zeros(len(x), np.int64)
        return np.clip(((x - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)

    def update(self, y: np.ndarray, pred: np.ndarray) -> "RegressionHist":
        y = np.asarray(y, dtype=np.float64)
        pred = np.asarray(pred, dtype=np.float64)
        b = self.bins
        r = self._idx(pred - y, *self.residual_range, b)
        self.residuals += np.bincount(r, minlength=b)
        iy, ip = self._idx(y, *self.value_range, b), self._idx(pred, *self.value_range, b)
        self.grid += np.bincount(iy * b + ip, minlength=b * b).reshape(b, b)
        return self


# -- curves from the histograms --------------------------------------------------------------------------------------
def _thin(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points spread evenly along the polyline (first and last kept)."""
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    seg = np.hypot(np.diff(x), np.diff(y))
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0.0, arc[-1], max_points)
    idx = np.unique(np.clip(np.searchsorted(arc, targets, side="left"), 0, n - 1))
    idx = np.union1d(idx, [0, n - 1])
    if len(idx) > max_points:  # union may add one or two; drop interior points evenly
        keep = np.unique(np.round(np.linspace(0, len(idx) - 1, max_points)).astype(np.int64))
        idx = idx[keep]
    return idx


def _operating_points(neg: np.ndarray, pos: np.ndarray):
    """Cumulative (FP, TP) at thresholds edges[i] for every non-empty bin i, highest threshold first, with the
    (0, 0) point (threshold above every score) in front. Returns (bin indices or -1, fp, tp)."""
    nz = np.flatnonzero((neg + pos) > 0)[::-1]
    fp_all = np.cumsum(neg[::-1])[::-1]  # fp_all[i] = rows of label 0 with bin >= i
    tp_all = np.cumsum(pos[::-1])[::-1]
    fp = np.concatenate([[0], fp_all[nz]]) if len(nz) else np.zeros(1, np.int64)
    tp = np.concatenate([[0], tp_all[nz]]) if len(nz) else np.zeros(1, np.int64)
    return np.concatenate([[-1], nz]), fp, tp


def _thr_list(t: np.ndarray) -> list:
    """Thresholds as JSON-safe floats; None for the point above every score (threshold +inf)."""
    return [None if not np.isfinite(v) else float(v) for v in t]


def binary_curves(h: BinaryHist, ece_bins: int = 10, max_points: int = MAX_POINTS) -> dict:
    """ROC, PR, reliability, score distributions and confusion of one model, JSON-safe, bounded in size."""
    neg, pos = h.counts[0], h.counts[1]
    P, N = int(pos.sum()), int(neg.sum())
    edges = np.linspace(0.0, 1.0, h.bins + 1)
    bidx, fp, tp = _operating_points(neg, pos)
    thr = np.where(bidx < 0, np.inf, edges[np.maximum(bidx, 0)])
    out: dict = {"n": P + N, "positives": P, "negatives": N, "bins": h.bins,
                 "prevalence": P / (P + N) if P + N else None}
    if P and N:
        fpr, tpr = fp / N, tp / P
        out["auc"] = float(np.trapezoid(tpr, fpr))
        k = _thin(fpr, tpr, max_points)
        out["roc"] = {"fpr": fpr[k].tolist(), "tpr": tpr[k].tolist(), "threshold": _thr_list(thr[k])}
    if P:
        pp = fp + tp
        ok = pp > 0
        prec = np.where(ok, tp / np.where(ok, pp, 1), 1.0)
        rec = tp / P
        # step-wise AP over the binned thresholds (ties within a bin form one threshold), as the engine's AP
        out["average_precision"] = float(np.sum(np.diff(rec) * prec[1:]))
        r, p, t = rec[1:], prec[1:], thr[1:]
        k = _thin(r, p, max_points)
        out["pr"] = {"recall": r[k].tolist(), "precision": p[k].tolist(), "threshold": _thr_list(t[k])}
    # reliability (ece_bins equal-width bins, fine bins assigned by their centre)
    centres = (edges[:-1] + edges[1:]) / 2
    coarse = np.clip(np.searchsorted(np.linspace(0, 1, ece_bins + 1), centres, side="right") - 1, 0, ece_bins - 1)
    cnt = np.bincount(coarse, weights=(neg + pos).astype(np.float64), minlength=ece_bins)
    npos = np.bincount(coarse, weights=pos.astype(np.float64), minlength=ece_bins)
    ssum = np.bincount(coarse, weights=h.sums[0] + h.sums[1], minlength=ece_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["reliability"] = {"bins": ece_bins, "count": cnt.astype(np.int64).tolist(),
                              "mean_predicted": [None if c == 0 else float(v) for c, v in zip(cnt, ssum / cnt)],
                              "observed": [None if c == 0 else float(v) for c, v in zip(cnt, npos / cnt)]}
    dist = np.clip(np.searchsorted(np.linspace(0, 1, DIST_BINS + 1), centres, side="right") - 1, 0, DIST_BINS - 1)
    out["distribution"] = {"edges": np.linspace(0, 1, DIST_BINS + 1).tolist(),
                           "negatives": np.bincount(dist, weights=neg, minlength=DIST_BINS).astype(np.int64).tolist(),
                           "positives": np.bincount(dist, weights=pos, minlength=DIST_BINS).astype(np.int64).tolist()}
    (tn, fpc), (fn, tpc) = h.confusion.tolist()
    out["confusion"] = {"threshold": h.threshold, "labels": [0, 1], "matrix": [[tn, fpc], [fn, tpc]]}
    return out


def multiclass_curves(h: MulticlassHist, max_points: int = MAX_POINTS) -> dict:
    edges = np.linspace(0.0, 1.0, h.bins + 1)
    per_class = []
    for c, name in enumerate(h.classes):
        neg, pos = h.counts[c, 0], h.counts[c, 1]
        P, N = int(pos.sum()), int(neg.sum())
        entry = {"class": name, "positives": P, "negatives": N}
        if P and N:
            bidx, fp, tp = _operating_points(neg, pos)
            fpr, tpr = fp / N, tp / P
            thr = np.where(bidx < 0, np.inf, edges[np.maximum(bidx, 0)])
            k = _thin(fpr, tpr, max_points // max(1, min(len(h.classes), 4)))
            entry["auc"] = float(np.trapezoid(tpr, fpr))
            entry["roc"] = {"fpr": fpr[k].tolist(), "tpr": tpr[k].tolist(), "threshold": _thr_list(thr[k])}
        per_class.append(entry)
    return {"n": int(h.confusion.sum()), "classes": list(h.classes), "per_class": per_class,
            "confusion": {"labels": list(h.classes), "matrix": h.confusion.tolist()}}


def regression_curves(h: RegressionHist) -> dict:
    lo, hi = h.residual_range
    vlo, vhi = h.value_range
    return {"n": int(h.residuals.sum()),
            "residuals": {"edges": np.linspace(lo, hi, h.bins + 1).tolist(), "counts": h.residuals.tolist()},
            "grid": {"edges": np.linspace(vlo, vhi, h.bins + 1).tolist(), "counts": h.grid.tolist()}}


# -- streaming -------------------------------------------------------------------------------------------------------
Batches = Iterable[tuple[np.ndarray, dict[str, np.ndarray]]]


def curves_from_batches(batches: Batches | Callable[[], Batches], *, task_type: str, roles: list[str],
                        threshold: float = 0.5, classes: list | None = None, ece_bins: int = 10,
                        bins: int = DEFAULT_BINS, max_points: int = MAX_POINTS) -> dict:
    """Summaries per role from ``(labels, {role: scores})`` batches. Regression needs two passes: pass a callable
    that returns a fresh iterator (a plain iterable is materialised once for it, which is fine for tests only)."""
    if task_type == "ranking":  # its metrics are per query: the report's tables, no per-row curve
        return {"task_type": task_type, "roles": roles, "models": {}}
    if task_type == "regression":
        make = batches if callable(batches) else (lambda data=list(batches): iter(data))
        vlo, vhi, rlo, rhi = np.inf, -np.inf, np.inf, -np.inf
        for y, preds in make():
            y = np.asarray(y, np.float64)
            for role in roles:
                p = np.asarray(preds[role], np.float64)
                if len(y):
                    vlo, vhi = min(vlo, y.min(), p.min()), max(vhi, y.max(), p.max())
                    r = p - y
                    rlo, rhi = min(rlo, r.min()), max(rhi, r.max())
        if not np.isfinite(vlo):
            vlo = vhi = rlo = rhi = 0.0
        hists = {r: RegressionHist((float(vlo), float(vhi)), (float(rlo), float(rhi))) for r in roles}
        for y, preds in make():
            for role in roles:
                hists[role].update(y, preds[role])
        return {"task_type": task_type, "roles": roles, "models": {r: regression_curves(h) for r, h in hists.items()}}
    it = batches() if callable(batches) else batches
    if task_type == "multiclass_classification":
        hists = {r: MulticlassHist(list(classes), bins) for r in roles}
    else:
        hists = {r: BinaryHist(bins, threshold) for r in roles}
    for y, preds in it:
        for role in roles:
            hists[role].update(y, preds[role])
    if task_type == "multiclass_classification":
        models = {r: multiclass_curves(h, max_points) for r, h in hists.items()}
    else:
        models = {r: binary_curves(h, ece_bins, max_points) for r, h in hists.items()}
    return {"task_type": task_type, "roles": roles, "models": models}


class _Aligned:
    """Re-chunk a stream of record batches into slices of the requested lengths (prediction files are read in
    their own batches; the evaluation rows decide the lengths)."""

    def __init__(self, batches: Iterator[pa.RecordBatch]):
        self._it = iter(batches)
        self._buf: list[pa.RecordBatch] = []
        self._rows = 0

    def take(self, n: int) -> pa.Table | None:
        while self._rows < n:
            try:
                b = next(self._it)
            except StopIteration:
                return None
            self._buf.append(b)
            self._rows += b.num_rows
        table = pa.Table.from_batches(self._buf)
        head, rest = table.slice(0, n), table.slice(n)
        self._buf = rest.to_batches() if rest.num_rows else []
        self._rows = rest.num_rows
        return head


def _label_codes(values, spec) -> np.ndarray:
    import pandas as pd

    if spec.task_type == "multiclass_classification":
        idx = pd.Index(spec.model.classes).get_indexer(pd.Series(values.to_pylist()).to_numpy(dtype=object))
        return idx.astype(np.int64)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def scored_batches(lake, spec, snap, roles: dict) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Evaluation rows' labels and each role's scores, streamed batch by batch (rows whose label is outside the
    spec's classes are skipped: the engine refuses them anyway). ``roles`` maps role -> ModelManifest."""

    cols = score_columns(spec)
    id_col, label = spec.columns.id, spec.columns.label
    readers = {}
    for role, manifest in roles.items():
        rel = predictions_path(spec, snap, manifest)
        readers[role] = _Aligned(lake.iter_batches(rel, columns=[id_col] + cols))
    for batch in eval_rows(lake, snap, spec, [id_col, label]):
        n = batch.num_rows
        ids = batch.column(id_col)
        y = _label_codes(batch.column(label), spec)
        preds = {}
        for role, reader in readers.items():
            part = reader.take(n)
            if part is None or not part.column(id_col).combine_chunks().equals(ids):
                raise ValueError(f"predictions of {roles[role].ref} are out of step with snapshot "
                                 f"{snap.snapshot_id}; re-score the model")
            if len(cols) == 1:
                preds[role] = part.column(cols[0]).to_numpy()
            else:
                preds[role] = np.column_stack([part.column(c).to_numpy() for c in cols])
        if spec.task_type == "multiclass_classification":
            keep = y >= 0
            if not keep.all():
                y = y[keep]
                preds = {r: p[keep] for r, p in preds.items()}
        elif spec.task_type == "binary_classification":
            keep = (y == 0) | (y == 1)
            if not keep.all():
                y = y[keep]
                preds = {r: p[keep] for r, p in preds.items()}
        yield y, preds


def report_curves(lake, spec, snap, roles: dict, *, bins: int = DEFAULT_BINS, max_points: int = MAX_POINTS) -> dict:
    """The plot data of an evaluation: streamed from the lake (labels from the snapshot, scores from each role's
    predictions file), bounded in size (at most ``max_points`` points per curve)."""
    return curves_from_batches(lambda: scored_batches(lake, spec, snap, roles), task_type=spec.task_type,
                               roles=list(roles), threshold=spec.model.threshold, classes=spec.model.classes,
                               ece_bins=spec.evaluation.ece_bins, bins=bins, max_points=max_points)
