"""Error analysis (issue 10, item 6): flip tables per slice, the most regressed slices, the top regressed rows.

- the intervals: Newcombe's paired interval equals the published value (Fagerland et al., ch. 8), Wilson equals
  statsmodels';
- on a synthetic frame with planted flips in one slice: the counts equal an independent pandas crosstab (binary and
  multiclass), do not depend on the batching, the planted slice is the most regressed and the top rows are the
  planted rows;
- end to end through Dagster on the toy task: error_analysis.json and regressed_rows.parquet in the evidence
  folder, the flip counts equal a crosstab of the predictions files, minus the net regression rate equals the
  engine's accuracy delta per slice (1e-12), the parquet holds the top rows with their features, the report shows
  the section and links the file; a monitoring run writes no error analysis.
"""

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from statsmodels.stats.proportion import proportion_confint

from eval_pipeline.cli import run_evaluation
from eval_pipeline.engine import SliceConfig
from eval_pipeline.error_analysis import CELLS, ROWS_FILE, analyse, paired_difference_ci, wilson
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.scoring import predictions_path
from eval_pipeline.snapshot import load_snapshot, read_snapshot_table
from eval_pipeline.spec import load_spec

from .toy import TOY_SPEC, fit_interaction_model, fit_model, land, toy_frame

MODEL = "toy_model"


def test_newcombe_paired_interval_and_wilson_match_references():
    # Cavo et al. (2012) in Fagerland, Lydersen & Laake, ch. 8: estimate -0.0621 (95% CI -0.1186 to -0.0046)
    lo, hi = paired_difference_ci(59, 6, 16, 80, 0.95)
    assert (round(lo, 4), round(hi, 4)) == (-0.1186, -0.0046)
    for k, n, conf in [(0, 20, 0.95), (7, 50, 0.9), (380, 5000, 0.95), (20, 20, 0.99)]:
        assert wilson(k, n, conf) == pytest.approx(list(proportion_confint(k, n, 1 - conf, "wilson")), abs=1e-12)
    assert wilson(0, 0) is None and paired_difference_ci(0, 0, 0, 0) is None


def _planted(n=6000, seed=1, planted=40):
    """Both models equal except: random, barely-wrong flips everywhere (both directions, balanced), and
    ``planted`` confident right -> wrong flips in slice g=b."""
    rng = np.random.default_rng(seed)
    f = pd.DataFrame({"id": np.arange(10_000, 10_000 + n), "g": rng.choice(["a", "b", "c"], n),
                      "y": rng.integers(0, 2, n)})
    right = rng.random(n) < 0.8
    f["baseline__p"] = np.where(right == (f["y"] == 1), 0.7, 0.3)
    f["candidate__p"] = f["baseline__p"]
    noise = np.flatnonzero(rng.random(n) < 0.1)  # candidate crosses the threshold just barely
    f.loc[noise, "candidate__p"] = np.where(f.loc[noise, "baseline__p"] > 0.5, 0.49, 0.51)
    pool = np.flatnonzero((f["g"] == "b").to_numpy() & right)
    plant = rng.choice(pool, planted, replace=False)
    f.loc[plant, "candidate__p"] = np.where(f.loc[plant, "y"] == 1, 0.01, 0.99)
    return f, set(f.loc[plant, "id"])


def _crosstab(base_right, cand_right, groups):
    """Flip counts per group, computed independently with pandas."""
    t = pd.crosstab([groups, base_right.rename("b")], cand_right.rename("c")).reindex(
        columns=[True, False], fill_value=0)
    out = {}
    for g in groups.unique():
        sub = t.loc[g].reindex([True, False], fill_value=0)
        out[str(g)] = [int(sub.loc[True, True]), int(sub.loc[True, False]), int(sub.loc[False, True]),
                       int(sub.loc[False, False])]
    out["overall"] = [sum(v[i] for v in out.values()) for i in range(4)]
    return out


def _by_slice(res):
    return {r["slice"]: [r[c] for c in CELLS] for r in res["slices"]}


def test_planted_flips_binary():
    f, planted = _planted()
    kw = dict(task_type="binary_classification", id_column="id", label="y", baseline_columns="baseline__p",
              candidate_columns="candidate__p", slices=SliceConfig(columns=["g"], min_size=50), threshold=0.5,
              top_rows=len(planted))
    res = analyse([f.iloc[i:i + 1000] for i in range(0, len(f), 1000)], **kw)
    base_right = (f["baseline__p"] >= 0.5) == (f["y"] == 1)
    cand_right = (f["candidate__p"] >= 0.5) == (f["y"] == 1)
    expected = _crosstab(base_right, cand_right, f["g"])
    got = _by_slice(res)
    assert got == {("overall" if k == "overall" else f"g={k}"): v for k, v in expected.items()}
    assert res["most_regressed"][0]["slice"] == "g=b"
    assert res["most_regressed"][0]["net_regression_ci"][0] > 0  # clearly, not by chance
    assert {r["id"] for r in res["rows"]} == planted
    assert [r["rank"] for r in res["rows"]] == list(range(1, len(planted) + 1))
    assert all(r["candidate_wrong_probability"] == pytest.approx(0.99) and r["g"] == "b" for r in res["rows"])
    # the net regression rate is minus the accuracy delta; batching does not matter
    for r in res["slices"]:
        assert r["net_regression_rate"] == pytest.approx(-r["accuracy_delta"], abs=1e-12)
    one = analyse([f], **kw)
    assert one["slices"] == res["slices"] and [r["id"] for r in one["rows"]] == [r["id"] for r in res["rows"]]


def test_planted_flips_multiclass():
    rng = np.random.default_rng(5)
    n, classes = 3000, ["u", "v", "w"]
    y = rng.integers(0, 3, n)
    f = pd.DataFrame({"id": np.arange(n), "g": rng.choice(["p", "q"], n), "y": np.array(classes)[y]})
    P = rng.dirichlet([1, 1, 1], n)
    Q = P.copy()
    swap = np.flatnonzero((f["g"] == "q").to_numpy() & (rng.random(n) < 0.3))
    top_p = 0.6 + 0.39 * rng.random(swap.size)  # the candidate confidently predicts the next class there
    Q[swap] = ((1 - top_p) / 2)[:, None]
    Q[swap, (y[swap] + 1) % 3] = top_p
    for k, c in enumerate(classes):
        f[f"baseline__p_{c}"], f[f"candidate__p_{c}"] = P[:, k], Q[:, k]
    res = analyse([f.iloc[:1700], f.iloc[1700:]], task_type="multiclass_classification", id_column="id", label="y",
                  baseline_columns=[f"baseline__p_{c}" for c in classes],
                  candidate_columns=[f"candidate__p_{c}" for c in classes], classes=classes,
                  slices=SliceConfig(columns=["g"], min_size=50), top_rows=10)
    expected = _crosstab(pd.Series(P.argmax(1) == y), pd.Series(Q.argmax(1) == y), f["g"])
    assert _by_slice(res) == {("overall" if k == "overall" else f"g={k}"): v for k, v in expected.items()}
    assert res["most_regressed"][0]["slice"] == "g=q"
    wrong = 1 - Q[np.arange(n), y]
    regressed = np.flatnonzero((P.argmax(1) == y) & (Q.argmax(1) != y))
    top = regressed[np.lexsort((regressed, -wrong[regressed]))][:10]
    assert [r["id"] for r in res["rows"]] == top.tolist()


# -- end to end, through Dagster -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Champion v1; candidate v2 trained on labels flipped for b == 'z' (it regresses there), run by the CLI's
    in-process Dagster path."""
    root = tmp_path_factory.mktemp("errors")
    lake = Lake(str(root / "lake"))
    frame = toy_frame(3000, seed=2)
    land(lake, frame)
    reg = Registry(lake)
    reg.register(MODEL, "1", sio.dumps(fit_model(frame.iloc[:1500])), flavor="sklearn-skops",
                 artifact_name="model.skops")
    reg.set_champion(MODEL, "1", reason="test setup")
    bad = frame.iloc[:1500].copy()
    bad.loc[bad["b"] == "z", "y"] = 1 - bad.loc[bad["b"] == "z", "y"]
    reg.register(MODEL, "2", sio.dumps(fit_interaction_model(bad)), flavor="sklearn-skops",
                 artifact_name="model.skops")
    spec = {**TOY_SPEC, "slices": {"columns": ["b"], "bins": {"a": [-1.0, 0.0, 1.0]}, "min_size": 50},
            "model": {"name": MODEL, "threshold": 0.45}, "evaluation": {"bootstrap_replicates": 50}}
    spec_path = root / "toy.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    code, result = run_evaluation(str(spec_path), lake.root, f"{MODEL}@2", str(root / "home"))
    assert result is not None and code == {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}[result["verdict"]]
    folder = result["paths"]["folder"]
    return {"root": root, "lake": lake, "frame": frame, "result": result, "folder": folder, "spec_path": spec_path,
            "ea": lake.read_json(f"{folder}/error_analysis.json"), "reg": reg}


def test_end_to_end_counts_equal_a_crosstab_and_the_engines_accuracy_delta(evaluated):
    lake, result, ea = evaluated["lake"], evaluated["result"], evaluated["ea"]
    snap = load_snapshot(lake, "toy", result["dataset"]["snapshot_id"])
    spec = load_spec(str(evaluated["spec_path"]))
    reg = evaluated["reg"]
    pred = {v: lake.read_parquet(predictions_path(spec, snap, reg.manifest(MODEL, v))) for v in ("1", "2")}
    rows = read_snapshot_table(lake, snap, ["id", "y", "a", "b"]).to_pandas()
    score_col = [c for c in pred["1"].columns if c != "id"][0]
    rows = rows.merge(pred["1"].rename(columns={score_col: "p1"}), on="id").merge(
        pred["2"].rename(columns={score_col: "p2"}), on="id")
    base_right = (rows["p1"] >= 0.45) == (rows["y"] == 1)
    cand_right = (rows["p2"] >= 0.45) == (rows["y"] == 1)
    expected = _crosstab(base_right, cand_right, rows["b"])
    got = _by_slice(ea)
    for k, v in expected.items():
        assert got["overall" if k == "overall" else f"b={k}"] == v
    # binned slice a: an independent crosstab on the same bins
    a_bin = pd.cut(rows["a"], [-np.inf, -1.0, 0.0, 1.0, np.inf], right=False, labels=False)
    labels = ["(-inf, -1)", "[-1, 0)", "[0, 1)", "[1, inf)"]
    for k, v in _crosstab(base_right, cand_right, a_bin).items():
        if k != "overall":
            assert got[f"a={labels[int(float(k))]}"] == v
    # minus the net regression rate is the engine's paired accuracy delta, slice by slice
    engine = {s["slice"]: s for s in result["metrics"]["slices"]}
    assert set(engine) == set(got)
    for r in ea["slices"]:
        d = engine[r["slice"]].get("delta", {}).get("accuracy")
        if d:
            assert abs(-r["net_regression_rate"] - d["value"]) <= 1e-12, r["slice"]
            assert abs(r["accuracy_delta"] - d["value"]) <= 1e-12
    assert ea["most_regressed"][0]["slice"] == "b=z"
    assert ea["baseline"] == f"{MODEL}@1" and ea["candidate"] == f"{MODEL}@2"


def test_end_to_end_rows_parquet_and_report_link(evaluated):
    lake, folder, ea, frame = evaluated["lake"], evaluated["folder"], evaluated["ea"], evaluated["frame"]
    assert ea["rows_uri"] == f"{folder}/{ROWS_FILE}"
    rows = lake.read_parquet(ea["rows_uri"])
    assert 0 < len(rows) <= 50
    assert rows["id"].tolist() == [r["id"] for r in ea["top_rows"]]
    assert rows["rank"].tolist() == list(range(1, len(rows) + 1))
    # features from the snapshot, the right ones for each id
    truth = frame.set_index("id").loc[rows["id"]]
    assert np.allclose(rows["feature:a"].to_numpy(), truth["a"].to_numpy())
    assert rows["feature:b"].tolist() == truth["b"].tolist()
    # every top row: baseline right, candidate wrong, sorted by the candidate's probability on wrong answers
    assert all(r["label"] == int(truth.loc[r["id"], "y"]) for r in ea["top_rows"])
    w = rows["candidate_wrong_probability"].to_numpy()
    assert np.all(np.diff(w) <= 0)
    assert all((r["baseline_output"] >= 0.45) == (r["label"] == 1) for r in ea["top_rows"])
    assert all((r["candidate_output"] >= 0.45) != (r["label"] == 1) for r in ea["top_rows"])
    html = lake.read_text(evaluated["result"]["paths"]["report_html"])
    assert "<h2 id=errors>Error analysis</h2>" in html and "href='#errors'" in html
    assert f'<a href="{ROWS_FILE}">' in html and ea["rows_uri"] in html
    assert "Slices where the candidate regresses most" in html and "b=z" in html


def test_monitoring_run_writes_no_error_analysis(evaluated, tmp_path):
    lake = evaluated["lake"]
    _, result = run_evaluation(str(evaluated["spec_path"]), lake.root, f"{MODEL}@1", str(tmp_path / "home"))
    assert result["mode"] == "monitoring"
    folder = result["paths"]["folder"]
    assert not lake.exists(f"{folder}/error_analysis.json") and not lake.exists(f"{folder}/{ROWS_FILE}")
    assert "id=errors" not in lake.read_text(result["paths"]["report_html"])
