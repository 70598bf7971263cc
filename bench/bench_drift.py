"""Drift at full scale: eval_pipeline.drift (Evidently's per-column methods, each column once) vs Evidently's
``Report([DataDriftPreset()])`` on the same frames, in the same run.

    .venv/bin/python bench/bench_drift.py                      # 1M rows x 20 columns, both profiles
    .venv/bin/python bench/bench_drift.py --rows 100000 --profiles mixed
    .venv/bin/python bench/bench_drift.py --rows 10000000 --profiles mixed --stream-only   # bounded memory

``--stream`` / ``--stream-only`` (issue 11): the same windows landed as parquet files in a lake (1M-row files), one
snapshot, then ``pipeline.drift``'s streamed computation (``drift_stream.stream_drift``: counts of all rows, a
bottom-k sample of ``drift.max_rows`` = 100,000 rows per window, HTML from 20k of them) in a fresh process: seconds
and peak RSS (``ru_maxrss``), which must not grow with ``--rows``. With ``--stream`` at a size the in-memory
contender can hold, the exact columns' scores are compared with it (max |difference|, expected ~0).

Profiles (reference and current window of ``--rows`` rows each, seeded; the current window is shifted):
* ``numeric``: 20 continuous float columns (the preset's cost quoted in STACK.md: 1M x 20 = 132 s / 1.7 GB);
* ``mixed``: like the demo's drift columns: 13 continuous floats (two with 1 % missing), 3 integer-valued
  numeric columns (24, 2,000 and 7 values), 1 numeric column with 4 values (Jensen-Shannon), 3 string columns
  (16, 3 and 105 values).

The frames are written once to parquet; each contender runs in its own fresh process (so peak RSS is its own) that
reads them (not timed), then times the scoring only (ours: ``compute_drift(..., html=False)``, the default
``n_jobs``; the preset: ``Report.run`` with ``include_tests=True``, no HTML). Ours also reports the time of the
HTML built from its 20k-row sample. Printed: seconds, peak RSS (and above the loaded frames), the ratio, and the
largest absolute score difference between the two. The final line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_frames(profile: str, rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)

    def window(shift: float) -> pd.DataFrame:
        cols: dict[str, np.ndarray] = {}
        n_cont = 20 if profile == "numeric" else 13
        for i in range(n_cont):
            s = shift * (i % 5) / 10  # some columns drift, some do not
            cols[f"num_{i:02d}"] = (rng.normal(s, 1 + i / 10, rows) if i % 2 == 0
                                    else rng.lognormal(s, 0.5, rows))
        if profile == "mixed":
            for name in ("num_03", "num_07"):
                x = cols[name]
                x[rng.random(rows) < 0.01] = np.nan
            cols["hour"] = rng.integers(5, 23 + int(shift), rows).astype(np.int64)
            cols["distance"] = rng.integers(80, 2080, rows).astype(np.int64)
            cols["day_of_week"] = rng.integers(0, 7, rows).astype(np.int64)
            cols["four_values"] = rng.choice([0.0, 1.0, 2.0, 5.0], rows, p=[0.4, 0.3, 0.2 - shift / 20,
                                                                             0.1 + shift / 20])
            carriers = np.array([f"C{i}" for i in range(16)])
            cols["carrier"] = carriers[rng.integers(0, 16, rows)].astype(object)
            cols["origin"] = np.array(["EWR", "JFK", "LGA"])[rng.integers(0, 3, rows)].astype(object)
            dests = np.array([f"D{i:03d}" for i in range(105)])
            cols["dest"] = dests[np.minimum(rng.zipf(1.3 + shift / 10, rows), 105) - 1].astype(object)
        return pd.DataFrame(cols)

    ref, cur = window(0.0), window(1.0)
    categorical = [c for c in ref.columns if not pd.api.types.is_numeric_dtype(ref[c].dtype)]
    return ref, cur, categorical


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, data: str) -> None:
    """One contender in this (fresh) process; prints one JSON line."""
    ref = pd.read_parquet(f"{data}/reference.parquet")
    cur = pd.read_parquet(f"{data}/current.parquet")
    meta = json.loads(Path(f"{data}/meta.json").read_text())
    columns, categorical = meta["columns"], meta["categorical"]
    numeric = [c for c in columns if c not in categorical]
    if kind == "ours":
        from eval_pipeline.drift import compute_drift
        from eval_pipeline.drift_methods import _stattests

        _stattests()  # the import is not the work
    else:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        # Evidently 0.7.23 fails on pandas 3's string dtype (np.isinf on it): plain objects, as the old drift.py did
        for c in categorical:
            ref[c], cur[c] = ref[c].astype(object), cur[c].astype(object)
    loaded_mb = _rss_mb()
    started = time.perf_counter()
    if kind == "ours":
        r = compute_drift(ref, cur, columns=columns, categorical=categorical, html=False)
        seconds = time.perf_counter() - started
        scores = {c["column"]: [c["method"], c["score"], c["drifted"]] for c in r.columns}
        t0 = time.perf_counter()
        h = compute_drift(ref, cur, columns=columns, categorical=categorical, html=True, n_jobs=None)
        html_total = time.perf_counter() - t0
        extra = {"with_html_s": round(html_total, 2), "html_bytes": len(h.html.encode()),
                 "html_sample_rows": h.html_sample["reference_rows"]}
    else:
        dd = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        snap = Report([DataDriftPreset(columns=columns)], include_tests=True).run(
            current_data=Dataset.from_pandas(cur, data_definition=dd),
            reference_data=Dataset.from_pandas(ref, data_definition=dd))
        seconds = time.perf_counter() - started
        d = snap.dict()
        tests = {t["metric_config"]["metric_id"]: t["status"] for t in d["tests"] if t["id"] == "drift"}
        scores = {m["config"]["column"]: [m["config"]["method"], m["value"], tests.get(m["id"]) == "FAIL"]
                  for m in d["metrics"] if m["config"]["type"].endswith("ValueDrift")}
        extra = {}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"kind": kind, "seconds": round(seconds, 3), "peak_rss_mb": round(peak_mb),
                      "peak_above_loaded_mb": round(peak_mb - loaded_mb), "scores": scores, **extra}))


def stream_child(lake_root: str) -> None:
    """The streamed drift of the lake's snapshot in this fresh process; prints one JSON line."""
    from eval_pipeline.drift_stream import stream_drift
    from eval_pipeline.lake import Lake
    from eval_pipeline.snapshot import load_snapshot
    from eval_pipeline.spec import parse_spec

    from eval_pipeline.drift_methods import _stattests

    _stattests()  # the import is not the work (as for the other contenders)
    from evidently import Report  # noqa: F401  (the HTML's import either)

    spec = parse_spec(json.loads(Path(f"{lake_root}/bench_spec.json").read_text()), "bench spec")
    lake = Lake(lake_root)
    snap = load_snapshot(lake, spec.task)
    loaded_mb = _rss_mb()
    started = time.perf_counter()
    r = stream_drift(lake, snap, spec)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    scores = {c["column"]: [c["method"], c["score"], c["drifted"], c["sample_method"]] for c in r.columns}
    print(json.dumps({"kind": "stream", "seconds": round(seconds, 3), "peak_rss_mb": round(peak_mb),
                      "peak_above_start_mb": round(peak_mb - loaded_mb), "scores": scores,
                      "reference_rows": r.reference_rows_total, "current_rows": r.current_rows_total,
                      "passes": r.streaming["passes"], "html_bytes": len(r.html.encode())}))


def land_stream_lake(profile: str, rows: int, root: str, chunk: int = 1_000_000) -> None:
    """Both windows as landed parquet files of ``chunk`` rows (reference in January, current in February) and
    their snapshot; the frames are never whole in memory when ``rows`` > ``chunk``."""
    from eval_pipeline.lake import Lake
    from eval_pipeline.refresh import refresh_snapshot
    from eval_pipeline.spec import parse_spec

    lake = Lake(root)
    columns = categorical = None
    for w, month in enumerate((1, 2)):
        for i, start in enumerate(range(0, rows, chunk)):
            n = min(chunk, rows - start)
            ref, cur, categorical = make_frames(profile, n, seed=i)  # rows <= chunk: the in-memory frames
            frame = (ref if w == 0 else cur).reset_index(drop=True)
            columns = list(frame.columns)
            frame.insert(0, "row_id", np.arange(w * rows + start, w * rows + start + n, dtype=np.int64))
            step_us = 20 * 86400 * 10 ** 6 // rows  # 20 days per window, whole microseconds (the lake's unit)
            frame["ts"] = pd.Timestamp(f"2024-0{month}-01", tz="UTC") + pd.to_timedelta(
                (start + np.arange(n, dtype=np.int64)) * step_us, unit="us")
            frame["y"] = (frame["row_id"] % 3 == 0).astype(np.int64)
            lake.write_parquet(f"incoming/bench/w{w}-{i:04d}.parquet", frame)
            del ref, cur, frame
    spec = {"task": "bench_drift", "task_type": "binary_classification", "data": {"source": "incoming/bench"},
            "columns": {"id": "row_id", "label": "y", "timestamp": "ts", "features": columns,
                        "categorical": categorical},
            "model": {"name": "bench_model"}, "slices": {"columns": ["origin"] if "origin" in columns else []},
            "metrics": ["roc_auc"], "gates": [{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.05}],
            "drift": {"reference": {"end": "2024-02-01"}, "current": {"start": "2024-02-01"}}}
    Path(f"{root}/bench_spec.json").write_text(json.dumps(spec))
    refresh_snapshot(lake, parse_spec(spec, "bench spec"))


def run_stream(profile: str, rows: int, env: dict, ours_scores: dict | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_drift_lake_") as root:
        t0 = time.perf_counter()
        land_stream_lake(profile, rows, root)
        landed_s = time.perf_counter() - t0
        proc = subprocess.run([sys.executable, __file__, "--child", "stream", "--data", root], capture_output=True,
                              text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"stream failed:\n{proc.stderr[-4000:]}")
    st = json.loads(proc.stdout.strip().splitlines()[-1])
    kinds = sorted({v[3] for v in st["scores"].values()})
    print(f"[{profile}] streamed ({rows:,} rows per window, landed + snapshot in {landed_s:.0f} s): "
          f"{st['seconds']:8.2f} s with the HTML  peak RSS {st['peak_rss_mb']:5d} MB; {st['passes']} pass(es); "
          f"column scores by {kinds}", flush=True)
    res = {"stream_rows": rows, "stream_s": st["seconds"], "stream_peak_rss_mb": st["peak_rss_mb"],
           "stream_passes": st["passes"], "stream_sample_methods": kinds}
    if ours_scores is not None:
        exact = [abs(st["scores"][c][1] - ours_scores[c][1]) for c in st["scores"]
                 if st["scores"][c][3] != "sample"]
        res["stream_exact_columns"] = len(exact)
        res["stream_exact_max_abs_diff"] = max(exact) if exact else None
        print(f"[{profile}] streamed vs in-memory, {len(exact)} exact columns: max |score difference| "
              f"{res['stream_exact_max_abs_diff']}", flush=True)
    return res


def run_child(kind: str, data: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--data", data], capture_output=True,
                          text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per window (default 1,000,000)")
    ap.add_argument("--profiles", default="numeric,mixed", help="comma-separated: numeric, mixed")
    ap.add_argument("--skip-preset", action="store_true", help="time ours only")
    ap.add_argument("--stream", action="store_true", help="also the streamed drift of a lake snapshot")
    ap.add_argument("--stream-only", action="store_true", help="only the streamed drift (e.g. --rows 10000000)")
    ap.add_argument("--child", choices=["ours", "preset", "stream"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "stream":
        stream_child(args.data)
        return
    if args.child:
        child(args.child, args.data)
        return

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()
    print(f"# {args.rows:,} rows per window x 20 columns; {os.cpu_count()} CPUs; load average {load[0]:.1f} "
          f"(other work on the machine slows both contenders)", flush=True)
    summary: dict = {"rows": args.rows, "columns": 20, "cpus": os.cpu_count(), "loadavg_start": round(load[0], 2),
                     "profiles": {}}
    for profile in [p.strip() for p in args.profiles.split(",") if p.strip()]:
        if args.stream_only:
            summary["profiles"][profile] = run_stream(profile, args.rows, env, None)
            continue
        ref, cur, categorical = make_frames(profile, args.rows)
        with tempfile.TemporaryDirectory(prefix="bench_drift_") as data:
            ref.to_parquet(f"{data}/reference.parquet")
            cur.to_parquet(f"{data}/current.parquet")
            Path(f"{data}/meta.json").write_text(json.dumps({"columns": list(ref.columns),
                                                             "categorical": categorical}))
            del ref, cur
            ours = run_child("ours", data, env)
            print(f"[{profile}] ours:   {ours['seconds']:8.2f} s  peak RSS {ours['peak_rss_mb']:5d} MB "
                  f"(+{ours['peak_above_loaded_mb']} MB over the loaded frames); with the HTML from a "
                  f"{ours['html_sample_rows']:,}-row sample: {ours['with_html_s']:.2f} s, "
                  f"HTML {ours['html_bytes'] / 1e6:.2f} MB", flush=True)
            res = {"ours_s": ours["seconds"], "ours_peak_rss_mb": ours["peak_rss_mb"],
                   "ours_peak_above_loaded_mb": ours["peak_above_loaded_mb"], "ours_with_html_s": ours["with_html_s"],
                   "html_bytes": ours["html_bytes"], "html_sample_rows": ours["html_sample_rows"],
                   "methods": sorted({m for m, _, _ in ours["scores"].values()})}
            if not args.skip_preset:
                preset = run_child("preset", data, env)
                diffs, same = [], True
                for col, (method, score, drifted) in preset["scores"].items():
                    o = ours["scores"][col]
                    diffs.append(abs(o[1] - score))
                    same &= (o[0] == method) and (o[2] == drifted)
                ratio = preset["seconds"] / ours["seconds"]
                print(f"[{profile}] preset: {preset['seconds']:8.2f} s  peak RSS {preset['peak_rss_mb']:5d} MB "
                      f"(+{preset['peak_above_loaded_mb']} MB)", flush=True)
                print(f"[{profile}] ratio preset/ours: {ratio:.1f}x time, "
                      f"{preset['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x peak RSS; max |score difference| "
                      f"{max(diffs):.3g}; same methods and drifted flags: {same}", flush=True)
                res.update({"preset_s": preset["seconds"], "preset_peak_rss_mb": preset["peak_rss_mb"],
                            "preset_peak_above_loaded_mb": preset["peak_above_loaded_mb"],
                            "ratio_time": round(ratio, 2), "max_abs_score_diff": max(diffs),
                            "same_methods_and_flags": bool(same)})
            if args.stream:
                res.update(run_stream(profile, args.rows, env, ours["scores"]))
            summary["profiles"][profile] = res
    summary["loadavg_end"] = round(os.getloadavg()[0], 2)
    if not args.stream_only:
        summary["ours_within_10s"] = all(p["ours_s"] <= 10 for p in summary["profiles"].values())
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
