"""Sharded evaluation on a real Dask cluster (two worker processes on 127.0.0.1, started once for the module).

The claim under test: evaluating shard by shard on other processes, merging the accumulators and bootstrapping once
gives the single-process result byte for byte (sha256 of the result JSON), for every task type, with slices, in the
spill mode (workers write into the client's spill directory; accumulators travel as file references), and through
the pipeline's steps (metrics.json and gates.json). Numbers are also checked against scikit-learn / pandas.
"""
import gc
import hashlib
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

from eval_pipeline import pipeline
from eval_pipeline.engine import SliceConfig, evaluate
from eval_pipeline.engine.errors import EngineInputError
from eval_pipeline.engine.evaluate import evaluate_accumulator, make_combiner
from eval_pipeline.engine.shards import SharedSpillStorage, evaluate_shards, map_merge
from eval_pipeline.engine.spill import DEFAULT_SPILL_ROWS, DiskStorage, SpilledRows, SpilledRun
from eval_pipeline.evaluation_shards import snapshot_shards, spill_arguments
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.scoring import predictions_path
from eval_pipeline.settings import load_settings

from .s3_util import moto_endpoint, s3_env, s3_lake  # noqa: F401
from .toy import fit_model, land, register_joblib, toy_frame, toy_spec

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def dask():
    from eval_pipeline.dask_backend import DaskBackend

    with DaskBackend("local", n_workers=2) as backend:
        info = backend.client.scheduler_info()
        assert len(info["workers"]) == 2
        assert all(a.startswith("tcp://127.0.0.1:") for a in [backend.client.scheduler.address, *info["workers"]])
        assert backend.client.dashboard_link.startswith("http://127.0.0.1:")
        yield backend


class Shards:
    """read_shard for a frame cut into row ranges; records which process read each shard (a file per shard)."""

    def __init__(self, frame, cuts, marks):
        self.frame, self.marks = frame, str(marks)
        edges = [0, *cuts, len(frame)]
        self.ranges = list(zip(edges[:-1], edges[1:]))

    def __call__(self, shard):
        lo, hi = shard
        with open(os.path.join(self.marks, f"{lo}-{os.getpid()}"), "w"):
            pass
        for start in range(lo, hi, 3001):  # uneven batches inside a shard
            yield self.frame.iloc[start:min(hi, start + 3001)]

    def processes(self):
        return {name.split("-")[1] for name in os.listdir(self.marks)}


def sha(result) -> str:
    return hashlib.sha256(result.to_json().encode()).hexdigest()


def binary_frame(n=60_000, seed=1):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    region = rng.choice(["north", "south", "east", None], n, p=[0.4, 0.3, 0.2, 0.1])
    return pd.DataFrame({
        "y": y, "region": region, "age": rng.normal(45, 15, n),
        "old": np.clip(0.25 * y + 0.75 * rng.random(n), 0, 1),
        "new": np.round(np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1), 3)})  # ties in the candidate's scores


BINARY = dict(task_type="binary_classification", label="y", predictions={"baseline": "old", "candidate": "new"},
              slices=SliceConfig(columns=["region"], bins={"age": [30, 60]}, crosses=[["region", "age"]],
                                 min_size=50),
              metrics=["accuracy", "f1", "roc_auc", "average_precision", "log_loss", "brier", "ece"],
              n_boot=200, seed=11)


def test_binary_with_slices_on_two_worker_processes_is_byte_identical(dask, tmp_path):
    frame = binary_frame()
    shards = Shards(frame, [7_000, 7_001, 25_000, 41_000], tmp_path)
    single = evaluate(frame, **BINARY)
    sharded = evaluate_shards(shards.ranges, shards, dask, **BINARY)
    assert sha(sharded) == sha(single)
    assert len(shards.processes()) == 2 and str(os.getpid()) not in shards.processes()
    overall = {s["slice"]: s for s in sharded.slices}["overall"]
    for role, col in (("baseline", "old"), ("candidate", "new")):
        m = overall["models"][role]
        assert m["roc_auc"]["value"] == pytest.approx(roc_auc_score(frame.y, frame[col]), abs=1e-12)
        assert m["log_loss"]["value"] == pytest.approx(log_loss(frame.y, frame[col]), rel=1e-12)
    south = {s["slice"]: s for s in sharded.slices}["region=south"]
    rows = frame[frame.region == "south"]
    assert south["n"] == len(rows)
    assert south["models"]["candidate"]["accuracy"]["value"] == pytest.approx(
        accuracy_score(rows.y, rows.new >= 0.5), abs=1e-12)


def test_multiclass_and_regression_are_byte_identical(dask, tmp_path):
    rng = np.random.default_rng(2)
    n = 30_000
    classes = ["a", "b", "c"]
    y = rng.choice(classes, n)
    logits = rng.normal(size=(2, n, 3)) + 1.2 * (np.array(classes) == y[:, None])
    p = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    frame = pd.DataFrame({"y": y, "seg": rng.choice(["s1", "s2"], n), "target": rng.normal(10, 3, n)})
    for r, role in enumerate(("old", "new")):
        for k, c in enumerate(classes):
            frame[f"{role}_{c}"] = p[r, :, k]
    frame["reg_old"] = frame.target + rng.normal(0, 1.0, n)
    frame["reg_new"] = frame.target + rng.standard_t(5, n) * 0.8
    mc = dict(task_type="multiclass_classification", label="y", classes=classes,
              predictions={"baseline": [f"old_{c}" for c in classes], "candidate": [f"new_{c}" for c in classes]},
              slices=SliceConfig(columns=["seg"], min_size=50),
              metrics=["accuracy", "macro_f1", "weighted_f1", "top_k_accuracy"], top_k=2, n_boot=150, seed=5)
    reg = dict(task_type="regression", label="target", predictions={"baseline": "reg_old", "candidate": "reg_new"},
               slices=SliceConfig(columns=["seg"], min_size=50), metrics=["mae", "rmse", "r2", "mean_error"],
               n_boot=150, seed=5)
    for args, cuts in ((mc, [5_000, 12_345, 29_999]), (reg, [1, 15_000])):
        marks = tmp_path / args["task_type"]
        marks.mkdir()
        shards = Shards(frame, cuts, marks)
        sharded = evaluate_shards(shards.ranges, shards, dask, **args)
        assert sha(sharded) == sha(evaluate(frame, **args)), args["task_type"]
        assert str(os.getpid()) not in shards.processes()
        overall = sharded.slices[0]["models"]["candidate"]
        if args is mc:
            pred = np.array(classes)[p[1].argmax(axis=1)]
            assert overall["accuracy"]["value"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
            assert overall["macro_f1"]["value"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
        else:
            assert overall["mae"]["value"] == pytest.approx(mean_absolute_error(frame.target, frame.reg_new),
                                                            rel=1e-12)
            assert overall["rmse"]["value"] == pytest.approx(
                mean_squared_error(frame.target, frame.reg_new) ** 0.5, rel=1e-12)


def test_ranking_with_queries_cut_across_shards_is_byte_identical(dask, tmp_path):
    """A query's documents may sit in two shards (two parts): the merge must join them before any per-query value."""
    from sklearn.metrics import ndcg_score

    from .ranking_data import make_ranking

    rng = np.random.default_rng(7)
    frame = make_ranking(400, seed=7)
    frame["b"] = np.round(frame.f1 + rng.normal(0, 1, len(frame)), 1)  # ties
    frame["c"] = frame.f1 + 0.5 * frame.f2 + rng.normal(0, 0.7, len(frame))
    cuts = [len(frame) // 3 + 2, 2 * len(frame) // 3 + 3]
    assert all(frame.qid[c - 1] == frame.qid[c] for c in cuts)  # both cuts fall inside a query
    args = dict(task_type="ranking", label="rel", query="qid", predictions={"baseline": "b", "candidate": "c"},
                slices=SliceConfig(columns=["intent"], min_size=20), metrics=["ndcg@10", "mrr", "recall@10"],
                n_boot=150, seed=3)
    shards = Shards(frame, cuts, tmp_path)
    sharded = evaluate_shards(shards.ranges, shards, dask, **args)
    assert sha(sharded) == sha(evaluate(frame, **args))
    keep = frame[frame.groupby("qid").rel.transform("max") > 0]  # no_relevant: skip
    ref = np.mean([ndcg_score([g.rel.to_numpy()], [g.c.to_numpy()], k=10) for _, g in keep.groupby("qid")])
    assert sharded.slices[0]["models"]["candidate"]["ndcg@10"]["value"] == pytest.approx(ref, abs=1e-12)


def test_spill_mode_workers_write_into_the_clients_directory(dask, tmp_path):
    """Accumulators come back as file references into the client's spill directory; a worker's garbage collection
    deletes none of it; the extract step reads them (byte-identical result) and removes the directory."""
    frame = binary_frame(40_000, seed=3)
    (tmp_path / "marks").mkdir()
    shards = Shards(frame, [9_000, 20_000, 31_000], tmp_path / "marks")
    args = {k: v for k, v in BINARY.items() if k not in ("metrics", "n_boot", "seed")}
    comb = make_combiner(**args, spill_dir=str(tmp_path / "spill"), spill_rows=4_000)
    acc = map_merge(comb, shards.ranges, shards, dask)
    own = comb.config.storage.dir
    runs = [r for by_atom in acc.store.runs.values() for lst in by_atom.values() for r in lst]
    assert runs and all(isinstance(r, SpilledRun) and r.path.startswith(own + os.sep) for r in runs)
    assert acc.store.rows and all(isinstance(p, SpilledRows) for p in acc.store.rows)
    files = {r.path for r in runs} | {p.path for p in acc.store.rows}
    dask.client.run(gc.collect)  # the workers' copies of the storage are gone: no finalizer of theirs may fire
    assert all(os.path.exists(f) for f in files)
    result = evaluate_accumulator(comb, acc, slices=BINARY["slices"], metrics=BINARY["metrics"], n_boot=200, seed=11)
    assert sha(result) == sha(evaluate(frame, **BINARY))
    assert not os.path.exists(own) and os.listdir(tmp_path / "spill") == []


def test_a_worker_without_the_spill_directory_says_it_must_be_shared(tmp_path):
    storage = pickle.loads(pickle.dumps(SharedSpillStorage(str(tmp_path / "gone"), 10)))  # as a worker gets it
    with pytest.raises(FileNotFoundError, match="EVAL_ENGINE_SPILL_DIR must be storage shared"):
        storage.new_path()


def test_a_bad_row_on_a_worker_is_named_by_its_row_in_the_whole_input(dask, tmp_path):
    frame = binary_frame(20_000)
    frame.loc[12_345, "new"] = 1.5

    class Ranges(Shards):
        def __call__(self, shard):
            return super().__call__((shard.lo, shard.hi))

    class Range:
        def __init__(self, lo, hi):
            self.lo, self.hi, self.row_offset = lo, hi, lo

    shards = Ranges(frame, [5_000, 10_000, 15_000], tmp_path)
    with pytest.raises(EngineInputError, match="12345") as err:
        evaluate_shards([Range(lo, hi) for lo, hi in shards.ranges], shards, dask, **BINARY)
    assert "new" in str(err.value)


# -- through the pipeline's steps ----------------------------------------------------------------------------------
def _evaluate_task(lake, monkeypatch, env):
    """refresh, validate, score and metrics of the toy task (3 landed files, an evaluation window), in a fresh lake.
    Returns (ctx, snap, frame, candidate model, {file: bytes} of metrics.json and gates.json)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    lake = lake if isinstance(lake, Lake) else Lake(str(lake))
    frame = toy_frame(3000, seed=4)
    land(lake, frame, parts=3)
    reg = Registry(lake)
    candidate = fit_model(frame.iloc[:800])
    register_joblib(reg, "1", fit_model(frame.iloc[:800], c=0.05))
    register_joblib(reg, "2", candidate)
    reg.set_champion("toy_model", "1", reason="test setup")
    spec = toy_spec(data={"source": "incoming/toy", "evaluation_start": START},
                    slices={"columns": ["b"], "min_size": 50}, metrics=["roc_auc", "accuracy", "log_loss"])
    ctx = pipeline.TaskContext(lake, spec)
    snap = pipeline.refresh(ctx)
    assert pipeline.validate(ctx, snap).success
    inputs = pipeline.resolve_inputs(ctx, "2", snap.snapshot_id)
    pipeline.score(ctx, snap, inputs)
    pipeline.compute_metrics(ctx, snap, inputs)
    for k in env:
        monkeypatch.delenv(k)
    folder = pipeline.evaluation_dir(ctx, inputs)
    evidence = {f: lake.read_bytes(f"{folder}/{f}") for f in ("metrics.json", "gates.json")}
    for role, manifest in zip(("candidate", "baseline"), pipeline.run_models(ctx, inputs)):
        evidence[f"predictions/{role}"] = lake.read_bytes(predictions_path(spec, snap, manifest))
    return ctx, snap, frame, candidate, evidence


START = "2024-01-23"  # the toy's rows are 30 minutes apart from 2024-01-01: the window starts at row 1056


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The toy task evaluated in this process, on a local lake: (ctx, snap, frame, candidate model, evidence)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("EVAL_DASK_ADDRESS", raising=False)
        return _evaluate_task(tmp_path_factory.mktemp("single"), mp, {})


def test_pipeline_metrics_and_gates_are_byte_identical_with_dask(dask, in_process, tmp_path, monkeypatch, caplog):
    """Scoring (one snapshot part per Dask task, the pieces copied into one file) and metrics (one accumulator per
    shard) on the workers: the predictions files, metrics.json and gates.json are the single process's bytes."""
    import json
    import logging

    ctx, snap, frame, candidate, single = in_process
    shards = snapshot_shards(ctx.lake, snap, ctx.spec)
    window = frame[frame.ts >= pd.Timestamp(START, tz="UTC")]
    # 3 landed files of 1000 rows; the first lies before the window: two shards, 944 and 1000 rows
    assert [(s.parts, s.row_offset, s.rows) for s in shards] == [((1,), 0, 944), ((2,), 944, 1000)]
    assert len(window) == 1944
    scheduler = dask.client.scheduler.address
    with caplog.at_level(logging.INFO, logger="eval_pipeline.scoring"):
        *_, sharded = _evaluate_task(tmp_path / "dask", monkeypatch, {"EVAL_DASK_ADDRESS": scheduler})
    assert "model toy_model@2 scored on 2 shards (1944 rows)" in caplog.text
    assert "model toy_model@1 scored on 2 shards (1944 rows)" in caplog.text
    assert sharded.keys() == single.keys() and sharded == single
    assert not [p for p in (tmp_path / "dask").rglob("*") if ".pieces-" in str(p)]  # no piece left behind
    spill = tmp_path / "spill"
    *_, spilled = _evaluate_task(tmp_path / "dask_spill", monkeypatch, {
        "EVAL_DASK_ADDRESS": scheduler, "EVAL_ENGINE_SPILL_ROWS": "100", "EVAL_ENGINE_SPILL_DIR": str(spill)})
    assert spilled == single and os.listdir(spill) == []
    flushed = []
    real_flush = DiskStorage.flush
    monkeypatch.setattr(DiskStorage, "flush", lambda self, store: flushed.append(1) or real_flush(self, store))
    *_, auto = _evaluate_task(tmp_path / "auto_spill", monkeypatch, {"EVAL_ENGINE_SPILL_ABOVE_ROWS": "1000"})
    assert auto == single and flushed  # 1944 rows > 1000: the engine spilled, in process
    overall = json.loads(single["metrics.json"])["slices"][0]
    assert overall["n"] == len(window)
    p = candidate.predict_proba(window[["a", "b"]])[:, 1]
    assert overall["models"]["candidate"]["roc_auc"]["value"] == pytest.approx(roc_auc_score(window.y, p), abs=1e-12)
    assert overall["models"]["candidate"]["log_loss"]["value"] == pytest.approx(log_loss(window.y, p), rel=1e-9)


def test_big_binary_evaluations_spill_unless_the_operator_chose():
    above = load_settings({"EVAL_ENGINE_SPILL_ABOVE_ROWS": "1000"})
    assert spill_arguments(above, "binary_classification", 1001, remote=False) == {"spill_rows": DEFAULT_SPILL_ROWS}
    assert spill_arguments(above, "binary_classification", 1000, remote=False) == {}
    assert spill_arguments(above, "regression", 10**9, remote=False) == {}  # only the binary family spills
    assert spill_arguments(above, "binary_classification", 1001, remote=True) == {}  # no shared directory named
    assert load_settings({}).engine_spill_above_rows == 10_000_000
    never = load_settings({"EVAL_ENGINE_SPILL_ABOVE_ROWS": "0"})
    assert spill_arguments(never, "binary_classification", 10**9, remote=False) == {}
    chosen = load_settings({"EVAL_ENGINE_SPILL_ROWS": "5000"})  # the engine reads the operator's choice itself
    assert spill_arguments(chosen, "binary_classification", 10**9, remote=False) == {}


def test_workers_read_an_s3_lake_themselves(dask, in_process, s3_lake, monkeypatch):
    """The lake travels to the workers with its root and S3 options (endpoint, retries); credentials come from the
    workers' own AWS chain (here: their environment, as a pod's role or AWS_* would in production)."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE",
             "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED")
    creds = {k: os.environ[k] for k in names}
    dask.client.run(_remember, creds)
    try:
        *_, sharded = _evaluate_task(s3_lake, monkeypatch, {"EVAL_DASK_ADDRESS": dask.client.scheduler.address})
    finally:
        dask.client.run(_forget, names)
    assert sharded == in_process[-1]


def _remember(values):  # runs on each worker (os.environ.update itself would pickle the client's environ)
    os.environ.update(values)


def _forget(names):
    for k in names:
        os.environ.pop(k, None)


def test_a_model_raising_on_a_worker_is_named_and_leaves_no_output_and_no_piece(dask, tmp_path):
    """A model that cannot score some rows fails on the worker that scores them: the step's error names the model
    (scikit-learn's own message travels back), no predictions file is written and no piece is left in the lake."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from eval_pipeline.scoring import ScoringError, score_model

    lake = Lake(str(tmp_path / "lake"))
    frame = toy_frame(3000, seed=4)
    land(lake, frame, parts=3)
    train = frame.iloc[:800][lambda f: f.b != "z"]  # never saw b == "z", and refuses unknown categories
    strict = make_pipeline(ColumnTransformer([("num", StandardScaler(), ["a"]),
                                              ("cat", OneHotEncoder(handle_unknown="error"), ["b"])]),
                           LogisticRegression()).fit(train[["a", "b"]], train.y)
    reg = Registry(lake)
    manifest = register_joblib(reg, "3", strict)
    spec = toy_spec(data={"source": "incoming/toy", "evaluation_start": START})
    snap = pipeline.refresh(pipeline.TaskContext(lake, spec))
    with pytest.raises(ScoringError, match=r"model toy_model@3 raised while scoring .*unknown categor"):
        score_model(lake, reg, spec, snap, manifest, backend=dask)
    assert not lake.exists(predictions_path(spec, snap, manifest))
    assert not [p for p in (tmp_path / "lake").rglob("*") if ".pieces-" in str(p)]
