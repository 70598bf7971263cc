"""The decision report's plots: matplotlib figures rendered to SVG strings (inline in the HTML) and one small PNG for
the Dagster UI.

Deterministic bytes: no pyplot (no global figure state), ``svg.fonttype: none`` (text stays text, no embedded glyph
paths, the browser's sans-serif font), a fixed ``svg.hashsalt`` (clip-path ids), no date or creator metadata. Same
inputs and matplotlib version give the same bytes in any process. Sizes are bounded by the inputs, which are bounded
themselves (curves thinned to <= 2,000 points by :mod:`eval_pipeline.curves`, forest plots capped at
``FOREST_MAX_ROWS`` rows).

Each ``*_svg`` function takes plain dicts (the curve summaries of :mod:`eval_pipeline.curves`, rows of the result
JSON) and returns an ``<svg>`` element (no XML prolog), or ``None`` when there is nothing to draw.
"""

from __future__ import annotations

import base64
import io
import math
import re

import matplotlib

matplotlib.use("Agg")  # no display; harmless when another backend was chosen before (we never use pyplot)

from matplotlib.figure import Figure  # noqa: E402

COLOURS = {"candidate": "#0969da", "baseline": "#bc4c00"}
OUTCOME_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INCONCLUSIVE": "#9a6700"}
GREY = "#6e7781"
FOREST_MAX_ROWS = 80
RC = {"svg.fonttype": "none", "svg.hashsalt": "eval-pipeline-report", "font.family": "sans-serif",
      "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
      "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "svg.image_inline": True,
      "path.simplify": True}
_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)


def _new(w: float, h: float, ncols: int = 1, nrows: int = 1, **kw):
    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def to_svg(fig: Figure, title: str | None = None) -> str:
    """An ``<svg>`` element with deterministic bytes (the XML prolog and DOCTYPE removed, for inlining)."""
    buf = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Title": title})
    svg = _PROLOG.sub("", buf.getvalue(), count=1)
    # scale to the page: keep the viewBox, let CSS size it (max-width: 100%)
    svg = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg \1', svg, count=1)
    return svg.strip() + "\n"


def to_png(fig: Figure, dpi: int = 72, colours: int = 64) -> bytes:
    """PNG bytes, palette-quantised (small enough for a data URI in Dagster metadata)."""
    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    try:
        from PIL import Image

        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(colors=colours, method=2, dither=0)
        out = io.BytesIO()
        img.save(out, format="PNG", optimize=True)
        return out.getvalue()
    except Exception:  # pillow ships with matplotlib; if quantising fails, the plain PNG is still fine
        return buf.getvalue()


def _label(role: str, refs: dict | None) -> str:
    return f"{role} ({refs[role]})" if refs and refs.get(role) else role


# -- forest plot -----------------------------------------------------------------------------------------------------
def forest_rows(result: dict, metric: str, max_rows: int = FOREST_MAX_ROWS) -> tuple[list[dict], int]:
    """Rows of the forest plot of ``metric``: every evaluated slice's paired delta with its 95 % interval (from the
    metrics), and, for gated slices, the gate's multiplicity-adjusted interval, margin and outcome. More than
    ``max_rows`` slices: the gated ones and the worst (lowest interval bound for higher-is-better) are kept.
    Returns (rows, slices left out)."""
    gates = {}
    for g in result.get("gates", []):
        if g.get("metric") == metric and g.get("kind") == "non_inferiority":
            gates.setdefault(g["slice"], g)
    rows = []
    for s in result.get("metrics", {}).get("slices", []):
        d = (s.get("delta") or {}).get(metric) or {}
        if d.get("value") is None or (isinstance(d.get("value"), float) and math.isnan(d["value"])):
            continue
        g = gates.get(s["slice"])
        if s.get("status") != "ok" and g is None:
            continue
        rows.append({"slice": s["slice"], "n": s.get("n"), "delta": d["value"], "ci": d.get("ci"),
                     "gate_ci": g.get("ci") if g else None, "margin": g.get("margin") if g else None,
                     "outcome": g.get("outcome") if g else None,
                     "level": (1 - 2 * g["adjusted_alpha"]) if g and g.get("adjusted_alpha") is not None else None})
    left_out = 0
    if len(rows) > max_rows:
        from .engine.catalogue import METRICS

        hib = METRICS[metric].higher_is_better if metric in METRICS else True
        keep = [r for r in rows if r["outcome"]]
        rest = [r for r in rows if not r["outcome"]]
        worst = sorted(rest, key=lambda r: ((r["ci"] or [r["delta"]] * 2)[0] if hib
                                            else -(r["ci"] or [r["delta"]] * 2)[1]))
        chosen = {id(r) for r in keep + worst[:max(0, max_rows - len(keep))]}
        left_out = len(rows) - len(chosen)
        rows = [r for r in rows if id(r) in chosen]
    return rows, left_out


def forest_svg(rows: list[dict], metric: str, higher_is_better: bool = True, confidence: float = 0.95,
               title: str | None = None) -> str | None:
    fig = forest_figure(rows, metric, higher_is_better, confidence, title)
    return None if fig is None else to_svg(fig, title or f"forest plot {metric}")


def forest_figure(rows, metric, higher_is_better=True, confidence=0.95, title=None, width=7.6, compact=False):
    if not rows:
        return None
    n = len(rows)
    row_h = 0.17 if compact else 0.2
    fig, axes = _new(width, 0.9 + row_h * n)
    ax = axes[0][0]
    ys = list(range(n))[::-1]
    for y, r in zip(ys, rows):
        ci = r.get("ci")
        if ci and None not in ci:
            ax.plot(ci, [y, y], color=GREY, lw=1.0, solid_capstyle="butt")
        if r.get("gate_ci") and None not in r["gate_ci"]:
            ax.plot(r["gate_ci"], [y, y], color=OUTCOME_COLOURS.get(r["outcome"], GREY), lw=3.2, alpha=0.55,
                    solid_capstyle="butt")
        ax.plot([r["delta"]], [y], "o", ms=3.2, color="#1f2328" if not r.get("outcome")
                else OUTCOME_COLOURS.get(r["outcome"], "#1f2328"))
        if r.get("margin") is not None:
            m = -r["margin"] if higher_is_better else r["margin"]
            ax.plot([m, m], [y - 0.42, y + 0.42], color=OUTCOME_COLOURS["FAIL"], lw=1.4)
    ax.axvline(0.0, color="#8c959f", lw=0.8, ls="--")
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['slice']}  (n={r['n']:,})" if r.get("n") is not None else r["slice"] for r in rows])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(f"candidate − baseline {metric} ({'higher' if higher_is_better else 'lower'} is better)")
    ax.grid(axis="x", color="#eaeef2", lw=0.6)
    ax.set_axisbelow(True)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=GREY, lw=1.0, label=f"{confidence:.0%} interval"),
               Line2D([], [], color=OUTCOME_COLOURS["PASS"], lw=3.2, alpha=0.55,
                      label="gate interval (multiplicity-adjusted)"),
               Line2D([], [], color=OUTCOME_COLOURS["FAIL"], lw=1.4,
                      label=("−margin" if higher_is_better else "+margin") + " (non-inferiority limit)")]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, frameon=False,
              fontsize=7 if compact else 8)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    return fig


# -- binary curves ---------------------------------------------------------------------------------------------------
def roc_pr_svg(models: dict, refs: dict | None = None) -> str | None:
    roles = [r for r in ("candidate", "baseline") if r in models and models[r].get("roc")]
    if not roles:
        return None
    fig, axes = _new(7.6, 3.6, ncols=2)
    ax1, ax2 = axes[0]
    _roc_axes(ax1, models, roles, refs)
    for role in roles:
        pr = models[role].get("pr")
        if pr:
            ax2.plot(pr["recall"], pr["precision"], color=COLOURS[role], lw=1.3,
                     label=f"{_label(role, refs)}: AP {models[role]['average_precision']:.4f}")
    prev = models[roles[0]].get("prevalence")
    if prev is not None:
        ax2.axhline(prev, color=GREY, lw=0.8, ls=":", label=f"prevalence {prev:.3f}")
    ax2.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title="Precision–recall")
    ax2.legend(loc="upper right", frameon=True, framealpha=0.9, edgecolor="none", fontsize=7)
    return to_svg(fig, "ROC and precision-recall curves")


def _roc_axes(ax, models, roles, refs):
    for role in roles:
        roc = models[role]["roc"]
        ax.plot(roc["fpr"], roc["tpr"], color=COLOURS[role], lw=1.3,
                label=f"{_label(role, refs)}: AUC {models[role]['auc']:.4f}")
    ax.plot([0, 1], [0, 1], color=GREY, lw=0.7, ls=":")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right", frameon=True, framealpha=0.9, edgecolor="none", fontsize=7)


def reliability_svg(models: dict, refs: dict | None = None, ece: dict | None = None) -> str | None:
    roles = [r for r in ("candidate", "baseline") if r in models and models[r].get("reliability")]
    if not roles:
        return None
    fig, axes = _new(4.6, 4.6, nrows=2, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax, axh = axes[0][0], axes[1][0]
    ax.plot([0, 1], [0, 1], color=GREY, lw=0.7, ls=":", label="perfect calibration")
    nb = models[roles[0]]["reliability"]["bins"]
    width = 1.0 / nb
    for i, role in enumerate(roles):
        rel = models[role]["reliability"]
        pts = [(p, o) for p, o in zip(rel["mean_predicted"], rel["observed"]) if p is not None]
        extra = f", ECE {ece[role]:.4f}" if ece and ece.get(role) is not None else ""
        if pts:
            ax.plot([p for p, _ in pts], [o for _, o in pts], "o-", ms=3.5, lw=1.2, color=COLOURS[role],
                    label=_label(role, refs) + extra)
        lefts = [k * width + (i * width / len(roles)) for k in range(nb)]
        axh.bar(lefts, rel["count"], width=width / len(roles), align="edge", color=COLOURS[role], alpha=0.7)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency of label 1", title="Reliability diagram")
    ax.legend(loc="upper left", frameon=False)
    axh.set(xlabel="predicted probability (mean per bin)", ylabel="rows")
    axh.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    return to_svg(fig, "reliability diagram")


def distributions_svg(models: dict, refs: dict | None = None) -> str | None:
    roles = [r for r in ("candidate", "baseline") if r in models and models[r].get("distribution")]
    if not roles:
        return None
    fig, axes = _new(7.6, 2.8, ncols=len(roles), sharey=True)
    for ax, role in zip(axes[0], roles):
        d = models[role]["distribution"]
        edges = d["edges"]
        for key, colour, name in (("negatives", "#8c959f", "label 0"), ("positives", COLOURS[role], "label 1")):
            counts = d[key]
            total = sum(counts) or 1
            dens = [c / total / (edges[1] - edges[0]) for c in counts]
            ax.stairs(dens, edges, color=colour, lw=1.2, label=f"{name} (n={sum(counts):,})", fill=False)
        thr = models[role].get("confusion", {}).get("threshold")
        if thr is not None:
            ax.axvline(thr, color="#1f2328", lw=0.8, ls="--", label=f"threshold {thr:g}")
        ax.set(xlim=(0, 1), xlabel="score", title=_label(role, refs))
        ax.legend(loc="upper right", frameon=False)
    axes[0][0].set_ylabel("density")
    return to_svg(fig, "score distributions")


def confusion_svg(models: dict, refs: dict | None = None) -> str | None:
    roles = [r for r in ("candidate", "baseline") if r in models and models[r].get("confusion")]
    if not roles:
        return None
    k = len(models[roles[0]]["confusion"]["labels"])
    side = 2.2 if k <= 2 else min(4.2, 1.2 + 0.45 * k)
    fig, axes = _new(min(7.6, (side + 0.9) * len(roles)), side + 0.6, ncols=len(roles))
    for ax, role in zip(axes[0], roles):
        c = models[role]["confusion"]
        mat = c["matrix"]
        rows = [sum(r) or 1 for r in mat]
        share = [[v / rows[i] for v in r] for i, r in enumerate(mat)]
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        for i, r in enumerate(mat):
            for j, v in enumerate(r):
                ax.text(j, i, f"{v:,}\n{share[i][j]:.1%}", ha="center", va="center", fontsize=7 if k > 3 else 8,
                        color="white" if share[i][j] > 0.6 else "#1f2328")
        labels = [str(x) for x in c["labels"]]
        ax.set_xticks(range(k), labels, rotation=0 if k <= 4 else 45)
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        at = f" at threshold {c['threshold']:g}" if c.get("threshold") is not None else " (argmax)"
        ax.set_title(f"{_label(role, refs)}{at}", fontsize=9)
        for s in ax.spines.values():
            s.set_visible(False)
    return to_svg(fig, "confusion matrices")


# -- multiclass ------------------------------------------------------------------------------------------------------
def multiclass_roc_svg(models: dict, refs: dict | None = None, max_classes: int = 12) -> str | None:
    roles = [r for r in ("candidate", "baseline") if r in models]
    if not roles:
        return None
    classes = models[roles[0]]["classes"][:max_classes]
    ncols = min(4, len(classes))
    nrows = math.ceil(len(classes) / ncols)
    fig, axes = _new(7.6, 2.1 * nrows + 0.4, ncols=ncols, nrows=nrows)
    flat = [a for row in axes for a in row]
    for ax, ci in zip(flat, range(len(classes))):
        for role in roles:
            e = models[role]["per_class"][ci]
            if e.get("roc"):
                ax.plot(e["roc"]["fpr"], e["roc"]["tpr"], color=COLOURS[role], lw=1.2,
                        label=f"{role} AUC {e['auc']:.3f}")
        ax.plot([0, 1], [0, 1], color=GREY, lw=0.6, ls=":")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), title=f"class {classes[ci]} vs rest")
        ax.legend(loc="lower right", frameon=False, fontsize=7)
    for ax in flat[len(classes):]:
        ax.set_visible(False)
    fig.supxlabel("false positive rate", fontsize=8)
    fig.supylabel("true positive rate", fontsize=8)
    return to_svg(fig, "one-vs-rest ROC curves per class")


# -- regression ------------------------------------------------------------------------------------------------------
def regression_svg(models: dict, refs: dict | None = None) -> str | None:
    roles = [r for r in ("candidate", "baseline") if r in models and models[r].get("n")]
    if not roles:
        return None
    fig, axes = _new(7.6, 2.9, ncols=len(roles) + 1)
    for ax, role in zip(axes[0], roles):
        g = models[role]["grid"]
        e = g["edges"]
        counts = [[math.log10(v) if v else float("nan") for v in row] for row in g["counts"]]
        ax.imshow(counts, origin="lower", extent=(e[0], e[-1], e[0], e[-1]), cmap="Blues", aspect="auto",
                  interpolation="nearest")
        ax.plot([e[0], e[-1]], [e[0], e[-1]], color=GREY, lw=0.7, ls=":")
        ax.set(xlabel="predicted", ylabel="actual", title=f"{_label(role, refs)} (log10 rows)")
    ax = axes[0][-1]
    for role in roles:
        r = models[role]["residuals"]
        ax.stairs(r["counts"], r["edges"], color=COLOURS[role], lw=1.2, label=role)
    ax.axvline(0, color=GREY, lw=0.7, ls="--")
    ax.set(xlabel="prediction − label", ylabel="rows", title="residuals")
    ax.legend(frameon=False)
    return to_svg(fig, "regression: predicted vs actual and residuals")


# -- drift -----------------------------------------------------------------------------------------------------------
def drift_svg(drift: dict | None) -> str | None:
    cols = (drift or {}).get("columns") or []
    cols = [c for c in cols if c.get("score") is not None]
    if not cols:
        return None
    groups: dict[str, list] = {}
    for c in cols:
        groups.setdefault(c.get("score_type") or "score", []).append(c)
    heights = [0.5 + 0.24 * len(g) for g in groups.values()]
    fig, axes = _new(7.6, 0.5 + sum(heights), nrows=len(groups), gridspec_kw={"height_ratios": heights})
    for ax, (kind, items) in zip([row[0] for row in axes], groups.items()):
        ys = list(range(len(items)))[::-1]
        for y, c in zip(ys, items):
            colour = OUTCOME_COLOURS["FAIL"] if c.get("drifted") else "#8c959f"
            ax.barh(y, c["score"], color=colour, height=0.6)
            if c.get("threshold") is not None:
                ax.plot([c["threshold"]] * 2, [y - 0.4, y + 0.4], color="#1f2328", lw=1.2)
        ax.set_yticks(ys, [f"{c['column']} ({c.get('method_id') or c.get('method', '')})" for c in items])
        what = ("p-value (drift when ≤ threshold)" if kind == "p_value"
                else "distance (drift when ≥ threshold)" if kind == "distance" else kind)
        ax.set_xlabel(f"{what}; black tick = threshold, red bar = drifted")
    fig.suptitle("Drift per column, reference vs current", x=0.01, ha="left", fontsize=10)
    return to_svg(fig, "drift per column")


# -- Dagster UI ------------------------------------------------------------------------------------------------------
def ui_png(result: dict, curves: dict | None) -> bytes | None:
    """One small PNG: the deciding metric's forest plot (gated slices only) beside the ROC curves (binary)."""
    metric, hib = key_metric(result)
    rows = []
    if metric:
        rows = [r for r in forest_rows(result, metric)[0] if r["outcome"]][:25]
    models = (curves or {}).get("models") or {}
    roles = [r for r in ("candidate", "baseline") if r in models and models[r].get("roc")]
    panels = (1 if rows else 0) + (1 if roles else 0)
    if not panels:
        return None
    fig = Figure(figsize=(4.6 * panels if panels == 1 else 9.6, max(3.2, 0.9 + 0.17 * len(rows))),
                 layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False, width_ratios=[1.35, 1] if panels == 2 else None)[0]
    i = 0
    if rows:
        ax = axes[i]
        i += 1
        ys = list(range(len(rows)))[::-1]
        for y, r in zip(ys, rows):
            colour = OUTCOME_COLOURS.get(r["outcome"], GREY)
            if r["gate_ci"] and None not in r["gate_ci"]:
                ax.plot(r["gate_ci"], [y, y], color=colour, lw=3)
            ax.plot([r["delta"]], [y], "o", ms=3, color=colour)
            if r["margin"] is not None:
                m = -r["margin"] if hib else r["margin"]
                ax.plot([m, m], [y - 0.4, y + 0.4], color="#1f2328", lw=1.2)
        ax.axvline(0, color=GREY, lw=0.7, ls="--")
        ax.set_yticks(ys, [r["slice"] for r in rows], fontsize=7)
        ax.set_title(f"Δ {metric} per gated slice (adjusted interval; black: margin)", fontsize=8)
    if roles:
        _roc_axes(axes[i], models, roles, None)
    return to_png(fig)


def key_metric(result: dict) -> tuple[str | None, bool]:
    """The metric the verdict hinges on: the first deciding non-inferiority gate's, else the first such gate's."""
    from .engine.catalogue import METRICS

    gates = [g for g in result.get("gates", []) if g.get("kind") == "non_inferiority"]
    deciding = [g for g in gates if g.get("outcome") == result.get("verdict")] or gates
    if not deciding:
        return None, True
    m = deciding[0]["metric"]
    return m, METRICS[m].higher_is_better if m in METRICS else True


def ui_heading(result: dict) -> str:
    return (f"**{result.get('verdict')}** — {result.get('candidate', {}).get('ref', '')}"
            + (f" vs {result['baseline']['ref']}" if result.get("baseline") else ""))


def ui_markdown(result: dict, curves: dict | None, report_url: str | None = None) -> str:
    """Markdown for Dagster asset metadata (``dg.MetadataValue.md``): the key plots as an embedded PNG (data URI;
    Dagster's markdown renderer allows ``data:`` image sources) and a link to the full HTML report."""
    png = ui_png(result, curves)
    parts = [ui_heading(result)]
    if png:
        parts.append(f"![key plots](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")
    if report_url:
        parts.append(f"[Open the full decision report]({report_url})")
    return "\n\n".join(parts) + "\n"
