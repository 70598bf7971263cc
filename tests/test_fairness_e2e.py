"""Fairness end to end THROUGH DAGSTER (issue 12, part 1), with outcomes known from how the data were made.

The toy task (tests/toy.py, 4,000 rows) gets a column ``grp`` (p / q / r, drawn independently of everything: not a
model feature). Champion ``@1``: the toy logistic regression (skops). Candidates are predictions-flavor files:

- ``@2``: the champion's own scores, shifted down by 0.3 for ``grp == q`` only (a planted disparity): group q's
  selection rate drops from about 0.55 to about 0.25, so the demographic parity difference grows by about 0.3 (the
  gate allows +0.05) and the equalized odds difference ends far above its absolute bound 0.3; ROC AUC moves by a
  few points only (margin 0.2). Verdict FAIL, decided by the two fairness gates only; exit code 1.
- ``@3``: the champion's very scores: every delta is exactly 0 and the champion's disparities (groups drawn at
  random) are a few points: verdict PASS; exit code 0.

Each evaluation runs ``cli.run_evaluation`` (the task's Dagster jobs in-process on a persistent instance). Checked:
the verdict and its deciding gates in result.json and in the ``gates_pass`` check; every disparity of both roles
recomputed with fairlearn from the lake's own predictions files and snapshot rows (1e-9); the fairness section of
report.html; the disparities as metadata of the ``evaluation`` materialization. Plus the spec section's up-front
errors and the no-baseline rule.
"""

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skops.io as sio
import yaml
from fairlearn import metrics as flm

import dagster as dg

from eval_pipeline.cli import run_evaluation
from eval_pipeline.engine.fairness import FAIRNESS_METRICS
from eval_pipeline.fairness_step import fairness_gates
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.scoring import predictions_path
from eval_pipeline.snapshot import eval_rows, load_snapshot
from eval_pipeline.spec import SpecError, load_spec, parse_spec

from .toy import TOY_SPEC, fit_model, land, toy_frame

MODEL, TASK, SHIFT = "toy_model", "toy", 0.3
FAIRNESS = {"sensitive": ["grp"], "min_group_size": 200,
            "gates": [{"metric": "demographic_parity_difference", "max_increase": 0.05},
                      {"metric": "equalized_odds_difference", "max": 0.3}]}
SPEC = {**TOY_SPEC, "gates": [{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.2}],
        "evaluation": {"bootstrap_replicates": 300}, "fairness": FAIRNESS}
DP_GATE = "fairness:demographic_parity_difference:max_increase"
EO_GATE = "fairness:equalized_odds_difference:max"


def _register_scores(reg, frame, version, scores):
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": frame["id"].to_numpy(), "score": np.asarray(scores, dtype="float64")}), buf)
    reg.register(MODEL, version, buf.getvalue(), flavor="predictions", artifact_name="predictions.parquet",
                 id_column="id", score_columns=["score"])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("fairness")
    lake = Lake(str(root / "lake"))
    frame = toy_frame(4000, seed=5)
    frame["grp"] = np.random.default_rng(1).choice(["p", "q", "r"], len(frame))
    land(lake, frame)
    reg = Registry(lake)
    model = fit_model(frame.iloc[:1500])
    reg.register(MODEL, "1", sio.dumps(model), flavor="sklearn-skops", artifact_name="model.skops")
    reg.set_champion(MODEL, "1", reason="test setup")
    scores = model.predict_proba(frame[["a", "b"]])[:, 1]
    _register_scores(reg, frame, "2", np.where(frame["grp"] == "q", np.clip(scores - SHIFT, 0, 1), scores))
    _register_scores(reg, frame, "3", scores)
    spec_path = root / "toy.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    home = root / "home"
    out = {}
    for version in ("2", "3"):
        code, result = run_evaluation(str(spec_path), lake.root, f"{MODEL}@{version}", str(home))
        out[version] = (code, result)
    return {"lake": lake, "reg": reg, "spec_path": spec_path, "home": home, "runs": out}


def test_planted_disparity_fails_its_fairness_gates_and_the_unbiased_candidate_passes(evaluated):
    code, result = evaluated["runs"]["2"]
    assert code == 1 and result["verdict"] == "FAIL"
    outcomes = {g["gate"]: g["outcome"] for g in result["gates"]}
    assert outcomes == {"non_inferiority:roc_auc": "PASS", DP_GATE: "FAIL", EO_GATE: "FAIL"}
    fair_rows = [g for g in result["gates"] if g["gate"] in (DP_GATE, EO_GATE)]
    assert {g["slice"] for g in fair_rows} == {"fairness by grp"}
    dp = next(g for g in fair_rows if g["gate"] == DP_GATE)
    assert dp["delta"] > 0.2 and dp["bound"] > 0.05 and dp["rule"].startswith("lower")
    # one Holm family: the metric gate and both fairness gates
    assert result["gate_summary"]["resolution"]["k_rows"] == 3 and result["gate_summary"]["multiplicity"] == "holm"
    code, result = evaluated["runs"]["3"]
    assert code == 0 and result["verdict"] == "PASS"
    assert all(g["outcome"] == "PASS" for g in result["gates"]) and len(result["gates"]) == 3
    assert next(g for g in result["gates"] if g["gate"] == DP_GATE)["delta"] == 0.0


def _rows(evaluated, result):
    lake, reg = evaluated["lake"], evaluated["reg"]
    spec = load_spec(str(evaluated["spec_path"]))
    snap = load_snapshot(lake, TASK, result["dataset"]["snapshot_id"])
    rows = pa.Table.from_batches(list(eval_rows(lake, snap, spec, ["id", "y", "grp"]))).to_pandas()
    for role, ref in (("candidate", result["candidate"]), ("baseline", result["baseline"])):
        p = lake.read_parquet(predictions_path(spec, snap, reg.manifest(MODEL, ref["version"])))
        col = [c for c in p.columns if c != "id"][0]
        rows = rows.merge(p[["id", col]].rename(columns={col: role}), on="id")
    return rows


@pytest.mark.parametrize("version", ["2", "3"])
def test_every_disparity_equals_fairlearn_on_the_lakes_own_rows(evaluated, version):
    _, result = evaluated["runs"][version]
    block = result["metrics"]["fairness"]
    rows = _rows(evaluated, result)
    assert len(rows) == 4000 and [g["group"] for g in block["groups"]] == ["grp=p", "grp=q", "grp=r"]
    assert all(g["status"] == "ok" for g in block["groups"]) and block["n_eligible_rows"] == 4000
    values = {}
    for role in ("candidate", "baseline"):
        y_pred = (rows[role] >= 0.5).astype("int64")
        for m in FAIRNESS_METRICS:
            values[(role, m)] = getattr(flm, m)(rows["y"], y_pred, sensitive_features=rows["grp"])
            assert abs(block["disparities"]["models"][role][m]["value"] - values[(role, m)]) <= 1e-9, (role, m)
        mf = flm.MetricFrame(metrics=flm.selection_rate, y_true=rows["y"], y_pred=y_pred,
                             sensitive_features=rows["grp"])
        for g in block["groups"]:
            ref = mf.by_group[g["values"]["grp"]]
            assert abs(g["models"][role]["selection_rate"]["value"] - ref) <= 1e-9
    for m in FAIRNESS_METRICS:
        expected = values[("candidate", m)] - values[("baseline", m)]
        assert abs(block["disparities"]["delta"][m]["value"] - expected) <= 1e-9
    gate = next(g for g in result["gates"] if g["gate"] == EO_GATE)
    assert abs(gate["value"] - values[("candidate", "equalized_odds_difference")]) <= 1e-9


def test_report_has_the_fairness_section(evaluated):
    lake = evaluated["lake"]
    _, result = evaluated["runs"]["2"]
    html = lake.read_text(result["paths"]["report_html"])
    assert "<h2 id=fairness>Fairness</h2>" in html and "href='#fairness'" in html
    assert "grp=q" in html and "demographic_parity_difference" in html and DP_GATE in html
    md = lake.read_text(result["paths"]["report_md"])
    assert "## Fairness" in md and "| demographic_parity_difference |" in md


def test_dagster_records_the_fairness_metadata_and_the_deciding_fairness_gates(evaluated):
    with dg.DagsterInstance.from_config(str(evaluated["home"])) as instance:
        records = instance.fetch_materializations(dg.AssetKey([TASK, "evaluation"]), limit=10).records
        assert len(records) == 2
        for rec in records:
            mat = rec.asset_materialization
            version = mat.partition.split("@")[0]
            block = evaluated["runs"][version][1]["metrics"]["fairness"]["disparities"]
            for role in ("candidate", "baseline", "delta"):
                cell = block["delta" if role == "delta" else "models"]
                cell = cell["demographic_parity_difference"] if role == "delta" else \
                    cell[role]["demographic_parity_difference"]
                entry = mat.metadata[f"fairness/demographic_parity_difference/{role}"]
                assert isinstance(entry, dg.FloatMetadataValue) and entry.value == cell["value"]
            assert "equalized_odds_difference" in mat.metadata["fairness"].value
        report = instance.get_latest_materialization_event(dg.AssetKey([TASK, "decision_report"]))
        assert "## Fairness" in report.asset_materialization.metadata["report"].value
        (run,) = instance.get_run_records(filters=dg.RunsFilter(
            job_name=f"{TASK}__evaluate", tags={"eval/task": TASK, "eval/version": "2"}))
        events = instance.get_records_for_run(run.dagster_run.run_id,
                                              of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        (check,) = [e.event_log_entry.dagster_event.event_specific_data for e in events
                    if e.event_log_entry.dagster_event.event_specific_data.check_name == "gates_pass"]
        assert not check.passed and check.metadata["verdict"].value == "FAIL"
        assert DP_GATE in check.metadata["deciding_gates"].value and EO_GATE in check.metadata["deciding_gates"].value
        assert "non_inferiority:roc_auc" not in check.metadata["deciding_gates"].value


# -- the spec section, without Dagster ------------------------------------------------------------------------------
@pytest.mark.parametrize("section, expected", [
    ({"sensitive": ["y"]}, "fairness.sensitive: 'y' is columns.label"),
    ({"sensitive": ["grp"], "metrics": ["parity"]}, "fairness.metrics: Value error, ['parity'] are not fairness"),
    ({"sensitive": ["grp"], "gates": [{"metric": "demographic_parity_ratio", "max_increase": 0.1}]},
     "fairness.gates.0: Value error, gate on 'demographic_parity_ratio': a ratio is higher-is-better"),
    ({"sensitive": ["grp"], "gates": [{"metric": "equalized_odds_difference", "max": 0.1, "min": 0.0}]},
     "give exactly one of max_increase"),
    ({"sensitive": ["grp"], "metrics": ["demographic_parity_ratio"],
      "gates": [{"metric": "equalized_odds_difference", "max": 0.1}]},
     "fairness.gates.0.metric: 'equalized_odds_difference' is not in fairness.metrics"),
    ({"sensitive": ["grp"], "groups": 3}, "fairness.groups: unknown key"),
])
def test_spec_errors_name_the_key(section, expected):
    with pytest.raises(SpecError) as err:
        parse_spec({**SPEC, "fairness": section}, "toy spec")
    assert expected in str(err.value)


def test_spec_refuses_non_binary_tasks_and_counts_fairness_gates_for_resolution():
    with pytest.raises(SpecError, match="fairness: needs task_type binary_classification"):
        parse_spec({**SPEC, "task_type": "regression", "metrics": ["mae"], "gates": []}, "toy spec")
    with pytest.raises(SpecError, match=r"bootstrap_replicates: 100 is too few; the minimum is 119"):
        parse_spec({**SPEC, "evaluation": {"bootstrap_replicates": 100}}, "toy spec")  # 3 rows / 0.025 - 1
    spec = parse_spec(SPEC, "toy spec")
    assert "grp" in spec.all_columns()
    # without the section the hash is what it was before the section existed
    plain = {k: v for k, v in SPEC.items() if k != "fairness"}
    assert '"fairness"' not in parse_spec(plain, "toy spec").canonical_json()


def test_without_a_baseline_only_absolute_fairness_gates_apply():
    spec = parse_spec(SPEC, "toy spec")
    assert [(g.kind, g.max) for g in fairness_gates(spec, paired=False)] == [("absolute", 0.3)]
    paired = fairness_gates(spec, paired=True)
    assert [(g.kind, g.margin, g.slices) for g in paired] == [("non_inferiority", 0.05, ["fairness by grp"]),
                                                             ("absolute", None, ["fairness by grp"])]


def test_no_champion_a_fairness_bound_alone_decides(tmp_path):
    """No champion and no metric gate: the absolute fairness gate is what there is to decide on (in-process steps).
    The planted candidate's equalized odds difference is far above 0.3: FAIL on that gate alone."""
    from eval_pipeline import pipeline

    from .toy import run_steps

    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame(4000, seed=5)
    frame["grp"] = np.random.default_rng(1).choice(["p", "q", "r"], len(frame))
    land(lake, frame)
    reg = Registry(lake)
    scores = fit_model(frame.iloc[:1500]).predict_proba(frame[["a", "b"]])[:, 1]
    _register_scores(reg, frame, "2", np.where(frame["grp"] == "q", np.clip(scores - SHIFT, 0, 1), scores))
    spec = parse_spec({**SPEC, "gates": [], "fairness": {**FAIRNESS, "gates": [FAIRNESS["gates"][1]]}}, "toy spec")
    assert pipeline.has_absolute_gates(spec)
    ctx, snap, inputs, metrics, _ = run_steps(lake, spec, "2")
    assert inputs.baseline is None and metrics["fairness"]["disparities"]["delta"] == {}  # nothing to pair with
    assert metrics["fairness"]["roles"] == ["candidate"] and metrics["fairness"]["baseline"] is None
    gates = lake.read_json(f"{pipeline.evaluation_dir(ctx, inputs)}/gates.json")
    assert gates["verdict"] == "FAIL" and [(g["gate"], g["outcome"]) for g in gates["gates"]] == [(EO_GATE, "FAIL")]


def test_a_sensitive_column_missing_from_the_data_is_named_at_refresh(tmp_path):
    from eval_pipeline import pipeline
    from eval_pipeline.snapshot import DataError

    lake = Lake(str(tmp_path / "lake"))
    land(lake, toy_frame(500))
    spec = parse_spec({**SPEC, "fairness": {"sensitive": ["gender"]}}, "toy spec")
    with pytest.raises(DataError, match=r"part-0.parquet: missing column\(s\) \['gender'\] required by spec 'toy'"):
        pipeline.refresh(pipeline.TaskContext(lake, spec))
