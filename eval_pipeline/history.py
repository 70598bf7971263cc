"""Trends: the numbers an evaluation records for plotting, and the metric history of a model across snapshots.

``pipeline.decide`` writes one line of history per evaluated (version, snapshot):
``history/<task>/<model>/<version>-<snapshot>.json`` (mode, verdict, baseline, the snapshot's time range, the
overall value of every metric per role). This module gathers those lines into a table, picks the champion's series
(the monitoring runs of the champion, else the baseline of the release evaluations on that snapshot: the baseline
*is* the champion of that moment), and draws it across snapshots with the gate thresholds:

    trends/<task>/<model>/history.parquet   one row per evaluated (version, snapshot), oldest data first
    trends/<task>/<model>/trend.svg         the trend plot (deterministic bytes), + trend.png (small, for the UI)

Plain Python: no Dagster. ``metric_points`` gives the flat ``{"candidate/roc_auc": 0.71, "delta/roc_auc/ci_low":
...}`` numbers the Dagster assets record as float metadata (stable keys: Dagster plots a key across
materializations).
"""

import base64
import math

import pandas as pd

from .engine.catalogue import METRICS
from .lake import Lake, LakeError
from .markdown import md_table
from .registry import version_sort_key
from .spec import EvalSpec

BASE_COLUMNS = ["version", "snapshot_id", "data_end", "mode", "verdict", "baseline", "evidence_id"]
ROLES = ("candidate", "baseline", "delta")
MAX_KEY_METRICS = 4
TABLE_ROWS = 30  # rows of the markdown table (the parquet keeps all)


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# -- numbers of one evaluation ----------------------------------------------------------------------------------------
def metric_points(metrics: dict) -> dict[str, float]:
    """The overall slice of an evaluation's ``metrics.json`` as flat numbers with stable keys:
    ``<role>/<metric>`` and ``<role>/<metric>/ci_low|ci_high`` for each model role (``candidate``, ``baseline``),
    ``delta/<metric>`` and ``delta/<metric>/ci_low|ci_high`` (paired candidate minus baseline; the intervals are the
    unadjusted ones at ``evaluation.confidence``, not the gates' multiplicity-adjusted ones), and ``rows``.
    Undefined or non-finite values are left out (a plot skips the point)."""
    out: dict[str, float] = {}
    overall = next((s for s in metrics.get("slices", []) if s.get("slice") == "overall"), None)
    if overall is None:
        return out
    cells = {role: overall.get("models", {}).get(role, {}) for role in metrics.get("roles", overall.get("models", {}))}
    cells["delta"] = overall.get("delta") or {}
    for role, by_metric in cells.items():
        for metric in metrics.get("metrics", list(by_metric)):
            cell = by_metric.get(metric) or {}
            value = _finite(cell.get("value"))
            if value is None:
                continue
            out[f"{role}/{metric}"] = value
            ci = cell.get("ci") or [None, None]
            for bound, v in zip(("ci_low", "ci_high"), ci):
                if _finite(v) is not None:
                    out[f"{role}/{metric}/{bound}"] = float(v)
    if metrics.get("n_rows") is not None:
        out["rows"] = float(metrics["n_rows"])
    return out


# -- the history table ------------------------------------------------------------------------------------------------
def history_dir(task: str, model: str) -> str:
    return f"history/{task}/{model}"


def trends_dir(task: str, model: str) -> str:
    return f"trends/{task}/{model}"


def _data_end(entry: dict) -> str:
    tr = entry.get("time_range") or []
    return str(tr[-1]) if tr else ""


def _sort_key(entry: dict):
    return (_data_end(entry), str(entry.get("snapshot_id", "")), version_sort_key(str(entry.get("version", ""))))


def load_entries(lake: Lake, task: str, model: str) -> list[dict]:
    """Every history line of a model, oldest data first (then snapshot id, then version). Files that cannot be
    read (a write in progress elsewhere, a foreign file) are skipped."""
    folder = history_dir(task, model)
    entries = []
    for f in lake.find(folder):
        rel = f["rel"]
        if not rel.endswith(".json") or rel.count("/") != folder.count("/") + 1:
            continue
        try:
            entry = lake.read_json(rel)
        except (FileNotFoundError, LakeError, ValueError):
            continue
        if isinstance(entry, dict) and entry.get("version") is not None and entry.get("snapshot_id"):
            entries.append(entry)
    return sorted(entries, key=_sort_key)


def history_frame(entries: list[dict], metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per history line: ``BASE_COLUMNS`` then, per metric, ``candidate/<m>``, ``baseline/<m>`` and
    ``delta/<m>`` (candidate minus baseline point estimates; NaN without a baseline or when undefined)."""
    if metrics is None:
        seen: dict[str, None] = {}
        for e in entries:
            for vals in (e.get("overall") or {}).values():
                seen.update(dict.fromkeys(vals))
        metrics = list(seen)
    rows = []
    for e in entries:
        overall = e.get("overall") or {}
        row = {"version": str(e.get("version")), "snapshot_id": str(e.get("snapshot_id")), "data_end": _data_end(e),
               "mode": e.get("mode") or "", "verdict": e.get("verdict") or "", "baseline": e.get("baseline") or "",
               "evidence_id": e.get("evidence_id") or ""}
        for m in metrics:
            c = _finite((overall.get("candidate") or {}).get(m))
            b = _finite((overall.get("baseline") or {}).get(m))
            row[f"candidate/{m}"] = math.nan if c is None else c
            row[f"baseline/{m}"] = math.nan if b is None else b
            row[f"delta/{m}"] = math.nan if c is None or b is None else c - b
        rows.append(row)
    columns = BASE_COLUMNS + [f"{r}/{m}" for m in metrics for r in ROLES]
    frame = pd.DataFrame(rows, columns=columns)
    for col in columns[len(BASE_COLUMNS):]:
        frame[col] = frame[col].astype("float64")
    return frame


def champion_series(frame: pd.DataFrame, metrics: list[str]) -> list[dict]:
    """The champion's overall metrics per snapshot, oldest data first: its monitoring run on that snapshot, else the
    baseline of the release evaluations there (the baseline is the champion of that moment). Snapshots with neither
    are left out."""
    out = []
    for snapshot_id, group in frame.groupby("snapshot_id", sort=False):
        mon = group[group["mode"] == "monitoring"]
        rel = group[(group["mode"] == "release") & (group["baseline"] != "")]
        if len(mon):
            row, role, champion = mon.iloc[-1], "candidate", str(mon.iloc[-1]["version"])
        elif len(rel):
            row, role, champion = rel.iloc[-1], "baseline", str(rel.iloc[-1]["baseline"]).rsplit("@", 1)[-1]
        else:
            continue
        out.append({"snapshot_id": snapshot_id, "data_end": row["data_end"], "champion": champion,
                    **{m: _finite(row[f"{role}/{m}"]) for m in metrics}})
    return out


# -- which metrics, which thresholds ---------------------------------------------------------------------------------
def _covers_overall(slices) -> bool:
    slices = [slices] if isinstance(slices, str) else list(slices)
    return "overall" in slices or "all" in slices


def key_metrics(spec: EvalSpec) -> list[str]:
    """The metrics the gates are about (gates on the overall slice first), at most ``MAX_KEY_METRICS``; without
    gates, the spec's first two metrics."""
    gates = sorted(spec.gates, key=lambda g: not _covers_overall(g.slices))
    names = list(dict.fromkeys(g.metric for g in gates)) or list(spec.metrics or [])[:2]
    return names[:MAX_KEY_METRICS]


def thresholds(spec: EvalSpec, metric: str) -> dict:
    """The gates on ``metric`` that apply to the overall value: absolute bounds (``min``/``max``, lists) and
    non-inferiority margins (``margin``: the candidate must stay within it of the champion)."""
    out = {"min": [], "max": [], "margin": []}
    for g in spec.gates:
        if g.metric != metric or not _covers_overall(g.slices):
            continue
        if g.kind == "absolute":
            out["min"] += [g.min] if g.min is not None else []
            out["max"] += [g.max] if g.max is not None else []
        elif g.margin is not None:
            out["margin"].append(g.margin)
    return out


# -- the trend plot ---------------------------------------------------------------------------------------------------
def _x_labels(frame: pd.DataFrame) -> tuple[dict[str, int], list[str]]:
    snaps = list(dict.fromkeys(frame["snapshot_id"]))
    ends = dict(zip(frame["snapshot_id"], frame["data_end"]))
    labels = [f"{(ends.get(s) or '')[:10] or '—'}\n{s[:8]}" for s in snaps]
    return {s: i for i, s in enumerate(snaps)}, labels


def trend_figure(frame: pd.DataFrame, spec: EvalSpec, metrics: list[str] | None = None):
    """One panel per key metric: the champion's overall value per snapshot (line; its version annotated where it
    changes), every release candidate's value (markers coloured by verdict), absolute gate bounds (red dashed) and
    the non-inferiority floor (champion minus margin, in the metric's bad direction; dotted). None without rows."""
    from .plots import COLOURS, GREY, OUTCOME_COLOURS, Figure  # matplotlib: imported by the steps that draw

    metrics = [m for m in (metrics or key_metrics(spec)) if f"candidate/{m}" in frame.columns]
    if frame.empty or not metrics:
        return None
    xpos, labels = _x_labels(frame)
    series = champion_series(frame, metrics)
    fig = Figure(figsize=(max(6.0, min(11.0, 3.5 + 0.6 * len(labels))), 0.6 + 2.1 * len(metrics)),
                 layout="constrained")
    axes = fig.subplots(len(metrics), 1, squeeze=False, sharex=True)[:, 0]
    for ax, metric in zip(axes, metrics):
        hib = METRICS[metric].higher_is_better if metric in METRICS else True
        pts = [(xpos[s["snapshot_id"]], s[metric], s["champion"]) for s in series if s[metric] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=COLOURS["baseline"], ms=4, lw=1.5,
                    label="champion", zorder=3)
            last = None
            for x, y, champ in pts:
                if champ != last:
                    ax.annotate(f"@{champ}", (x, y), textcoords="offset points", xytext=(3, 5), fontsize=7,
                                color=COLOURS["baseline"])
                    last = champ
        for g in thresholds(spec, metric)["margin"]:
            if pts:
                ax.plot([p[0] for p in pts], [p[1] - g if hib else p[1] + g for p in pts], ":", color="#1f2328",
                        lw=1, label=f"champion {'−' if hib else '+'} margin {g:g}")
        rel = frame[frame["mode"] == "release"]
        for verdict, group in rel.groupby("verdict", sort=True):
            ys = group[f"candidate/{metric}"]
            keep = ys.notna()
            if keep.any():
                ax.plot([xpos[s] for s in group["snapshot_id"][keep]], list(ys[keep]), "D", ms=4, ls="none",
                        color=OUTCOME_COLOURS.get(verdict, GREY), label=f"candidate ({verdict})", zorder=4)
        bounds = thresholds(spec, metric)
        for kind in ("min", "max"):
            for b in bounds[kind]:
                ax.axhline(b, color=OUTCOME_COLOURS["FAIL"], ls="--", lw=1, label=f"gate {kind} {b:g}")
        ax.set_ylabel(metric)
        ax.margins(x=0.08, y=0.18)
        ax.grid(axis="y", color="#d0d7de", lw=0.5)
        handles, names = ax.get_legend_handles_labels()
        if handles:
            uniq = dict(zip(names, handles))
            ax.legend(list(uniq.values()), list(uniq), loc="best", fontsize=7, frameon=False)
    axes[-1].set_xticks(range(len(labels)), labels, fontsize=7)
    fig.suptitle(f"{spec.model.name}: overall metrics per snapshot (x: data end, snapshot id)", fontsize=9)
    return fig


# -- the history asset's work ----------------------------------------------------------------------------------------
def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def table_markdown(frame: pd.DataFrame, metrics: list[str], max_rows: int = TABLE_ROWS) -> str:
    """The newest ``max_rows`` rows (newest last) with the key metrics: candidate value and delta."""
    shown = frame.tail(max_rows)
    header = ["data end", "snapshot", "version", "mode", "verdict", "baseline"]
    for m in metrics:
        header += [m, f"Δ {m}"]
    rows = []
    for _, r in shown.iterrows():
        row = [r["data_end"][:19] or "—", r["snapshot_id"][:12], r["version"], r["mode"], r["verdict"],
               r["baseline"] or "—"]
        for m in metrics:
            row += [_fmt(r.get(f"candidate/{m}")), _fmt(r.get(f"delta/{m}"))]
        rows.append(row)
    note = f"\n\n_{len(frame) - len(shown)} older rows in the parquet file._" if len(frame) > len(shown) else ""
    return md_table(header, rows) + note


def write_history(lake: Lake, spec: EvalSpec) -> dict:
    """Gather ``history/<task>/<model>/`` into ``trends/<task>/<model>/history.parquet`` and draw ``trend.svg`` /
    ``trend.png``. Returns the frame, the key metrics, the champion's series, the lake paths (relative), the table
    and the plot as markdown (the PNG as a data URI, for Dagster metadata)."""
    from .plots import to_png, to_svg

    task, model = spec.task, spec.model.name
    entries = load_entries(lake, task, model)
    metrics_all = list(spec.metrics or []) or None
    frame = history_frame(entries, metrics_all)
    keys = [m for m in key_metrics(spec) if f"candidate/{m}" in frame.columns]
    folder = trends_dir(task, model)
    paths = {"parquet": f"{folder}/history.parquet", "svg": f"{folder}/trend.svg", "png": f"{folder}/trend.png"}
    lake.write_parquet(paths["parquet"], frame)
    fig = trend_figure(frame, spec, keys)
    plot_md = "_no evaluations yet_"
    if fig is not None:
        lake.write_text(paths["svg"], to_svg(fig, f"{task} trend"))
        png = to_png(fig)
        lake.write_bytes(paths["png"], png)
        plot_md = f"![trend](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
    else:
        paths.pop("svg"), paths.pop("png")
    series = champion_series(frame, keys)
    return {"frame": frame, "metrics": keys, "champion_series": series, "paths": paths,
            "table_markdown": table_markdown(frame, keys) if len(frame) else "_no evaluations yet_",
            "plot_markdown": plot_md}
