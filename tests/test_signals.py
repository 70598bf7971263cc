"""`./run ui` stops cleanly on SIGTERM or SIGINT however it was started (issue 10, item 8).

A background job (`cmd &` in a script, nohup from a script) starts with SIGINT ignored; Python then installs no
KeyboardInterrupt handler and `dagster dev` maps SIGTERM onto that ignored SIGINT, so it used to survive both and
leave its webserver, daemon and code server behind. Here `./run ui` is started the way such a shell starts it
(SIGINT set to SIG_IGN before exec), with a temporary DAGSTER_HOME and lake and a free port; the signal goes to the
process `./run` became, as a process manager would send it. Real `dagster dev` (≈ 15 s to come up): marked daemon.
"""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.daemon


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ignore_sigint_like_a_background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _alive(pids) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def _ours(pgid: int, home: str) -> set[int]:
    """Every live process of the started group, or whose environment points at this test's DAGSTER_HOME."""
    pids = set()
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid or proc.environ().get("DAGSTER_HOME") == home:
                pids.add(proc.pid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return pids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_ui_stops_on_signal_even_with_sigint_ignored(tmp_path, sig):
    port = _free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "PORT": str(port), "DAGSTER_HOME": str(home), "EVAL_LAKE_ROOT": str(tmp_path / "lake")}
    log = (tmp_path / "ui.log").open("wb")
    proc = subprocess.Popen([str(ROOT / "run"), "ui"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=_ignore_sigint_like_a_background_job,
                            start_new_session=True)  # own process group: what is left over is easy to find
    pgid = proc.pid
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"./run ui exited early:\n{(tmp_path / 'ui.log').read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dagster dev did not answer /server_info within 120 s"
            time.sleep(0.5)
        seen = {proc.pid} | {c.pid for c in psutil.Process(proc.pid).children(recursive=True)} | _ours(pgid, str(home))
        cmdlines = " ".join(" ".join(p.cmdline()) for p in _alive(seen))
        assert "dagster_webserver" in cmdlines and "dagster._daemon" in cmdlines and "code-server" in cmdlines

        start = time.monotonic()
        proc.send_signal(sig)  # to `./run ui` itself (it exec'd into dagster dev), not to its group
        proc.wait(timeout=20)
        waited = time.monotonic() - start
        # dagster dev stops its webserver and daemon before it exits; the code server follows within seconds.
        left = _alive(seen | _ours(pgid, str(home)))
        while left and time.monotonic() - start < 20:
            time.sleep(0.25)
            left = _alive(seen | _ours(pgid, str(home)))
        assert not left, f"left running {time.monotonic() - start:.1f} s after {sig.name}: " + \
            "; ".join(f"{p.pid} {' '.join(p.cmdline()[:4])}" for p in left)
        assert waited < 20
        text = (tmp_path / "ui.log").read_text()
        assert "Shutting down Dagster services" in text, text[-3000:]
    finally:
        for p in _alive(seen | {proc.pid}):
            try:
                p.kill()  # only the processes this test started
            except psutil.Error:
                pass
        proc.wait(timeout=10) if proc.poll() is None else None
        log.close()
