"""The ``fairness:`` section of an evaluation spec: groups of sensitive columns, disparity metrics and their gates.

Its own module so that :mod:`.spec` stays a table of sections. Example::

    fairness:
      sensitive: [origin]          # one or more columns (need not be features); several = intersectional groups
      min_group_size: 200          # default slices.min_size; smaller groups are reported, left out of disparities
      metrics: [demographic_parity_difference, equalized_odds_difference]   # default: all six
      gates:
        - {metric: demographic_parity_difference, max_increase: 0.02}  # no worse than the champion's + 0.02
        - {metric: equalized_odds_difference, max: 0.15}               # below an absolute bound
        - {metric: demographic_parity_ratio, min: 0.8}                 # the "four-fifths" rule

Differences (``*_difference``) are "lower is better": ``max_increase`` bounds candidate - baseline from above, ``max``
the candidate's own value. Ratios (``*_ratio``) are "higher is better": ``max_decrease`` and ``min``. The engine
(:mod:`eval_pipeline.engine.fairness`) defines every metric exactly as fairlearn does.
"""
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def fairness_metric_names() -> list[str]:
    from .engine.fairness import FAIRNESS_METRICS  # the engine owns the definitions

    return list(FAIRNESS_METRICS)


class FairnessGateSpec(_Strict):
    metric: str
    max_increase: float | None = Field(None, ge=0.0, description="differences: candidate - baseline <= this")
    max_decrease: float | None = Field(None, ge=0.0, description="ratios: baseline - candidate <= this")
    max: float | None = Field(None, ge=0.0, description="the candidate's disparity <= this (absolute)")
    min: float | None = Field(None, ge=0.0, le=1.0, description="ratios: the candidate's ratio >= this (absolute)")
    name: str | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> "FairnessGateSpec":
        names = fairness_metric_names()
        if self.metric not in names:
            raise ValueError(f"metric {self.metric!r} is not a fairness metric; expected one of {names}")
        given = [k for k in ("max_increase", "max_decrease", "max", "min") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"gate on {self.metric!r}: give exactly one of max_increase (differences), max_decrease "
                             f"(ratios), max or min; got {given or 'none'}")
        ratio = self.metric.endswith("_ratio")
        if given[0] == "max_increase" and ratio:
            raise ValueError(f"gate on {self.metric!r}: a ratio is higher-is-better (1 = parity); use max_decrease "
                             f"or min")
        if given[0] in ("max_decrease", "min") and not ratio:
            raise ValueError(f"gate on {self.metric!r}: a difference is lower-is-better (0 = parity); use "
                             f"max_increase or max")
        return self

    @property
    def rule(self) -> str:
        return next(k for k in ("max_increase", "max_decrease", "max", "min") if getattr(self, k) is not None)

    @property
    def paired(self) -> bool:
        """Compared with the baseline (needs one), rather than an absolute bound."""
        return self.rule in ("max_increase", "max_decrease")

    def gate_name(self) -> str:
        return self.name or f"fairness:{self.metric}:{self.rule}"


class FairnessSpec(_Strict):
    """Fairness of a binary classifier across the groups of ``sensitive`` (eval_pipeline.engine.fairness)."""
    sensitive: list[str] = Field(min_length=1, description="columns whose values (or combinations) form the groups")
    metrics: list[str] | None = Field(None, description="disparity metrics (default: all)")
    min_group_size: int | None = Field(None, ge=1, description="groups with fewer rows are left out of disparities "
                                                               "(default slices.min_size)")
    gates: list[FairnessGateSpec] = Field(default_factory=list)

    @field_validator("sensitive")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"expected distinct columns, got {v}")
        return v

    @field_validator("metrics")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        names = fairness_metric_names()
        bad = [m for m in v or [] if m not in names]
        if bad:
            raise ValueError(f"{bad} are not fairness metrics; expected some of {names}")
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"expected a non-empty list of distinct metrics, got {v}")
        return v

    def metric_names(self) -> list[str]:
        return list(self.metrics) if self.metrics else fairness_metric_names()

    def problems(self, spec) -> list[str]:
        """Cross-key problems ('key.path: what is wrong') that need the rest of the spec."""
        out = []
        if spec.task_type != "binary_classification":
            out.append(f"fairness: needs task_type binary_classification (selection rate, true and false positive "
                       f"rates per group); this task is {spec.task_type}")
        c = spec.columns
        taken = {c.id: "columns.id", c.label: "columns.label"} | ({c.timestamp: "columns.timestamp"}
                                                                  if c.timestamp else {})
        for col in self.sensitive:
            if col in taken:
                out.append(f"fairness.sensitive: {col!r} is {taken[col]}; name the column of a group attribute")
        for i, g in enumerate(self.gates):
            if g.metric not in self.metric_names():
                out.append(f"fairness.gates.{i}.metric: {g.metric!r} is not in fairness.metrics {self.metric_names()}")
        return out
