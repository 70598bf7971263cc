"""What ``register`` checks before it writes a model version: the artifact loads once (a pickle only in a throwaway
process, and only when the operator allows pickles) and scores a few rows of the spec's features as the task
expects. Kept apart from :mod:`eval_pipeline.registry` (the storage of versions), which it builds on, so that the
registry does not depend on scoring."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .lake import Lake
from .registry import FLAVORS, ModelManifest, Registry, RegistryError, check_name
from .scoring import ScoringError, _check_scores, load_skops, shape_output, trusted_types_for
from .scoring import score_columns as task_score_columns
from .settings import load_settings, pickle_refusal
from .snapshot import DataError, _read_file, eval_rows, iter_rows, list_source_files, load_snapshot
from .spec import EvalSpec, load_spec, specs_for_model


# -- the load-and-score check of register ------------------------------------------------------------------------------
PROBE_ROWS = 20
PROBE_TIMEOUT_SECONDS = 300
# The only variables the pickle probe inherits (no credentials: AWS_*, tokens, EVAL_* are all left behind).
_PROBE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")


@dataclass(frozen=True)
class ArtifactCheck:
    """What ``register`` verifies before writing: the artifact loads and scores ``rows`` as ``spec`` expects.

    ``rows``: a few rows of the spec's feature columns (``None``: load only, e.g. no data has landed yet).
    ``trusted_types``: skops types the operator allows beyond ``spec.model.trusted_types`` (EVAL_TRUSTED_TYPES).
    ``allow_pickle``: EVAL_ALLOW_PICKLE; without it a sklearn-joblib artifact is refused without being loaded.
    """

    spec: EvalSpec
    rows: pd.DataFrame | None = None
    trusted_types: tuple[str, ...] = ()
    allow_pickle: bool = False

    def __call__(self, data: bytes, *, flavor: str, what: str, id_column: str | None = None,
                 score_columns: list[str] | None = None) -> dict:
        """What :meth:`Registry.register` calls before it writes a byte."""
        return check_artifact(data, flavor=flavor, check=self, what=what, id_column=id_column,
                              score_columns=score_columns)


def check_artifact(data: bytes, *, flavor: str, check: ArtifactCheck, what: str,
                   id_column: str | None = None, score_columns: list[str] | None = None) -> dict:
    """Load ``data`` once and score ``check.rows``; returns a summary, raises RegistryError naming ``what``."""
    try:
        return _check_artifact(data, flavor, check, what, id_column, score_columns)
    except ScoringError as exc:
        raise RegistryError(f"refusing to register: {exc}") from None


def _check_artifact(data, flavor, check, what, id_column, score_columns) -> dict:
    spec = check.spec
    if flavor == "predictions":
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - any failure is the artifact's fault
            raise ScoringError(f"{what}: not readable as parquet: {type(exc).__name__}: {exc}") from None
        id_col = id_column or spec.columns.id
        cols = score_columns or task_score_columns(spec)
        missing = [c for c in [id_col, *cols] if c not in frame.columns]
        if missing:
            raise ScoringError(f"{what}: predictions file lacks column(s) {missing} (has {list(frame.columns)}); "
                               f"set --id-column / --score-columns")
        if frame[id_col].duplicated().any():
            raise ScoringError(f"{what}: predictions file has {int(frame[id_col].duplicated().sum())} duplicate "
                               f"{id_col} value(s); expected one score per row")
        values = frame[cols].to_numpy(dtype="float64")
        _check_scores(values if len(cols) > 1 else values[:, 0], frame[id_col].to_numpy(), spec, what)
        return {"flavor": flavor, "rows": int(len(frame))}
    if not spec.columns.features:
        raise ScoringError(f"{what}: spec '{spec.task}' lists no columns.features, so a {flavor} model cannot be "
                           f"scored; list the model's input columns")
    method = "predict" if spec.task_type in ("regression", "ranking") else "predict_proba"
    rows = check.rows
    if rows is not None:
        missing = [c for c in spec.columns.features if c not in rows.columns]
        if missing:
            raise ScoringError(f"{what}: the sample rows lack feature column(s) {missing}")
        rows = rows[list(spec.columns.features)].reset_index(drop=True)
    if flavor == "sklearn-skops":
        model = load_skops(data, trusted_types_for(spec, list(check.trusted_types)), what)
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        if rows is None:
            return {"flavor": flavor, "type": kind, "scored_rows": 0}
        try:
            out = getattr(model, method)(rows)
        except Exception as exc:  # noqa: BLE001
            raise ScoringError(f"{what}: {method} on {len(rows)} rows of the spec's features raised "
                               f"{type(exc).__name__}: {exc}") from None
    elif flavor == "sklearn-joblib":
        if not check.allow_pickle:
            raise ScoringError(pickle_refusal(what))
        kind, out = _probe_pickle(data, rows, method, what)
        if rows is None:
            return {"flavor": flavor, "type": kind, "scored_rows": 0}
    else:
        raise ScoringError(f"{what}: unknown flavor {flavor!r}; expected one of {list(FLAVORS)}")
    values = shape_output(out, len(rows), spec, what)
    _check_scores(values, np.arange(len(rows)), spec, what)
    return {"flavor": flavor, "type": kind, "scored_rows": int(len(rows))}


def _probe_pickle(data: bytes, rows, method: str, what: str):
    """Unpickle and score in a child process (scrubbed environment, own temp folder); returns (type, scores)."""
    with tempfile.TemporaryDirectory(prefix="eval-pickle-probe-") as tmp:
        artifact = Path(tmp, "model.joblib")
        artifact.write_bytes(data)
        rows_path, out_path = "-", Path(tmp, "scores.npy")
        if rows is not None:
            rows_path = str(Path(tmp, "rows.parquet"))
            rows.to_parquet(rows_path, index=False)
        env = {k: os.environ[k] for k in _PROBE_ENV if k in os.environ}
        # the child imports what the parent could (model classes from the user's packages), nothing else
        env |= {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "HOME": tmp, "TMPDIR": tmp,
                "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
        try:
            proc = subprocess.run([sys.executable, "-m", "eval_pipeline.pickle_probe", str(artifact), rows_path,
                                   method, str(out_path)], cwd=tmp, env=env, capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ScoringError(f"{what}: loading and scoring the pickle took longer than {PROBE_TIMEOUT_SECONDS} s "
                               f"(in a separate process); refused") from None
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        try:
            report = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            report = None
        if proc.returncode != 0 or not report or not report.get("ok"):
            if report and report.get("stage") == "score":
                raise ScoringError(f"{what}: {method} on {len(rows)} rows of the spec's features raised "
                                   f"{report.get('error')}")
            detail = (report or {}).get("error") or (proc.stderr.strip().splitlines() or ["no output"])[-1][:500]
            raise ScoringError(f"{what}: joblib could not load the artifact (in a separate process, exit code "
                               f"{proc.returncode}): {detail}")
        scores = None
        if rows is not None:
            try:
                scores = np.load(out_path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ScoringError(f"{what}: the scoring process wrote no usable scores: {exc}") from None
        return report.get("type", "?"), scores


def sample_rows(lake: Lake, spec: EvalSpec, n: int = PROBE_ROWS) -> pd.DataFrame | None:
    """A few rows of the spec's features to score at registration: from the task's newest snapshot (its evaluation
    window first), else from the first landed data file; None when no data has landed yet."""
    cols = list(spec.columns.features)
    if not cols:
        return None
    try:
        snap = load_snapshot(lake, spec.task)
    except DataError:
        snap = None
    if snap is not None and all(c in snap.manifest.get("schema", {}) for c in cols):
        size = max(n, 65_536)
        for batches in (eval_rows(lake, snap, spec, cols, batch_size=size), iter_rows(lake, snap, cols, batch_size=size)):
            taken, count = [], 0
            for batch in batches:
                taken.append(batch.slice(0, n - count))
                count += taken[-1].num_rows
                if count >= n:
                    break
            if taken:
                return pa.Table.from_batches(taken).to_pandas()
    files = list_source_files(lake, spec)
    if not files:
        return None
    table, _ = _read_file(lake, files[0]["rel"], cols, spec)
    return table.slice(0, n).to_pandas() if table.num_rows else pd.DataFrame(columns=cols)


def register_file(lake: Lake, name: str, version: str, artifact_path: str | Path, *, flavor: str,
                  spec_path: str | Path | None = None, **fields: Any) -> tuple[ModelManifest, list[str]]:
    """``eval-pipeline register``: check the file against its task's spec (loaded once, a few rows scored), then
    register it. The spec is ``spec_path``, else every spec in EVAL_SPECS (or the packaged ones) whose model.name is
    ``name``. Returns the manifest and notes for the user (e.g. no data yet to score on)."""
    check_name("model name", name)
    check_name("model version", version)
    settings = load_settings(warn=False)
    path = Path(artifact_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read artifact {path}: {exc.strerror or exc}") from None
    registry = Registry(lake)
    if lake.exists(registry.manifest_path(name, version)):
        raise RegistryError(f"model {name}@{version} is already registered; versions are immutable")
    if spec_path is not None:
        specs = [load_spec(spec_path)]
        if specs[0].model.name != name:
            raise RegistryError(f"spec {spec_path} evaluates model '{specs[0].model.name}', not '{name}'")
    else:
        specs, looked = specs_for_model(name, settings.specs)
        if not specs:
            raise RegistryError(f"no evaluation spec evaluates model '{name}' (looked in {looked}); pass --spec FILE "
                                f"so that {path} can be checked against the spec's features before it is registered")
    notes = []
    what = f"model {name}@{version}: artifact {path} ({flavor})"
    for spec in specs:
        rows = None if flavor == "predictions" else sample_rows(lake, spec)
        if rows is None and flavor != "predictions":
            notes.append(f"task '{spec.task}': no data has landed under {lake.uri(spec.data.source)} yet, so "
                         f"{path} was loaded but not scored")
        check = ArtifactCheck(spec=spec, rows=rows, trusted_types=settings.trusted_types,
                              allow_pickle=settings.allow_pickle)
        summary = check_artifact(data, flavor=flavor, check=check, what=what, id_column=fields.get("id_column"),
                                 score_columns=fields.get("score_columns"))
        if summary.get("scored_rows"):
            notes.append(f"task '{spec.task}': {path} loaded ({summary.get('type')}) and scored "
                         f"{summary['scored_rows']} rows of the spec's features")
    manifest = registry.register(name, version, data, flavor=flavor, artifact_name=path.name, **fields)
    return manifest, notes
