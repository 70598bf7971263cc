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
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_serializer, model_validator)
from pydantic_core import InitErrorDetails

from .fairness_spec import FairnessSpec
from .robustness_spec import RobustnessSpec
from .settings import DOTTED_NAME

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Every metric of the task type (the engine's catalogue, eval_pipeline.engine.METRICS; a test keeps them equal).
DEFAULT_METRICS = {
    "binary_classification": ["roc_auc", "average_precision", "accuracy", "precision", "recall", "f1",
                              "specificity", "balanced_accuracy", "log_loss", "brier", "ece"],
    "multiclass_classification": ["accuracy", "macro_f1", "micro_f1", "weighted_f1", "top_k_accuracy"],
    "regression": ["mae", "rmse", "r2", "mape", "mean_error"],
    "ranking": ["ndcg@10", "map@10", "mrr", "recall@10", "precision@10"],  # any cutoff: ndcg@5, recall@100, ...
}

# The drift methods eval_pipeline.drift supports (Evidently 0.7 stattest names; drift._STATTESTS, kept equal by a
# test: drift.py imports Evidently, too slow to import just to validate a spec). Methods for categorical columns:
DRIFT_METHODS = ("ks", "cramer_von_mises", "anderson", "chisquare", "es", "fisher_exact", "g_test", "mannw",
                 "empirical_mmd", "t_test", "TVD", "z", "ed", "hellinger", "jensenshannon", "kl_div", "psi",
                 "wasserstein")
DRIFT_CATEGORICAL_METHODS = ("chisquare", "fisher_exact", "g_test", "hellinger", "jensenshannon", "kl_div", "psi",
                             "TVD", "z")
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# Sections added after specs were first hashed: when absent (None) they are left out of the hash (canonical_json).
OPTIONAL_SECTIONS = ("robustness", "ranking", "fairness")
# Sections that default to an empty list: left out of the hash when empty, for the same reason.
OPTIONAL_LISTS = ("suites",)


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _matching(pattern: re.Pattern, value: str, message: str) -> str:
    """``value`` if ``pattern`` matches it, else a ValueError with ``message`` (a validator's whole body)."""
    if not pattern.match(value):
        raise ValueError(message)
    return value


def _env_var_named(v: str) -> str:
    return _matching(_ENV_NAME, v, f"{v!r} is not an environment variable name (letters, digits, '_')")
_SQL_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class SqlSourceSpec(_Strict):
    """A warehouse query or table read through SQLAlchemy in batches (eval_pipeline.sql_source). The connection URL,
    credentials included, comes only from the environment variable named by ``url_env``, never from the spec."""
    url_env: Annotated[str, AfterValidator(_env_var_named)] = Field(
        description="environment variable holding the SQLAlchemy URL (with its credentials)")
    query: str | None = Field(None, description="a SELECT returning (at least) the spec's columns")
    table: str | None = Field(None, description="a table or view, 'name' or 'schema.name', instead of a query")
    batch_rows: int = Field(50_000, ge=1, description="rows fetched per batch and written per parquet part")

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in ("url", "dsn", "password", "connection_string")):
            raise ValueError("credentials never go in the spec: put the SQLAlchemy URL in an environment variable "
                             "and name that variable in data.sql.url_env")
        return data

    @field_validator("table")
    @classmethod
    def _table_name(cls, v: str | None) -> str | None:
        if v is not None and not _SQL_TABLE.match(v):
            raise ValueError(f"table {v!r} must be 'name' or 'schema.name' (letters, digits, '_'); use query for "
                             f"anything else")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> "SqlSourceSpec":
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of query (a SELECT) or table")
        if self.query is not None and not self.query.strip().rstrip(";").strip():
            raise ValueError("query is empty")
        return self


class DataSpec(_Strict):
    # Folder (relative to the lake root, or a full URI) where monthly/daily files land.
    source: str | None = Field(None, description="landing folder, relative to the lake root or an absolute URI")
    # Or a warehouse query/table (exactly one of source and sql).
    sql: SqlSourceSpec | None = None
    format: Literal["parquet", "csv", "auto"] = "auto"
    # Rows evaluated: an optional timestamp window; models are usually trained on earlier data.
    evaluation_start: date | None = None
    evaluation_end: date | None = None

    @model_validator(mode="before")
    @classmethod
    def _source_or_sql(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("source") is None and data.get("sql") is None:
            # reported as the usual "data.source: required key is missing"
            raise ValidationError.from_exception_data(
                "DataSpec", [InitErrorDetails(type="missing", loc=("source",), input=data)])
        if isinstance(data, dict) and data.get("source") is not None and data.get("sql") is not None:
            raise ValueError("give either source (a landing folder) or sql (a warehouse query or table), not both")
        return data

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # a file-source spec dumps (and so hashes: spec_sha256) as it did before data.sql existed
        out = handler(self)
        if isinstance(out, dict) and out.get("sql", 0) is None:
            del out["sql"]
        elif isinstance(out, dict) and out.get("sql") is not None:
            out.pop("source", None)  # derived (EvalSpec._sql_landing): a SQL spec dumps as written, re-parseable
        return out


class ColumnsSpec(_Strict):
    id: str
    label: str
    timestamp: str | None = None
    # What a model receives (sklearn flavors). A predictions-flavor task may leave it empty; slice and drift columns
    # need not be features (they are read into the snapshot all the same).
    features: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list,
                                   description="features or drift columns treated as categorical for drift")
    query: str | None = Field(None, description="ranking: the query id column (one row per query and document)")

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        out = handler(self)  # a spec without a query column dumps (and hashes) as it did before the key existed
        if isinstance(out, dict) and out.get("query", 0) is None:
            del out["query"]
        return out


class RankingSpec(_Strict):
    """task_type ranking: what counts as relevant, and what a query without a relevant document does
    (eval_pipeline.engine.ranking)."""
    relevance_min: float = Field(1.0, gt=0, description="a document is relevant when its label >= this (map, mrr, "
                                                        "recall@k, precision@k; ndcg uses the graded label)")
    no_relevant: Literal["skip", "zero"] = Field("skip", description="queries without relevant documents: left out "
                                                 "of the metrics they make undefined (skip) or counted as 0 (zero)")


class ModelSpec(_Strict):
    name: str = Field(description="registered model name in the lake registry")
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="decision threshold for binary classification, in (0, 1]")
    classes: list[Any] | None = Field(None, description="class order for multiclass probability outputs")
    top_k: int = Field(3, ge=1)
    batch_size: int = Field(100_000, ge=1, description="rows scored per batch")
    # Types beyond skops' defaults that this task's operator allows in sklearn-skops artifacts (with the ones in
    # EVAL_TRUSTED_TYPES). The artifact's own list of types is never trusted.
    trusted_types: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return _matching(NAME_RE, v, f"model name {v!r} must match {NAME_RE.pattern} (no '/', '..' or spaces)")

    @field_validator("trusted_types")
    @classmethod
    def _dotted(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not DOTTED_NAME.match(t)]
        if bad:
            raise ValueError(f"expected dotted type names such as "
                             f"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor, got {bad}")
        return v


class SlicesSpec(_Strict):
    columns: list[str] = Field(default_factory=list)
    crosses: list[list[str]] = Field(default_factory=list)
    bins: dict[str, list[float]] = Field(default_factory=dict)
    min_size: int = Field(100, ge=1)
    # binary only: slices with fewer positive / negative labels are reported as too_small, like min_size
    min_positives: int = Field(0, ge=0)
    min_negatives: int = Field(0, ge=0)
    max_values: int = Field(200, ge=1, description="cap on distinct values of one slice column (the most frequent "
                                                   "are kept, with a warning)")

    def engine_kwargs(self, config_cls: type | None = None) -> dict:
        """Keyword arguments of the engine's SliceConfig; with ``config_cls``, only the fields it has (so a spec key
        the engine does not know yet, e.g. min_positives, is not passed to an older engine)."""
        kw = {"columns": list(self.columns), "crosses": [list(c) for c in self.crosses],
              "bins": {k: list(v) for k, v in self.bins.items()}, "min_size": self.min_size,
              "max_values": self.max_values, "min_positives": self.min_positives, "min_negatives": self.min_negatives}
        if config_cls is not None:
            import dataclasses

            names = {f.name for f in dataclasses.fields(config_cls)}
            kw = {k: v for k, v in kw.items() if k in names}
        return kw

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
    method: Literal[DRIFT_METHODS] | None = None
    threshold: float | None = Field(None, gt=0)
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
    max_null_fraction: dict[str, Fraction] = Field(default_factory=dict)
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


ALERT_EVENTS = ("fail", "inconclusive", "drift", "refused_manifest")


def _yaml_on_key(data: Any) -> Any:
    """YAML 1.1 reads a bare ``on:`` key as the boolean True; take it back as 'on'."""
    if isinstance(data, dict) and True in data:
        data = {("on" if k is True else k): v for k, v in data.items()}
    return data


def _env_var_name(v: str | None, key: str) -> str | None:
    if v is not None and not _ENV_NAME.match(v):
        # never echo the value: a URL or a token put here by mistake is a secret
        raise ValueError(f"{key} names an environment variable (letters, digits, '_'), e.g. TEAM_SLACK_WEBHOOK; the "
                         f"secret itself (webhook URL, token) goes in that variable, never in the spec")
    return v


class AlertWebhookSpec(_Strict):
    """One webhook: its URL (with any token) and optional Authorization header come only from the environment."""
    url_env: str = Field(description="environment variable holding the webhook URL")
    format: Literal["json", "slack"] = "json"
    on: list[Literal[ALERT_EVENTS]] = Field(default_factory=lambda: ["fail", "drift", "refused_manifest"])
    auth_env: str | None = Field(None, description="environment variable holding an Authorization header value")

    _on_key = model_validator(mode="before")(classmethod(lambda cls, data: _yaml_on_key(data)))

    @field_validator("url_env")
    @classmethod
    def _url_env(cls, v: str) -> str:
        return _env_var_name(v, "url_env")

    @field_validator("auth_env")
    @classmethod
    def _auth_env(cls, v: str | None) -> str | None:
        return _env_var_name(v, "auth_env")


class AlertsSpec(_Strict):
    """Who is told about a FAIL, an INCONCLUSIVE (only if asked), drift or a refused manifest (eval_pipeline.alerts).
    ``on`` is the events the default webhooks of EVAL_ALERT_WEBHOOKS get for this task."""
    webhooks: list[AlertWebhookSpec] = Field(default_factory=list)
    on: list[Literal[ALERT_EVENTS]] = Field(default_factory=lambda: ["fail", "drift", "refused_manifest"])
    default_webhooks: bool = Field(True, description="also alert the webhooks of EVAL_ALERT_WEBHOOKS")

    _on_key = model_validator(mode="before")(classmethod(lambda cls, data: _yaml_on_key(data)))


class SuiteSpec(_Strict):
    """One evaluation suite: a folder of extra evaluation rows with its own expectations and gates
    (eval_pipeline/suites.py; checked against the rest of the spec by suites.suite_problems)."""
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="the suite's name in results and gate rows")
    source: str = Field(description="its folder, relative to the lake root (not inside data.source)")
    per_example: bool = Field(False, description="every row must be right; failing ids are listed")
    tolerance: float | None = Field(None, ge=0, description="regression per-example: |prediction - label| allowed")
    expectations: ExpectationsSpec = ExpectationsSpec()
    gates: list[GateSpec] = Field(default_factory=list)


class EvalSpec(_Strict):
    task: str
    description: str = ""
    task_type: Literal["binary_classification", "multiclass_classification", "regression", "ranking"]
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
    alerts: AlertsSpec = AlertsSpec()
    robustness: RobustnessSpec | None = None
    ranking: RankingSpec | None = None
    fairness: FairnessSpec | None = None  # eval_pipeline/fairness_spec.py
    suites: list[SuiteSpec] = Field(default_factory=list)  # eval_pipeline/suites.py

    @field_validator("task")
    @classmethod
    def _task_name(cls, v: str) -> str:
        if not re.match(r"^[a-z][a-z0-9_]{0,47}$", v):
            raise ValueError(f"task {v!r} must be lowercase letters, digits and '_' (it names Dagster assets)")
        return v

    @model_validator(mode="after")
    def _sql_landing(self) -> "EvalSpec":
        # A SQL task's landing area is where its extract's parts land (eval_pipeline.sql_source), so code that names
        # a task's data.source (messages, asset descriptions) has a folder to name; nothing is listed from there.
        if self.data.sql is not None and self.data.source is None:
            object.__setattr__(self.data, "source", f"extracts/{self.task}/parts")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> "EvalSpec":
        """Everything that can be known from the spec alone; problems are 'key.path: what is wrong' lines."""
        problems: list[str] = []
        self._check_columns(problems)
        self._check_timestamp(problems)
        self._check_metrics(problems)
        self._check_gate_slices(problems)
        self._check_drift(problems)
        self._check_robustness(problems)
        problems += self.fairness.problems(self) if self.fairness else []
        if self.suites:
            from .suites import suite_problems

            problems += suite_problems(self)
        if not problems:
            self._check_gate_resolution(problems)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _check_columns(self, problems: list[str]) -> None:
        c = self.columns
        roles = [("columns.id", c.id), ("columns.label", c.label)] + (
            [("columns.timestamp", c.timestamp)] if c.timestamp else []) + (
            [("columns.query", c.query)] if c.query else [])
        seen: dict[str, str] = {}
        for key, col in roles:
            if col in seen:
                problems.append(f"{key}: column {col!r} is also {seen[col]}; id, label and timestamp must differ")
            seen.setdefault(col, key)
        for col in c.features:
            if col in seen:
                problems.append(f"columns.features: {col!r} is {seen[col]}, not a feature")
        allowed = set(c.features) | set(self.drift_columns())
        for col in c.categorical:
            if col not in allowed:
                problems.append(f"columns.categorical: {col!r} is neither a feature nor a drift column "
                                f"(features: {list(c.features)}; drift columns: {self.drift_columns()})")

    def _check_timestamp(self, problems: list[str]) -> None:
        if self.columns.timestamp:
            return
        needs = []
        if self.data.evaluation_start or self.data.evaluation_end:
            needs.append("data.evaluation_start/evaluation_end")
        if self.drift.enabled:
            for side in ("reference", "current"):
                w = getattr(self.drift, side)
                if w.start or w.end or w.last_days is not None:
                    needs.append(f"drift.{side}")
        if self.expectations.freshness is not None:
            needs.append("expectations.freshness")
        if needs:
            problems.append(f"columns.timestamp: required because {', '.join(needs)} "
                            f"{'selects' if len(needs) == 1 else 'select'} rows by time; name the timestamp column "
                            f"(or remove the time windows)")

    def _check_metrics(self, problems: list[str]) -> None:
        from .engine.catalogue import is_metric_for, metric_syntax  # the engine owns the metric catalogue

        unknown = [m for m in self.metric_names() if not is_metric_for(m, self.task_type)]
        if unknown:
            problems.append(f"metrics: {unknown} are not available for {self.task_type}; expected some of "
                            f"{metric_syntax(self.task_type)}")
        self._check_ranking(problems)
        for i, g in enumerate(self.gates):
            if g.metric not in self.metric_names():
                problems.append(f"gates.{i}.metric: gates use metrics [{g.metric!r}] that are not in 'metrics' "
                                f"{self.metric_names()}")
        if self.task_type == "multiclass_classification" and not self.model.classes:
            problems.append("model.classes: required for multiclass_classification (the order of the probability "
                            "columns)")

    def _check_ranking(self, problems: list[str]) -> None:
        ranking = self.task_type == "ranking"
        if ranking and not self.columns.query:
            problems.append("columns.query: required for task_type ranking (the query id column: one row per query "
                            "and document, metrics are computed per query)")
        if not ranking and self.columns.query:
            problems.append(f"columns.query: only for task_type ranking (this task is {self.task_type})")
        if not ranking and self.ranking is not None:
            problems.append(f"ranking: only for task_type ranking (this task is {self.task_type})")

    def engine_task_options(self) -> dict:
        """Keyword arguments of ``engine.evaluate`` that only some task types take (ranking: the query column,
        relevance_min, no_relevant); empty for the others."""
        if self.task_type != "ranking":
            return {}
        r = self.ranking or RankingSpec()
        return {"query": self.columns.query, "relevance_min": r.relevance_min, "no_relevant": r.no_relevant}

    def _check_robustness(self, problems: list[str]) -> None:
        rob = self.robustness
        if rob is None:
            return
        for i, p in enumerate(rob.perturbations):
            bad = [c for c in p.columns if c not in self.columns.features]
            if bad:
                problems.append(f"robustness.perturbations.{i}.columns: {bad} are not in columns.features "
                                f"{list(self.columns.features)}; only model inputs can be perturbed")
        for i, g in enumerate(rob.gates):
            if g.metric not in self.metric_names():
                problems.append(f"robustness.gates.{i}.metric: {g.metric!r} is not in 'metrics' {self.metric_names()}")
        if rob.perturbations and not self.columns.features:
            problems.append("robustness: perturbations re-score the model on its inputs; list columns.features")

    def single_slice_columns(self) -> list[str]:
        """Columns with one slice per value: slices.columns, plus binned columns listed nowhere else (the engine)."""
        crossed = {c for cross in self.slices.crosses for c in cross}
        return list(dict.fromkeys(list(self.slices.columns) + [c for c in self.slices.bins
                                                                 if c not in self.slices.columns and c not in crossed]))

    def _gate_target_problem(self, target: str) -> str | None:
        """Why a gate's slice name can name no slice (None if it can). Values cannot be known up front."""
        if target in ("overall", "all"):
            return None
        singles = self.single_slice_columns()
        crosses = [list(c) for c in self.slices.crosses]
        parts = [p.strip() for p in target.replace(" x ", " & ").split(" & ")]
        expected = (f"expected 'overall', 'all', a slice column {singles}, 'column=value' with one of those columns, "
                    f"or a cross of {crosses} as 'a & b' or 'a=x & b=y' (in the cross's column order)")
        if any("=" in p for p in parts):
            pairs = [p.split("=", 1) for p in parts]
            if any("=" not in p or not k.strip() for p, (k, *_rest) in zip(parts, pairs)):
                return f"{target!r} mixes 'column=value' and bare column names; {expected}"
            cols = [k.strip() for k, _ in pairs]
        else:
            cols = parts
        if len(cols) == 1:
            if cols[0] in singles:
                return None
            why = ("is only sliced in a cross, not on its own" if any(cols[0] in c for c in crosses)
                   else "is not a slice column")
            return f"{target!r} names no possible slice: {cols[0]!r} {why}; {expected}"
        if cols in crosses:
            return None
        if any(sorted(cols) == sorted(c) for c in crosses):
            return f"{target!r} names the cross's columns in another order; {expected}"
        return f"{target!r} names no possible slice: no cross of columns {cols}; {expected}"

    def _check_gate_slices(self, problems: list[str]) -> None:
        for i, g in enumerate(self.gates):
            targets = [g.slices] if isinstance(g.slices, str) else list(g.slices)
            if not targets:
                problems.append(f"gates.{i}.slices: empty list; name at least one slice")
            for t in targets:
                why = self._gate_target_problem(t)
                if why:
                    problems.append(f"gates.{i}.slices ({g.name or g.metric}): {why}")

    def _check_drift(self, problems: list[str]) -> None:
        d = self.drift
        if not d.enabled:
            return
        if not self.drift_columns():
            problems.append("drift.columns: drift is enabled but there is no column to watch (columns.features is "
                            "empty); list drift.columns or set drift.enabled: false")
        if d.method is not None and d.method not in DRIFT_CATEGORICAL_METHODS:
            cat = [c for c in self.columns.categorical if c in self.drift_columns()]
            if cat:
                problems.append(f"drift.method: {d.method!r} does not apply to categorical columns {cat}; methods "
                                f"for categorical columns: {list(DRIFT_CATEGORICAL_METHODS)} (for categorical and "
                                f"numeric columns alike: hellinger, jensenshannon, kl_div, psi)")

    def gate_rows_lower_bound(self) -> int:
        """Gate rows known up front: exact for 'overall' and named slices; for 'all' and a column (or a cross)
        the values are in the data, so only the sure minimum counts (every column or cross yields >= 1 slice)."""
        n_groups = len(self.single_slice_columns()) + len(self.slices.crosses)
        k = 0
        for g in self.gates:
            targets = [g.slices] if isinstance(g.slices, str) else list(dict.fromkeys(g.slices))
            for t in targets:
                k += 1 + n_groups if t == "all" else 1
        return k + (len(self.fairness.gates) if self.fairness else 0)  # one row per fairness gate

    def _check_gate_resolution(self, problems: list[str]) -> None:
        from .engine.gates import required_replicates  # the engine's rule: B + 1 >= k / alpha (alpha for 'none')

        k = self.gate_rows_lower_bound()
        if k == 0:
            return
        ev = self.evaluation
        alpha = (1.0 - ev.confidence) / 2.0  # one-sided, as the gates use it
        need = required_replicates(k, alpha, ev.multiplicity)
        b = ev.bootstrap_replicates
        if b < need:
            family = f"{ev.multiplicity} over at least {k} gate row(s)" if ev.multiplicity != "none" else \
                "no multiplicity adjustment"
            problems.append(
                f"evaluation.bootstrap_replicates: {b} is too few; the minimum is {need}. With {family}, "
                f"confidence {ev.confidence} (one-sided alpha = {alpha:g}), a gate row can PASS or FAIL only if the "
                f"smallest bootstrap p-value 1/(B+1) reaches the smallest adjusted level (B + 1 >= k / alpha); with "
                f"fewer replicates every row would be INCONCLUSIVE")

    # -- derived views -------------------------------------------------------------------------------------------
    def all_columns(self) -> list[str]:
        """Columns a snapshot keeps: id, label, timestamp, features, then slice and drift columns that are not
        features (a predictions-flavor model needs no features, yet its task can be sliced and watched)."""
        cols = [self.columns.id, self.columns.label]
        if self.columns.timestamp:
            cols.append(self.columns.timestamp)
        if self.columns.query:
            cols.append(self.columns.query)
        extra = list(self.columns.features) + self.slice_columns() + self.fairness_columns()
        if self.drift.enabled:
            extra += self.drift_columns()
        return list(dict.fromkeys(cols + extra))

    def fairness_columns(self) -> list[str]:
        """The sensitive columns of the fairness section (none without one)."""
        return list(self.fairness.sensitive) if self.fairness else []

    def metric_names(self) -> list[str]:
        return list(self.metrics) if self.metrics else list(DEFAULT_METRICS[self.task_type])

    def slice_columns(self) -> list[str]:
        """Every column a slice uses, in first-appearance order: the engine's rule, applied to the spec's slices."""
        from .engine import SliceConfig
        from .engine.slices import slice_columns

        return slice_columns(SliceConfig(**self.slices.engine_kwargs(SliceConfig)))

    def drift_columns(self) -> list[str]:
        return list(self.drift.columns or self.columns.features)

    def canonical_json(self) -> str:
        # alerts say who is told, not what is decided: changing a webhook must not change the evidence or its hash
        dump = self.model_dump(mode="json", exclude={"alerts"})
        for section in OPTIONAL_SECTIONS:  # a spec without a newer section hashes as it did before it existed
            if dump.get(section, 0) is None:
                del dump[section]
        for section in OPTIONAL_LISTS:
            if dump.get(section, 0) == []:
                del dump[section]
        return json.dumps(dump, sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid evaluation spec {source}:"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if not err["loc"] and err["type"] == "value_error":
            # cross-key checks (EvalSpec._consistent): one 'key.path: problem' per line
            lines += [f"  - {line}" for line in msg.removeprefix("Value error, ").splitlines()]
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; see the spec reference in README.md)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        if err["loc"] and err["loc"][0] == "alerts":
            shown = ""  # a value misplaced under alerts may be a webhook URL or token: never echoed
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


PACKAGED_SPECS = Path(__file__).parent / "specs"


def spec_files(entries: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """Spec files named by EVAL_SPECS-style entries (files or folders of *.yaml); the packaged specs if empty."""
    paths: list[Path] = []
    for entry in [Path(e) for e in entries] or [PACKAGED_SPECS]:
        paths += sorted(entry.glob("*.y*ml")) if entry.is_dir() else [entry]
    return paths


def specs_for_model(name: str, entries: list[str] | tuple[str, ...] = ()) -> tuple[list[EvalSpec], str]:
    """The specs (among ``entries``, default the packaged ones) whose model.name is ``name``, and where it looked."""
    files = spec_files(entries)
    specs = [s for s in (load_spec(p) for p in files) if s.model.name == name]
    return specs, (", ".join(map(str, entries)) if entries else str(PACKAGED_SPECS))


def spec_text_from(spec: EvalSpec) -> str:
    """The spec as YAML, saved beside every result so a result can be traced to what asked for it."""
    exclude = {"alerts"} if spec.alerts == AlertsSpec() else None  # the default section adds nothing to read
    return yaml.safe_dump(spec.model_dump(mode="json", exclude=exclude), sort_keys=False)
