"""Dagster resources: the lake (and through it the registry) and operator settings, configured from the environment.

Every EVAL_* variable is parsed by :mod:`eval_pipeline.settings` (the same rules as the CLI): an invalid value stops
the code location from loading with an error naming the variable, instead of silently meaning the default.

Credentials never pass through here: s3fs reads them from the standard AWS chain, so they do not appear in run
config, the UI or metadata. Only the lake root URI (not a secret) is shown.
"""

import os

import dagster as dg

from eval_pipeline.lake import DEFAULT_ROOT_ENV, Lake
from eval_pipeline.settings import Settings, load_settings


class LakeResource(dg.ConfigurableResource):
    """Root URI of the lake: a local folder or s3://bucket/prefix (EVAL_LAKE_ROOT; default ./lake)."""

    root: str = ""

    def get_lake(self) -> Lake:
        return Lake(self.root or None)


class SettingsResource(dg.ConfigurableResource):
    """Operator-controlled settings (EVAL_TRUSTED_TYPES, EVAL_PROMOTE_ON_PASS, EVAL_ALLOW_PICKLE)."""

    trusted_types: str = ""
    promote_on_pass: bool = False
    allow_pickle: bool = False

    def trusted_type_list(self) -> list[str]:
        return [t.strip() for t in self.trusted_types.split(",") if t.strip()]


def settings_resource(settings: Settings | None = None) -> SettingsResource:
    """The SettingsResource for parsed settings (default: the current environment, parsed by eval_pipeline.settings)."""
    settings = settings or load_settings(warn=False)
    return SettingsResource(trusted_types=",".join(settings.trusted_types), promote_on_pass=settings.promote_on_pass,
                            allow_pickle=settings.allow_pickle)


def resources_from_env() -> dict:
    settings = load_settings()  # raises SettingsError naming the variable on any invalid EVAL_* value
    root = dg.EnvVar(DEFAULT_ROOT_ENV) if os.environ.get(DEFAULT_ROOT_ENV, "").strip() else \
        settings.lake_root_or_default()
    return {"lake": LakeResource(root=root), "settings": settings_resource(settings)}
