"""The decision report's robustness section (HTML and markdown) from the result's ``robustness`` block."""
from html import escape as e

from .markdown import md_table
from .report import fixed, value_with_ci


def robustness_rows(block: dict) -> tuple[list[str], list[list[str]]]:
    """One row per perturbation x metric: clean, perturbed, paired delta with its interval, and the outcome of that
    metric's gate on that perturbation ("not gated" without one; ``error`` when the model failed on it)."""
    header = ["perturbation", "kind", "columns", "rows", "metric", "clean", "perturbed", "Δ [95% CI]", "gate"]
    rows = []
    for p in block.get("perturbations", []):
        base = [p["name"], p["kind"], ", ".join(p.get("columns", [])), f"{p.get('rows', 0):,}"]
        if p["status"] == "error":
            rows.append(base + ["—", "—", "—", p.get("error") or "", p.get("verdict") or "error"])
            continue
        gated = {g["metric"]: g["outcome"] for g in p.get("gates", [])}
        for m, cell in p.get("metrics", {}).items():
            delta = value_with_ci({**cell, "value": cell.get("delta")}, signed=True)  # the paired Δ and its CI
            rows.append(base + [m, fixed(cell.get("clean")), fixed(cell.get("perturbed")), delta,
                                gated.get(m, "not gated")])
    return header, rows


def _intro(block: dict) -> str:
    if block.get("status") == "skipped":
        return block.get("reason", "skipped")
    return (f"The candidate re-scored on perturbed copies of {block.get('rows', 0):,} evaluation rows (a seeded hashed "
            f"sample, at most {block.get('max_rows', 0):,}); Δ = perturbed − clean on the same rows, with paired "
            f"bootstrap intervals. Gates: non-inferiority of Δ with margin max_drop, each perturbation at level "
            f"{block.get('alpha_per_perturbation', 0):.4g} (Bonferroni across perturbations). "
            f"Robustness verdict: {block.get('verdict') or 'no gates'}.")


def robustness_html(block: dict | None, table, gate_table) -> str:
    """``table`` / ``gate_table``: the report's own table renderers (report_html._table / _gate_table)."""
    if not block:
        return ""
    header, rows = robustness_rows(block)
    gates = [g for p in block.get("perturbations", []) for g in p.get("gates", [])]
    out = ["<h2 id=robustness>Robustness</h2>", f"<p>{e(_intro(block))}</p>"]
    if rows:
        out.append(table(header, rows, outcome_col=8))
    if gates:
        out += ["<h3>Robustness gates</h3>", gate_table(gates)]
    return "".join(out)


def robustness_markdown(block: dict | None) -> str:
    if not block:
        return ""
    header, rows = robustness_rows(block)
    return "\n## Robustness\n\n" + _intro(block) + "\n\n" + (md_table(header, rows) if rows else "") + "\n"
