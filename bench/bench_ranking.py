"""Benchmark: the ranking engine vs a scikit-learn loop over queries, same data.

Data: ``tests/ranking_data.make_ranking(--queries)`` (5-50 documents per query, graded relevance 0-3), a baseline and
a candidate score, the query attribute ``intent`` as a slice column.

- engine  : ``engine.evaluate`` (task_type ranking) streamed in 100,000-row batches: ndcg@10, map@10, mrr,
            recall@10, precision@10 x (overall + 3 intents) x 2 models, paired, ``--boot`` query-bootstrap replicates;
- sklearn : ``sklearn.metrics.ndcg_score(k=10)`` once per query for ONE metric and ONE model, points only (no slices,
            no intervals): a lower bound on what a loop-over-queries evaluation costs.

The engine's overall ndcg@10 must equal the loop's mean (no_relevant: zero) to 1e-12. Usage:
``python bench/bench_ranking.py [--queries 20000] [--boot 1000]``; the last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

METRICS = ["ndcg@10", "map@10", "mrr", "recall@10", "precision@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20000)
    parser.add_argument("--boot", type=int, default=1000)
    args = parser.parse_args()

    from ranking_data import make_ranking
    from sklearn.metrics import ndcg_score

    from eval_pipeline.engine import SliceConfig, evaluate

    df = make_ranking(args.queries, seed=1)
    rng = np.random.default_rng(0)
    df["b"] = df.f1 + rng.normal(0, 1, len(df))
    df["c"] = df.f1 + df.f2 + rng.normal(0, 1, len(df))
    batches = [df.iloc[i:i + 100_000] for i in range(0, len(df), 100_000)]

    started = time.perf_counter()
    res = evaluate(batches, task_type="ranking", label="rel", predictions={"baseline": "b", "candidate": "c"},
                   query="qid", metrics=METRICS, n_boot=args.boot, no_relevant="zero",
                   slices=SliceConfig(columns=["intent"]))
    engine_s = time.perf_counter() - started
    engine_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

    started = time.perf_counter()
    per_query = [ndcg_score([g.rel.to_numpy()], [g.c.to_numpy()], k=10) for _, g in df.groupby("qid", sort=False)]
    sklearn_s = time.perf_counter() - started
    diff = abs(res.slices[0]["models"]["candidate"]["ndcg@10"]["value"] - float(np.mean(per_query)))
    assert diff <= 1e-12, diff

    print(f"{len(df):,} rows, {args.queries:,} queries")
    print(f"engine : {engine_s:6.2f} s  (5 metrics x 4 slices x 2 models, paired, B = {args.boot}); "
          f"peak RSS {engine_rss:.2f} GB")
    print(f"sklearn: {sklearn_s:6.2f} s  (ndcg@10 only, 1 model, overall only, no intervals)")
    print(f"ratio sklearn / engine: {sklearn_s / engine_s:.2f}; |ndcg@10 difference| = {diff:.1e}")
    print(json.dumps({"bench": "ranking", "rows": len(df), "queries": args.queries, "boot": args.boot,
                      "engine_s": round(engine_s, 3), "engine_peak_rss_gb": round(engine_rss, 3),
                      "sklearn_ndcg_loop_s": round(sklearn_s, 3), "ratio": round(sklearn_s / engine_s, 3),
                      "ndcg_abs_diff": diff}))


if __name__ == "__main__":
    main()
