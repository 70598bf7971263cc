"""The evaluation spec: one YAML file that describes a task end to end.

A task is data + columns + slices + metrics + gates + drift + expectations. Everything the pipeline does for a task
is read from here, so adding a task means writing a spec, not code. The spec is validated up front (pydantic, unknown
keys rejected) and every error names the file, the offending key path and what was expected.
"""

import hashlib
import json
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TASK_TYPES = ("binary_classification", "multiclass_classification", "regression")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

DEFAULT_METRICS = {
    "binary_classification": ["roc_auc", "average_precision", "accuracy", "precision", "recall", "f1",
                              "balanced_accuracy", "log_loss", "brier", "ece"],
    "multiclass_classification": ["accuracy", "macro_f1", "micro_f1", "weighted_f1", "top_k_accuracy"],
    "regression": ["mae", "rmse", "r2", "mape", "mean_error"],
}


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    # Folder (relative to the lake root, or a full URI) where monthly/daily files land.
    source: str = Field(description="landing folder, relative to the lake root or an absolute URI")
    format: Literal["parquet", "csv", "auto"] = "auto"
    # Rows evaluated: an optional timestamp window; models are usually trained on earlier data.
    evaluation_start: date | None = None
    evaluation_end: date | None = None


class ColumnsSpec(_Strict):
    id: str
    label: str
    timestamp: str | None = None
    features: list[str] = Field(min_length=1)
    categorical: list[str] = Field(default_factory=list, description="features treated as categorical for drift")


class ModelSpec(_Strict):
    name: str = Field(description="registered model name in the lake registry")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="decision threshold for binary classification")
    classes: list[Any] | None = Field(None, description="class order for multiclass probability outputs")
    top_k: int = Field(3, ge=1)
    batch_size: int = Field(100_000, ge=1, description="rows scored per batch")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"model name {v!r} must match {NAME_RE.pattern} (no '/', '..' or spaces)")
        return v


class SlicesSpec(_Strict):
    columns: list[str] = Field(default_factory=list)
    crosses: list[list[str]] = Field(default_factory=list)
    bins: dict[str, list[float]] = Field(default_factory=dict)
    min_size: int = Field(100, ge=1)
    max_values: int = Field(200, ge=1, description="cap on distinct values of one slice column")

    @field_validator("crosses")
    @classmethod
    def _pairs(cls, v: list[list[str]]) -> list[list[str]]:
        for cross in v:
            if len(cross) < 2 or len(set(cross)) != len(cross):
                raise ValueError(f"each cross must list two or more distinct columns, got {cross}")
        return v

    @field_validator("bins")
    @classmethod
    def _edges(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for col, edges in v.items():
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
                raise ValueError(f"bins for {col!r} must be 2+ strictly increasing edges, got {edges}")
        return v


class GateSpec(_Strict):
    metric: str
    kind: Literal["absolute", "non_inferiority"]
    min: float | None = None
    max: float | None = None
    margin: float | None = Field(None, ge=0.0)
    slices: str | list[str] = "overall"
    name: str | None = None

    @model_validator(mode="after")
    def _bounds(self) -> "GateSpec":
        if self.kind == "absolute" and self.min is None and self.max is None:
            raise ValueError(f"absolute gate on {self.metric!r} needs 'min' and/or 'max'")
        if self.kind == "non_inferiority" and self.margin is None:
            raise ValueError(f"non_inferiority gate on {self.metric!r} needs 'margin' (>= 0)")
        return self


class EvaluationSpec(_Strict):
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_replicates: int = Field(1000, ge=0, le=100_000)
    seed: int = Field(0, ge=0)
    multiplicity: Literal["holm", "bh", "none"] = "holm"
    ece_bins: int = Field(10, ge=2)


class WindowSpec(_Strict):
    start: date | None = None
    end: date | None = None
    last_days: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_kind(self) -> "WindowSpec":
        if self.last_days is not None and (self.start or self.end):
            raise ValueError("give either start/end or last_days, not both")
        return self


class DriftSpec(_Strict):
    enabled: bool = True
    columns: list[str] | None = None
    reference: WindowSpec = WindowSpec()
    current: WindowSpec = WindowSpec(last_days=31)
    method: str | None = None
    threshold: float | None = None
    drift_share: float = Field(0.5, gt=0, le=1)
    max_rows: int = Field(100_000, ge=100)


class FreshnessSpec(_Strict):
    max_age_days: float = Field(gt=0)
    as_of: datetime | None = None


class RangeSpec(_Strict):
    min: float | None = None
    max: float | None = None


class ExpectationsSpec(_Strict):
    min_rows: int = Field(1, ge=0)
    max_rows: int | None = None
    not_null: list[str] = Field(default_factory=list)
    max_null_fraction: dict[str, float] = Field(default_factory=dict)
    ranges: dict[str, RangeSpec] = Field(default_factory=dict)
    allowed_values: dict[str, list[Any]] = Field(default_factory=dict)
    unique: list[str] = Field(default_factory=list)
    dtypes: dict[str, Literal["numeric", "integer", "string", "datetime", "boolean"]] = Field(default_factory=dict)
    freshness: FreshnessSpec | None = None
    label_values: list[Any] | None = None


class MonitoringSpec(_Strict):
    nightly_cron: str = "0 2 * * *"
    timezone: str = "UTC"
    promote_on_pass: bool = False


class EvalSpec(_Strict):
    task: str
    description: str = ""
    task_type: Literal["binary_classification", "multiclass_classification", "regression"]
    data: DataSpec
    columns: ColumnsSpec
    model: ModelSpec
    slices: SlicesSpec = SlicesSpec()
    metrics: list[str] | None = None
    gates: list[GateSpec] = Field(default_factory=list)
    evaluation: EvaluationSpec = EvaluationSpec()
    drift: DriftSpec = DriftSpec()
    expectations: ExpectationsSpec = ExpectationsSpec()
    monitoring: MonitoringSpec = MonitoringSpec()

    @field_validator("task")
    @classmethod
    def _task_name(cls, v: str) -> str:
        if not re.match(r"^[a-z][a-z0-9_]{0,47}$", v):
            raise ValueError(f"task {v!r} must be lowercase letters, digits and '_' (it names Dagster assets)")
        return v

    @model_validator(mode="after")
    def _columns_known(self) -> "EvalSpec":
        known = set(self.all_columns())
        problems = []

        def need(col: str, where: str) -> None:
            if col not in known:
                problems.append(f"{where} names column {col!r}, which is not the id, label, timestamp or a feature "
                                f"(known: {sorted(known)})")

        for col in self.slices.columns:
            need(col, "slices.columns")
        for cross in self.slices.crosses:
            for col in cross:
                need(col, "slices.crosses")
        for col in self.slices.bins:
            need(col, "slices.bins")
        for col in self.columns.categorical:
            need(col, "columns.categorical")
        for col in self.drift.columns or []:
            need(col, "drift.columns")
        from .engine import METRICS  # the engine owns the metric catalogue

        valid = sorted(m for m, info in METRICS.items() if self.task_type in info.task_types)
        unknown = [m for m in self.metric_names() if m not in valid]
        if unknown:
            problems.append(f"metrics {unknown} are not available for {self.task_type}; expected some of {valid}")
        gate_metrics = {g.metric for g in self.gates}
        missing = gate_metrics - set(self.metric_names())
        if missing:
            problems.append(f"gates use metrics {sorted(missing)} that are not in 'metrics' {self.metric_names()}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived views -------------------------------------------------------------------------------------------
    def all_columns(self) -> list[str]:
        cols = [self.columns.id, self.columns.label]
        if self.columns.timestamp:
            cols.append(self.columns.timestamp)
        return cols + [c for c in self.columns.features if c not in cols]

    def metric_names(self) -> list[str]:
        return list(self.metrics) if self.metrics else list(DEFAULT_METRICS[self.task_type])

    def slice_columns(self) -> list[str]:
        cols = list(self.slices.columns) + [c for cross in self.slices.crosses for c in cross] + list(self.slices.bins)
        return list(dict.fromkeys(cols))

    def drift_columns(self) -> list[str]:
        return list(self.drift.columns or self.columns.features)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid evaluation spec {source}:"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; see the spec reference in README.md)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  - {path}: {msg}{shown}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "<spec>") -> EvalSpec:
    if not isinstance(data, dict):
        raise SpecError(f"invalid evaluation spec {source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return EvalSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, source)) from None


def load_spec(path: str | Path) -> EvalSpec:
    """Read and validate a spec file; raises SpecError naming the file and key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read evaluation spec {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"evaluation spec {path} is not valid YAML: {exc}") from None
    return parse_spec(data, str(path))


def spec_text_from(spec: EvalSpec) -> str:
    """The spec as YAML, saved beside every result so a result can be traced to what asked for it."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
