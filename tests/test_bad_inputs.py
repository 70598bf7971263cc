"""The bad-input catalog (docs/bad-inputs.md lists every case with its test).

Two levels:
- *pipeline level*: a lake with a previous good evaluation receives a bad input, ``eval-pipeline evaluate`` runs
  through Dagster and exits 2 with a message naming the file / column / model / row and what was expected (or 3/1 with
  a warning, where the input is legal but degenerate); every output that existed before is byte-identical
  afterwards (only the ``latest.json`` pointer moves to a new snapshot that failed validation: by design the
  ``validated.json`` pointer, which evaluations use, does not);
- *unit level*: the same checks on the functions that raise them, for the cases not already covered by
  tests/test_snapshot_scoring.py and tests/test_lake_registry.py.
"""

import io
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from eval_pipeline import cli
from eval_pipeline.cli import run_evaluation
from eval_pipeline.lake import Lake, LakeError
from eval_pipeline.registry import Registry, RegistryError
from eval_pipeline.scoring import ScoringError, score_model
from eval_pipeline.refresh import refresh_snapshot
from eval_pipeline.snapshot import DataError, load_snapshot, read_snapshot_table
from eval_pipeline.spec import SpecError, load_spec

from .fixtures.toy_expected import TOY_MARGIN, assert_toy_release_pass
from .s3_util import lake_bytes, seed_toy, toy_spec_dict, write_spec
from .toy import TOY_SPEC, fit_model, land, register_joblib, toy_frame, toy_spec

TASK, MODEL = "toy", "toy_model"


# -- a lake with a previous good evaluation, copied per test -----------------------------------------------------------
@pytest.fixture(scope="module")
def _template(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    lake = Lake(str(root / "lake"))
    seed_toy(lake)
    code, result = run_evaluation(write_spec(root / "toy.yaml"), lake.root, f"{MODEL}@2", None, None)
    assert_toy_release_pass(code, result)  # PASS on roc_auc/overall, exit 0: see tests/fixtures/toy_expected.py
    assert lake.exists(f"snapshots/{TASK}/validated.json")
    return root, result


@pytest.fixture
def good(_template, tmp_path):
    root, result = _template
    work = tmp_path / "w"
    shutil.copytree(root, work)
    lake = Lake(str(work / "lake"))
    return SimpleNamespace(lake=lake, spec=str(work / "toy.yaml"), result=result, dir=work,
                           before=lake_bytes(lake), snapshot=result["dataset"]["snapshot_id"])


def evaluate(good, capsys, candidate=f"{MODEL}@2", spec=None) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["evaluate", "--spec", spec or good.spec, "--lake", good.lake.root, "--candidate", candidate])
    return code, capsys.readouterr().err


def assert_previous_outputs_untouched(good, may_move=()) -> None:
    after = lake_bytes(good.lake)
    changed = sorted(k for k, v in good.before.items() if after.get(k) != v and k not in may_move)
    assert not changed, f"previous outputs changed: {changed}"
    assert good.lake.read_json(f"snapshots/{TASK}/validated.json")["snapshot_id"] == good.snapshot


def land_file(good, name: str, frame_or_bytes) -> str:
    rel = f"incoming/toy/{name}"
    if isinstance(frame_or_bytes, bytes):
        good.lake.write_bytes(rel, frame_or_bytes)
    else:
        good.lake.write_parquet(rel, frame_or_bytes)
    return rel


def new_rows(n=200, seed=3) -> pd.DataFrame:
    return toy_frame(n, seed=seed).assign(id=lambda d: d["id"] + 50_000)


# -- data in the landing zone ------------------------------------------------------------------------------------------
def test_pipeline_truncated_parquet(good, capsys):
    raw = io.BytesIO()
    new_rows().to_parquet(raw, index=False)
    land_file(good, "part-9.parquet", raw.getvalue()[:-300])
    code, err = evaluate(good, capsys)
    assert code == 2
    assert "incoming/toy/part-9.parquet: cannot be read as parquet (corrupt or truncated?)" in err
    assert_previous_outputs_untouched(good)


def test_pipeline_missing_column(good, capsys):
    land_file(good, "part-9.parquet", new_rows().drop(columns=["a"]))
    code, err = evaluate(good, capsys)
    assert code == 2 and "part-9.parquet: missing column(s) ['a'] required by spec 'toy'" in err
    assert_previous_outputs_untouched(good)


def test_pipeline_wrong_dtype(good, capsys):
    land_file(good, "part-9.parquet", new_rows().assign(a=lambda d: d["a"].round(3).astype(str)))
    code, err = evaluate(good, capsys)
    assert code == 2
    assert "part-9.parquet: column 'a' is string, but" in err and "part-0.parquet has double" in err
    assert_previous_outputs_untouched(good)


def test_pipeline_duplicate_ids_fail_the_blocking_quality_check(good, capsys):
    land_file(good, "part-9.parquet", toy_frame(50, seed=4))  # ids 0..49 again
    code, err = evaluate(good, capsys)
    assert code == 2 and "data quality FAILED" in err
    assert "column 'id' has 100 rows" in err and "expected unique" in err
    assert_previous_outputs_untouched(good, may_move={f"snapshots/{TASK}/latest.json"})


def test_pipeline_labels_outside_the_task_domain(good, capsys):
    land_file(good, "part-9.parquet", new_rows().assign(y=lambda d: d["y"].where(d.index % 7 > 0, 2)))
    code, err = evaluate(good, capsys)
    assert code == 2 and "data quality FAILED" in err and "'y'" in err
    assert_previous_outputs_untouched(good, may_move={f"snapshots/{TASK}/latest.json"})


def test_pipeline_empty_dataset(good, capsys, tmp_path):
    good.lake.write_parquet("incoming/empty/part-0.parquet", toy_frame(10).iloc[:0])
    spec = write_spec(tmp_path / "empty.yaml", data={"source": "incoming/empty"})
    code, err = evaluate(good, capsys, spec=spec)
    assert code == 2 and "data quality FAILED" in err and "0 rows" in err
    assert_previous_outputs_untouched(good, may_move={f"snapshots/{TASK}/latest.json"})


def test_pipeline_evaluation_window_without_rows(good, capsys, tmp_path):
    spec = write_spec(tmp_path / "window.yaml",
                      data={"source": "incoming/toy", "evaluation_start": "2030-01-01"})
    code, err = evaluate(good, capsys, spec=spec)
    assert code == 2 and "no evaluation rows" in err and "2030-01-01" in err
    # spec.yaml beside the snapshot is rewritten by every refresh with the spec of the moment (pipeline.refresh):
    # provenance of the earlier result is its spec_sha256; see docs/bad-inputs.md
    assert_previous_outputs_untouched(good, may_move={f"snapshots/{TASK}/{good.snapshot}/spec.yaml"})


# -- the spec ----------------------------------------------------------------------------------------------------------
def test_pipeline_spec_naming_an_unknown_column(good, capsys, tmp_path):
    # a slice column need not be a model feature (issue 9), so an unknown one is found in the data: file and column
    spec = write_spec(tmp_path / "bad.yaml", slices={"columns": ["carrier"]})
    code, err = evaluate(good, capsys, spec=spec)
    assert code == 2 and "part-0.parquet: missing column(s) ['carrier'] required by spec 'toy'" in err
    assert_previous_outputs_untouched(good)
    # a gate naming a slice that cannot exist is refused up front (it used to be a permanent INCONCLUSIVE)
    spec = write_spec(tmp_path / "gate.yaml", gates=[{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.05,
                                                       "slices": ["b=x", "carier=9E"]}])
    code, err = evaluate(good, capsys, spec=spec)
    assert code == 2 and "gate.yaml" in err and "gates.0.slices (roc_auc): 'carier=9E' names no possible slice" in err
    assert_previous_outputs_untouched(good)


def test_pipeline_spec_feature_absent_from_the_data(good, capsys, tmp_path):
    cols = {**TOY_SPEC["columns"], "features": ["a", "b", "distance"]}
    spec = write_spec(tmp_path / "feat.yaml", columns=cols)
    code, err = evaluate(good, capsys, spec=spec)
    assert code == 2 and "part-0.parquet: missing column(s) ['distance'] required by spec 'toy'" in err
    assert_previous_outputs_untouched(good)


# -- models and the registry -------------------------------------------------------------------------------------------
class _Raises:
    def predict_proba(self, X):
        raise RuntimeError("feature store timeout")


class _Inf:
    def predict_proba(self, X):
        p = np.full(len(X), 0.5)
        p[3] = np.inf
        return np.c_[1 - p, p]


class _WrongShape:
    def predict_proba(self, X):
        return np.zeros((len(X) - 1, 2))


def test_pipeline_model_that_raises(good, capsys):
    """(Wrong shapes, NaN / inf / out-of-range scores take the same path: unit tests below and in
    test_snapshot_scoring.py.) Note: the scoring step's retry policy re-runs this deterministic failure twice."""
    register_joblib(Registry(good.lake), "3", _Raises())
    code, err = evaluate(good, capsys, candidate=f"{MODEL}@3")
    assert code == 2 and "toy_model@3 raised while scoring 700 rows: RuntimeError: feature store timeout" in err
    assert not good.lake.exists(f"predictions/{TASK}/{good.snapshot}/{MODEL}/3.parquet")
    assert_previous_outputs_untouched(good)


@pytest.mark.parametrize("model,expected", [
    (_Inf(), r"toy_model@1: 1 non-finite score\(s\) \(NaN or inf\), e.g. for id=3"),
    (_WrongShape(), r"toy_model@1: predict_proba returned shape \(699, 2\); expected \(700, 2\) or \(700,\)"),
], ids=["inf", "one-row-short"])
def test_model_returning_inf_or_too_few_rows(toy_lake, model, expected):
    spec = toy_spec()
    snap = refresh_snapshot(toy_lake, spec)
    reg = Registry(toy_lake)
    with pytest.raises(ScoringError, match=expected):
        score_model(toy_lake, reg, spec, snap, register_joblib(reg, "1", model))
    assert toy_lake.find("predictions") == []


def test_pipeline_tampered_artifact(good, capsys):
    reg = Registry(good.lake)
    register_joblib(reg, "3", fit_model(toy_frame()))
    good.lake.write_bytes("registry/toy_model/3/model.joblib", b"not the registered model")
    code, err = evaluate(good, capsys, candidate=f"{MODEL}@3")
    assert code == 2 and "model toy_model@3: artifact" in err and "refusing to load it" in err
    assert_previous_outputs_untouched(good, may_move=("registry/toy_model/3/model.joblib",))


@pytest.mark.parametrize("drop", [["sha256"], ["artifact", "flavor"]])
def test_pipeline_manifest_missing_fields(good, capsys, drop):
    m = Registry(good.lake).register(MODEL, "3", b"x", flavor="sklearn-joblib", artifact_name="model.joblib")
    good.lake.write_json("registry/toy_model/3/manifest.json",
                         {k: v for k, v in m.model_dump(mode="json").items() if k not in drop})
    code, err = evaluate(good, capsys, candidate=f"{MODEL}@3")
    assert code == 2 and "model toy_model@3: invalid manifest" in err
    for field in drop:
        assert f"{field}: required field is missing" in err


@pytest.mark.parametrize("ref", ["toy_model@../../etc", "toy_model@/abs", "../toy_model@1", "toy_model@a/b"])
def test_pipeline_candidate_escaping_the_registry(good, capsys, ref):
    code, err = evaluate(good, capsys, candidate=ref)
    assert code == 2 and "is not allowed" in err and "no '/', '..'" in err
    assert_previous_outputs_untouched(good)


def test_pipeline_predictions_not_covering_the_dataset(good, capsys):
    ids = read_snapshot_table(good.lake, load_snapshot(good.lake, TASK, good.snapshot), ["id"]).to_pandas()["id"]
    buf = io.BytesIO()
    pd.DataFrame({"row": ids[ids != 1234], "p": 0.5}).to_parquet(buf, index=False)
    Registry(good.lake).register(MODEL, "3", buf.getvalue(), flavor="predictions",
                                 artifact_name="predictions.parquet", id_column="row", score_columns=["p"])
    code, err = evaluate(good, capsys, candidate=f"{MODEL}@3")
    assert code == 2 and "toy_model@3: predictions do not cover the dataset: 1 of 700" in err and "id=1234" in err
    assert_previous_outputs_untouched(good)


# -- degenerate but legal: the run completes and says what it could not judge ----------------------------------------
def test_pipeline_empty_and_single_class_slices(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame()
    frame.loc[frame["b"] == "z", "y"] = 0  # slice b=z has a single class: ROC AUC is undefined there
    land(lake, frame)
    reg = Registry(lake)
    register_joblib(reg, "1", fit_model(frame))
    register_joblib(reg, "2", fit_model(frame, c=0.1))
    reg.set_champion(MODEL, "1")
    spec = write_spec(tmp_path / "s.yaml", slices={"columns": ["b"], "bins": {"a": [-50, -40, 0, 50]}, "min_size": 50},
                      gates=[{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.05, "slices": "all"}],
                      # 'all' is >= 3 rows up front (overall, b, a): B = 50 is refused, B + 1 >= 3 / 0.025 is needed
                      evaluation={"bootstrap_replicates": 200})
    code, result = run_evaluation(spec, lake.root, f"{MODEL}@2", None, None)
    # The data decide it: every label of b=z is 0 (ROC AUC undefined there) and no row has a < -40 (the bin
    # a=[-50, -40) is empty); those two gate rows cannot be judged, so they are INCONCLUSIVE whatever the models.
    # Every other row compares two near-identical models (deltas ~1e-3, far from -0.05), so none can FAIL:
    # verdict INCONCLUSIVE, exit 3.
    assert (result["verdict"], code) == ("INCONCLUSIVE", 3)
    slices = {s["slice"]: s for s in result["metrics"]["slices"]}
    assert set(slices) == {"overall", "b=x", "b=y", "b=z", "a=[-50, -40)", "a=[-40, 0)", "a=[0, 50)"}
    z = slices["b=z"]
    assert z["n"] == int((frame["b"] == "z").sum()) and z["n"] >= 50
    assert z["models"]["candidate"]["roc_auc"]["value"] is None and z["models"]["candidate"]["roc_auc"]["undefined"]
    assert slices["a=[-50, -40)"]["n"] == 0 and slices["a=[-50, -40)"]["status"] != "ok"
    gates = {g["slice"]: g for g in result["gates"]}
    assert set(gates) == set(slices) and {g["metric"] for g in gates.values()} == {"roc_auc"}
    undecidable = {s: g for s, g in gates.items() if g["delta"] is None}
    assert set(undecidable) == {"b=z", "a=[-50, -40)"}
    assert all(g["outcome"] == "INCONCLUSIVE" for g in undecidable.values())
    assert "single-class" in gates["b=z"]["rule"] and "too small" in gates["a=[-50, -40)"]["rule"]
    assert not [g for g in gates.values() if g["outcome"] == "FAIL"]
    assert all(g["ci"][0] > -TOY_MARGIN for s, g in gates.items() if s not in undecidable)


def test_pipeline_slice_column_with_thousands_of_values_is_capped_with_a_warning(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    seed_toy(lake)
    spec = write_spec(tmp_path / "s.yaml", slices={"columns": ["id"], "max_values": 20, "min_size": 1})
    code, result = run_evaluation(spec, lake.root, f"{MODEL}@2", None, None)
    # id slices are measured, not gated (the toy gate is on overall): the toy's known PASS, exit 0
    assert_toy_release_pass(code, result)
    warnings = result["metrics"]["warnings"]
    assert any("slice column 'id' has 2000 distinct values; kept the 20 largest" in w for w in warnings), warnings
    id_slices = [s for s in result["metrics"]["slices"] if s["slice"].startswith("id")]
    assert 0 < len(id_slices) <= 20


# -- unit level: cases not covered elsewhere ---------------------------------------------------------------------------
@pytest.fixture
def toy_lake(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    land(lake, toy_frame())
    return lake


@pytest.mark.parametrize("column,bad,kind", [
    ("a", lambda f: f["a"].astype(str), "string"),
    ("y", lambda f: f["y"].map({0: "no", 1: "yes"}), "string"),
    ("id", lambda f: f["id"].astype(str), "string"),
    ("b", lambda f: np.ones(len(f), dtype="int64"), "int64"),
])
def test_wrong_dtype_names_file_column_and_types(toy_lake, column, bad, kind):
    frame = toy_lake.read_parquet("incoming/toy/part-1.parquet")
    toy_lake.write_parquet("incoming/toy/part-1.parquet", frame.assign(**{column: bad(frame)}))
    with pytest.raises(DataError, match=rf"part-1\.parquet: column '{column}' is {kind}, but .*part-0\.parquet has"):
        refresh_snapshot(toy_lake, toy_spec())


@pytest.mark.parametrize("value,match", [
    (lambda f: np.arange(len(f)), r"part-1\.parquet: timestamp column 'ts' has type int64; expected a timestamp"),
    (lambda f: "yesterday", r"part-1\.parquet: timestamp column 'ts' is not parseable as datetimes"),
])
def test_bad_timestamp_column(toy_lake, value, match):
    frame = toy_lake.read_parquet("incoming/toy/part-1.parquet")
    toy_lake.write_parquet("incoming/toy/part-1.parquet", frame.assign(ts=value(frame)))
    with pytest.raises(DataError, match=match):
        refresh_snapshot(toy_lake, toy_spec())


def test_malformed_csv_names_the_file(toy_lake):
    toy_lake.write_text("incoming/toy/extra.csv", "id,y,ts,a,b\n1,0,2024-01-01,0.5,x\n2,1\n")
    with pytest.raises(DataError, match=r"extra\.csv: cannot be read as csv"):
        refresh_snapshot(toy_lake, toy_spec())


def test_zero_byte_parquet_names_the_file(toy_lake):
    toy_lake.write_bytes("incoming/toy/part-1.parquet", b"")
    with pytest.raises(DataError, match=r"part-1\.parquet: cannot be read as parquet.*0 bytes"):
        refresh_snapshot(toy_lake, toy_spec())


def test_corrupt_snapshot_file_is_named_when_read(toy_lake):
    snap = refresh_snapshot(toy_lake, toy_spec())
    part = snap.part_paths[0]
    toy_lake.write_bytes(part, toy_lake.read_bytes(part)[:100])
    with pytest.raises(LakeError, match=re.escape(f"{part} is not a readable parquet file")):
        read_snapshot_table(toy_lake, snap)


def test_predictions_flavor_with_nan_score_and_missing_column(toy_lake):
    spec = toy_spec()
    snap = refresh_snapshot(toy_lake, spec)
    reg = Registry(toy_lake)
    ids = read_snapshot_table(toy_lake, snap, ["id"]).to_pandas()["id"]
    buf = io.BytesIO()
    pd.DataFrame({"row": ids, "p": np.where(ids == 42, np.nan, 0.5)}).to_parquet(buf, index=False)
    m = reg.register(MODEL, "1", buf.getvalue(), flavor="predictions", artifact_name="p.parquet",
                     id_column="row", score_columns=["p"])
    with pytest.raises(ScoringError, match=r"toy_model@1: 1 non-finite score\(s\).*id=42"):
        score_model(toy_lake, reg, spec, snap, m)
    m2 = reg.register(MODEL, "2", buf.getvalue(), flavor="predictions", artifact_name="p.parquet",
                      id_column="row", score_columns=["probability"])
    with pytest.raises(ScoringError, match=r"toy_model@2: predictions file lacks column\(s\) \['probability'\]"):
        score_model(toy_lake, reg, spec, snap, m2)
    assert toy_lake.find("predictions") == []


def test_manifest_with_a_malformed_hash_or_not_json(tmp_path):
    lake = Lake(str(tmp_path))
    reg = Registry(lake)
    m = reg.register("m", "1", b"x", flavor="sklearn-joblib", artifact_name="model.joblib")
    lake.write_json("registry/m/1/manifest.json", {**m.model_dump(mode="json"), "sha256": "abc123"})
    with pytest.raises(RegistryError, match=r"m@1: invalid manifest .*manifest\.json: sha256: String should match"):
        reg.manifest("m", "1")
    lake.write_text("registry/m/1/manifest.json", '{"name": "m", ')
    with pytest.raises(RegistryError, match=r"m@1: .*manifest\.json is not valid JSON"):
        reg.manifest("m", "1")


@pytest.mark.parametrize("artifact", ["../../../etc/passwd", "/etc/passwd", "..", "sub/model.joblib"])
def test_manifest_artifact_escaping_the_version_folder(tmp_path, artifact):
    lake = Lake(str(tmp_path))
    reg = Registry(lake)
    m = reg.register("m", "1", b"x", flavor="sklearn-joblib", artifact_name="model.joblib")
    lake.write_json("registry/m/1/manifest.json", {**m.model_dump(mode="json"), "artifact": artifact})
    with pytest.raises(RegistryError, match=r"m@1: invalid manifest .*artifact: .*plain file name"):
        reg.manifest("m", "1")


@pytest.mark.parametrize("version", ["../../etc", "/abs", "a/b"])
def test_champion_pointer_escaping_the_registry(tmp_path, version):
    lake = Lake(str(tmp_path))
    lake.write_json("registry/m/champion.json", {"version": version})
    with pytest.raises(RegistryError, match="champion version .* is not allowed"):
        Registry(lake).champion("m")


def test_spec_unknown_column_names_file_key_and_known_columns(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(toy_spec_dict(gates=[{"metric": "roc_auc", "kind": "non_inferiority",
                                                         "margin": 0.05, "slices": ["carrier=9E", "origin"]}])))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    msg = str(err.value)
    assert str(path) in msg and "gates.0.slices (roc_auc): 'carrier=9E' names no possible slice: 'carrier'" in msg
    assert "'origin' names no possible slice" in msg and "a slice column ['b']" in msg


def test_spec_model_name_escaping_the_registry(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(toy_spec_dict(model={"name": "../../etc"})))
    with pytest.raises(SpecError, match=r"model\.name: .*no '/', '\.\.'"):
        load_spec(path)
