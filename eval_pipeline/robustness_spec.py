"""The ``robustness:`` section of an evaluation spec: perturbation suites the candidate is re-scored on.

Its own module so that :mod:`.spec` stays a table of sections and :mod:`.robustness` (which needs the models) is not
imported to validate a spec. Example::

    robustness:
      max_rows: 20000             # cost bound: a deterministic hashed sample of the evaluation rows
      perturbations:
        - {name: noise, kind: gaussian_noise, columns: [distance, hour], scale: 0.25}
        - {name: no_carrier, kind: missing, columns: [carrier]}
        - {name: new_carrier, kind: unseen_category, columns: [carrier], fraction: 0.5}
        - {name: far_shift, kind: covariate_shift, columns: [distance], strength: 1.0}
      gates:
        - {metric: roc_auc, max_drop: 0.02}                     # every perturbation
        - {metric: accuracy, max_drop: 0.05, perturbations: [noise]}
"""
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PERTURBATION_KINDS = ("gaussian_noise", "missing", "unseen_category", "swap_category", "boundary", "out_of_range",
                      "covariate_shift")
NUMERIC_ONLY = ("gaussian_noise", "boundary", "out_of_range")
CATEGORICAL_ONLY = ("unseen_category", "swap_category")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PerturbationSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal[PERTURBATION_KINDS]
    columns: list[str] = Field(default_factory=list, description="feature columns perturbed (default: every "
                               "numeric feature for numeric kinds, every categorical feature for categorical kinds)")
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of rows perturbed")
    scale: float = Field(0.1, gt=0.0, description="gaussian_noise: noise sd = scale x the column's sd")
    factor: float = Field(1.0, gt=0.0, description="out_of_range: value = max + factor x sd (or min - factor x sd)")
    value: Any = Field("__unseen__", description="unseen_category: the value written")
    strength: float = Field(1.0, description="covariate_shift (numeric): row weight exp(strength x z-score)")
    weights: dict[str, float] = Field(default_factory=dict,
                                      description="covariate_shift (categorical): value -> weight (others 1)")

    @model_validator(mode="after")
    def _shift_needs_one_column(self):
        if self.kind == "covariate_shift" and len(self.columns) != 1:
            raise ValueError(f"perturbation '{self.name}': covariate_shift needs exactly one column in columns")
        return self


class RobustnessGateSpec(_Strict):
    metric: str
    max_drop: float = Field(ge=0.0, description="perturbed minus clean may be worse by at most this much")
    perturbations: list[str] | None = Field(None, description="names (default: every perturbation)")


class RobustnessSpec(_Strict):
    max_rows: int = Field(20_000, ge=100, description="rows re-scored per perturbation (hashed sample)")
    perturbations: list[PerturbationSpec] = Field(default_factory=list)
    gates: list[RobustnessGateSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self):
        names = [p.name for p in self.perturbations]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"robustness.perturbations: duplicate name(s) {dup}")
        for g in self.gates:
            bad = [n for n in (g.perturbations or []) if n not in names]
            if bad:
                raise ValueError(f"robustness.gates ({g.metric}): unknown perturbation(s) {bad}; known: {names}")
        return self
