"""Operator settings from the environment: every ``EVAL_*`` variable, parsed once, with one set of rules.

The CLI, the Dagster resources (and so the daemon's sensors and runs) and the engine read their settings through
:func:`load_settings`, so a value means the same thing everywhere. An invalid value is an error that names the
variable, the value and what is accepted; it never falls back to the default silently. Unset or empty means the
default.

Booleans accept ``1 true yes on`` and ``0 false no off`` (any case). Lists are comma-separated (``EVAL_TRUSTED_TYPES``)
or ``os.pathsep``-separated (``EVAL_SPECS``). Values of variables are never logged by this module (only names), so a
misplaced secret does not end up in a log.

Plain Python (no Dagster import): the engine and the CLI use it without loading Dagster.
"""

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
EXECUTORS = ("in_process", "multiprocess")
DASK_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$|^[^\s:/]+:\d+$")
DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

PICKLE_WARNING = ("EVAL_ALLOW_PICKLE is on: model artifacts of flavor sklearn-joblib (pickles) will be unpickled. "
                  "Anyone who can write a pickle (and its manifest) into the registry can run code in this process; "
                  "prefer sklearn-skops or predictions and unset EVAL_ALLOW_PICKLE")


class SettingsError(ValueError):
    """An environment variable with a value that is not accepted; the message names it and the accepted values."""


# Every variable the project reads (name -> what it is, shown in errors and in the README's table).
VARIABLES: dict[str, str] = {
    "EVAL_LAKE_ROOT": "lake root: a local folder or s3://bucket/prefix",
    "EVAL_SPECS": f"spec files or folders, separated by {os.pathsep!r}",
    "EVAL_S3_ENDPOINT_URL": "S3-compatible endpoint URL (http:// or https://)",
    "EVAL_S3_MAX_ATTEMPTS": "botocore attempts per S3 request: an integer >= 1",
    "EVAL_S3_CONNECT_TIMEOUT": "S3 connect timeout in seconds: a number > 0",
    "EVAL_S3_READ_TIMEOUT": "S3 read timeout in seconds: a number > 0",
    "EVAL_S3_BLOCK_SIZE": "bytes per multipart block of an S3 write (the memory one writer holds): an integer "
                          ">= 5 MiB (default 32 MiB; read by eval_pipeline.lake)",
    "EVAL_SNAPSHOT_SORT_MAX_BYTES": "largest landed file (bytes of its columns in memory) sorted whole when it "
                                    "becomes a snapshot part: an integer >= 0 (default 1 GiB; read by "
                                    "eval_pipeline.snapshot_parts)",
    "EVAL_TRUSTED_TYPES": "extra types skops may load: comma-separated dotted names (module.Class)",
    "EVAL_PROMOTE_ON_PASS": "promote a PASSing candidate automatically: a boolean",
    "EVAL_ALLOW_PICKLE": "allow the sklearn-joblib (pickle) flavor: a boolean",
    "EVAL_SENSOR_INTERVAL_SECONDS": "sensor interval in seconds: an integer >= 1",
    "EVAL_SENSOR_VERIFY_MAX_MB": "largest artifact (MB) a sensor hashes before requesting a run: a number > 0",
    "EVAL_RUN_EXECUTOR": f"executor of sensor-requested runs: one of {', '.join(EXECUTORS)}",
    "EVAL_ENGINE_SPILL_ROWS": "rows per worker before the engine spills sorted scores to disk: an integer >= 1",
    "EVAL_ENGINE_SPILL_DIR": "folder for the engine's spill files (with a remote Dask cluster: storage the client "
                             "and every worker share)",
    "EVAL_ENGINE_SPILL_ABOVE_ROWS": "binary evaluations with more rows than this spill to disk even when "
                                    "EVAL_ENGINE_SPILL_ROWS is unset (bit-identical results): an integer >= 0, "
                                    "0 = never",
    "EVAL_DASK_ADDRESS": "evaluate metrics shard by shard on a Dask cluster: a scheduler address "
                         "(tcp://host:8786) or 'local' (a LocalCluster on 127.0.0.1 for one evaluation)",
    "EVAL_DASK_WORKERS": "worker processes of EVAL_DASK_ADDRESS=local: an integer >= 1",
    "EVAL_ALERT_WEBHOOKS": "default alert webhooks: comma-separated http(s) URLs, each optionally prefixed "
                           "'slack:' or 'json:' (a secret: never logged)",
    "EVAL_ALERT_TIMEOUT_SECONDS": "timeout of one alert request in seconds: a number > 0",
    "EVAL_ALERT_MAX_SECONDS": "total time one alert may take, retries included, in seconds: a number > 0",
    "EVAL_ALERT_MAX_ATTEMPTS": "attempts per alert webhook (retries on 5xx and connection errors): an integer >= 1",
    "EVAL_ALERT_BACKOFF_SECONDS": "first retry delay of an alert (doubled each retry): a number > 0",
}
ALERT_FORMATS = ("json", "slack")
# Read by the test suite, the launcher or benchmarks only (never by the pipeline); not reported as unknown.
TEST_ONLY_PREFIXES = ("EVAL_TEST_", "EVAL_DAEMON_TEST_", "EVAL_SLOW", "EVAL_SIM_", "EVAL_WORKER_", "EVAL_VENV")


@dataclass(frozen=True)
class Settings:
    lake_root: str | None = None
    specs: tuple[str, ...] = ()
    s3_endpoint_url: str | None = None
    s3_max_attempts: int = 8
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 30.0
    trusted_types: tuple[str, ...] = ()
    promote_on_pass: bool = False
    allow_pickle: bool = False
    sensor_interval_seconds: int = 10
    sensor_verify_max_mb: float = 256.0
    run_executor: str = "in_process"
    engine_spill_rows: int | None = None
    engine_spill_dir: str | None = None
    engine_spill_above_rows: int = 10_000_000
    dask_address: str | None = None
    dask_workers: int = 2
    # (format, url) pairs from EVAL_ALERT_WEBHOOKS: the URLs carry tokens, so they are kept out of repr().
    alert_webhooks: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    alert_timeout_seconds: float = 5.0
    alert_max_seconds: float = 20.0
    alert_max_attempts: int = 4
    alert_backoff_seconds: float = 0.5
    unknown: tuple[str, ...] = field(default=(), compare=False)

    @property
    def sensor_verify_max_bytes(self) -> int:
        return int(self.sensor_verify_max_mb * 1024 * 1024)

    def lake_root_or_default(self) -> str:
        return self.lake_root or str(Path.cwd() / "lake")


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _fail(name: str, raw: str, expected: str) -> SettingsError:
    return SettingsError(f"environment variable {name}={raw!r} is not valid; expected {expected}")


def parse_bool(name: str, raw: str | None, default: bool = False) -> bool:
    if raw is None:
        return default
    low = raw.lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise _fail(name, raw, f"a boolean: one of {', '.join(TRUE)} (on) or {', '.join(FALSE)} (off), or unset")


def _int(name: str, raw: str | None, default, minimum: int = 1):
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _fail(name, raw, f"an integer >= {minimum}") from None
    if value < minimum:
        raise _fail(name, raw, f"an integer >= {minimum}")
    return value


def _positive(name: str, raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _fail(name, raw, "a number > 0") from None
    if not value > 0 or value == float("inf"):
        raise _fail(name, raw, "a finite number > 0")
    return value


def parse_trusted_types(name: str, raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [t.strip() for t in raw.split(",")]
    bad = [t for t in items if t and not DOTTED_NAME.match(t)]
    if bad:
        raise _fail(name, raw, f"comma-separated dotted type names such as "
                               f"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor (not valid: {bad})")
    return tuple(dict.fromkeys(t for t in items if t))


def parse_alert_webhooks(name: str, raw: str | None) -> tuple[tuple[str, str], ...]:
    """``[slack:|json:]https://...`` entries, comma-separated. Errors name the entry by position, never its value
    (a webhook URL is a secret)."""
    if raw is None:
        return ()
    out = []
    for i, entry in enumerate(e.strip() for e in raw.split(",")):
        if not entry:
            continue
        fmt, _, rest = entry.partition(":")
        fmt, url = (fmt.lower(), rest) if fmt.lower() in ALERT_FORMATS else ("json", entry)
        if not re.match(r"^https?://[^\s/]+", url):
            raise SettingsError(f"environment variable {name} is not valid (value not shown: it may hold a secret): "
                                f"entry {i + 1} is not an http:// or https:// URL; expected comma-separated webhook "
                                f"URLs, each optionally prefixed 'slack:' or 'json:'")
        out.append((fmt, url))
    return tuple(out)


def load_settings(env: Mapping[str, str] | None = None, *, warn: bool = True) -> Settings:
    """Parse every EVAL_* variable of ``env`` (default: ``os.environ``); raises SettingsError on the first bad one.

    With ``warn``, logs (names only) EVAL_* variables nobody reads (typos such as EVAL_ALLOW_PICKEL) and the
    pickle warning when EVAL_ALLOW_PICKLE is on.
    """
    env = os.environ if env is None else env
    g = lambda n: _raw(env, n)  # noqa: E731
    executor = g("EVAL_RUN_EXECUTOR")
    if executor is not None and executor not in EXECUTORS:
        raise _fail("EVAL_RUN_EXECUTOR", executor, f"one of {', '.join(EXECUTORS)}")
    endpoint = g("EVAL_S3_ENDPOINT_URL")
    if endpoint is not None and not re.match(r"^https?://[^\s/]+", endpoint):
        raise _fail("EVAL_S3_ENDPOINT_URL", endpoint, "an http:// or https:// URL")
    specs = g("EVAL_SPECS")
    dask_address = g("EVAL_DASK_ADDRESS")
    if dask_address is not None and dask_address != "local" and not DASK_ADDRESS.match(dask_address):
        raise _fail("EVAL_DASK_ADDRESS", dask_address, "a scheduler address such as tcp://host:8786, or 'local'")
    unknown = tuple(sorted(n for n in env if n.startswith("EVAL_") and n not in VARIABLES
                           and not n.startswith(TEST_ONLY_PREFIXES)))
    settings = Settings(
        lake_root=g("EVAL_LAKE_ROOT"),
        specs=tuple(p.strip() for p in specs.split(os.pathsep) if p.strip()) if specs else (),
        s3_endpoint_url=endpoint,
        s3_max_attempts=_int("EVAL_S3_MAX_ATTEMPTS", g("EVAL_S3_MAX_ATTEMPTS"), 8),
        s3_connect_timeout=_positive("EVAL_S3_CONNECT_TIMEOUT", g("EVAL_S3_CONNECT_TIMEOUT"), 5.0),
        s3_read_timeout=_positive("EVAL_S3_READ_TIMEOUT", g("EVAL_S3_READ_TIMEOUT"), 30.0),
        trusted_types=parse_trusted_types("EVAL_TRUSTED_TYPES", g("EVAL_TRUSTED_TYPES")),
        promote_on_pass=parse_bool("EVAL_PROMOTE_ON_PASS", g("EVAL_PROMOTE_ON_PASS")),
        allow_pickle=parse_bool("EVAL_ALLOW_PICKLE", g("EVAL_ALLOW_PICKLE")),
        sensor_interval_seconds=_int("EVAL_SENSOR_INTERVAL_SECONDS", g("EVAL_SENSOR_INTERVAL_SECONDS"), 10),
        sensor_verify_max_mb=_positive("EVAL_SENSOR_VERIFY_MAX_MB", g("EVAL_SENSOR_VERIFY_MAX_MB"), 256.0),
        run_executor=executor or "in_process",
        engine_spill_rows=_int("EVAL_ENGINE_SPILL_ROWS", g("EVAL_ENGINE_SPILL_ROWS"), None),
        engine_spill_dir=g("EVAL_ENGINE_SPILL_DIR"),
        engine_spill_above_rows=_int("EVAL_ENGINE_SPILL_ABOVE_ROWS", g("EVAL_ENGINE_SPILL_ABOVE_ROWS"), 10_000_000,
                                     minimum=0),
        dask_address=dask_address,
        dask_workers=_int("EVAL_DASK_WORKERS", g("EVAL_DASK_WORKERS"), 2),
        alert_webhooks=parse_alert_webhooks("EVAL_ALERT_WEBHOOKS", g("EVAL_ALERT_WEBHOOKS")),
        alert_timeout_seconds=_positive("EVAL_ALERT_TIMEOUT_SECONDS", g("EVAL_ALERT_TIMEOUT_SECONDS"), 5.0),
        alert_max_seconds=_positive("EVAL_ALERT_MAX_SECONDS", g("EVAL_ALERT_MAX_SECONDS"), 20.0),
        alert_max_attempts=_int("EVAL_ALERT_MAX_ATTEMPTS", g("EVAL_ALERT_MAX_ATTEMPTS"), 4),
        alert_backoff_seconds=_positive("EVAL_ALERT_BACKOFF_SECONDS", g("EVAL_ALERT_BACKOFF_SECONDS"), 0.5),
        unknown=unknown,
    )
    if warn:
        if unknown:
            log.warning("ignoring unknown environment variable(s) %s (known: %s)", ", ".join(unknown),
                        ", ".join(VARIABLES))
        if settings.allow_pickle:
            log.warning(PICKLE_WARNING)
    return settings


def pickle_refusal(what: str) -> str:
    """The message for a pickle met while EVAL_ALLOW_PICKLE is off; ``what`` names the model/file."""
    return (f"{what}: flavor sklearn-joblib is a pickle, and loading a pickle can run arbitrary code; pickles are "
            f"refused unless the operator sets EVAL_ALLOW_PICKLE=1. Prefer sklearn-skops (with the types you trust "
            f"in the spec's model.trusted_types or EVAL_TRUSTED_TYPES) or the predictions flavor")


LOCAL_INSTANCE_YAML = """\
# A local Dagster instance for eval-pipeline (written once by ./run or the CLI when absent; edit freely).
telemetry:
  enabled: false
# A run that a sensor requested starts within about a second: Dagster's default checks its queue every 5 s, which a
# new model version would wait for before its evaluation even starts.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""


def write_local_instance_yaml(home: str | Path) -> Path:
    """``<home>/dagster.yaml`` with :data:`LOCAL_INSTANCE_YAML` unless the file exists (an operator's own is kept)."""
    path = Path(home) / "dagster.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(LOCAL_INSTANCE_YAML)
    return path
