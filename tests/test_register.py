"""`eval-pipeline register` loads the artifact once and scores a few rows of the spec's features before writing.

A pickle is refused unless EVAL_ALLOW_PICKLE is on, and then is loaded in a separate process with a scrubbed
environment; garbage is refused naming the file; the demo's candidate is skops and scores exactly as trained.
"""

import io
import os

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from eval_pipeline import cli
from eval_pipeline.lake import Lake
from eval_pipeline.artifact_check import ArtifactCheck
from eval_pipeline.registry import Registry, RegistryError

from .s3_util import write_spec
from .toy import fit_model, land, toy_frame, toy_spec

TREE = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.delenv("EVAL_ALLOW_PICKLE", raising=False)  # the default: pickles are refused
    monkeypatch.delenv("EVAL_TRUSTED_TYPES", raising=False)
    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame()
    land(lake, frame)
    return lake, frame, write_spec(tmp_path / "toy.yaml"), tmp_path


def register(lake, spec, artifact, flavor, capsys, version="1", *extra) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["register", "--lake", lake.root, "--name", "toy_model", "--version", version,
                     "--flavor", flavor, "--artifact", str(artifact), *(["--spec", spec] if spec else []), *extra])
    out = capsys.readouterr()
    return code, out.err + out.out


def nothing_registered(lake) -> bool:
    return lake.find("registry") == []


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_skops_model_is_loaded_scored_and_registered(setup, capsys):
    lake, frame, spec, tmp = setup
    path = write(tmp / "model.skops", sio.dumps(fit_model(frame)))
    code, out = register(lake, spec, path, "sklearn-skops", capsys)
    assert code == 0, out
    assert f"{path} loaded (sklearn.pipeline.Pipeline) and scored 20 rows of the spec's features" in out
    m = Registry(lake).manifest("toy_model", "1")
    assert m.flavor == "sklearn-skops" and lake.read_bytes("registry/toy_model/1/model.skops") == path.read_bytes()


def test_pickle_is_refused_without_eval_allow_pickle(setup, capsys, monkeypatch):
    lake, frame, spec, tmp = setup
    path = tmp / "model.joblib"
    joblib.dump(fit_model(frame), path)
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("unpickled without EVAL_ALLOW_PICKLE"))
    code, out = register(lake, spec, path, "sklearn-joblib", capsys)
    assert code == 2
    assert (f"refusing to register: model toy_model@1: artifact {path} (sklearn-joblib): flavor sklearn-joblib is a "
            f"pickle") in out and "refused unless the operator sets EVAL_ALLOW_PICKLE=1" in out
    assert nothing_registered(lake)


def test_pickle_with_eval_allow_pickle_is_loaded_in_a_subprocess(setup, capsys, monkeypatch):
    lake, frame, spec, tmp = setup
    model = fit_model(frame)
    path = tmp / "model.joblib"
    joblib.dump(model, path)
    monkeypatch.setenv("EVAL_ALLOW_PICKLE", "1")
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("unpickled in the registering process"))
    code, out = register(lake, spec, path, "sklearn-joblib", capsys)
    assert code == 0, out
    assert "scored 20 rows" in out and Registry(lake).manifest("toy_model", "1").flavor == "sklearn-joblib"


class _Spy:
    """A pickle that runs code when loaded: records where it ran and what it could see, then is no model at all."""

    def __init__(self, record: str):
        self.record = record

    def __reduce__(self):
        code = ("import os, json; open({!r}, 'w').write(json.dumps({{'pid': os.getpid(), "
                "'secret': os.environ.get('AWS_SECRET_ACCESS_KEY'), 'cwd': os.getcwd()}}))").format(self.record)
        return (exec, (code,))


def test_a_malicious_pickle_runs_elsewhere_sees_no_credentials_and_is_refused(setup, capsys, monkeypatch):
    import json

    lake, _, spec, tmp = setup
    record = tmp / "spy.json"
    path = tmp / "model.joblib"
    joblib.dump(_Spy(str(record)), path)
    monkeypatch.setenv("EVAL_ALLOW_PICKLE", "1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak-me")
    code, out = register(lake, spec, path, "sklearn-joblib", capsys)
    assert code == 2 and nothing_registered(lake)
    assert f"artifact {path} (sklearn-joblib): predict_proba on 20 rows of the spec's features raised" in out
    seen = json.loads(record.read_text())
    assert seen["pid"] != os.getpid() and seen["secret"] is None and seen["cwd"] != os.getcwd()
    assert "do-not-leak-me" not in out


@pytest.mark.parametrize("flavor,name,data,expected", [
    ("sklearn-joblib", "model.joblib", b"this is not a pickle",
     "joblib could not load the artifact (in a separate process"),
    ("sklearn-joblib", "model.joblib", b"",
     "joblib could not load the artifact (in a separate process"),
    ("sklearn-skops", "model.skops", b"PK\x03\x04 not really a zip",
     "not a readable skops file"),
    ("predictions", "p.parquet", b"PAR1 garbage",
     "not readable as parquet"),
])
def test_garbage_is_refused_naming_the_file_and_the_error(setup, capsys, monkeypatch, flavor, name, data, expected):
    lake, _, spec, tmp = setup
    monkeypatch.setenv("EVAL_ALLOW_PICKLE", "1")
    path = write(tmp / name, data)
    code, out = register(lake, spec, path, flavor, capsys)
    assert code == 2 and f"refusing to register: model toy_model@1: artifact {path} ({flavor}): {expected}" in out
    assert nothing_registered(lake)


def test_a_model_that_cannot_score_the_specs_features_is_refused(setup, capsys, monkeypatch):
    lake, frame, spec, tmp = setup
    from sklearn.linear_model import LogisticRegression

    other = LogisticRegression().fit(frame[["a"]].rename(columns={"a": "distance"}), frame["y"])
    path = write(tmp / "model.skops", sio.dumps(other))
    code, out = register(lake, spec, path, "sklearn-skops", capsys)
    assert code == 2 and nothing_registered(lake)
    assert f"artifact {path} (sklearn-skops): predict_proba on 20 rows of the spec's features raised ValueError" in out
    # the same through a pickle, scored in the child process
    monkeypatch.setenv("EVAL_ALLOW_PICKLE", "1")
    path = tmp / "model.joblib"
    joblib.dump(other, path)
    code, out = register(lake, spec, path, "sklearn-joblib", capsys)
    assert code == 2 and "predict_proba on 20 rows of the spec's features raised ValueError" in out


def test_untrusted_skops_types_are_refused_unless_the_operator_lists_them(setup, capsys, monkeypatch):
    from sklearn.ensemble import HistGradientBoostingClassifier

    lake, frame, spec, tmp = setup
    hgb = HistGradientBoostingClassifier(max_iter=5).fit(frame[["a"]].assign(b=0.0), frame["y"])
    path = write(tmp / "model.skops", sio.dumps(hgb))
    code, out = register(lake, spec, path, "sklearn-skops", capsys)
    assert code == 2 and f"the skops file contains types that are not trusted: ['{TREE}']" in out
    monkeypatch.setenv("EVAL_TRUSTED_TYPES", TREE)
    code, out = register(lake, spec, path, "sklearn-skops", capsys)
    # trusted now, but the toy's column b is a string the model never saw as one: still refused, for that reason
    assert code == 2 and "predict_proba on 20 rows of the spec's features raised ValueError" in out
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    hgb = make_pipeline(ColumnTransformer([("b", OrdinalEncoder(), ["b"])], remainder="passthrough"),
                        HistGradientBoostingClassifier(max_iter=5)).fit(frame[["a", "b"]], frame["y"])
    code, out = register(lake, spec, write(tmp / "model2.skops", sio.dumps(hgb)), "sklearn-skops", capsys)
    assert code == 0, out


def test_predictions_flavor_is_checked_too(setup, capsys):
    lake, frame, spec, tmp = setup
    buf = io.BytesIO()
    pd.DataFrame({"row": frame["id"], "p": 1.5}).to_parquet(buf, index=False)
    path = write(tmp / "p.parquet", buf.getvalue())
    code, out = register(lake, spec, path, "predictions", capsys, "1", "--id-column", "row", "--score-columns", "q")
    assert code == 2 and "predictions file lacks column(s) ['q']" in out
    code, out = register(lake, spec, path, "predictions", capsys, "1", "--id-column", "row", "--score-columns", "p")
    assert code == 2 and "score(s) outside [0, 1]" in out and nothing_registered(lake)


def test_without_a_spec_register_finds_none_for_an_unknown_model(setup, capsys):
    lake, frame, _, tmp = setup
    path = write(tmp / "model.skops", sio.dumps(fit_model(frame)))
    code, out = register(lake, None, path, "sklearn-skops", capsys)
    assert code == 2 and "no evaluation spec evaluates model 'toy_model'" in out and "pass --spec FILE" in out


def test_before_any_data_lands_the_artifact_is_loaded_but_not_scored(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EVAL_ALLOW_PICKLE", raising=False)
    lake = Lake(str(tmp_path / "lake"))
    path = write(tmp_path / "model.skops", sio.dumps(fit_model(toy_frame(200))))
    code, out = register(lake, write_spec(tmp_path / "toy.yaml"), path, "sklearn-skops", capsys)
    assert code == 0 and "no data has landed under" in out and "was loaded but not scored" in out
    code, out = register(lake, write_spec(tmp_path / "toy.yaml"), write(tmp_path / "bad.skops", b"junk"),
                         "sklearn-skops", capsys, "2")
    assert code == 2 and "not a readable skops file" in out


def test_python_api_check_refuses_before_writing(tmp_path):
    lake = Lake(str(tmp_path))
    reg = Registry(lake)
    check = ArtifactCheck(spec=toy_spec(), rows=toy_frame(30))
    with pytest.raises(RegistryError, match=r"refusing to register: model toy_model@1: artifact model.skops "
                                            r"\(sklearn-skops\): not a readable skops file"):
        reg.register("toy_model", "1", b"junk", flavor="sklearn-skops", artifact_name="model.skops", check=check)
    assert lake.find("registry") == []
    m = reg.register("toy_model", "1", sio.dumps(fit_model(toy_frame())), flavor="sklearn-skops",
                     artifact_name="model.skops", check=check)
    assert m.flavor == "sklearn-skops"


# -- the demo's candidate: skops, loaded through the spec's allowlist, scoring exactly as the trained model ----------
def test_demo_candidate_is_skops_and_scores_identically(tmp_path, monkeypatch):
    from threadpoolctl import threadpool_limits

    from eval_pipeline import demo
    from eval_pipeline.demo import data as demo_data, models as demo_models
    from eval_pipeline.scoring import load_model
    from eval_pipeline.spec import load_spec

    monkeypatch.delenv("EVAL_ALLOW_PICKLE", raising=False)  # the demo needs no pickle
    lake = Lake(str(tmp_path / "lake"))
    result = demo.seed_demo(lake, sample_frac=0.02)
    reg = Registry(lake)
    m = reg.manifest("flights_delay", "2")
    assert (m.flavor, m.artifact) == ("sklearn-skops", "model.skops")
    spec = load_spec(demo.packaged_spec_path("flights_delay"))
    # the file needs exactly the spec's allowlist beyond skops' defaults, and nothing loads without it
    assert sorted(sio.get_untrusted_types(data=reg.verified_artifact(m))) == sorted(spec.model.trusted_types)
    from eval_pipeline.scoring import ScoringError

    with pytest.raises(ScoringError, match="not trusted"):
        load_model(reg, m, trusted_types=[])
    loaded = load_model(reg, m, trusted_types=list(spec.model.trusted_types)).model
    # retrain the candidate exactly as the demo does (same buggy extract, same seed) and compare the scores
    frame = demo.flights_frame(sample_frac=0.02)
    train = frame[demo_data._train_mask(frame, demo_data.TRAIN_MONTHS)].reset_index(drop=True)
    buggy = train.copy()
    hit = (buggy["carrier"] == demo_data.BUG_CARRIER) & (buggy["month"] >= demo_data.BUG_FROM_MONTH)
    buggy.loc[hit, "delayed"] = (-buggy.loc[hit, "arr_delay"] > 15).astype("int64")
    model, _ = demo_models._fit_with_holdout(demo_models._candidate_pipeline(), buggy, "delayed", 0,
                                             demo_models._classification_holdout)
    rows = frame[spec.columns.features]
    with threadpool_limits(1):
        np.testing.assert_array_equal(loaded.predict_proba(rows), model.predict_proba(rows))
    assert result["models"]["flights_delay"]["versions"]["2"]["sha256"] == m.sha256
    # the regression task's candidate too
    demo.seed_demo(lake, sample_frac=0.02, tasks=("flights_arr_delay",))
    r = reg.manifest("flights_arr_delay", "2")
    assert r.flavor == "sklearn-skops"
    arr = load_spec(demo.packaged_spec_path("flights_arr_delay"))
    assert load_model(reg, r, trusted_types=list(arr.model.trusted_types)).model.predict(rows.head(50)).shape == (50,)
