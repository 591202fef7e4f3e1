"""A real PostgreSQL server for the tests, started from Debian's binaries
(/usr/lib/postgresql/<version>/bin; tests/run.sh installs them), loopback TCP only.

`pg_server` (session): initdb into a fresh temp dir, start on 127.0.0.1 on a free port,
stop and remove at the end. Postgres refuses to run as root, so as root the cluster
belongs to the unprivileged `nobody` user (`runuser`). When no server can be started
the tests that need one skip, saying why.
`pg_url` (function): the server's URL with the store's tables emptied first.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

PG_USER = "xraylab"     # the database role (initdb -U)
OS_USER = "nobody"      # who runs the server when the tests run as root


def pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self):
        self.bindir = pg_bin()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; "
                               "tests/run.sh installs Debian's postgresql as root)")
        self.root = tempfile.mkdtemp(prefix="xraylab-pg-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self.url = f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"
        self.started = False

    def _run(self, *cmd: str, timeout: float = 120) -> None:
        argv = (["runuser", "-u", OS_USER, "--"] if self.as_root else []) + list(cmd)
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if res.returncode != 0:
            raise RuntimeError(f"{os.path.basename(cmd[0])} failed: {(res.stderr or res.stdout).strip()[-400:]}")

    def start(self) -> "PgServer":
        if self.as_root:
            shutil.chown(self.root, OS_USER)
        os.chmod(self.root, 0o700)
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", PG_USER, "-A", "trust",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        # TCP on loopback only, no unix socket; durability off: a throw-away test cluster.
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log, "-o", opts,
                  "-w", "-t", "60", "start")
        self.started = True
        return self

    def stop(self) -> None:
        try:
            if self.started:
                self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")
        finally:
            self.started = False
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need psycopg2-binary (requirements.txt)")
    server = PgServer() if pg_bin() else None
    if server is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
                    "run tests/run.sh as root to install Debian's postgresql")
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        server.stop()
        pytest.skip(f"could not start PostgreSQL: {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """The server's URL, with every run and group of earlier tests removed."""
    import sqlalchemy as sa
    eng = sa.create_engine(pg_server.url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with eng.begin() as conn:
            for table in ("runs", "groups", "class_experiments", "class_assignments", "run_stops",
                          "account_workspaces"):
                if sa.inspect(conn).has_table(table):
                    conn.execute(sa.text(f"DELETE FROM {table}"))
    finally:
        eng.dispose()
    return pg_server.url

