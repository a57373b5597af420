"""Several ``shaken serve`` instances as one service, with real processes, PostgreSQL, Redis,
Kamailio's dispatcher and sipp.

* failover: Kamailio's dispatcher (``examples/kamailio-dispatcher``) in front of two
  instances of two workers each, under a steady sipp rate; one instance is killed with
  SIGKILL and brought back. Offered, answered and failed calls and the gap are reported, and
  every answered call is in the one PostgreSQL call log once.
* cold start: three instances, 300 concurrent verifications of one cold x5u spread across
  them: exactly one HTTPS fetch, every one verified.
* replay: the same PASSporT sent to two instances within the window: the second refused.
* no instance answers (all dead, overloaded or silent): the dispatcher fails closed, as the
  SBC example does without a verdict.
* faults: PostgreSQL stopped for 30 s under load (records spool, then replay: nothing lost,
  nothing doubled); Redis stopped (calls keep flowing, ``/readyz`` degraded, recovery after
  it is back). These stop private servers, never the machine's own.

The machine's PostgreSQL and Redis are used with a schema and a key prefix of this run's own
(``tests.support.servers``); every test skips, with the reason, when what it needs is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import http.server
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shaken.adapters.sip.client import SipResponse, build_invite, send_invite
from shaken.core.jws import load_private_key
from shaken.core.sign import sign_shaken
from shaken.toolkit.lab import Lab
from tests.support.servers import (
    REDIS_URL,
    PrivatePostgres,
    PrivateRedis,
    postgres_schema,
    redis_prefix,
)

from .sip_peers import (
    DEST,
    SIPP,
    ShakenServer,
    SippRun,
    free_port,
    make_lab,
    start_shaken,
)

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
pytest.importorskip("redis", reason="redis (the Python client) is not installed")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DISPATCHER = EXAMPLES / "kamailio-dispatcher" / "shaken-dispatcher.cfg"
KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
ORIG = "12025550123"


# ---------------------------------------------------------------------------------- helpers


def identity(lab: Lab, x5u: str | None = None, *, orig: str = ORIG) -> str:
    key = load_private_key(lab.sp_key.read_bytes())
    return sign_shaken(
        key=key, x5u=x5u or lab.x5u, orig=orig, dest=DEST, attest="A", now=datetime.now(UTC)
    )


async def verify_once(
    port: int, value: str, *, timeout: float = 30.0, far: int | None = None
) -> SipResponse:
    """One INVITE to ``port``; its Request-URI names ``far`` (the far end behind an SBC)."""

    def build(local: tuple[str, int]) -> bytes:
        return build_invite(
            request_uri=f"sip:{DEST}@127.0.0.1:{far or port}",
            from_value=f"<sip:{ORIG}@127.0.0.1>;tag={uuid.uuid4().hex[:8]}",
            to_value=f"<sip:{DEST}@127.0.0.1>",
            local=local,
            headers=[("Identity", value)],
            call_id=f"{uuid.uuid4()}@scale",
        )

    return await send_invite(("127.0.0.1", port), build, timeout=timeout)


def verified(answer: SipResponse) -> bool:
    pai = " ".join(answer.values("p-asserted-identity"))
    return answer.code == 302 and "verstat=TN-Validation-Passed" in pai


def processes_of(server: ShakenServer) -> list[int]:
    """The supervisor and its workers: what dies when an instance's machine dies."""
    pids = [server.process.pid]
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    with contextlib.suppress(OSError):
        pids += [int(p) for p in children.read_text().split()]
    return pids


def kill_instance(server: ShakenServer) -> None:
    for pid in processes_of(server):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.process.wait(timeout=30)


def instance_lines(name: str, work: Path, *, call_log: str, shared: str, prefix: str) -> str:
    return (
        f'call_log = "{call_log}"\n'
        f'call_log_spool = "{work / name / "spool.sqlite"}"\n'
        f'instance = "{name}"\n'
        f'shared_state = "{shared}"\n'
        f'shared_state_prefix = "{prefix}"\n'
    )


def pg_rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        return list(cursor.fetchall())


#: A caller at a steady rate: INVITE with Identity, then the far end's 200, ACK, BYE.
CALLER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="steady caller">
  <send retrans="500"><![CDATA[
      INVITE sip:{dest}@127.0.0.1:{far} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:{orig}@[local_ip]>;tag=[call_number]
      To: <sip:{dest}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{orig}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Identity: {identity}
      Content-Length: 0

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="{code}" rrs="true"/>
  <send><![CDATA[
      ACK {ack_uri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:{orig}@[local_ip]>;tag=[call_number]
      To: <sip:{dest}@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
{tail}</scenario>
"""
BYE = """  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:{orig}@[local_ip]>;tag=[call_number]
      To: <sip:{dest}@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="200"/>
"""
FAR_END = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="far end">
  <recv request="INVITE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]far[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

  ]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
</scenario>
"""


@dataclass
class Steady:
    """A sipp caller at a steady rate in the background; its counts are read once it ends."""

    process: subprocess.Popen[str]
    stats: Path
    messages: Path

    def wait(self, timeout: float) -> dict[str, int]:
        self.process.wait(timeout=timeout)
        with self.stats.open() as handle:
            rows = list(csv.reader(handle, delimiter=";"))
        header, last = rows[0], rows[-1]
        value = dict(zip(header, last, strict=False))
        return {
            "offered": int(value["OutgoingCall(C)"]),
            "answered": int(value["SuccessfulCall(C)"]),
            "failed": int(value["FailedCall(C)"]),
        }

    def answered_call_ids(self) -> set[str]:
        """Call-IDs of the calls sipp completed (the 200 to its BYE received)."""
        run = SippRun(0, self.messages.read_text(errors="replace"), "", "")
        found: set[str] = set()
        for message in run.logged("received", "SIP/2.0 200"):
            if "CSeq: 2 BYE" in message:
                for line in message.splitlines():
                    if line.lower().startswith("call-id:"):
                        found.add(line.split(":", 1)[1].strip())
        return found


def steady_caller(
    work: Path,
    target: str,
    value: str | list[str],
    *,
    rate: int,
    calls: int,
    code: int,
    far: int | None = None,
) -> Steady:
    """``value``: one Identity for every call, or one per call (sipp injects each token; the
    parameters after it are the same for all)."""
    assert SIPP is not None
    inject: list[str] = []
    if isinstance(value, list):
        tokens = work / "identities.csv"
        tokens.write_text("SEQUENTIAL\n" + "".join(v.split(";", 1)[0] + ";\n" for v in value))
        inject = ["-inf", str(tokens)]
        value = "[field0];" + value[0].split(";", 1)[1]
    tail = BYE.format(orig=ORIG, dest=DEST) if code == 200 else ""
    ack_uri = "[next_url]" if code == 200 else f"sip:{DEST}@{target}"
    scenario = work / f"caller-{code}.xml"
    scenario.write_text(
        CALLER.format(
            dest=DEST,
            far=far or 5060,
            orig=ORIG,
            identity=value,
            code=code,
            ack_uri=ack_uri,
            tail=tail,
        )
    )
    stats = work / f"caller-{code}.csv"
    messages = work / f"caller-{code}.messages"
    args = [SIPP, "-sf", str(scenario), "-m", str(calls), "-r", str(rate), "-nostdin", *inject]
    args += ["-trace_stat", "-stf", str(stats), "-fd", "1", "-trace_msg"]
    args += ["-message_file", str(messages), "-i", "127.0.0.1", "-p", str(free_port())]
    args += ["-timeout", f"{calls // rate + 90}s", "-recv_timeout", "8000", target]
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, text=True, cwd=work
    )
    return Steady(process, stats, messages)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def pg() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as value:
        yield value


needs_sipp = pytest.mark.skipif(SIPP is None, reason="needs sipp (Debian sip-tester)")


# --------------------------------------------------------------------------------- failover


@contextlib.contextmanager
def dispatcher(work: Path, defines: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    import shutil

    kamailio = shutil.which("kamailio")
    if kamailio is None or not KAMAILIO_MODULES.joinpath("dispatcher.so").exists():
        pytest.skip("needs kamailio 5.6 with its dispatcher module (Debian kamailio)")
    args = [kamailio, "-f", str(DISPATCHER), "-DD", "-E", "-P", str(work / "kamailio.pid")]
    args += ["-Y", str(work), "-w", str(work)]
    for name, value in defines.items():
        args += ["-A", f"{name}={value}"]
    log = work / "kamailio.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=DISPATCHER.parent
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def dispatcher_ready(port: int, value: str, far: int) -> bool:
    """One call through the carrier side, verified by an instance and answered by the far end
    (without a verdict it would be refused: NO_VERDICT_REJECT)."""
    try:
        answer = asyncio.run(verify_once(port, value, timeout=3, far=far))
    except TimeoutError:
        return False
    return answer.code == 200


@needs_sipp
def test_failover_through_kamailios_dispatcher(
    tmp_path: Path, pg: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = make_lab(tmp_path / "lab")
    work = tmp_path
    lines = {
        name: instance_lines(name, work, call_log=pg, shared=REDIS_URL, prefix=prefix)
        for name in ("a", "b")
    }
    a = start_shaken(lab, work / "a", workers=2, server_lines=lines["a"])
    b = start_shaken(lab, work / "b", workers=2, server_lines=lines["b"])
    servers = [a, b]
    ports = {"orig": free_port(), "term": free_port(), "far": free_port()}
    listing = work / "dispatcher.list"
    listing.write_text(
        f"1 sip:127.0.0.1:{a.sign}\n1 sip:127.0.0.1:{b.sign}\n"
        f"2 sip:127.0.0.1:{a.verify}\n2 sip:127.0.0.1:{b.verify}\n"
    )
    defines = {
        "ORIG_PORT": str(ports["orig"]),
        "TERM_PORT": str(ports["term"]),
        "CHILDREN": "2",
        "DS_LIST": f'"{listing}"',
        "NEXT_HOP": f'"sip:127.0.0.1:{ports["term"]}"',
        "SHAKEN_TIMEOUT": "1000",
        # A call no instance answered is refused, so that "answered" means "verified".
        "NO_VERDICT_REJECT": "503",
    }
    far_scenario = work / "far.xml"
    far_scenario.write_text(FAR_END)
    assert SIPP is not None
    far = subprocess.Popen(
        [SIPP, "-sf", str(far_scenario), "-nostdin", "-i", "127.0.0.1", "-p", str(ports["far"])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    try:
        with dispatcher(work, defines):
            wait_until(
                lambda: dispatcher_ready(ports["term"], identity(lab), ports["far"]),
                60,
                "the dispatcher to route to an instance",
            )
            rate, seconds = 10, 30
            value = identity(lab)
            time.sleep(1)
            started = time.time()
            caller = steady_caller(
                work,
                f"127.0.0.1:{ports['term']}",
                value,
                rate=rate,
                calls=rate * seconds,
                code=200,
                far=ports["far"],
            )
            time.sleep(8)
            killed_at = time.time()
            kill_instance(a)
            time.sleep(8)
            back_at = time.time()
            servers[0] = start_shaken(
                lab, work / "a", workers=2, ports=(a.sign, a.verify), server_lines=lines["a"]
            )
            counts = caller.wait(timeout=seconds + 120)
    finally:
        far.kill()
        far.wait()
        for server in servers:
            server.stop()
    answered_ids = caller.answered_call_ids()
    rows = pg_rows(
        pg,
        "SELECT call_id, instance, time FROM calls WHERE direction = 'verify'"
        " AND time >= %s ORDER BY time",
        started,
    )
    logged = [r[0] for r in rows]
    times = [r[2] for r in rows]
    gap = max((t2 - t1 for t1, t2 in itertools.pairwise(times)), default=0.0)
    after_back = {r[1] for r in rows if r[2] > back_at + 3}
    figures = {
        **counts,
        "gap_seconds": round(gap, 3),
        "records": len(logged),
        "answered_not_logged": len(caller.answered_call_ids() - set(logged)),
        "killed_at_s": round(killed_at - started, 1),
        "back_at_s": round(back_at - started, 1),
        "instances_after_return": sorted(after_back),
    }
    with capsys.disabled():
        print(f"\nfailover: {json.dumps(figures)}")
    assert counts["offered"] == rate * seconds
    assert counts["answered"] + counts["failed"] == counts["offered"]
    assert counts["answered"] >= counts["offered"] * 0.9, figures
    assert len(answered_ids) == counts["answered"]
    # Every answered call is in the one PostgreSQL call log, once; except what the killed
    # instance had answered and not yet committed: the stated loss window (two flush
    # intervals), so only calls started just before the kill.
    assert len(logged) == len(set(logged)), "a call recorded twice"
    lost = answered_ids - set(logged)
    for call_id in lost:
        number = int(call_id.split("-", 1)[0])  # sipp's [call_id]: "N-pid@host"
        started_after = (number - 1) / rate
        assert killed_at - started - 1.5 < started_after < killed_at - started + 0.5, (
            call_id,
            figures,
        )
    # The instance that came back takes calls again.
    assert "a" in after_back and "b" in after_back, figures


# ------------------------------------------------------------------------------- cold start


class _CountingRepository:
    """The lab's repository, counting requests per path and answering slowly, over HTTPS with
    the lab's TLS certificate on the lab's repository port."""

    def __init__(self, lab: Lab, port: int, delay: float) -> None:
        counts: dict[str, int] = {}
        lock = threading.Lock()
        chain = lab.sp_chain.read_bytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    counts[self.path] = counts.get(self.path, 0) + 1
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/pem-certificate-chain")
                self.send_header("Cache-Control", "max-age=86400")
                self.send_header("Content-Length", str(len(chain)))
                self.end_headers()
                self.wfile.write(chain)

            def log_message(self, *args: object) -> None:
                pass

        self.counts = counts
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls = lab.directory / "tls"
        context.load_cert_chain(tls / "server.pem", tls / "server.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def repository_port(lab: Lab) -> int:
    return int(lab.x5u.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def test_a_cold_x5u_is_fetched_once_by_three_instances(
    tmp_path: Path, pg: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = make_lab(tmp_path / "lab")
    port = repository_port(lab)
    repository = _CountingRepository(lab, port, delay=0.5)
    cold = f"https://127.0.0.1:{port}/cold-{uuid.uuid4().hex[:8]}.pem"
    servers = []
    try:
        for name in ("a", "b", "c"):
            lines = instance_lines(name, tmp_path, call_log=pg, shared=REDIS_URL, prefix=prefix)
            # 300 INVITEs arrive at once on a loaded machine: none is shed as too old, and a
            # slow Redis answer is waited for (past its timeout an instance fetches for itself,
            # which the fault tests cover; this one proves the single fetch).
            lines += "udp_max_age_ms = 10000\nshared_state_timeout_ms = 3000\n"
            servers.append(start_shaken(lab, tmp_path / name, server_lines=lines))
        value = identity(lab, cold)

        async def all_of_them() -> list[SipResponse]:
            return list(
                await asyncio.gather(
                    *(verify_once(servers[i % 3].verify, value) for i in range(300))
                )
            )

        answers = asyncio.run(all_of_them())
    finally:
        for server in servers:
            server.stop()
        repository.close()
    path = "/" + cold.rsplit("/", 1)[1]
    with capsys.disabled():
        print(f"\ncold start: {len(answers)} verifications, fetches {repository.counts}")
    codes = [(a.code, a.first("x-shaken-reason") or a.first("warning")) for a in answers]
    assert all(verified(a) for a in answers), {c: codes.count(c) for c in set(codes)}
    assert repository.counts[path] == 1  # (each instance fetches the CRLs itself)


# ----------------------------------------------------------------------------------- replay


def test_the_same_passport_at_two_instances_is_refused_at_the_second(
    tmp_path: Path, pg: str, prefix: str
) -> None:
    lab = make_lab(tmp_path / "lab")
    text = lab.config.read_text()
    lab.config.write_text(text.replace("max_iat_age = 60", "max_iat_age = 60\nreplay_check = true"))
    servers = []
    try:
        for name in ("a", "b"):
            lines = instance_lines(name, tmp_path, call_log=pg, shared=REDIS_URL, prefix=prefix)
            servers.append(start_shaken(lab, tmp_path / name, server_lines=lines))
        value = identity(lab)
        first = asyncio.run(verify_once(servers[0].verify, value))
        second = asyncio.run(verify_once(servers[1].verify, value))
        other = asyncio.run(verify_once(servers[1].verify, identity(lab)))  # a new signature
    finally:
        for server in servers:
            server.stop()
    assert verified(first)
    assert second.code == 438 and (second.first("x-shaken-reason") or "").startswith("replayed")
    assert verified(other)


# ----------------------------------------------------------------------------------- faults


def _readyz(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as answer:
        data: dict[str, Any] = json.loads(answer.read())
        return data


@needs_sipp
def test_postgresql_stopped_for_30_seconds_under_load_loses_and_doubles_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server_pg = PrivatePostgres()
    lab = make_lab(tmp_path / "lab")
    instance = None
    try:
        server_pg.start()
        rest = free_port(socket.SOCK_STREAM)
        lines = (
            f'call_log = "{server_pg.url}"\n'
            f'call_log_spool = "{tmp_path / "spool.sqlite"}"\n'
            "call_log_timeout = 1\n"
            f'rest = ["http:127.0.0.1:{rest}"]\n'
        )
        instance = start_shaken(lab, tmp_path / "a", workers=2, server_lines=lines)
        rate, seconds = 10, 45
        caller = steady_caller(
            tmp_path,
            f"127.0.0.1:{instance.verify}",
            identity(lab),
            rate=rate,
            calls=rate * seconds,
            code=302,
        )
        time.sleep(5)
        server_pg.stop()
        seen: list[dict[str, Any]] = []

        def degraded() -> bool:
            seen.append(_readyz(rest))
            return "degraded" in seen[-1]["checks"]["call_log"]["detail"]

        wait_until(degraded, 30, "readyz to say the call log is degraded")
        during = seen[-1]
        time.sleep(30)
        server_pg.start()
        counts = caller.wait(timeout=seconds + 120)

        def replayed() -> bool:
            query = "SELECT count(*) FROM calls WHERE direction = 'verify'"
            return bool(pg_rows(server_pg.url, query)[0][0] >= counts["answered"])

        wait_until(replayed, 60, "the spool to be replayed")
        instance.stop()
        instance = None
        rows = pg_rows(server_pg.url, "SELECT call_id FROM calls WHERE direction = 'verify'")
    finally:
        if instance is not None:
            instance.stop()
        server_pg.close()
    logged = [r[0] for r in rows]
    with capsys.disabled():
        print(f"\npostgresql stopped 30 s: {json.dumps(counts)}, records {len(logged)}")
    assert during["status"] == "degraded" and during["checks"]["call_log"]["ok"], during
    assert counts["answered"] == counts["offered"] == rate * seconds
    assert len(logged) == len(set(logged)) == counts["answered"]


@needs_sipp
def test_redis_stopped_calls_keep_flowing_readyz_degraded_then_recovered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis = PrivateRedis()
    lab = make_lab(tmp_path / "lab")
    # Every call asks Redis: the replay window is shared, and each call's PASSporT is its own.
    text = lab.config.read_text()
    lab.config.write_text(text.replace("max_iat_age = 60", "max_iat_age = 60\nreplay_check = true"))
    instance = None
    try:
        redis.start()
        rest = free_port(socket.SOCK_STREAM)
        lines = (
            f'shared_state = "{redis.url}"\n'
            "shared_state_timeout_ms = 100\n"
            f'rest = ["http:127.0.0.1:{rest}"]\n'
        )
        instance = start_shaken(lab, tmp_path / "a", workers=1, server_lines=lines)
        assert _readyz(rest)["status"] == "ready"
        rate, seconds = 10, 20
        caller = steady_caller(
            tmp_path,
            f"127.0.0.1:{instance.verify}",
            [identity(lab) for _ in range(rate * seconds)],
            rate=rate,
            calls=rate * seconds,
            code=302,
        )
        time.sleep(4)
        redis.stop()
        wait_until(lambda: _readyz(rest)["status"] == "degraded", 30, "readyz degraded")
        degraded = _readyz(rest)
        with urllib.request.urlopen(f"http://127.0.0.1:{rest}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        time.sleep(6)
        redis.start()
        wait_until(lambda: _readyz(rest)["status"] == "ready", 30, "readyz ready again")
        recovered = _readyz(rest)
        counts = caller.wait(timeout=seconds + 120)
    finally:
        if instance is not None:
            instance.stop()
        redis.close()
    with capsys.disabled():
        print(f"\nredis stopped: {json.dumps(counts)}")
    assert degraded["checks"]["shared_state"]["detail"].startswith("degraded")
    assert "shaken_shared_state_degraded 1.0" in metrics
    assert recovered["checks"]["shared_state"]["detail"].startswith("sharing")
    assert counts["answered"] == counts["offered"] == rate * seconds


@pytest.mark.parametrize("kind", ["stopped", "overloaded-503", "silent"])
@pytest.mark.parametrize("reject", ["0", "503"])
def test_no_instance_answers_fails_closed_through_the_dispatcher(
    kind: str, reject: str, tmp_path: Path
) -> None:
    """Every instance dead, overloaded or silent: after the dispatcher has tried each, a
    carrier call forging a verdict reaches the far end cleaned (no verstat, no X-Shaken-*, no
    display marks), or is refused with ``NO_VERDICT_REJECT``; a customer call goes on
    unsigned, without X-Shaken-*."""
    from .test_kamailio import (
        CLEAN_FROM,
        CLEAN_PAI,
        FORGER,
        _broken_shaken,
        _call,
        _far_end,
        _forged,
        _wait_answering,
    )

    broken = [_broken_shaken(kind) for _ in range(2)] if kind != "stopped" else []
    instances = [p.port for p in broken] or [free_port(), free_port()]
    listing = tmp_path / "dispatcher.list"
    listing.write_text("".join(f"{s} sip:127.0.0.1:{p}\n" for s in (1, 2) for p in instances))
    from_value, headers = _forged(FORGER)
    try:
        with _far_end() as far:
            ports = {"orig": free_port(), "term": free_port()}
            defines = {
                "ORIG_PORT": str(ports["orig"]),
                "TERM_PORT": str(ports["term"]),
                "CHILDREN": "1",
                "DS_LIST": f'"{listing}"',
                "NEXT_HOP": f'"sip:127.0.0.1:{far.port}"',
                "SHAKEN_TIMEOUT": "500",
                "NO_VERDICT_REJECT": reject,
            }
            with dispatcher(tmp_path, defines) as kamailio:
                for side in ("orig", "term"):
                    _wait_answering(kamailio, ports[side], tmp_path / "kamailio.log")
                answer = _call(ports["term"], far, from_value, headers, call_id=f"ds-{kind}")
                signed = _call(
                    ports["orig"],
                    far,
                    f"<sip:{ORIG}@127.0.0.1>;tag=c",
                    [("X-Shaken-Attest", "A")],
                    call_id=f"ds-sign-{kind}",
                )
                delivered = far.invites(f"ds-{kind}")
                [unsigned] = far.invites(f"ds-sign-{kind}")
    finally:
        for peer in broken:
            peer.close()
    log = (tmp_path / "kamailio.log").read_text()[-3000:]
    assert signed.code == 200, log
    assert [n for n in unsigned.fields if n.startswith("x-shaken-")] == []
    assert "identity" not in unsigned.fields
    if reject == "503":
        assert answer.code == 503 and delivered == [], log
        return
    assert answer.code == 200, log
    [call] = delivered
    assert call.fields["from"] == [CLEAN_FROM]
    assert call.fields["p-asserted-identity"] == CLEAN_PAI
    assert [n for n in call.fields if n.startswith("x-shaken-")] == []
    assert "verstat" not in call.uri + str(call.fields).lower()
