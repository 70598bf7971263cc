"""Every metric against scikit-learn (or the stated reference) to 1e-9, incl. ties, single-class and empty slices."""
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from eval_pipeline.engine import METRICS, SliceConfig, evaluate
from conftest import BINARY_METRICS, make_binary

TOL = 1e-9


def ref_ece(y, p, bins=10):
    edges = np.linspace(0, 1, bins + 1)
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    tot = 0.0
    for k in range(bins):
        m = b == k
        if m.any():
            tot += m.sum() / len(y) * abs(y[m].mean() - p[m].mean())
    return tot


def ref_binary(y, p, t=0.5):
    y = np.asarray(y)
    p = np.asarray(p)
    pred = (p >= t).astype(int)
    out = {"accuracy": skm.accuracy_score(y, pred), "log_loss": skm.log_loss(y, p, labels=[0, 1]),
           "brier": skm.brier_score_loss(y, p, pos_label=1), "ece": ref_ece(y, p)}
    if pred.sum():
        out["precision"] = skm.precision_score(y, pred)
    if y.sum():
        out["recall"] = skm.recall_score(y, pred)
        out["average_precision"] = skm.average_precision_score(y, p)
    if y.sum() or pred.sum():
        out["f1"] = skm.f1_score(y, pred)
    if (y == 0).sum():
        out["specificity"] = skm.recall_score(y, pred, pos_label=0)
    if 0 < y.sum() < len(y):
        out["balanced_accuracy"] = skm.balanced_accuracy_score(y, pred)
        out["roc_auc"] = skm.roc_auc_score(y, p)
    return out


def check_binary(res, df, col_role, slices_filter):
    for s in res.to_dict()["slices"]:
        if s["status"] != "ok":
            continue
        sub = slices_filter(df, s)
        for role, col in col_role.items():
            ref = ref_binary(sub["y"].to_numpy(), sub[col].to_numpy(), res.threshold)
            for m in BINARY_METRICS:
                got = s["models"][role][m]
                if m in ref:
                    assert got["undefined"] is None, (s["slice"], m, got)
                    assert abs(got["value"] - ref[m]) <= TOL, (s["slice"], role, m, got["value"], ref[m])
                else:
                    assert got["value"] is None and got["undefined"], (s["slice"], m, got)


def _filter(df, s):
    m = np.ones(len(df), bool)
    for c, v in s["columns"].items():
        m &= df[c].astype(str).to_numpy() == v
    return df[m]


@pytest.mark.parametrize("round_to", [None, 2, 1])  # 1 and 2 decimals: heavy ties
@pytest.mark.parametrize("threshold", [0.5, 0.37])
def test_binary_all_metrics_match_sklearn(round_to, threshold):
    df = make_binary(4000, seed=1, round_to=round_to)
    res = evaluate(df, task_type="binary_classification", label="y", predictions={"baseline": "b", "candidate": "c"},
                   slices=SliceConfig(columns=["g", "h"], min_size=1), metrics=BINARY_METRICS, threshold=threshold,
                   n_boot=20)
    check_binary(res, df, {"baseline": "b", "candidate": "c"}, _filter)


def test_binary_single_class_and_tiny_slices():
    df = make_binary(600, seed=2, round_to=2)
    df.loc[df.g == "a", "y"] = 1  # single-class slice (all positive)
    df.loc[df.g == "b", "y"] = 0  # single-class slice (all negative)
    df.loc[df.g == "c", "c"] = 0.1  # candidate predicts nothing positive in c
    res = evaluate(df, task_type="binary_classification", label="y", predictions={"baseline": "b", "candidate": "c"},
                   slices=SliceConfig(columns=["g"], min_size=1), metrics=BINARY_METRICS, n_boot=30)
    check_binary(res, df, {"baseline": "b", "candidate": "c"}, _filter)
    d = {s["slice"]: s for s in res.to_dict()["slices"]}
    assert d["g=a"]["models"]["candidate"]["roc_auc"]["undefined"].startswith("single-class")
    assert d["g=b"]["models"]["candidate"]["average_precision"]["undefined"] == "no positive labels in the slice"
    assert "no predicted positives" in d["g=c"]["models"]["candidate"]["precision"]["undefined"]
    assert d["g=a"]["delta"]["roc_auc"]["value"] is None and d["g=a"]["delta"]["roc_auc"]["undefined"]


def test_empty_bin_slice_and_empty_input():
    df = make_binary(500, seed=3)
    res = evaluate(df, task_type="binary_classification", label="y", predictions={"candidate": "c"},
                   slices=SliceConfig(bins={"dist": [0, 1000, 5000, 6000]}, min_size=0), metrics=BINARY_METRICS,
                   n_boot=10, baseline=None)
    d = {s["slice"]: s for s in res.to_dict()["slices"]}
    empty = d["dist=[5000, 6000)"]
    assert empty["n"] == 0 and empty["status"] == "ok"
    for m in BINARY_METRICS:
        assert empty["models"]["candidate"][m] == {"value": None, "ci": None, "undefined": "empty slice"}
    res0 = evaluate(df.iloc[:0], task_type="binary_classification", label="y", predictions={"candidate": "c"},
                    slices=SliceConfig(columns=["g"], min_size=0), metrics=BINARY_METRICS, n_boot=10, baseline=None)
    assert res0.to_dict()["slices"][0]["n"] == 0
    assert res0.to_dict()["slices"][0]["models"]["candidate"]["roc_auc"]["undefined"] == "empty slice"


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(5)
    n, K = 3000, 4
    classes = ["w", "x", "y", "z"]
    y = rng.integers(0, K, n)
    df = pd.DataFrame({"label": np.array(classes)[y], "g": rng.choice(["p", "q"], n)})
    cols = {}
    for role, noise in (("baseline", 1.5), ("candidate", 1.0)):
        logits = rng.normal(0, noise, (n, K))
        logits[np.arange(n), y] += 1.0
        P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        P = np.round(P, 2)  # ties
        names = [f"{role}_{c}" for c in classes]
        for j, c in enumerate(names):
            df[c] = P[:, j]
        cols[role] = names
    df.loc[df.g == "q", "label"] = np.where(df.loc[df.g == "q", "label"] == "w", "x", df.loc[df.g == "q", "label"])
    mets = ["accuracy", "macro_f1", "micro_f1", "weighted_f1", "top_k_accuracy"]
    res = evaluate(df, task_type="multiclass_classification", label="label", predictions=cols, classes=classes,
                   slices=SliceConfig(columns=["g"], min_size=1), metrics=mets, top_k=2, n_boot=20)
    for s in res.to_dict()["slices"]:
        sub = _filter(df, s)
        yt = sub["label"].to_numpy()
        for role, names in cols.items():
            P = sub[names].to_numpy()
            yp = np.array(classes)[np.argmax(P, axis=1)]
            ref = {"accuracy": skm.accuracy_score(yt, yp), "macro_f1": skm.f1_score(yt, yp, average="macro"),
                   "micro_f1": skm.f1_score(yt, yp, average="micro"),
                   "weighted_f1": skm.f1_score(yt, yp, average="weighted"),
                   "top_k_accuracy": skm.top_k_accuracy_score(yt, P, k=2, labels=classes)}
            for m in mets:
                assert abs(s["models"][role][m]["value"] - ref[m]) <= TOL, (s["slice"], role, m)


def test_regression_matches_sklearn():
    rng = np.random.default_rng(6)
    n = 3000
    y = rng.normal(50, 20, n)
    df = pd.DataFrame({"y": y, "b": y + rng.normal(2, 10, n), "c": y + rng.normal(0, 8, n),
                       "g": rng.choice(["a", "b", "k"], n)})
    df.loc[df.g == "k", "y"] = 7.0  # constant label slice: r2 undefined
    mets = ["mae", "rmse", "r2", "mape", "mean_error"]
    res = evaluate(df, task_type="regression", label="y", predictions={"baseline": "b", "candidate": "c"},
                   slices=SliceConfig(columns=["g"], min_size=1), metrics=mets, n_boot=50)
    for s in res.to_dict()["slices"]:
        sub = _filter(df, s)
        for role, col in (("baseline", "b"), ("candidate", "c")):
            yt, yp = sub["y"].to_numpy(), sub[col].to_numpy()
            ref = {"mae": skm.mean_absolute_error(yt, yp), "rmse": skm.root_mean_squared_error(yt, yp),
                   "mape": skm.mean_absolute_percentage_error(yt, yp), "mean_error": float(np.mean(yp - yt))}
            if np.ptp(yt) > 0:
                ref["r2"] = skm.r2_score(yt, yp)
            for m in mets:
                got = s["models"][role][m]
                if m in ref:
                    assert abs(got["value"] - ref[m]) <= TOL * max(1, abs(ref[m])), (s["slice"], m)
                    assert got["ci"][0] <= got["value"] <= got["ci"][1]
                else:
                    assert got["value"] is None and "constant label" in got["undefined"]


def test_registry_complete():
    for name, info in METRICS.items():
        assert info.description and info.task_types and isinstance(info.higher_is_better, bool)
