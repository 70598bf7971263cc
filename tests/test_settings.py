"""eval_pipeline.settings: every EVAL_* variable parsed once, with one set of rules for the CLI and the daemon."""

import logging

import pytest

from eval_pipeline import cli
from eval_pipeline.settings import VARIABLES, SettingsError, load_settings

from .s3_util import write_spec


@pytest.mark.parametrize("raw,expected", [("1", True), ("true", True), ("YES", True), ("on", True), (" On ", True),
                                          ("0", False), ("false", False), ("No", False), ("off", False), ("", False)])
def test_booleans_mean_the_same_everywhere(raw, expected):
    s = load_settings({"EVAL_PROMOTE_ON_PASS": raw, "EVAL_ALLOW_PICKLE": raw}, warn=False)
    assert s.promote_on_pass is expected and s.allow_pickle is expected


def test_defaults_when_unset():
    s = load_settings({}, warn=False)
    assert (s.promote_on_pass, s.allow_pickle, s.trusted_types, s.sensor_interval_seconds, s.run_executor,
            s.s3_max_attempts, s.s3_connect_timeout, s.s3_read_timeout, s.engine_spill_rows, s.specs) == \
        (False, False, (), 10, "in_process", 8, 5.0, 30.0, None, ())


@pytest.mark.parametrize("name,raw,expected", [
    ("EVAL_PROMOTE_ON_PASS", "maybe", "a boolean: one of 1, true, yes, on (on) or 0, false, no, off (off)"),
    ("EVAL_ALLOW_PICKLE", "2", "a boolean"),
    ("EVAL_SENSOR_INTERVAL_SECONDS", "0", "an integer >= 1"),
    ("EVAL_SENSOR_INTERVAL_SECONDS", "ten", "an integer >= 1"),
    ("EVAL_SENSOR_VERIFY_MAX_MB", "-5", "a finite number > 0"),
    ("EVAL_RUN_EXECUTOR", "threads", "one of in_process, multiprocess"),
    ("EVAL_S3_MAX_ATTEMPTS", "many", "an integer >= 1"),
    ("EVAL_S3_CONNECT_TIMEOUT", "0", "a finite number > 0"),
    ("EVAL_S3_READ_TIMEOUT", "nan", "a finite number > 0"),
    ("EVAL_S3_ENDPOINT_URL", "localhost:9000", "an http:// or https:// URL"),
    ("EVAL_TRUSTED_TYPES", "sklearn.tree.X; rm -rf", "comma-separated dotted type names"),
    ("EVAL_TRUSTED_TYPES", "TreePredictor", "comma-separated dotted type names"),
    ("EVAL_ENGINE_SPILL_ROWS", "10k", "an integer >= 1"),
])
def test_invalid_values_are_errors_naming_the_variable_and_what_is_accepted(name, raw, expected):
    with pytest.raises(SettingsError) as err:
        load_settings({name: raw}, warn=False)
    msg = str(err.value)
    assert f"environment variable {name}={raw!r} is not valid; expected" in msg and expected in msg


def test_values_parse():
    s = load_settings({"EVAL_TRUSTED_TYPES": " a.B, c.d.E ,,a.B", "EVAL_SPECS": "x.yaml:specs/",
                       "EVAL_SENSOR_INTERVAL_SECONDS": "3", "EVAL_RUN_EXECUTOR": "multiprocess",
                       "EVAL_ENGINE_SPILL_ROWS": "500000", "EVAL_S3_READ_TIMEOUT": "2.5"}, warn=False)
    assert s.trusted_types == ("a.B", "c.d.E") and s.specs == ("x.yaml", "specs/")
    assert (s.sensor_interval_seconds, s.run_executor, s.engine_spill_rows, s.s3_read_timeout) == \
        (3, "multiprocess", 500000, 2.5)


def test_unknown_variables_and_pickle_are_loud_but_values_stay_out_of_logs(caplog):
    with caplog.at_level(logging.WARNING, logger="eval_pipeline.settings"):
        s = load_settings({"EVAL_ALLOW_PICKEL": "s3cr3t-value", "EVAL_ALLOW_PICKLE": "1", "EVAL_TEST_PG_PASSWORD": "pw"})
    assert s.unknown == ("EVAL_ALLOW_PICKEL",) and s.allow_pickle
    text = caplog.text
    assert "unknown environment variable(s) EVAL_ALLOW_PICKEL" in text
    assert "EVAL_ALLOW_PICKLE is on" in text and "can run code" in text
    assert "s3cr3t-value" not in text and "EVAL_TEST_PG_PASSWORD" not in text


def test_every_variable_read_by_the_code_is_known():
    """grep the sources for EVAL_* names: each must be one the settings module parses (or a test-only one)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    names = set()
    for folder in ("eval_pipeline", "resources", "assets"):
        for path in (root / folder).rglob("*.py"):
            if path.name == "settings.py":  # the module itself (its docstring names a typo as an example)
                continue
            names |= set(re.findall(r"\bEVAL_[A-Z0-9_]+\b", path.read_text()))
    assert names and names <= set(VARIABLES), sorted(names - set(VARIABLES))


def test_the_daemon_and_the_cli_build_the_same_settings(monkeypatch, tmp_path):
    """EVAL_PROMOTE_ON_PASS=on used to enable promotion in the daemon only."""
    from resources import resources_from_env

    monkeypatch.setenv("EVAL_PROMOTE_ON_PASS", "on")
    monkeypatch.setenv("EVAL_TRUSTED_TYPES", "a.B")
    daemon = resources_from_env()["settings"]
    assert daemon.promote_on_pass is True and daemon.trusted_type_list() == ["a.B"] and daemon.allow_pickle is True

    captured = {}

    def fake_build(specs, resources=None, loggers=None):
        captured.update(resources)
        raise RuntimeError("stop here")

    import eval_pipeline.definitions as definitions

    monkeypatch.setattr(definitions, "build_definitions", fake_build)
    from .s3_util import seed_toy
    from eval_pipeline.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    seed_toy(lake)
    code = cli.main(["evaluate", "--spec", write_spec(tmp_path / "toy.yaml"), "--lake", lake.root])
    assert code == 2 and captured["settings"] == daemon


def test_invalid_value_stops_the_daemon_and_the_cli(monkeypatch, tmp_path, capsys):
    from eval_pipeline.definitions import build_definitions

    monkeypatch.setenv("EVAL_PROMOTE_ON_PASS", "maybe")
    with pytest.raises(SettingsError, match="EVAL_PROMOTE_ON_PASS='maybe' is not valid"):
        build_definitions()  # what `dagster dev` loads: the code location fails with the message
    capsys.readouterr()
    code = cli.main(["evaluate", "--spec", write_spec(tmp_path / "toy.yaml"), "--lake", str(tmp_path / "lake")])
    err = capsys.readouterr().err
    assert code == 2 and "EVAL_PROMOTE_ON_PASS='maybe' is not valid; expected a boolean" in err

    monkeypatch.delenv("EVAL_PROMOTE_ON_PASS")
    monkeypatch.setenv("EVAL_RUN_EXECUTOR", "threads")
    code = cli.main(["register", "--lake", str(tmp_path / "lake"), "--name", "m", "--version", "1",
                     "--flavor", "sklearn-skops", "--artifact", str(tmp_path / "nothing.skops")])
    assert code == 2 and "EVAL_RUN_EXECUTOR='threads' is not valid; expected one of in_process, multiprocess" in \
        capsys.readouterr().err
