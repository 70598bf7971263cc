"""Run a real `dagster dev` (webserver + daemons) for tests, on 127.0.0.1, and talk to it through GraphQL."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_dagster_yaml(home: Path) -> None:
    from eval_pipeline.settings import write_local_instance_yaml

    write_local_instance_yaml(home)


class DagsterDev:
    """`dagster dev -w workspace.yaml` in its own process group; stop() sends SIGTERM, then kills the group."""

    def __init__(self, home: Path, env: dict, log_path: Path, port: int | None = None):
        self.home, self.extra_env, self.log_path = home, env, log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> "DagsterDev":
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "DAGSTER_DISABLE_TELEMETRY": "1", **self.extra_env}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [DAGSTER, "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if requests.get(f"{self.url}/server_info", timeout=2).ok and self._location_loaded():
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"dagster dev did not come up within {timeout} s; see {self.log_path}")

    def _location_loaded(self) -> bool:
        data = self.gql("{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name } } } }")
        return bool(data["repositoriesOrError"].get("nodes"))

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = os.getpgid(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # anything left in the group (code server, daemon, run workers) goes too
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()

    def gql(self, query: str, variables: dict | None = None) -> dict:
        resp = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
        resp.raise_for_status()
        body = resp.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    # -- queries -------------------------------------------------------------------------------------------------
    def runs(self, tags: dict | None = None, job: str | None = None) -> list[dict]:
        flt = {}
        if tags:
            flt["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        if job:
            flt["pipelineName"] = job
        data = self.gql("""query($f: RunsFilter) { runsOrError(filter: $f, limit: 200) {
              __typename ... on Runs { results { runId status jobName startTime endTime creationTime
                tags { key value } } } ... on PythonError { message } } }""", {"f": flt})
        out = data["runsOrError"]
        if out["__typename"] != "Runs":
            raise RuntimeError(f"runsOrError: {out}")
        for r in out["results"]:
            r["tags"] = {t["key"]: t["value"] for t in r["tags"]}
        return out["results"]

    def run_outcome(self, run_id: str) -> dict:
        """What one run recorded: the release_gates `verdict` metadata and the `gates_pass` check evaluation."""
        data = self.gql("""query($id: ID!) { runOrError(runId: $id) { ... on Run { status
              eventConnection(limit: 5000) { events { __typename
                ... on MaterializationEvent { assetKey { path } metadataEntries { label
                  ... on TextMetadataEntry { text } } }
                ... on AssetCheckEvaluationEvent { evaluation { checkName success partition
                  metadataEntries { label ... on TextMetadataEntry { text } } } } } } } } }""", {"id": run_id})
        run = data["runOrError"]
        out = {"status": run.get("status"), "verdict": None, "gates_pass": None}
        for ev in run.get("eventConnection", {}).get("events", []):
            if ev["__typename"] == "MaterializationEvent" and ev["assetKey"]["path"][-1] == "release_gates":
                meta = {m["label"]: m.get("text") for m in ev["metadataEntries"]}
                out["verdict"] = meta.get("verdict")
            if ev["__typename"] == "AssetCheckEvaluationEvent" and ev["evaluation"]["checkName"] == "gates_pass":
                e = ev["evaluation"]
                out["gates_pass"] = {"success": e["success"], "partition": e["partition"],
                                     **{m["label"]: m.get("text") for m in e["metadataEntries"]}}
        return out

    def sensor_ticks(self, location: str, sensor: str, limit: int = 5) -> list[dict]:
        data = self.gql("""query($s: SensorSelector!, $n: Int) { sensorOrError(sensorSelector: $s) {
              ... on Sensor { sensorState { status ticks(limit: $n) { status skipReason error { message } } } } } }""",
                        {"s": {"repositoryLocationName": location, "repositoryName": "__repository__",
                               "sensorName": sensor}, "n": limit})
        return ((data["sensorOrError"] or {}).get("sensorState") or {}).get("ticks") or []


def wait_for(predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
