"""Sensor logging: one INFO line per decision (a run requested, a refusal, a skip whose reason changed since the last
tick); a tick that decides what the previous one decided logs nothing at INFO (details at DEBUG)."""

import logging

import dagster as dg
import pytest

from resources import LakeResource

from .test_automation import auto, lake, register, spec, validated  # noqa: F401 - fixtures and helpers

PARTS, EVALS = "auto__versions", "auto__evaluations"


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def logged_tick(sensor, instance, lake, cursor=None) -> tuple[dg.SensorResult, list[tuple[int, str]]]:
    """One sensor evaluation, with what it logged through context.log (level, message)."""
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": LakeResource(root=lake.root)})
    records = _Records()
    ctx.log.addHandler(records)
    result = sensor(ctx)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result, [(r.levelno, r.getMessage()) for r in records.records]


def info(lines):
    return [m for level, m in lines if level >= logging.INFO]


def test_new_model_sensor_says_each_decision_once(auto, lake, instance):
    validated(lake)
    register(lake, "1")
    sensor = auto["sensors"]["new_model_sensor"]
    r1, lines = logged_tick(sensor, instance, lake)
    assert len(r1.run_requests) == 1
    assert len(info(lines)) == 1 and info(lines)[0].startswith("new model version auto_model@1 ")
    # nothing new: the first quiet tick says why once, the next one says nothing at INFO
    r2, lines = logged_tick(sensor, instance, lake, r1.cursor)
    assert not r2.run_requests and info(lines) == ["skipped: no new complete versions of auto_model"]
    r3, lines = logged_tick(sensor, instance, lake, r2.cursor)
    assert not r3.run_requests and r3.skip_reason.skip_message == "no new complete versions of auto_model"
    assert info(lines) == [] and lines == [(logging.DEBUG, "skipped: no new complete versions of auto_model")]
    # a refused version is a decision: told once (ERROR), with the new skip reason; then quiet again
    register(lake, "2")
    lake.write_bytes("registry/auto_model/2/preds.parquet", b"tampered")
    r4, lines = logged_tick(sensor, instance, lake, r3.cursor)
    assert not r4.run_requests and [l for l in lines if l[0] >= logging.ERROR] and "sha256" in info(lines)[0]
    assert len(info(lines)) == 2
    r5, lines = logged_tick(sensor, instance, lake, r4.cursor)
    assert info(lines) == [] and "sha256" in r5.skip_reason.skip_message  # the tick still says why


def test_new_data_sensor_quiet_when_nothing_changed(auto, lake, instance):
    sensor = auto["sensors"]["new_data_sensor"]
    r1, lines = logged_tick(sensor, instance, lake)
    assert info(lines) == ["skipped: no data files under incoming/auto"]
    r2, lines = logged_tick(sensor, instance, lake, r1.cursor)
    assert info(lines) == [] and r2.skip_reason.skip_message == "no data files under incoming/auto"
    lake.write_bytes("incoming/auto/a.csv", b"id,y,ts,a\n1,0,2024-01-01,0.5\n")
    r3, lines = logged_tick(sensor, instance, lake, r2.cursor)
    assert len(info(lines)) == 1 and "waiting one tick" in info(lines)[0]
    r4, lines = logged_tick(sensor, instance, lake, r3.cursor)
    assert len(r4.run_requests) == 1 and info(lines) == ["1 files in incoming/auto settled: requesting a refresh"]
    r5, lines = logged_tick(sensor, instance, lake, r4.cursor)
    assert info(lines) == ["skipped: no new files (1 already refreshed)"]
    r6, lines = logged_tick(sensor, instance, lake, r5.cursor)
    assert info(lines) == [] and not r6.run_requests


def test_reevaluation_sensor_quiet_when_nothing_changed(auto, lake, instance):
    sensor = auto["sensors"]["reevaluation_sensor"]
    r1, lines = logged_tick(sensor, instance, lake)
    assert info(lines) == ["skipped: nothing to re-evaluate: task 'auto' has no snapshot yet"]
    r2, lines = logged_tick(sensor, instance, lake, r1.cursor)
    assert info(lines) == []
    validated(lake)
    register(lake, "1")
    instance.add_dynamic_partitions(PARTS, ["1"])
    r3, lines = logged_tick(sensor, instance, lake, r2.cursor)
    assert len(r3.run_requests) == 1 and len(info(lines)) == 1 and "re-evaluating candidate auto_model@1" in info(lines)[0]
    r4, lines = logged_tick(sensor, instance, lake, r3.cursor)
    assert not r4.run_requests and len(info(lines)) == 1
    r5, lines = logged_tick(sensor, instance, lake, r4.cursor)
    assert not r5.run_requests and info(lines) == []
