"""The demo's models: the champion and the flawed candidate pipelines, their holdout scores, and deterministic,
allowlisted skops bytes."""
from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..artifact_check import ArtifactCheck
from ..spec import load_spec
from .data import (BASELINE_CATEGORICAL, BASELINE_NUMERIC, CANDIDATE_CATEGORICAL, CANDIDATE_NUMERIC,
                   HOLDOUT_FRACTION, packaged_spec_path)


# ----------------------------------------------------------------------------------------------------- models
def _baseline_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer([
        ("categorical", OneHotEncoder(handle_unknown="ignore"), BASELINE_CATEGORICAL),
        ("numeric", StandardScaler(), BASELINE_NUMERIC),
    ])
    return Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=2000))])


def _candidate_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    # Unknown categories (a new airline or airport) become NaN, which the trees route as "missing".
    prep = ColumnTransformer([
        ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                       encoded_missing_value=np.nan), CANDIDATE_CATEGORICAL),
        ("numeric", "passthrough", CANDIDATE_NUMERIC),
    ])
    model = HistGradientBoostingClassifier(
        categorical_features=[True] * len(CANDIDATE_CATEGORICAL) + [False] * len(CANDIDATE_NUMERIC),
        max_iter=250, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=50, l2_regularization=1.0,
        early_stopping=False, random_state=0)
    return Pipeline([("prep", prep), ("model", model)])


def _fit_with_holdout(pipeline, data: pd.DataFrame, label: str, seed: int, score) -> tuple[Any, dict]:
    """Fit on a seeded 80 % of the rows; score the other 20 % (the manifest's metrics of record)."""
    from threadpoolctl import threadpool_limits

    holdout = np.random.default_rng(seed).random(len(data)) < HOLDOUT_FRACTION
    fit, hold = data[~holdout], data[holdout]
    with threadpool_limits(1):
        pipeline.fit(fit, fit[label])
        metrics = score(pipeline, hold)
    return pipeline, {"fit_rows": int(len(fit)), "holdout_rows": int(len(hold)), "metrics": metrics,
                      "fit_ids": fit["flight_id"].to_numpy()}


def _classification_holdout(model, hold: pd.DataFrame) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    p = model.predict_proba(hold)[:, 1]
    y = hold["delayed"].to_numpy()
    return {"holdout_roc_auc": round(float(roc_auc_score(y, p)), 6),
            "holdout_log_loss": round(float(log_loss(y, p, labels=[0, 1])), 6),
            "holdout_positive_rate": round(float(y.mean()), 6)}


def _regression_holdout(model, hold: pd.DataFrame) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error

    pred = model.predict(hold)
    return {"holdout_mae": round(float(mean_absolute_error(hold["arr_delay"], pred)), 6)}


_NPY_NAME = re.compile(r"^(\d+)\.npy$")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def canonical_skops(data: bytes) -> bytes:
    """Make a skops file's bytes depend only on the model, so identical models get identical sha256.

    skops 0.16 names array members and memo ids after ``id(obj)`` (memory addresses) and stamps zip members with
    the wall clock, so two dumps of the same model differ byte for byte. Here ids are renumbered in order of first
    appearance in schema.json (consistently for ``__id__`` and ``<id>.npy``) and every member gets a fixed date.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as zin:
        schema = json.loads(zin.read("schema.json"))
        mapping: dict[int, int] = {}

        def renumber(old: int) -> int:
            return mapping.setdefault(old, len(mapping) + 1)

        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "__id__" and isinstance(value, int):
                        node[key] = renumber(value)
                    elif key == "file" and isinstance(value, str) and _NPY_NAME.match(value):
                        node[key] = f"{renumber(int(_NPY_NAME.match(value).group(1)))}.npy"
                    else:
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(schema)
        members = {}
        for info in zin.infolist():
            m = _NPY_NAME.match(info.filename)
            if m:
                if int(m.group(1)) not in mapping:
                    raise ValueError(f"skops member {info.filename} is not referenced by schema.json")
                members[f"{mapping[int(m.group(1))]}.npy"] = zin.read(info.filename)
            elif info.filename != "schema.json":
                members[info.filename] = zin.read(info.filename)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zout:
        for name in sorted(members):
            zout.writestr(zipfile.ZipInfo(name, date_time=_ZIP_EPOCH), members[name])
        zout.writestr(zipfile.ZipInfo("schema.json", date_time=_ZIP_EPOCH), json.dumps(schema, indent=2))
    return out.getvalue()


def skops_bytes(model, check_rows: pd.DataFrame | None = None, trusted: Sequence[str] = ()) -> bytes:
    """Serialise with skops (canonical bytes) and refuse a file that needs types beyond skops' defaults + ``trusted``.

    ``trusted`` is the operator's allowlist (the task spec's model.trusted_types), never the file's own list.
    With ``check_rows``, the canonicalised file is loaded back and must predict exactly what ``model`` predicts.
    """
    import skops.io as sio

    data = canonical_skops(sio.dumps(model))
    untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in trusted]
    if untrusted:
        raise ValueError(f"skops file would need untrusted types {untrusted}; it must load with skops' default "
                         f"trust plus the spec's model.trusted_types {list(trusted)} only")
    if check_rows is not None:
        loaded = sio.loads(data, trusted=list(trusted) or None)
        method = "predict_proba" if hasattr(model, "predict_proba") else "predict"
        if not np.array_equal(getattr(loaded, method)(check_rows), getattr(model, method)(check_rows)):
            raise ValueError("canonicalised skops file does not reproduce the model's predictions")
    return data


def _spec_trusted_types(task: str) -> list[str]:
    """The allowlist the operator wrote in the task's packaged spec (model.trusted_types)."""
    return list(load_spec(packaged_spec_path(task)).model.trusted_types)


def _check(task: str, rows: pd.DataFrame):
    """register's load-and-score check against the packaged spec of ``task`` on a few training rows."""
    return ArtifactCheck(spec=load_spec(packaged_spec_path(task)), rows=rows.head(20))
