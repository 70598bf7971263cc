"""Alerts: tell people about a FAIL, an INCONCLUSIVE (when the spec asks), drift and a refused (tampered) manifest.

One entry point, :func:`notify`, called by the Dagster assets and sensors (which own *when*); this module owns
*what* and *how*:

* **what**: a JSON summary built from the result JSON (verdict, the gate rows that decided it, links to the result
  JSON and the report), from a drift summary (``DriftResult.to_dict()``) or from a refused manifest; sent as is
  (``format: json``) or as a Slack-compatible ``{"text": ..., "blocks": [...]}`` (``format: slack``).
* **where**: the spec's ``alerts.webhooks`` (each names the environment variable that holds its URL, and optionally
  one holding an ``Authorization`` header) and the default webhooks of ``EVAL_ALERT_WEBHOOKS`` (events from the
  spec's ``alerts.on``). Secrets come only from the environment and are never logged nor written: logs and the
  alert log name the webhook by its variable and its host only.
* **how**: ``POST`` with urllib (no redirects followed), a timeout per request, retries with exponential backoff on
  5xx / 408 / 429 and connection errors, all webhooks of one call sent in parallel within one bounded total time
  (``EVAL_ALERT_MAX_SECONDS``). Once per evaluation: a claim object per (dedup key, webhook) in the lake, created
  exclusively, so the same evaluation (or drift of a snapshot, or refused manifest) does not alert twice; a failed
  delivery releases its claim so a later call may try again.
* **never in the way**: :func:`notify` never raises. Failures are logged as warnings and recorded, one JSON line per
  delivery, in the lake's alert log ``alerts/<task>/<YYYY-MM-DD>.jsonl`` (UTC date).

Plain Python (no Dagster import).
"""

import datetime as dt
import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import Settings, load_settings
from .spec import ALERT_EVENTS, EvalSpec

log = logging.getLogger(__name__)

ALERT_SCHEMA = 1
EVENTS = ALERT_EVENTS  # fail, inconclusive, drift, refused_manifest
MAX_GATES = 10  # deciding gate rows carried in one alert (the total is given; the report has them all)
STALE_CLAIM_SECONDS = 600  # a claim left 'pending' this long (a crash mid-send) may be taken over
_VERDICT_EVENT = {"FAIL": "fail", "INCONCLUSIVE": "inconclusive"}
_GATE_KEYS = ("gate", "metric", "slice", "kind", "outcome", "value", "baseline_value", "delta", "ci", "margin",
              "bound", "min", "max", "n", "rule")


# -- where ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Webhook:
    """A destination. ``label`` (the variable's name, or ``EVAL_ALERT_WEBHOOKS#i``) and ``host`` are what is shown;
    ``url`` and ``auth`` are secrets (kept out of repr)."""

    label: str
    format: str
    events: tuple[str, ...]
    url: str = field(repr=False)
    auth: str | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return host_of(self.url)


def host_of(url: str) -> str:
    """Host (and port) of a URL without user info, path or query: the only part of a webhook that is ever shown."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "?"


def webhooks_for(spec: EvalSpec, settings: Settings, env: Mapping[str, str] | None = None
                 ) -> tuple[list[Webhook], list[str]]:
    """The spec's webhooks (URLs from the variables they name) and the EVAL_ALERT_WEBHOOKS defaults; and the names
    of variables a spec webhook needs but the environment does not set (reported, never fatal)."""
    env = os.environ if env is None else env
    hooks, missing = [], []
    for w in spec.alerts.webhooks:
        url = (env.get(w.url_env) or "").strip()
        auth = (env.get(w.auth_env) or "").strip() or None if w.auth_env else None
        if not url or (w.auth_env and not auth):
            missing.append(w.url_env if not url else w.auth_env)
            continue
        hooks.append(Webhook(w.url_env, w.format, tuple(w.on), url, auth))
    if spec.alerts.default_webhooks:
        for i, (fmt, url) in enumerate(settings.alert_webhooks, start=1):
            hooks.append(Webhook(f"EVAL_ALERT_WEBHOOKS#{i}", fmt, tuple(spec.alerts.on), url))
    return hooks, missing


# -- what -------------------------------------------------------------------------------------------------------------
def _link(lake, rel: str | None) -> str | None:
    """A link to a lake object: file:// URI for a local lake, the object's URI (s3://...) otherwise; the
    lake-relative path when no lake is given."""
    if not rel:
        return None
    if lake is None:
        return rel
    try:
        return Path(lake.path(rel)).as_uri() if getattr(lake, "is_local", False) else lake.uri(rel)
    except Exception:  # noqa: BLE001 - a link is a convenience: the lake-relative path will do
        return rel


def _num(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return "n/a" if x is None else str(x)
    if isinstance(x, (int, float)):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)) and len(x) == 2:
        return f"[{_num(x[0])}, {_num(x[1])}]"
    return str(x)


def _gate_line(g: dict) -> str:
    where = f"{g.get('metric')} on {g.get('slice')}"
    figures = []
    if g.get("delta") is not None:
        figures.append(f"delta {_num(g['delta'])}")
    elif g.get("value") is not None:
        figures.append(f"value {_num(g['value'])}")
    if g.get("ci") is not None:
        figures.append(f"interval {_num(g['ci'])}")
    if g.get("margin") is not None:
        figures.append(f"margin {_num(g['margin'])}")
    return f"{where}: {g.get('outcome')}" + (f" ({', '.join(figures)})" if figures else "")


def result_summary(result: dict, lake=None) -> dict:
    """Summary of a FAIL or INCONCLUSIVE result JSON: verdict, the gate rows with that outcome (the ones that
    decided it), counts, links. (A PASS gives a summary too, with no deciding gates; :func:`notify` sends none.)"""
    verdict = result["verdict"]
    gates = result.get("gates") or []
    deciding = [g for g in gates if g.get("outcome") == verdict and verdict != "PASS"]
    candidate = (result.get("candidate") or {}).get("ref")
    baseline = (result.get("baseline") or {}).get("ref")
    snapshot_id = (result.get("dataset") or {}).get("snapshot_id")
    paths = result.get("paths") or {}
    against = f"against {baseline}" if baseline else ("monitoring (champion alone)" if result.get("mode") ==
                                                      "monitoring" else "alone (no champion)")
    title = f"{verdict}: {result.get('task')} {candidate} {against}"
    text = (f"{verdict} for {candidate} {against} on snapshot {snapshot_id}: {len(deciding)} of {len(gates)} gate "
            f"row(s) {verdict}" + (": " + "; ".join(_gate_line(g) for g in deciding[:3]) if deciding else "")
            + (f" (+{len(deciding) - 3} more)" if len(deciding) > 3 else ""))
    return {
        "alert_schema": ALERT_SCHEMA,
        "event": _VERDICT_EVENT.get(verdict, "pass"),
        "task": result.get("task"),
        "title": title,
        "text": text,
        "verdict": verdict,
        "mode": result.get("mode"),
        "candidate": candidate,
        "baseline": baseline,
        "snapshot_id": snapshot_id,
        "evidence_id": result.get("evidence_id"),
        "deciding_gates": [{k: g[k] for k in _GATE_KEYS if k in g} for g in deciding[:MAX_GATES]],
        "deciding_gates_total": len(deciding),
        "gate_counts": (result.get("gate_summary") or {}).get("counts"),
        "links": {"result_json": _link(lake, paths.get("result")),
                  "report_html": _link(lake, paths.get("report_html")),
                  "report_md": _link(lake, paths.get("report_md"))},
        "dedup_key": f"{_VERDICT_EVENT.get(verdict, 'pass')}:{result.get('task')}:{candidate}:"
                     f"{result.get('evidence_id')}",
    }


def drift_summary(drift: dict, *, task: str, snapshot_id: str, lake=None) -> dict:
    """Summary of a drift result (``DriftResult.to_dict()``): the drifted columns with method, score, threshold."""
    cols = [c for c in drift.get("columns", []) if c.get("drifted")]
    base = f"drift/{task}/{snapshot_id}"
    status = "dataset drift" if drift.get("dataset_drift") else "column drift"
    text = (f"{status} in {task} on snapshot {snapshot_id}: {drift.get('n_drifted', len(cols))} of "
            f"{len(drift.get('columns', []))} columns drifted (share {_num(drift.get('share_drifted'))}, threshold "
            f"{_num(drift.get('drift_share'))})" + (": " + ", ".join(
                f"{c['column']} ({c.get('method')} {_num(c.get('score'))})" for c in cols[:5]) if cols else ""))
    return {
        "alert_schema": ALERT_SCHEMA,
        "event": "drift",
        "task": task,
        "title": f"DRIFT: {task} snapshot {snapshot_id}",
        "text": text,
        "snapshot_id": snapshot_id,
        "dataset_drift": bool(drift.get("dataset_drift")),
        "share_drifted": drift.get("share_drifted"),
        "drifted_columns": [{k: c.get(k) for k in ("column", "kind", "method", "score", "threshold")}
                            for c in cols[:MAX_GATES * 2]],
        "drifted_columns_total": len(cols),
        "links": {"drift_json": _link(lake, f"{base}/drift.json"), "drift_html": _link(lake, f"{base}/drift.html")},
        "dedup_key": f"drift:{task}:{snapshot_id}",
    }


def refused_manifest_summary(*, task: str, model: str, version: str, reason: str, fingerprint: str | None = None,
                             lake=None) -> dict:
    """Summary of a model version the sensor refused (bad manifest, missing artifact, sha256 mismatch)."""
    ident = fingerprint or hashlib.sha256(reason.encode()).hexdigest()
    return {
        "alert_schema": ALERT_SCHEMA,
        "event": "refused_manifest",
        "task": task,
        "title": f"REFUSED: {model}@{version} ({task})",
        "text": f"model version {model}@{version} was refused and will not be evaluated until fixed: {reason}",
        "model": model,
        "version": version,
        "reason": reason,
        "links": {"manifest": _link(lake, f"registry/{model}/{version}/manifest.json")},
        "dedup_key": f"refused_manifest:{task}:{model}@{version}:{ident[:16]}",
    }


def slack_payload(summary: dict) -> dict:
    """A Slack incoming-webhook message: ``text`` (notifications, fallback) and Block Kit ``blocks``."""
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": summary["title"][:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": summary["text"][:2900]}},
    ]
    gates = summary.get("deciding_gates") or []
    if gates:
        lines = [f"• `{g.get('metric')}` on `{g.get('slice')}`: *{g.get('outcome')}* — {g.get('rule', '')}"
                 for g in gates[:5]]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}})
    links = [(k, v) for k, v in (summary.get("links") or {}).items() if v]
    if links:
        shown = [f"<{v}|{k}>" if v.startswith(("http://", "https://")) else f"{k}: `{v}`" for k, v in links]
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(shown)[:2900]}]})
    return {"text": f"{summary['title']}: {summary['text']}"[:3000], "blocks": blocks}


def body_for(fmt: str, summary: dict) -> bytes:
    payload = slack_payload(summary) if fmt == "slack" else summary
    return json.dumps(payload, sort_keys=True, default=str).encode()


# -- how --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    timeout: float = 5.0        # one request
    backoff: float = 0.5        # first delay; doubled each retry
    max_delay: float = 8.0
    max_seconds: float = 20.0   # everything, retries included

    @classmethod
    def from_settings(cls, s: Settings) -> "RetryPolicy":
        return cls(max_attempts=s.alert_max_attempts, timeout=s.alert_timeout_seconds,
                   backoff=s.alert_backoff_seconds, max_seconds=s.alert_max_seconds)

    def delay(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` (attempt counts from 1)."""
        return min(self.backoff * 2 ** (attempt - 1), self.max_delay)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirected POST would be resent as a GET: report it instead
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _retryable_status(code: int) -> bool:
    return code >= 500 or code in (408, 429)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret (and the path, query and user info of any URL among them) removed, and any other
    URL cut to scheme://host."""
    for s in secrets:
        if not s:
            continue
        text = text.replace(s, "<redacted>")
        try:
            parts = urllib.parse.urlsplit(s)
        except ValueError:
            continue
        for piece in (parts.path, parts.query, parts.username, parts.password):
            if piece and len(piece) > 1:
                text = text.replace(piece, "<redacted>")
    return re.sub(r"(https?://)[^\s/'\"<>]+[^\s'\"<>]*", lambda m: m.group(1) + host_of(m.group(0)) + "/<redacted>",
                  text)


def send(hook: Webhook, body: bytes, policy: RetryPolicy, deadline: float | None = None,
         sleep: Callable[[float], None] = time.sleep) -> dict:
    """POST ``body`` to ``hook`` with retries; never raises. Returns status (sent/failed), attempts, http_status,
    error (redacted) and elapsed seconds."""
    start = time.monotonic()
    deadline = start + policy.max_seconds if deadline is None else deadline
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "eval-pipeline-alerts/1"}
    if hook.auth:
        headers["Authorization"] = hook.auth
    attempts, code, error = 0, None, None
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        retry_after = 0.0
        try:
            req = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
            with _OPENER.open(req, timeout=max(0.1, min(policy.timeout, remaining))) as resp:
                code = resp.status
                resp.read(65536)
            return {"status": "sent", "attempts": attempts, "http_status": code, "error": None,
                    "elapsed_s": round(time.monotonic() - start, 3)}
        except urllib.error.HTTPError as exc:
            code, error = exc.code, f"HTTP {exc.code} {exc.reason}"
            retryable = _retryable_status(exc.code)
            try:
                retry_after = float(exc.headers.get("Retry-After") or 0)
            except (TypeError, ValueError):
                retry_after = 0.0
            exc.close()
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout (socket.timeout is OSError)
            code, retryable = None, True
            reason = getattr(exc, "reason", exc)
            error = f"{type(reason).__name__}: {reason}"
        except Exception as exc:  # noqa: BLE001 - a malformed URL and the like: not worth retrying
            code, retryable, error = None, False, f"{type(exc).__name__}: {exc}"
        error = redact(error, hook.url, hook.auth)
        wait = max(policy.delay(attempts), min(retry_after, policy.max_delay))
        if not retryable or attempts >= policy.max_attempts or time.monotonic() + wait >= deadline:
            return {"status": "failed", "attempts": attempts, "http_status": code, "error": error,
                    "elapsed_s": round(time.monotonic() - start, 3)}
        log.debug("alert to %s (%s): attempt %d failed (%s); retrying in %.2f s", hook.host, hook.label, attempts,
                  error, wait)
        sleep(wait)


# -- once per evaluation, and the record ------------------------------------------------------------------------------
def _claim_path(task: str, key: str, hook: Webhook) -> str:
    return f"alerts/{task}/sent/{hashlib.sha256(f'{key}|{hook.label}'.encode()).hexdigest()[:32]}.json"


def _claim(lake, rel: str, key: str, now: float) -> bool:
    if lake.create_exclusive(rel, json.dumps({"dedup_key": key, "status": "pending", "at": now}).encode()):
        return True
    try:
        held = lake.read_json(rel)
    except Exception:  # noqa: BLE001 - unreadable claim: leave it alone
        return False
    if held.get("status") == "pending" and now - float(held.get("at", now)) > STALE_CLAIM_SECONDS:
        lake.write_json(rel, {"dedup_key": key, "status": "pending", "at": now})  # a crash mid-send: take it over
        return True
    return False


_LOG_LOCK = threading.Lock()


def record(lake, task: str, entry: dict) -> None:
    """Append one line to ``alerts/<task>/<UTC date>.jsonl`` (locally with O_APPEND; on S3 read and rewrite)."""
    rel = f"alerts/{task}/{entry['at'][:10]}.jsonl"
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
    with _LOG_LOCK:
        if lake.is_local:
            target = lake.path(rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        else:
            old = lake.read_bytes(rel) if lake.exists(rel) else b""
            lake.write_bytes(rel, old + line)


def read_log(lake, task: str) -> list[dict]:
    """Every line of the task's alert log, oldest day first."""
    out = []
    for name in sorted(n for n in lake.ls(f"alerts/{task}") if n.endswith(".jsonl")):
        rel = name if name.startswith("alerts/") else f"alerts/{task}/{name.rsplit('/', 1)[-1]}"
        out += [json.loads(x) for x in lake.read_text(rel).splitlines() if x.strip()]
    return out


# -- the entry point --------------------------------------------------------------------------------------------------
def build_summary(lake, spec: EvalSpec, event: str, payload: dict) -> dict | None:
    """The summary for ``event`` from its raw payload; None when there is nothing to tell (a PASS, no drift)."""
    if "alert_schema" in payload:  # already a summary
        return payload
    if event in ("verdict", "fail", "inconclusive"):
        summary = result_summary(payload, lake)
        return summary if summary["event"] in ("fail", "inconclusive") else None
    if event == "drift":
        if not payload.get("dataset_drift"):
            return None
        return drift_summary(payload, task=spec.task, snapshot_id=payload["snapshot_id"], lake=lake)
    if event == "refused_manifest":
        return refused_manifest_summary(task=spec.task, model=payload.get("model", spec.model.name),
                                        version=payload["version"], reason=payload.get("reason", ""),
                                        fingerprint=payload.get("fingerprint"), lake=lake)
    raise ValueError(f"unknown alert event {event!r}; expected one of verdict, {', '.join(EVENTS)}")


def notify(lake, spec: EvalSpec, event: str, payload: dict, settings: Settings | None = None, *,
           env: Mapping[str, str] | None = None) -> list[dict]:
    """Alert the webhooks that asked for ``event``; never raises, returns one record per webhook considered.

    ``event`` and ``payload``:

    * ``"verdict"`` (or ``"fail"`` / ``"inconclusive"``) with the result JSON dict: alerts on FAIL (and on
      INCONCLUSIVE for webhooks whose ``on`` lists it); a PASS sends nothing.
    * ``"drift"`` with ``{**DriftResult.to_dict(), "snapshot_id": ...}``: alerts when ``dataset_drift`` is true.
    * ``"refused_manifest"`` with ``{"model", "version", "reason", "fingerprint"?}``.
    * any event with a summary already built by :func:`result_summary`, :func:`drift_summary` or
      :func:`refused_manifest_summary`.

    Records: ``{"at", "event", "task", "dedup_key", "webhook" (variable name), "host", "format", "status"
    (sent | failed | duplicate | not_configured), "attempts", "http_status", "error", "elapsed_s"}``; every record
    but duplicates is appended to the alert log ``alerts/<task>/<date>.jsonl``.
    """
    try:
        return _notify(lake, spec, event, payload, settings, env)
    except Exception as exc:  # noqa: BLE001 - alerting must never fail the evaluation
        log.warning("alert %s for task %s not sent: %s: %s", event, getattr(spec, "task", "?"), type(exc).__name__,
                    redact(str(exc)))
        return []


def _notify(lake, spec: EvalSpec, event: str, payload: dict, settings: Settings | None,
            env: Mapping[str, str] | None) -> list[dict]:
    settings = settings if settings is not None else load_settings(warn=False)
    summary = build_summary(lake, spec, event, payload)
    if summary is None:
        return []
    event, task, key = summary["event"], spec.task, summary["dedup_key"]
    hooks, missing = webhooks_for(spec, settings, env)
    hooks = [h for h in hooks if event in h.events]
    now = dt.datetime.now(dt.timezone.utc)
    base = {"at": now.isoformat(timespec="seconds"), "event": event, "task": task, "dedup_key": key}
    records: list[dict] = []
    for name in missing:
        rec = {**base, "webhook": name, "host": None, "format": None, "status": "not_configured", "attempts": 0,
               "http_status": None, "error": f"environment variable {name} is not set", "elapsed_s": 0.0}
        log.warning("alert %s for task %s: the spec names webhook variable %s, which is not set", event, task, name)
        records.append(rec)
    if not hooks:
        _record_all(lake, task, records)
        return records

    policy = RetryPolicy.from_settings(settings)
    deadline = time.monotonic() + policy.max_seconds

    def one(hook: Webhook) -> dict:
        rec = {**base, "webhook": hook.label, "host": hook.host, "format": hook.format}
        claim = _claim_path(task, key, hook)
        try:
            claimed = _claim(lake, claim, key, time.time())
        except Exception as exc:  # noqa: BLE001 - no dedup store: better one alert too many than none
            log.warning("alert %s for task %s: cannot record the claim (%s); sending anyway", event, task,
                        type(exc).__name__)
            claimed, claim = True, None
        if not claimed:
            log.debug("alert %s already sent to %s (%s): %s", event, hook.host, hook.label, key)
            return {**rec, "status": "duplicate", "attempts": 0, "http_status": None, "error": None,
                    "elapsed_s": 0.0}
        out = {**rec, **send(hook, body_for(hook.format, summary), policy, deadline)}
        if claim is not None:
            try:
                if out["status"] == "sent":
                    lake.write_json(claim, {"dedup_key": key, "status": "sent", "at": base["at"]})
                else:
                    lake.delete(claim)  # a later call may try again
            except Exception as exc:  # noqa: BLE001
                log.warning("alert %s for task %s: cannot update the claim (%s)", event, task, type(exc).__name__)
        if out["status"] == "sent":
            log.info("alert %s for task %s sent to %s (%s): HTTP %s after %d attempt(s)", event, task, hook.host,
                     hook.label, out["http_status"], out["attempts"])
        else:
            log.warning("alert %s for task %s to %s (%s) failed after %d attempt(s) in %.1f s: %s", event, task,
                        hook.host, hook.label, out["attempts"], out["elapsed_s"], out["error"])
        return out

    with ThreadPoolExecutor(max_workers=min(4, len(hooks)), thread_name_prefix="eval-alert") as pool:
        records += list(pool.map(one, hooks))
    _record_all(lake, task, [r for r in records if r["status"] != "duplicate"])
    return records


def _record_all(lake, task: str, records: list[dict]) -> None:
    for rec in records:
        try:
            record(lake, task, rec)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot append to the alert log of task %s: %s", task, type(exc).__name__)
