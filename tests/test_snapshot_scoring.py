"""Snapshots (content hash, bad files) and scoring (flavors, hash pinning, misbehaving models)."""

import io

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry, RegistryError
from eval_pipeline.scoring import ScoringError, load_model, score_model
from eval_pipeline.refresh import refresh_snapshot
from eval_pipeline.snapshot import DataError, read_snapshot_table

from .toy import fit_model, joblib_bytes, land, manifest_content, register_joblib, toy_frame, toy_spec


@pytest.fixture
def toy(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame()
    land(lake, frame)
    return lake, frame, toy_spec()


def test_snapshot_is_content_addressed_and_sorted(toy):
    lake, frame, spec = toy
    s1 = refresh_snapshot(lake, spec)
    s2 = refresh_snapshot(lake, spec)
    assert s1.snapshot_id == s2.snapshot_id
    assert s1.manifest["rows"] == len(frame)
    data = read_snapshot_table(lake, s1).to_pandas()
    assert list(data["id"]) == sorted(data["id"])  # each part sorted; part-1's ids follow part-0's
    assert [f["path"] for f in s1.manifest["source_files"]] == ["incoming/toy/part-0.parquet",
                                                               "incoming/toy/part-1.parquet"]
    lake.write_parquet("incoming/toy/part-2.parquet", toy_frame(10, seed=5).assign(id=lambda d: d["id"] + 10_000))
    assert refresh_snapshot(lake, spec).snapshot_id != s1.snapshot_id


def test_corrupt_parquet_is_named_and_previous_snapshot_survives(toy):
    lake, _, spec = toy
    good = refresh_snapshot(lake, spec)
    raw = lake.read_bytes("incoming/toy/part-1.parquet")
    lake.write_bytes("incoming/toy/part-1.parquet", raw[: len(raw) // 2])  # truncated upload
    with pytest.raises(DataError, match=r"part-1\.parquet.*corrupt or truncated"):
        refresh_snapshot(lake, spec)
    assert lake.read_json("snapshots/toy/latest.json")["snapshot_id"] == good.snapshot_id
    assert read_snapshot_table(lake, good).num_rows == good.manifest["rows"]


def test_missing_column_names_file_and_column(toy):
    lake, frame, spec = toy
    lake.write_parquet("incoming/toy/part-1.parquet", frame.drop(columns=["b"]))
    with pytest.raises(DataError, match=r"part-1\.parquet: missing column\(s\) \['b'\]"):
        refresh_snapshot(lake, spec)


def test_empty_landing_zone(tmp_path):
    with pytest.raises(DataError, match="no data files"):
        refresh_snapshot(Lake(str(tmp_path)), toy_spec())


def test_joblib_model_scores_match_direct_predict_proba(toy):
    lake, frame, spec = toy
    snap = refresh_snapshot(lake, spec)
    reg = Registry(lake)
    model = fit_model(frame)
    m = register_joblib(reg, "1", model)
    out = score_model(lake, reg, spec, snap, m)
    assert out["rows"] == len(frame) and not out["cached"]
    preds = lake.read_parquet(out["path"])
    data = read_snapshot_table(lake, snap).to_pandas()
    np.testing.assert_array_equal(preds["id"], data["id"])
    np.testing.assert_allclose(preds["score"], model.predict_proba(data[["a", "b"]])[:, 1], rtol=0, atol=0)
    assert score_model(lake, reg, spec, snap, m)["cached"]


def test_skops_model_and_untrusted_types(toy):
    lake, frame, spec = toy
    snap = refresh_snapshot(lake, spec)
    reg = Registry(lake)
    model = fit_model(frame)
    m = reg.register("toy_model", "1", sio.dumps(model), flavor="sklearn-skops", artifact_name="model.skops")
    assert load_model(reg, m).model is not None
    from sklearn.ensemble import HistGradientBoostingClassifier

    hgb = HistGradientBoostingClassifier(max_iter=5).fit(frame[["a"]], frame["y"])
    m2 = reg.register("toy_model", "2", sio.dumps(hgb), flavor="sklearn-skops", artifact_name="model.skops")
    with pytest.raises(ScoringError, match=r"toy_model@2.*not trusted.*EVAL_TRUSTED_TYPES"):
        load_model(reg, m2, trusted_types=[])
    trusted = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
    assert load_model(reg, m2, trusted_types=trusted).model is not None


def test_tampered_joblib_is_never_unpickled(toy, monkeypatch):
    lake, frame, spec = toy
    reg = Registry(lake)
    m = register_joblib(reg, "1", fit_model(frame))
    lake.write_bytes("registry/toy_model/1/model.joblib", joblib_bytes({"evil": True}))
    import joblib

    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("unpickled an unverified artifact"))
    with pytest.raises(RegistryError, match="sha256"):
        load_model(reg, m)


class _Raises:
    def predict_proba(self, X):
        raise RuntimeError("feature store timeout")


class _WrongShape:
    def predict_proba(self, X):
        return np.zeros((len(X), 3))


class _NaN:
    def predict_proba(self, X):
        p = np.full(len(X), 0.5)
        p[7] = np.nan
        return np.c_[1 - p, p]


class _OutOfRange:
    def predict_proba(self, X):
        return np.c_[np.zeros(len(X)), np.full(len(X), 1.5)]


@pytest.mark.parametrize("model,match", [
    (_Raises(), r"toy_model@1 raised while scoring .*RuntimeError: feature store timeout"),
    (_WrongShape(), r"toy_model@1: predict_proba returned shape \(\d+, 3\); expected"),
    (_NaN(), r"toy_model@1: 1 non-finite score\(s\).*id=7"),
    (_OutOfRange(), r"toy_model@1: \d+ score\(s\) outside \[0, 1\]"),
])
def test_misbehaving_models_fail_with_a_clear_error_and_no_output(toy, model, match):
    lake, _, spec = toy
    snap = refresh_snapshot(lake, spec)
    reg = Registry(lake)
    m = register_joblib(reg, "1", model)
    with pytest.raises(ScoringError, match=match):
        score_model(lake, reg, spec, snap, m)
    assert lake.find("predictions") == []


def _register_predictions(reg, version, frame):
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return reg.register("toy_model", version, buf.getvalue(), flavor="predictions",
                        artifact_name="predictions.parquet", id_column="row", score_columns=["p"])


def test_predictions_flavor(toy):
    lake, frame, spec = toy
    snap = refresh_snapshot(lake, spec)
    reg = Registry(lake)
    scores = pd.DataFrame({"row": frame["id"][::-1].to_numpy(), "p": np.linspace(0, 1, len(frame))})
    m = _register_predictions(reg, "1", scores)
    out = lake.read_parquet(score_model(lake, reg, spec, snap, m)["path"])
    expected = scores.set_index("row").loc[out["id"], "p"].to_numpy()
    np.testing.assert_array_equal(out["score"], expected)


def test_predictions_that_do_not_cover_the_dataset(toy):
    lake, frame, spec = toy
    snap = refresh_snapshot(lake, spec)
    reg = Registry(lake)
    m = _register_predictions(reg, "1", pd.DataFrame({"row": frame["id"][5:], "p": 0.5}))
    with pytest.raises(ScoringError, match=r"toy_model@1: predictions do not cover the dataset: 5 of"):
        score_model(lake, reg, spec, snap, m)


def test_predictions_with_duplicate_ids(toy):
    lake, frame, spec = toy
    snap = refresh_snapshot(lake, spec)
    reg = Registry(lake)
    dup = pd.DataFrame({"row": np.r_[frame["id"], [3]], "p": 0.5})
    m = _register_predictions(reg, "1", dup)
    with pytest.raises(ScoringError, match=r"1 duplicate id\(s\), e.g. row=3"):
        score_model(lake, reg, spec, snap, m)


def test_corrupted_snapshot_is_rebuilt_by_the_next_refresh(toy):
    lake, frame, spec = toy
    snap = refresh_snapshot(lake, spec)
    part = snap.part_paths[1]
    good = lake.read_bytes(part)
    lake.write_bytes(part, good[: len(good) // 3])
    again = refresh_snapshot(lake, spec)
    assert again.snapshot_id == snap.snapshot_id and manifest_content(again.manifest) == manifest_content(snap.manifest)
    assert lake.read_bytes(part) == good


# -- issue 9: pickles are opt-in; skops trust comes from the operator (spec / EVAL_TRUSTED_TYPES) -----------------------
def test_pickle_is_refused_unless_the_operator_opts_in(toy, monkeypatch, caplog):
    lake, frame, spec = toy
    snap = refresh_snapshot(lake, spec)
    reg = Registry(lake)
    m = register_joblib(reg, "1", fit_model(frame))
    monkeypatch.delenv("EVAL_ALLOW_PICKLE")
    import joblib

    real_load = joblib.load
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("unpickled without EVAL_ALLOW_PICKLE"))
    with pytest.raises(ScoringError, match=r"model toy_model@1: flavor sklearn-joblib is a pickle.*refused unless the "
                                           r"operator sets EVAL_ALLOW_PICKLE=1"):
        score_model(lake, reg, spec, snap, m)
    assert lake.find("predictions") == []
    monkeypatch.setenv("EVAL_ALLOW_PICKLE", "off")
    with pytest.raises(ScoringError, match="EVAL_ALLOW_PICKLE=1"):
        load_model(reg, m)
    monkeypatch.setattr(joblib, "load", real_load)
    monkeypatch.setenv("EVAL_ALLOW_PICKLE", "1")
    with caplog.at_level("WARNING", logger="eval_pipeline.scoring"):
        out = score_model(lake, reg, spec, snap, m)
    assert out["rows"] == len(frame) and "unpickling model toy_model@1" in caplog.text  # loud when on


def test_skops_trust_comes_from_the_spec_allowlist_never_from_the_file(toy, monkeypatch):
    from sklearn.ensemble import HistGradientBoostingClassifier

    lake, frame, _ = toy
    tree = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    reg = Registry(lake)
    hgb = HistGradientBoostingClassifier(max_iter=5).fit(frame[["a"]], frame["y"])
    m = reg.register("toy_model", "1", sio.dumps(hgb), flavor="sklearn-skops", artifact_name="model.skops")
    spec = toy_spec(columns={"id": "id", "label": "y", "timestamp": "ts", "features": ["a"]})
    snap = refresh_snapshot(lake, spec)
    monkeypatch.delenv("EVAL_TRUSTED_TYPES", raising=False)
    with pytest.raises(ScoringError, match=rf"toy_model@1: the skops file contains types that are not trusted: "
                                           rf"\['{tree}'\].*model.trusted_types or in EVAL_TRUSTED_TYPES"):
        score_model(lake, reg, spec, snap, m)
    trusting = toy_spec(columns={"id": "id", "label": "y", "timestamp": "ts", "features": ["a"]},
                        model={"name": "toy_model", "trusted_types": [tree]})
    out = lake.read_parquet(score_model(lake, reg, trusting, snap, m)["path"])
    np.testing.assert_array_equal(out["score"], hgb.predict_proba(frame.sort_values("ts")[["a"]])[:, 1])
    monkeypatch.setenv("EVAL_TRUSTED_TYPES", tree)  # or the operator's environment
    assert load_model(reg, m).model is not None


def test_a_model_needs_features_but_a_predictions_model_does_not(toy):
    lake, frame, _ = toy
    spec = toy_spec(columns={"id": "id", "label": "y", "timestamp": "ts", "features": []},
                    drift={"columns": ["a", "b"], "current": {"last_days": 10}})
    snap = refresh_snapshot(lake, spec)
    assert {"a", "b"} <= set(snap.manifest["schema"])  # slice and drift columns are in the snapshot
    reg = Registry(lake)
    m = register_joblib(reg, "1", fit_model(frame))
    with pytest.raises(ScoringError, match="toy_model@1 \\(sklearn-joblib\\) needs input columns, but spec 'toy' "
                                           "lists no columns.features"):
        score_model(lake, reg, spec, snap, m)
    p = _register_predictions(reg, "2", pd.DataFrame({"row": frame["id"], "p": 0.25}))
    assert score_model(lake, reg, spec, snap, p)["rows"] == len(frame)


def test_predictions_flavor_task_sliced_on_a_column_that_is_not_a_feature(tmp_path):
    """End to end through Dagster: no features at all, gates on slices of b (slice columns used to have to be
    features): the slices exist and are decided."""
    from eval_pipeline.cli import run_evaluation

    from .s3_util import write_spec

    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame()
    land(lake, frame)
    reg = Registry(lake)
    rng = np.random.default_rng(1)
    logit = 1.5 * frame["a"] + (frame["b"] == "x") * 0.8
    good = 1 / (1 + np.exp(-logit))
    noisy = 1 / (1 + np.exp(-(logit + rng.normal(0, 2.0, len(frame)))))
    _register_predictions(reg, "1", pd.DataFrame({"row": frame["id"], "p": noisy}))
    reg.set_champion("toy_model", "1", reason="test")
    _register_predictions(reg, "2", pd.DataFrame({"row": frame["id"], "p": good}))
    spec = write_spec(tmp_path / "s.yaml", columns={"id": "id", "label": "y", "timestamp": "ts", "features": []},
                      slices={"columns": ["b"], "min_size": 50},
                      gates=[{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.05, "slices": "b"}],
                      evaluation={"bootstrap_replicates": 200})
    code, result = run_evaluation(spec, lake.root, "toy_model@2", None, None)
    rows = {g["slice"]: g["outcome"] for g in result["gates"]}
    assert rows == {"b=x": "PASS", "b=y": "PASS", "b=z": "PASS"} and code == 0
