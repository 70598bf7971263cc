"""Prediction drift (issue 10, item 5): the drift of each of the run's models' score distribution, reference window vs
current window of the run's snapshot (no Dagster here).

Entry point: :func:`write_prediction_drift` (what ``pipeline.write_report`` runs before it writes the report) ->
``<evidence folder>/prediction_drift.json``, which :mod:`eval_pipeline.report_html` shows in the drift section.

Notes
-----
* Why a step of its own: the snapshot's drift (``pipeline.drift``) runs before any model is scored, and the stored
  predictions cover only the evaluation window. Here the run's pinned models (candidate, and the baseline when there
  is one) score the spec's drift windows (``drift.reference``, ``drift.current``) themselves, with the scoring
  module's own loading and batch prediction (``scoring.load_model``, ``_predict_batch``, ``shape_output``).
* Rows: each window is streamed with the id and ``columns.features`` into a row sample of at most
  ``drift.max_rows`` rows (:func:`eval_pipeline.drift_summary.sample_window`: the rows with the smallest seeded hash
  of the id, seed ``evaluation.seed``, the same rows as ``drift.json``'s sample; the whole window, in snapshot
  order, when it has no more rows), so memory is bounded whatever the window's size; the JSON's ``sample`` states
  the sizes used, the totals and the method. The scores are numeric and their default methods (normed Wasserstein,
  K-S) need the values, so only the sampled rows are scored by the models.
* Method: each score column is scored by Evidently's default method for one numeric column, with
  :mod:`eval_pipeline.drift_methods` via ``drift.py``'s prediction-drift code, on the same rows as
  ``prediction_drift`` in ``drift.json`` would have (K-S and normed Wasserstein, the methods of a continuous score,
  are computed without importing Evidently): reference <= 1000 rows: K-S (p-value); more: normed Wasserstein distance; a score
  column with at most 5 distinct values gets chi-square / Z / Jensen-Shannon, as Evidently would.
* Score columns: binary ``score`` (P(positive)), regression ``prediction``; multiclass: **one row per class
  probability column** (``proba_<class>``), each compared on its own (a shift between two classes shows in both
  classes' columns, which a top-class probability would hide).
* A ``predictions``-flavor model (scores computed elsewhere, keyed by id) is used only when its file has a score for
  every sampled row of both windows; otherwise it is skipped with a note (``skipped``), as is a model that cannot
  score the window's rows (the report still gets written: prediction drift is evidence, not a gate).
* Skipped with a logged note and no file: drift disabled in the spec, or an empty drift window.
* Deterministic: same snapshot, models and spec, same bytes.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from . import scoring
from .drift import _jsonable, _score_extras
from .drift_summary import SAMPLE_METHOD, sample_window
from .packages import package_versions
from .snapshot import DataError

log = logging.getLogger(__name__)

__all__ = ["RESULT_FILE", "compute_prediction_drift", "write_prediction_drift"]

RESULT_FILE = "prediction_drift.json"


class _Skip(Exception):
    """A model whose scores cannot be compared (the message is the note)."""


def _window_scores(loaded: scoring.LoadedModel, frame: pd.DataFrame, spec, cols: list[str], side: str) -> np.ndarray:
    """The model's scores for every row of ``frame`` (1-D, or 2-D with one column per class)."""
    m = loaded.manifest
    id_col = spec.columns.id
    if m.flavor == "predictions":
        lookup = scoring._prediction_lookup(loaded, spec, cols)
        covered = int((lookup.index.get_indexer(frame[id_col]) >= 0).sum())
        if covered < len(frame):
            raise _Skip(f"its predictions file has scores for {covered:,} of the {len(frame):,} rows of the drift "
                        f"{side} window (a predictions-flavor model is compared only when its file covers every row)")
        return scoring._lookup_scores(lookup, frame[id_col], m.ref, id_col)
    features = list(spec.columns.features)
    if not features:
        raise _Skip(f"{m.flavor} model needs columns.features, and the spec lists none")
    step = spec.model.batch_size
    parts = [scoring._predict_batch(loaded, frame.iloc[i:i + step][features], spec)
             for i in range(0, len(frame), step)]
    return np.concatenate(parts, axis=0)


def _sampled_predictions(registry, manifest, spec, reference: pd.DataFrame, current: pd.DataFrame):
    """A predictions-flavor model's scores for the sampled rows of both windows, in memory bounded by the samples
    (scoring.predictions_for_ids streams the file once), not by the predictions file (10^8 rows would not fit)."""
    id_col = spec.columns.id
    ids = pd.concat([reference[id_col], current[id_col]], ignore_index=True)
    values, found = scoring.predictions_for_ids(registry, manifest, spec, ids)
    n = len(reference)
    for side, ok in (("reference", found[:n]), ("current", found[n:])):
        if not ok.all():
            raise _Skip(f"its predictions file has scores for {int(ok.sum()):,} of the {len(ok):,} rows of the drift "
                        f"{side} window (a predictions-flavor model is compared only when its file covers every row)")
    return values[:n], values[n:]


def compute_prediction_drift(reference: pd.DataFrame, current: pd.DataFrame, models: dict, spec, *,
                             trusted_types: list[str] | None = None, registry=None, n_jobs: int | None = None) -> dict:
    """Score both (already sampled) windows with each model and compare its score columns.

    ``models``: role -> ``ModelManifest`` (loaded through ``registry``) or an already loaded
    ``scoring.LoadedModel``. Returns ``{"models": [...], "skipped": [...]}``: ``models`` items are drift.py's
    prediction-drift rows (``method``, ``method_id``, ``score``, ``score_type``, ``threshold``, ``drifted``, row
    counts) with ``role``, ``model`` (ref), ``flavor`` and ``column`` (the score column).
    """
    cols = scoring.score_columns(spec)
    ref_scores: dict[str, np.ndarray] = {}
    cur_scores: dict[str, np.ndarray] = {}
    which: dict[str, tuple[str, object, str]] = {}  # frame column -> (role, manifest, score column)
    skipped = []
    for role, model in models.items():
        manifest = getattr(model, "manifest", model)
        try:
            if not isinstance(model, scoring.LoadedModel) and manifest.flavor == "predictions":
                r, c = _sampled_predictions(registry, manifest, spec, reference, current)
            else:
                loaded = model if isinstance(model, scoring.LoadedModel) else scoring.load_model(
                    registry, manifest, scoring.trusted_types_for(spec, trusted_types))
                r = _window_scores(loaded, reference, spec, cols, "reference")
                c = _window_scores(loaded, current, spec, cols, "current")
        except (_Skip, scoring.ScoringError) as exc:
            log.warning("prediction drift: %s %s skipped: %s", role, manifest.ref, exc)
            skipped.append({"role": role, "model": manifest.ref, "flavor": manifest.flavor, "reason": str(exc)})
            continue
        r, c = r.reshape(len(reference), -1), c.reshape(len(current), -1)
        for j, col in enumerate(cols):
            key = f"{role}:{col}"
            ref_scores[key], cur_scores[key] = r[:, j], c[:, j]
            which[key] = (role, manifest, col)
    rows = []
    if which:
        _, _, scored, _ = _score_extras(pd.DataFrame(ref_scores), pd.DataFrame(cur_scores), {k: k for k in which},
                                        None, None, n_jobs)
        for row in scored:
            role, manifest, col = which[row["model"]]
            rows.append({"role": role, "model": manifest.ref, "flavor": manifest.flavor,
                         **{k: v for k, v in row.items() if k not in ("model", "column")}, "column": col})
    return {"models": rows, "skipped": skipped}


def write_prediction_drift(lake, registry, spec, snap, folder: str, roles: dict,
                           trusted_types: list[str] | None = None) -> dict | None:
    """Prediction drift of the run's models (``roles``: role -> pinned ``ModelManifest``) on the snapshot's drift
    windows; writes and returns ``<folder>/prediction_drift.json``, or None (logged, no file) when drift is disabled
    in the spec or a drift window is empty."""
    rel = f"{folder}/{RESULT_FILE}"
    where = f"task '{spec.task}', snapshot {snap.snapshot_id}"
    if not spec.drift.enabled:
        log.info("prediction drift skipped (%s): drift is disabled in the spec", where)
        lake.delete(rel)
        return None
    read = list(dict.fromkeys([spec.columns.id] + list(spec.columns.features)))
    seed, max_rows = spec.evaluation.seed, spec.drift.max_rows
    try:
        ref_s, n_ref = sample_window(lake, snap, spec, spec.drift.reference, read, max_rows=max_rows, seed=seed)
        cur_s, n_cur = sample_window(lake, snap, spec, spec.drift.current, read, max_rows=max_rows, seed=seed)
    except DataError as exc:
        log.warning("prediction drift skipped (%s): %s", where, exc)
        lake.delete(rel)
        return None
    if ref_s.empty or cur_s.empty:
        log.info("prediction drift skipped (%s): the drift %s window has no rows", where,
                 "reference" if ref_s.empty else "current")
        lake.delete(rel)
        return None
    out = compute_prediction_drift(ref_s, cur_s, roles, spec, trusted_types=trusted_types, registry=registry)
    result = _jsonable({
        "schema_version": 1,
        "task": spec.task,
        "task_type": spec.task_type,
        "snapshot_id": snap.snapshot_id,
        "windows": {"reference": spec.drift.reference.model_dump(mode="json"),
                    "current": spec.drift.current.model_dump(mode="json")},
        "sample": {"max_rows": max_rows, "seed": seed, "reference_rows": len(ref_s), "current_rows": len(cur_s),
                   "reference_rows_total": n_ref, "current_rows_total": n_cur,
                   "sampled": len(ref_s) < n_ref or len(cur_s) < n_cur, "method": SAMPLE_METHOD},
        "score_columns": scoring.score_columns(spec),
        "multiclass": "one row per class probability column" if spec.task_type == "multiclass_classification"
        else None,
        "models": out["models"],
        "skipped": out["skipped"],
        # The version from the package metadata: importing Evidently costs seconds, and a continuous score's
        # default methods (K-S, normed Wasserstein) are computed without it (drift_methods._NATIVE).
        "engine": {"evidently": package_versions(("evidently",))["evidently"],
                   "methods": "Evidently's default method per score column, as drift.json's prediction drift "
                              "(K-S and normed Wasserstein with Evidently's own scipy calls; the others with "
                              "evidently.legacy.calculations.stattests)"},
    })
    lake.write_json(rel, result)
    drifted = [f"{m['role']} {m['column']}" for m in result["models"] if m["drifted"]]
    log.info("prediction drift (%s): %d score column(s) compared, drifted: %s", where, len(result["models"]),
             ", ".join(drifted) or "none")
    return result
