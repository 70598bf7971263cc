"""The decision report people read (issue 10, item 1), on a synthetic 200,000-row evaluation run through the plain
pipeline steps (real snapshot, Great Expectations, Evidently, skops models, engine):

- verdict, executive summary, recommendation and the deciding gate come first; every plot is an inline <svg>;
  self-contained (no script, no external URL), <= 2 MB, no table wider than 12 columns;
- byte-identical when rendered again, in another process with another hash seed;
- the ROC points are scikit-learn's roc_curve at the sampled thresholds, the area is the engine's exact AUC;
- the curve summaries do not depend on how the rows are chunked (streamed, mergeable histograms);
- the Dagster markdown embeds a small PNG; the report link is a file:// URL locally and a presigned URL on S3
  that really downloads the report from a local S3 server.
"""

import base64
import json
import os
import re
import subprocess
import sys
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.metrics import roc_curve

from eval_pipeline import pipeline, plots
from eval_pipeline.curves import curves_from_batches, report_curves, scored_batches
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.report_html import MAX_COLUMNS, render_report, report_link

from .s3_util import moto_endpoint, s3_env, s3_lake  # noqa: F401
from .toy import fit_interaction_model, fit_model, land, run_steps, toy_frame, toy_spec

MODEL = "toy_model"
N_ROWS = 200_000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Champion v1 and candidate v2; v2 learned from a training extract whose labels are flipped for b == 'z'
    (the demo's kind of data bug), so its slice b=z FAILs its non-inferiority gate."""
    root = tmp_path_factory.mktemp("report")
    lake = Lake(str(root / "lake"))
    frame = toy_frame(N_ROWS, seed=3)
    land(lake, frame, parts=4)
    reg = Registry(lake)
    reg.register(MODEL, "1", sio.dumps(fit_model(frame.iloc[:2000], c=0.05)), flavor="sklearn-skops",
                 artifact_name="model.skops")
    reg.set_champion(MODEL, "1", reason="test setup")
    bad = frame.iloc[:20000].copy()
    bad.loc[bad["b"] == "z", "y"] = 1 - bad.loc[bad["b"] == "z", "y"]
    reg.register(MODEL, "2", sio.dumps(fit_interaction_model(bad)), flavor="sklearn-skops", artifact_name="model.skops")
    spec = toy_spec(
        metrics=["roc_auc", "average_precision", "accuracy", "recall", "specificity", "brier", "ece"],
        model={"name": MODEL, "threshold": 0.4},
        gates=[{"name": "auc_overall", "metric": "roc_auc", "kind": "non_inferiority", "margin": 0.05},
               {"name": "auc_per_b", "metric": "roc_auc", "kind": "non_inferiority", "margin": 0.02, "slices": "b"},
               {"name": "calibration", "metric": "ece", "kind": "absolute", "max": 0.2}],
        evaluation={"bootstrap_replicates": 200})
    ctx, snap, inputs, metrics, out = run_steps(lake, spec, "2")
    result = pipeline.decide(ctx, snap, inputs)
    html = lake.read_text(result["paths"]["report_html"])
    return {"root": root, "lake": lake, "spec": spec, "ctx": ctx, "snap": snap, "inputs": inputs,
            "metrics": metrics, "out": out, "result": result, "html": html}


def _quality_and_drift(ev):
    lake, snap = ev["lake"], ev["snap"]
    quality = lake.read_json(pipeline.quality_paths(ev["ctx"], snap)[0])
    drift = lake.read_json(f"drift/toy/{snap.snapshot_id}/drift.json")
    return quality, drift


def _roles(ev):
    reg = ev["ctx"].registry
    return {"candidate": reg.manifest(MODEL, "2"), "baseline": reg.manifest(MODEL, "1")}


class _Tables(HTMLParser):
    """Column count of every table: header cells and the widest body row (colspan counted)."""

    def __init__(self):
        super().__init__()
        self.widths, self._stack = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._stack.append([0, 0])
        elif tag == "tr" and self._stack:
            self._stack[-1][1] = 0
        elif tag in ("td", "th") and self._stack:
            self._stack[-1][1] += int(dict(attrs).get("colspan") or 1)
            self._stack[-1][0] = max(self._stack[-1][0], self._stack[-1][1])

    def handle_endtag(self, tag):
        if tag == "table" and self._stack:
            self.widths.append(self._stack.pop()[0])


def test_the_report_leads_with_the_decision_and_has_every_plot_inline(evaluated):
    html, result = evaluated["html"], evaluated["result"]
    assert result["verdict"] == "FAIL"
    failing = {(g["gate"], g["slice"]) for g in result["gates"] if g["outcome"] == "FAIL"}
    assert ("auc_per_b", "b=z") in failing and ("auc_per_b", "b=x") not in failing, failing
    # reading order: verdict, summary, recommendation, deciding gates, then the evidence
    pos = [html.index(s) for s in ("<span class=verdict", "<h2>Summary</h2>", "Recommendation.",
                                   "<h3>Gates that decided it</h3>", "id=evidence", 'id="roc-pr"',
                                   "id=reproducibility")]
    assert pos == sorted(pos)
    head = html[:html.index("id=evidence")]
    assert "FAIL" in head and "b=z" in head and "Do not promote toy_model@2" in head
    assert "roc_auc on b=z" in head  # the deciding gate, in words, in the executive summary
    for fid in ("forest-roc_auc", "roc-pr", "reliability", "distributions", "confusion", "drift"):
        m = re.search(rf'<figure id="{fid}">(.*?)</figure>', html, re.S)
        assert m and m.group(1).lstrip().startswith("<svg"), fid
    # the headers say which intervals are which
    assert "multiplicity-adjusted" in html and "95% interval of Δ (unadjusted)" in html
    # the reproducibility manifest
    rep = result["reproducibility"]
    for needle in (rep["spec_sha256"], result["dataset"]["snapshot_id"], result["candidate"]["sha256"],
                   result["baseline"]["sha256"], "bootstrap replicates (B)", "matplotlib", "What would change"):
        assert needle in html, needle
    # self-contained, small, narrow
    assert "<script" not in html and not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "@import" not in html and "url(http" not in html
    assert len(html.encode()) <= 2_000_000
    parser = _Tables()
    parser.feed(html)
    assert parser.widths and max(parser.widths) <= MAX_COLUMNS, parser.widths
    # a paired evaluation has an error analysis (eval_pipeline.error_analysis), linked from the report
    assert "<h2 id=errors>Error analysis</h2>" in html and '<a href="regressed_rows.parquet">' in html


def test_the_report_is_byte_identical_when_rendered_again_in_another_process(evaluated, tmp_path):
    ev = evaluated
    quality, drift = _quality_and_drift(ev)
    curves = report_curves(ev["lake"], ev["spec"], ev["snap"], _roles(ev))
    ea = ev["lake"].read_json(f"{ev['result']['paths']['folder']}/error_analysis.json")
    pdrift = ev["lake"].read_json(f"{ev['result']['paths']['folder']}/prediction_drift.json")
    again = render_report(ev["result"], quality, drift, curves, drift_html_uri=f"drift/toy/{ev['snap'].snapshot_id}"
                          f"/drift.html", quality_uri=f"quality/toy/{ev['snap'].snapshot_id}/report.html",
                          error_analysis=ea, prediction_drift=pdrift)
    assert again == ev["html"]
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"result": ev["result"], "quality": quality, "drift": drift, "curves": curves,
                                "snap": ev["snap"].snapshot_id, "ea": ea, "pd": pdrift}))
    script = ("import json,sys\nfrom eval_pipeline.report_html import render_report\n"
              "a=json.load(open(sys.argv[1]))\ns=a['snap']\n"
              "sys.stdout.write(render_report(a['result'],a['quality'],a['drift'],a['curves'],"
              "drift_html_uri=f'drift/toy/{s}/drift.html',quality_uri=f'quality/toy/{s}/report.html',"
              "error_analysis=a['ea'],prediction_drift=a['pd']))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script, str(args)], capture_output=True, env=env, check=True,
                         timeout=120)
    assert out.stdout.decode() == ev["html"]


def _rows(ev):
    ys, scores = [], {"candidate": [], "baseline": []}
    for y, preds in scored_batches(ev["lake"], ev["spec"], ev["snap"], _roles(ev)):
        ys.append(y)
        for r in scores:
            scores[r].append(preds[r])
    return np.concatenate(ys), {r: np.concatenate(v) for r, v in scores.items()}


def test_roc_points_are_sklearns_at_the_sampled_thresholds_and_the_area_is_the_exact_auc(evaluated):
    ev = evaluated
    y, scores = _rows(ev)
    assert len(y) == ev["metrics"]["n_rows"] == N_ROWS
    curves = report_curves(ev["lake"], ev["spec"], ev["snap"], _roles(ev))
    [overall] = [s for s in ev["metrics"]["slices"] if s["slice"] == "overall"]
    for role in ("candidate", "baseline"):
        c = curves["models"][role]
        roc = c["roc"]
        assert 100 < len(roc["fpr"]) <= 2000
        fpr, tpr, thr = roc_curve(y, scores[role], drop_intermediate=False)
        for f, t, th in zip(roc["fpr"], roc["tpr"], roc["threshold"]):
            if th is None:  # the (0, 0) point above every score
                assert (f, t) == (0.0, 0.0)
                continue
            j = np.flatnonzero(thr >= th)[-1]  # sklearn's operating point at threshold th: score >= th
            assert abs(fpr[j] - f) < 1e-12 and abs(tpr[j] - t) < 1e-12
        exact = overall["models"][role]["roc_auc"]["value"]
        assert abs(c["auc"] - exact) < 2e-4  # area under the binned curve (ties within a 1e-4-wide bin)
        assert abs(np.trapezoid(roc["tpr"], roc["fpr"]) - exact) < 1e-3  # the thinned curve that is drawn
        # the confusion matrix at the threshold is exact
        pred = scores[role] >= ev["spec"].model.threshold
        assert c["confusion"]["matrix"] == [[int(((y == 0) & ~pred).sum()), int(((y == 0) & pred).sum())],
                                            [int(((y == 1) & ~pred).sum()), int(((y == 1) & pred).sum())]]


def test_curve_summaries_do_not_depend_on_chunking():
    rng = np.random.default_rng(7)
    n = 30_000
    y = (rng.random(n) < 0.3).astype(np.int64)
    s = {"candidate": rng.beta(2 + y, 3), "baseline": np.round(rng.beta(2 + y, 3.5), 2)}

    def batches(size):
        return [(y[i:i + size], {r: v[i:i + size] for r, v in s.items()}) for i in range(0, n, size)]

    one = curves_from_batches(batches(n), task_type="binary_classification", roles=list(s), threshold=0.4)
    many = curves_from_batches(batches(997), task_type="binary_classification", roles=list(s), threshold=0.4)
    for role in s:
        a, b = one["models"][role], many["models"][role]
        for key in ("roc", "pr", "confusion", "distribution", "auc", "average_precision"):
            assert a[key] == b[key], key
        assert np.allclose(a["reliability"]["mean_predicted"], b["reliability"]["mean_predicted"], rtol=1e-12)


def test_multiclass_and_regression_plots_render():
    rng = np.random.default_rng(1)
    n, classes = 5000, ["early", "late", "on_time"]
    y = rng.integers(0, 3, n)
    p = rng.dirichlet([1, 1, 1], n)
    p[np.arange(n), y] += 0.5
    p /= p.sum(axis=1, keepdims=True)
    mc = curves_from_batches([(y, {"candidate": p, "baseline": p[:, [0, 2, 1]]})],
                             task_type="multiclass_classification", roles=["candidate", "baseline"], classes=classes)
    assert plots.multiclass_roc_svg(mc["models"]).startswith("<svg")
    conf = mc["models"]["candidate"]["confusion"]["matrix"]
    assert sum(map(sum, conf)) == n and np.trace(conf) == int((p.argmax(1) == y).sum())
    assert plots.confusion_svg(mc["models"]).startswith("<svg")
    yr = rng.normal(size=n)
    reg = curves_from_batches([(yr, {"candidate": yr + rng.normal(0, .3, n)})], task_type="regression",
                              roles=["candidate"])
    assert reg["models"]["candidate"]["n"] == n and plots.regression_svg(reg["models"]).startswith("<svg")


def test_dagster_markdown_embeds_a_small_png_and_links_the_report(evaluated):
    out, lake, result = evaluated["out"], evaluated["lake"], evaluated["result"]
    md = out["plots_markdown"]
    m = re.search(r"!\[key plots\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    png = base64.b64decode(m.group(1))
    assert png.startswith(b"\x89PNG") and len(png) < 100_000
    url = out["report_url"]
    assert url.startswith("file://") and f"({url})" in md
    assert urllib.request.urlopen(url).read() == lake.read_bytes(result["paths"]["report_html"])
    # report.md (the "report" metadata) carries the summary and the same plots, but no lake-dependent link
    written = lake.read_text(result["paths"]["report_md"])
    assert "## Summary" in written and "## Key plots" in written and "file://" not in written
    # a re-run of the complete evidence set writes nothing and still returns the plots and the link
    again = pipeline.write_report(evaluated["ctx"], evaluated["snap"], evaluated["inputs"])
    assert again["plots_markdown"] == md and again["markdown"] == written
    # taken from report.md, it is what drawing the key plots anew gives (the same bytes: the PNG is deterministic)
    from eval_pipeline.curves import report_curves
    from eval_pipeline.report_html import engine_areas

    ctx, inputs = evaluated["ctx"], evaluated["inputs"]
    roles = dict(zip(("candidate", "baseline"), pipeline.run_models(ctx, inputs)))
    curves = report_curves(lake, ctx.spec, evaluated["snap"], roles)
    assert md == plots.ui_markdown(result, engine_areas(curves, result), url)


def test_report_link_on_s3_is_a_presigned_url_that_downloads_the_report(s3_lake):  # noqa: F811
    s3_lake.write_text("evaluations/x/report.html", "<html>hello</html>")
    url = report_link(s3_lake, "evaluations/x/report.html", expiration=600)
    assert url.startswith("http://127.0.0.1:") and "Signature=" in url and "Expires=" in url  # SigV2 or SigV4
    assert urllib.request.urlopen(url, timeout=10).read() == b"<html>hello</html>"
