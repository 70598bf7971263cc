"""Dagster resources: the lake (and through it the registry) and operator settings, configured from the environment.

Credentials never pass through here: s3fs reads them from the standard AWS chain, so they do not appear in run
config, the UI or metadata. Only the lake root URI (not a secret) is shown.
"""

import os

import dagster as dg

from eval_pipeline.lake import DEFAULT_ROOT_ENV, Lake, default_root
from eval_pipeline.registry import Registry


class LakeResource(dg.ConfigurableResource):
    """Root URI of the lake: a local folder or s3://bucket/prefix (EVAL_LAKE_ROOT; default ./lake)."""

    root: str = ""

    def get_lake(self) -> Lake:
        return Lake(self.root or None)

    def get_registry(self) -> Registry:
        return Registry(self.get_lake())


class SettingsResource(dg.ConfigurableResource):
    """Operator-controlled settings (EVAL_TRUSTED_TYPES, EVAL_PROMOTE_ON_PASS)."""

    trusted_types: str = ""
    promote_on_pass: bool = False

    def trusted_type_list(self) -> list[str]:
        return [t.strip() for t in self.trusted_types.split(",") if t.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def resources_from_env() -> dict:
    root = dg.EnvVar(DEFAULT_ROOT_ENV) if os.environ.get(DEFAULT_ROOT_ENV) else default_root()
    return {
        "lake": LakeResource(root=root),
        "settings": SettingsResource(trusted_types=os.environ.get("EVAL_TRUSTED_TYPES", ""),
                                     promote_on_pass=_env_flag("EVAL_PROMOTE_ON_PASS")),
    }
