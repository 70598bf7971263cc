"""A small synthetic binary task used by unit tests of snapshots and scoring (real sklearn models, real files)."""

import io

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, StandardScaler

from eval_pipeline.spec import parse_spec

TOY_SPEC = {
    "task": "toy",
    "task_type": "binary_classification",
    "data": {"source": "incoming/toy"},
    "columns": {"id": "id", "label": "y", "timestamp": "ts", "features": ["a", "b"], "categorical": ["b"]},
    "model": {"name": "toy_model", "batch_size": 700},
    "slices": {"columns": ["b"], "min_size": 50},
    "metrics": ["roc_auc", "accuracy"],
    "gates": [{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.05}],
    "evaluation": {"bootstrap_replicates": 50},
    "drift": {"reference": {"end": "2024-01-15"}, "current": {"last_days": 10}},
}


def toy_spec(**overrides):
    data = {**TOY_SPEC, **overrides}
    return parse_spec(data, "toy spec")


def toy_frame(n=2000, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rng.choice(["x", "y", "z"], size=n)
    logit = 1.5 * a + (b == "x") * 0.8
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 30, unit="min")
    return pd.DataFrame({"id": np.arange(n, dtype="int64"), "ts": ts, "a": a, "b": b, "y": y})


def land(lake, frame, parts=2, source="incoming/toy"):
    for i, idx in enumerate(np.array_split(np.arange(len(frame)), parts)):
        lake.write_parquet(f"{source}/part-{i}.parquet", frame.iloc[idx].reset_index(drop=True))


def fit_model(frame, c=1.0):
    pre = ColumnTransformer([("num", StandardScaler(), ["a"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["b"])])
    return make_pipeline(pre, LogisticRegression(C=c)).fit(frame[["a", "b"]], frame["y"])


def fit_interaction_model(frame):
    """A logistic regression with a x b interactions: it can learn a per-slice slope, so flipped labels inside one
    value of b reverse the ranking there (an additive model could not: inside a slice it ranks by `a` whatever the
    labels)."""
    pre = ColumnTransformer([("num", StandardScaler(), ["a"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["b"])],
                            sparse_threshold=0)
    return make_pipeline(pre, PolynomialFeatures(2, interaction_only=True, include_bias=False),
                         LogisticRegression()).fit(frame[["a", "b"]], frame["y"])


def run_steps(lake, spec, version: str):
    """Every step of one evaluation in-process (no Dagster): refresh, validate, drift, score, metrics, report.
    Returns (ctx, snap, inputs, metrics, report output)."""
    from eval_pipeline import pipeline

    ctx = pipeline.TaskContext(lake, spec)
    snap = pipeline.refresh(ctx)
    assert pipeline.validate(ctx, snap).success
    pipeline.drift(ctx, snap)
    inputs = pipeline.resolve_inputs(ctx, version, snap.snapshot_id)
    pipeline.score(ctx, snap, inputs)
    metrics = pipeline.compute_metrics(ctx, snap, inputs)
    return ctx, snap, inputs, metrics, pipeline.write_report(ctx, snap, inputs)


def joblib_bytes(model) -> bytes:
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


def register_joblib(registry, version, model, name="toy_model"):
    return registry.register(name, version, joblib_bytes(model), flavor="sklearn-joblib", artifact_name="model.joblib")


def manifest_content(manifest: dict) -> dict:
    """A snapshot manifest without the parts' write stamps (a rebuilt part is the same bytes written at another
    time, so its mtime differs)."""
    return {**manifest, "parts": [{k: v for k, v in p.items() if k != "written"} for p in manifest["parts"]]}


def cli_evaluate(spec_path: str, lake_root: str, candidate: str, root, capsys) -> tuple[int, dict | None, object,
                                                                                        float]:
    """``eval-pipeline evaluate --output <root>/result-<ref>.json --dagster-home <root>/dagster_home`` in this
    process (the instance persists across calls, as a team's would); returns (exit code, the result JSON or None,
    the captured stdout/stderr, seconds). The CLI opens the instance from its folder and leaves the process
    environment alone, so nothing needs restoring afterwards."""
    import json
    import time

    from eval_pipeline.cli import main

    out = root / f"result-{candidate.replace('@', '-')}.json"
    home = root / "dagster_home"
    home.mkdir(exist_ok=True)
    capsys.readouterr()
    started = time.perf_counter()
    code = main(["evaluate", "--spec", spec_path, "--lake", lake_root, "--candidate", candidate, "--output", str(out),
                 "--dagster-home", str(home)])
    seconds = time.perf_counter() - started
    return code, (json.loads(out.read_text()) if out.exists() else None), capsys.readouterr(), seconds
