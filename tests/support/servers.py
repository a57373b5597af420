"""PostgreSQL and Redis for the scale-out tests: the machine's servers, or private ones.

The machine's servers (``SHAKEN_TEST_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/test``; ``SHAKEN_TEST_REDIS``, default
``redis://127.0.0.1:6379/0``) may be used by other test runs at the same time, so each test gets
a schema of its own in PostgreSQL and a random key prefix in Redis, removed afterwards. A test
that stops its server gets a private one instead (:class:`PrivatePostgres`,
:class:`PrivateRedis`) on a free port, so the machine's servers keep running. Everything skips
with the reason when the server (or the program that would start one) is not there.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

POSTGRES_URL = os.environ.get("SHAKEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SHAKEN_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _pg_bin() -> Path:
    """``SHAKEN_TEST_PG_BIN``, else the newest ``/usr/lib/postgresql/N/bin`` (Debian's)."""
    configured = os.environ.get("SHAKEN_TEST_PG_BIN")
    if configured:
        return Path(configured)
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
    )
    return versions[-1] if versions else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_schema(url: str, schema: str) -> str:
    """``url`` with every statement in ``schema`` (libpq ``options=-csearch_path=...``)."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={schema}')}"


def postgres_or_skip(url: str = POSTGRES_URL) -> None:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL at {url}: {str(exc).strip().splitlines()[0]}")


@contextlib.contextmanager
def postgres_schema(url: str = POSTGRES_URL) -> Iterator[str]:
    """A fresh schema on ``url`` for one test; yields the URL that uses it, drops it after."""
    postgres_or_skip(url)
    import psycopg

    schema = f"shaken_test_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def redis_or_skip(url: str = REDIS_URL) -> None:
    redis = pytest.importorskip("redis", reason="redis (the Python client) is not installed")
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {url}: {exc}")
    finally:
        client.close()


@contextlib.contextmanager
def redis_prefix(url: str = REDIS_URL) -> Iterator[str]:
    """A random key prefix for one test; its keys are deleted after."""
    redis_or_skip(url)
    import redis

    prefix = f"shaken-test-{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL's programs refuse to run as root: run them as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


class PrivatePostgres:
    """A PostgreSQL of this test's own (``initdb`` in a temporary directory, ``pg_ctl``), on a
    free port, with trust authentication on loopback: it can be stopped and started."""

    def __init__(self) -> None:
        initdb = PG_BIN / "initdb"
        if not initdb.exists():
            pytest.skip(f"no {initdb} (set SHAKEN_TEST_PG_BIN)")
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        self.directory = Path(tempfile.mkdtemp(prefix="shaken-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.directory.chmod(0o755)
        subprocess.run(
            _as_postgres(
                [str(initdb), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.directory / "log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            ),
            check=False,
            capture_output=True,
        )

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _without_faketime() -> dict[str, str]:
    """This environment without libfaketime: redis-server hangs in its clock calls under it
    (the suite runs under ``faketime`` in CI); Redis keeps relative expiry times only, so the
    shifted clock of the tests does not need to reach it."""
    return {
        k: v
        for k, v in os.environ.items()
        if k != "LD_PRELOAD" and not k.startswith(("FAKETIME", "DONT_FAKE"))
    }


class PrivateRedis:
    """A ``redis-server`` of this test's own on a free port, nothing saved: stop and start it."""

    def __init__(self) -> None:
        self.program = shutil.which("redis-server")
        if self.program is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.program is not None
        self.process = subprocess.Popen(
            [
                self.program,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_without_faketime(),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def close(self) -> None:
        self.stop()
