"""The deployment files (issue 11, items 2 and 6): deploy/dagster.yaml, deploy/docker-compose.yaml, the Dockerfile.

- deploy/dagster.yaml is validated by Dagster's own instance-config schema, then loaded as a real instance
  (``DagsterInstance.from_config``) with its ``env:`` values pointing at a throwaway PostgreSQL cluster
  (tests/pg_util.py): PostgreSQL run/event/schedule storage that really stores, the queued run coordinator with its
  limits, the Docker run launcher (dagster-docker) with the network and volume the compose file names.
- deploy/docker-compose.yaml: every published port is bound to 127.0.0.1; the services, network, volume and
  workspace agree with dagster.yaml and the Dockerfile; no secret is written in it.
- The Dockerfile's command starts a real code server on this machine (on 127.0.0.1 here) with the deployment's
  instance config, and a gRPC client lists the definitions' repository from it. (Building the image needs a Docker
  daemon and the python:3.11-slim base image from a registry; neither is assumed here.)
The PostgreSQL parts are skipped, with the reason, when the server binaries are missing.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .pg_util import INITDB, SKIP_REASON, pg_cluster
from .s3_util import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PASSWORD = "deploy-PASSWORD-should-not-leak-51c"
PG_VARS = ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB")
needs_pg = pytest.mark.skipif(not INITDB, reason=SKIP_REASON)


def _load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def postgres():
    if not INITDB:
        pytest.skip(SKIP_REASON)
    with pg_cluster(PASSWORD, databases=["dagster"]) as pg:
        yield pg


@pytest.fixture
def pg_env(postgres, monkeypatch):
    env = {"DAGSTER_PG_USERNAME": postgres["user"], "DAGSTER_PG_PASSWORD": PASSWORD,
           "DAGSTER_PG_HOST": postgres["host"], "DAGSTER_PG_PORT": str(postgres["port"]), "DAGSTER_PG_DB": "dagster"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def test_dagster_yaml_passes_dagsters_own_schema_and_keeps_secrets_out():
    from dagster._core.instance.config import dagster_instance_config

    text = (DEPLOY / "dagster.yaml").read_text()
    config, custom_class = dagster_instance_config(str(DEPLOY))  # raises DagsterInvalidConfigError if invalid
    assert custom_class is None
    db = config["storage"]["postgres"]["postgres_db"]
    # every connection value comes from the environment; the scheme is pinned to psycopg2 (STACK.md)
    assert {k: db[k] for k in ("username", "password", "hostname", "port", "db_name")} == {
        "username": {"env": "DAGSTER_PG_USERNAME"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"}, "db_name": {"env": "DAGSTER_PG_DB"}}
    assert db["scheme"] == "postgresql+psycopg2"
    assert not re.search(r"(?i)password:\s*[^\s{]", text.replace("password:\n", ""))
    # run containers get everything they need by name (values from the daemon's environment, never in the file)
    launched = config["run_launcher"]["config"]["env_vars"]
    assert set(PG_VARS) <= set(launched) and "EVAL_LAKE_ROOT" in launched
    assert all("=" not in v for v in launched)


@needs_pg
def test_dagster_yaml_loads_as_a_real_instance_on_postgres(pg_env, tmp_path):
    import dagster as dg
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_docker import DockerRunLauncher

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        # it really stores in the throwaway PostgreSQL
        instance.add_dynamic_partitions("deploy_test__versions", ["1", "2"])
        assert instance.get_dynamic_partitions("deploy_test__versions") == ["1", "2"]

        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert coordinator.get_run_queue_config().max_concurrent_runs == 4
        limits = {(lim["key"], str(lim.get("value"))): lim["limit"]
                  for lim in coordinator.get_run_queue_config().tag_concurrency_limits}
        assert limits[("eval/task", "{'applyLimitPerUniqueValue': True}")] == 2
        assert limits[("eval/trigger", "nightly")] == 1

        launcher = instance.run_launcher
        assert isinstance(launcher, DockerRunLauncher)
        assert launcher.networks == [_compose()["networks"]["eval"]["name"]]
        assert launcher.container_kwargs["volumes"] == [f"{_compose()['volumes']['lake']['name']}:/lake"]
        assert instance.run_monitoring_enabled
    import psycopg2

    conn = psycopg2.connect(host=pg_env["DAGSTER_PG_HOST"], port=pg_env["DAGSTER_PG_PORT"], user="dagster",
                            password=PASSWORD, dbname="dagster")
    with conn, conn.cursor() as cur:
        cur.execute("select partition from dynamic_partitions where partitions_def_name = 'deploy_test__versions'")
        assert sorted(r[0] for r in cur.fetchall()) == ["1", "2"]
    conn.close()


def _compose() -> dict:
    return _load(DEPLOY / "docker-compose.yaml")


def _published(service: dict) -> list[tuple[str | None, str]]:
    """(host_ip, spec) of every published port, short ("ip:host:container") or long ({host_ip, published}) syntax."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip"), repr(p)))
        else:
            s = str(p)
            # strip ${VAR:-default} so that its ':' does not split; an IPv6 host would be in brackets
            flat = re.sub(r"\$\{[^}]*\}", "X", s)
            parts = flat.split(":")
            out.append((parts[0] if len(parts) == 3 else None, s))
    return out


def test_every_published_compose_port_is_bound_to_loopback():
    compose = _compose()
    published = {name: _published(svc) for name, svc in compose["services"].items()}
    assert published["webserver"], "the UI must be published (on 127.0.0.1)"
    for name, ports in published.items():
        for host_ip, spec in ports:
            assert host_ip == "127.0.0.1", f"service {name}: port {spec} is not bound to 127.0.0.1"
    for name, svc in compose["services"].items():
        assert svc.get("network_mode") != "host", name  # host networking would bypass the bindings


def test_compose_dagster_yaml_workspace_and_dockerfile_agree():
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "code_location", "webserver", "daemon"}
    instance = _load(DEPLOY / "dagster.yaml")
    launcher = instance["run_launcher"]["config"]
    assert launcher["network"] == compose["networks"]["eval"]["name"]
    assert launcher["container_kwargs"]["volumes"] == [f"{compose['volumes']['lake']['name']}:/lake"]

    # the webserver and daemon load the code location over gRPC at the service name and the Dockerfile's port
    (location,) = _load(DEPLOY / "workspace.yaml")["load_from"]
    grpc = location["grpc_server"]
    assert grpc["host"] in services
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1)
    cmd = yaml.safe_load(cmd)
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-h") + 1] == "0.0.0.0" and int(cmd[cmd.index("-p") + 1]) == grpc["port"]
    assert cmd[cmd.index("-m") + 1] == "eval_pipeline.definitions"
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"pip install -c constraints\.txt", dockerfile)
    assert "cp deploy/dagster.yaml \"$DAGSTER_HOME/dagster.yaml\"" in dockerfile
    for svc in ("webserver", "daemon"):
        entry = services[svc]["entrypoint"]
        assert entry[entry.index("-w") + 1] == "/opt/dagster/app/deploy/workspace.yaml"  # WORKDIR + COPY deploy
    assert "WORKDIR /opt/dagster/app" in dockerfile and "COPY deploy ./deploy" in dockerfile
    # every process of the deployment gets the storage variables; the code location names its own image for runs
    for svc in ("code_location", "webserver", "daemon"):
        assert set(PG_VARS) <= set(services[svc]["environment"]), svc
    assert services["code_location"]["environment"]["DAGSTER_CURRENT_IMAGE"] == services["code_location"]["image"]
    # no secret written in the compose file: the password is required from the environment
    text = (DEPLOY / "docker-compose.yaml").read_text()
    assert "${DAGSTER_PG_PASSWORD:?" in text
    assert all(str(v).startswith("${") for k, v in services["postgres"]["environment"].items())
    # the build context leaves local state out
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "lake", ".dagster_home", ".git", "tests"} <= set(ignored)


@needs_pg
def test_the_dockerfile_command_serves_the_definitions(pg_env, tmp_path):
    """The image's CMD, run on this machine (bound to 127.0.0.1 here), with the deployment's dagster.yaml."""
    from dagster._grpc.client import DagsterGrpcClient

    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    port = free_port()
    cmd[cmd.index("-h") + 1] = "127.0.0.1"
    cmd[cmd.index("-p") + 1] = str(port)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "EVAL_LAKE_ROOT": str(tmp_path / "lake"),
           "DAGSTER_DISABLE_TELEMETRY": "1", "GX_ANALYTICS_ENABLED": "False"}
    env.pop("EVAL_SPECS", None)  # the packaged specs, as in the image
    exe = Path(sys.executable).with_name(cmd[0])
    proc = subprocess.Popen([str(exe)] + cmd[1:], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + 120
        while True:
            try:
                client.ping("x")
                break
            except Exception:  # noqa: BLE001 - not up yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"code server did not come up ({shlex.join(cmd)}):\n"
                                         f"{proc.stdout.read() if proc.poll() is not None else ''}")
                time.sleep(0.5)
        from dagster._serdes import deserialize_value

        repos = deserialize_value(client.list_repositories())
        names = [s.repository_name for s in repos.repository_symbols]
        assert names == ["__repository__"], names
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = proc.stdout.read()
    assert PASSWORD not in out


def test_local_instance_yaml_dequeues_every_second_and_keeps_an_operators_own_file(tmp_path):
    """The instance ./run and the CLI create (eval_pipeline.settings.LOCAL_INSTANCE_YAML) is a real instance whose
    queued run coordinator checks its queue every second (Dagster's default: 5 s, a wait every sensor-started
    evaluation would pay); a dagster.yaml already there is never overwritten."""
    import dagster as dg
    from dagster._core.run_coordinator import QueuedRunCoordinator

    from eval_pipeline.settings import write_local_instance_yaml

    home = tmp_path / "home"
    write_local_instance_yaml(home)
    instance = dg.DagsterInstance.from_config(str(home))
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    assert instance.run_coordinator.dequeue_interval_seconds == 1
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    write_local_instance_yaml(home)
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
    instance = dg.DagsterInstance.from_config(str(home))
    assert instance.run_coordinator.dequeue_interval_seconds == 5  # Dagster's own default, for contrast
