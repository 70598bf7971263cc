"""Trends in the Dagster UI: numeric metadata of an evaluation (plotted per asset by the Plots tab) and the
``<task>/history`` asset, the model's metric history across snapshots (eval_pipeline.history does the work)."""

import dagster as dg

from eval_pipeline import history
from eval_pipeline.spec import EvalSpec
from resources import LakeResource

from .common import key


def numeric_metadata(metrics: dict) -> dict:
    """``history.metric_points`` as Dagster float metadata (``rows`` as an int), keys stable across runs."""
    return {k: dg.MetadataValue.int(int(v)) if k == "rows" else dg.MetadataValue.float(v)
            for k, v in history.metric_points(metrics).items()}


def history_asset(spec: EvalSpec) -> dg.AssetsDefinition:
    @dg.asset(key=key(spec, "history"), group_name=spec.task, deps=[key(spec, "release_gates")], kinds={"parquet"},
              description=f"Metric history of model '{spec.model.name}': every evaluation recorded under "
                          f"history/{spec.task}/{spec.model.name}/ (one per version and snapshot) as a table "
                          f"({history.trends_dir(spec.task, spec.model.name)}/history.parquet) and a trend plot of "
                          "the champion's key metrics per snapshot with the gate thresholds drawn in (trend.svg, "
                          "trend.png). Not partitioned: it gathers every partition; materialized after release_gates "
                          "in each evaluation run (so after every nightly monitoring re-evaluation too).")
    def history_(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        lk = lake.get_lake()
        out = history.write_history(lk, spec)
        frame, series = out["frame"], out["champion_series"]
        context.log.info(f"history of {spec.model.name}: {len(frame)} evaluations over "
                         f"{frame['snapshot_id'].nunique()} snapshots")
        meta = {"dagster/row_count": dg.MetadataValue.int(len(frame)),
                "snapshots": dg.MetadataValue.int(int(frame["snapshot_id"].nunique())),
                "key_metrics": ", ".join(out["metrics"]) or "none",
                "table": dg.MetadataValue.md(out["table_markdown"]),
                "trend": dg.MetadataValue.md(out["plot_markdown"]),
                **{name: dg.MetadataValue.path(lk.uri(rel)) for name, rel in out["paths"].items()}}
        if series:
            latest = series[-1]
            meta["champion"] = f"{spec.model.name}@{latest['champion']}"
            meta |= {f"champion/{m}": dg.MetadataValue.float(latest[m]) for m in out["metrics"]
                     if latest.get(m) is not None}
        return dg.MaterializeResult(metadata=meta)

    return history_
