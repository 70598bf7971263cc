"""A throwaway PostgreSQL cluster for tests (Debian's ``postgresql`` server binaries, no system cluster needed).

``initdb`` into a temporary folder (as the ``postgres`` user when the tests run as root: initdb refuses root),
password authentication (scram-sha-256), ``pg_ctl`` on 127.0.0.1 and a free port, ≈ 1-2 s; stopped with
``-m immediate`` and removed afterwards. Only loopback, ever.

    from .pg_util import INITDB, SKIP_REASON, pg_cluster
    pytestmark = pytest.mark.skipif(not INITDB, reason=SKIP_REASON)

    with pg_cluster(password, databases=["dagster"]) as pg:   # {"port", "user", "password", "host"}
        ...
"""

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .s3_util import free_port

INITDB = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
SKIP_REASON = ("PostgreSQL server binaries not installed (apt-get install -y postgresql); "
               "the SQLite default is covered by every other test")
USER = "dagster"


def _as_postgres(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:  # initdb refuses to run as root
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60, **kw)


@contextlib.contextmanager
def pg_cluster(password: str, databases=("dagster",), user: str = USER):
    """Start a cluster whose superuser ``user`` has ``password``, create ``databases``, yield its address."""
    bindir = Path(INITDB[-1]).parent
    work = Path(tempfile.mkdtemp(prefix="eval-pg-"))  # not under pytest's 0700 tmp dir: postgres must read it
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    pwfile = work / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(work, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")
    port = free_port()
    try:
        _as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=scram-sha-256",
                      f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"])
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(work / "log"), "-w", "-t", "30",
                      "-o", f"-h 127.0.0.1 -p {port} -k {sock} -F", "start"])
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres")
        conn.autocommit = True
        for db in databases:
            conn.cursor().execute(f'CREATE DATABASE "{db}"')
        conn.close()
        yield {"host": "127.0.0.1", "port": port, "user": user, "password": password}
    finally:
        subprocess.run((["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) +
                       [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)
