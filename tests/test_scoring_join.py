"""Predictions-flavor scoring joined on disk (eval_pipeline.external_join) gives the in-memory lookup's bytes, errors
and cache key; small bucket and range sizes make the toy data span many buckets and ranges."""

import io
import re

import numpy as np
import pandas as pd
import pytest

from eval_pipeline import external_join
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.refresh import refresh_snapshot
from eval_pipeline.scoring import ScoringError, score_model

from .toy import land, toy_frame, toy_spec


@pytest.fixture(autouse=True)
def _small_buckets(monkeypatch):
    # 2,000 toy rows -> 7 buckets, 5 ranges; the spec's batches (700 rows) straddle range boundaries
    monkeypatch.setattr(external_join, "BUCKET_ROWS", 300)
    monkeypatch.setattr(external_join, "RANGE_ROWS", 450)


def _lake(tmp_path, name, frame, spec):
    lake = Lake(str(tmp_path / name))
    land(lake, frame)
    return lake, refresh_snapshot(lake, spec), Registry(lake)


def _register(reg, frame, version="1", **kw):
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return reg.register("toy_model", version, buf.getvalue(), flavor="predictions", artifact_name="p.parquet",
                        id_column="row", **kw)


def _both(tmp_path, frame, preds, spec, **kw):
    """Score the same predictions file in memory and on disk (two lakes); returns both summaries and lakes."""
    out = {}
    for mode in (False, True):
        lake, snap, reg = _lake(tmp_path, f"lake-{mode}", frame, spec)
        m = _register(reg, preds, **kw)
        out[mode] = (lake, score_model(lake, reg, spec, snap, m, external_join=mode))
    return out


def _shuffled_scores(frame, seed=1, extra=300):
    rng = np.random.default_rng(seed)
    ids = np.r_[frame["id"].to_numpy(), np.arange(10**6, 10**6 + extra)]  # ids the snapshot does not have, too
    order = rng.permutation(len(ids))
    return pd.DataFrame({"row": ids[order], "p": rng.random(len(ids))})


@pytest.mark.parametrize("id_kind", ["int", "float_file", "string"])
def test_external_join_writes_the_in_memory_bytes(tmp_path, id_kind):
    frame = toy_frame()
    preds = _shuffled_scores(frame)
    if id_kind == "float_file":  # the file's ids are floats, the snapshot's ints: matched by value, as pandas does
        preds["row"] = preds["row"].astype("float64")
    if id_kind == "string":
        frame = frame.assign(id="r" + frame["id"].astype(str))
        preds["row"] = "r" + preds["row"].astype(str)
    spec = toy_spec(data={"source": "incoming/toy", "evaluation_start": "2024-01-05"})
    runs = _both(tmp_path, frame, preds, spec, score_columns=["p"])
    (lake_m, mem), (lake_x, ext) = runs[False], runs[True]
    assert lake_x.read_bytes(ext["path"]) == lake_m.read_bytes(mem["path"])
    assert lake_x.read_bytes(ext["path"].replace(".parquet", ".json")) == \
        lake_m.read_bytes(mem["path"].replace(".parquet", ".json"))  # same cache key and summary
    got = lake_x.read_parquet(ext["path"])
    # independent reference: the evaluation window of the landed rows, joined with pandas
    want = frame[frame["ts"] >= pd.Timestamp("2024-01-05", tz="UTC")].sort_values(["ts", "id"])
    want = want.merge(preds.assign(row=preds["row"].astype(want["id"].dtype)), left_on="id", right_on="row")
    assert got["id"].tolist() == want["id"].tolist() and len(got) < len(frame)
    np.testing.assert_array_equal(got["score"].to_numpy(), want["p"].to_numpy())


def test_external_join_several_score_columns(tmp_path):
    frame = toy_frame(n=1500)
    rng = np.random.default_rng(3)
    raw = rng.random((len(frame), 3))
    probs = raw / raw.sum(axis=1, keepdims=True)
    back = probs[::-1]  # the file lists the rows backwards
    preds = pd.DataFrame({"row": frame["id"].to_numpy()[::-1], "pu": back[:, 0], "pv": back[:, 1], "pw": back[:, 2]})
    spec = toy_spec(task_type="multiclass_classification", metrics=["accuracy"],
                    model={"name": "toy_model", "batch_size": 700, "classes": ["u", "v", "w"]},
                    gates=[{"metric": "accuracy", "kind": "non_inferiority", "margin": 0.05}])
    runs = _both(tmp_path, frame, preds, spec, score_columns=["pu", "pv", "pw"])
    (lake_m, mem), (lake_x, ext) = runs[False], runs[True]
    assert lake_x.read_bytes(ext["path"]) == lake_m.read_bytes(mem["path"])
    got = lake_x.read_parquet(ext["path"]).set_index("id")
    np.testing.assert_array_equal(got.loc[frame["id"], ["proba_u", "proba_v", "proba_w"]].to_numpy(), probs)


def _errors(tmp_path, frame, preds, spec=None, **kw) -> dict:
    spec = spec or toy_spec()
    out = {}
    for mode in (False, True):
        lake, snap, reg = _lake(tmp_path, f"err-{mode}", frame, spec)
        m = _register(reg, preds, **kw)
        with pytest.raises(ScoringError) as info:
            score_model(lake, reg, spec, snap, m, external_join=mode)
        assert lake.find("predictions") == []  # nothing written
        out[mode] = str(info.value)
    return out


def test_missing_ids_give_the_same_error(tmp_path):
    frame = toy_frame()
    preds = _shuffled_scores(frame)
    preds = preds[~preds["row"].isin([1234])]  # not in the first batch: earlier batches are scored first
    err = _errors(tmp_path, frame, preds, score_columns=["p"])
    assert err[True] == err[False]
    assert re.search(r"toy_model@1: predictions do not cover the dataset: 1 of \d+ row ids in this batch have no "
                     r"score, e.g. id=1234$", err[True])


def test_duplicate_ids_give_the_same_error(tmp_path):
    frame = toy_frame()
    preds = _shuffled_scores(frame)
    dup = pd.concat([preds, preds[preds["row"].isin([77, 1900])].iloc[::-1]], ignore_index=True)
    err = _errors(tmp_path, frame, dup, score_columns=["p"])
    assert err[True] == err[False]
    first = dup["row"][dup["row"].duplicated()].iloc[0]  # the first repeated id in file order
    assert f"2 duplicate id(s), e.g. row={first}; expected one score per row" in err[True]


def test_missing_columns_and_bad_scores_give_the_same_error(tmp_path):
    frame = toy_frame()
    err = _errors(tmp_path, frame, _shuffled_scores(frame), score_columns=["q"])
    assert err[True] == err[False] and "lacks column(s) ['q'] (has ['row', 'p'])" in err[True]
    bad = _shuffled_scores(frame)
    bad.loc[bad["row"] == 5, "p"] = np.nan
    err = _errors(tmp_path / "nan", frame, bad, score_columns=["p"])
    assert err[True] == err[False] and "1 non-finite score(s) (NaN or inf), e.g. for id=5" in err[True]


def test_tampered_predictions_file_is_refused_before_reading(tmp_path):
    frame = toy_frame()
    lake, snap, reg = _lake(tmp_path, "t", frame, toy_spec())
    m = _register(reg, _shuffled_scores(frame), score_columns=["p"])
    lake.write_bytes(reg.artifact_path(m), b"PAR1 not the registered bytes")
    with pytest.raises(Exception, match=r"has sha256 .* but the manifest pins"):
        score_model(lake, reg, toy_spec(), snap, m, external_join=True)


def test_predictions_for_a_few_ids_stream_the_file(tmp_path):
    frame = toy_frame()
    lake, snap, reg = _lake(tmp_path, "few", frame, toy_spec())
    preds = _shuffled_scores(frame)
    preds = pd.concat([preds, preds[preds["row"] == 1_000_005]], ignore_index=True)  # a duplicate nobody asks for
    m = _register(reg, preds, score_columns=["p"])
    from eval_pipeline.scoring import predictions_for_ids

    wanted = pd.Series([17, 5, 10**7, 1999])
    values, found = predictions_for_ids(reg, m, toy_spec(), wanted)
    want = preds.drop_duplicates("row").set_index("row")["p"].reindex(wanted).to_numpy()
    assert found.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(values[found], want[found])
    assert np.isnan(values[~found]).all()
    with pytest.raises(ScoringError, match=r"1 duplicate id\(s\), e.g. row=1000005"):
        predictions_for_ids(reg, m, toy_spec(), pd.Series([1_000_005, 3]))
