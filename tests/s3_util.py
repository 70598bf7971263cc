"""Shared S3 test fixtures: a real S3 endpoint (moto's server) on 127.0.0.1 and a fault-injecting HTTP proxy.

Import the fixtures into a test module (``from .s3_util import moto_endpoint, s3_lake  # noqa: F401``).

- ``moto_endpoint`` (session): a ``ThreadedMotoServer`` on 127.0.0.1 and a free port; its URL.
- ``s3_env`` (function): fake but distinctive AWS credentials in the environment (the standard AWS chain reads
  them), the AWS config files pointed away from ``~/.aws``, ``EVAL_S3_ENDPOINT_URL`` set, small timeouts.
- ``s3_lake`` (function): a fresh bucket per test and ``Lake("s3://<bucket>/lake")``.
- ``FaultProxy``: an HTTP/1.1 reverse proxy in front of moto that answers every Nth request with 503, drops
  connections for a time window, or stops listening altogether, so botocore's retries are really exercised.

Only loopback addresses are used, ever.
"""

import contextlib
import http.client
import itertools
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

# Distinctive fake credentials: a test scans everything a run produced for them.
FAKE_KEY_ID = "AKIAKEYIDSHOULDNOTLEAK7"
FAKE_SECRET = "SECRETSHOULDNOTLEAK/q9Zr+4kT0pX2bYvW8mN1cL5hJ3gF6dS"
REGION = "us-east-1"

_bucket_counter = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real S3 HTTP endpoint on 127.0.0.1 for the whole session (≈ 0.5 s to start)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port("127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def set_s3_env(monkeypatch, endpoint: str, tmp_path, *, max_attempts: int = 4, connect_timeout: float = 2,
               read_timeout: float = 10) -> None:
    """Credentials through the standard AWS chain (environment), nothing from ~/.aws, small timeouts."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("EVAL_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("EVAL_S3_MAX_ATTEMPTS", str(max_attempts))
    monkeypatch.setenv("EVAL_S3_CONNECT_TIMEOUT", str(connect_timeout))
    monkeypatch.setenv("EVAL_S3_READ_TIMEOUT", str(read_timeout))


def bucket_name(request) -> str:
    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return f"t{next(_bucket_counter)}-{stem}"[:63].rstrip("-")


def create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(Bucket=bucket)


@pytest.fixture
def s3_env(moto_endpoint, monkeypatch, tmp_path):
    set_s3_env(monkeypatch, moto_endpoint, tmp_path)
    return moto_endpoint


@pytest.fixture
def s3_lake(s3_env, request):
    from eval_pipeline.lake import Lake

    bucket = bucket_name(request)
    create_bucket(s3_env, bucket)
    return Lake(f"s3://{bucket}/lake")


# -- fault injection -------------------------------------------------------------------------------------------------
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect",
        "content-length", "host"}
_SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
             b"<Message>injected fault: please retry</Message><RequestId>fault</RequestId></Error>")


class FaultProxy:
    """A threaded HTTP/1.1 reverse proxy on 127.0.0.1 in front of ``upstream`` that injects faults.

    - ``fail_every(n)``: every n-th request is answered ``503 ServiceUnavailable`` (S3's XML error body);
    - ``drop_for(seconds)``: for that long every request's connection is closed without an answer;
    - ``go_away()`` / ``come_back()``: stop listening (connection refused) and listen again on the same port;
    - ``clear()``: no faults. ``log`` records (method, path, outcome) of every request seen.
    """

    def __init__(self, upstream: str):
        up = urlsplit(upstream)
        self.up_host, self.up_port = up.hostname, up.port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._n = 0
        self._fail_every = 0
        self._drop_until = 0.0
        self._gone = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------------------------------
    def fail_every(self, n: int) -> None:
        with self._lock:
            self._fail_every, self._n = n, 0

    def drop_for(self, seconds: float) -> None:
        with self._lock:
            self._drop_until = time.monotonic() + seconds

    def clear(self) -> None:
        with self._lock:
            self._fail_every, self._drop_until = 0, 0.0

    def outcomes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, _, outcome in list(self.log):
            out[outcome] = out.get(outcome, 0) + 1
        return out

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self):
                outcome = proxy._decide()
                proxy.log.append((self.command, self.path, outcome))
                if outcome == "dropped":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = self._body()
                if outcome == "503":
                    self.send_response(503, "Service Unavailable")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(_SLOWDOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(_SLOWDOWN)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Host"] = f"{proxy.up_host}:{proxy.up_port}"
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.up_host, proxy.up_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    upstream_length = resp.getheader("Content-Length")
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP and k.lower() not in ("server", "date"):
                            self.send_header(k, v)
                    if self.command == "HEAD":
                        self.send_header("Content-Length", upstream_length or "0")
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def _decide(self) -> str:
        with self._lock:
            if self._gone or time.monotonic() < self._drop_until:
                return "dropped"
            self._n += 1
            if self._fail_every and self._n % self._fail_every == 0:
                return "503"
            return "ok"

    def go_away(self) -> None:
        """Stop listening: new connections are refused, kept-alive ones are dropped, until come_back()."""
        with self._lock:
            self._gone = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def come_back(self) -> None:
        with self._lock:
            self._gone = False
        if self._server is None:
            self.start()

    def stop(self) -> None:
        self.go_away()


@pytest.fixture
def fault_proxy(moto_endpoint, monkeypatch, tmp_path, request):
    """A FaultProxy in front of moto, the environment pointing at it, and a fresh bucket (created directly)."""
    from eval_pipeline.lake import Lake

    proxy = FaultProxy(moto_endpoint).start()
    set_s3_env(monkeypatch, proxy.url, tmp_path, max_attempts=3, connect_timeout=1, read_timeout=5)
    bucket = bucket_name(request)
    create_bucket(moto_endpoint, bucket)
    proxy.lake = Lake(f"s3://{bucket}/lake")
    try:
        yield proxy
    finally:
        proxy.stop()


# -- a small task seeded into any lake (local or S3), shared by the storage, fault and bad-input tests ---------------
def toy_spec_dict(**overrides) -> dict:
    """The toy task (tests/toy.py) with drift off unless asked for: drift (Evidently) is the slowest step."""
    from .toy import TOY_SPEC

    data = {**TOY_SPEC, "drift": {"enabled": False}}
    data.update(overrides)
    return data


def write_spec(path, **overrides) -> str:
    import yaml

    path.write_text(yaml.safe_dump(toy_spec_dict(**overrides), sort_keys=False))
    return str(path)


def seed_toy(lake, *, n: int = 2000, champion: str | None = "1", candidates=("2",)) -> dict:
    """Land the toy data (two files) and register version 1 (champion) and candidate(s) 2 (joblib)."""
    from eval_pipeline.registry import Registry

    from .toy import fit_model, land, register_joblib, toy_frame

    frame = toy_frame(n)
    land(lake, frame)
    reg = Registry(lake)
    register_joblib(reg, "1", fit_model(frame))
    for i, v in enumerate(candidates):
        register_joblib(reg, v, fit_model(frame, c=0.1 * (i + 1)))
    if champion:
        reg.set_champion("toy_model", champion, reason="seed")
    return {"frame": frame, "registry": reg}


def lake_bytes(lake, prefix: str = "") -> dict[str, bytes]:
    """Every file under a lake prefix and its bytes (temp files excluded)."""
    return {f["rel"]: lake.read_bytes(f["rel"]) for f in lake.find(prefix)}
