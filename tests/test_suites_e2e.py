"""Evaluation suites end to end THROUGH DAGSTER (issue 12, part 3), with outcomes known from the models.

Toy task (tests/toy.py, 4,000 rows): champion ``@1`` and candidate ``@2``, two logistic regressions fitted on the
two halves of the rows (about equally good). Two suites beside the landing zone:

- ``golden`` (``suites/toy/golden/``): 1,500 more toy rows, a metric suite with a non-inferiority gate on ROC AUC
  (margin 0.05): the candidate is as good as the champion there, so it PASSes.
- ``edge_cases`` (``suites/toy/edge_cases/``): a per-example suite of 20 rows built from the models themselves: 18
  rows far from both decision boundaries labelled as the candidate predicts, and ids 9001 and 9007 placed where
  the two models disagree, labelled as the champion predicts. So the candidate gets exactly 9001 and 9007 wrong
  (both new failures: the champion gets them right), and the verdict is FAIL although every metric gate PASSes.

Then one more file lands in ``edge_cases/`` (id 9100, labelled against the candidate): adding a case is dropping a
file, the refresh makes a new snapshot (a new partition) and its id is listed too.
"""
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml

import dagster as dg

from eval_pipeline.cli import run_evaluation
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.snapshot import load_snapshot

from .toy import TOY_SPEC, fit_model, land, toy_frame

MODEL, TASK = "toy_model", "toy"
SUITES = [
    {"name": "golden", "source": "suites/toy/golden",
     "gates": [{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.05}]},
    {"name": "edge_cases", "source": "suites/toy/edge_cases", "per_example": True},
]
SPEC = {**TOY_SPEC, "evaluation": {"bootstrap_replicates": 200}, "suites": SUITES}
WRONG = [9001, 9007]


def _cases(champion, candidate, ids, wrong, day="2024-02-01") -> pd.DataFrame:
    """Rows ``ids`` (b = 'z'); those in ``wrong`` sit where the models disagree (labelled as the champion predicts:
    the candidate is wrong), the others far from both boundaries (labelled as the candidate predicts)."""
    grid = np.linspace(-1.0, 1.0, 20001)
    probe = pd.DataFrame({"a": grid, "b": "z"})
    disagree = grid[(champion.predict_proba(probe)[:, 1] >= 0.5) != (candidate.predict_proba(probe)[:, 1] >= 0.5)]
    assert disagree.size >= 2, "the two models must disagree somewhere for the test to mean anything"
    far = np.resize([-3.0, 3.0, -2.5, 2.5], len(ids))
    a = np.array([float(disagree[len(disagree) // 2]) if i in wrong else far[k] for k, i in enumerate(ids)])
    rows = pd.DataFrame({"id": np.asarray(ids, dtype="int64"),
                         "ts": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(np.arange(len(ids)), unit="h"),
                         "a": a, "b": "z"})
    judge = [champion if i in wrong else candidate for i in ids]
    rows["y"] = [int(m.predict_proba(rows.iloc[[k]][["a", "b"]])[0, 1] >= 0.5) for k, m in enumerate(judge)]
    return rows[["id", "ts", "a", "b", "y"]]


def _wrong_ids(model, rows: pd.DataFrame) -> list[int]:
    """The reference: rows the model gets wrong, by sklearn's own predictions (snapshot order: by ts, then id)."""
    rows = rows.sort_values(["ts", "id"])
    pred = (model.predict_proba(rows[["a", "b"]])[:, 1] >= 0.5).astype(int)
    return rows["id"][pred != rows["y"].to_numpy()].tolist()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("suites")
    lake = Lake(str(root / "lake"))
    frame = toy_frame(4000, seed=21)
    land(lake, frame)
    champion, candidate = fit_model(frame.iloc[:2000]), fit_model(frame.iloc[2000:])
    golden = toy_frame(1500, seed=5).assign(id=lambda f: f["id"] + 100_000)
    land(lake, golden, parts=1, source="suites/toy/golden")
    cases = _cases(champion, candidate, list(range(9000, 9020)), WRONG)
    lake.write_parquet("suites/toy/edge_cases/cases.parquet", cases)
    reg = Registry(lake)
    for version, model in (("1", champion), ("2", candidate)):
        reg.register(MODEL, version, sio.dumps(model), flavor="sklearn-skops", artifact_name="model.skops")
    reg.set_champion(MODEL, "1", reason="test setup")
    spec_path = root / "toy.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    home = root / "home"
    first = run_evaluation(str(spec_path), lake.root, f"{MODEL}@2", str(home))
    incident = _cases(champion, candidate, [9100], [9100], day="2024-03-01")
    lake.write_parquet("suites/toy/edge_cases/incident-2.parquet", incident)  # adding a case is dropping a file
    second = run_evaluation(str(spec_path), lake.root, f"{MODEL}@2", str(home))
    return {"lake": lake, "home": home, "champion": champion, "candidate": candidate, "golden": golden,
            "cases": cases, "incident": incident, "first": first, "second": second}


def _blocks(result) -> dict:
    return {b["name"]: b for b in result["metrics"]["suites"]}


def test_a_failing_edge_case_fails_the_verdict_and_is_listed_by_id(evaluated):
    code, result = evaluated["first"]
    assert code == 1 and result["verdict"] == "FAIL"
    edge = _blocks(result)["edge_cases"]
    assert _wrong_ids(evaluated["candidate"], evaluated["cases"]) == WRONG  # the construction, by sklearn
    assert edge["verdict"] == "FAIL" and edge["models"]["candidate"]["failing_ids"] == WRONG
    assert edge["models"]["candidate"]["rows"] == 20 and edge["models"]["candidate"]["wrong"] == 2
    assert edge["models"]["baseline"]["failing_ids"] == _wrong_ids(evaluated["champion"], evaluated["cases"]) == []
    assert edge["new_failures"] == {"count": 2, "ids": WRONG, "truncated": False}
    outcomes = {g["gate"]: g["outcome"] for g in result["gates"]}
    assert outcomes["non_inferiority:roc_auc"] == "PASS"  # the task's own gate: the verdict comes from the suite
    assert outcomes["suite:edge_cases:every_example"] == "FAIL"
    assert {g["gate"]: g["family"] for g in result["gates"] if g["gate"].startswith("suite:")} == {
        "suite:golden:non_inferiority:roc_auc": "suite:golden", "suite:edge_cases:every_example": "suite:edge_cases"}


def test_the_golden_metric_suite_passes_with_sklearns_numbers(evaluated):
    from sklearn.metrics import roc_auc_score

    _, result = evaluated["first"]
    golden = _blocks(result)["golden"]
    assert golden["verdict"] == "PASS" and golden["rows"] == 1500
    (gate,) = golden["gates"]
    assert gate["gate"] == "suite:golden:non_inferiority:roc_auc" and gate["outcome"] == "PASS"
    g = evaluated["golden"]
    cand = roc_auc_score(g["y"], evaluated["candidate"].predict_proba(g[["a", "b"]])[:, 1])
    champ = roc_auc_score(g["y"], evaluated["champion"].predict_proba(g[["a", "b"]])[:, 1])
    assert gate["value"] == pytest.approx(cand, abs=1e-9) and gate["baseline_value"] == pytest.approx(champ, abs=1e-9)
    assert gate["delta"] == pytest.approx(cand - champ, abs=1e-9)


def test_a_dropped_case_is_a_new_partition_and_its_id_is_listed(evaluated):
    lake = evaluated["lake"]
    (_, first), (code, second) = evaluated["first"], evaluated["second"]
    assert code == 1 and second["verdict"] == "FAIL"
    assert second["dataset"]["snapshot_id"] != first["dataset"]["snapshot_id"]  # a new partition
    cases = pd.concat([evaluated["cases"], evaluated["incident"]])
    expected = _wrong_ids(evaluated["candidate"], cases)
    assert expected == WRONG + [9100]
    edge = _blocks(second)["edge_cases"]
    assert edge["models"]["candidate"]["failing_ids"] == expected and edge["models"]["candidate"]["rows"] == 21
    # the task's rows did not change: only the suite's snapshot did, and the task's snapshot records both
    old = load_snapshot(lake, TASK, first["dataset"]["snapshot_id"]).manifest
    new = load_snapshot(lake, TASK, second["dataset"]["snapshot_id"]).manifest
    assert old["parts"] == new["parts"] and old["suites"]["golden"] == new["suites"]["golden"]
    assert old["suites"]["edge_cases"] != new["suites"]["edge_cases"] == edge["snapshot_id"]


def test_report_and_dagster_show_the_suites(evaluated):
    lake = evaluated["lake"]
    _, result = evaluated["first"]
    html = lake.read_text(result["paths"]["report_html"])
    assert "<h2 id=suites>Evaluation suites</h2>" in html and "9001, 9007" in html
    md = lake.read_text(result["paths"]["report_md"])
    assert "## Evaluation suites" in md and "9001, 9007" in md
    with dg.DagsterInstance.from_config(str(evaluated["home"])) as instance:
        runs = instance.get_run_records(filters=dg.RunsFilter(
            job_name=f"{TASK}__evaluate", tags={"eval/task": TASK, "eval/version": "2"}))
        assert len(runs) == 2 and all(r.dagster_run.is_success for r in runs)  # findings, not crashed runs
        keys = {r.dagster_run.tags.get("dagster/partition") for r in runs}
        assert keys == {f"2@{evaluated['first'][1]['dataset']['snapshot_id']}",
                        f"2@{evaluated['second'][1]['dataset']['snapshot_id']}"}
        for run in runs:
            events = instance.get_records_for_run(run.dagster_run.run_id,
                                                  of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
            (check,) = [e.event_log_entry.dagster_event.event_specific_data for e in events
                        if e.event_log_entry.dagster_event.event_specific_data.check_name == "gates_pass"]
            deciding = check.metadata["deciding_gates"].value
            assert not check.passed and "suite:edge_cases:every_example" in deciding
            assert "suite:golden" not in deciding and "non_inferiority:roc_auc" not in deciding
        evaluation = instance.get_latest_materialization_event(dg.AssetKey([TASK, "evaluation"]))
        meta = evaluation.asset_materialization.metadata
        assert meta["suite/edge_cases"].value == "FAIL" and meta["suite/golden"].value == "PASS"
        assert "9001, 9007, 9100" in meta["suites"].value
        report = instance.get_latest_materialization_event(dg.AssetKey([TASK, "decision_report"]))
        assert "9001, 9007, 9100" in report.asset_materialization.metadata["report"].value
