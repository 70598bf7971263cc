"""Benchmark: the whole evaluation pipeline, stage by stage, on N rows of landed parquet (default 10^7).

What it does, in a temp lake (``--lake`` to choose the folder, ``--keep`` to keep it):

1. generate: N rows (seeded) in landed parquet files of ``--file-rows`` rows each (timestamp, id, label, three
   numeric and one categorical feature, two slice columns), written chunk by chunk (never a whole file in memory);
   alongside, a predictions-flavor baseline and candidate (``id``, ``score``, rows permuted inside each chunk so the
   file's order is not the snapshot's), written straight into the documented registry layout
   (``registry/<model>/<version>/predictions.parquet``, then ``manifest.json`` last with the sha256, hashed in
   chunks); the baseline is named champion through the registry API;
2. the pipeline's own step functions (eval_pipeline.pipeline, the sequence of tests/toy.py ``run_steps``), EACH IN
   ITS OWN SUBPROCESS so the peak RSS (ru_maxrss) is the stage's: refresh, validate, drift, score (both models),
   metrics (B = ``--boot`` bootstrap replicates, gates applied), report (error analysis, prediction drift, curves,
   HTML), decide (result.json);
3. ``--dask``: the metrics stage again on a 2-worker ``distributed.LocalCluster`` on 127.0.0.1 (EVAL_DASK_ADDRESS),
   with each worker's peak RSS (its own ru_maxrss); metrics.json / gates.json must be byte-identical to the
   single-process run's;
4. the reference, same data, same run: pandas reads the landed files and both predictions files whole, joins them
   on id, scikit-learn's roc_auc_score for both models (skipped above ``--reference-max-rows``); its AUCs are checked
   against metrics.json's.

Per stage: wall seconds, rows/s (dataset rows / wall), peak RSS MB and RSS bytes per row (an upper bound: it
includes the interpreter and imports). ``--extrapolate-from FILE`` (the JSON line of a smaller run, same machine)
adds the marginal bytes/row per stage and the RSS projected linearly to 10^8 rows. Compare runs with the same
``--file-rows`` (refresh works file by file) and read the projection as an upper bound for stages whose memory is
set by a block size rather than the rows (scoring's join buckets, the engine's spill runs, validation's uniqueness
partitions): their blocks grow until they reach their size, then stay flat. ``--check``: a CI-sized run (200,000
rows, B = 200) that exits non-zero when a stage fails, a check fails (reference AUCs, dask identity) or a stage
exceeds ``--rss-limit-mb``.

Usage::

    python bench/bench_pipeline.py                       # 10^7 rows, single process
    python bench/bench_pipeline.py --rows 1000000 --dask
    python bench/bench_pipeline.py --rows 100000000 --reference-max-rows 0   # the big run
    python bench/bench_pipeline.py --check

The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK, MODEL = "bench", "bench_model"
CHUNK = 500_000
STAGES = ("refresh", "validate", "drift", "score", "metrics", "report", "decide")
START = np.datetime64("2025-01-01T00:00:00", "us")


def spec_dict(rows: int, boot: int) -> dict:
    """The benchmark's spec: 2 slice columns (4 + 10 values), 11 metrics, gates, expectations, drift windows."""
    # rows are spread over 120 days: reference = the first 60, current = the last 30
    return {
        "task": TASK, "task_type": "binary_classification",
        "data": {"source": "incoming/bench", "format": "parquet"},
        "columns": {"id": "id", "label": "y", "timestamp": "ts", "features": ["x1", "x2", "x3", "channel"],
                    "categorical": ["channel"]},
        "model": {"name": MODEL, "threshold": 0.5, "batch_size": 250_000},
        "slices": {"columns": ["region", "segment"], "min_size": 1000},
        "metrics": ["roc_auc", "average_precision", "accuracy", "precision", "recall", "f1", "specificity",
                    "balanced_accuracy", "log_loss", "brier", "ece"],
        "gates": [{"name": "auc_overall", "metric": "roc_auc", "kind": "non_inferiority", "margin": 0.01,
                   "slices": "overall"},
                  {"name": "auc_per_region", "metric": "roc_auc", "kind": "non_inferiority", "margin": 0.02,
                   "slices": "region"},
                  {"name": "auc_floor", "metric": "roc_auc", "kind": "absolute", "min": 0.6, "slices": "overall"}],
        "evaluation": {"bootstrap_replicates": boot, "seed": 0, "multiplicity": "holm"},
        "drift": {"enabled": True, "columns": ["x1", "x2", "x3", "channel"],
                  "reference": {"start": "2025-01-01", "end": "2025-03-02"}, "current": {"last_days": 30}},
        "expectations": {"min_rows": 1000, "not_null": ["id", "ts", "y", "x1", "channel", "region", "segment"],
                         "unique": ["id"], "ranges": {"x2": {"min": -20, "max": 20}},
                         "allowed_values": {"region": ["north", "south", "east", "west"]},
                         "dtypes": {"id": "integer", "ts": "datetime", "channel": "string"},
                         "label_values": [0, 1]},
    }


# -- generation (its own subprocess) ---------------------------------------------------------------------------------
def _chunk(rng, start: int, m: int, rows: int):
    """One chunk of rows and both models' scores (the candidate is a little better, and much better in one region)."""
    import pyarrow as pa

    ids = np.arange(start, start + m, dtype=np.int64)
    ts = START + (ids * (120 * 86_400_000_000 // max(rows, 1))).astype("timedelta64[us]")
    region = rng.integers(0, 4, m)
    segment = rng.integers(0, 10, m)
    x1, x2, x3 = rng.normal(size=m), rng.normal(size=m), rng.normal(size=m)
    logit = 1.2 * x1 - 0.8 * x2 + 0.3 * x3 + 0.1 * segment - 0.5
    y = (rng.random(m) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    common = rng.normal(0, 0.8, m)
    base = 1 / (1 + np.exp(-(logit + common + rng.normal(0, 0.9, m))))
    cand = 1 / (1 + np.exp(-(logit + common + rng.normal(0, 0.7 + 0.6 * (region == 3), m))))
    names = lambda vals, k: pa.DictionaryArray.from_arrays(pa.array(k.astype(np.int32)), pa.array(vals))  # noqa: E731
    data = pa.table({"ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "id": ids, "y": y, "x1": x1, "x2": x2,
                     "x3": x3, "channel": names(["web", "app", "store"], rng.integers(0, 3, m)),
                     "region": names(["north", "south", "east", "west"], region),
                     "segment": names([f"s{i}" for i in range(10)], segment)})
    perm = rng.permutation(m)  # the predictions files list the rows in another order than the snapshot
    return data, {"1": pa.table({"id": ids[perm], "score": base[perm]}),
                  "2": pa.table({"id": ids[perm], "score": cand[perm]})}


def generate(lake_root: str, rows: int, file_rows: int, boot: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    sys.path.insert(0, ROOT)
    from eval_pipeline.lake import Lake
    from eval_pipeline.registry import ModelManifest, Registry

    lake = Lake(lake_root)
    reg = Registry(lake)
    rng = np.random.default_rng(0)
    pred_paths, pred_writers = {}, {}
    for version in ("1", "2"):
        rel = f"{reg.version_dir(MODEL, version)}/predictions.parquet"
        pred_paths[version] = lake.path(rel)
        os.makedirs(os.path.dirname(pred_paths[version]), exist_ok=True)
        pred_writers[version] = pq.ParquetWriter(pred_paths[version], pa.schema([("id", pa.int64()),
                                                                               ("score", pa.float64())]))
    files = 0
    for f0 in range(0, rows, file_rows):
        path = lake.path(f"incoming/bench/part-{files:04d}.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        writer = None
        for c0 in range(f0, min(rows, f0 + file_rows), CHUNK):
            data, preds = _chunk(rng, c0, min(CHUNK, rows - c0, f0 + file_rows - c0), rows)
            writer = writer or pq.ParquetWriter(path, data.schema, compression="zstd")
            writer.write_table(data)
            for v, t in preds.items():
                pred_writers[v].write_table(t)
        writer.close()
        files += 1
    for version, w in pred_writers.items():
        w.close()
        digest = hashlib.sha256()
        with open(pred_paths[version], "rb") as fh:
            while chunk := fh.read(8 << 20):
                digest.update(chunk)
        manifest = ModelManifest(name=MODEL, version=version, flavor="predictions", artifact="predictions.parquet",
                                 sha256=digest.hexdigest(), created_at="2025-05-01T00:00:00Z", id_column="id",
                                 score_columns=["score"], description="bench_pipeline.py synthetic scores")
        lake.write_json(reg.manifest_path(MODEL, version), manifest.model_dump(mode="json"))  # written last
    reg.set_champion(MODEL, "1", reason="bench baseline")
    spec_path = os.path.join(lake_root, "bench_spec.yaml")
    with open(spec_path, "w") as fh:
        yaml.safe_dump(spec_dict(rows, boot), fh, sort_keys=False)
    return {"files": files, "spec": spec_path,
            "landed_mb": round(sum(f["size"] for f in lake.find("incoming/bench")) / 1e6, 1),
            "predictions_mb": round(os.path.getsize(pred_paths["1"]) / 1e6, 1)}


# -- one stage (its own subprocess) ----------------------------------------------------------------------------------
def run_stage(stage: str, lake_root: str, spec_path: str) -> dict:
    sys.path.insert(0, ROOT)
    from eval_pipeline import pipeline
    from eval_pipeline.lake import Lake
    from eval_pipeline.snapshot import load_snapshot
    from eval_pipeline.spec import load_spec

    ctx = pipeline.TaskContext(Lake(lake_root), load_spec(spec_path))
    out: dict = {}
    if stage == "refresh":
        snap = pipeline.refresh(ctx)
        return {"snapshot_id": snap.snapshot_id, "rows": snap.manifest["rows"]}
    snap = load_snapshot(ctx.lake, TASK)
    if stage == "validate":
        res = pipeline.validate(ctx, snap)
        return {"success": bool(res.success)}
    if stage == "drift":
        res = pipeline.drift(ctx, snap)
        d = res.to_dict()
        return {"dataset_drift": d.get("dataset_drift"), "drifted_columns": d.get("number_of_drifted_columns")}
    inputs = pipeline.resolve_inputs(ctx, "2", snap.snapshot_id)
    if stage == "score":
        res = pipeline.score(ctx, snap, inputs)
        return {role: {"rows": r["rows"], "cached": r["cached"]} for role, r in res.items()}
    if stage == "metrics":
        pipeline.compute_metrics(ctx, snap, inputs)
        folder = pipeline.evaluation_dir(ctx, inputs)
        for name in ("metrics.json", "gates.json"):
            out[name] = hashlib.sha256(ctx.lake.read_bytes(f"{folder}/{name}")).hexdigest()
        metrics = ctx.lake.read_json(f"{folder}/metrics.json")
        overall = next(s for s in metrics["slices"] if s["slice"] == "overall")
        out["roc_auc"] = {r: v["roc_auc"]["value"] for r, v in overall["models"].items()}
        out["verdict"] = ctx.lake.read_json(f"{folder}/gates.json")["verdict"]
        out["workers"] = _dask_worker_rss()
        return out
    if stage == "report":
        res = pipeline.write_report(ctx, snap, inputs)
        return {"verdict": res["verdict"]}
    if stage == "decide":
        return {"verdict": pipeline.decide(ctx, snap, inputs)["verdict"]}
    raise SystemExit(f"unknown stage {stage}")


def _dask_worker_rss() -> dict | None:
    """Each worker's own peak RSS (MB), when the stage ran on a Dask cluster (EVAL_DASK_ADDRESS)."""
    address = os.environ.get("EVAL_DASK_ADDRESS")
    if not address or address == "local":
        return None
    from distributed import Client

    with Client(address, timeout=30) as client:
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    return {w: round(v, 1) for w, v in sorted(peaks.items())}


def reference(lake_root: str) -> dict:
    """pandas + scikit-learn on the same data: read everything whole, join on id, roc_auc_score per model."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    data = pd.read_parquet(os.path.join(lake_root, "incoming/bench"), columns=["id", "y", "region", "segment"])
    out = {"rows": len(data)}
    for role, version in (("baseline", "1"), ("candidate", "2")):
        preds = pd.read_parquet(os.path.join(lake_root, f"registry/{MODEL}/{version}/predictions.parquet"))
        joined = data.merge(preds, on="id", how="left", validate="one_to_one")
        out[role] = float(roc_auc_score(joined["y"], joined["score"]))
        del joined, preds
    return out


# -- the driver ------------------------------------------------------------------------------------------------------
def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def spawn(args, what: str, env: dict | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", what, "--lake", args.lake, "--rows", str(args.rows),
           "--file-rows", str(args.file_rows), "--boot", str(args.boot)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        return {"stage": what, "failed": True, "error": (proc.stderr.strip().splitlines() or ["?"])[-1],
                "process_seconds": round(wall, 2)}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_seconds"] = round(wall, 2)
    return res


def child(args) -> None:
    t0 = time.perf_counter()
    if args.child == "generate":
        detail = generate(args.lake, args.rows, args.file_rows, args.boot)
    elif args.child == "reference":
        detail = reference(args.lake)
    else:
        detail = run_stage(args.child, args.lake, os.path.join(args.lake, "bench_spec.yaml"))
    print(json.dumps({"stage": args.child, "seconds": round(time.perf_counter() - t0, 3),
                      "rss_mb": round(_maxrss_mb(), 1), "detail": detail}, default=str))


def _line(r: dict, rows: int) -> str:
    if r.get("failed"):
        return f"{r['stage']:>10}: FAILED ({r['error'][:200]})"
    rate = rows / r["seconds"] if r["seconds"] else float("inf")
    return (f"{r['stage']:>10}: {r['seconds']:8.2f} s  {rate:12,.0f} rows/s  peak RSS {r['rss_mb']:7.0f} MB  "
            f"({r['rss_mb'] * 2**20 / rows:7.1f} B/row)  {json.dumps(r.get('detail'), default=str)[:160]}")


def start_cluster():
    """A 2-worker LocalCluster (processes, one thread each) on 127.0.0.1; returns (cluster, client)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0")
    return cluster, Client(cluster)


def summarise(args, results: dict, ref: dict | None, prior: dict | None) -> dict:
    rows = args.rows
    stages = {}
    for name, r in results.items():
        if r.get("failed"):
            stages[name] = {"failed": True, "error": r["error"][:300]}
            continue
        s = {"seconds": r["seconds"], "rows_per_s": round(rows / r["seconds"]) if r["seconds"] else None,
             "peak_rss_mb": r["rss_mb"], "rss_bytes_per_row": round(r["rss_mb"] * 2**20 / rows, 2)}
        workers = (r.get("detail") or {}).get("workers") if isinstance(r.get("detail"), dict) else None
        if workers:
            s["worker_peak_rss_mb"] = workers
        p = (prior or {}).get("stages", {}).get(name)
        if p and not p.get("failed") and prior["rows"] != rows:
            marginal = (r["rss_mb"] - p["peak_rss_mb"]) * 2**20 / (rows - prior["rows"])
            s["marginal_bytes_per_row"] = round(marginal, 2)
            s["projected_rss_mb_at_1e8"] = round(r["rss_mb"] + marginal * (1e8 - rows) / 2**20, 0)
        stages[name] = s
    out = {"bench": "pipeline", "rows": rows, "files": args.files, "boot": args.boot, "cpus": os.cpu_count(),
           "load_average_1min_at_end": round(os.getloadavg()[0], 2), "stages": stages}
    ok = [s for s in stages.values() if not s.get("failed")]
    out["peak_rss_mb_max"] = max((s["peak_rss_mb"] for s in ok), default=None)
    out["pipeline_seconds"] = round(sum(s["seconds"] for n, s in stages.items()
                                        if not s.get("failed") and n in STAGES), 2)
    checks = {"all_stages_ran": all(not r.get("failed") for r in results.values()),
              f"peak_rss_le_{args.rss_limit_mb}_mb": all(s["peak_rss_mb"] <= args.rss_limit_mb for s in ok)}
    metrics = results.get("metrics", {}).get("detail") or {}
    if ref is not None and not ref.get("failed") and metrics:
        d = ref["detail"]
        diff = max(abs(d[r] - metrics["roc_auc"][r]) for r in ("baseline", "candidate"))
        out["reference"] = {"seconds": ref["seconds"], "peak_rss_mb": ref["rss_mb"],
                            "roc_auc": {r: d[r] for r in ("baseline", "candidate")}, "max_abs_auc_diff": diff}
        out["ratio_reference_seconds_over_metrics"] = round(ref["seconds"] / stages["metrics"]["seconds"], 2)
        out["ratio_reference_rss_over_metrics"] = round(ref["rss_mb"] / stages["metrics"]["peak_rss_mb"], 2)
        out["ratio_reference_rss_over_max_stage"] = round(ref["rss_mb"] / out["peak_rss_mb_max"], 2)
        checks["auc_matches_sklearn_1e-9"] = diff <= 1e-9
    dm = results.get("metrics_dask", {}).get("detail")
    if dm and metrics:
        checks["dask_metrics_identical"] = all(dm[k] == metrics[k] for k in ("metrics.json", "gates.json"))
        workers = dm.get("workers") or {}
        checks[f"dask_worker_rss_le_{args.rss_limit_mb}_mb"] = all(v <= args.rss_limit_mb for v in workers.values())
    out["checks"] = checks
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--file-rows", type=int, default=2_500_000, help="rows per landed file")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--dask", action="store_true", help="also run the metrics stage on a 2-worker LocalCluster")
    ap.add_argument("--reference-max-rows", type=int, default=20_000_000,
                    help="run the pandas + scikit-learn reference only up to this many rows (0: never)")
    ap.add_argument("--rss-limit-mb", type=int, default=2048)
    ap.add_argument("--extrapolate-from", help="the JSON line of a smaller run (a file): marginal bytes/row")
    ap.add_argument("--lake", help="lake folder (default: a temp folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the lake folder")
    ap.add_argument("--check", action="store_true", help="CI-sized run; exit 1 when a check fails")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.check:
        args.rows, args.boot, args.file_rows = 200_000, 200, 50_000
    args.files = -(-args.rows // args.file_rows)
    prior = None
    if args.extrapolate_from:
        with open(args.extrapolate_from) as fh:
            prior = json.loads(fh.read().strip().splitlines()[-1])
    tmp = None
    if not args.lake:
        tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
        args.lake = os.path.join(tmp, "lake")
    print(f"pipeline bench: {args.rows:,} rows in {args.files} landed files, B = {args.boot}, lake {args.lake}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    try:
        gen = spawn(args, "generate")
        print(_line(gen, args.rows), flush=True)
        if gen.get("failed"):
            raise SystemExit("generation failed")
        for stage in STAGES:
            results[stage] = spawn(args, stage)
            print(_line(results[stage], args.rows), flush=True)
            if results[stage].get("failed"):
                break
            if stage == "metrics" and args.dask:
                cluster, client = start_cluster()
                try:
                    # the workers are on this machine: a folder here is shared storage for their spill runs
                    # (without it a remote cluster's client would hold every row's scores: no automatic spill)
                    spill = os.path.join(os.path.dirname(os.path.abspath(args.lake or tmp)), "dask-spill")
                    os.makedirs(spill, exist_ok=True)
                    r = spawn(args, "metrics", env={"EVAL_DASK_ADDRESS": cluster.scheduler_address,
                                                    "EVAL_ENGINE_SPILL_DIR": spill})
                finally:
                    client.close()
                    cluster.close()
                r["stage"] = "metrics_dask"
                results["metrics_dask"] = r
                print(_line(r, args.rows), flush=True)
        ref = None
        if args.reference_max_rows and args.rows <= args.reference_max_rows:
            ref = spawn(args, "reference")
            print(_line(ref, args.rows), flush=True)
        summary = summarise(args, results, ref, prior)
        summary["generate"] = {"seconds": gen["seconds"], "peak_rss_mb": gen["rss_mb"], **gen["detail"]}
    finally:
        if tmp and not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(summary, default=str))
    if args.check and not all(summary["checks"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
