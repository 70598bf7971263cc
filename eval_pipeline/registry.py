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
import re
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .lake import Lake, LakeError
from .spec import NAME_RE

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
                 check: Callable[..., Any] | None = None, source: str | None = None) -> ModelManifest:
        """Write the artifact, then the manifest (last, so readers never see a half-written version).

        With ``check`` (:class:`eval_pipeline.artifact_check.ArtifactCheck`), the artifact is first loaded once and
        scored on ``check.rows``;
        anything that cannot be loaded or scored is refused before a byte is written, with a message naming
        ``source`` (the file being registered) and the error. Without it, the bytes are stored as they are (the
        storage primitive; evaluation still verifies and loads them before use).
        """
        if self.lake.exists(self.manifest_path(name, version)):
            raise RegistryError(f"model {name}@{version} is already registered; versions are immutable")
        if flavor not in FLAVORS:
            raise RegistryError(f"model {name}@{version}: unknown flavor {flavor!r}; expected one of {list(FLAVORS)}")
        if check is not None:  # e.g. an eval_pipeline.artifact_check.ArtifactCheck: load once and score a few rows
            what = f"model {name}@{version}: artifact {source or artifact_name} ({flavor})"
            check(artifact, flavor=flavor, what=what, id_column=id_column, score_columns=score_columns)
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
