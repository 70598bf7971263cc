"""Spec validation: every error names the file, the key path and what was expected."""

import pytest
import yaml

from eval_pipeline.demo import packaged_spec_path
from eval_pipeline.spec import SpecError, load_spec, parse_spec

from .toy import TOY_SPEC


def _err(data) -> str:
    with pytest.raises(SpecError) as e:
        parse_spec(data, "team/spec.yaml")
    return str(e.value)


def test_packaged_specs_validate_and_hash_stably():
    for name in ("flights_delay", "flights_arr_delay"):
        spec = load_spec(packaged_spec_path(name))
        assert spec.spec_hash() == load_spec(packaged_spec_path(name)).spec_hash()


@pytest.mark.parametrize("change,expected", [
    ({"task_type": "binary"}, "task_type: Input should be 'binary_classification'"),
    ({"slices": {"columns": ["b"], "min_sise": 3}}, "slices.min_sise: unknown key"),
    ({"slices": {"crosses": [["a"]]}}, "each cross must list two or more distinct columns"),
    ({"slices": {"bins": {"a": [3, 1]}}}, "bins for 'a' must be 2+ strictly increasing edges"),
    ({"metrics": ["roc_auc", "rmse"]}, "metrics: ['rmse'] are not available for binary_classification"),
    ({"gates": [{"metric": "f1", "kind": "absolute", "min": 0.5}]},
     "gates.0.metric: gates use metrics ['f1'] that are not in 'metrics'"),
    ({"gates": [{"metric": "roc_auc", "kind": "absolute"}]}, "absolute gate on 'roc_auc' needs 'min' and/or 'max'"),
    ({"gates": [{"metric": "roc_auc", "kind": "non_inferiority", "margin": -1}]}, "gates.0.margin"),
    ({"model": {"name": "../../etc"}}, "model.name"),
    ({"evaluation": {"confidence": 1.5}}, "evaluation.confidence"),
    ({"columns": {"id": "id", "label": "y", "timestamp": "ts", "features": []}},
     "drift.columns: drift is enabled but there is no column to watch (columns.features is empty)"),
    ({"data": {}}, "data.source: required key is missing"),
    ({"task": "Bad Name"}, "task: Value error, task 'Bad Name' must be lowercase"),
])
def test_malformed_specs_name_the_key(change, expected):
    msg = _err({**TOY_SPEC, **change})
    assert msg.startswith("invalid evaluation spec team/spec.yaml:")
    assert expected in msg


# Issue 9, item 5: every check up front. (change, key path the message starts with, what it says)
NO_TS = {"id": "id", "label": "y", "features": ["a", "b"], "categorical": ["b"]}
GATE = {"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.05}
BAD_SPECS = {
    "null_fraction_above_1": ({"expectations": {"max_null_fraction": {"a": 1.5}}},
                              "expectations.max_null_fraction.a: Input should be less than or equal to 1"),
    "null_fraction_negative": ({"expectations": {"max_null_fraction": {"a": -0.1}}},
                               "expectations.max_null_fraction.a: Input should be greater than or equal to 0"),
    "drift_method_unknown": ({"drift": {"method": "kolmogorov"}}, "drift.method: Input should be 'ks'"),
    "drift_method_numeric_only_on_categorical": (
        {"drift": {"method": "ks", "columns": ["a", "b"]}},
        "drift.method: 'ks' does not apply to categorical columns ['b']"),
    "drift_threshold_zero": ({"drift": {"threshold": 0}}, "drift.threshold: Input should be greater than 0"),
    "threshold_zero": ({"model": {"name": "toy_model", "threshold": 0}},
                       "model.threshold: Input should be greater than 0"),
    "threshold_above_1": ({"model": {"name": "toy_model", "threshold": 1.2}},
                          "model.threshold: Input should be less than or equal to 1"),
    "trusted_type_not_dotted": ({"model": {"name": "toy_model", "trusted_types": ["TreePredictor"]}},
                                "model.trusted_types: Value error, expected dotted type names"),
    "gate_slice_unknown_column": ({"gates": [{**GATE, "slices": ["carrier=9E"]}]},
                                  "gates.0.slices (roc_auc): 'carrier=9E' names no possible slice: 'carrier' is not "
                                  "a slice column"),
    "gate_slice_typo_of_a_column": ({"gates": [{**GATE, "slices": "bb"}]},
                                    "gates.0.slices (roc_auc): 'bb' names no possible slice"),
    "gate_slice_cross_not_declared": ({"gates": [{**GATE, "name": "g", "slices": ["a=1 & b=x"]}]},
                                      "gates.0.slices (g): 'a=1 & b=x' names no possible slice: no cross of columns "
                                      "['a', 'b']"),
    "gate_slice_feature_not_sliced": ({"gates": [GATE, {**GATE, "slices": "a"}]},
                                      "gates.1.slices (roc_auc): 'a' names no possible slice: 'a' is not a slice "
                                      "column"),
    "gate_slice_mixed": ({"slices": {"columns": ["b"], "crosses": [["b", "a"]]},
                          "gates": [{**GATE, "slices": "b=x & a"}]},
                         "gates.0.slices (roc_auc): 'b=x & a' mixes 'column=value' and bare column names"),
    "gate_slice_cross_order": ({"slices": {"columns": ["b"], "crosses": [["b", "a"]]},
                                "gates": [{**GATE, "slices": "a=1 & b=x"}]},
                               "gates.0.slices (roc_auc): 'a=1 & b=x' names the cross's columns in another order"),
    "timestamp_for_evaluation_window": ({"columns": NO_TS, "data": {"source": "x", "evaluation_start": "2024-01-01"},
                                         "drift": {"enabled": False}},
                                        "columns.timestamp: required because data.evaluation_start/evaluation_end "
                                        "selects rows by time"),
    "timestamp_for_drift_windows": ({"columns": NO_TS},
                                    "columns.timestamp: required because drift.reference, drift.current select rows "
                                    "by time"),
    "timestamp_for_freshness": ({"columns": NO_TS, "drift": {"enabled": False},
                                 "expectations": {"freshness": {"max_age_days": 3}}},
                                "columns.timestamp: required because expectations.freshness selects rows by time"),
    "too_few_replicates": ({"evaluation": {"bootstrap_replicates": 38}},
                           "evaluation.bootstrap_replicates: 38 is too few; the minimum is 39"),
    "too_few_replicates_all_slices": ({"gates": [{**GATE, "slices": "all"}], "evaluation": {"bootstrap_replicates": 78}},
                                      "evaluation.bootstrap_replicates: 78 is too few; the minimum is 79"),
    "min_positives_negative": ({"slices": {"columns": ["b"], "min_positives": -1}},
                               "slices.min_positives: Input should be greater than or equal to 0"),
    "multiclass_without_classes": ({"task_type": "multiclass_classification", "metrics": None, "gates": []},
                                   "model.classes: required for multiclass_classification"),
    "categorical_not_a_feature_or_drift_column": ({"columns": {**TOY_SPEC["columns"], "categorical": ["zz"]}},
                                                  "columns.categorical: 'zz' is neither a feature nor a drift column"),
}


@pytest.mark.parametrize("name", list(BAD_SPECS))
def test_incomplete_checks_now_happen_up_front(name):
    change, expected = BAD_SPECS[name]
    msg = _err({**TOY_SPEC, **change})
    assert f"  - {expected}" in msg, msg


@pytest.mark.parametrize("name", list(BAD_SPECS))
def test_bad_specs_are_refused_by_the_cli_with_exit_2(name, tmp_path, capsys):
    """`eval-pipeline evaluate --spec bad.yaml` exits 2 and names the file and the key, before touching the lake."""
    from eval_pipeline import cli

    change, expected = BAD_SPECS[name]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TOY_SPEC, **change}, sort_keys=False))
    lake = tmp_path / "lake"
    capsys.readouterr()
    assert cli.main(["evaluate", "--spec", str(path), "--lake", str(lake)]) == 2
    err = capsys.readouterr().err
    assert f"invalid evaluation spec {path}:" in err and expected in err
    assert not lake.exists()


def test_all_problems_are_reported_at_once_one_per_line():
    msg = _err({**TOY_SPEC, "gates": [{**GATE, "slices": "bb"}], "columns": NO_TS})
    lines = msg.splitlines()
    assert any(l.startswith("  - columns.timestamp: required") for l in lines)
    assert any(l.startswith("  - gates.0.slices (roc_auc): 'bb'") for l in lines)


@pytest.mark.parametrize("slices", ["overall", "all", "b", "b=x", ["b=x", "b=anything at all"], "b & a",
                                    "b=x & a=[0, 1)", "b x a"])
def test_gate_slices_that_can_exist_are_accepted(slices):
    spec = parse_spec({**TOY_SPEC, "slices": {"columns": ["b"], "bins": {"a": [0, 1]}, "crosses": [["b", "a"]]},
                       "gates": [{**GATE, "slices": slices}], "evaluation": {"bootstrap_replicates": 200}})
    assert spec.gates[0].slices == slices


def test_a_binned_column_is_a_slice_column_unless_it_is_only_crossed():
    """As the engine builds slices: a binned column listed nowhere else gets its own slices; one that is crossed
    only appears inside the cross (so 'a=[0, 1)' could never exist there)."""
    ok = parse_spec({**TOY_SPEC, "slices": {"columns": ["b"], "bins": {"a": [0, 1]}},
                     "gates": [{**GATE, "slices": ["a", "a=[0, 1)"]}], "evaluation": {"bootstrap_replicates": 200}})
    assert ok.single_slice_columns() == ["b", "a"]
    msg = _err({**TOY_SPEC, "slices": {"columns": ["b"], "bins": {"a": [0, 1]}, "crosses": [["b", "a"]]},
                "gates": [{**GATE, "slices": "a=[0, 1)"}]})
    assert "gates.0.slices (roc_auc): 'a=[0, 1)' names no possible slice: 'a' is only sliced in a cross" in msg


def test_gate_rows_lower_bound_and_the_minimum_replicates():
    base = {**TOY_SPEC, "slices": {"columns": ["b"], "bins": {"a": [0, 1]}, "crosses": [["b", "a"]]}}
    # b (>= 1 value) + a (a binned column that is also crossed: no single slices) + the cross (>= 1): 'all' >= 3
    spec = parse_spec({**base, "gates": [{**GATE, "slices": "all"}, {**GATE, "slices": ["b=x", "b=y", "b=x"]},
                                         {**GATE, "slices": "b"}], "evaluation": {"bootstrap_replicates": 5000}})
    assert spec.gate_rows_lower_bound() == 3 + 2 + 1
    # 6 rows at alpha 0.025 (Holm): B + 1 >= 240
    gates = spec.model_dump(mode="json")["gates"]
    parse_spec({**base, "gates": gates, "evaluation": {"bootstrap_replicates": 239}})
    with pytest.raises(SpecError, match="bootstrap_replicates: 238 is too few; the minimum is 239"):
        parse_spec({**base, "gates": gates, "evaluation": {"bootstrap_replicates": 238}})
    # without a multiplicity correction only alpha matters; confidence 0.9 -> alpha 0.05 -> B >= 19
    parse_spec({**base, "gates": gates, "evaluation": {"bootstrap_replicates": 39, "multiplicity": "none"}})
    with pytest.raises(SpecError, match="the minimum is 19"):
        parse_spec({**base, "gates": gates, "evaluation": {"bootstrap_replicates": 18, "confidence": 0.9,
                                                            "multiplicity": "none"}})
    # no gates: nothing to decide, B = 0 is fine (metrics without intervals)
    parse_spec({**base, "gates": [], "evaluation": {"bootstrap_replicates": 0}})


def test_the_gate_rule_agrees_with_the_engine():
    from eval_pipeline.engine.gates import required_replicates

    assert required_replicates(15, 0.025) == 599
    spec = load_spec(packaged_spec_path("flights_delay"))
    assert spec.gate_rows_lower_bound() == 13  # overall x3 + origin (>= 1) + 9 named carriers
    assert spec.evaluation.bootstrap_replicates >= required_replicates(15, 0.025)  # 15 rows in fact (3 origins)


def test_slice_and_drift_columns_need_not_be_features():
    """A predictions-flavor task has no features at all; its slices and drift columns are read all the same."""
    spec = parse_spec({**TOY_SPEC, "columns": {"id": "id", "label": "y", "timestamp": "ts", "features": [],
                                               "categorical": ["b"]},
                       "slices": {"columns": ["b"], "bins": {"a": [0, 1]}},
                       "drift": {"columns": ["a", "b"], "current": {"last_days": 10}}})
    assert spec.columns.features == [] and spec.all_columns() == ["id", "y", "ts", "b", "a"]
    assert spec.drift_columns() == ["a", "b"]
    without_drift = parse_spec({**TOY_SPEC, "columns": {"id": "id", "label": "y", "timestamp": "ts", "features": ["a"]},
                                "slices": {"columns": ["b"]}, "drift": {"enabled": False}})
    assert without_drift.all_columns() == ["id", "y", "ts", "a", "b"]


def test_packaged_specs_keep_their_snapshot_columns():
    """Snapshot ids hash the column list: the packaged specs' snapshots must not change with this release."""
    cols = ["flight_id", "delayed", "time_hour", "carrier", "origin", "dest", "distance", "hour", "month",
            "day_of_week", "sched_dep_time"]
    assert load_spec(packaged_spec_path("flights_delay")).all_columns() == cols
    assert load_spec(packaged_spec_path("flights_arr_delay")).all_columns() == ["flight_id", "arr_delay"] + cols[2:]


def test_default_metrics_are_every_metric_of_the_task_type():
    from eval_pipeline.engine import METRICS
    from eval_pipeline.spec import DEFAULT_METRICS

    for task_type, names in DEFAULT_METRICS.items():
        assert sorted(names) == sorted(m for m, i in METRICS.items() if task_type in i.task_types), task_type
    assert "specificity" in parse_spec({**TOY_SPEC, "metrics": None}).metric_names()
    # the example spec lists the defaults "so you can see the names": they must be the defaults
    assert load_spec(packaged_spec_path("flights_delay")).metrics == DEFAULT_METRICS["binary_classification"]


def test_drift_methods_are_the_ones_the_drift_code_supports():
    from eval_pipeline import drift
    from eval_pipeline.spec import DRIFT_CATEGORICAL_METHODS, DRIFT_METHODS

    assert set(DRIFT_METHODS) == set(drift._STATTESTS)
    assert set(DRIFT_CATEGORICAL_METHODS) == drift._CATEGORICAL_OK


def test_example_spec_comment_on_max_values_matches_the_code():
    text = packaged_spec_path("flights_delay").read_text()
    line = next(l for l in text.splitlines() if l.strip().startswith("max_values:"))
    assert "refused" not in line and "keeps its 50 most frequent" in line


def test_min_positives_and_negatives_reach_the_engine():
    from eval_pipeline.engine import SliceConfig

    spec = parse_spec({**TOY_SPEC, "slices": {"columns": ["b"], "min_positives": 5, "min_negatives": 7}})
    cfg = SliceConfig(**spec.slices.engine_kwargs(SliceConfig))
    assert (cfg.min_size, cfg.max_values) == (100, 200) and cfg.columns == ["b"]
    if hasattr(cfg, "min_positives"):  # the engine side lands separately (eval_pipeline/engine/config.py)
        assert (cfg.min_positives, cfg.min_negatives) == (5, 7)
    assert parse_spec(TOY_SPEC).slices.min_positives == 0 == parse_spec(TOY_SPEC).slices.min_negatives


def test_not_a_mapping_and_not_yaml(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(p)
    p.write_text("task: [unclosed\n")
    with pytest.raises(SpecError, match="is not valid YAML"):
        load_spec(p)
    with pytest.raises(SpecError, match="cannot read evaluation spec"):
        load_spec(tmp_path / "missing.yaml")
