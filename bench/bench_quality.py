"""Benchmark: batched data quality (eval_pipeline.quality_merge) vs Great Expectations on the whole pandas frame.

One synthetic parquet file (seeded) shaped like the demo's flights: id, label, timestamp, distance, hour, origin,
carrier, dep_delay (2 % nulls), with the demo spec's kinds of expectations (not-null, unique id, ranges, allowed
values, dtypes, max null fraction, label domain, freshness, row count) and a few planted defects (a duplicated id in
the first and the last row group, values out of range, a disallowed origin) so that failures are merged too.

Each contestant runs in its own subprocess, so its peak RSS (ru_maxrss) is its own:

- batched : streams record batches from the parquet file (``--batch-rows``), ``validate_batches`` (GX on each batch,
            merged exactly; the uniqueness partitions are spilled to a temporary folder).
- whole   : reads the file into one pandas frame, ``validate_dataset`` (GX on the whole frame).

Both results (``to_dict()`` without ``provenance``) are compared byte for byte (sha256). The load average is
printed: the machine is shared.

Usage: ``python bench/bench_quality.py [--rows 10000000] [--batch-rows 250000] [--skip-whole]``; the last line is
JSON.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTATIONS = {
    "min_rows": 1000,
    "not_null": ["flight_id", "time_hour", "origin", "distance", "hour"],
    "unique": ["flight_id"],
    "ranges": {"distance": {"min": 0, "max": 6000}, "hour": {"min": 0, "max": 23}},
    "allowed_values": {"origin": ["EWR", "JFK", "LGA"]},
    "dtypes": {"flight_id": "integer", "time_hour": "datetime", "origin": "string", "distance": "numeric",
               "hour": "integer"},
    "max_null_fraction": {"dep_delay": 0.05},
    "label_values": [0, 1],
    "freshness": {"max_age_days": 35, "as_of": "2014-01-01T00:00:00Z"},
}
ROLES = dict(id_column="flight_id", label_column="delayed", timestamp_column="time_hour",
             feature_columns=["distance", "hour", "origin", "carrier", "dep_delay"], task_type="binary_classification")


def generate(path: str, rows: int, seed: int = 0, chunk: int = 1_000_000) -> None:
    """Write ``rows`` demo-like rows in chunks (bounded memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    start = np.datetime64("2013-01-01T00:00:00", "us")
    writer = None
    for lo in range(0, rows, chunk):
        n = min(chunk, rows - lo)
        ids = np.arange(lo, lo + n, dtype=np.int64)
        if lo == 0:
            ids[1] = 0  # a duplicated id in the first chunk ...
        if lo + n == rows:
            ids[-1] = 1  # ... and one across the file (the last row repeats id 1)
        hour = rng.integers(0, 24, n)
        distance = rng.uniform(80, 4983, n)
        distance[rng.random(n) < 1e-5] = 9000.0  # out of range, rarely
        origin_idx = rng.integers(0, 3, n).astype(np.int32)
        origin_idx[rng.random(n) < 1e-5] = 3  # 'XXX'
        dep_delay = rng.normal(5, 20, n)
        dep_delay[rng.random(n) < 0.02] = np.nan
        table = pa.table({
            "flight_id": ids,
            "delayed": rng.integers(0, 2, n),
            "time_hour": pa.array(start + (np.arange(lo, lo + n) * (365 * 24 * 3600 * 10**6 // max(rows, 1))).astype(
                "timedelta64[us]"), pa.timestamp("us", tz="UTC")),  # spread over 2013, whatever the row count
            "distance": distance,
            "hour": hour,
            "origin": pa.DictionaryArray.from_arrays(origin_idx, pa.array(["EWR", "JFK", "LGA", "XXX"]))
            .cast(pa.string()),
            "carrier": pa.DictionaryArray.from_arrays(rng.integers(0, 4, n).astype(np.int32),
                                                      pa.array(["UA", "AA", "B6", "DL"])).cast(pa.string()),
            "dep_delay": pa.array(dep_delay, from_pandas=True),
        })
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=250_000)
    writer.close()


def _child(mode: str, path: str, batch_rows: int, out: str) -> None:
    """One contestant, in this process: its result, wall time and peak RSS go to ``out`` as JSON."""
    sys.path.insert(0, ROOT)
    import pyarrow.parquet as pq

    from eval_pipeline.quality import validate_batches, validate_dataset

    t0 = time.perf_counter()
    if mode == "batched":
        from eval_pipeline.quality_merge import frames_from_arrow

        pf = pq.ParquetFile(path, pre_buffer=False)
        frames = frames_from_arrow(pf.iter_batches(batch_size=batch_rows))
        result = validate_batches(frames, expectations=EXPECTATIONS, expected_rows=pf.metadata.num_rows,
                                  source="bench", spill_dir=os.path.dirname(path), **ROLES)
    else:
        frame = pq.read_table(path).to_pandas()
        result = validate_dataset(frame, expectations=EXPECTATIONS, source="bench", **ROLES)
    wall = time.perf_counter() - t0
    persisted = {k: v for k, v in result.to_dict().items() if k != "provenance"}
    text = json.dumps(persisted, sort_keys=True)
    with open(out, "w") as fh:
        json.dump({"wall_s": round(wall, 3), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                                   / 1024, 1),
                   "sha256": hashlib.sha256(text.encode()).hexdigest(), "success": result.success,
                   "failures": result.failures(), "batches": result.run_info.get("batches")}, fh)


def _run(mode: str, path: str, batch_rows: int, folder: str) -> dict:
    out = os.path.join(folder, f"{mode}.json")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, "--data", path,
                    "--batch-rows", str(batch_rows), "--out", out], check=True, cwd=ROOT)
    report = json.load(open(out))
    report["process_wall_s"] = round(time.perf_counter() - t0, 3)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--batch-rows", type=int, default=250_000)
    ap.add_argument("--skip-whole", action="store_true", help="run only the batched validation")
    ap.add_argument("--child", choices=["batched", "whole"])
    ap.add_argument("--data")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return _child(args.child, args.data, args.batch_rows, args.out)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as folder:
        path = os.path.join(folder, "data.parquet")
        t0 = time.perf_counter()
        generate(path, args.rows)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - t0:.1f} s "
              f"({os.path.getsize(path) / 1e6:.0f} MB parquet); load average {os.getloadavg()}", flush=True)
        runs = {"batched": _run("batched", path, args.batch_rows, folder)}
        print(f"batched: {runs['batched']}  load average {os.getloadavg()}", flush=True)
        if not args.skip_whole:
            runs["whole"] = _run("whole", path, args.batch_rows, folder)
            print(f"whole:   {runs['whole']}  load average {os.getloadavg()}", flush=True)
    summary = {"rows": args.rows, "batch_rows": args.batch_rows, "load_average_end": os.getloadavg()[0],
               **{f"{m}_{k}": r[k] for m, r in runs.items() for k in ("wall_s", "peak_rss_mb", "process_wall_s")},
               "batched_failures": len(runs["batched"]["failures"])}
    if "whole" in runs:
        b, w = runs["batched"], runs["whole"]
        summary.update(results_agree=b["sha256"] == w["sha256"], time_ratio_batched_over_whole=round(
            b["wall_s"] / w["wall_s"], 3), rss_ratio_batched_over_whole=round(b["peak_rss_mb"] / w["peak_rss_mb"], 3))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
