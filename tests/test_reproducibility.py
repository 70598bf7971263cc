"""Reproducibility: the same snapshot, models and spec give byte-identical result JSON, metric and gate files.

- re-running on the same lake (cached snapshot and predictions, a persistent Dagster instance this time) rewrites
  every evaluation output with the same bytes, and the metric history keeps one record;
- rebuilding the lake from scratch at the same root (no caches at all: new snapshot, new predictions, models
  re-registered at other times) gives the same bytes again, snapshot and predictions included;
- the same inputs on S3 give the same metrics and gates, and the same result apart from the lake paths;
- the decision report states what would change the result.
"""

import shutil

import pytest

from eval_pipeline.cli import run_evaluation
from eval_pipeline.lake import Lake
from eval_pipeline.snapshot import load_snapshot

from .fixtures.toy_expected import assert_toy_release_pass
from .s3_util import FAKE_KEY_ID, FAKE_SECRET, moto_endpoint, s3_env, s3_lake, seed_toy, write_spec  # noqa: F401

TASK, MODEL = "toy", "toy_model"
OUTPUTS = ("result.json", "metrics.json", "gates.json", "report.md", "report.html")


def _outputs(lake, snap) -> dict[str, bytes]:
    [folder] = lake.ls(f"evaluations/{TASK}/{MODEL}/2/{snap}")  # the one evidence set: vs-1-<evidence id>
    out = {name: lake.read_bytes(f"{folder}/{name}") for name in OUTPUTS}
    out["history"] = lake.read_bytes(f"history/{TASK}/{MODEL}/2-{snap}.json")
    out["snapshot"] = [lake.read_bytes(p) for p in load_snapshot(lake, TASK, snap).part_paths]
    out["predictions"] = lake.read_bytes(f"predictions/{TASK}/{snap}/{MODEL}/2.parquet")
    out["baseline_predictions"] = lake.read_bytes(f"predictions/{TASK}/{snap}/{MODEL}/1.parquet")
    return out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    lake = Lake(str(root / "lake"))
    seed_toy(lake)
    spec = write_spec(root / "toy.yaml")
    code, result = run_evaluation(spec, lake.root, f"{MODEL}@2", None, None)
    assert_toy_release_pass(code, result)  # PASS on roc_auc/overall, exit 0: see tests/fixtures/toy_expected.py
    snap = result["dataset"]["snapshot_id"]
    return {"root": root, "lake": lake, "spec": spec, "result": result, "snap": snap, "outputs": _outputs(lake, snap)}


def test_rerun_on_the_same_lake_is_byte_identical(first_run, tmp_path, monkeypatch):
    lake, snap = first_run["lake"], first_run["snap"]
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))  # run_evaluation sets it process-wide
    code, again = run_evaluation(first_run["spec"], lake.root, f"{MODEL}@2", str(tmp_path / "dagster_home"), None)
    assert (code, again["verdict"]) == (0, "PASS") and again["dataset"]["snapshot_id"] == snap
    after = _outputs(lake, snap)
    assert [k for k in after if after[k] != first_run["outputs"][k]] == []
    assert len(lake.find(f"history/{TASK}/{MODEL}")) == 1


def test_rebuilding_the_lake_from_scratch_is_byte_identical(first_run):
    root, snap = first_run["root"], first_run["snap"]
    shutil.rmtree(root / "lake")
    lake = Lake(str(root / "lake"))
    seed_toy(lake)  # same data and models, registered anew (other timestamps, other promotion records)
    code, result = run_evaluation(first_run["spec"], lake.root, f"{MODEL}@2", None, None)
    assert (code, result["verdict"]) == (0, "PASS") and result["dataset"]["snapshot_id"] == snap
    after = _outputs(lake, snap)
    assert [k for k in after if after[k] != first_run["outputs"][k]] == []


def test_same_inputs_on_s3_give_the_same_result(first_run, s3_lake, tmp_path, capsys):  # noqa: F811
    seed_toy(s3_lake)
    out = tmp_path / "result.json"
    code, result = run_evaluation(write_spec(tmp_path / "toy.yaml"), s3_lake.root, f"{MODEL}@2", None, str(out))
    snap = first_run["snap"]
    assert_toy_release_pass(code, result)  # PASS on roc_auc/overall, exit 0: see tests/fixtures/toy_expected.py
    assert out.read_bytes() == s3_lake.read_bytes(result["paths"]["result"])
    printed = capsys.readouterr()
    assert f"result: {s3_lake.root}/{result['paths']['result']}" in printed.out
    assert FAKE_SECRET not in printed.out + printed.err and FAKE_KEY_ID not in printed.out + printed.err
    assert result["dataset"]["snapshot_id"] == snap
    after = _outputs(s3_lake, snap)
    for name in ("metrics.json", "gates.json", "history", "snapshot", "predictions", "baseline_predictions"):
        assert after[name] == first_run["outputs"][name], name
    local = dict(first_run["result"])
    # lake paths in the result are relative to the lake root: the whole result is the same, byte for byte
    assert result == local and out.read_bytes() == first_run["outputs"]["result.json"]


def test_the_report_states_what_would_change_the_result(first_run):
    md = first_run["outputs"]["report.md"].decode()
    html = first_run["outputs"]["report.html"].decode()
    result = first_run["result"]
    assert "What would change this result" in md and "What would change this result" in html
    rep = result["reproducibility"]
    for needle in (rep["spec_sha256"], f"seed {rep['seed']}", result["dataset"]["content_hash"][:16],
                   result["candidate"]["sha256"][:16], result["baseline"]["sha256"][:16]):
        assert needle in md, needle
    # the package versions that produced it are recorded in the result
    assert {"numpy", "pandas", "pyarrow", "scikit-learn", "dagster"} <= set(rep["packages"])
