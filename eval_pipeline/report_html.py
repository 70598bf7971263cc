"""The decision report as one self-contained HTML page people read, with plots (inline SVG), and its markdown twin.

Order follows the reader: the verdict, a one-paragraph executive summary and a recommendation first; then the
evidence (forest plot of per-slice deltas per gated metric, gates), the models' curves (ROC / PR, reliability, score
distributions, confusion matrices at the threshold), overall and per-slice metrics (one collapsible table per metric),
data quality, drift, error analysis (only when such data exists) and the reproducibility manifest.

Self-contained: inline CSS and SVG, no script, no external font, image or link needed to read it; every lake file is
named relative to the lake root (the same bytes in any lake). Narrow: no table has more than ``MAX_COLUMNS``
columns, long tables are collapsed (``<details>``), plots scale to the page width.

Entry points: :func:`render_report` (HTML), :func:`render_report_markdown` (markdown with the key plots as an
embedded PNG), :func:`report_link` (file:// URL or a presigned S3 URL) and :func:`write_report_files` (what
``pipeline.write_report`` runs).
"""

from __future__ import annotations

import html
import math

from . import plots
from .curves import report_curves
from .packages import package_versions
from .report import VERDICT_COLOURS, _deciding_gates, _fmt, _what_changes

MAX_COLUMNS = 12
PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's maximum
e = html.escape


# -- words -----------------------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{x * 100:.4g} %"


def _signed(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.4f}"


def _overall(result: dict) -> dict:
    for s in result.get("metrics", {}).get("slices", []):
        if s.get("slice") == "overall":
            return s
    return {}


def _gate_words(g: dict) -> str:
    ci = g.get("ci")
    lvl = g.get("adjusted_alpha")
    interval = (f"adjusted {_pct(1 - 2 * lvl)} interval [{_fmt(ci[0])}, {_fmt(ci[1])}]"
                if ci and lvl is not None else "no interval")
    if g.get("kind") == "non_inferiority":
        return (f"{g['metric']} on {g['slice']}: Δ {_signed(g.get('delta'))} "
                f"({_fmt(g.get('value'))} vs {_fmt(g.get('baseline_value'))}), {interval}, margin {g.get('margin')}")
    bounds = " and ".join(x for x in (f"min {g['min']}" if g.get("min") is not None else "",
                                      f"max {g['max']}" if g.get("max") is not None else "") if x)
    return f"{g['metric']} on {g['slice']}: {_fmt(g.get('value'))}, {interval}, {bounds}"


def executive_summary(result: dict, quality: dict | None, drift: dict | None) -> str:
    """One paragraph: what was compared on what, the headline number, the gates, data quality and drift."""
    v = result["verdict"]
    cand = result["candidate"]["ref"]
    base = (result.get("baseline") or {}).get("ref")
    n = result.get("metrics", {}).get("n_rows")
    ds = result.get("dataset", {})
    where = f"on {n:,} evaluation rows of snapshot {ds.get('snapshot_id')}" if n is not None else \
        f"on snapshot {ds.get('snapshot_id')}"
    if result.get("mode") == "monitoring":
        first = f"Monitoring run: the champion {cand} was re-checked against its absolute gates {where}."
    elif base:
        first = f"Candidate {cand} was compared with the champion {base} {where}."
    else:
        first = f"Candidate {cand} was evaluated alone (no champion yet: absolute gates only) {where}."
    parts = [first]
    metric, _ = plots.key_metric(result)
    metric = metric or (result.get("metrics", {}).get("metrics") or [None])[0]
    ov = _overall(result)
    if metric and ov:
        c = ov.get("models", {}).get("candidate", {}).get(metric, {})
        b = ov.get("models", {}).get("baseline", {}).get(metric, {})
        d = ov.get("delta", {}).get(metric, {})
        conf = result.get("metrics", {}).get("confidence", 0.95)
        if b and d:
            ci = d.get("ci")
            parts.append(f"Overall {metric} is {_fmt(c.get('value'))} vs {_fmt(b.get('value'))} "
                         f"(Δ {_signed(d.get('value'))}" + (f", {conf:.0%} interval [{_fmt(ci[0])}, {_fmt(ci[1])}]"
                                                            if ci else "") + ").")
        elif c:
            parts.append(f"Overall {metric} is {_fmt(c.get('value'))}.")
    counts = result.get("gate_summary", {}).get("counts", {})
    total = sum(counts.values())
    if total:
        parts.append(f"{counts.get('PASS', 0)} of {total} gate rows passed, {counts.get('FAIL', 0)} failed and "
                     f"{counts.get('INCONCLUSIVE', 0)} were inconclusive.")
    deciding = [g for g in result.get("gates", []) if g.get("outcome") == v] if v != "PASS" else []
    if deciding:
        shown = "; ".join(_gate_words(g) for g in deciding[:3])
        more = f" (and {len(deciding) - 3} more)" if len(deciding) > 3 else ""
        parts.append(f"The verdict is {v} because of {shown}{more}.")
    else:
        parts.append(f"The verdict is {v}.")
    if quality is not None:
        st = quality.get("statistics", {})
        parts.append(f"Data quality {'passed' if quality.get('success') else 'FAILED'} "
                     f"({st.get('successful_expectations', '?')} of {st.get('evaluated_expectations', '?')} "
                     f"expectations met).")
    if drift:
        cols = drift.get("columns", [])
        nd = sum(1 for c in cols if c.get("drifted"))
        parts.append(f"{nd} of {len(cols)} monitored columns drifted between the reference and current windows"
                     + (" (dataset drift)." if drift.get("dataset_drift") else "."))
    return " ".join(parts)


def recommendation(result: dict) -> str:
    v = result["verdict"]
    cand = result["candidate"]["ref"]
    mode = result.get("mode")
    base = (result.get("baseline") or {}).get("ref")
    if mode == "monitoring":
        return {"PASS": f"No action: the champion {cand} still meets its absolute gates.",
                "FAIL": f"Act: the champion {cand} no longer meets its absolute gates. Investigate the failing gates "
                        f"(data drift, label changes) and retrain or roll back.",
                }.get(v, f"Watch: the evidence on {cand} is not conclusive; re-check on more data.")
    if not base:
        return {"PASS": f"{cand} meets the absolute gates. It can be named the first champion "
                        f"(`eval-pipeline promote --initial`).",
                "FAIL": f"Do not deploy {cand}: it misses an absolute gate."}.get(
            v, f"Do not deploy {cand} yet: the evidence is not conclusive (more data or replicates needed).")
    if v == "PASS":
        return (f"Promote {cand}: it is non-inferior to {base} overall and in every gated slice, and meets the "
                f"absolute gates (`eval-pipeline promote --version {result['candidate']['version']}`).")
    if v == "FAIL":
        slices = sorted({g["slice"] for g in result.get("gates", []) if g.get("outcome") == "FAIL"})
        return (f"Do not promote {cand}; keep {base}. Investigate the failing slice"
                f"{'s' if len(slices) > 1 else ''} ({', '.join(slices[:6])}{', …' if len(slices) > 6 else ''}) "
                f"before a new candidate: a regression confined to one slice usually points at its training data.")
    need = [g for g in result.get("gates", []) if g.get("outcome") == "INCONCLUSIVE" and g.get("n_needed")]
    hint = ""
    if need:
        g = max(need, key=lambda g: g["n_needed"])
        hint = f" For example {g['metric']} on {g['slice']} would need about {int(g['n_needed']):,} rows."
    return (f"Do not promote {cand} yet: the data cannot show it is no worse than {base} in every gated slice. "
            f"Evaluate on more data (or fewer, larger slices) and re-run.{hint}")


# -- HTML pieces -----------------------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list], outcome_col: int | None = None, notes: list[str] | None = None,
           cls: str = "") -> str:
    if len(header) > MAX_COLUMNS:
        raise ValueError(f"table with {len(header)} columns > {MAX_COLUMNS}")
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        cells = []
        for j, c in enumerate(r):
            style = ""
            if j == outcome_col and c in VERDICT_COLOURS:
                style = f' class="o{c[0]}"'
            cells.append(f"<td{style}>{e(str(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
        if notes and notes[i]:
            body.append(f'<tr class=note><td colspan="{len(header)}">{e(notes[i])}</td></tr>')
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(svg: str | None, fid: str, caption: str) -> str:
    if not svg:
        return ""
    return f'<figure id="{fid}">{svg}<figcaption>{e(caption)}</figcaption></figure>'


GATE_HEADER = ["gate", "metric", "slice", "outcome", "candidate", "baseline", "Δ", "adjusted interval", "level",
               "n"]


def _gate_table(gates: list[dict]) -> str:
    rows, notes = [], []
    for g in gates:
        ci = g.get("ci")
        lvl = g.get("adjusted_alpha")
        rows.append([g.get("gate") or g["metric"], g["metric"], g["slice"], g["outcome"], _fmt(g.get("value")),
                     _fmt(g.get("baseline_value")), _signed(g.get("delta")),
                     f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "—",
                     _pct(1 - 2 * lvl) if lvl is not None else "—", f"{g['n']:,}" if g.get("n") is not None else "—"])
        notes.append(g.get("rule", ""))
    return _table(GATE_HEADER, rows, outcome_col=3, notes=notes, cls="gates")


def _metric_tables(result: dict, open_metrics: set[str]) -> str:
    m = result.get("metrics", {})
    metrics = m.get("metrics", [])
    paired = result.get("baseline") is not None
    conf = m.get("confidence", 0.95)
    out = []
    for metric in metrics:
        rows = []
        for s in m.get("slices", []):
            cand = s.get("models", {}).get("candidate", {}).get(metric, {})
            row = [s["slice"], f"{s['n']:,}", s.get("status", "")]
            if paired:
                base = s.get("models", {}).get("baseline", {}).get(metric, {})
                d = s.get("delta", {}).get(metric, {}) or {}
                ci = d.get("ci")
                row += [_fmt(cand.get("value")), _fmt(base.get("value")), _signed(d.get("value")),
                        f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "—"]
            else:
                ci = cand.get("ci")
                row += [_fmt(cand.get("value")), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "—"]
            rows.append(row)
        header = ["slice", "n", "status"] + (["candidate", "baseline", "Δ", f"{conf:.0%} interval of Δ"] if paired
                                             else ["candidate", f"{conf:.0%} interval"])
        opened = " open" if metric in open_metrics else ""
        out.append(f"<details{opened}><summary>{e(metric)} — {len(rows)} slices</summary>"
                   f"{_table(header, rows)}</details>")
    return "".join(out)


def _overall_table(result: dict) -> str:
    m = result.get("metrics", {})
    conf = m.get("confidence", 0.95)
    ov = _overall(result)
    paired = result.get("baseline") is not None
    rows = []
    for metric in m.get("metrics", []):
        c = ov.get("models", {}).get("candidate", {}).get(metric, {})
        if paired:
            b = ov.get("models", {}).get("baseline", {}).get(metric, {})
            d = ov.get("delta", {}).get(metric, {}) or {}
            ci = d.get("ci")
            rows.append([metric, _fmt(c.get("value")), _fmt(b.get("value")), _signed(d.get("value")),
                         f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "—"])
        else:
            ci = c.get("ci")
            rows.append([metric, _fmt(c.get("value")), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "—"])
    header = (["metric", "candidate", "baseline", "Δ", f"{conf:.0%} interval of Δ (unadjusted)"] if paired
              else ["metric", "candidate", f"{conf:.0%} interval (unadjusted)"])
    return _table(header, rows)


def _quality_section(quality: dict | None, quality_rel: str | None) -> str:
    if quality is None:
        return "<p>No data-quality result.</p>"
    st = quality.get("statistics", {})
    by: dict[str, list[int]] = {}
    for r in quality.get("results", []):
        k = by.setdefault(r.get("check") or r.get("expectation") or "?", [0, 0])
        k[0] += 1
        k[1] += 0 if r.get("success") else 1
    ok = quality.get("success")
    parts = [f"<p class=\"{'pass' if ok else 'fail'}\">{'Passed' if ok else 'FAILED'}: "
             f"{st.get('successful_expectations', '?')} of {st.get('evaluated_expectations', '?')} expectations met"
             + (f" (full report: <code>{e(quality_rel)}</code>)" if quality_rel else "") + ".</p>"]
    if by:
        parts.append(_table(["check", "expectations", "failed"], [[k, v[0], v[1]] for k, v in by.items()]))
    failed = [r.get("message") for r in quality.get("results", []) if not r.get("success")]
    if failed:
        parts.append("<ul>" + "".join(f"<li>{e(str(m))}</li>" for m in failed) + "</ul>")
    return "".join(parts)


def _prediction_drift_part(pdrift: dict | None) -> str:
    """The short prediction-drift table (``prediction_drift.json`` of the evidence set), or nothing."""
    if not pdrift:
        return ""
    smp = pdrift.get("sample") or {}
    rows_words = f"{smp.get('reference_rows', 0):,} reference and {smp.get('current_rows', 0):,} current rows"
    if smp.get("sampled"):
        rows_words += (f" (a seeded sample of at most {smp.get('max_rows', 0):,} rows per window from "
                       f"{smp.get('reference_rows_total', 0):,} / {smp.get('current_rows_total', 0):,}, "
                       f"seed {smp.get('seed')})")
    parts = ["<h3>Prediction drift</h3>",
             f"<p>Each model's score distribution, reference vs current drift window, scored by the model on "
             f"{rows_words}; Evidently's default method per score column"
             + ("; one row per class probability" if pdrift.get("multiclass") else "")
             + ". Details: <code>prediction_drift.json</code> in the evidence folder.</p>"]
    rows = [[m.get("role", ""), m.get("model", ""), m.get("column", ""), m.get("method") or "",
             _fmt(m.get("score")), _fmt(m.get("threshold")), "yes" if m.get("drifted") else "no"]
            for m in pdrift.get("models", [])]
    if rows:
        parts.append(_table(["role", "model", "score column", "method", "score", "threshold", "drifted"], rows))
    skipped = pdrift.get("skipped") or []
    if skipped:
        parts.append("<p>Not compared:</p><ul>" + "".join(
            f"<li>{e(str(k.get('role')))} {e(str(k.get('model')))}: {e(str(k.get('reason')))}</li>"
            for k in skipped) + "</ul>")
    return "".join(parts)


def _drift_section(drift: dict | None, drift_html_uri: str | None, prediction_drift: dict | None = None) -> str:
    if not drift:
        return "<p>No drift report for this snapshot.</p>" + _prediction_drift_part(prediction_drift)
    cols = drift.get("columns", [])
    nd = sum(1 for c in cols if c.get("drifted"))
    ref, cur = drift.get("reference_rows"), drift.get("current_rows")
    sizes = (f"; reference {ref:,} rows, current {cur:,} rows" + (", sampled" if drift.get("sampled") else "")
             if isinstance(ref, int) and isinstance(cur, int) else "")
    link = (f" Evidently's interactive report: <code>{e(drift_html_uri)}</code> (relative to the lake root)."
            if drift_html_uri else "")
    parts = [f"<p>{nd} of {len(cols)} columns drifted (dataset drift: {e(str(drift.get('dataset_drift')))}"
             f"{sizes}).{link}</p>",
             _figure(plots.drift_svg(drift), "drift", "Drift score per column with its threshold.")]
    rows = [[c["column"], c.get("kind", ""), c.get("method", ""), _fmt(c.get("score")), _fmt(c.get("threshold")),
             "yes" if c.get("drifted") else "no"] for c in cols]
    parts.append("<details><summary>drift table</summary>"
                 + _table(["column", "kind", "method", "score", "threshold", "drifted"], rows) + "</details>")
    parts.append(_prediction_drift_part(prediction_drift))
    return "".join(parts)


def _rate_ci(rate, ci) -> str:
    return "—" if rate is None else f"{rate:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def _flip_table(rows: list[dict]) -> str:
    header = ["slice", "n", "both right", "right→wrong", "wrong→right", "both wrong", "right→wrong rate",
              "wrong→right rate", "net regression", "status"]
    body = [[r.get("slice"), r.get("n"), r.get("both_right"), r.get("right_to_wrong"), r.get("wrong_to_right"),
             r.get("both_wrong"), _rate_ci(r.get("right_to_wrong_rate"), r.get("right_to_wrong_ci")),
             _rate_ci(r.get("wrong_to_right_rate"), r.get("wrong_to_right_ci")),
             _rate_ci(r.get("net_regression_rate"), r.get("net_regression_ci")), r.get("status", "")]
            for r in rows[:200]]
    return _table(header, body)


def _error_section(error_analysis: dict | None) -> str:
    """Rendered only when the error-analysis step wrote data (eval_pipeline.error_analysis): the summary, the most
    regressed slices, the flip table per slice, the top regressed rows and a link to their parquet file (in the
    report's own folder). Any other list of row dicts is shown as a table too."""
    if not error_analysis:
        return ""
    parts = ["<h2 id=errors>Error analysis</h2>"]
    if error_analysis.get("summary"):
        parts.append(f"<p>{e(str(error_analysis['summary']))}</p>")
    conf = error_analysis.get("confidence")
    if "slices" in error_analysis:
        parts.append(f"<p>Rates with {_pct(conf) if conf else ''} Wilson intervals; net regression = right→wrong − "
                     f"wrong→right over n (= −accuracy Δ) with Newcombe's paired interval; not adjusted for "
                     f"multiplicity.</p>")
    worst = error_analysis.get("most_regressed")
    if isinstance(worst, list):
        parts.append("<h3>Slices where the candidate regresses most</h3>"
                     + (_flip_table(worst) if worst else "<p>None: no sized slice regresses on net.</p>"))
    if isinstance(error_analysis.get("slices"), list):
        rows = error_analysis["slices"]
        parts.append(f"<details><summary>flip table per slice ({len(rows)} slices)</summary>{_flip_table(rows)}"
                     f"</details>")
    for key, rows in error_analysis.items():
        if key in ("most_regressed", "slices") or not isinstance(rows, list) or not rows \
                or not isinstance(rows[0], dict):
            continue
        header = list(rows[0])[:MAX_COLUMNS]
        body = [[_fmt(r.get(h)) for h in header] for r in rows[:200]]
        parts.append(f"<details><summary>{e(key)} ({len(rows)} rows)</summary>{_table(header, body)}</details>")
    if error_analysis.get("rows_uri"):
        name = error_analysis.get("rows_file")
        link = f"<a href=\"{e(str(name))}\">{e(str(name))}</a> (next to this report), " if name else ""
        parts.append(f"<p>Rows with their features: {link}<code>{e(str(error_analysis['rows_uri']))}</code> "
                     f"(relative to the lake root).</p>")
    return "".join(parts)


def renderer_versions() -> dict[str, str]:
    return package_versions(("matplotlib",))


def _manifest(result: dict) -> str:
    rep = result["reproducibility"]
    ds = result["dataset"]
    rows = [["spec sha256", rep["spec_sha256"]], ["snapshot id", ds["snapshot_id"]],
            ["snapshot content hash", ds["content_hash"]], ["snapshot rows", f"{ds['rows']:,}"],
            ["time range", " … ".join(map(str, ds.get("time_range") or []))],
            ["evaluation window", " … ".join(str(x or "open") for x in ds.get("evaluation_window") or [])],
            ["candidate", f"{result['candidate']['ref']} ({result['candidate'].get('flavor', '')})"],
            ["candidate sha256", result["candidate"]["sha256"]]]
    if result.get("baseline"):
        rows += [["baseline", f"{result['baseline']['ref']} ({result['baseline'].get('flavor', '')})"],
                 ["baseline sha256", result["baseline"]["sha256"]]]
    rows += [["seed", str(rep["seed"])], ["bootstrap replicates (B)", str(rep["bootstrap_replicates"])],
             ["evidence id", str(result.get("evidence_id", ""))]]
    pkgs = [[k, v] for k, v in rep["packages"].items()] + [[k, f"{v} (report plots)"]
                                                          for k, v in renderer_versions().items()]
    return (_table(["what", "value"], rows, cls="kv") + "<details><summary>package versions</summary>"
            + _table(["package", "version"], pkgs) + "</details>")


CSS = ("body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5rem auto;padding:0 1rem;"
       "color:#1f2328;max-width:1000px;line-height:1.45}"
       "h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem;"
       "margin-top:2rem}"
       "table{border-collapse:collapse;font-size:13px;margin:.5rem 0 1rem;max-width:100%}"
       "th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:left;vertical-align:top;overflow-wrap:anywhere}"
       "th{background:#f6f8fa}tr.note td{color:#57606a;font-size:12px;border-top:none;background:#fbfcfd}"
       ".oP{color:#1a7f37;font-weight:600}.oF{color:#cf222e;font-weight:600}.oI{color:#9a6700;font-weight:600}"
       ".verdict{color:#fff;padding:2px 10px;border-radius:6px;font-size:.8em;vertical-align:middle}"
       ".summary{font-size:15px}.rec{border-left:4px solid;padding:.5rem .9rem;background:#f6f8fa;font-size:15px}"
       "code{font-size:12px;overflow-wrap:anywhere}figure{margin:1rem 0}"
       "svg{max-width:100%;height:auto;display:block}"
       "figcaption{font-size:12px;color:#57606a}details{margin:.3rem 0}summary{cursor:pointer;font-weight:600}"
       ".pass{color:#1a7f37}.fail{color:#cf222e}nav{font-size:13px;color:#57606a}nav a{margin-right:.6rem}")


def render_report(result: dict, quality: dict | None, drift: dict | None, curves: dict | None = None, *,
                  drift_html_uri: str | None = None, quality_uri: str | None = None,
                  error_analysis: dict | None = None, prediction_drift: dict | None = None) -> str:
    """The whole page (str). ``curves`` from :func:`eval_pipeline.curves.report_curves` (None: no curve plots);
    ``prediction_drift``: the evidence set's ``prediction_drift.json`` (a table in the drift section)."""
    from .engine.catalogue import METRICS

    v = result["verdict"]
    colour = VERDICT_COLOURS.get(v, "#333")
    refs = {"candidate": result["candidate"]["ref"], "baseline": (result.get("baseline") or {}).get("ref")}
    curves = engine_areas(curves, result)  # legends print the engine's exact AUC / AP
    models = (curves or {}).get("models") or {}
    task_type = result.get("task_type") or (curves or {}).get("task_type")
    conf = result.get("metrics", {}).get("confidence", 0.95)
    s = [f"<h1>{e(result['task'])} <span class=verdict style='background:{colour}'>{e(v)}</span></h1>",
         "<nav><a href='#evidence'>evidence</a><a href='#gates'>gates</a><a href='#models'>models</a>"
         "<a href='#metrics'>metrics</a><a href='#quality'>data quality</a><a href='#drift'>drift</a>"
         + ("<a href='#errors'>error analysis</a>" if error_analysis else "")
         + ("<a href='#fairness'>fairness</a>" if result.get("metrics", {}).get("fairness") else "")
         + ("<a href='#robustness'>robustness</a>" if result.get("metrics", {}).get("robustness") else "")
         + ("<a href='#suites'>suites</a>" if result.get("metrics", {}).get("suites") else "")
         + "<a href='#reproducibility'>reproducibility</a></nav>",
         "<h2>Summary</h2>",
         f"<p class=summary>{e(executive_summary(result, quality, drift))}</p>",
         f"<p class=rec style='border-color:{colour}'><strong>Recommendation.</strong> "
         f"{e(recommendation(result))}</p>"]
    deciding = _deciding_gates(result)
    if deciding and v != "PASS":
        s += ["<h3>Gates that decided it</h3>", _gate_table(deciding)]

    # evidence: forest plots per gated (non-inferiority) metric
    s.append("<h2 id=evidence>Per-slice deltas (forest plots)</h2>")
    ni_metrics = list(dict.fromkeys(g["metric"] for g in result.get("gates", [])
                                    if g.get("kind") == "non_inferiority"))
    if not ni_metrics:
        s.append("<p>No non-inferiority gate (no baseline comparison): no delta to plot.</p>")
    for metric in ni_metrics:
        rows, left_out = plots.forest_rows(result, metric)
        hib = METRICS[metric].higher_is_better if metric in METRICS else True
        svg = plots.forest_svg(rows, metric, hib, conf, title=f"{metric}: candidate − baseline per slice")
        cap = (f"Dots: paired delta; grey: {conf:.0%} bootstrap interval (unadjusted); coloured band: the gate's "
               f"multiplicity-adjusted interval ({result.get('gate_summary', {}).get('multiplicity', '')}), green "
               f"PASS / red FAIL / amber INCONCLUSIVE; red tick: the gate's non-inferiority limit.")
        if left_out:
            cap += (f" {left_out} ungated slices are not shown (the plot keeps every gated slice and the "
                    f"{plots.FOREST_MAX_ROWS} slices in all whose intervals reach worst); the tables below list all.")
        s.append(_figure(svg, f"forest-{metric}", cap))

    s += ["<h2 id=gates>All gates</h2>",
          "<p>Intervals here are the gates' <strong>multiplicity-adjusted</strong> two-sided intervals (column "
          f"<em>level</em>; {e(str(result.get('gate_summary', {}).get('multiplicity', '')))} over "
          f"{result.get('gate_summary', {}).get('resolution', {}).get('k_rows', '?')} gate rows), wider than the "
          f"unadjusted {conf:.0%} intervals of the metric tables. Each row's decision rule is under it.</p>",
          _gate_table(result["gates"]) if result.get("gates") else "<p>No gates.</p>"]

    s.append("<h2 id=models>How the models score</h2>")
    if task_type == "binary_classification" and models:
        s += [_figure(plots.roc_pr_svg(models, refs), "roc-pr",
                      "ROC and precision–recall curves on all evaluation rows (exact operating points at up to "
                      "2,000 thresholds; area from 10,000 score bins)."),
              _figure(plots.reliability_svg(models, refs, ece=_overall_values(result, "ece")), "reliability",
                      "Observed frequency vs mean predicted probability per calibration bin (the ECE bins); "
                      "bars: rows per bin."),
              _figure(plots.distributions_svg(models, refs), "distributions",
                      "Score distributions by label, with the decision threshold."),
              _figure(plots.confusion_svg(models, refs), "confusion",
                      "Confusion matrices at the decision threshold (counts and share of each actual class).")]
    elif task_type == "multiclass_classification" and models:
        s += [_figure(plots.multiclass_roc_svg(models, refs), "roc-pr", "One-vs-rest ROC curves per class."),
              _figure(plots.confusion_svg(models, refs), "confusion",
                      "Confusion matrices per class (argmax prediction; counts and share of each actual class).")]
    elif task_type == "regression" and models:
        s.append(_figure(plots.regression_svg(models, refs), "regression",
                         "Predicted vs actual (rows per cell, log scale) and residual distributions."))
    else:
        s.append("<p>No row-level data for curves.</p>")

    s += ["<h2 id=metrics>Metrics</h2>", "<h3>Overall</h3>", _overall_table(result),
          "<h3>Per slice</h3>", "<p>One table per metric (click to open); intervals are the unadjusted "
          f"{conf:.0%} bootstrap intervals. Slices marked too_small are reported but not gated.</p>",
          _metric_tables(result, set(ni_metrics))]
    warnings = result.get("metrics", {}).get("warnings", []) + result.get("gate_summary", {}).get("warnings", [])
    if warnings:
        s += ["<h3>Warnings</h3>", "<ul>" + "".join(f"<li>{e(w)}</li>" for w in warnings) + "</ul>"]
    from .report_fairness import fairness_html

    s.append(fairness_html(result.get("metrics", {}).get("fairness"), _table))  # empty without a fairness section
    from .report_robustness import robustness_html

    s.append(robustness_html(result.get("metrics", {}).get("robustness"), _table, _gate_table))  # empty without one
    from .report_suites import suites_html

    s.append(suites_html(result.get("metrics", {}).get("suites"), _table, _gate_table))  # empty without suites
    s += ["<h2 id=quality>Data quality</h2>", _quality_section(quality, quality_uri),
          "<h2 id=drift>Drift</h2>", _drift_section(drift, drift_html_uri, prediction_drift),
          _error_section(error_analysis),
          "<h2 id=reproducibility>Reproducibility</h2>", _manifest(result),
          "<p>What would change this result:</p><ul>"
          + "".join(f"<li>{e(w)}</li>" for w in _what_changes(result)) + "</ul>"]
    return (f"<!doctype html><html lang=en><head><meta charset='utf-8'>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{e(result['task'])}: {e(v)}</title><style>{CSS}</style></head><body>{''.join(s)}</body></html>\n")


def _overall_values(result: dict, metric: str) -> dict:
    ov = _overall(result)
    return {role: (vals.get(metric) or {}).get("value") for role, vals in ov.get("models", {}).items()}


# -- markdown and links ----------------------------------------------------------------------------------------------
PLOTS_HEADING = "## Key plots"


def render_report_markdown(base_markdown: str, result: dict, quality: dict | None, drift: dict | None,
                           curves: dict | None) -> str:
    """The existing markdown report with the executive summary, the recommendation and the key plots (an
    embedded PNG) inserted after its title line and summary sentence. No link: the file's bytes must not depend on
    where the lake is (the asset adds the link, see :func:`eval_pipeline.plots.ui_markdown`)."""
    lines = base_markdown.split("\n")
    cut = 4 if len(lines) > 3 and not lines[3].strip() else min(3, len(lines))
    head, rest = lines[:cut], lines[cut:]
    extra = ["## Summary", "", executive_summary(result, quality, drift), "",
             f"**Recommendation.** {recommendation(result)}", ""]
    png = plots.ui_png(result, engine_areas(curves, result))
    if png:
        import base64

        extra += [PLOTS_HEADING, "", f"![key plots](data:image/png;base64,{base64.b64encode(png).decode('ascii')})",
                  ""]
    from .report_fairness import fairness_markdown

    from .report_robustness import robustness_markdown
    from .report_suites import suites_markdown

    return ("\n".join(head + extra + rest) + fairness_markdown(result)  # empty without a fairness section
            + robustness_markdown(result.get("metrics", {}).get("robustness"))  # empty without robustness
            + suites_markdown(result.get("metrics", {}).get("suites")))  # empty without evaluation suites


def plots_markdown_from(markdown: str, result: dict, report_url: str | None = None) -> str:
    """:func:`eval_pipeline.plots.ui_markdown` rebuilt from a written report.md (a re-used evidence set: the rows
    are not read again), the same text."""
    parts = [plots.ui_heading(result)]
    lines = markdown.split("\n")
    if PLOTS_HEADING in lines:
        i = lines.index(PLOTS_HEADING)
        parts += [ln for ln in lines[i + 1:i + 4] if ln.startswith("![")][:1]
    if report_url:
        parts.append(f"[Open the full decision report]({report_url})")
    return "\n\n".join(parts) + "\n"


def report_link(lake, rel_path: str, expiration: int = PRESIGN_SECONDS) -> str:
    """A URL that opens a lake file: ``file://`` for a local lake, a presigned HTTPS URL for ``s3://`` (valid
    ``expiration`` seconds; needs credentials that can sign), else the lake URI."""
    if lake.is_local:
        from pathlib import Path

        return Path(lake.path(rel_path)).as_uri()
    try:  # s3fs: a presigned GET (botocore signs locally, no request is made)
        return lake.fs.sign(lake.path(rel_path), expiration=expiration)
    except Exception:  # no signing credentials, or a filesystem that cannot sign: the lake URI still names it
        return lake.uri(rel_path)


# -- the step --------------------------------------------------------------------------------------------------------
def engine_areas(curves: dict | None, result: dict) -> dict | None:
    """The plotted curves come from fine score histograms (eval_pipeline.curves: ties within a 1e-4-wide bin); the
    AUC and AP printed in their legends are the engine's exact overall values. Returns a copy (the binned values
    under ``binned_auc`` / ``binned_average_precision``); ``curves`` is not changed."""
    overall = next((s for s in (result.get("metrics") or {}).get("slices", []) if s["slice"] == "overall"), None)
    if not curves or overall is None or curves.get("task_type") != "binary_classification":
        return curves
    models = {}
    for role, c in curves["models"].items():
        c = dict(c)
        engine = overall["models"].get(role, {})
        for key, metric in (("auc", "roc_auc"), ("average_precision", "average_precision")):
            value = (engine.get(metric) or {}).get("value")
            if key in c and value is not None and f"binned_{key}" not in c:
                c[f"binned_{key}"], c[key] = c[key], value
        models[role] = c
    return {**curves, "models": models}


def write_report_files(ctx, snap, inputs, result: dict, quality: dict, drift: dict | None, base_markdown: str,
                       paths: dict, roles: dict) -> dict:
    """Compute the plot data (streamed from the lake), write report.md and report.html, return what the asset
    shows: ``markdown`` (the report, with the key plots), ``plots_markdown`` (plots + link only), ``html_uri``,
    ``report_url`` (file:// or presigned) and ``verdict``."""
    curves = report_curves(ctx.lake, ctx.spec, snap, roles)
    folder = paths["folder"]
    ea_rel = f"{folder}/error_analysis.json"  # written by an error-analysis step when there is one
    error_analysis = ctx.lake.read_json(ea_rel) if ctx.lake.exists(ea_rel) else None
    pd_rel = f"{folder}/prediction_drift.json"  # written by pipeline.prediction_drift when drift is enabled
    prediction_drift = ctx.lake.read_json(pd_rel) if ctx.lake.exists(pd_rel) else None
    html_text = render_report(result, quality, drift, curves,
                              drift_html_uri=f"drift/{ctx.task}/{snap.snapshot_id}/drift.html",
                              quality_uri=f"quality/{ctx.task}/{snap.snapshot_id}/report.html",
                              error_analysis=error_analysis, prediction_drift=prediction_drift)
    md = render_report_markdown(base_markdown, result, quality, drift, curves)
    ctx.lake.write_text(paths["report_md"], md)
    ctx.lake.write_text(paths["report_html"], html_text)
    url = report_link(ctx.lake, paths["report_html"])
    return {"markdown": md, "html_uri": ctx.lake.uri(paths["report_html"]), "verdict": result["verdict"],
            # the key plots' PNG is in report.md already: taken from there, not drawn a second time (0.3 s)
            "report_url": url, "plots_markdown": plots_markdown_from(md, result, url)}


def reused_report(ctx, paths: dict, verdict: str | None = None) -> dict:
    """What :func:`write_report_files` returns, for an evidence set that is already complete (nothing written)."""
    result = ctx.lake.read_json(paths["result"])
    md = ctx.lake.read_text(paths["report_md"])
    url = report_link(ctx.lake, paths["report_html"])
    return {"markdown": md, "html_uri": ctx.lake.uri(paths["report_html"]), "verdict": result["verdict"],
            "report_url": url, "plots_markdown": plots_markdown_from(md, result, url)}
