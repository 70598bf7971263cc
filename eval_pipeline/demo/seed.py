"""Seeding a demo lake: land the files, train and register the models of each demo task."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..lake import Lake
from ..registry import Registry
from .data import (BASELINE_CATEGORICAL, BASELINE_NUMERIC, BUG_CARRIER, BUG_FROM_MONTH, CANDIDATE_CATEGORICAL,
                   CANDIDATE_NUMERIC, HOLDOUT_FRACTION, SOURCE, TASKS, TRAIN_MONTHS, _landed_files, _train_mask,
                   flights_frame, land_monthly_files, packaged_spec_path)
from .models import (_baseline_pipeline, _candidate_pipeline, _check, _classification_holdout, _fit_with_holdout,
                     _regression_holdout, _spec_trusted_types, skops_bytes)
from .suites import write_suites



def _write_extract(lake: Lake, model_name: str, version: str, data: pd.DataFrame, label: str,
                   fit_ids: np.ndarray) -> dict:
    """Keep exactly what a version was fitted on (ids + the label as the extract had it): a training snapshot."""
    fitted = data[data["flight_id"].isin(fit_ids)]
    table = pa.table({"flight_id": pa.array(fitted["flight_id"].to_numpy(), pa.int64()),
                      label: pa.array(fitted[label].to_numpy())})
    rel = f"training/{model_name}/{version}/extract.parquet"
    lake.write_parquet(rel, table)
    return {"path": rel, "sha256": hashlib.sha256(lake.read_bytes(rel)).hexdigest(), "rows": table.num_rows}


def _training_data(lake: Lake, source: str, train_months: Sequence[int], data: pd.DataFrame, fitted: dict,
                   extract: dict, features: list[str], label: str, **extra) -> dict:
    ts = data["time_hour"]
    return {
        "source": source, "months": [int(m) for m in train_months],
        "window_utc": [ts.min().isoformat(), ts.max().isoformat()] if len(ts) else None,
        "rows": int(len(data)), "fit_rows": fitted["fit_rows"], "holdout_rows": fitted["holdout_rows"],
        "holdout": f"seeded random {HOLDOUT_FRACTION:.0%} of the training rows",
        "features": features, "label": label, "landed_files": _landed_files(lake, source, train_months),
        "extract": extract, **extra,
    }


def train_and_register(lake: Lake, frame: pd.DataFrame, *, model_name: str = "flights_delay",
                       train_months: Sequence[int] = TRAIN_MONTHS, source: str = SOURCE, seed: int = 0) -> dict:
    """Train and register the baseline (v1, skops, champion) and the candidate (v2, skops) for flights_delay.

    Versions already registered are skipped (idempotent); the champion is set only if there is none yet.
    Returns ``{"name", "versions": {version: {"sha256", "flavor", "skipped", "seconds"}}, "champion"}``.
    """
    registry = Registry(lake)
    train = frame[_train_mask(frame, train_months)].reset_index(drop=True)
    if train.empty:
        raise ValueError(f"no training rows for months {list(train_months)} of 2013 in the frame")
    out: dict[str, Any] = {"name": model_name, "versions": {}}
    existing = set(registry.versions(model_name))

    # v1 -- baseline: one-hot logistic regression on carrier, origin, hour + distance. Safe to load (skops).
    if "1" in existing:
        out["versions"]["1"] = {"sha256": registry.manifest(model_name, "1").sha256, "skipped": True}
    else:
        started = dt.datetime.now(dt.timezone.utc)
        model, fitted = _fit_with_holdout(_baseline_pipeline(), train, "delayed", seed, _classification_holdout)
        extract = _write_extract(lake, model_name, "1", train, "delayed", fitted["fit_ids"])
        features = BASELINE_CATEGORICAL + BASELINE_NUMERIC
        m = registry.register(
            model_name, "1", skops_bytes(model, check_rows=train.head(500)), flavor="sklearn-skops",
            artifact_name="model.skops", check=_check("flights_delay", train),
            training_data=_training_data(lake, source, train_months, train, fitted, extract, features, "delayed"),
            metrics_of_record=fitted["metrics"],
            tags={"role": "baseline", "algorithm": "LogisticRegression", "features": ",".join(features),
                  "train_months": f"2013-{min(train_months):02d}..2013-{max(train_months):02d}"},
            description="Baseline: one-hot logistic regression on carrier, origin and scheduled hour, plus distance. "
                        "Trained on Jan-Jun 2013 (UTC).")
        out["versions"]["1"] = {"sha256": m.sha256, "flavor": m.flavor, "skipped": False,
                                "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 2)}

    # v2 -- candidate: gradient boosting with categorical airline/airport/destination. Its extract has the 9E bug.
    if "2" in existing:
        out["versions"]["2"] = {"sha256": registry.manifest(model_name, "2").sha256, "skipped": True}
    else:
        started = dt.datetime.now(dt.timezone.utc)
        buggy = train.copy()
        hit = (buggy["carrier"] == BUG_CARRIER) & (buggy["month"] >= BUG_FROM_MONTH)
        # The partner feed's delay is scheduled - actual: "more than 15 minutes late" became "more than 15 early".
        buggy.loc[hit, "delayed"] = (-buggy.loc[hit, "arr_delay"] > 15).astype("int64")
        model, fitted = _fit_with_holdout(_candidate_pipeline(), buggy, "delayed", seed, _classification_holdout)
        extract = _write_extract(lake, model_name, "2", buggy, "delayed", fitted["fit_ids"])
        features = CANDIDATE_CATEGORICAL + CANDIDATE_NUMERIC
        known_issue = (f"{int(hit.sum())} training rows of carrier {BUG_CARRIER} from 2013-{BUG_FROM_MONTH:02d} on "
                       f"were labelled from a partner feed whose delay sign is reversed (scheduled - actual), "
                       f"so 'delayed' meant 'arrived > 15 min early' for them")
        # Stored as skops (a safe format): its TreePredictor objects load because the spec's model.trusted_types
        # lists them, not because the file says so.
        m = registry.register(
            model_name, "2", skops_bytes(model, check_rows=train.head(500),
                                         trusted=_spec_trusted_types("flights_delay")),
            flavor="sklearn-skops", artifact_name="model.skops", check=_check("flights_delay", train),
            training_data=_training_data(lake, source, train_months, buggy, fitted, extract, features, "delayed",
                                         known_issue=known_issue, rows_affected=int(hit.sum())),
            metrics_of_record=fitted["metrics"],
            tags={"role": "candidate", "algorithm": "HistGradientBoostingClassifier", "features": ",".join(features),
                  "train_months": f"2013-{min(train_months):02d}..2013-{max(train_months):02d}",
                  "data_bug": f"carrier {BUG_CARRIER} labels sign-flipped from 2013-{BUG_FROM_MONTH:02d}"},
            description="Candidate: gradient boosting with native categorical carrier/origin/dest, plus distance, "
                        "hour, weekday and scheduled time. Better overall than the baseline, but its training "
                        f"extract has a data bug: {known_issue}. Its holdout (same extract) does not show it.")
        out["versions"]["2"] = {"sha256": m.sha256, "flavor": m.flavor, "skipped": False,
                                "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 2)}

    if registry.champion(model_name) is None:
        registry.set_champion(model_name, "1", reason="initial champion")
    out["champion"] = registry.champion(model_name)
    return out


def train_and_register_regression(lake: Lake, frame: pd.DataFrame, *, model_name: str = "flights_arr_delay",
                                  train_months: Sequence[int] = TRAIN_MONTHS, source: str = SOURCE,
                                  seed: int = 0) -> dict:
    """Baseline (v1, one-hot ridge, skops, champion) and candidate (v2, gradient boosting, skops) for arr_delay."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    registry = Registry(lake)
    train = frame[_train_mask(frame, train_months)].reset_index(drop=True)
    existing = set(registry.versions(model_name))
    out: dict[str, Any] = {"name": model_name, "versions": {}}
    builds = {
        "1": (lambda: Pipeline([("prep", ColumnTransformer([
                  ("categorical", OneHotEncoder(handle_unknown="ignore"), BASELINE_CATEGORICAL),
                  ("numeric", StandardScaler(), BASELINE_NUMERIC)])), ("model", Ridge(alpha=1.0))]),
              "sklearn-skops", "model.skops", BASELINE_CATEGORICAL + BASELINE_NUMERIC, "Ridge"),
        "2": (lambda: Pipeline([("prep", ColumnTransformer([
                  ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                                 encoded_missing_value=np.nan), CANDIDATE_CATEGORICAL),
                  ("numeric", "passthrough", CANDIDATE_NUMERIC)])),
                  ("model", HistGradientBoostingRegressor(
                      categorical_features=[True] * len(CANDIDATE_CATEGORICAL) + [False] * len(CANDIDATE_NUMERIC),
                      loss="absolute_error", max_iter=200, early_stopping=False, random_state=0))]),
              "sklearn-skops", "model.skops", CANDIDATE_CATEGORICAL + CANDIDATE_NUMERIC,
              "HistGradientBoostingRegressor"),
    }
    trusted = _spec_trusted_types("flights_arr_delay")
    for version, (build, flavor, artifact, features, algorithm) in builds.items():
        if version in existing:
            out["versions"][version] = {"sha256": registry.manifest(model_name, version).sha256, "skipped": True}
            continue
        model, fitted = _fit_with_holdout(build(), train, "arr_delay", seed, _regression_holdout)
        extract = _write_extract(lake, model_name, version, train, "arr_delay", fitted["fit_ids"])
        m = registry.register(
            model_name, version, skops_bytes(model, check_rows=train.head(500), trusted=trusted),
            flavor=flavor, artifact_name=artifact, check=_check("flights_arr_delay", train),
            training_data=_training_data(lake, source, train_months, train, fitted, extract, features, "arr_delay"),
            metrics_of_record=fitted["metrics"],
            tags={"role": "baseline" if version == "1" else "candidate", "algorithm": algorithm},
            description=f"{algorithm} predicting arr_delay (minutes) from pre-departure features, Jan-Jun 2013.")
        out["versions"][version] = {"sha256": m.sha256, "flavor": m.flavor, "skipped": False}
    if registry.champion(model_name) is None:
        registry.set_champion(model_name, "1", reason="initial champion")
    out["champion"] = registry.champion(model_name)
    return out


def register_predictions_model(lake: Lake, frame: pd.DataFrame, name: str, version: str, scores,
                               *, score_column: str = "score", tags: dict | None = None, description: str = "",
                               training_data: Any = None):
    """Register scores computed elsewhere (flavor ``predictions``): a parquet of ``flight_id`` + ``score_column``.

    ``scores`` is aligned with ``frame``'s rows (array-like of the same length). Returns the ModelManifest.
    """
    values = np.asarray(scores, dtype="float64").reshape(-1)
    if len(values) != len(frame):
        raise ValueError(f"scores has {len(values)} values but the frame has {len(frame)} rows")
    table = pa.table({"flight_id": pa.array(frame["flight_id"].to_numpy(), pa.int64()),
                      score_column: pa.array(values, pa.float64())})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return Registry(lake).register(
        name, version, buf.getvalue(), flavor="predictions", artifact_name="predictions.parquet",
        id_column="flight_id", score_columns=[score_column], tags=tags or {}, description=description,
        training_data=training_data)



# -------------------------------------------------------------------------------------------------------- seed
def seed_demo(lake: Lake | str, *, sample_frac: float | None = None, months: Iterable[int] | None = None,
              tasks: Sequence[str] = ("flights_delay",), seed: int = 0) -> dict:
    """Land the monthly files, copy the specs into the lake and register the demo models. Safe to re-run.

    ``months`` limits which months are landed (training always uses Jan-Jun from the frame, landed or not).
    ``tasks`` picks which tasks get models: ``flights_delay`` (default) and/or ``flights_arr_delay``.
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown demo task(s) {unknown}; expected some of {list(TASKS)}")
    frame = flights_frame(sample_frac=sample_frac, seed=seed)
    files = land_monthly_files(lake, frame, months=months)
    specs = {}
    for task in tasks:
        rel = f"specs/{task}.yaml"
        text = packaged_spec_path(task).read_text()
        if not lake.exists(rel) or lake.read_text(rel) != text:
            lake.write_text(rel, text)
        specs[task] = rel
    models = {}
    for task in tasks:
        trainer = train_and_register if task == "flights_delay" else train_and_register_regression
        models[task] = trainer(lake, frame, model_name=task, seed=seed)
    # flights_delay's evaluation suites (golden sample, edge cases): after its models, as the edge cases are picked
    # by the candidate's own scores
    suites = write_suites(lake, frame, seed=seed) if "flights_delay" in tasks else {}
    return {"lake": lake.root, "rows": int(len(frame)), "files": files, "specs": specs, "models": models,
            "suites": suites}
