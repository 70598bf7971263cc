"""The decision report's fairness section (HTML) and its tables (markdown for Dagster metadata), from the metrics'
``fairness`` block (:class:`eval_pipeline.engine.fairness.FairnessResult`)."""
from html import escape as e

from .report import value_with_ci as _value

RATE_NAMES = {"selection_rate": "selection rate", "true_positive_rate": "TPR", "false_positive_rate": "FPR"}


def disparity_rows(block: dict) -> tuple[list[str], list[list[str]]]:
    """One row per disparity metric: candidate, baseline (when paired) and candidate − baseline, each with its
    unadjusted interval."""
    paired = block.get("baseline") is not None
    d = block.get("disparities", {})
    header = ["disparity", "candidate"] + (["baseline", "Δ candidate − baseline"] if paired else [])
    rows = []
    for m in block.get("metrics", []):
        row = [m, _value(d.get("models", {}).get("candidate", {}).get(m))]
        if paired:
            row += [_value(d.get("models", {}).get("baseline", {}).get(m)), _value(d.get("delta", {}).get(m), True)]
        rows.append(row)
    return header, rows


def group_rows(block: dict) -> tuple[list[str], list[list[str]]]:
    """One row per group: rows, positives, status and each role's selection rate, TPR and FPR (no intervals:
    they are in the JSON)."""
    roles = [r for r in ("candidate", "baseline") if r in block.get("roles", [])]
    header = ["group", "n", "positives", "status"] + [f"{r} {RATE_NAMES[k]}" for r in roles for k in RATE_NAMES]
    rows = []
    for g in block.get("groups", []):
        cells = [g["models"].get(r, {}).get(k, {}).get("value") for r in roles for k in RATE_NAMES]
        rows.append([g["group"], f"{g['n']:,}", f"{g['n_positive']:,}", g["status"]]
                    + ["—" if v is None else f"{v:.4f}" for v in cells])
    return header, rows


def fairness_html(block: dict | None, table) -> str:
    """The section (empty without a fairness block); ``table(header, rows)`` renders a table like the report's."""
    if not block:
        return ""
    sens = " × ".join(block.get("sensitive", []))
    conf = block.get("confidence", 0.95)
    intro = (f"Groups: every value of {e(sens)} present in the evaluation rows (nulls as <code>null</code>). Groups "
             f"with fewer than {block.get('min_group_size')} rows are listed but left out of every disparity. "
             f"Disparities as fairlearn defines them (between groups: difference = max − min, ratio = min / max; "
             f"equalized odds = the worse of the TPR and FPR disparities), with unadjusted {conf:.0%} "
             f"Poisson-bootstrap intervals; Δ is paired (the same resamples). Fairness gates are in the gates "
             f"table, decided with the others.")
    if block.get("status") != "ok":
        intro += f" <strong>No disparity:</strong> {e(str(block.get('too_small')))}."
    dh, dr = disparity_rows(block)
    gh, gr = group_rows(block)
    return ("<h2 id=fairness>Fairness</h2>" + f"<p>{intro}</p>" + table(dh, dr)
            + f"<details><summary>rates per group ({len(gr)} groups)</summary>{table(gh, gr)}</details>")


def fairness_markdown(result: dict) -> str:
    """The disparities table for report.md (and so the decision_report metadata); empty without a fairness block."""
    block = result.get("metrics", {}).get("fairness")
    if not block:
        return ""
    from .markdown import md_table

    note = "" if block.get("status") == "ok" else f"\n\nNo disparity: {block.get('too_small')}."
    return (f"\n\n## Fairness\n\nGroups of {' × '.join(block.get('sensitive', []))}; groups under "
            f"{block.get('min_group_size')} rows left out; unadjusted {block.get('confidence', 0.95):.0%} intervals "
            f"(the fairness gates are in the gates table).{note}\n\n" + md_table(*disparity_rows(block)) + "\n")
