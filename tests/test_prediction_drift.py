"""Prediction drift (issue 10, item 5): the run's models score the snapshot's drift windows, their score distributions
are compared reference vs current with Evidently's default method, prediction_drift.json in the evidence folder, a
table in the report's drift section.

Toy task whose current drift window has feature ``a`` shifted by +2: the candidate (it uses ``a``) drifts, the
baseline (it uses only ``b``) does not; each score equals Evidently's own default stattest (``get_stattest``, then the
test itself) on score arrays computed here independently (the sklearn objects, windows cut with pandas).
"""

import io

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from eval_pipeline import pipeline
from eval_pipeline.lake import Lake
from eval_pipeline.drift_summary import SAMPLE_METHOD, row_hash
from eval_pipeline.prediction_drift import RESULT_FILE
from eval_pipeline.registry import Registry
from eval_pipeline.report_html import _prediction_drift_part

from .toy import fit_model, land, run_steps, toy_frame, toy_spec

MODEL = "toy_model"
DRIFT = {"reference": {"end": "2024-02-01"}, "current": {"last_days": 10}}


def _b_only_model(frame):
    pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["b"])])
    return make_pipeline(pre, LogisticRegression()).fit(frame[["a", "b"]], frame["y"])


def _windows(frame):
    """The drift windows cut independently: reference ts < 2024-02-01, current the last 10 days."""
    newest = frame["ts"].max()
    ref = frame[frame["ts"] < pd.Timestamp("2024-02-01", tz="UTC")]
    cur = frame[frame["ts"] >= newest - pd.Timedelta(days=10)]
    return ref, cur


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pdrift")
    lake = Lake(str(root / "lake"))
    frame = toy_frame(4000, seed=5)
    _, cur = _windows(frame)
    frame.loc[cur.index, "a"] += 2.0  # the current window's feature shifts
    land(lake, frame)
    train = frame.iloc[:1500]
    models = {"1": _b_only_model(train), "2": fit_model(train)}
    reg = Registry(lake)
    for v, m in models.items():
        reg.register(MODEL, v, sio.dumps(m), flavor="sklearn-skops", artifact_name="model.skops")
    reg.set_champion(MODEL, "1", reason="test setup")
    spec = toy_spec(drift=DRIFT, model={"name": MODEL})
    ctx, snap, inputs, _, _ = run_steps(lake, spec, "2")
    folder = pipeline.evaluation_dir(ctx, inputs)
    return {"lake": lake, "reg": reg, "frame": frame, "models": models, "ctx": ctx, "snap": snap,
            "inputs": inputs, "folder": folder, "pd": lake.read_json(f"{folder}/{RESULT_FILE}"),
            "html": lake.read_text(f"{folder}/report.html")}


def _evidently(ref: np.ndarray, cur: np.ndarray):
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    r, c = pd.Series(ref), pd.Series(cur)
    test = get_stattest(r, c, ColumnType.Numerical, None)  # Evidently's own default choice
    return test, test(r, c, ColumnType.Numerical, None)


def test_shifted_candidate_drifts_and_scores_equal_evidently(run):
    pd_ = run["pd"]
    ref, cur = _windows(run["frame"])
    assert pd_["sample"] == {"max_rows": 100_000, "seed": 0, "reference_rows": len(ref), "current_rows": len(cur),
                             "reference_rows_total": len(ref), "current_rows_total": len(cur), "sampled": False,
                             "method": SAMPLE_METHOD}
    assert len(ref) > 1000  # Evidently's default for a large numeric reference: normed Wasserstein
    rows = {m["role"]: m for m in pd_["models"]}
    assert set(rows) == {"candidate", "baseline"} and pd_["skipped"] == []
    assert rows["candidate"]["model"] == f"{MODEL}@2" and rows["baseline"]["model"] == f"{MODEL}@1"
    for role, version in (("candidate", "2"), ("baseline", "1")):
        model = run["models"][version]
        r = model.predict_proba(ref[["a", "b"]])[:, 1]
        c = model.predict_proba(cur[["a", "b"]])[:, 1]
        test, res = _evidently(r, c)
        got = rows[role]
        assert got["column"] == "score" and got["method_id"] == test.name and got["method"] == test.display_name
        assert got["score"] == pytest.approx(float(res.drift_score), rel=1e-9, abs=1e-12)
        assert got["drifted"] == bool(res.drifted) and got["threshold"] == pytest.approx(res.actual_threshold)
        assert (got["reference_rows"], got["current_rows"]) == (len(ref), len(cur))
    assert rows["candidate"]["method_id"] == "wasserstein" and rows["candidate"]["drifted"] is True
    assert rows["baseline"]["drifted"] is False  # it only sees b, whose distribution did not move


def test_report_shows_the_table(run):
    html = run["html"]
    assert "<h3>Prediction drift</h3>" in html
    body = html[html.index("<h3>Prediction drift</h3>"):]
    assert "<th>score column</th>" in body and f"<td>{MODEL}@2</td>" in body and "<td>yes</td>" in body
    assert html.index("<h2 id=drift>") < html.index("<h3>Prediction drift</h3>")


def test_sample_is_stated_and_uncovered_predictions_model_is_skipped(run):
    lake, reg, snap, frame = run["lake"], run["reg"], run["snap"], run["frame"]
    # a predictions-flavor candidate whose file covers only the first 2,000 rows (not the current window)
    preds = frame[["id"]].iloc[:2000].assign(score=0.5)
    buf = io.BytesIO()
    preds.to_parquet(buf)
    m3 = reg.register(MODEL, "3", buf.getvalue(), flavor="predictions", artifact_name="preds.parquet")
    base = reg.manifest(MODEL, "1")
    spec = toy_spec(drift={**DRIFT, "max_rows": 300}, model={"name": MODEL})
    ctx = pipeline.TaskContext(lake, spec)
    inputs = pipeline.EvalInputs("3", m3.sha256, snap.snapshot_id, "1", base.sha256)
    out = pipeline.prediction_drift(ctx, snap, inputs)
    ref, cur = _windows(frame)
    assert out["sample"] == {"max_rows": 300, "seed": 0, "reference_rows": 300, "current_rows": 300,
                             "reference_rows_total": len(ref), "current_rows_total": len(cur), "sampled": True,
                             "method": SAMPLE_METHOD}
    assert [m["role"] for m in out["models"]] == ["baseline"] and out["models"][0]["reference_rows"] == 300
    # the sample is the stated one: the 300 rows of each window with the smallest seeded hash of the id, in window
    # order; Evidently's default method on the baseline's scores of exactly those rows gives the same score
    picked = [w.iloc[np.sort(np.lexsort((np.arange(len(w)), row_hash(w["id"].to_numpy(), 0)))[:300])]
              for w in (ref, cur)]
    r, c = (run["models"]["1"].predict_proba(w[["a", "b"]])[:, 1] for w in picked)
    test, res = _evidently(r, c)
    assert out["models"][0]["method_id"] == test.name
    assert out["models"][0]["score"] == pytest.approx(float(res.drift_score), rel=1e-9, abs=1e-12)
    (skip,) = out["skipped"]
    assert skip["role"] == "candidate" and skip["model"] == f"{MODEL}@3" and "covers every row" in skip["reason"]
    assert lake.read_json(f"{pipeline.evaluation_dir(ctx, inputs)}/{RESULT_FILE}") == out
    part = _prediction_drift_part(out)
    assert "seeded sample of at most 300 rows per window" in part and "Not compared" in part

    # drift disabled: nothing computed, no file
    off = pipeline.TaskContext(lake, toy_spec(drift={**DRIFT, "enabled": False}, model={"name": MODEL}))
    assert pipeline.prediction_drift(off, snap, inputs) is None
    assert not lake.exists(f"{pipeline.evaluation_dir(off, inputs)}/{RESULT_FILE}")


def test_a_covering_predictions_model_is_read_for_the_sampled_ids_only_and_equals_the_whole_file_path(run):
    """A predictions-flavor model is looked up for the sampled ids by streaming its file (bounded memory); its
    scores and drift rows equal the whole-file path's (the model loaded into pandas and indexed)."""
    from eval_pipeline import scoring
    from eval_pipeline.prediction_drift import compute_prediction_drift

    lake, reg, frame = run["lake"], run["reg"], run["frame"]
    scores = run["models"]["2"].predict_proba(frame[["a", "b"]])[:, 1]
    buf = io.BytesIO()
    frame[["id"]].assign(score=scores).sample(frac=1.0, random_state=3).to_parquet(buf)  # not in snapshot order
    m4 = reg.register(MODEL, "4", buf.getvalue(), flavor="predictions", artifact_name="preds.parquet")
    spec = toy_spec(drift=DRIFT, model={"name": MODEL})
    ref, cur = (w.sample(n=300, random_state=1) for w in _windows(frame))
    streamed = compute_prediction_drift(ref, cur, {"candidate": m4}, spec, registry=reg)
    whole = compute_prediction_drift(ref, cur, {"candidate": scoring.load_model(reg, m4)}, spec, registry=reg)
    assert streamed == whole and not streamed["skipped"] and len(streamed["models"]) == 1
    test, res = _evidently(scores[ref.index], scores[cur.index])
    assert streamed["models"][0]["score"] == pytest.approx(float(res.drift_score), rel=1e-9, abs=1e-12)
