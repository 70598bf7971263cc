"""`eval-pipeline status` (alias `models`): models, versions, champion, latest verdicts and pending candidates, read
from the registry and the evidence sets; `--json` for scripts; exit 0 whatever the verdicts."""

import json
import shutil

import pytest

from eval_pipeline.cli import main, run_evaluation
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry

from .test_promotion import NON_INFERIOR, _spec, register_skops
from .toy import fit_model, land, toy_frame


def _status(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["status", *args])
    out = capsys.readouterr()
    return code, out.out


@pytest.fixture(scope="module")
def evaluated_lake(tmp_path_factory):
    """Champion v1 (good), candidate v2 (trained on flipped labels) evaluated against it: FAIL; v3 registered, never evaluated."""
    tmp = tmp_path_factory.mktemp("status")
    lake = Lake(str(tmp / "lake"))
    reg = Registry(lake)
    frame = toy_frame(2000)
    land(lake, frame)
    register_skops(reg, "1", fit_model(frame.iloc[:1500]))
    reg.set_champion("toy_model", "1", reason="initial")
    register_skops(reg, "2", fit_model(frame.iloc[:1500].assign(y=lambda f: 1 - f["y"])))  # learnt flipped labels
    spec = _spec(tmp, NON_INFERIOR)
    code, result = run_evaluation(spec, lake.root, "toy_model@2")
    assert code == 1 and result["verdict"] == "FAIL"
    register_skops(reg, "3", fit_model(frame.iloc[:1000], c=0.5))
    return lake, spec, result


def test_json_lists_champion_verdicts_and_pending(evaluated_lake, capsys):
    lake, spec, result = evaluated_lake
    snap = result["dataset"]["snapshot_id"]
    code, out = _status(capsys, "--lake", lake.root, "--spec", spec, "--json")
    assert code == 0
    status = json.loads(out)
    assert status["specs"] == ["toy"]
    (model,) = status["models"]
    assert model["name"] == "toy_model" and model["champion"] == "1" and model["champion_since"]
    assert [t["task"] for t in model["tasks"]] == ["toy"]
    assert model["tasks"][0]["newest_validated_snapshot"] == snap
    versions = {v["version"]: v for v in model["versions"]}
    assert list(versions) == ["1", "2", "3"]
    assert [versions[v]["champion"] for v in versions] == [True, False, False]
    assert all(v["state"] == "registered" and v["flavor"] == "sklearn-skops" for v in versions.values())
    # the champion and v3 have no evaluation; v2 FAILed against the champion, on the newest validated snapshot
    assert versions["1"]["latest"] == {} and versions["3"]["latest"] == {}
    latest = versions["2"]["latest"]["toy"]
    assert latest["verdict"] == "FAIL" and latest["snapshot_id"] == snap and latest["against"] == "toy_model@1"
    assert latest["current"] is True and latest["mode"] == "release"
    assert latest["failed_gates"] == ["roc_auc on overall"]
    assert latest["result"] == result["paths"]["result"] and lake.exists(latest["result"])
    assert versions["2"]["evaluations"] == 1
    # exactly v3 is pending: v2 already has its (FAIL) evaluation against the current champion, v1 is the champion
    assert [(p["version"], p["task"]) for p in model["pending"]] == [("3", "toy")]
    assert f"never evaluated against toy_model@1 on snapshot {snap}" in model["pending"][0]["why"]
    assert [v["pending"] for v in versions.values()] == [[], [], ["toy"]]


def test_text_names_them_and_models_is_an_alias(evaluated_lake, capsys):
    lake, spec, result = evaluated_lake
    snap = result["dataset"]["snapshot_id"]
    code, out = _status(capsys, "--lake", lake.root, "--spec", spec)
    assert code == 0
    assert "model toy_model: 3 version(s), champion toy_model@1" in out
    assert f"task toy: newest validated snapshot {snap}" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()[0] in "123"}
    assert rows["1"].split()[1] == "champion" and "never evaluated" in rows["1"]
    assert rows["2"].split()[1:4] == ["candidate", "toy", "FAIL"] and snap in rows["2"] and "toy_model@1" in rows["2"]
    assert "failed: roc_auc on overall" in rows["2"]
    assert rows["3"].split()[1] == "pending" and "never evaluated" in rows["3"]
    assert "pending candidates:" in out and "toy_model@3 (toy): never evaluated against toy_model@1" in out

    capsys.readouterr()
    assert main(["models", "--lake", lake.root, "--spec", spec, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["champion"] == "1"


def test_promotion_moves_pending_and_marks_stale_verdicts(evaluated_lake, capsys, tmp_path):
    """After v3 becomes champion (a copy of the lake): v2's FAIL was against v1, so it is not current; v2 is older
    than the champion and was evaluated, so it is not an open candidate (as the re-evaluation sensor sees it)."""
    lake, spec, _ = evaluated_lake
    shutil.copytree(lake.root, tmp_path / "lake")
    copy = Lake(str(tmp_path / "lake"))
    Registry(copy).set_champion("toy_model", "3", reason="test")
    code, out = _status(capsys, "--lake", copy.root, "--spec", spec, "--json")
    model = json.loads(out)["models"][0]
    assert code == 0 and model["champion"] == "3"
    v2 = model["versions"][1]
    assert v2["latest"]["toy"]["verdict"] == "FAIL" and v2["latest"]["toy"]["current"] is False
    assert [p["version"] for p in model["pending"]] == ["1"]  # the old champion was never evaluated itself
    code, out = _status(capsys, "--lake", copy.root, "--spec", spec)
    assert "FAIL*" in out and "not against the current champion" in out


def test_spec_not_loaded_still_shows_evaluations(evaluated_lake, capsys, tmp_path):
    lake, _, _ = evaluated_lake
    other = tmp_path / "specs"
    other.mkdir()  # an empty folder: no spec names toy_model
    code, out = _status(capsys, "--lake", lake.root, "--spec", str(other), "--json")
    (model,) = json.loads(out)["models"]
    assert code == 0 and model["versions"][1]["latest"]["toy"]["verdict"] == "FAIL"
    assert model["pending"] == [] and "not loaded" in model["tasks"][0]["note"]


def test_empty_lake_says_so(tmp_path, capsys):
    lake = str(tmp_path / "empty")
    code, out = _status(capsys, "--lake", lake)
    assert code == 0
    assert "no models registered in this lake yet" in out
    assert "model flights_delay (spec flights_delay): no version registered" in out
    code, out = _status(capsys, "--lake", lake, "--spec", str(tmp_path), "--json")  # no spec at all
    assert code == 0 and json.loads(out) == {"lake": lake, "specs": [], "models": []}
    code, out = _status(capsys, "--lake", lake, "--spec", str(tmp_path))
    assert "no models: nothing is registered in this lake" in out


def test_demo_ui_hint_names_the_dagster_home_the_runs_are_in(tmp_path):
    """Issue 10 item 10: without DAGSTER_HOME, `dagster dev` opens an empty instance; the hint must say which."""
    from eval_pipeline.cli import _ui_hint

    kept = _ui_hint("/x/lake", str(tmp_path / "home"))
    assert f"EVAL_LAKE_ROOT=/x/lake DAGSTER_HOME={tmp_path / 'home'} ./run ui" in kept
    assert f"DAGSTER_HOME={tmp_path / 'home'} dagster dev -w workspace.yaml" in kept
    ephemeral = _ui_hint("/x/lake", None)
    assert "ephemeral Dagster instance" in ephemeral and "--dagster-home" in ephemeral
