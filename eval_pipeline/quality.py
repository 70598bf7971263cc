"""Data-quality validation with Great Expectations 1.x, called directly (no Dagster here).

Entry points: :func:`validate_dataset` -> :class:`QualityResult` (one frame), :func:`validate_batches` (a stream of
frames in bounded memory, merged exactly into the whole dataset's result: :mod:`eval_pipeline.quality_merge`), and
:func:`render_html`. The checks are built per expectation kind in :mod:`eval_pipeline.quality_expectations` (add a
kind there, and its merge rule in ``quality_merge``); the result types live in :mod:`eval_pipeline.quality_result`.

Design notes
------------
* GX runs in an *ephemeral* context built per call (≈ 10 ms), with progress bars and analytics off; a batched
  validation builds one for all its batches (:class:`SuiteRunner`). ``great_expectations`` is imported there,
  not at module level (3-6 s): a pipeline step that reuses a stored result never imports it.
* Every expectation carries ``meta={"check_id": ...}`` so results are mapped back to our own check list
  (GX does not return results in suite order).
* ``to_dict()`` is deterministic (no run ids or run times). Run metadata lives in ``QualityResult.run_info``
  and in ``gx_result`` (GX's own ``to_json_dict()``), neither of which is part of ``to_dict()``.
  Note: when freshness uses the wall clock (no ``as_of`` given anywhere), the freshness cut-off and the
  age in its message depend on the clock.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from .jsonsafe import to_jsonsafe
from .quality_expectations import DTYPE_FAMILIES, EXPECTATION_BUILDERS, Check, ColumnRoles, QualityInputs
from .quality_result import QualityResult, render_html
from .spec import EvalSpec, ExpectationsSpec, RangeSpec

__all__ = ["QualityResult", "validate_dataset", "validate_batches", "render_html", "DTYPE_FAMILIES"]


def validate_dataset(
    frame: pd.DataFrame,
    spec: EvalSpec | None = None,
    *,
    source: str = "dataset",
    as_of: _dt.datetime | None = None,
    expectations: ExpectationsSpec | Mapping[str, Any] | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    timestamp_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    task_type: str | None = None,
    label_values: list | None = None,
) -> QualityResult:
    """Validate ``frame`` against a task's expectations with Great Expectations 1.x.

    Always checks that the id, label, timestamp and feature columns exist, the row count (``min_rows``, default 1),
    non-null id, label and timestamp, the label's domain (classification: ``label_values``, binary default
    ``[0, 1]``; regression: finite numbers) and a unique id; and whatever the ``expectations`` section asks for:
    ``dtypes``, ``not_null``, ``max_null_fraction``, ``ranges``, ``allowed_values``, ``unique``, ``freshness``.
    A check on a missing column is skipped and named by that column's existence check.

    Parameters
    ----------
    frame : pandas.DataFrame
        The data to validate, e.g. a snapshot.
    spec : EvalSpec, optional
        The task's spec: its ``expectations`` section, ``columns`` and ``task_type``. Without it, pass
        ``expectations`` and the column roles as keywords.
    source : str, default "dataset"
        Names the data at the start of every message, e.g. ``"flights_delay snapshot 1a2b"``.
    as_of : datetime, optional
        When freshness is judged if ``expectations.freshness.as_of`` is not set (naive means UTC). With neither,
        the clock is used, and the cut-off and the ages in the messages depend on it.
    expectations : ExpectationsSpec or mapping, optional
        The ``expectations`` section when ``spec`` is not given. A mapping is validated as an
        :class:`~eval_pipeline.spec.ExpectationsSpec` (``None`` values mean the default); its numbers are quoted
        in messages as written.
    id_column, label_column, timestamp_column, feature_columns, task_type, label_values
        The column roles when ``spec`` is not given. ``task_type`` is spelled as in the spec or short
        (``binary``, ``multiclass``, ``regression``); ``label_values`` overrides ``expectations.label_values``.

    Returns
    -------
    QualityResult
        ``success`` is true when every check is met. ``results`` has one entry per check in report order
        (``expectation``, ``check``, ``column``, ``success``, ``observed``, ``message``), then ``statistics``,
        ``skipped`` and ``parameters``. ``to_dict()`` is what the pipeline writes to the lake: the same data and
        arguments give the same bytes. ``run_info`` and ``gx_result`` (GX's own result) carry run ids and times.

    Raises
    ------
    TypeError
        ``frame`` is not a DataFrame, or neither ``spec`` nor the column roles are given (or both are).
    ValueError
        An unknown ``task_type``, freshness without a timestamp column, or an invalid ``expectations`` mapping.

    Examples
    --------
    >>> import pandas as pd
    >>> from eval_pipeline.spec import parse_spec
    >>> spec = parse_spec({
    ...     "task": "toy", "task_type": "binary_classification", "data": {"source": "landing/toy"},
    ...     "model": {"name": "toy"}, "drift": {"enabled": False},
    ...     "columns": {"id": "id", "label": "y", "features": ["x"]},
    ...     "expectations": {"min_rows": 3, "ranges": {"x": {"min": 0, "max": 10}}}})
    >>> frame = pd.DataFrame({"id": [1, 2, 3], "y": [0, 1, 1], "x": [0.5, 3.0, 12.0]})
    >>> result = validate_dataset(frame, spec, source="toy")
    >>> result.success, result.statistics["evaluated"], result.statistics["failed"]
    (False, 9, 1)
    >>> result.failures()
    ["toy: column 'x' has 1 value (33.3%) outside [0.0, 10.0]; e.g. 12.0"]
    >>> [r["check"] for r in result.results]
    ['schema', 'schema', 'schema', 'row_count', 'not_null', 'not_null', 'range', 'label_domain', 'unique']
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{source}: expected a pandas DataFrame, got {type(frame).__name__}")
    section, roles = section_and_roles(spec, source, expectations=expectations, id_column=id_column,
                                       label_column=label_column, timestamp_column=timestamp_column,
                                       feature_columns=feature_columns, task_type=task_type, label_values=label_values)
    inputs = QualityInputs.create(frame, section, roles, as_of, source)
    checks = build_checks(inputs)
    gx_run = SuiteRunner(source).run(frame, checks)
    by_id = {(er.expectation_config.meta or {}).get("check_id"): er for er in gx_run.results}
    results = [result_entry(c, *gx_outcome(c, by_id.get(check_id(i, c))), source) for i, c in enumerate(checks)]
    return quality_result(source, inputs, results, to_jsonsafe(gx_run.to_json_dict()))


def validate_batches(batches: Iterable[pd.DataFrame], spec: EvalSpec | None = None, **kwargs: Any) -> QualityResult:
    """:func:`validate_dataset` over a stream of frames in bounded memory, merged exactly into the result of the
    whole dataset: see :mod:`eval_pipeline.quality_merge` (its keywords: ``empty``, ``partitions``, ...)."""
    from .quality_merge import validate_batches as run

    return run(batches, spec, **kwargs)


def section_and_roles(spec: EvalSpec | None, source: str, **roles_given: Any) -> tuple[ExpectationsSpec, ColumnRoles]:
    """The expectations section and the column roles, from the spec or from the keywords (not both)."""
    if spec is not None:
        if any(v is not None for v in roles_given.values()):
            raise TypeError(f"{source}: give either a spec or the expectations and column roles, not both")
        return spec.expectations, ColumnRoles.from_spec(spec)
    g = roles_given
    if g.get("id_column") is None or g.get("label_column") is None or g.get("task_type") is None:
        raise TypeError(f"{source}: give a spec, or id_column, label_column and task_type")
    section = _expectations_section(g.get("expectations"))
    label_values = g.get("label_values")
    roles = ColumnRoles.create(id=g["id_column"], label=g["label_column"], timestamp=g.get("timestamp_column"),
                               features=g.get("feature_columns"), task_type=g["task_type"], source=source,
                               label_values=label_values if label_values is not None else section.label_values)
    return section, roles


def build_checks(inputs: QualityInputs) -> list[Check]:
    return [check for build in EXPECTATION_BUILDERS.values() for check in build(inputs)]


def _expectations_section(expectations: ExpectationsSpec | Mapping[str, Any] | None) -> ExpectationsSpec:
    if isinstance(expectations, ExpectationsSpec):
        return expectations
    raw = {k: v for k, v in dict(expectations or {}).items() if v is not None and v != {}}
    typed = ExpectationsSpec.model_validate(raw)
    # pydantic makes floats of bounds and ages written as integers; messages quote them as the caller wrote them
    ranges = {c: RangeSpec.model_construct(min=r.get("min"), max=r.get("max"))
              for c, r in raw.get("ranges", {}).items()}
    freshness = typed.freshness and typed.freshness.model_copy(
        update={"max_age_days": raw["freshness"]["max_age_days"]})
    return typed.model_copy(update={"ranges": ranges, "freshness": freshness})


def check_id(index: int, check: Check) -> str:
    return f"{index:03d}:{check.kind}:{check.column if check.column is not None else ''}"


class SuiteRunner:
    """Runs checks as one GX suite in an ephemeral context, made once and kept for every frame run through it
    (a batched validation runs the same suite on each batch); a suite is made once per distinct list of checks."""

    def __init__(self, source: str):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx  # here, not at module level: the import takes 3-6 s
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self.gx, self.source, self.suffix = gx, source, uuid.uuid4().hex[:8]
        config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                                   progress_bars=ProgressBarsConfig(globally=False))
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.batch_def = (self.context.data_sources.add_pandas(f"eval_pipeline_{self.suffix}")
                          .add_dataframe_asset(f"dataset_{self.suffix}").add_batch_definition_whole_dataframe("whole"))
        self._validations: dict[str, Any] = {}

    def run(self, frame: pd.DataFrame, checks: list[Check]):
        """GX's validation result of the checks that have a GX expectation (each tagged with its check id)."""
        for i, check in enumerate(checks):
            if check.expectation is not None:
                check.expectation.meta = {"check_id": check_id(i, check)}
        expectations = [c.expectation for c in checks if c.expectation is not None]
        key = json.dumps([e.configuration.to_json_dict() for e in expectations], sort_keys=True, default=str)
        if key not in self._validations:
            gx, n = self.gx, len(self._validations)
            suite = gx.ExpectationSuite(name=f"quality_{self.suffix}_{n}", meta={"source": self.source})
            for expectation in expectations:
                suite.add_expectation(expectation)
            suite = self.context.suites.add(suite)
            self._validations[key] = gx.ValidationDefinition(name=f"validate_{self.suffix}_{n}",
                                                             data=self.batch_def, suite=suite)
        # a check may have GX see its column as it parsed it (freshness on string timestamps)
        replaced = {c.column: c.column_data for c in checks if c.column_data is not None}
        data = frame.assign(**replaced) if replaced else frame
        return self._validations[key].run(batch_parameters={"dataframe": data}, result_format="SUMMARY")

    @property
    def version(self) -> str:
        return self.gx.__version__


def gx_outcome(check: Check, er: Any) -> tuple[bool, dict, str]:
    """(success, observed, message) of one check from its GX result ``er`` (None for a pandas-evaluated check)."""
    if check.expectation is None:
        return describe_outcome(check, bool(check.passed), {}, None)
    if er is None:  # should not happen
        return False, {}, f"GX returned no result for {check.expectation_type}"
    return describe_outcome(check, bool(er.success), dict(er.result or {}), _exception_message(er.exception_info or {}))


def describe_outcome(check: Check, success: bool, res: dict, raised: str | None) -> tuple[bool, dict, str]:
    """(success, observed, message) from GX's result dict ``res`` of the check (or a merged one) and its facts."""
    if raised:
        where = f" on column '{check.column}'" if check.column else ""
        return False, {"error": raised}, f"{check.expectation_type}{where} could not be evaluated: {raised}"
    return success, *check.describe(success, {**res, **check.facts})


def result_entry(check: Check, success: bool, observed: dict, message: str, source: str) -> dict:
    entry = {
        "expectation": check.expectation_type,
        "check": check.kind,
        "column": check.column,
        "success": success,
        "observed": to_jsonsafe(observed),
        "message": f"{source}: {message}",
    }
    if check.expectation is None:
        entry["engine"] = "pandas"
    return entry


def quality_result(source: str, inputs: QualityInputs, results: list[dict], gx_dict: dict,
                   provenance: dict | None = None) -> QualityResult:
    n_ok = sum(r["success"] for r in results)
    statistics = {
        "evaluated": len(results),
        "successful": n_ok,
        "failed": len(results) - n_ok,
        # the same counts under GX's key names
        "evaluated_expectations": len(results),
        "successful_expectations": n_ok,
        "unsuccessful_expectations": len(results) - n_ok,
        "success_percent": round(100.0 * n_ok / len(results), 4) if results else None,
    }
    r, e, ref = inputs.roles, inputs.expectations, inputs.freshness
    parameters: dict = {"task_type": r.task, "id_column": r.id, "label_column": r.label,
                        "timestamp_column": r.timestamp, "feature_columns": list(r.features),
                        "min_rows": e.min_rows, "max_rows": e.max_rows}
    meta = gx_dict.get("meta") or {}
    from great_expectations import __version__ as gx_version  # imported already: GX produced gx_dict

    run_info = {"gx_validation_id": meta.get("validation_id"), "gx_run_id": meta.get("run_id"),
                "great_expectations_version": gx_version}
    if ref is not None:
        judged_at = ref.as_of.isoformat() if ref.origin != "clock" else "now (UTC)"
        parameters["freshness"] = {"max_age_days": ref.max_age_days, "as_of": judged_at}
        if ref.origin == "clock":
            run_info["freshness_as_of"] = ref.as_of.isoformat()
    return QualityResult(source=source, success=statistics["failed"] == 0, results=results, statistics=statistics,
                         gx_result=gx_dict, skipped=inputs.skipped, parameters=parameters, run_info=run_info,
                         provenance=provenance or {})


def _exception_message(exc: Any) -> str | None:
    """GX puts either {'raised_exception': ..., 'exception_message': ...} or {metric_id: {...}} here."""
    if not isinstance(exc, dict) or not exc:
        return None
    if "raised_exception" in exc:
        return exc.get("exception_message") if exc.get("raised_exception") else None
    for v in exc.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return v.get("exception_message") or "unknown error"
    return None
