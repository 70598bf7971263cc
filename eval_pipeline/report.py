"""The decision report: what a person needs to act on an evaluation, as markdown (Dagster UI); the HTML file, with
its plots, is eval_pipeline.report_html's (it shares the helpers here).

Order follows the reader's questions: what is the verdict, which gates decided it, how do the models compare overall
and per slice, was the data sound, has it drifted, and how to reproduce the result.
"""

import math

from .markdown import md_table

VERDICT_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INCONCLUSIVE": "#9a6700"}


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.{digits}f}"
    return str(v)


def fixed(v, digits: int = 4) -> str:
    """A number with ``digits`` decimals, "—" for None (the beyond-accuracy sections' cells)."""
    return "—" if v is None else f"{v:.{digits}f}"


def value_with_ci(cell: dict | None, signed: bool = False) -> str:
    """A result cell (``value``, ``ci``, ``undefined``) as "0.0814 [0.0759, 0.0871]" (``signed``: "+0.0123 [...]",
    for deltas), or "undefined (why)"."""
    cell = cell or {}
    v, ci = cell.get("value"), cell.get("ci")
    if v is None:
        return "undefined" + (f" ({cell['undefined']})" if cell.get("undefined") else "")
    f = "{:+.4f}" if signed else "{:.4f}"
    return f.format(v) + (f" [{f.format(ci[0])}, {f.format(ci[1])}]" if ci else "")


def _ci(ci) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "—"


def _deciding_gates(result: dict) -> list[dict]:
    verdict = result["verdict"]
    gates = result["gates"]
    if verdict == "PASS":
        return gates
    return [g for g in gates if g["outcome"] == verdict]


def gate_rows(result: dict) -> list[list[str]]:
    return [[g.get("gate") or g["metric"], g["metric"], g["slice"], g["outcome"], _fmt(g.get("value")),
             _fmt(g.get("baseline_value")), _fmt(g.get("delta")), _ci(g.get("ci")), str(g.get("n", "—")),
             g.get("rule", "")] for g in result["gates"]]


# A gate row's interval is multiplicity-adjusted (its two-sided level is 1 - 2 x adjusted_alpha, stated in the rule);
# the slice tables' intervals are the unadjusted ones at evaluation.confidence. Headers say which.
GATE_HEADER = ["gate", "metric", "slice", "outcome", "candidate", "baseline", "delta",
               "multiplicity-adjusted interval", "n", "rule"]


def slice_rows(result: dict, metrics: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    m = result["metrics"]
    metrics = metrics or m.get("metrics", [])[:4]
    paired = result.get("baseline") is not None
    ci = f"{m.get('confidence', 0.95):.0%} CI, unadjusted"
    header = ["slice", "n", "status"]
    for metric in metrics:
        header += [f"{metric} cand.", f"{metric} base.", f"{metric} Δ [{ci}]"] if paired else [f"{metric} [{ci}]"]
    rows = []
    for s in m.get("slices", []):
        row = [s["slice"], str(s["n"]), s.get("status", "")]
        for metric in metrics:
            cand = s.get("models", {}).get("candidate", {}).get(metric, {})
            if paired:
                base = s.get("models", {}).get("baseline", {}).get(metric, {})
                d = s.get("delta", {}).get(metric, {})
                row += [_fmt(cand.get("value")), _fmt(base.get("value")),
                        f"{_fmt(d.get('value'))} {_ci(d.get('ci'))}" if d else "—"]
            else:
                row += [f"{_fmt(cand.get('value'))} {_ci(cand.get('ci'))}"]
        rows.append(row)
    return header, rows


def _summary_sentence(result: dict) -> str:
    v = result["verdict"]
    cand = result["candidate"]["ref"]
    if result["mode"] == "monitoring":
        return f"Monitoring {cand} (champion) on snapshot {result['dataset']['snapshot_id']}: **{v}**."
    counts = result.get("gate_summary", {}).get("counts", {})
    outcomes = f"({', '.join(f'{k} {n}' for k, n in sorted(counts.items()))} gate outcomes)"
    if result.get("baseline") is None:  # no champion yet: judged on absolute gates alone
        return f"Candidate {cand}, no champion to compare with (absolute gates only): **{v}** {outcomes}."
    base = result["baseline"]["ref"]
    return f"Candidate {cand} vs baseline {base} (sha256 {result['baseline']['sha256'][:16]}…): **{v}** {outcomes}."


def _what_changes(result: dict) -> list[str]:
    return [
        f"the dataset snapshot (content hash {result['dataset']['content_hash'][:16]}…) — new files in the landing zone",
        "either model's artifact (sha256 pinned in its manifest)",
        f"the spec (sha256 {result['reproducibility']['spec_sha256'][:16]}…): slices, metrics, gates, margins, "
        "confidence, bootstrap replicates",
        f"the seed ({result['reproducibility']['seed']})",
        "the package versions listed above (metric code or model libraries)",
        "which version is champion (the baseline a candidate is compared with)",
    ]


def render_markdown(result: dict, quality: dict, drift: dict | None) -> str:
    parts = [f"# {result['task']}: {result['verdict']}", "", _summary_sentence(result), ""]
    deciding = _deciding_gates(result)
    if deciding and result["verdict"] != "PASS":
        parts += ["## Gates that decided it", "", md_table(GATE_HEADER, gate_rows({"gates": deciding})), ""]
    parts += ["## All gates", "", md_table(GATE_HEADER, gate_rows(result)) if result["gates"] else "_no gates_", ""]
    header, rows = slice_rows(result)
    parts += ["## Metrics overall and per slice", "", md_table(header, rows), ""]
    warnings = result["metrics"].get("warnings", [])
    if warnings:
        parts += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    stats = quality.get("statistics", {})
    parts += ["## Data quality", "",
              f"{'Passed' if quality.get('success') else 'FAILED'}: {stats.get('successful_expectations', '?')} of "
              f"{stats.get('evaluated_expectations', '?')} expectations met.", ""]
    failed = [r["message"] for r in quality.get("results", []) if not r.get("success")]
    parts += [f"- {m}" for m in failed] + ([""] if failed else [])
    if drift:
        drifted = [c for c in drift.get("columns", []) if c.get("drifted")]
        parts += ["## Drift (reference vs current)", "",
                  f"{len(drifted)} of {len(drift.get('columns', []))} columns drifted; dataset drift: "
                  f"{drift.get('dataset_drift')}.", ""]
        parts += [md_table(["column", "method", "score", "threshold", "drifted"],
                            [[c["column"], c.get("method"), _fmt(c.get("score")), _fmt(c.get("threshold")),
                              "yes" if c.get("drifted") else "no"] for c in drift.get("columns", [])]), ""]
    rep = result["reproducibility"]
    ds = result["dataset"]
    parts += ["## Reproducibility", "",
              f"- dataset snapshot `{ds['snapshot_id']}`, content hash `{ds['content_hash']}`, {ds['rows']} rows",
              f"- candidate `{result['candidate']['ref']}` sha256 `{result['candidate']['sha256']}`"]
    if result.get("baseline"):
        parts.append(f"- baseline `{result['baseline']['ref']}` sha256 `{result['baseline']['sha256']}`")
    parts += [f"- spec sha256 `{rep['spec_sha256']}`, seed {rep['seed']}, "
              f"{rep['bootstrap_replicates']} bootstrap replicates",
              "- packages: " + ", ".join(f"{k} {v}" for k, v in rep["packages"].items()), "",
              "What would change this result: " + "; ".join(_what_changes(result)) + "."]
    return "\n".join(parts) + "\n"
