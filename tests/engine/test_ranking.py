"""Ranking metrics (engine/ranking.py) against scikit-learn's ndcg_score and a brute-force reference written here.

The reference takes every ordering of tied documents (``itertools.permutations`` inside each group of equal scores),
computes the textbook metric of that ordering (AP@k with denominator min(k, R), reciprocal rank, recall@k, P@k with
denominator k, NDCG@k with gain = label) and averages: the engine's closed-form tie-averaged values must equal it.
"""
import itertools
import math
import os
import pickle
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import ndcg_score

from eval_pipeline.engine import EngineInputError, SliceConfig, evaluate
from eval_pipeline.engine.catalogue import METRICS, ranking_metric
from eval_pipeline.engine.ranking import query_key, query_weights

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from ranking_data import make_ranking  # noqa: E402

TOL = 1e-12
ALL = ["ndcg@10", "ndcg@3", "ndcg", "map@10", "map@3", "map", "mrr", "mrr@3", "recall@5", "recall@10",
       "precision@5", "precision@10"]


def scored(n_queries=300, seed=0, decimals=None):
    """make_ranking with a baseline score (all features, noisy) and a worse candidate (f1 dropped)."""
    df = make_ranking(n_queries, seed)
    rng = np.random.default_rng(seed + 1)
    df["b"] = 1.2 * df.f1 + 0.8 * df.f2 + rng.normal(0, 0.7, len(df))
    df["c"] = 0.8 * df.f2 + 0.6 * df.f3 + rng.normal(0, 0.7, len(df))
    if decimals is not None:
        df["b"], df["c"] = df.b.round(decimals), df.c.round(decimals)
    return df


def run(df, metrics=ALL, **kw):
    kw.setdefault("n_boot", 0)
    return evaluate(df, task_type="ranking", label="rel", predictions={"baseline": "b", "candidate": "c"},
                    metrics=metrics, query="qid", **kw)


def ref_ordering(labels, k, relevance_min):
    """Textbook metrics of one ranked list of labels."""
    n = len(labels)
    kk = n if k is None else k
    rel = [lab >= relevance_min for lab in labels]
    R = sum(rel)
    top = rel[:kk]
    dcg = sum(lab / math.log2(i + 2) for i, lab in enumerate(labels[:kk]))
    ideal = sorted(labels, reverse=True)
    idcg = sum(lab / math.log2(i + 2) for i, lab in enumerate(ideal[:kk]))
    ap = sum(sum(rel[:i + 1]) / (i + 1) for i in range(min(kk, n)) if rel[i])
    rr = next((1 / (i + 1) for i in range(min(kk, n)) if rel[i]), 0.0)
    return {"ndcg": dcg / idcg if idcg > 0 else 0.0, "map": ap / min(kk, R) if R else 0.0, "mrr": rr,
            "recall": sum(top) / R if R else 0.0, "precision": sum(top) / kk}


def ref_query(labels, scores, metric, relevance_min=1.0):
    """Mean of the textbook metric over every ordering of tied documents."""
    base, k = ranking_metric(metric)
    order = sorted(range(len(labels)), key=lambda i: -scores[i])
    groups = [list(g) for _, g in itertools.groupby(order, key=lambda i: scores[i])]
    vals = [ref_ordering([labels[i] for g in perm for i in g], k, relevance_min)[base]
            for perm in itertools.product(*[itertools.permutations(g) for g in groups])]
    return float(np.mean(vals))


def ref_mean(df, col, metric, relevance_min=1.0, skip=True, mask=None):
    vals = []
    for _, g in df.groupby("qid", sort=True):
        y, s = g.rel.tolist(), g[col].tolist()
        undefined = max(y) <= 0 if ranking_metric(metric)[0] == "ndcg" else max(y) < relevance_min
        if skip and undefined:
            continue
        vals.append(ref_query(y, s, metric, relevance_min))
    return float(np.mean(vals))


def test_ndcg_equals_sklearn_with_ties_and_graded_labels():
    df = scored(300, seed=3, decimals=1)  # rounded scores: many ties
    assert df.groupby("qid").b.apply(lambda s: s.duplicated().any()).mean() > 0.5
    res = run(df, ["ndcg@1", "ndcg@3", "ndcg@10", "ndcg"], no_relevant="zero",
              slices=SliceConfig(columns=["intent"], min_size=1))
    for s in res.slices:
        part = df if s["slice"] == "overall" else df[df.intent == s["columns"]["intent"]]
        assert s["n"] == part.qid.nunique()
        for role, col in (("baseline", "b"), ("candidate", "c")):
            for m, k in (("ndcg@1", 1), ("ndcg@3", 3), ("ndcg@10", 10), ("ndcg", None)):
                ref = np.mean([ndcg_score([g.rel.to_numpy()], [g[col].to_numpy()], k=k)
                               for _, g in part.groupby("qid")])
                assert abs(s["models"][role][m]["value"] - ref) <= TOL, (s["slice"], role, m)


def test_ndcg_skip_leaves_out_all_zero_queries_as_warned():
    df = scored(200, seed=4, decimals=1)
    zero_queries = df.groupby("qid").rel.max().eq(0)
    assert zero_queries.sum() > 0  # the generator makes some
    res = run(df, ["ndcg@10"])
    keep = df[~df.qid.map(zero_queries)]
    ref = np.mean([ndcg_score([g.rel.to_numpy()], [g.b.to_numpy()], k=10) for _, g in keep.groupby("qid")])
    assert abs(res.slices[0]["models"]["baseline"]["ndcg@10"]["value"] - ref) <= TOL
    assert f"{int(zero_queries.sum())} of 200 queries left out of NDCG" in res.warnings[0]


@pytest.mark.parametrize("relevance_min", [1.0, 2.0])
def test_every_metric_equals_the_brute_force_reference_with_ties(relevance_min):
    rng = np.random.default_rng(7)
    rows = []
    for q in range(150):  # small queries so that every ordering of ties can be enumerated
        n = int(rng.integers(1, 7))
        for i in range(n):
            rows.append((f"q{q}", int(rng.integers(0, 4)), int(rng.integers(0, 3)), float(rng.integers(0, 5))))
    df = pd.DataFrame(rows, columns=["qid", "rel", "b", "c"])
    res = run(df, relevance_min=relevance_min)
    for role, col in (("baseline", "b"), ("candidate", "c")):
        for m in ALL:
            got = res.slices[0]["models"][role][m]["value"]
            ref = ref_mean(df, col, m, relevance_min)
            assert abs(got - ref) <= TOL, (role, m, got, ref)


def test_every_metric_equals_the_reference_on_long_untied_lists():
    df = scored(120, seed=5)  # continuous scores: one ordering per query; lists of 5..50 documents
    res = run(df, slices=SliceConfig(columns=["intent"], min_size=1), no_relevant="zero")
    for s in res.slices:
        part = df if s["slice"] == "overall" else df[df.intent == s["columns"]["intent"]]
        for m in ALL:
            ref = ref_mean(part, "c", m, skip=False)
            assert abs(s["models"]["candidate"][m]["value"] - ref) <= TOL, (s["slice"], m)


def test_queries_straddling_batches_in_any_order_give_identical_results():
    df = scored(150, seed=6, decimals=1)
    kw = dict(n_boot=100, seed=11, slices=SliceConfig(columns=["intent"], min_size=1))
    one = run(df, **kw).to_json()
    shuffled = df.sample(frac=1.0, random_state=2).reset_index(drop=True)
    batches = [pa.RecordBatch.from_pandas(shuffled.iloc[i:i + 333]) for i in range(0, len(shuffled), 333)]
    assert run(batches, workers=2, **kw).to_json() == one
    assert run([shuffled.iloc[::2], shuffled.iloc[1::2]], workers=1, **kw).to_json() == one


class _RowRange:
    """A shard: rows [start, stop) of a frame (picklable, as a remote backend needs)."""

    def __init__(self, frame):
        self.frame = frame

    def __call__(self, shard):
        start, stop = shard
        yield self.frame.iloc[start:stop]


class _PicklingBackend:
    """Runs shards here but ships the task and every accumulator through pickle, as a remote backend does."""

    remote = True

    def map(self, fn, items):
        for item in items:
            yield pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(fn))(item)))


def test_sharded_evaluation_with_queries_cut_across_shards_is_byte_identical():
    from eval_pipeline.engine.shards import evaluate_shards

    df = scored(120, seed=12, decimals=1)
    kw = dict(task_type="ranking", label="rel", predictions={"baseline": "b", "candidate": "c"}, metrics=ALL,
              query="qid", n_boot=60, seed=3, slices=SliceConfig(columns=["intent"], min_size=1))
    shards = [(i, min(i + 700, len(df))) for i in range(0, len(df), 700)]  # 700 rows: cuts through queries
    assert df.qid.iloc[699] == df.qid.iloc[700]
    got = evaluate_shards(shards, _RowRange(df), _PicklingBackend(), **kw)
    assert got.to_json() == evaluate(df, **kw).to_json()


def test_query_level_bootstrap_spread_matches_the_query_standard_error():
    """Each query is one bootstrap unit: the replicates' spread is the standard error of a mean of per-query values
    (sd / sqrt(Q)), whatever the number of documents per query."""
    df = scored(400, seed=8)
    res = run(df, ["ndcg@10"], n_boot=1000, no_relevant="zero")
    per_query = np.array([ndcg_score([g.rel.to_numpy()], [g.b.to_numpy()], k=10) for _, g in df.groupby("qid")])
    se = per_query.std(ddof=1) / np.sqrt(per_query.size)
    reps = res.replicates[("overall", "baseline", "ndcg@10")]
    assert abs(reps.std() / se - 1) < 0.12, (reps.std(), se)
    lo, hi = res.slices[0]["models"]["baseline"]["ndcg@10"]["ci"]
    assert abs((hi - lo) / (2 * 1.96 * se) - 1) < 0.15


def test_query_weights_depend_on_seed_replicate_and_query_id_only():
    keys = np.array([query_key(f"q{i}") for i in range(2000)], dtype=np.uint64)
    w = query_weights(keys, seed=3, start=0, size=100)
    assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 1) < 0.02 and abs((w == 0).mean() - math.exp(-1)) < 0.01
    assert np.array_equal(query_weights(keys[[5, 17]], seed=3, start=0, size=100), w[[5, 17]])  # others irrelevant
    assert np.array_equal(query_weights(keys, seed=3, start=50, size=50), w[:, 50:])  # blocks are slices
    assert not np.array_equal(query_weights(keys, seed=4, start=0, size=100), w)
    assert query_key(3) == query_key(3.0) == query_key(np.int64(3)) != query_key("3")


def test_planted_regression_has_a_paired_interval_below_zero_and_identical_models_none():
    df = scored(300, seed=9)
    res = run(df, ["ndcg@10", "map@10", "mrr"], n_boot=400)
    for m in ("ndcg@10", "map@10", "mrr"):
        d = res.slices[0]["delta"][m]
        assert d["ci"][1] < 0 and d["p_value"] < 0.01, (m, d)
        assert np.array_equal(res.replicates[("overall", "delta", m)],
                              res.replicates[("overall", "candidate", m)] - res.replicates[("overall", "baseline", m)])
    same = run(df.assign(c=df.b), ["ndcg@10"], n_boot=200).slices[0]["delta"]["ndcg@10"]
    assert same["value"] == 0 and same["ci"] == [0.0, 0.0]


def test_catalogue_resolves_any_cutoff_and_refuses_bad_names():
    assert METRICS["ndcg@7"].higher_is_better and METRICS["ndcg@7"].range == (0.0, 1.0)
    assert "recall@100" in METRICS and "recall" in METRICS  # the binary metric 'recall' is another metric
    for bad in ("ndcg@0", "recall@", "precision", "ndcg@-1", "hits@3"):
        assert bad not in METRICS or "ranking" not in METRICS[bad].task_types, bad
    df = scored(20)
    with pytest.raises(EngineInputError, match=r"metric 'precision' is not available for ranking.*precision@K"):
        run(df, ["precision"])
    with pytest.raises(EngineInputError, match="metric 'ndcg@10' is not available for regression"):
        evaluate(df, task_type="regression", label="rel", predictions={"candidate": "c"}, metrics=["ndcg@10"],
                 baseline=None)


def test_bad_input_is_refused_naming_the_column():
    df = scored(30, seed=1)
    with pytest.raises(EngineInputError, match="query: ranking needs the query id column"):
        evaluate(df, task_type="ranking", label="rel", predictions={"candidate": "c"}, metrics=["mrr"],
                 baseline=None)
    with pytest.raises(EngineInputError, match="column 'rel': expected relevance labels >= 0"):
        run(df.assign(rel=df.rel - 1))
    bad = df.assign(qid=df.qid.where(df.index != 40, None))
    with pytest.raises(EngineInputError, match="column 'qid': expected a query id on every row.*row 40"):
        run(bad)
    with pytest.raises(EngineInputError, match="column 'missing' is missing"):
        evaluate(df, task_type="ranking", label="rel", predictions={"candidate": "c"}, metrics=["mrr"],
                 query="missing", baseline=None)
    with pytest.raises(EngineInputError, match="no_relevant: expected one of"):
        run(df, no_relevant="drop")
    doc_level = df.assign(kind=np.where(df.f1 > 0, "long", "short"))
    with pytest.raises(EngineInputError, match=r"slice column 'kind' varies within query 'q\d+' of column 'qid'"):
        run(doc_level, slices=SliceConfig(columns=["kind"]))


def test_slice_sizes_count_queries():
    df = scored(90, seed=2)
    res = run(df, ["mrr"], slices=SliceConfig(columns=["intent"], min_size=31))
    by = {s["slice"]: s for s in res.slices}
    counts = df.groupby("intent").qid.nunique()
    for intent, n in counts.items():
        s = by[f"intent={intent}"]
        assert s["n"] == n and s["status"] == ("ok" if n >= 31 else "too_small")
        if n < 31:
            assert s["too_small"] == f"{n} queries < slices.min_size 31"


def test_query_bootstrap_intervals_cover_the_population_value():
    """200 data sets of 150 queries from the generator: the 95 % intervals of NDCG@10, MRR and of the paired delta
    cover the population value (from 20,000 queries, whose own error is ~0.001) in 90-99 % of them."""
    big = run(scored(20000, seed=100), ["ndcg@10", "mrr"]).slices[0]
    truth = {m: (big["models"]["candidate"][m]["value"], big["delta"][m]["value"]) for m in ("ndcg@10", "mrr")}
    hits = {(m, what): 0 for m in truth for what in ("candidate", "delta")}
    n_sets = 200
    for i in range(n_sets):
        s = run(scored(150, seed=1000 + i), ["ndcg@10", "mrr"], n_boot=300, seed=i).slices[0]
        for m, (cand, delta) in truth.items():
            lo, hi = s["models"]["candidate"][m]["ci"]
            hits[(m, "candidate")] += lo <= cand <= hi
            lo, hi = s["delta"][m]["ci"]
            hits[(m, "delta")] += lo <= delta <= hi
    coverage = {k: v / n_sets for k, v in hits.items()}
    assert all(0.90 <= c <= 0.99 for c in coverage.values()), coverage
