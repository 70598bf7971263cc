"""Fairness at scale: the engine's per-group counts, rates, six disparities and B paired Poisson-bootstrap replicates
(``engine.fairness``) vs fairlearn 0.15 on the same rows in the same run: the six disparity functions (point
estimates only) for both models, and fairlearn's own bootstrap (``MetricFrame(n_boot=...)`` of the three rates the
disparities need) for one model, timed on a few replicates and extrapolated to B replicates of both models.

    .venv/bin/python bench/bench_fairness.py                    # 200k rows, 2 sensitive columns (8 x 20 groups)
    .venv/bin/python bench/bench_fairness.py --rows 1000000 --fairlearn-boot 1    # fairlearn: minutes

Data: seeded synthetic rows: label, two model scores, a string column with 8 values and an integer column with 20;
streamed to the engine in 250k-row batches. The disparities of both are compared (max |difference|, expected 0).
Printed: seconds per contender and ratios; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd


def _data(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.choice(list("abcdefgh"), rows)
    h = rng.integers(0, 20, rows)
    y = (rng.random(rows) < 0.3 + 0.02 * (g == "a")).astype("int64")
    base = np.clip(0.3 * y + rng.random(rows) * 0.7, 0, 1)
    cand = np.clip(base + rng.normal(0, 0.05, rows), 0, 1)
    return pd.DataFrame({"y": y, "g": g, "h": h, "baseline": base, "candidate": cand})


def _ours(df: pd.DataFrame, boot: int, batch: int = 250_000):
    from eval_pipeline.engine.fairness import FairnessCombiner, evaluate_fairness

    t = time.perf_counter()
    comb = FairnessCombiner(label="y", predictions={"baseline": "baseline", "candidate": "candidate"},
                            sensitive=["g", "h"])
    acc = comb.create_accumulator()
    for start in range(0, len(df), batch):
        comb.add_batch(acc, df.iloc[start:start + batch], start)
    counts = comb.finish(acc)
    t_counts = time.perf_counter() - t
    fr = evaluate_fairness(counts, min_group_size=1, n_boot=boot, seed=0)
    return fr, t_counts, time.perf_counter() - t


def _fairlearn_points(df: pd.DataFrame):
    from fairlearn import metrics as flm

    from eval_pipeline.engine.fairness import FAIRNESS_METRICS

    t = time.perf_counter()
    out = {}
    for role in ("baseline", "candidate"):
        y_pred = (df[role] >= 0.5).astype("int64")
        for m in FAIRNESS_METRICS:
            out[(role, m)] = getattr(flm, m)(df["y"], y_pred, sensitive_features=df[["g", "h"]])
    return out, time.perf_counter() - t


def _fairlearn_boot(df: pd.DataFrame, n_boot: int) -> float:
    from fairlearn import metrics as flm

    t = time.perf_counter()
    rates = {"selection_rate": flm.selection_rate, "tpr": flm.true_positive_rate, "fpr": flm.false_positive_rate}
    flm.MetricFrame(metrics=rates, y_true=df["y"], y_pred=(df["candidate"] >= 0.5).astype("int64"),
                    sensitive_features=df[["g", "h"]], n_boot=n_boot, ci_quantiles=[0.025, 0.975], random_state=0)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--boot", type=int, default=1000, help="the engine's replicates (B)")
    ap.add_argument("--fairlearn-boot", type=int, default=3, help="fairlearn replicates timed, then extrapolated")
    a = ap.parse_args()
    df = _data(a.rows)
    fr, t_counts, t_ours = _ours(df, a.boot)
    ref, t_points = _fairlearn_points(df)
    diff = max(abs(fr.disparities["models"][r][m]["value"] - v) for (r, m), v in ref.items())
    t_fb = _fairlearn_boot(df, a.fairlearn_boot)
    per_rep = t_fb / a.fairlearn_boot
    extrapolated = per_rep * a.boot * 2  # both models (each disparity is a function of the three rates)
    groups = len(fr.groups)
    print(f"rows {a.rows:,}, groups {groups}, B = {a.boot}")
    print(f"engine: counts {t_counts:.2f} s; counts + rates + 6 disparities x 2 models + {a.boot} paired replicates "
          f"{t_ours:.2f} s")
    print(f"fairlearn points (6 disparities x 2 models, no intervals): {t_points:.2f} s "
          f"({t_points / t_ours:.1f}x the engine with intervals); max |difference| {diff:.3g}")
    print(f"fairlearn MetricFrame bootstrap: {per_rep:.2f} s per replicate of the three rates of one model; "
          f"{a.boot} replicates x 2 models ~ {extrapolated:.0f} s extrapolated ({extrapolated / t_ours:.0f}x)")
    print(json.dumps({"rows": a.rows, "groups": groups, "n_boot": a.boot, "engine_counts_s": round(t_counts, 3),
                      "engine_total_s": round(t_ours, 3), "fairlearn_points_s": round(t_points, 3),
                      "fairlearn_boot_per_replicate_s": round(per_rep, 3),
                      "fairlearn_boot_extrapolated_s": round(extrapolated, 1),
                      "ratio_points": round(t_points / t_ours, 2), "ratio_boot": round(extrapolated / t_ours, 1),
                      "max_abs_difference": diff}))


if __name__ == "__main__":
    main()
