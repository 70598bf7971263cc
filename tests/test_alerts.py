"""Alerts (issue 10, item 4): a real FAIL result JSON POSTed to a real HTTP server on 127.0.0.1 (JSON and Slack
formats), retries on 503, a dead port that never raises, secrets that never reach a log or the alert log, and the
spec's alerts section validated up front (the CLI exits 2 naming the key)."""

import contextlib
import copy
import json
import logging
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import skops.io as sio
import yaml

from eval_pipeline import alerts
from eval_pipeline.cli import main, run_evaluation
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry, RegistryError
from eval_pipeline.settings import Settings, SettingsError, load_settings
from eval_pipeline.spec import SpecError, load_spec, parse_spec

from .toy import TOY_SPEC, fit_model, land, toy_frame

TOKEN = "T0KEN-s3cr3t-xoxb-123456"  # in the webhook URL's path, as Slack's and Teams' webhook URLs carry it
AUTH = "Bearer auth-s3cr3t-987"
GATES = [{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.05, "slices": ["overall", "b"]}]
FAST = Settings(alert_timeout_seconds=2.0, alert_max_seconds=6.0, alert_max_attempts=3, alert_backoff_seconds=0.05)


# -- a real webhook receiver -----------------------------------------------------------------------------------------
class Receiver:
    """ThreadingHTTPServer on 127.0.0.1: records every POST and answers with the scripted statuses (then 200)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[int] = []
        self.respond = lambda path: self.script.pop(0) if self.script else 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                code = outer.respond(self.path)
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if code == 200 else b"busy")

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/services/{name}/{TOKEN}"

    def bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def _receiver():
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def receiver():
    with _receiver() as r:
        yield r


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


# -- a real FAIL evaluation ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Toy task through the CLI path (Dagster in-process): the champion is a fitted model, the candidate was fitted
    on flipped labels, so the AUC non-inferiority gate FAILs. Gives the real result JSON and the lake."""
    root = tmp_path_factory.mktemp("alerts")
    lake = Lake(str(root / "lake"))
    frame = toy_frame(2000)
    land(lake, frame)
    reg = Registry(lake)
    reg.register("toy_model", "1", sio.dumps(fit_model(frame.iloc[:1000])), flavor="sklearn-skops",
                 artifact_name="model.skops")
    reg.set_champion("toy_model", "1", reason="test setup")
    flipped = frame.iloc[:1000].assign(y=1 - frame["y"].iloc[:1000])  # a label bug: the sign of the target flipped
    reg.register("toy_model", "2", sio.dumps(fit_model(flipped)), flavor="sklearn-skops",
                 artifact_name="model.skops")
    spec_path = root / "toy.yaml"
    spec_path.write_text(yaml.safe_dump({**TOY_SPEC, "gates": GATES, "evaluation": {"bootstrap_replicates": 200}}))
    code, result = run_evaluation(str(spec_path), lake.root, "toy_model@2")
    assert code == 1 and result["verdict"] == "FAIL", result and result["gates"]
    return {"root": root, "lake": lake, "result": result}


def _spec(webhooks=(), **alerts_section):
    return parse_spec({**TOY_SPEC, "gates": GATES, "evaluation": {"bootstrap_replicates": 200},
                       "alerts": {"webhooks": list(webhooks), **alerts_section}}, "toy spec")


@pytest.fixture
def lake(evaluated, tmp_path):
    """The evaluated lake, with a fresh alert log and dedup claims per test."""
    lk = evaluated["lake"]
    lk.delete("alerts", recursive=True)
    yield lk
    lk.delete("alerts", recursive=True)


def _log_lines(lake) -> list[str]:
    return [line for f in lake.find("alerts") if f["rel"].endswith(".jsonl")
            for line in lake.read_text(f["rel"]).splitlines()]


# -- tests -----------------------------------------------------------------------------------------------------------
def test_fail_summary_is_posted_once_with_verdict_deciding_gate_and_links(evaluated, lake, receiver):
    result = evaluated["result"]
    spec = _spec([{"url_env": "TEAM_HOOK", "format": "json", "on": ["fail"], "auth_env": "TEAM_HOOK_AUTH"}])
    env = {"TEAM_HOOK": receiver.url(), "TEAM_HOOK_AUTH": AUTH}
    records = alerts.notify(lake, spec, "verdict", result, FAST, env=env)

    assert [r["status"] for r in records] == ["sent"] and records[0]["attempts"] == 1
    assert records[0]["host"] == f"127.0.0.1:{receiver.port}" and records[0]["webhook"] == "TEAM_HOOK"
    (req,) = receiver.requests
    assert req["path"] == f"/services/hook/{TOKEN}" and req["headers"]["Authorization"] == AUTH
    assert req["headers"]["Content-Type"].startswith("application/json")
    body = json.loads(req["body"])
    assert body["event"] == "fail" and body["verdict"] == "FAIL" and body["task"] == "toy"
    assert body["candidate"] == "toy_model@2" and body["baseline"] == "toy_model@1"
    assert body["snapshot_id"] == result["dataset"]["snapshot_id"] and body["evidence_id"] == result["evidence_id"]
    failing = [g for g in result["gates"] if g["outcome"] == "FAIL"]
    assert len(failing) >= 2 and body["deciding_gates_total"] == len(failing)
    assert {"overall", "b=x"} <= {g["slice"] for g in body["deciding_gates"]}
    assert [(g["metric"], g["slice"], g["outcome"]) for g in body["deciding_gates"]] == \
        [(g["metric"], g["slice"], "FAIL") for g in failing]
    assert {"roc_auc"} == {g["metric"] for g in body["deciding_gates"]}
    assert all(g["rule"] and g["ci"] and g["delta"] is not None for g in body["deciding_gates"])
    assert failing[0]["slice"] in body["text"] and "FAIL" in body["title"]
    # links open the result JSON and the report of this evaluation
    for key, rel in (("result_json", result["paths"]["result"]), ("report_html", result["paths"]["report_html"])):
        link = body["links"][key]
        assert link.startswith("file://") and link.endswith(rel)
        with urllib.request.urlopen(link) as fh:
            assert fh.read() == lake.read_bytes(rel)

    # the same evaluation does not alert twice
    again = alerts.notify(lake, spec, "verdict", result, FAST, env=env)
    assert [r["status"] for r in again] == ["duplicate"] and len(receiver.requests) == 1
    (line,) = _log_lines(lake)
    logged = json.loads(line)
    assert logged["status"] == "sent" and logged["event"] == "fail" and logged["http_status"] == 200
    assert logged["dedup_key"] == body["dedup_key"]


def test_slack_payload_from_the_spec_and_from_eval_alert_webhooks(evaluated, lake, receiver):
    result = evaluated["result"]
    settings = load_settings({"EVAL_ALERT_WEBHOOKS": f"slack:{receiver.url('default')}",
                              "EVAL_ALERT_BACKOFF_SECONDS": "0.05"}, warn=False)
    spec = _spec([{"url_env": "SLACK_HOOK", "format": "slack"}])
    records = alerts.notify(lake, spec, "verdict", result, settings, env={"SLACK_HOOK": receiver.url("slack")})
    assert sorted((r["webhook"], r["status"]) for r in records) == [("EVAL_ALERT_WEBHOOKS#1", "sent"),
                                                                    ("SLACK_HOOK", "sent")]
    assert sorted(r["path"].split("/")[2] for r in receiver.requests) == ["default", "slack"]
    failing = next(g for g in result["gates"] if g["outcome"] == "FAIL")
    for body in receiver.bodies():
        assert set(body) == {"text", "blocks"} and body["text"].startswith("FAIL")
        assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": body["blocks"][0]
                                                                ["text"]["text"]}}
        assert body["blocks"][0]["text"]["text"].startswith("FAIL: toy toy_model@2 against toy_model@1")
        assert all(b["type"] in ("header", "section", "context") for b in body["blocks"])
        gates_block = body["blocks"][2]["text"]["text"]
        assert f"`{failing['metric']}` on `{failing['slice']}`: *FAIL*" in gates_block
        assert result["paths"]["report_html"] in body["blocks"][-1]["elements"][0]["text"]


def test_inconclusive_only_where_the_spec_asks_and_pass_never(evaluated, lake, receiver):
    inconclusive = copy.deepcopy(evaluated["result"])
    inconclusive["verdict"] = "INCONCLUSIVE"
    for g in inconclusive["gates"]:
        g["outcome"] = "INCONCLUSIVE" if g["outcome"] == "FAIL" else g["outcome"]
    spec = _spec([{"url_env": "FAIL_ONLY"}, {"url_env": "ALSO_INC", "on": ["fail", "inconclusive"]}])
    env = {"FAIL_ONLY": receiver.url("fail-only"), "ALSO_INC": receiver.url("also-inc")}
    records = alerts.notify(lake, spec, "verdict", inconclusive, FAST, env=env)
    assert [(r["webhook"], r["status"]) for r in records] == [("ALSO_INC", "sent")]
    assert [r["path"].split("/")[2] for r in receiver.requests] == ["also-inc"]
    assert receiver.bodies()[0]["verdict"] == "INCONCLUSIVE"

    passing = copy.deepcopy(evaluated["result"])
    passing["verdict"] = "PASS"
    assert alerts.notify(lake, spec, "verdict", passing, FAST, env=env) == [] and len(receiver.requests) == 1


def test_drift_and_refused_manifest_alerts(evaluated, lake, receiver):
    snap = evaluated["result"]["dataset"]["snapshot_id"]
    drift = lake.read_json(f"drift/toy/{snap}/drift.json")  # what the refresh wrote (DriftResult.to_dict())
    spec = _spec([{"url_env": "OPS", "on": ["drift", "refused_manifest"]}])
    env = {"OPS": receiver.url()}
    payload = {**drift, "snapshot_id": snap, "dataset_drift": True}
    payload["columns"] = [{**c, "drifted": True} for c in drift["columns"]]
    if not drift["dataset_drift"]:
        assert alerts.notify(lake, spec, "drift", {**drift, "snapshot_id": snap}, FAST, env=env) == []
    (rec,) = alerts.notify(lake, spec, "drift", payload, FAST, env=env)
    assert rec["status"] == "sent"
    body = receiver.bodies()[-1]
    assert body["event"] == "drift" and body["snapshot_id"] == snap
    assert [c["column"] for c in body["drifted_columns"]] == [c["column"] for c in drift["columns"]]
    assert body["links"]["drift_html"].endswith(f"drift/toy/{snap}/drift.html")

    # A tampered artifact: the registry refuses it (sha256 mismatch); the sensor's message is the alert's reason.
    reg = Registry(lake)
    manifest = reg.manifest("toy_model", "2")
    artifact = reg.artifact_path(manifest)
    original = lake.read_bytes(artifact)
    lake.write_bytes(artifact, original + b"tampered")
    try:
        with pytest.raises(RegistryError) as err:
            reg.verified_artifact(manifest)
    finally:
        lake.write_bytes(artifact, original)
    refused = {"model": "toy_model", "version": "2", "reason": str(err.value)}
    (rec,) = alerts.notify(lake, spec, "refused_manifest", refused, FAST, env=env)
    assert rec["status"] == "sent"
    body = receiver.bodies()[-1]
    assert body["event"] == "refused_manifest" and body["version"] == "2" and "sha256" in body["reason"]
    assert alerts.notify(lake, spec, "refused_manifest", refused, FAST, env=env)[0]["status"] == "duplicate"


def test_503_twice_then_200_is_three_attempts(evaluated, lake, receiver):
    receiver.script = [503, 503, 200]
    spec = _spec([{"url_env": "HOOK"}])
    (rec,) = alerts.notify(lake, spec, "verdict", evaluated["result"], FAST, env={"HOOK": receiver.url()})
    assert rec["status"] == "sent" and rec["attempts"] == 3 and rec["http_status"] == 200
    assert len(receiver.requests) == 3 and receiver.bodies()[0] == receiver.bodies()[2]

    # a 4xx is not retried, and a failed delivery can be retried by a later call (its claim is released)
    lake.delete("alerts", recursive=True)
    receiver.requests.clear()
    receiver.script = [403]
    (rec,) = alerts.notify(lake, spec, "verdict", evaluated["result"], FAST, env={"HOOK": receiver.url()})
    assert (rec["status"], rec["attempts"], rec["http_status"]) == ("failed", 1, 403)
    (rec,) = alerts.notify(lake, spec, "verdict", evaluated["result"], FAST, env={"HOOK": receiver.url()})
    assert rec["status"] == "sent" and len(receiver.requests) == 2


def test_a_dead_port_never_raises_and_is_recorded_within_the_time_bound(evaluated, lake):
    import time

    url = f"http://127.0.0.1:{_dead_port()}/services/dead/{TOKEN}"
    spec = _spec([{"url_env": "HOOK"}, {"url_env": "UNSET_HOOK"}])
    start = time.monotonic()
    records = alerts.notify(lake, spec, "verdict", evaluated["result"], FAST, env={"HOOK": url})
    assert time.monotonic() - start < FAST.alert_max_seconds + 2
    by = {r["webhook"]: r for r in records}
    assert by["HOOK"]["status"] == "failed" and by["HOOK"]["attempts"] == FAST.alert_max_attempts
    assert "Connection" in by["HOOK"]["error"] or "refused" in by["HOOK"]["error"]
    assert by["UNSET_HOOK"]["status"] == "not_configured"
    logged = [json.loads(x) for x in _log_lines(lake)]
    assert sorted((x["webhook"], x["status"]) for x in logged) == [("HOOK", "failed"), ("UNSET_HOOK",
                                                                                          "not_configured")]
    # nothing breaks notify: an unknown event, a lake that cannot be read or written (the alert still goes out)
    assert alerts.notify(lake, spec, "bogus", {}, FAST, env={"HOOK": url}) == []

    class BrokenLake:
        is_local = False

        def __getattr__(self, name):
            def fail(*args, **kwargs):
                raise OSError("lake unavailable")
            return fail

    with _receiver() as live:
        records = alerts.notify(BrokenLake(), spec, "verdict", evaluated["result"], FAST, env={"HOOK": live.url()})
        assert [r["status"] for r in records if r["webhook"] == "HOOK"] == ["sent"] and len(live.requests) == 1


def test_webhook_secrets_appear_in_no_log_record_and_no_alert_log_line(evaluated, lake, receiver, caplog):
    spec = _spec([{"url_env": "OK", "auth_env": "OK_AUTH"}, {"url_env": "BUSY"}, {"url_env": "DEAD"},
                  {"url_env": "BAD", "format": "slack"}])
    env = {"OK": receiver.url("ok"), "OK_AUTH": AUTH, "BUSY": receiver.url("busy"),
           "DEAD": f"http://127.0.0.1:{_dead_port()}/services/dead/{TOKEN}",
           "BAD": f"http://user:{TOKEN}@127.0.0.1:{receiver.port}/x?token={TOKEN}"}

    caplog.set_level(logging.DEBUG)
    # OK: sent; BUSY: always 500, retried then failed; DEAD: connection refused; BAD: user info in the URL.
    receiver.respond = lambda path: 500 if "/busy/" in path else 200
    records = alerts.notify(lake, spec, "verdict", evaluated["result"], FAST, env=env)
    by = {r["webhook"]: r["status"] for r in records}
    assert by["OK"] == "sent" and by["BUSY"] == "failed" and by["DEAD"] == "failed"
    assert any(r["headers"].get("Authorization") == AUTH for r in receiver.requests)

    texts = [caplog.text, *_log_lines(lake), json.dumps(records)]
    texts += [str(r.args) + str(r.msg) for r in caplog.records]
    for text in texts:
        assert TOKEN not in text and AUTH not in text and "auth-s3cr3t" not in text
        assert "/services/" not in text and "user:" not in text
    assert f"127.0.0.1:{receiver.port}" in caplog.text  # the host is what is shown
    assert "OK" in caplog.text and "BUSY" in caplog.text
    # settings: EVAL_ALERT_WEBHOOKS never appears in repr or in its error
    s = load_settings({"EVAL_ALERT_WEBHOOKS": receiver.url()}, warn=False)
    assert TOKEN not in repr(s) and TOKEN not in str(s)
    with pytest.raises(SettingsError) as err:
        load_settings({"EVAL_ALERT_WEBHOOKS": f"ftp://example/{TOKEN}"})
    assert "EVAL_ALERT_WEBHOOKS" in str(err.value) and TOKEN not in str(err.value)


def test_alerts_section_is_validated_up_front_and_the_cli_exits_2_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TOY_SPEC, "alerts": {"webhooks": [
        {"url_env": f"https://hooks.example.com/services/{TOKEN}", "format": "xml", "on": ["fail", "pass"]}]}}))
    code = main(["evaluate", "--spec", str(bad), "--lake", str(tmp_path / "lake")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(bad) in err and "alerts.webhooks.0.url_env" in err and "alerts.webhooks.0.format" in err
    assert "alerts.webhooks.0.on.1" in err and "'fail', 'inconclusive', 'drift' or 'refused_manifest'" in err
    assert TOKEN not in err and "hooks.example.com" not in err

    with pytest.raises(SpecError, match=r"alerts\.webhooks\.0\.url: unknown key"):
        _spec([{"url": "https://x", "url_env": "H"}])
    with pytest.raises(SpecError, match=r"alerts\.bogus: unknown key"):
        parse_spec({**TOY_SPEC, "alerts": {"bogus": 1}}, "s")
    # YAML's bare `on:` (read as True) works; the section does not change the spec's hash (who is told is not
    # what is decided), and the packaged specs are unchanged
    text = "alerts:\n  on: [fail, inconclusive]\n  webhooks:\n    - url_env: TEAM_HOOK\n      on: [drift]\n"
    spec = parse_spec({**TOY_SPEC, **yaml.safe_load(text)}, "s")
    assert spec.alerts.on == ["fail", "inconclusive"] and spec.alerts.webhooks[0].on == ["drift"]
    assert spec.spec_hash() == parse_spec(dict(TOY_SPEC), "s").spec_hash()
    from eval_pipeline.spec import spec_text_from

    assert "alerts" not in spec_text_from(parse_spec(dict(TOY_SPEC), "s"))
    assert parse_spec(yaml.safe_load(spec_text_from(spec)), "s").alerts == spec.alerts
