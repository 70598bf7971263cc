"""The demo's evaluation suites (spec key ``suites``): a golden sample and a handful of edge cases, from real flights.

- ``golden``: a fixed seeded sample of :data:`GOLDEN_ROWS` evaluation-window flights (Jul-Dec 2013), one file. A
  yardstick that stays put while monthly files land, evaluated with its own gates.
- ``edge_cases``: per-example cases, every one must be right. Real incidents are what belongs there; the demo has
  none, so it seeds the candidate's :data:`EDGE_PER_CLASS` most confident correct "delayed" calls and as many
  "on time" calls of :data:`EDGE_MONTH` (picked by the candidate's own scores, so the suite PASSes and shows what a
  case file looks like). Confidence is the distance of the score from ``model.threshold``; ties go to the smaller
  flight_id, so the pick is deterministic.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..lake import Lake
from ..registry import Registry
from ..spec import load_spec
from .data import _landed_table, packaged_spec_path

GOLDEN_ROWS = 10_000
EDGE_MONTH = 12          # local month of 2013 the edge cases are taken from (December, the last evaluated month)
EDGE_PER_CLASS = 5
CANDIDATE_VERSION = "2"


def _write_if_changed(lake: Lake, rel: str, table: pa.Table) -> str:
    """Rewrite only when the rows differ: an unchanged file keeps its mtime, so the sensors see nothing new."""
    if lake.exists(rel):
        try:
            if pq.read_table(io.BytesIO(lake.read_bytes(rel))).replace_schema_metadata(None).equals(table):
                return rel
        except (pa.ArrowInvalid, OSError):
            pass
    lake.write_parquet(rel, table)
    return rel


def _suite_source(spec, name: str) -> str:
    found = [s.source for s in spec.suites if s.name == name]
    if not found:
        raise ValueError(f"the packaged spec {spec.task!r} has no suite named {name!r} (suites: "
                         f"{[s.name for s in spec.suites]})")
    return found[0].rstrip("/")


def golden_rows(frame: pd.DataFrame, spec, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of the evaluation window (at most GOLDEN_ROWS rows), sorted by flight_id."""
    window = frame[frame[spec.columns.timestamp] >= pd.Timestamp(spec.data.evaluation_start, tz="UTC")]
    take = np.random.default_rng([seed, 2013]).permutation(len(window))[:GOLDEN_ROWS]
    return window.iloc[np.sort(take)]


def edge_case_rows(frame: pd.DataFrame, spec, scores: np.ndarray) -> pd.DataFrame:
    """The candidate's most confident correct calls of EDGE_MONTH, EDGE_PER_CLASS per class (scores align with
    frame's rows)."""
    label, threshold = spec.columns.label, spec.model.threshold
    scored = frame.assign(_score=scores)
    month = scored[scored["month"] == EDGE_MONTH]
    late = month[(month[label] == 1) & (month["_score"] >= threshold)]
    on_time = month[(month[label] == 0) & (month["_score"] < threshold)]
    picks = [late.sort_values(["_score", spec.columns.id], ascending=[False, True], kind="stable"),
             on_time.sort_values(["_score", spec.columns.id], ascending=[True, True], kind="stable")]
    chosen = pd.concat([p.head(EDGE_PER_CLASS) for p in picks])
    return chosen.drop(columns="_score").sort_values(spec.columns.id, kind="stable")


def write_suites(lake: Lake, frame: pd.DataFrame, *, seed: int = 0) -> dict:
    """Land the flights_delay suites' files (after its models are registered: edge cases use the candidate).
    Returns {suite: [lake-relative paths]}."""
    from ..scoring import load_model

    spec = load_spec(packaged_spec_path("flights_delay"))
    registry = Registry(lake)
    model = load_model(registry, registry.manifest(spec.model.name, CANDIDATE_VERSION),
                       trusted_types=list(spec.model.trusted_types)).model
    month = frame[frame["month"] == EDGE_MONTH]
    scores = model.predict_proba(month[list(spec.columns.features)])[:, 1]
    golden = golden_rows(frame, spec, seed)
    edge = edge_case_rows(month, spec, scores)
    return {
        "golden": [_write_if_changed(lake, f"{_suite_source(spec, 'golden')}/golden-2013-h2.parquet",
                                     _landed_table(golden))],
        "edge_cases": [_write_if_changed(lake, f"{_suite_source(spec, 'edge_cases')}/"
                                               f"2013-{EDGE_MONTH:02d}-confident.parquet", _landed_table(edge))],
    }
