"""The model registry: versions of named models, stored in the lake.

Layout (relative to the lake root)::

    registry/<model>/<version>/<artifact>        model file (skops / joblib) or precomputed predictions (parquet)
    registry/<model>/<version>/manifest.json     written LAST: a version without it is still being written
    registry/<model>/champion.json               which version is in production (absent: no champion yet)
    registry/<model>/promotions/<ts>-<ver>.json  audit trail, one record per promotion

A manifest pins the artifact's sha256. Nothing is deserialised before the bytes are hashed and compared, so a
tampered or half-copied artifact is refused with an error that names the model, version and both hashes.

Registering with a check (:class:`ArtifactCheck`; the CLI's ``register`` always does) first loads the artifact once
and scores a few rows of the spec's features, and refuses what cannot be loaded or scored, before anything is
written. skops files are loaded in-process with the operator's allowlist only; a pickle (sklearn-joblib) only when
EVAL_ALLOW_PICKLE is on, and then in a separate, throwaway process (``eval_pipeline.pickle_probe``) with a scrubbed
environment, so a malicious pickle cannot touch the registering process or read its credentials.
"""

import datetime as dt
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .lake import Lake, LakeError
from .spec import NAME_RE

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .spec import EvalSpec

REGISTRY_PREFIX = "registry"
MANIFEST = "manifest.json"
FLAVORS = ("sklearn-skops", "sklearn-joblib", "predictions")


class RegistryError(ValueError):
    """A model version that cannot be used; the message names model, version and the problem."""


def check_name(kind: str, value: str) -> str:
    """Model names and versions become folder names: refuse anything that could escape the registry."""
    if not isinstance(value, str) or not NAME_RE.match(value) or ".." in value:
        raise RegistryError(f"{kind} {value!r} is not allowed: use letters, digits, '_', '-', '.' "
                            f"(no '/', '..', spaces or absolute paths), at most 64 characters")
    return value


def version_sort_key(version: str) -> tuple:
    """Natural order: v2 < v10, 2026-01-02 < 2026-01-10."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p)


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str
    version: str
    flavor: Literal["sklearn-skops", "sklearn-joblib", "predictions"]
    artifact: str = Field(description="file name inside the version folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: dt.datetime
    training_data: dict[str, Any] | str | None = None
    metrics_of_record: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    # predictions flavor: which columns hold the row id and the score(s)
    id_column: str | None = None
    score_columns: list[str] | None = None
    description: str = ""

    @field_validator("name", "version")
    @classmethod
    def _safe(cls, v: str, info) -> str:
        return check_name(info.field_name, v)

    @field_validator("artifact")
    @classmethod
    def _artifact_inside(cls, v: str) -> str:
        if "/" in v or "\\" in v or v in ("", ".", "..") or v == MANIFEST:
            raise ValueError(f"artifact must be a plain file name inside the version folder, got {v!r}")
        return v

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def parse_ref(ref: str) -> tuple[str, str]:
    """'name@version' -> (name, version), validated."""
    if "@" not in ref:
        raise RegistryError(f"model reference {ref!r} must look like NAME@VERSION")
    name, version = ref.rsplit("@", 1)
    return check_name("model name", name), check_name("model version", version)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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

    spec: "EvalSpec"
    rows: "pd.DataFrame | None" = None
    trusted_types: tuple[str, ...] = ()
    allow_pickle: bool = False


def check_artifact(data: bytes, *, flavor: str, check: ArtifactCheck, what: str,
                   id_column: str | None = None, score_columns: list[str] | None = None) -> dict:
    """Load ``data`` once and score ``check.rows``; returns a summary, raises RegistryError naming ``what``."""
    from .scoring import ScoringError

    try:
        return _check_artifact(data, flavor, check, what, id_column, score_columns)
    except ScoringError as exc:
        raise RegistryError(f"refusing to register: {exc}") from None


def _check_artifact(data, flavor, check, what, id_column, score_columns) -> dict:
    import numpy as np

    from .scoring import ScoringError, _check_scores, load_skops, score_columns as task_score_columns, shape_output
    from .scoring import trusted_types_for
    from .settings import pickle_refusal

    spec = check.spec
    if flavor == "predictions":
        import pandas as pd

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
    method = "predict" if spec.task_type == "regression" else "predict_proba"
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
    import numpy as np

    from .scoring import ScoringError

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


def sample_rows(lake: Lake, spec: "EvalSpec", n: int = PROBE_ROWS) -> "pd.DataFrame | None":
    """A few rows of the spec's features to score at registration: from the task's newest snapshot (its evaluation
    window first), else from the first landed data file; None when no data has landed yet."""
    import pandas as pd
    import pyarrow as pa

    from .snapshot import DataError, eval_rows, iter_rows, list_source_files, load_snapshot, _read_file

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


class Registry:
    def __init__(self, lake: Lake, prefix: str = REGISTRY_PREFIX):
        self.lake = lake
        self.prefix = prefix

    # -- paths ---------------------------------------------------------------------------------------------------
    def model_dir(self, name: str) -> str:
        return f"{self.prefix}/{check_name('model name', name)}"

    def version_dir(self, name: str, version: str) -> str:
        return f"{self.model_dir(name)}/{check_name('model version', version)}"

    def manifest_path(self, name: str, version: str) -> str:
        return f"{self.version_dir(name, version)}/{MANIFEST}"

    def champion_path(self, name: str) -> str:
        return f"{self.model_dir(name)}/champion.json"

    def promotions_dir(self, name: str) -> str:
        """The audit trail: one record per promotion."""
        return f"{self.model_dir(name)}/promotions"

    def promotion_lock_path(self, name: str) -> str:
        """Held while a promotion of the model compares and swaps its champion (eval_pipeline.pipeline)."""
        return f"{self.model_dir(name)}/promotion.lock"

    # -- listing -------------------------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        names = [p.rsplit("/", 1)[-1] for p in self.lake.ls(self.prefix)]
        return [n for n in names if NAME_RE.match(n)]

    def scan(self, name: str | None = None) -> list[dict]:
        """Every version folder with its state: complete (manifest present), incomplete (no manifest yet)."""
        out = []
        for model in [name] if name else self.model_names():
            for entry in self.lake.ls(self.model_dir(model), detail=True):
                if entry.get("type") != "directory":
                    continue
                version = entry["rel"].rsplit("/", 1)[-1]
                if version == "promotions" or not NAME_RE.match(version):
                    continue
                complete = self.lake.exists(f"{entry['rel']}/{MANIFEST}")
                out.append({"name": model, "version": version, "complete": complete})
        return sorted(out, key=lambda e: (e["name"], version_sort_key(e["version"])))

    def versions(self, name: str) -> list[str]:
        return [e["version"] for e in self.scan(name) if e["complete"]]

    # -- manifests and artifacts ---------------------------------------------------------------------------------
    def manifest(self, name: str, version: str) -> ModelManifest:
        path = self.manifest_path(name, version)
        try:
            raw = self.lake.read_json(path)
        except FileNotFoundError:
            raise RegistryError(f"model {name}@{version}: no manifest at {self.lake.uri(path)} "
                                f"(not registered, or still being written)") from None
        except LakeError as exc:
            raise RegistryError(f"model {name}@{version}: {exc}") from None
        try:
            manifest = ModelManifest.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: "
                                 f"{'required field is missing' if e['type'] == 'missing' else e['msg']}"
                                 for e in exc.errors())
            raise RegistryError(f"model {name}@{version}: invalid manifest {self.lake.uri(path)}: {problems}") from None
        if manifest.name != name or manifest.version != version:
            raise RegistryError(f"model {name}@{version}: manifest {self.lake.uri(path)} says it is "
                                f"{manifest.name}@{manifest.version}; the folder and the manifest must agree")
        return manifest

    def artifact_path(self, manifest: ModelManifest) -> str:
        return f"{self.version_dir(manifest.name, manifest.version)}/{manifest.artifact}"

    def verified_artifact(self, manifest: ModelManifest) -> bytes:
        """The artifact's bytes, only if their sha256 equals the pinned one."""
        path = self.artifact_path(manifest)
        try:
            data = self.lake.read_bytes(path)
        except FileNotFoundError:
            raise RegistryError(f"model {manifest.ref}: artifact {self.lake.uri(path)} is missing") from None
        actual = sha256_bytes(data)
        if actual != manifest.sha256:
            raise RegistryError(f"model {manifest.ref}: artifact {self.lake.uri(path)} has sha256 {actual}, "
                                f"but the manifest pins {manifest.sha256}; refusing to load it")
        return data

    def register(self, name: str, version: str, artifact: bytes, *, flavor: str, artifact_name: str,
                 training_data: Any = None, metrics_of_record: dict | None = None, tags: dict | None = None,
                 id_column: str | None = None, score_columns: list[str] | None = None,
                 created_at: dt.datetime | None = None, description: str = "",
                 check: ArtifactCheck | None = None, source: str | None = None) -> ModelManifest:
        """Write the artifact, then the manifest (last, so readers never see a half-written version).

        With ``check``, the artifact is first loaded once and scored on ``check.rows`` (see :class:`ArtifactCheck`);
        anything that cannot be loaded or scored is refused before a byte is written, with a message naming
        ``source`` (the file being registered) and the error. Without it, the bytes are stored as they are (the
        storage primitive; evaluation still verifies and loads them before use).
        """
        if self.lake.exists(self.manifest_path(name, version)):
            raise RegistryError(f"model {name}@{version} is already registered; versions are immutable")
        if flavor not in FLAVORS:
            raise RegistryError(f"model {name}@{version}: unknown flavor {flavor!r}; expected one of {list(FLAVORS)}")
        if check is not None:
            what = f"model {name}@{version}: artifact {source or artifact_name} ({flavor})"
            check_artifact(artifact, flavor=flavor, check=check, what=what, id_column=id_column,
                           score_columns=score_columns)
        manifest = ModelManifest(
            name=name, version=version, flavor=flavor, artifact=artifact_name, sha256=sha256_bytes(artifact),
            created_at=created_at or dt.datetime.now(dt.timezone.utc), training_data=training_data,
            metrics_of_record=metrics_of_record or {}, tags=tags or {}, id_column=id_column,
            score_columns=score_columns, description=description)
        self.lake.write_bytes(self.artifact_path(manifest), artifact)
        self.lake.write_json(self.manifest_path(name, version), manifest.model_dump(mode="json"))
        return manifest

    # -- champion and promotion ----------------------------------------------------------------------------------
    def champion(self, name: str) -> str | None:
        path = self.champion_path(name)
        if not self.lake.exists(path):
            return None
        return check_name("champion version", self.lake.read_json(path)["version"])

    def set_champion(self, name: str, version: str, *, evidence: dict | None = None, reason: str = "") -> dict:
        """Mark a version as champion and leave an audit record (when, which evidence, which gates)."""
        self.manifest(name, version)  # must exist and be valid
        now = dt.datetime.now(dt.timezone.utc)
        record = {"model": name, "version": version, "previous": self.champion(name),
                  "promoted_at": now.isoformat(), "reason": reason, "evidence": evidence or {}}
        stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
        self.lake.write_json(f"{self.promotions_dir(name)}/{stamp}-{version}.json", record)
        self.lake.write_json(self.champion_path(name),
                             {"version": version, "promoted_at": record["promoted_at"]})
        return record

    def promotions(self, name: str) -> list[dict]:
        return [self.lake.read_json(p) for p in self.lake.ls(self.promotions_dir(name))]


def register_file(lake: Lake, name: str, version: str, artifact_path: str | Path, *, flavor: str,
                  spec_path: str | Path | None = None, **fields: Any) -> tuple[ModelManifest, list[str]]:
    """``eval-pipeline register``: check the file against its task's spec (loaded once, a few rows scored), then
    register it. The spec is ``spec_path``, else every spec in EVAL_SPECS (or the packaged ones) whose model.name is
    ``name``. Returns the manifest and notes for the user (e.g. no data yet to score on)."""
    from .settings import load_settings
    from .spec import load_spec, specs_for_model

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
