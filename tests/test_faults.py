"""Faults: a flaky or vanishing S3 endpoint, a process killed mid-write, retries that must not double-count.

S3 faults go through ``FaultProxy`` (tests/s3_util.py), a real HTTP proxy on 127.0.0.1 in front of moto, so botocore's
standard-mode retries (``EVAL_S3_MAX_ATTEMPTS``, set small here), s3fs's own retry loop and Dagster's retry policy on
the scoring step are exercised for real. The daemon-restart fault (no lost or duplicated evaluations) is covered by
tests/test_daemon.py (a real ``dagster dev`` restart) and tests/test_s3.py::test_no_duplicate_evaluations_after_a_restart.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
from dagster._core.instance.ref import InstanceRef

from eval_pipeline import cli, pipeline, scoring
from eval_pipeline.cli import run_evaluation
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.spec import load_spec

from .fixtures.toy_expected import assert_toy_release_pass
from .s3_util import fault_proxy, lake_bytes, moto_endpoint, seed_toy, write_spec  # noqa: F401
from .toy import land, toy_frame

TASK, MODEL = "toy", "toy_model"
REPO = Path(__file__).resolve().parents[1]


def assert_whole(lake) -> None:
    """Every object in the lake is complete: parquet files open and read, JSON parses."""
    for f in lake.find(""):
        rel = f["rel"]
        if rel.endswith(".parquet"):
            lake.read_parquet(rel)
        elif rel.endswith(".json"):
            json.loads(lake.read_bytes(rel))


def _history(lake) -> list[str]:
    return [f["rel"] for f in lake.find(f"history/{TASK}/{MODEL}")]


def _events(home: Path, event_type: dg.DagsterEventType) -> list:
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        return [r for r in instance.get_event_records(dg.EventRecordsFilter(event_type=event_type))]


def test_s3_outage_mid_write_fails_the_step_then_dagster_retries_without_double_counting(fault_proxy, tmp_path,
                                                                                          monkeypatch):  # noqa: F811
    """The endpoint vanishes while the candidate's predictions are being written (longer than botocore's retry
    budget): the step fails, nothing partial is left, Dagster's retry policy re-runs the step once the endpoint is
    back, and every count is right."""
    lake = fault_proxy.lake
    seed_toy(lake)
    calls = {"score": 0, "batches": 0, "leftover": None, "failure": None}
    orig_score, orig_check = pipeline.score, scoring._check_scores

    def score(ctx, snap, version):
        calls["score"] += 1
        if calls["score"] == 2:  # Dagster's retry of the step (≥ 2 s later): what did the failed attempt leave?
            calls["leftover"] = [f["rel"] for f in lake.find(f"predictions/{TASK}/{snap.snapshot_id}")]
        try:
            return orig_score(ctx, snap, version)
        except Exception as exc:
            if calls["score"] == 1:  # the outage ends shortly after the step failed, before Dagster retries it
                calls["failure"] = f"{type(exc).__name__}: {exc}"
                threading.Timer(0.3, fault_proxy.come_back).start()
            raise

    def check(values, ids, spec, ref):
        calls["batches"] += 1
        if calls["score"] == 1 and calls["batches"] == 2:  # mid-file: two of three batches written
            fault_proxy.go_away()
        return orig_check(values, ids, spec, ref)

    monkeypatch.setattr(pipeline, "score", score)
    monkeypatch.setattr(scoring, "_check_scores", check)
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # run_evaluation sets it process-wide; undone after the test
    code, result = run_evaluation(write_spec(tmp_path / "toy.yaml"), lake.root, f"{MODEL}@2", str(home), None)
    assert calls["score"] == 2, f"the scoring step was not retried once: {calls}"
    assert "Could not connect to the endpoint URL" in calls["failure"]
    assert calls["leftover"] == [], f"the failed attempt left partial outputs: {calls['leftover']}"
    assert fault_proxy.outcomes().get("dropped", 0) >= 1
    assert_toy_release_pass(code, result)  # the retried run gives the toy's known PASS (roc_auc/overall), exit 0
    snap = result["dataset"]["snapshot_id"]
    preds = lake.read_parquet(f"predictions/{TASK}/{snap}/{MODEL}/2.parquet")
    assert len(preds) == 2000 and preds["id"].is_unique
    assert result["metrics"]["n_rows"] == 2000
    assert _history(lake) == [f"history/{TASK}/{MODEL}/2-{snap}.json"]
    retries = _events(home, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) == 1 and retries[0].event_log_entry.step_key == f"{TASK}__predictions"
    assert_whole(lake)


def test_s3_503s_are_retried_then_an_outage_fails_cleanly_and_a_rerun_does_not_double_count(
        fault_proxy, tmp_path, monkeypatch, capsys):  # noqa: F811
    """1. Every 10th S3 request is answered 503: botocore retries with backoff and the evaluation completes, whole.
    2. New data lands; the endpoint goes away for good (longer than the retry budget) while the next evaluation
       computes its metrics: the run fails with exit code 2 naming the endpoint, the previous evaluation's outputs
       are byte-identical, nothing half-written is visible.
    3. The endpoint is back: a re-run completes with exactly one history record per (version, snapshot)."""
    lake = fault_proxy.lake
    seed = seed_toy(lake)
    spec_path = write_spec(tmp_path / "toy.yaml")
    fault_proxy.fail_every(10)
    code1, first = run_evaluation(spec_path, lake.root, f"{MODEL}@2", None, None)
    injected = fault_proxy.outcomes().get("503", 0)
    fault_proxy.clear()
    assert injected >= 10, f"only {injected} faults injected: the test did not exercise retries"
    assert_toy_release_pass(code1, first)  # 503s retried: the toy's known PASS (roc_auc/overall), exit 0
    snap1 = first["dataset"]["snapshot_id"]
    assert lake.read_json(first["paths"]["result"]) == first
    assert len(lake.read_parquet(f"predictions/{TASK}/{snap1}/{MODEL}/2.parquet")) == 2000
    assert first["metrics"]["n_rows"] == 2000
    assert _history(lake) == [f"history/{TASK}/{MODEL}/2-{snap1}.json"]
    assert_whole(lake)
    before = lake_bytes(lake, "evaluations") | lake_bytes(lake, "history") | lake_bytes(lake, "registry")

    extra = toy_frame(300, seed=9).assign(id=lambda d: d["id"] + 100_000)
    lake.write_parquet("incoming/toy/part-9.parquet", extra)
    orig_metrics = pipeline.compute_metrics

    def compute_metrics(ctx, snap, version):
        fault_proxy.go_away()
        return orig_metrics(ctx, snap, version)

    monkeypatch.setattr(pipeline, "compute_metrics", compute_metrics)
    started = time.monotonic()
    code = cli.main(["evaluate", "--spec", spec_path, "--lake", lake.root, "--candidate", f"{MODEL}@2"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    fault_proxy.come_back()
    monkeypatch.setattr(pipeline, "compute_metrics", orig_metrics)

    assert code == cli.EXIT_ERROR
    assert "run failed" in err and "Could not connect to the endpoint URL" in err and fault_proxy.url in err
    after = lake_bytes(lake, "evaluations") | lake_bytes(lake, "history") | lake_bytes(lake, "registry")
    changed = {k for k in before if after.get(k) != before[k]}
    # nothing from the first evaluation changed (and there is no per-version pointer to move)
    assert not changed, changed
    new = set(after) - set(before)
    assert all(k.startswith(f"evaluations/{TASK}/{MODEL}/2/") and "result.json" not in k for k in new), new
    assert_whole(lake)
    assert elapsed < 120

    code2, second = run_evaluation(spec_path, lake.root, f"{MODEL}@2", None, None)
    snap2 = second["dataset"]["snapshot_id"]
    assert snap2 != snap1 and second["dataset"]["rows"] == len(seed["frame"]) + 300
    assert sorted(_history(lake)) == sorted([f"history/{TASK}/{MODEL}/2-{snap1}.json",
                                             f"history/{TASK}/{MODEL}/2-{snap2}.json"])
    assert lake.read_bytes(first["paths"]["result"]) == before[first["paths"]["result"]]


def test_s3_connection_drops_for_a_while_reads_and_writes_recover(fault_proxy):  # noqa: F811
    """Storage level: connections are dropped for 1.5 s while the lake is read and written; every call succeeds
    after retries and what was written is whole."""
    lake = fault_proxy.lake
    frame = toy_frame(5000)
    land(lake, frame, parts=1)
    fault_proxy.drop_for(1.5)
    for i in range(3):
        lake.write_parquet(f"tmp/copy-{i}.parquet", lake.read_parquet("incoming/toy/part-0.parquet"))
        lake.write_json(f"tmp/meta-{i}.json", {"i": i})
    assert fault_proxy.outcomes().get("dropped", 0) >= 1
    for i in range(3):
        assert lake.read_parquet(f"tmp/copy-{i}.parquet").equals(frame)
        assert lake.read_json(f"tmp/meta-{i}.json") == {"i": i}


_KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from eval_pipeline import lake as lake_mod
    target = sys.argv[4]
    orig = lake_mod.Lake.atomic_open.__wrapped__

    def slow(self, rel):
        gen = orig(self, rel)
        fh = next(gen)
        if rel.endswith(target):
            class Stall:
                def write(self, data):
                    fh.write(data[: len(data) // 2]); fh.flush()
                    print("writing", rel, flush=True)
                    time.sleep(120)
            yield Stall()
        else:
            yield fh
        try:
            next(gen)
        except StopIteration:
            pass

    import contextlib
    lake_mod.Lake.atomic_open = contextlib.contextmanager(slow)
    from eval_pipeline.cli import run_evaluation
    run_evaluation(sys.argv[1], sys.argv[2], sys.argv[3], None, None)
""")


def test_process_killed_while_writing_the_result_keeps_the_previous_one(tmp_path):
    """SIGKILL of an evaluation process in the middle of writing result.json (local lake): the previous result
    stays readable and byte-identical, the interrupted evidence set stays incomplete (no result.json), the orphaned
    temp file is invisible, and a re-run completes normally. (New data lands first: re-running the same evaluation
    is a no-op that writes nothing, so the interrupted write is a new evidence set's.)"""
    lake = Lake(str(tmp_path / "lake"))
    seed_toy(lake)
    spec_path = write_spec(tmp_path / "toy.yaml")
    code, first = run_evaluation(spec_path, lake.root, f"{MODEL}@2", None, None)
    snap = first["dataset"]["snapshot_id"]
    rel = first["paths"]["result"]
    good = lake.read_bytes(rel)
    lake.write_parquet("incoming/toy/part-9.parquet", toy_frame(300, seed=9).assign(id=lambda d: d["id"] + 100_000))
    ctx = pipeline.TaskContext(lake, load_spec(spec_path))
    reg = Registry(lake)
    inputs = pipeline.EvalInputs("2", reg.manifest(MODEL, "2").sha256, pipeline.refresh(ctx).snapshot_id, "1",
                                 reg.manifest(MODEL, "1").sha256)
    target = f"{pipeline.evaluation_dir(ctx, inputs)}/result.json"  # the new evidence set's result

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, spec_path, lake.root, f"{MODEL}@2",
                             target], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, cwd=str(tmp_path))
    try:
        line = proc.stdout.readline()
        assert line.startswith("writing"), f"the evaluation did not reach the result write: {line!r}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert lake.read_bytes(rel) == good
    folder = tmp_path / "lake" / Path(target).parent
    assert any(p.name.startswith(".tmp-") for p in folder.iterdir()), "the kill did not happen mid-write"
    assert not lake.exists(target)  # the interrupted set is not complete
    assert ".tmp-" not in json.dumps(lake.ls(str(Path(target).parent)))
    code2, again = run_evaluation(spec_path, lake.root, f"{MODEL}@2", None, None)
    assert code2 == code and lake.read_bytes(rel) == good
    assert again["paths"]["result"] == target and lake.exists(target)
    assert_whole(lake)
    assert pq.ParquetFile(str(tmp_path / "lake" / f"predictions/{TASK}/{snap}/{MODEL}/2.parquet")).metadata.num_rows == 2000
