"""The outcome of a data-quality validation: :class:`QualityResult` (JSON, markdown) and :func:`render_html`."""

import html as _html
import json
from dataclasses import dataclass, field

from .jsonsafe import to_jsonsafe

__all__ = ["QualityResult", "render_html"]


@dataclass
class QualityResult:
    """Outcome of :func:`eval_pipeline.quality.validate_dataset`.

    ``results`` items: ``{"expectation", "column", "success", "observed", "message", "check"}`` (+ ``"engine"``
    for checks not run by GX). ``gx_result`` is GX's raw ``to_json_dict()`` (made strict-JSON-safe); it contains
    run ids and times and is therefore kept out of :meth:`to_dict`.
    """

    source: str
    success: bool
    results: list[dict]
    statistics: dict
    gx_result: dict = field(repr=False)
    skipped: list[dict] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    run_info: dict = field(default_factory=dict)
    # how a batched validation was made: the expectations' fingerprint, the merge layout, batches, rows and any
    # spill partitions (eval_pipeline.quality_merge); persisted only when set, so a whole-frame result keeps its bytes
    provenance: dict = field(default_factory=dict)

    def failures(self) -> list[str]:
        return [r["message"] for r in self.results if not r["success"]]

    # what is persisted: everything but the run's ids and times (gx_result, run_info)
    _PERSISTED = ("source", "success", "statistics", "results", "skipped", "parameters")

    def to_dict(self) -> dict:
        """JSON-safe and deterministic (same data and arguments -> identical ``json.dumps(sort_keys=True)``)."""
        out = {name: getattr(self, name) for name in self._PERSISTED}
        if self.provenance:
            out["provenance"] = self.provenance
        return to_jsonsafe(out)

    @classmethod
    def from_dict(cls, data: dict) -> "QualityResult":
        """The result as :meth:`to_dict` persisted it (no GX result: the run that made it is gone)."""
        return cls(source=data["source"], success=bool(data["success"]), results=list(data["results"]),
                   statistics=dict(data["statistics"]), gx_result={}, skipped=list(data.get("skipped", [])),
                   parameters=dict(data.get("parameters", {})), run_info={"reused": True},
                   provenance=dict(data.get("provenance", {})))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_markdown(self, max_rows: int = 50) -> str:
        s = self.statistics
        status = "PASSED" if self.success else "FAILED"
        lines = [
            f"**{self.source}**: data quality {status} — {s['successful']}/{s['evaluated']} expectations met"
            + (f", {s['failed']} failed" if s["failed"] else ""),
            "",
            "| | expectation | column | result |",
            "|---|---|---|---|",
        ]
        # failures first, then passes, each in check order
        ordered = [r for r in self.results if not r["success"]] + [r for r in self.results if r["success"]]
        for r in ordered[:max_rows]:
            mark = "✅" if r["success"] else "❌"
            col = f"`{r['column']}`" if r["column"] is not None else ""
            msg = r["message"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {mark} | {r['expectation']} | {col} | {msg} |")
        if len(ordered) > max_rows:
            lines.append(f"| | … | | {len(ordered) - max_rows} more results |")
        return "\n".join(lines)


def _provenance(result: QualityResult) -> str:
    p = result.provenance
    if p.get("method") != "batched":
        return ""
    return (f"\n<p>Validated in batches and merged exactly (merge layout {p.get('merge_layout')}, "
            f"{p.get('rows')} rows); expectations sha256 <code>{_html.escape(str(p.get('expectations_sha256')))}"
            f"</code>.</p>")


def render_html(result: QualityResult) -> str:
    """Small self-contained HTML page of a :class:`QualityResult` (no external assets)."""
    esc = _html.escape
    s = result.statistics
    status = "PASSED" if result.success else "FAILED"
    rows = []
    for r in result.results:
        cls = "ok" if r["success"] else "fail"
        observed = json.dumps(to_jsonsafe(r["observed"]), sort_keys=True, default=str)
        if len(observed) > 400:
            observed = observed[:400] + "…"
        rows.append(
            f'<tr class="{cls}"><td>{"✔" if r["success"] else "✘"}</td><td>{esc(r["expectation"])}</td>'
            f'<td>{esc(str(r["column"]) if r["column"] is not None else "")}</td><td>{esc(r["message"])}</td>'
            f"<td><code>{esc(observed)}</code></td></tr>"
        )
    skipped = ""
    if result.skipped:
        items = "".join(
            f"<li>{esc(k['expectation'])} on <code>{esc(str(k['column']))}</code>: {esc(k['reason'])}</li>"
            for k in result.skipped
        )
        skipped = f"<h2>Skipped checks</h2><ul>{items}</ul>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Data quality: {esc(result.source)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse;width:100%;font-size:14px}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f3f3f3}} tr.fail td{{background:#fde8e8}} tr.ok td:first-child{{color:#2a7a2a}}
tr.fail td:first-child{{color:#b00020;font-weight:bold}} code{{font-size:12px;word-break:break-all}}
.status-PASSED{{color:#2a7a2a}} .status-FAILED{{color:#b00020}}
</style></head><body>
<h1>Data quality: {esc(result.source)} — <span class="status-{status}">{status}</span></h1>
<p>{s['evaluated']} expectations evaluated, {s['successful']} met, {s['failed']} failed.</p>{_provenance(result)}
<table><thead><tr><th></th><th>expectation</th><th>column</th><th>result</th><th>observed</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
{skipped}
</body></html>
"""
