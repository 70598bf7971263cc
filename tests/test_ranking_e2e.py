"""Ranking (``task_type: ranking``) end to end THROUGH DAGSTER, with verdicts known in advance from the data.

Data: ``tests/ranking_data.make_ranking`` (documented synthetic learning-to-rank set: 600 evaluation queries of 5-50
documents, graded relevance 0-3, a query attribute ``intent``). Models (scikit-learn pipelines stored as skops, scored
with ``predict``: one score per document), trained on another 400 queries:

- ``@1`` champion: ridge on f1, f2 (misses the transactional-only feature f3).
- ``@2`` planted ranking regression: the same recipe after a feature-pipeline bug dropped f1 (ridge on f2, f3).
  NDCG@10 falls by about 0.25 overall (margin 0.02) and MAP@10 by 0.18-0.38 on every intent (margin 0.05): verdict
  FAIL, decided by every gate row, ``ndcg_at_10_not_worse`` first; exit 1.
- ``@3`` better: f1, f2, f3 and intent with interactions: NDCG@10 +0.03 overall, MAP@10 within -0.02 of the champion
  on informational / navigational queries and +0.15 on transactional ones: verdict PASS; exit 0.

``eval-pipeline evaluate`` (``cli.main``) runs the task's Dagster definitions in-process on a persistent instance
(refresh job: snapshot + blocking data-quality check; evaluate job: predictions -> evaluation -> gates -> report).
Every gated number is recomputed here: NDCG@10 with scikit-learn's ``ndcg_score`` per query, MAP@10 with a
straightforward reference.
"""
import json

import numpy as np
import pytest
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.metrics import ndcg_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures

import dagster as dg

from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.spec import SpecError, parse_spec

from .ranking_data import FEATURES, make_ranking
from .toy import cli_evaluate


NAME = "search_ranker"
TASK = "search_ranking"
SPEC = {
    "task": TASK,
    "task_type": "ranking",
    "description": "search result ranking: one row per (query, document), graded relevance 0-3",
    "data": {"source": "incoming/search_ranking"},
    "columns": {"id": "doc_id", "label": "rel", "query": "qid", "features": FEATURES, "categorical": ["intent"]},
    "model": {"name": NAME, "batch_size": 5000},
    "slices": {"columns": ["intent"], "min_size": 30},
    "metrics": ["ndcg@10", "map@10", "mrr", "recall@10", "precision@5"],
    "ranking": {"relevance_min": 1, "no_relevant": "skip"},
    "gates": [{"name": "ndcg_at_10_not_worse", "metric": "ndcg@10", "kind": "non_inferiority", "margin": 0.02},
              {"metric": "map@10", "kind": "non_inferiority", "margin": 0.05, "slices": "intent"}],
    "evaluation": {"bootstrap_replicates": 500, "seed": 7},
    "drift": {"enabled": False},
}


def _skops(model) -> bytes:
    import skops.io as sio

    data = sio.dumps(model)
    assert sio.get_untrusted_types(data=data) == []
    return data


def _ranker(columns, interactions=False) -> Pipeline:
    parts = [("numeric", "passthrough", columns)]
    if interactions:
        parts.append(("intent", OneHotEncoder(handle_unknown="ignore"), ["intent"]))
    steps = [("prep", ColumnTransformer(parts, sparse_threshold=0))]
    if interactions:
        steps.append(("pairs", PolynomialFeatures(2, interaction_only=True, include_bias=False)))
    return Pipeline(steps + [("model", Ridge(alpha=1.0))])


@pytest.fixture(scope="module")
def ranking(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e_ranking")
    lake = Lake(str(root / "lake"))
    ev = make_ranking(600, seed=2)
    for i, part in enumerate(np.array_split(np.arange(len(ev)), 3)):  # parts cut through queries
        lake.write_parquet(f"incoming/search_ranking/part-{i}.parquet", ev.iloc[part].reset_index(drop=True))
    spec_path = root / f"{TASK}.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    train = make_ranking(400, seed=1)
    models = {"1": _ranker(["f1", "f2"]), "2": _ranker(["f2", "f3"]), "3": _ranker(["f1", "f2", "f3"], True)}
    reg = Registry(lake)
    for version, model in models.items():
        model.fit(train[FEATURES], train["rel"])
        reg.register(NAME, version, _skops(model), flavor="sklearn-skops", artifact_name="model.skops")
    reg.set_champion(NAME, "1", reason="initial champion")
    scores = {v: m.predict(ev[FEATURES]) for v, m in models.items()}
    return {"root": root, "lake": lake, "spec": str(spec_path), "ev": ev, "scores": scores}


def _evaluate(fx, candidate: str, capsys):
    return cli_evaluate(fx["spec"], fx["lake"].root, candidate, fx["root"], capsys)


def _dagster_metadata(home, asset: str) -> list[dict]:
    """Metadata of an asset's materializations recorded in the Dagster instance (what the UI shows; oldest first)."""
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        records = instance.fetch_materializations(dg.AssetKey([TASK, asset]), limit=100).records
        return [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in reversed(records)]


def _dagster_verdicts(home) -> list:
    return [m["verdict"] for m in _dagster_metadata(home, "release_gates")]


def _ap_at_k(labels_in_rank_order, k):
    rel = [x >= 1 for x in labels_in_rank_order]
    hits = [sum(rel[:i + 1]) / (i + 1) for i in range(min(k, len(rel))) if rel[i]]
    return sum(hits) / min(k, sum(rel))


def _expected(ev, score, intent=None) -> dict:
    """NDCG@10 (scikit-learn) and MAP@10 (reference) over the queries with a relevant document (no_relevant: skip;
    relevance_min 1 and integer labels: the same queries for both)."""
    frame = ev.assign(s=score)
    if intent is not None:
        frame = frame[frame.intent == intent]
    ndcg, ap = [], []
    for _, g in frame.groupby("qid"):
        if g.rel.max() < 1:
            continue
        ndcg.append(ndcg_score([g.rel.to_numpy()], [g.s.to_numpy()], k=10))
        ap.append(_ap_at_k(g.sort_values("s", ascending=False).rel.tolist(), 10))
    return {"ndcg@10": float(np.mean(ndcg)), "map@10": float(np.mean(ap))}


def _close(a, b, tol=1e-9):
    return abs(a - b) <= tol


def _check_gate_numbers(fx, result, candidate):
    for g in result["gates"]:
        intent = None if g["slice"] == "overall" else g["slice"].split("=")[1]
        cand = _expected(fx["ev"], fx["scores"][candidate], intent)[g["metric"]]
        base = _expected(fx["ev"], fx["scores"]["1"], intent)[g["metric"]]
        assert _close(g["value"], cand) and _close(g["baseline_value"], base), (g, cand, base)
        assert _close(g["delta"], cand - base)


def test_planted_ranking_regression_fails_the_ndcg_gate(ranking, capsys):
    fx = ranking
    code, result, out, seconds = _evaluate(fx, f"{NAME}@2", capsys)
    assert result is not None, f"no result (exit {code}): {out.err[-3000:]}"
    assert (result["verdict"], code) == ("FAIL", 1)
    assert result["task_type"] == "ranking" and result["baseline"]["ref"] == f"{NAME}@1"
    rows = {(g["metric"], g["slice"]): g for g in result["gates"]}
    intents = sorted(fx["ev"].intent.unique())
    assert set(rows) == {("ndcg@10", "overall")} | {("map@10", f"intent={i}") for i in intents}
    ndcg = rows[("ndcg@10", "overall")]
    assert ndcg["outcome"] == "FAIL" and ndcg["gate"] == "ndcg_at_10_not_worse"
    assert ndcg["delta"] < -0.15 and ndcg["ci"][1] < -ndcg["margin"]
    assert all(g["outcome"] == "FAIL" for g in rows.values())
    _check_gate_numbers(fx, result, "2")
    # every metric has an interval, per model and for the paired delta, on every slice (n counts queries)
    n_queries = int((fx["ev"].groupby("qid").rel.max() >= 0).sum())
    slices = {s["slice"]: s for s in result["metrics"]["slices"]}
    assert slices["overall"]["n"] == n_queries == 600 and result["metrics"]["n_rows"] == len(fx["ev"])
    for s in slices.values():
        for m in SPEC["metrics"]:
            for role in ("candidate", "baseline"):
                v = s["models"][role][m]
                assert v["ci"][0] <= v["value"] <= v["ci"][1], (s["slice"], role, m)
            assert s["delta"][m]["ci"][0] <= s["delta"][m]["value"] <= s["delta"][m]["ci"][1]
    skipped = int((fx["ev"].groupby("qid").rel.max() < 1).sum())
    assert any(f"{skipped} of 600 queries left out" in w for w in result["metrics"]["warnings"])
    # the verdict names the gate in the report, and Dagster recorded it
    folder = fx["lake"].root + "/" + result["paths"]["folder"]
    report_md = open(f"{folder}/report.md").read()
    assert "FAIL" in report_md and "ndcg_at_10_not_worse" in report_md and "ndcg@10" in report_md
    assert "map@10" in open(f"{folder}/report.html").read()
    assert _dagster_verdicts(fx["root"] / "dagster_home")[-1] == "FAIL"
    shown = _dagster_metadata(fx["root"] / "dagster_home", "evaluation")[-1]  # the evaluation asset in the UI
    overall = slices["overall"]["models"]["candidate"]
    for m in SPEC["metrics"]:
        assert f"| {m} | {overall[m]['value']:.4f} [" in shown["overall"], m
    assert "queries left out" in shown["warnings"]
    assert Registry(fx["lake"]).champion(NAME) == "1"
    print(f"\nranking @2 (planted regression): FAIL in {seconds:.1f} s")


def test_better_ranker_passes(ranking, capsys):
    fx = ranking
    code, result, out, seconds = _evaluate(fx, f"{NAME}@3", capsys)
    assert result is not None, f"no result (exit {code}): {out.err[-3000:]}"
    assert (result["verdict"], code) == ("PASS", 0), [(g["metric"], g["slice"], g["outcome"]) for g in result["gates"]]
    rows = {(g["metric"], g["slice"]): g for g in result["gates"]}
    assert rows[("ndcg@10", "overall")]["delta"] > 0.01
    assert rows[("map@10", "intent=transactional")]["delta"] > 0.1
    _check_gate_numbers(fx, result, "3")
    assert _dagster_verdicts(fx["root"] / "dagster_home")[-1] == "PASS"
    print(f"\nranking @3 (better): PASS in {seconds:.1f} s")


def _problems(**changes) -> str:
    data = json.loads(json.dumps(SPEC))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        elif value is None:
            data.pop(section)
        else:
            data[section] = value
    with pytest.raises(SpecError) as err:
        parse_spec(data, "ranking spec")
    return str(err.value)


def test_ranking_spec_is_validated_up_front():
    assert parse_spec(SPEC).engine_task_options() == {"query": "qid", "relevance_min": 1.0, "no_relevant": "skip"}
    assert "metrics: ['ndcg@0', 'recall'] are not available for ranking" in _problems(metrics=["ndcg@0", "recall",
                                                                                                "mrr"])
    cols = {k: v for k, v in SPEC["columns"].items() if k != "query"}
    assert "columns.query: required for task_type ranking" in _problems(columns=cols)
    assert "columns.query: column 'rel' is also columns.label" in _problems(columns__query="rel")
    assert "ranking.no_relevant" in _problems(ranking={"no_relevant": "drop"})
    assert "ranking.relevance_min" in _problems(ranking={"relevance_min": 0})
    assert "gates.0.metric: gates use metrics ['ndcg@5']" in _problems(
        gates=[{"metric": "ndcg@5", "kind": "absolute", "min": 0.5}])
    binary = _problems(task_type="binary_classification")
    assert "columns.query: only for task_type ranking" in binary and "ranking: only for task_type ranking" in binary
