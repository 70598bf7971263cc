"""The decision report's evaluation-suites section (HTML and markdown) from the result's ``metrics.suites`` blocks
(:mod:`eval_pipeline.suites`): one summary row per suite, then each suite's own block: the failing ids of a
per-example suite (candidate, baseline, and which failures are new), or a metric suite's overall numbers and gates."""
from html import escape as e

from .markdown import md_table
from .report import fixed, value_with_ci

SUMMARY_HEADER = ["suite", "kind", "folder", "snapshot", "rows", "outcome", "what decided it"]


def _ids(outcome: dict) -> str:
    ids = ", ".join(map(str, outcome.get("failing_ids", [])))
    return ids + (f" … ({outcome['wrong']:,} in all)" if outcome.get("failing_ids_truncated") else "")


def _decided_by(b: dict) -> str:
    if b.get("status") != "ok":
        return b.get("reason") or b.get("error") or ""
    if b["kind"] == "per_example":
        c = b["models"]["candidate"]
        if not c["wrong"]:
            return f"all {c['rows']:,} examples right"
        return f"{c['wrong']:,} of {c['rows']:,} wrong: {_ids(c)}"
    if not b.get("gates"):
        return "no gate applies (not gated)"
    decided = [g for g in b["gates"] if g["outcome"] == b.get("verdict")] or b["gates"]
    return "; ".join(f"{g['gate']}: {g['outcome']}" for g in decided[:3])


def summary_rows(blocks: list[dict]) -> list[list[str]]:
    return [[b["name"], b["kind"], b["source"], b.get("snapshot_id") or "—", f"{b.get('rows') or 0:,}",
             b.get("verdict") or "not gated", _decided_by(b)] for b in blocks]


def example_rows(b: dict) -> tuple[list[str], list[list[str]]]:
    """A per-example suite: each model's right / wrong counts and failing ids."""
    header = ["model", "rows", "right", "wrong", "failing ids"]
    rows = [[role, f"{o['rows']:,}", f"{o['right']:,}", f"{o['wrong']:,}", _ids(o) or "—"]
            for role, o in b.get("models", {}).items()]
    return header, rows


def overall_rows(b: dict) -> tuple[list[str], list[list[str]]]:
    """A metric suite: the overall slice's value per model and the paired delta (unadjusted interval)."""
    m = b.get("metrics") or {}
    overall = next((s for s in m.get("slices", []) if s["slice"] == "overall"), None)
    roles = list((overall or {}).get("models", {}))
    header = ["metric"] + roles + (["Δ [CI, unadjusted]"] if "baseline" in roles else [])
    rows = []
    for metric in m.get("metrics", []) if overall else []:
        row = [metric] + [fixed((overall["models"][r].get(metric) or {}).get("value")) for r in roles]
        if "baseline" in roles:
            d = (overall.get("delta") or {}).get(metric) or {}
            row.append("—" if d.get("value") is None else value_with_ci(d, signed=True))
        rows.append(row)
    return header, rows


def _new(b: dict) -> str:
    n = b.get("new_failures")
    if not n or not n["count"]:
        return ""
    return (f"New failures (the candidate is wrong, the baseline right): {n['count']:,}: "
            f"{', '.join(map(str, n['ids']))}{' …' if n.get('truncated') else ''}.")


INTRO = ("Each suite is its own folder of evaluation rows with its own expectations and gates (a new case is a new "
         "file). A per-example suite needs every row right: any wrong row FAILs it and is listed by id. A metric "
         "suite is gated like the task (paired bootstrap, the same tri-state rule), as its own multiplicity family. "
         "A suite whose data is missing or fails its expectations is INCONCLUSIVE. The verdict is the worst of the "
         "task's gates and every suite's.")


def suites_html(blocks: list[dict] | None, table, gate_table) -> str:
    """``table`` / ``gate_table``: the report's own renderers (report_html._table / _gate_table)."""
    if not blocks:
        return ""
    out = ["<h2 id=suites>Evaluation suites</h2>", f"<p>{e(INTRO)}</p>",
           table(SUMMARY_HEADER, summary_rows(blocks), outcome_col=5)]
    for b in blocks:
        out.append(f"<h3 id='suite-{e(b['name'])}'>Suite {e(b['name'])}: {e(b.get('verdict') or 'not gated')}</h3>")
        if b.get("status") != "ok":
            out.append(f"<p>{e(_decided_by(b))}</p>")
        elif b["kind"] == "per_example":
            out.append(table(*example_rows(b)))
            if _new(b):
                out.append(f"<p>{e(_new(b))}</p>")
        else:
            header, rows = overall_rows(b)
            if rows:
                out.append(table(header, rows))
        if b.get("gates"):
            out.append(gate_table(b["gates"]))
    return "".join(out)


def suites_markdown(blocks: list[dict] | None) -> str:
    if not blocks:
        return ""
    parts = ["", "## Evaluation suites", "", INTRO, "", md_table(SUMMARY_HEADER, summary_rows(blocks)), ""]
    for b in blocks:
        if b.get("status") == "ok" and b["kind"] == "per_example":
            parts += [f"### Suite {b['name']}", "", md_table(*example_rows(b)), ""] + ([_new(b), ""] if _new(b) else [])
        elif b.get("status") == "ok" and overall_rows(b)[1]:
            parts += [f"### Suite {b['name']}", "", md_table(*overall_rows(b)), ""]
    return "\n".join(parts) + "\n"
