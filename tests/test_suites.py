"""Evaluation suites (eval_pipeline/suites.py) without Dagster: the per-example check against independent numpy /
scikit-learn computations, the verdict combination, the spec section's validation, and a suite that fails its own
expectations (INCONCLUSIVE, the task not blocked)."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from eval_pipeline import suites
from eval_pipeline.spec import SpecError

from .toy import TOY_SPEC, toy_spec

rng = np.random.default_rng(7)


def test_correct_rows_binary_multiclass_regression_against_numpy_and_sklearn():
    label = rng.integers(0, 2, 500)
    scores = rng.random(500)
    ok = suites.correct_rows("binary_classification", label, scores, threshold=0.3)
    assert ok.sum() == round(accuracy_score(label, (scores >= 0.3).astype(int)) * 500)
    assert np.array_equal(ok, np.where(scores >= 0.3, 1, 0) == label)
    classes = ["cat", "dog", "eel"]
    probs = rng.dirichlet([1, 1, 1], 400)
    names = rng.choice(classes, 400)
    ok = suites.correct_rows("multiclass_classification", names, probs, classes=classes)
    assert np.array_equal(ok, np.array(classes)[probs.argmax(axis=1)] == names)
    y, pred = rng.normal(size=300), rng.normal(size=300)
    ok = suites.correct_rows("regression", y, pred, tolerance=0.5)
    assert np.array_equal(ok, np.abs(pred - y) <= 0.5)


def _frames(ids, label, cand, base, size):
    whole = pd.DataFrame({"id": ids, "y": label, "candidate__score": cand, "baseline__score": base})
    return [whole.iloc[i:i + size] for i in range(0, len(whole), size)]


def test_per_example_streamed_in_batches_lists_the_failing_ids_in_order():
    spec = toy_spec()
    n = 1000
    ids = rng.permutation(np.arange(50_000, 50_000 + n))
    label = rng.integers(0, 2, n)
    cand, base = rng.random(n), rng.random(n)
    edge = type("Suite", (), {"name": "edge", "tolerance": None})()  # per_example reads these two
    block = suites.per_example(_frames(ids, label, cand, base, 137), spec, edge,
                               {"candidate": "candidate__score", "baseline": "baseline__score"})
    wrong_c = (cand >= 0.5) != (label == 1)
    wrong_b = (base >= 0.5) != (label == 1)
    c = block["models"]["candidate"]
    assert c["wrong"] == int(wrong_c.sum()) and c["rows"] == n
    assert c["failing_ids"] == ids[wrong_c][:suites.MAX_IDS].tolist() and c["failing_ids_truncated"]
    assert block["models"]["baseline"]["wrong"] == int(wrong_b.sum())
    fresh = ids[wrong_c & ~wrong_b]
    assert block["new_failures"]["count"] == fresh.size and block["new_failures"]["ids"] == fresh[:100].tolist()
    (gate,) = block["gates"]
    assert block["verdict"] == gate["outcome"] == "FAIL" and gate["gate"] == "suite:edge:every_example"
    assert gate["value"] == pytest.approx(1 - wrong_c.mean())


def test_per_example_all_right_passes_and_no_rows_is_inconclusive():
    spec = toy_spec()
    s = type("S", (), {"name": "edge", "tolerance": None})()
    label = np.array([1, 0, 1])
    block = suites.per_example(_frames([1, 2, 3], label, [0.9, 0.1, 0.5], [0.9, 0.9, 0.9], 2), spec, s,
                               {"candidate": "candidate__score", "baseline": "baseline__score"})
    assert block["verdict"] == "PASS" and block["models"]["baseline"]["failing_ids"] == [2]
    assert block["new_failures"]["count"] == 0
    assert suites.per_example([], spec, s, {"candidate": "c"})["verdict"] == "INCONCLUSIVE"


def test_worst_and_with_suites_combine_verdicts_and_counts():
    from eval_pipeline.engine.gates import worst_verdict

    assert worst_verdict("PASS", None, "INCONCLUSIVE") == "INCONCLUSIVE"
    assert worst_verdict("INCONCLUSIVE", "FAIL", "PASS") == "FAIL" and worst_verdict(None) is None
    task = {"verdict": "PASS", "gates": [{"gate": "g", "outcome": "PASS"}], "counts": {"PASS": 1}}
    blocks = [{"name": "a", "verdict": None, "gates": []},
              {"name": "b", "verdict": "INCONCLUSIVE", "gates": [{"gate": "suite:b:data", "outcome": "INCONCLUSIVE"}]}]
    out = suites.with_suites(task, blocks)
    assert out["verdict"] == "INCONCLUSIVE" and out["counts"] == {"PASS": 1, "INCONCLUSIVE": 1}
    assert [g["gate"] for g in out["gates"]] == ["g", "suite:b:data"] and out["suites"] == {"a": None,
                                                                                          "b": "INCONCLUSIVE"}
    assert suites.with_suites(task, None) is task


GOLDEN = {"name": "golden", "source": "suites/toy/golden",
          "gates": [{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.05}]}


@pytest.mark.parametrize("suites_value, message", [
    ([GOLDEN, {**GOLDEN, "source": "suites/toy/other"}], "suites.1.name: 'golden' is also suites.0"),
    ([{**GOLDEN, "gates": [{"metric": "f1", "kind": "absolute", "min": 0.5}]}], "suites.0.gates.0.metric: 'f1'"),
    ([{**GOLDEN, "source": "incoming/toy/golden"}], "suites.0.source: 'incoming/toy/golden' overlaps data.source"),
    ([{**GOLDEN, "source": "incoming"}], "suites.0.source: 'incoming' overlaps data.source"),
    ([GOLDEN, {**GOLDEN, "name": "g2", "source": "suites/toy/golden/more"}], "suites.1.source"),
    ([{"name": "edge", "source": "s/e", "per_example": True, "gates": GOLDEN["gates"]}],
     "suites.0.gates: a per_example suite has no metric gates"),
    ([{"name": "edge", "source": "s/e", "per_example": True, "tolerance": 0.1}], "suites.0.tolerance: only for a "
                                                                                 "regression per_example suite"),
    ([{**GOLDEN, "gates": [{"metric": "roc_auc", "kind": "absolute", "min": 0.5, "slices": "a"}]}],
     "suites.0.gates.0.slices"),
    ([{"name": "Bad-Name", "source": "s/e"}], "suites.0.name"),
    ([{"name": "edge", "source": "s/e", "colour": 1}], "suites.0.colour: unknown key"),
])
def test_spec_refuses_bad_suites_up_front(suites_value, message):
    with pytest.raises(SpecError) as err:
        toy_spec(suites=suites_value)
    assert message in str(err.value)


def test_regression_per_example_needs_a_tolerance_and_suite_gates_need_replicates():
    reg = {**TOY_SPEC, "task_type": "regression", "metrics": ["mae"], "gates": [],
           "suites": [{"name": "edge", "source": "s/e", "per_example": True}]}
    with pytest.raises(SpecError, match="suites.0.tolerance: required for a regression per_example suite"):
        toy_spec(**reg)
    toy_spec(**{**reg, "suites": [{"name": "edge", "source": "s/e", "per_example": True, "tolerance": 2.0}]})
    many = [{"metric": "roc_auc", "kind": "absolute", "min": 0.5, "slices": "all"}]
    with pytest.raises(SpecError, match="suites.0.gates: evaluation.bootstrap_replicates 50 cannot decide"):
        toy_spec(suites=[{**GOLDEN, "gates": many}])


def test_a_spec_without_suites_hashes_as_before_and_suites_change_the_hash():
    plain = toy_spec()
    assert "suites" not in plain.canonical_json()
    assert toy_spec(suites=[]).spec_hash() == plain.spec_hash()
    assert toy_spec(suites=[GOLDEN]).spec_hash() != plain.spec_hash()


def test_suite_spec_is_the_task_on_the_suite_folder():
    spec = toy_spec(suites=[GOLDEN, {"name": "edge", "source": "s/e", "per_example": True,
                                     "expectations": {"min_rows": 5}}])
    derived = suites.suite_spec(spec, spec.suites[1])
    assert derived.task == "toy__edge" and derived.data.source == "s/e" and derived.suites == []
    assert derived.expectations.min_rows == 5 and derived.gates == [] and not derived.drift.enabled
    assert derived.columns == spec.columns and derived.model == spec.model


def test_a_suite_failing_its_expectations_is_inconclusive_without_blocking_the_task(tmp_path):
    import skops.io as sio

    from eval_pipeline import pipeline
    from eval_pipeline.lake import Lake
    from eval_pipeline.registry import Registry

    from .toy import fit_model, land, run_steps, toy_frame

    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame(1200, seed=3)
    land(lake, frame)
    land(lake, toy_frame(30, seed=4), parts=1, source="suites/toy/small")
    reg = Registry(lake)
    model = fit_model(frame)
    for v in ("1", "2"):
        reg.register("toy_model", v, sio.dumps(model), flavor="sklearn-skops", artifact_name="model.skops")
    reg.set_champion("toy_model", "1", reason="test")
    spec = toy_spec(suites=[{"name": "small", "source": "suites/toy/small", "expectations": {"min_rows": 100},
                             "gates": GOLDEN["gates"]},
                            {"name": "empty", "source": "suites/toy/empty", "per_example": True}])
    ctx, snap, inputs, metrics, _ = run_steps(lake, spec, "2")  # the task's data quality passed (run_steps asserts)
    blocks = {b["name"]: b for b in metrics["suites"]}
    assert snap.manifest["suites"]["empty"] is None
    assert blocks["small"]["verdict"] == "INCONCLUSIVE" and blocks["small"]["rows"] == 30
    assert "data quality failed" in blocks["small"]["reason"] and "has 30 rows; expected at least 100" in \
        blocks["small"]["reason"]
    assert blocks["empty"]["verdict"] == "INCONCLUSIVE" and "no data files" in blocks["empty"]["reason"]
    result = pipeline.decide(ctx, snap, inputs)
    task_gate = {g["gate"]: g["outcome"] for g in result["gates"]}["non_inferiority:roc_auc"]
    assert task_gate == "PASS" and result["verdict"] == "INCONCLUSIVE"  # identical models: only the suites hold it


def test_the_new_data_sensor_sees_a_case_dropped_in_a_suite_folder(tmp_path):
    from assets.automation import landing_fingerprint
    from eval_pipeline.lake import Lake

    from .toy import land, toy_frame

    lake = Lake(str(tmp_path / "lake"))
    land(lake, toy_frame(100))
    spec = toy_spec(suites=[{"name": "edge", "source": "suites/toy/edge", "per_example": True}])
    before, n = landing_fingerprint(lake, spec)
    assert n == 2
    land(lake, toy_frame(5), parts=1, source="suites/toy/edge")
    after, n = landing_fingerprint(lake, spec)
    assert n == 3 and after != before
    assert landing_fingerprint(lake, toy_spec()) == (before, 2)  # a task without suites: its landing zone only


def test_a_candidate_that_raises_on_a_suites_rows_fails_it_with_the_message(tmp_path):
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from eval_pipeline.lake import Lake
    from eval_pipeline.registry import Registry

    from .toy import land, run_steps, toy_frame

    def model(frame, unknown):
        pre = ColumnTransformer([("num", StandardScaler(), ["a"]),
                                 ("cat", OneHotEncoder(handle_unknown=unknown), ["b"])])
        return make_pipeline(pre, LogisticRegression()).fit(frame[["a", "b"]], frame["y"])

    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame(1200, seed=3)
    land(lake, frame)
    land(lake, toy_frame(10, seed=4).assign(b="w"), parts=1, source="suites/toy/new_b")  # a value never trained on
    reg = Registry(lake)
    for v, unknown in (("1", "ignore"), ("2", "error")):
        reg.register("toy_model", v, sio.dumps(model(frame, unknown)), flavor="sklearn-skops",
                     artifact_name="model.skops")
    reg.set_champion("toy_model", "1", reason="test")
    spec = toy_spec(suites=[{"name": "new_b", "source": "suites/toy/new_b", "per_example": True}])
    _, _, _, metrics, report = run_steps(lake, spec, "2")
    (block,) = metrics["suites"]
    assert block["verdict"] == "FAIL" and block["status"] == "error" and "Found unknown categories" in block["error"]
    assert report["verdict"] == "FAIL"


def test_a_suite_file_missing_a_column_does_not_stop_the_task(tmp_path):
    """The refresh records why the suite cannot be used (naming file and column, relative to the lake root); the
    task is evaluated and the suite is INCONCLUSIVE with that reason."""
    import skops.io as sio

    from eval_pipeline.lake import Lake
    from eval_pipeline.registry import Registry

    from .toy import fit_model, land, run_steps, toy_frame

    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame(1200, seed=3)
    land(lake, frame)
    land(lake, toy_frame(10, seed=4).drop(columns=["a"]), parts=1, source="suites/toy/broken")
    reg = Registry(lake)
    reg.register("toy_model", "1", sio.dumps(fit_model(frame)), flavor="sklearn-skops", artifact_name="model.skops")
    spec = toy_spec(gates=[{"metric": "roc_auc", "kind": "absolute", "min": 0.6}],
                    suites=[{"name": "broken", "source": "suites/toy/broken", "per_example": True}])
    _, snap, _, metrics, report = run_steps(lake, spec, "1")  # no champion: the absolute gate decides the task
    error = snap.manifest["suites"]["broken"]["error"]
    assert "suites/toy/broken/part-0.parquet" in error and "'a'" in error and str(tmp_path) not in error
    (block,) = metrics["suites"]
    assert block["verdict"] == "INCONCLUSIVE" and error in block["reason"] and report["verdict"] == "INCONCLUSIVE"


def test_per_example_multiclass_and_regression_read_their_score_columns():
    """Multiclass: one probability column per class (the arg-max class must be the label); regression: the
    prediction within ``tolerance`` of the label. References: numpy on the same arrays."""
    edge = type("Suite", (), {"name": "edge", "tolerance": 0.25})()
    classes = ["a", "b", "c"]
    spec = toy_spec(task_type="multiclass_classification", metrics=["accuracy"], gates=[],
                    model={"name": "toy_model", "classes": classes})
    probs = rng.dirichlet([1, 1, 1], 90)
    label = rng.choice(classes, 90)
    frame = pd.DataFrame({"id": np.arange(90), "y": label} | {f"candidate__p_{c}": probs[:, k]
                                                              for k, c in enumerate(classes)})
    cols = {"candidate": [f"candidate__p_{c}" for c in classes]}
    block = suites.per_example([frame.iloc[:40], frame.iloc[40:]], spec, edge, cols)
    assert block["models"]["candidate"]["failing_ids"] == np.flatnonzero(
        np.array(classes)[probs.argmax(axis=1)] != label).tolist()
    spec = toy_spec(task_type="regression", metrics=["mae"], gates=[])
    y, pred = rng.normal(size=60), rng.normal(size=60)
    frame = pd.DataFrame({"id": np.arange(60) + 7, "y": y, "candidate__prediction": pred})
    block = suites.per_example([frame], spec, edge, {"candidate": "candidate__prediction"})
    assert block["models"]["candidate"]["failing_ids"] == (np.flatnonzero(np.abs(pred - y) > 0.25) + 7).tolist()


def test_a_fresh_sensor_cursor_does_not_take_a_new_suite_case_for_refreshed_data(tmp_path):
    from assets.automation import _landing_zone_is_snapshotted
    from eval_pipeline import pipeline
    from eval_pipeline.lake import Lake

    from .toy import land, toy_frame

    lake = Lake(str(tmp_path / "lake"))
    land(lake, toy_frame(100))
    land(lake, toy_frame(5), parts=1, source="suites/toy/edge")
    spec = toy_spec(suites=[{"name": "edge", "source": "suites/toy/edge", "per_example": True},
                            {"name": "later", "source": "suites/toy/later", "per_example": True}])
    pipeline.refresh(pipeline.TaskContext(lake, spec))
    assert _landing_zone_is_snapshotted(lake, spec)
    lake.write_parquet("suites/toy/edge/case-2.parquet", toy_frame(3, seed=9))
    assert not _landing_zone_is_snapshotted(lake, spec)
    pipeline.refresh(pipeline.TaskContext(lake, spec))
    assert _landing_zone_is_snapshotted(lake, spec)
    lake.write_parquet("suites/toy/later/first.parquet", toy_frame(3, seed=8))  # the first file of an empty suite
    assert not _landing_zone_is_snapshotted(lake, spec)
