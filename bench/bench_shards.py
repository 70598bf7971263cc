"""Benchmark: sharded evaluation on a Dask LocalCluster vs the single-process engine, same data, same result.

Writes ``--files`` parquet files (seeded, binary: label, two models' scores, a slice column with ``--slices`` values,
``--rows`` rows in all), then evaluates all 11 binary metrics x (overall + slices) x 2 models, paired, ``--boot``
replicates:

- single : ``engine.evaluate`` streaming every file's batches in this process (its default two accumulator threads);
- dask   : ``engine.shards.evaluate_shards``, one shard per file, on a ``LocalCluster`` of ``--workers`` worker
           processes (one thread each, 127.0.0.1); the cluster's start is timed apart from the evaluation;
- local  : ``evaluate_shards`` on the in-process ``LocalBackend`` (shards one after the other).

Each result's JSON is hashed (sha256): they must be identical.

``--pipeline``: the pipeline's metrics step instead (``pipeline.compute_metrics``: snapshot parts joined with both
models' predictions files, metrics, bootstrap, gates) on the toy task of ``tests/toy.py`` with ``--rows`` rows landed
as ``--files`` files (refresh, quality and scoring run once, untimed), in process and with ``EVAL_DASK_ADDRESS`` set
to a running ``LocalCluster``; metrics.json and gates.json compared byte for byte.

Usage: ``python bench/bench_shards.py [--rows 1000000] [--files 8] [--workers 2] [--pipeline]``; the last line is
JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METRICS = ["accuracy", "precision", "recall", "f1", "specificity", "balanced_accuracy", "roc_auc",
           "average_precision", "log_loss", "brier", "ece"]


def write_files(folder: str, rows: int, files: int, slices: int, seed: int = 0) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    paths = []
    for i, idx in enumerate(np.array_split(np.arange(rows), files)):
        m = idx.size
        seg = rng.integers(0, slices, m)
        x = rng.normal(size=m)
        y = (rng.random(m) < 1 / (1 + np.exp(-1.5 * x))).astype(np.int8)
        common = rng.normal(0, 0.6, m)
        b = 1 / (1 + np.exp(-(x + common + rng.normal(0, 0.7, m))))
        c = 1 / (1 + np.exp(-(1.1 * x + common + rng.normal(0, 0.6, m))))
        path = os.path.join(folder, f"part-{i:03d}.parquet")
        pq.write_table(pa.table({"label": y, "score_baseline": b, "score_candidate": c,
                                 "segment": np.array([f"s{k:02d}" for k in range(slices)])[seg]}), path)
        paths.append(path)
    return paths


def read_file(path: str):
    """read_shard: a file's record batches (what a worker runs)."""
    import pyarrow.parquet as pq

    yield from pq.ParquetFile(path).iter_batches(batch_size=250_000)


def arguments(boot: int) -> dict:
    from eval_pipeline.engine import SliceConfig

    return dict(task_type="binary_classification", label="label",
                predictions={"baseline": "score_baseline", "candidate": "score_candidate"},
                slices=SliceConfig(columns=["segment"], min_size=100), metrics=METRICS, n_boot=boot, seed=0)


def phases(paths, backend, args):
    """evaluate_shards in its two phases, timed: (result, seconds of the map and merge)."""
    from eval_pipeline.engine.evaluate import evaluate_accumulator, make_combiner
    from eval_pipeline.engine.shards import map_merge

    kw = {k: v for k, v in args.items() if k not in ("metrics", "n_boot", "seed")}
    comb = make_combiner(**kw)
    t = time.perf_counter()
    acc = map_merge(comb, paths, read_file, backend)
    map_s = time.perf_counter() - t
    result = evaluate_accumulator(comb, acc, slices=args["slices"], metrics=args["metrics"], n_boot=args["n_boot"],
                                  seed=args["seed"])
    return result, map_s


def bench_pipeline(a):
    """compute_metrics in process vs on a Dask LocalCluster, on the toy task (see the module docstring)."""
    os.environ["EVAL_ALLOW_PICKLE"] = "1"  # the toy's models are the test suite's own joblib pickles
    os.environ.pop("EVAL_DASK_ADDRESS", None)
    from eval_pipeline import pipeline
    from eval_pipeline.dask_backend import DaskBackend
    from eval_pipeline.lake import Lake
    from eval_pipeline.registry import Registry
    from tests.toy import fit_model, land, register_joblib, toy_frame, toy_spec

    with tempfile.TemporaryDirectory() as folder:
        lake = Lake(os.path.join(folder, "lake"))
        frame = toy_frame(a.rows, seed=1)
        land(lake, frame, parts=a.files)
        reg = Registry(lake)
        register_joblib(reg, "1", fit_model(frame.iloc[:5000], c=0.05))
        register_joblib(reg, "2", fit_model(frame.iloc[:5000]))
        reg.set_champion("toy_model", "1", reason="benchmark")
        spec = toy_spec(evaluation={"bootstrap_replicates": a.boot},
                        metrics=["accuracy", "f1", "roc_auc", "average_precision", "log_loss", "brier", "ece"],
                        model={"name": "toy_model", "batch_size": 100_000})
        ctx = pipeline.TaskContext(lake, spec)
        snap = pipeline.refresh(ctx)
        assert pipeline.validate(ctx, snap).success
        inputs = pipeline.resolve_inputs(ctx, "2", snap.snapshot_id)
        pipeline.score(ctx, snap, inputs)
        folder_rel = pipeline.evaluation_dir(ctx, inputs)

        def step():
            t = time.perf_counter()
            pipeline.compute_metrics(ctx, snap, inputs)  # recomputes: result.json (the completion mark) is not written
            took = time.perf_counter() - t
            return took, b"".join(lake.read_bytes(f"{folder_rel}/{f}") for f in ("metrics.json", "gates.json"))

        step()  # warms the file cache and this process's imports, as the cold Dask run below warms the workers
        single_s, single = step()
        with DaskBackend("local", n_workers=a.workers) as backend:
            os.environ["EVAL_DASK_ADDRESS"] = backend.client.scheduler.address
            cold_s, cold = step()  # fresh workers import the package (pandas, pyarrow, scikit-learn) first
            dask_s, sharded = step()
            del os.environ["EVAL_DASK_ADDRESS"]
    load = os.getloadavg()[0]
    print(f"pipeline metrics step, toy task, {a.rows:,} rows in {a.files} landed files, {a.boot} replicates, "
          f"load average {load:.1f}")
    print(f"in process                       : {single_s:7.2f} s")
    print(f"Dask LocalCluster, {a.workers} workers     : {dask_s:7.2f} s  ({dask_s / single_s:.2f} x); first run on "
          f"fresh workers (their imports): {cold_s:.2f} s")
    print(f"metrics.json + gates.json identical: {single == sharded == cold}")
    print(json.dumps({"mode": "pipeline", "rows": a.rows, "files": a.files, "boot": a.boot, "workers": a.workers,
                      "cpus": os.cpu_count(), "load_average_1min": round(load, 2),
                      "single_seconds": round(single_s, 3), "dask_seconds": round(dask_s, 3),
                      "dask_cold_seconds": round(cold_s, 3),
                      "dask_over_single": round(dask_s / single_s, 3), "identical": single == sharded == cold,
                      "sha256": hashlib.sha256(single).hexdigest()}))


def sha(result) -> str:
    return hashlib.sha256(result.to_json().encode()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pipeline", action="store_true")
    a = ap.parse_args()
    if a.pipeline:
        return bench_pipeline(a)

    from eval_pipeline.dask_backend import DaskBackend
    from eval_pipeline.engine import evaluate
    from eval_pipeline.engine.shards import LocalBackend, evaluate_shards

    args = arguments(a.boot)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_files(folder, a.rows, a.files, a.slices)
        t = time.perf_counter()
        single = evaluate((b for p in paths for b in read_file(p)), **args)
        single_s = time.perf_counter() - t
        t = time.perf_counter()
        local = evaluate_shards(paths, read_file, LocalBackend(), **args)
        local_s = time.perf_counter() - t
        t = time.perf_counter()
        with DaskBackend("local", n_workers=a.workers) as backend:
            backend.client  # noqa: B018 (starts the cluster)
            start_s = time.perf_counter() - t
            t = time.perf_counter()
            sharded, map_s = phases(paths, backend, args)
            dask_s = time.perf_counter() - t
    load = os.getloadavg()[0]
    digests = {"single": sha(single), "local": sha(local), "dask": sha(sharded)}
    print(f"{a.rows:,} rows in {a.files} files, {a.slices} slices, {a.boot} replicates, load average {load:.1f}")
    print(f"single process (engine.evaluate)      : {single_s:7.2f} s")
    print(f"shards, LocalBackend (one by one)     : {local_s:7.2f} s  ({local_s / single_s:.2f} x single)")
    print(f"shards, Dask LocalCluster {a.workers} workers   : {dask_s:7.2f} s  ({dask_s / single_s:.2f} x single); "
          f"cluster start {start_s:.2f} s")
    print(f"   of which map + merge on the workers: {map_s:.2f} s, extract (metrics, bootstrap) here: "
          f"{dask_s - map_s:.2f} s")
    print(f"result sha256: single {digests['single'][:16]}  local {digests['local'][:16]}  dask {digests['dask'][:16]}")
    print(json.dumps({"rows": a.rows, "files": a.files, "slices": a.slices, "boot": a.boot, "workers": a.workers,
                      "cpus": os.cpu_count(), "load_average_1min": round(load, 2),
                      "single_seconds": round(single_s, 3), "local_backend_seconds": round(local_s, 3),
                      "dask_seconds": round(dask_s, 3), "dask_map_merge_seconds": round(map_s, 3),
                      "dask_extract_seconds": round(dask_s - map_s, 3), "dask_cluster_start_seconds": round(start_s, 3),
                      "dask_over_single": round(dask_s / single_s, 3),
                      "identical": len(set(digests.values())) == 1, "sha256": digests["single"]}))


if __name__ == "__main__":
    main()
