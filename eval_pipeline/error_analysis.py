"""Error analysis of a paired evaluation: which rows flipped between the baseline and the candidate, where, and examples.

Per row, each model is *right* or *wrong*:

- binary: ``(score >= threshold) == label``, the threshold compared in the scores' own float precision (as the
  engine's accuracy);
- multiclass: ``argmax(probabilities) == label`` (first maximum on ties, as the engine);
- regression: not analysed (there is no right or wrong without a tolerance the spec does not have; the step writes
  nothing and the report has no error-analysis section).

Per slice (the engine's own slices: overall, single columns, crosses, bins, ``max_values``; built by the engine's
combiner and :func:`~eval_pipeline.engine.slices.build_slices` from per-atom counts, so a row lands in exactly the
slices the metrics put it in) the flip table counts ``both_right``, ``right_to_wrong`` (baseline right, candidate
wrong), ``wrong_to_right`` and ``both_wrong``. Counts are exact. Intervals, at the spec's ``evaluation.confidence``
and *not* adjusted for multiplicity (the gates are; these are for reading):

- each flip rate (count / n): the Wilson score interval;
- the net regression rate ``(right_to_wrong - wrong_to_right) / n`` = baseline accuracy - candidate accuracy, i.e.
  minus the engine's paired accuracy delta: Newcombe's square-and-add interval for paired proportions (Newcombe
  1998, method 10: the two marginal Wilson intervals combined with the continuity-adjusted phi correlation; as in
  Fagerland, Lydersen & Laake, *Statistical Analysis of Contingency Tables*, ch. 8).

The most regressed slices are the ``ok``-sized slices (``slices.min_size`` etc., the engine's rule) other than
``overall`` with a positive net regression rate, ranked by it (ties: by the interval's lower bound, then name).

The top regressed rows are the rows the baseline got right and the candidate got wrong, ranked by the candidate's
probability on wrong answers, ``1 - p(true class)`` (binary: the score of the class it wrongly predicted), highest
first (ties: earlier row first); at most ``top_rows`` (50) are kept in a bounded heap while streaming. Their ids,
labels, both models' outputs, slice values and the snapshot's feature values (read for those ids only) are written
to ``<evidence folder>/regressed_rows.parquet``.

Memory is bounded whatever the rows: counts per slice atom and the heap. The rows come from the engine's own row
reader (``pipeline._engine_batches``: ids, labels, slice columns and every role's predictions, joined), passed in by
the caller, so this module does not import the pipeline.

Output, ``<evidence folder>/error_analysis.json`` (what :mod:`eval_pipeline.report_html` renders)::

    {"schema_version": 1, "summary": str, "definition": {...}, "baseline": ref, "candidate": ref,
     "confidence": 0.95, "n_rows": int,
     "most_regressed": [slice row, ...],     # ranked, at most max_slices
     "slices": [slice row, ...],             # every slice, in the engine's order
     "top_rows": [row dict, ...],            # the regressed rows (no features: those are in the parquet)
     "rows_uri": "<folder>/regressed_rows.parquet", "rows_file": "regressed_rows.parquet"}

    slice row: {"slice", "n", "both_right", "right_to_wrong", "wrong_to_right", "both_wrong",
                "right_to_wrong_rate", "right_to_wrong_ci", "wrong_to_right_rate", "wrong_to_right_ci",
                "net_regression_rate", "net_regression_ci", "accuracy_delta", "status"}
"""

from __future__ import annotations

import heapq
import math
from statistics import NormalDist
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .engine import SliceConfig
from .engine.accumulate import Combiner, CombinerConfig, Family
from .engine.evaluate import _size_status
from .engine.slices import build_slices, slice_columns
from .jsonsafe import to_jsonsafe
from .scoring import score_columns
from .snapshot import eval_rows

RESULT_FILE = "error_analysis.json"
ROWS_FILE = "regressed_rows.parquet"
TOP_ROWS = 50
MAX_SLICES = 10
CELLS = ("both_right", "right_to_wrong", "wrong_to_right", "both_wrong")
_CODE, _POS = "__flip_code", "__flip_positive"  # per-row columns the combiner's family reads


# -- intervals -------------------------------------------------------------------------------------------------------
def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(k: int, n: int, confidence: float = 0.95) -> list[float] | None:
    """Wilson score interval of the proportion k / n (None when n == 0)."""
    if n <= 0:
        return None
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def paired_difference_ci(both_right: int, right_to_wrong: int, wrong_to_right: int, both_wrong: int,
                         confidence: float = 0.95) -> list[float] | None:
    """Newcombe's square-and-add interval (1998, method 10) for baseline accuracy - candidate accuracy,
    ``(right_to_wrong - wrong_to_right) / n``, from the paired 2 x 2 table (rows: baseline right / wrong, columns:
    candidate right / wrong)."""
    a, b, c, d = both_right, right_to_wrong, wrong_to_right, both_wrong
    n = a + b + c + d
    if n <= 0:
        return None
    p1, p2 = (a + b) / n, (a + c) / n  # baseline, candidate accuracy
    l1, u1 = wilson(a + b, n, confidence)
    l2, u2 = wilson(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if margins > 0:
        cross = a * d - b * c
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    est = p1 - p2
    lo = est - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    hi = est + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    return [max(-1.0, lo), min(1.0, hi)]


# -- right or wrong, per row -----------------------------------------------------------------------------------------
def judge(frame: pd.DataFrame, *, task_type: str, label: str, pred_columns: dict, threshold: float = 0.5,
          classes: list | None = None) -> dict:
    """Per row: ``keep`` (a label the task knows), ``y`` (0/1 or class index), per role ``right`` and ``p_true``
    (the probability the model put on the true class) and ``output`` (binary: the score; multiclass: the predicted
    class). ``pred_columns``: role -> column (binary) or list of columns in ``classes`` order (multiclass)."""
    out = {"right": {}, "p_true": {}, "output": {}}
    if task_type == "multiclass_classification":
        y = pd.Index(list(classes)).get_indexer(frame[label].to_numpy(dtype=object))
        keep = y >= 0
        yi = np.where(keep, y, 0)
        for role, cols in pred_columns.items():
            P = np.column_stack([frame[c].to_numpy(dtype=np.float64) for c in cols])
            pred = np.argmax(P, axis=1)  # first maximum on ties, as the engine
            out["right"][role] = pred == yi
            out["p_true"][role] = P[np.arange(len(yi)), yi]
            out["output"][role] = pred
    elif task_type == "binary_classification":
        yf = frame[label].to_numpy(dtype=np.float64)
        keep = (yf == 0) | (yf == 1)
        yi = np.where(keep, yf, 0).astype(np.int64)
        for role, col in pred_columns.items():
            s = frame[col].to_numpy()
            ftype = s.dtype.type if s.dtype.kind == "f" else np.float64
            s = s.astype(ftype, copy=False)
            pred = (s >= ftype(threshold)).astype(np.int64)  # in the scores' own precision, as the engine
            s64 = s.astype(np.float64)
            out["right"][role] = pred == yi
            out["p_true"][role] = np.where(yi == 1, s64, 1.0 - s64)
            out["output"][role] = s64
    else:
        raise ValueError(f"error analysis: task type {task_type!r} has no right or wrong per row")
    out["keep"], out["y"] = keep, yi
    return out


def flip_codes(base_right: np.ndarray, cand_right: np.ndarray) -> np.ndarray:
    """0 both right, 1 right -> wrong, 2 wrong -> right, 3 both wrong (the order of ``CELLS``)."""
    return (2 * (~base_right).astype(np.int64) + (~cand_right).astype(np.int64)).astype(np.int64)


# -- per-slice counts through the engine's combiner ------------------------------------------------------------------
class _FlipFamily(Family):
    """A combiner family that keeps, per slice atom, the four flip counts and the positive labels (binary)."""

    task_type = "flips"

    def __init__(self):
        self.counts = np.zeros((0, 5), np.int64)

    def create(self, config):
        return {"c": np.zeros((0, 5), np.int64)}

    def read(self, config, batch, offset):
        return {"code": batch[_CODE].to_numpy(np.int64), "pos": batch[_POS].to_numpy(np.int64)}

    def add(self, config, store, rows):
        atom = rows["atom"].astype(np.int64)
        size = int(atom.max()) + 1 if atom.size else 0
        if size > len(store["c"]):
            store["c"] = np.vstack([store["c"], np.zeros((size - len(store["c"]), 5), np.int64)])
        k = len(store["c"])
        store["c"][:, :4] += np.bincount(atom * 4 + rows["code"], minlength=4 * k).reshape(k, 4)
        store["c"][:, 4] += np.bincount(atom, weights=rows["pos"], minlength=k).astype(np.int64)

    def merge(self, config, out, store, lut):
        k = int(lut.max()) + 1 if len(store["c"]) else 0
        if k > len(out["c"]):
            out["c"] = np.vstack([out["c"], np.zeros((k - len(out["c"]), 5), np.int64)])
        np.add.at(out["c"], lut[:len(store["c"])], store["c"])

    def finish(self, config, store, merged, lut):
        n_atoms = len(merged.atom_values)
        counts = np.zeros((n_atoms, 5), np.int64)
        np.add.at(counts, lut[:len(store["c"])], store["c"])
        self.counts = counts
        merged.atom_n = counts[:, :4].sum(axis=1)


def _slice_row(name: str, cells: np.ndarray, status: str, confidence: float) -> dict:
    a, b, c, d = (int(x) for x in cells)
    n = a + b + c + d
    row = {"slice": name, "n": n, "both_right": a, "right_to_wrong": b, "wrong_to_right": c, "both_wrong": d}
    row["right_to_wrong_rate"] = b / n if n else None
    row["right_to_wrong_ci"] = wilson(b, n, confidence)
    row["wrong_to_right_rate"] = c / n if n else None
    row["wrong_to_right_ci"] = wilson(c, n, confidence)
    row["net_regression_rate"] = (b - c) / n if n else None
    row["net_regression_ci"] = paired_difference_ci(a, b, c, d, confidence)
    # computed as the engine computes accuracy (each model's (tp + tn) / n), then differenced
    row["accuracy_delta"] = ((a + c) / n - (a + b) / n) if n else None
    row["status"] = status
    return row


# -- the analysis ----------------------------------------------------------------------------------------------------
def analyse(frames: Iterable[pd.DataFrame], *, task_type: str, id_column: str, label: str, baseline_columns,
            candidate_columns, slices: SliceConfig, threshold: float = 0.5, classes: list | None = None,
            confidence: float = 0.95, top_rows: int = TOP_ROWS, max_slices: int = MAX_SLICES) -> dict:
    """Stream ``frames`` (ids, labels, slice columns and both models' predictions) once: the flip table per slice,
    the most regressed slices and the top regressed rows (a DataFrame under ``"rows"``, without features)."""
    cols = slice_columns(slices)
    family = _FlipFamily()
    config = CombinerConfig(task_type="flips", family=family, label=label, roles=["baseline", "candidate"],
                            pred_columns={}, slice_columns=cols,
                            bins={k: list(v) for k, v in dict(slices.bins).items()}, threshold=float(threshold),
                            classes=classes, top_k=1)
    comb = Combiner(config)
    acc = comb.create_accumulator()
    heap: list[tuple] = []  # (confidence on wrong answers, -row position, row dict): the smallest is dropped
    offset = 0
    for frame in frames:
        n = len(frame)
        if not n:
            continue
        j = judge(frame, task_type=task_type, label=label, threshold=threshold, classes=classes,
                  pred_columns={"baseline": baseline_columns, "candidate": candidate_columns})
        keep = j["keep"]
        codes = flip_codes(j["right"]["baseline"], j["right"]["candidate"])
        part = frame.assign(**{_CODE: codes, _POS: j["y"] if task_type == "binary_classification" else 0})
        if not keep.all():
            part = part[keep]
        comb.add_batch(acc, part, offset)
        # the top regressed rows of this batch, then the bounded heap
        wrong = 1.0 - j["p_true"]["candidate"]
        idx = np.flatnonzero((codes == 1) & keep)
        if idx.size > top_rows:  # highest first, earlier row first on ties
            order = np.lexsort((idx, -wrong[idx]))[:top_rows]
            idx = idx[order]
        for i in idx.tolist():
            key = (float(wrong[i]), -(offset + i))
            if len(heap) < top_rows or key > heap[0][:2]:
                row = {"rank": 0, "row": offset + i, id_column: _py_value(frame[id_column].iloc[i]),
                       "label": _py_value(frame[label].iloc[i]),
                       "candidate_wrong_probability": float(wrong[i]),
                       "baseline_true_probability": float(j["p_true"]["baseline"][i]),
                       "candidate_output": _py(j["output"]["candidate"][i], task_type, classes),
                       "baseline_output": _py(j["output"]["baseline"][i], task_type, classes)}
                row.update({c: _py_value(frame[c].iloc[i]) for c in cols})
                item = (key[0], key[1], row)
                if len(heap) < top_rows:
                    heapq.heappush(heap, item)
                else:
                    heapq.heapreplace(heap, item)
        offset += n
    merged = comb.finish(acc)
    sdefs, _ = build_slices(merged, slices)
    counts = family.counts
    rows_out = []
    for sd in sdefs:
        cells = counts[sd.atom_mask].sum(axis=0) if counts.size else np.zeros(5, np.int64)
        n = int(cells[:4].sum())
        n_pos = int(cells[4]) if task_type == "binary_classification" else None
        status, _ = _size_status(n, n_pos, slices)
        rows_out.append(_slice_row(sd.name, cells[:4], status, confidence))
    ranked = sorted((r for r in rows_out if r["slice"] != "overall" and r["status"] == "ok"
                     and (r["net_regression_rate"] or 0) > 0),
                    key=lambda r: (-r["net_regression_rate"], -(r["net_regression_ci"] or [0])[0], r["slice"]))
    top = [item[2] for item in sorted(heap, key=lambda t: (-t[0], -t[1]))]
    for rank, r in enumerate(top, 1):
        r["rank"] = rank
    return {"slices": rows_out, "most_regressed": ranked[:max_slices], "rows": top, "n_rows": merged.n_rows}


def _py_value(v):
    if isinstance(v, np.generic):
        return v.item()
    return None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v


def _py(v, task_type, classes):
    if task_type == "multiclass_classification":
        return _py_value(classes[int(v)])
    return float(v)


def _summary(res: dict, baseline: str, candidate: str) -> str:
    overall = next((r for r in res["slices"] if r["slice"] == "overall"), None)
    if not overall or not overall["n"]:
        return "No evaluation rows."
    n = overall["n"]
    ci = overall["net_regression_ci"]
    text = (f"Of {n:,} rows, {overall['right_to_wrong']:,} ({overall['right_to_wrong_rate']:.2%}) went from right "
            f"({baseline}) to wrong ({candidate}) and {overall['wrong_to_right']:,} "
            f"({overall['wrong_to_right_rate']:.2%}) from wrong to right: net regression rate "
            f"{overall['net_regression_rate']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "") + ".")
    worst = res["most_regressed"]
    if worst:
        w = worst[0]
        wci = w["net_regression_ci"]
        text += (f" The candidate regresses most on {w['slice']}: net {w['net_regression_rate']:+.4f}"
                 + (f" [{wci[0]:+.4f}, {wci[1]:+.4f}]" if wci else "")
                 + f" ({w['right_to_wrong']:,} right -> wrong vs {w['wrong_to_right']:,} wrong -> right of "
                   f"{w['n']:,}).")
    else:
        text += " No sized slice regresses on net."
    return text


# -- the step --------------------------------------------------------------------------------------------------------
def _features(lake, snap, spec, ids: list) -> pd.DataFrame:
    """The snapshot's feature values of the given ids (one streamed pass over the id and feature columns)."""
    id_col = spec.columns.id
    feats = [c for c in spec.columns.features if c != id_col]
    if not ids or not feats:
        return pd.DataFrame({id_col: ids})
    wanted = pa.array(ids)
    parts = []
    for batch in eval_rows(lake, snap, spec, [id_col] + feats):
        mask = pc.is_in(batch.column(id_col), value_set=wanted.cast(batch.schema.field(id_col).type))
        if pc.any(mask).as_py():
            parts.append(batch.filter(mask).to_pandas())
    if not parts:
        return pd.DataFrame({id_col: ids})
    out = pd.concat(parts, ignore_index=True).drop_duplicates(subset=[id_col])
    return out.rename(columns={c: f"feature:{c}" for c in feats})


def write_error_analysis(lake, spec, snap, folder: str, frames: Iterable[pd.DataFrame], *, baseline_ref: str,
                         candidate_ref: str, top_rows: int = TOP_ROWS) -> dict | None:
    """Analyse a paired evaluation's rows (``frames``: the engine's joined rows, ``pipeline._engine_batches``) and
    write ``<folder>/error_analysis.json`` and ``<folder>/regressed_rows.parquet``; returns the JSON written.
    Regression tasks are not analysed (None, nothing written)."""
    if spec.task_type not in ("binary_classification", "multiclass_classification"):
        return None
    cols = score_columns(spec)

    def role_cols(role):
        c = [f"{role}__{x}" for x in cols]
        return c if spec.task_type == "multiclass_classification" else c[0]

    slices = SliceConfig(**spec.slices.engine_kwargs(SliceConfig))
    confidence = spec.evaluation.confidence
    res = analyse(frames, task_type=spec.task_type, id_column=spec.columns.id, label=spec.columns.label,
                  baseline_columns=role_cols("baseline"), candidate_columns=role_cols("candidate"), slices=slices,
                  threshold=spec.model.threshold, classes=spec.model.classes, confidence=confidence,
                  top_rows=top_rows)
    id_col = spec.columns.id
    rows = pd.DataFrame(res["rows"])
    if rows.empty:
        rows = pd.DataFrame({"rank": pd.Series(dtype="int64"), id_col: pd.Series(dtype="object")})
    else:
        rows = rows[["rank"] + [c for c in rows.columns if c != "rank"]]
        feats = _features(lake, snap, spec, rows[id_col].tolist())
        rows = rows.merge(feats, on=id_col, how="left", sort=False)
    rows_rel = f"{folder}/{ROWS_FILE}"
    lake.write_parquet(rows_rel, rows)
    correct = ("(score >= threshold) == label, threshold " + str(spec.model.threshold)
               if spec.task_type == "binary_classification" else "argmax(probabilities) == label")
    out = {
        "schema_version": 1,
        "summary": _summary(res, baseline_ref, candidate_ref),
        "baseline": baseline_ref, "candidate": candidate_ref, "confidence": confidence, "n_rows": res["n_rows"],
        "definition": {
            "right": correct,
            "cells": "right_to_wrong: baseline right, candidate wrong; wrong_to_right: the reverse",
            "net_regression_rate": "(right_to_wrong - wrong_to_right) / n = baseline accuracy - candidate "
                                   "accuracy = -accuracy_delta",
            "rate_interval": "Wilson score, per slice, not adjusted for multiplicity",
            "net_interval": "Newcombe square-and-add for paired proportions (1998, method 10)",
            "most_regressed": "ok-sized slices with a positive net regression rate, highest first",
            "top_rows": f"baseline right, candidate wrong, by the candidate's probability on wrong answers "
                        f"(1 - p(true class)), highest first; at most {top_rows}",
        },
        "most_regressed": res["most_regressed"],
        "slices": res["slices"],
        "top_rows": res["rows"],
        "rows_uri": rows_rel,
        "rows_file": ROWS_FILE,
    }
    out = to_jsonsafe(out)
    lake.write_json(f"{folder}/{RESULT_FILE}", out)
    return out
