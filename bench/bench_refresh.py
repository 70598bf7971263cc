"""Benchmark: incremental dataset refresh (a snapshot = a manifest of per-file parts) vs a full rebuild.

Lands ``--files`` parquet files of ``--rows`` rows each (seeded; id, ts, y, a, b like the toy task) in a local lake,
then, each phase in a fresh process (its peak RSS is its own):

- first   : ``refresh_snapshot`` on all files (every file hashed and written as a part);
- landed  : one more file lands; ``refresh_snapshot`` again (only the new file is read);
- full    : the reference, what a refresh did before parts: read every file whole, concatenate, sort by (ts, id),
            write one parquet file and hash it — on the same files, the new one included;
- big     : one file of ``--big-rows`` rows made into a part read whole and sorted (the default) and streamed in
            batches (EVAL_SNAPSHOT_SORT_MAX_BYTES=0): peak RSS of each.

The snapshot's rows are checked against the reference (same ids, same count). Usage:
``python bench/bench_refresh.py [--files 12] [--rows 250000] [--big-rows 2000000]``; the last line is JSON.
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
sys.path.insert(0, ROOT)

SPEC = {"task": "bench", "task_type": "binary_classification", "data": {"source": "incoming/bench"},
        "columns": {"id": "id", "label": "y", "timestamp": "ts", "features": ["a", "b"], "categorical": ["b"]},
        "model": {"name": "m"}, "metrics": ["roc_auc"], "drift": {"enabled": False}}


def write_file(path: str, i: int, rows: int) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(i)
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(i * 86_400 + rng.integers(0, 86_400, rows), unit="s")
    table = pa.table({"id": np.arange(rows, dtype="int64") + i * rows, "ts": ts, "y": rng.integers(0, 2, rows),
                      "a": rng.normal(size=rows), "b": np.array(["x", "y", "z"])[rng.integers(0, 3, rows)]})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def phase(name: str, root: str, args) -> dict:
    """Run in a fresh process: one measured step; prints its JSON."""
    from eval_pipeline.lake import Lake
    from eval_pipeline.refresh import refresh_snapshot
    from eval_pipeline.spec import parse_spec

    lake = Lake(os.path.join(root, "lake"))
    spec = parse_spec(SPEC, "bench")
    t = time.perf_counter()
    out: dict = {}
    if name in ("first", "landed", "big"):
        snap = refresh_snapshot(lake, spec)
        out.update(snapshot_id=snap.snapshot_id, rows=snap.manifest["rows"], parts=len(snap.parts))
    elif name == "full":
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = os.path.join(root, "lake", "incoming", "bench")
        tables = [pq.read_table(os.path.join(folder, f)) for f in sorted(os.listdir(folder))]
        table = pa.concat_tables(tables).sort_by([("ts", "ascending"), ("id", "ascending")])
        target = os.path.join(root, "full.parquet")
        pq.write_table(table, target, compression="zstd")
        with open(target, "rb") as fh:
            out["sha256"] = hashlib.sha256(fh.read()).hexdigest()
        out["rows"] = table.num_rows
    out["seconds"] = time.perf_counter() - t
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run(name: str, root: str, args, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--root", root]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=12)
    p.add_argument("--rows", type=int, default=250_000)
    p.add_argument("--big-rows", type=int, default=2_000_000)
    p.add_argument("--phase")
    p.add_argument("--root")
    a = p.parse_args()
    if a.phase:
        print(json.dumps(phase(a.phase, a.root, a)))
        return
    with tempfile.TemporaryDirectory() as root:
        folder = os.path.join(root, "lake", "incoming", "bench")
        for i in range(a.files):
            write_file(os.path.join(folder, f"part-{i:04d}.parquet"), i, a.rows)
        first = run("first", root, a)
        write_file(os.path.join(folder, f"part-{a.files:04d}.parquet"), a.files, a.rows)
        landed = run("landed", root, a)
        full = run("full", root, a)
        assert landed["rows"] == full["rows"] == (a.files + 1) * a.rows, (landed, full)
    with tempfile.TemporaryDirectory() as root:
        write_file(os.path.join(root, "lake", "incoming", "bench", "big.parquet"), 0, a.big_rows)
        whole = run("big", root, a)
    with tempfile.TemporaryDirectory() as root:
        write_file(os.path.join(root, "lake", "incoming", "bench", "big.parquet"), 0, a.big_rows)
        streamed = run("big", root, a, env={"EVAL_SNAPSHOT_SORT_MAX_BYTES": "0"})
    assert whole["snapshot_id"] == streamed["snapshot_id"] and whole["rows"] == streamed["rows"] == a.big_rows
    load = os.getloadavg()[0]
    n = a.files * a.rows
    print(f"{a.files} files x {a.rows:,} rows, then one more file; load average {load:.1f}")
    print(f"first refresh (every file a part)      : {first['seconds']:7.2f} s  peak RSS {first['peak_rss_mb']:6.0f} MB")
    print(f"refresh after one file landed          : {landed['seconds']:7.2f} s  peak RSS {landed['peak_rss_mb']:6.0f} MB")
    print(f"full rebuild (read all, sort, one file): {full['seconds']:7.2f} s  peak RSS {full['peak_rss_mb']:6.0f} MB"
          f"  -> incremental {full['seconds'] / landed['seconds']:.1f}x faster")
    print(f"one {a.big_rows:,}-row file: sorted whole {whole['seconds']:.2f} s / {whole['peak_rss_mb']:.0f} MB; "
          f"streamed in batches {streamed['seconds']:.2f} s / {streamed['peak_rss_mb']:.0f} MB")
    print(json.dumps({"files": a.files, "rows_per_file": a.rows, "rows": n + a.rows, "big_rows": a.big_rows,
                      "cpus": os.cpu_count(), "load_average_1min": round(load, 2),
                      "first_seconds": round(first["seconds"], 3), "first_peak_rss_mb": round(first["peak_rss_mb"]),
                      "incremental_seconds": round(landed["seconds"], 3),
                      "incremental_peak_rss_mb": round(landed["peak_rss_mb"]),
                      "full_rebuild_seconds": round(full["seconds"], 3),
                      "full_rebuild_peak_rss_mb": round(full["peak_rss_mb"]),
                      "full_over_incremental": round(full["seconds"] / landed["seconds"], 2),
                      "big_whole_seconds": round(whole["seconds"], 3), "big_whole_peak_rss_mb": round(whole["peak_rss_mb"]),
                      "big_streamed_seconds": round(streamed["seconds"], 3),
                      "big_streamed_peak_rss_mb": round(streamed["peak_rss_mb"])}))


if __name__ == "__main__":
    main()
