"""Spec validation: every error names the file, the key path and what was expected."""

import pytest

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
    ({"slices": {"columns": ["nope"]}}, "slices.columns names column 'nope'"),
    ({"slices": {"crosses": [["a"]]}}, "each cross must list two or more distinct columns"),
    ({"slices": {"bins": {"a": [3, 1]}}}, "bins for 'a' must be 2+ strictly increasing edges"),
    ({"metrics": ["roc_auc", "rmse"]}, "metrics ['rmse'] are not available for binary_classification"),
    ({"gates": [{"metric": "f1", "kind": "absolute", "min": 0.5}]}, "gates use metrics ['f1'] that are not in 'metrics'"),
    ({"gates": [{"metric": "roc_auc", "kind": "absolute"}]}, "absolute gate on 'roc_auc' needs 'min' and/or 'max'"),
    ({"gates": [{"metric": "roc_auc", "kind": "non_inferiority", "margin": -1}]}, "gates.0.margin"),
    ({"model": {"name": "../../etc"}}, "model.name"),
    ({"evaluation": {"confidence": 1.5}}, "evaluation.confidence"),
    ({"columns": {"id": "id", "label": "y", "features": []}}, "columns.features"),
    ({"data": {}}, "data.source: required key is missing"),
    ({"task": "Bad Name"}, "task: Value error, task 'Bad Name' must be lowercase"),
])
def test_malformed_specs_name_the_key(change, expected):
    msg = _err({**TOY_SPEC, **change})
    assert msg.startswith("invalid evaluation spec team/spec.yaml:")
    assert expected in msg


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
