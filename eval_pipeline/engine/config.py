"""Declarative configuration objects of the engine (slices, gates)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SliceConfig:
    """Which slices to evaluate.

    - ``columns``: single-column slices (one slice per distinct value, nulls form the value ``null``).
    - ``crosses``: crossed slices, e.g. ``[["origin", "carrier"]]`` (one slice per combination present in the data).
    - ``bins``: numeric column -> increasing bin edges. A binned column is bucketed wherever it appears; values below
      the first edge go to ``(-inf, e0)``, at or above the last to ``[e_last, inf)``; labels look like ``[500, 1000)``.
      A binned column listed nowhere else is added as a single-column slice.
    - ``min_size``: slices with fewer rows are reported with ``n`` and status ``too_small`` and no metrics.
    - ``max_values``: a column with more distinct values keeps the ``max_values`` most frequent (ties: value order)
      and records a warning naming the column.
    - ``min_positives`` / ``min_negatives`` (binary only): slices with fewer positive / negative labels are reported
      as ``too_small`` too. Rank metrics (AUC, AP) are driven by the smaller class, so a slice of 200 rows with 10
      positives has an interval far less reliable than its row count suggests.
    """

    columns: list[str] | tuple = ()
    crosses: list[list[str]] | tuple = ()
    bins: dict[str, list[float]] = field(default_factory=dict)
    min_size: int = 100
    max_values: int = 200
    min_positives: int = 0
    min_negatives: int = 0


@dataclass(frozen=True)
class GateDef:
    """One release gate; see :mod:`eval_pipeline.engine.gates` for the decision rule."""

    metric: str
    kind: str  # "absolute" | "non_inferiority"
    min: float | None = None
    max: float | None = None
    margin: float | None = None
    slices: str | list[str] = "overall"
    name: str | None = None
