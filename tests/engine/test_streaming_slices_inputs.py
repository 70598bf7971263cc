"""Chunking/order invariance, slices (columns, crosses, bins, caps) and input validation."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from eval_pipeline.engine import EngineInputError, SliceConfig, evaluate, evaluate_accumulator, make_combiner
from conftest import BINARY_METRICS, make_binary

SL = SliceConfig(columns=["g"], crosses=[["g", "dist"]], bins={"dist": [0, 1000, 2000]}, min_size=20)


def _run(batches, task="binary_classification", **kw):
    args = dict(task_type=task, label="y", predictions={"baseline": "b", "candidate": "c"}, slices=SL,
                metrics=BINARY_METRICS, n_boot=100, seed=7)
    args.update(kw)
    return evaluate(batches, **args).to_json()


def test_chunking_and_row_order_give_byte_identical_json():
    df = make_binary(5000, seed=11, round_to=3)
    ref = _run(df)
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    chunks = [shuffled.iloc[i:i + 777] for i in range(0, len(shuffled), 777)]
    assert _run(chunks) == ref
    tbl = pa.Table.from_pandas(df.iloc[::-1].reset_index(drop=True))
    assert _run(tbl.to_batches(max_chunksize=1234)) == ref
    assert _run(pa.Table.from_pandas(shuffled)) == ref
    assert _run(df, seed=8) != ref  # the seed matters


def test_merge_accumulators_is_order_free():
    df = make_binary(3000, seed=12)
    kw = dict(task_type="binary_classification", label="y", predictions={"baseline": "b", "candidate": "c"},
              slices=SL)
    comb = make_combiner(**kw)
    parts = [df.iloc[i:i + 500] for i in range(0, 3000, 500)]
    accs = []
    for p in parts:
        a = comb.create_accumulator()
        comb.add_batch(a, p)
        accs.append(a)
    m1 = comb.merge_accumulators([comb.merge_accumulators(accs[:2]), comb.merge_accumulators(accs[2:])])
    m2 = comb.merge_accumulators(accs[::-1])
    ev = dict(slices=SL, metrics=BINARY_METRICS, n_boot=50, seed=1)
    j1 = evaluate_accumulator(comb, m1, **ev).to_json()
    j2 = evaluate_accumulator(comb, m2, **ev).to_json()
    assert j1 == j2 == _run(df, n_boot=50, seed=1)


@pytest.mark.parametrize("task", ["multiclass_classification", "regression"])
def test_invariance_other_tasks(task):
    rng = np.random.default_rng(4)
    n = 2000
    df = pd.DataFrame({"g": rng.choice(["a", "b"], n), "dist": rng.uniform(0, 3000, n)})
    if task == "regression":
        df["y"] = rng.normal(size=n)
        df["b"] = df.y + rng.normal(size=n)
        df["c"] = df.y + rng.normal(size=n) * 0.8
        kw = dict(task=task, metrics=["mae", "rmse", "r2", "mape", "mean_error"])
    else:
        df["y"] = rng.choice(["u", "v", "w"], n)
        for r in "bc":
            P = rng.dirichlet([1, 1, 1], n)
            for j, k in enumerate("uvw"):
                df[f"{r}{k}"] = P[:, j]
        kw = dict(task=task, metrics=["accuracy", "macro_f1", "weighted_f1", "top_k_accuracy"], classes=list("uvw"),
                  top_k=2, predictions={"baseline": ["bu", "bv", "bw"], "candidate": ["cu", "cv", "cw"]})
    ref = _run(df, **kw)
    sh = df.sample(frac=1, random_state=1)
    assert _run([sh.iloc[i:i + 300] for i in range(0, n, 300)], **kw) == ref


def test_slice_names_order_sizes_and_bins():
    df = make_binary(3000, seed=13)
    df.loc[:4, "dist"] = np.nan
    df.loc[5:9, "dist"] = 2500.0
    res = evaluate(df, task_type="binary_classification", label="y", predictions={"candidate": "c"},
                   slices=SliceConfig(columns=["g", "dist"], crosses=[["g", "h"]], bins={"dist": [0, 1000, 2000]},
                                      min_size=200),
                   metrics=["accuracy"], n_boot=0, baseline=None).to_dict()
    names = [s["slice"] for s in res["slices"]]
    assert names[:5] == ["overall", "g=a", "g=b", "g=c", "g=d"]
    assert names[5:9] == ["dist=[0, 1000)", "dist=[1000, 2000)", "dist=[2000, inf)", "dist=null"]
    assert names[9] == "g=a & h=1" and names[-1] == "g=d & h=3"
    by = {s["slice"]: s for s in res["slices"]}
    assert by["overall"]["n"] == 3000
    assert sum(by[f"g={v}"]["n"] for v in "abcd") == 3000
    assert by["dist=null"]["n"] == 5 and by["dist=null"]["status"] == "too_small"
    assert by["dist=null"]["models"] == {}
    assert by["dist=[2000, inf)"]["n"] == int((df.dist >= 2000).sum())
    assert by["g=a & h=1"]["columns"] == {"g": "a", "h": "1"}
    assert by["g=a & h=1"]["n"] == int(((df.g == "a") & (df.h == 1)).sum())


def test_max_values_cap_warns():
    df = make_binary(2000, seed=14)
    df["many"] = np.arange(2000) % 50
    res = evaluate(df, task_type="binary_classification", label="y", predictions={"candidate": "c"},
                   slices=SliceConfig(columns=["many"], max_values=10, min_size=1), metrics=["accuracy"], n_boot=0,
                   baseline=None).to_dict()
    assert len(res["slices"]) == 11
    assert any("'many'" in w and "50 distinct" in w for w in res["warnings"])


@pytest.mark.parametrize("mutate,col,needle", [
    (lambda d: d.__setitem__("c", d.c.where(d.index != 17, np.nan)), "c", "row 17"),
    (lambda d: d.__setitem__("b", d.b.where(d.index != 3, 1.5)), "b", "[0, 1]"),
    (lambda d: d.__setitem__("c", d.c.where(d.index != 5, np.inf)), "c", "NaN/inf"),
    (lambda d: d.__setitem__("y", d.y.where(d.index != 9, 2)), "y", "0/1"),
])
def test_bad_inputs_name_the_column(mutate, col, needle):
    df = make_binary(100, seed=15)
    mutate(df)
    with pytest.raises(EngineInputError) as e:
        evaluate([df.iloc[:50], df.iloc[50:]], task_type="binary_classification", label="y",
                 predictions={"baseline": "b", "candidate": "c"}, metrics=["accuracy"], n_boot=0)
    assert f"'{col}'" in str(e.value) and needle in str(e.value) and "1 row(s)" in str(e.value)


def test_bad_spec():
    df = make_binary(100, seed=16)
    base = dict(task_type="binary_classification", label="y", predictions={"candidate": "c"}, baseline=None)
    with pytest.raises(EngineInputError, match="rmse.*valid metrics"):
        evaluate(df, metrics=["rmse"], **base)
    with pytest.raises(EngineInputError, match="'nope' is missing"):
        evaluate(df, metrics=["accuracy"], slices=SliceConfig(columns=["nope"]), **base)
    with pytest.raises(EngineInputError, match="task_type"):
        evaluate(df, metrics=["accuracy"], **{**base, "task_type": "clustering"})
    with pytest.raises(ValueError):
        evaluate(df, metrics=["accuracy"], **{**base, "label": "zz"})


def test_single_model_no_deltas_and_bool_labels():
    df = make_binary(500, seed=17)
    df["y"] = df.y.astype(bool)
    res = evaluate(df, task_type="binary_classification", label="y", predictions={"champion": "c"},
                   metrics=["accuracy", "roc_auc"], n_boot=20, baseline=None, candidate="champion").to_dict()
    assert res["slices"][0]["delta"] == {} and res["baseline"] is None
    assert res["slices"][0]["models"]["champion"]["roc_auc"]["ci"] is not None


def test_worker_count_does_not_change_the_result():
    df = make_binary(4000, seed=18)
    chunks = [df.iloc[i:i + 300] for i in range(0, 4000, 300)]
    assert _run(chunks, workers=1) == _run(chunks, workers=2) == _run(chunks, workers=3)


def test_bad_multiclass_and_regression_inputs():
    df = pd.DataFrame({"y": ["a", "b", "zz", "a"], "pa": [0.6, 0.2, 0.5, 0.9], "pb": [0.4, 0.8, 0.5, 0.1]})
    with pytest.raises(EngineInputError, match=r"column 'y'.*classes.*row 2"):
        evaluate(df, task_type="multiclass_classification", label="y", predictions={"m": ["pa", "pb"]},
                 classes=["a", "b"], metrics=["accuracy"], baseline=None, candidate="m", n_boot=0)
    r = pd.DataFrame({"y": [1.0, 2.0, 3.0], "p": [1.0, np.nan, 2.0]})
    with pytest.raises(EngineInputError, match=r"column 'p'.*finite.*row 1"):
        evaluate(r, task_type="regression", label="y", predictions={"m": "p"}, metrics=["mae"], baseline=None,
                 candidate="m", n_boot=0)
