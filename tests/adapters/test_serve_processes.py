"""``shaken serve`` as real processes: one service per port, workers that die with their
supervisor, reloads that never close a listener, signals during start-up, the call log under
odd records and a deleted file (issue 9 item 6; issue 17 items 2, 10, 11, 12).

Every test runs ``python -m shaken.adapters.cli serve`` on a lab configuration with ephemeral
ports and talks to it over loopback sockets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.sip.client import build_invite, send_invite
from shaken.toolkit.lab import Lab, LabSettings, init_lab

ORIG = "12025550123"
DEST = "13035550000"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_sip_port() -> int:
    """A port free for UDP and TCP alike (SIP listens on both)."""
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    # Nothing listens on the repository port: a cold certificate fetch fails at once.
    directory = tmp_path_factory.mktemp("serve") / "lab"
    return init_lab(
        directory, now=datetime.now(UTC), settings=LabSettings(repository_port=free_port())
    )


def lab_config(lab: Lab, server: str) -> Path:
    """The lab's configuration with its ``[server]`` table replaced by ``server``, in the
    lab's directory (its paths are relative to it)."""
    path = lab.directory / f"t-{uuid.uuid4().hex[:12]}.toml"
    text = lab.config.read_text(encoding="utf-8")
    start, end = text.index("[server]\n"), text.index("[repository]")
    path.write_text(text[:start] + "[server]\n" + server + "\n\n" + text[end:], encoding="utf-8")
    return path


def wait_until(condition: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


#: ``shaken`` under a descriptor limit: ``python -c LIMITED N serve ...``.
LIMITED = (
    "import resource, runpy, sys\n"
    "n = int(sys.argv.pop(1))\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))\n"
    "sys.argv[0] = 'shaken'\n"
    "runpy.run_module('shaken.adapters.cli', run_name='__main__')\n"
)


class Serve:
    """One ``shaken serve`` process: its output lines, its log file, its workers."""

    def __init__(
        self,
        config: Path,
        log: Path,
        *,
        descriptors: int | None = None,
    ) -> None:
        """``descriptors``: run it under ``ulimit -n`` (soft and hard) of that many."""
        self.log = log
        self.lines: list[str] = []
        self._errors = log.open("w")
        command = [sys.executable, "-m", "shaken.adapters.cli", "serve", "--config", str(config)]
        if descriptors is not None:
            command[1:3] = ["-c", LIMITED, str(descriptors)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._errors, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def ready(self, timeout: float = 90.0) -> bool:
        """True once it printed ``ready``; False if it exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line.startswith("ready") for line in self.lines):
                return True
            if self.process.poll() is not None:
                self._reader.join(5)
                return any(line.startswith("ready") for line in self.lines)
            time.sleep(0.05)
        raise AssertionError(f"neither ready nor exited: {self.lines} {self.errors()}")

    def errors(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> list[int]:
        return children_of(self.process.pid)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._errors.close()
        return self.process.returncode


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[list[Serve]]:
    """Serve processes a test starts; stopped (or killed, with their workers) afterwards."""
    started: list[Serve] = []
    yield started
    for served in started:
        workers = served.workers()
        served.stop()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def start(serving: list[Serve], config: Path, log: Path, **options: object) -> Serve:
    served = Serve(config, log, **options)  # type: ignore[arg-type]
    serving.append(served)
    return served


def invite_bytes(local: tuple[str, int], call_id: str = "") -> bytes:
    return build_invite(
        request_uri=f"sip:{DEST}@127.0.0.1",
        from_value=f"<sip:{ORIG}@127.0.0.1>;tag=t1",
        to_value=f"<sip:{DEST}@127.0.0.1>",
        local=local,
        call_id=call_id or None,
    )


def sip_request(port: int, *, call_id: str = ""):  # type: ignore[no-untyped-def]
    """One INVITE over UDP to 127.0.0.1:``port``; its final response."""
    build = lambda local: invite_bytes(local, call_id)  # noqa: E731
    return asyncio.run(send_invite(("127.0.0.1", port), build, timeout=20.0))


def raw_sip_code(port: int, message: Callable[[tuple[str, int]], bytes]) -> int:
    """Send the bytes ``message(local)`` over UDP once and read the status of the answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(20)
        sock.sendto(message(sock.getsockname()), ("127.0.0.1", port))
        reply = sock.recv(65535)
    return int(reply.split(b" ", 2)[1])


def get(port: int, path: str, timeout: float = 10.0) -> int:
    """The status of GET ``path``; 0 when the connection is refused."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (ConnectionRefusedError, ConnectionResetError):
        return 0
    except urllib.error.URLError as error:
        if isinstance(error.reason, (ConnectionRefusedError, ConnectionResetError)):
            return 0
        raise


def calls(path: Path) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "shaken.adapters.cli", "calls", "--db", str(path), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [json.loads(line) for line in done.stdout.splitlines()] if done.returncode == 0 else []


# ------------------------------------------------------------ issue 9 item 6: one per port


@pytest.mark.parametrize("kind", ["udp", "tcp", "rest"])
def test_9_6_a_second_serve_on_the_same_port_fails_naming_it(
    lab: Lab, tmp_path: Path, serving: list[Serve], kind: str
) -> None:
    port = free_sip_port()
    listener = {
        "udp": f'sip_verify = ["udp:127.0.0.1:{port}"]',
        "tcp": f'sip_verify = ["tcp:127.0.0.1:{port}"]',
        "rest": f'rest = ["http:127.0.0.1:{port}"]',
    }[kind]
    config = lab_config(lab, f"{listener}\nworkers = 2")
    first = start(serving, config, tmp_path / "first.log")
    assert first.ready(), first.errors()
    second = start(serving, config, tmp_path / "second.log")
    assert second.ready() is False, "a second instance started on the same port"
    assert second.process.wait(30) == 2
    spec = {"udp": "udp", "tcp": "tcp", "rest": "http"}[kind] + f":127.0.0.1:{port}"
    assert f"cannot listen on {spec}: Address already in use" in second.errors()
    assert first.process.poll() is None  # the first one still serves
    if kind == "udp":
        assert sip_request(port).code == 302
    if kind == "rest":
        assert get(port, "/healthz") == 200


# --------------------------------------------- issue 17 item 10: workers die with the parent


def test_17_10_workers_die_with_a_killed_supervisor(
    lab: Lab, tmp_path: Path, serving: list[Serve]
) -> None:
    sip, rest = free_sip_port(), free_port()
    config = lab_config(
        lab,
        f'sip_verify = ["udp:127.0.0.1:{sip}"]\nrest = ["http:127.0.0.1:{rest}"]\nworkers = 2',
    )
    first = start(serving, config, tmp_path / "first.log")
    assert first.ready(), first.errors()
    workers = first.workers()
    assert len(workers) == 2
    first.process.kill()
    first.process.wait()
    wait_until(lambda: not any(alive(pid) for pid in workers), 30, "the workers to exit")
    again = start(serving, config, tmp_path / "again.log")
    assert again.ready(), again.errors()
    assert sip_request(sip).code == 302 and get(rest, "/healthz") == 200


# ------------------------------------------------ issue 17 item 11: reloads and start-up


def test_17_11_sighup_never_closes_the_rest_listener(
    lab: Lab, tmp_path: Path, serving: list[Serve]
) -> None:
    """50 SIGHUPs while /healthz is polled: no poll is refused, and the workers reload."""
    rest = free_port()
    config = lab_config(lab, f'rest = ["http:127.0.0.1:{rest}"]\nworkers = 2')
    served = start(serving, config, tmp_path / "serve.log")
    assert served.ready(), served.errors()
    statuses: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            statuses.append(get(rest, "/healthz"))
            time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for _ in range(50):
            served.process.send_signal(signal.SIGHUP)
            time.sleep(0.02)
        wait_until(lambda: served.errors().count("reloaded") >= 2, 60, "reloads")
        time.sleep(0.5)
    finally:
        done.set()
        poller.join()
    refused = statuses.count(0)
    assert statuses and refused == 0, f"{refused} of {len(statuses)} polls refused"
    assert set(statuses) == {200}
    assert served.process.poll() is None and len(served.workers()) == 2


def test_17_11_a_sighup_while_a_worker_starts_waits_for_its_handler(
    lab: Lab, tmp_path: Path, serving: list[Serve]
) -> None:
    """A worker restarted after ``kill -9`` gets SIGHUPs from its first instant: it must not
    die of them (SIGHUP's default action) but reload once its handler is in place."""
    sip = free_sip_port()
    config = lab_config(lab, f'sip_verify = ["udp:127.0.0.1:{sip}"]\nworkers = 2')
    served = start(serving, config, tmp_path / "serve.log")
    assert served.ready(), served.errors()
    for _round in range(3):
        victim = served.workers()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:  # the restart comes within about a second
            served.process.send_signal(signal.SIGHUP)
            time.sleep(0.01)
        wait_until(lambda: len(served.workers()) == 2, 30, "two workers")
    log = served.errors()
    assert "exited with -9" in log  # our kills
    assert f"exited with -{int(signal.SIGHUP)};" not in log, log
    assert served.process.poll() is None
    assert sip_request(sip).code == 302


# ---------------------------------------------------------- issue 17 items 2 and 12: the log


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def test_17_2_non_utf8_header_bytes_keep_the_writer_alive_in_serve(
    lab: Lab, tmp_path: Path, serving: list[Serve]
) -> None:
    """An Identity whose x5u holds byte 0xFF (its ``info`` on the wire, ``\\udcff`` in the
    JSON: they match, so the value reaches the decision) is logged, and so is every later call
    (the Call-ID grammar keeps such bytes out of Call-IDs; header values still carry them)."""
    sip, db = free_sip_port(), tmp_path / "calls.sqlite"
    config = lab_config(
        lab,
        f'sip_verify = ["udp:127.0.0.1:{sip}"]\ncall_log = "{db}"\nworkers = 1',
    )
    served = start(serving, config, tmp_path / "serve.log")
    assert served.ready(), served.errors()
    url = b"https://127.0.0.1/odd-\xff.pem"
    header = (
        b'{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"https://127.0.0.1/odd-\\udcff.pem"}'
    )
    claims = b'{"attest":"A","dest":{"tn":["13035550000"]},"iat":1,"orig":{"tn":"12025550123"}}'
    identity = b".".join([_b64(header), _b64(claims), _b64(b"x" * 64)])
    identity += b";info=<" + url + b">;alg=ES256;ppt=shaken"

    def odd(local: tuple[str, int]) -> bytes:
        message = invite_bytes(local, "odd-call")
        return message.replace(
            b"Content-Length: 0", b"Identity: " + identity + b"\r\nContent-Length: 0"
        )

    assert raw_sip_code(sip, odd) >= 200
    assert sip_request(sip, call_id="plain-call").code == 302
    wait_until(lambda: len(calls(db)) == 2, 30, "both calls in the log")
    rows = calls(db)
    assert [row["call_id"] for row in rows] == ["odd-call", "plain-call"]
    assert rows[0]["x5u"] == "https://127.0.0.1/odd-\udcff.pem"
    shown = subprocess.run(
        [sys.executable, "-m", "shaken.adapters.cli", "calls", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "call-id=odd-call" in shown
    assert "Traceback" not in served.errors()


def test_17_12_a_deleted_call_log_is_reopened_and_readyz_tells(
    lab: Lab, tmp_path: Path, serving: list[Serve]
) -> None:
    sip, rest, db = free_sip_port(), free_port(), tmp_path / "calls.sqlite"
    config = lab_config(
        lab,
        f'sip_verify = ["udp:127.0.0.1:{sip}"]\nrest = ["http:127.0.0.1:{rest}"]\n'
        f'call_log = "{db}"\nworkers = 2',
    )
    served = start(serving, config, tmp_path / "serve.log")
    assert served.ready(), served.errors()
    assert get(rest, "/readyz") == 200
    assert sip_request(sip, call_id="before").code == 302
    wait_until(lambda: len(calls(db)) == 1, 30, "the first call in the log")
    db.unlink()
    for n in range(6):  # both workers answer some of them
        assert sip_request(sip, call_id=f"after-{n}").code == 302
    wait_until(
        lambda: sorted(str(r["call_id"]) for r in calls(db)) == [f"after-{n}" for n in range(6)],
        30,
        "the later calls in a new file",
    )
    wait_until(lambda: get(rest, "/readyz") == 200, 30, "ready again")
    assert "opened again" in served.errors()


def test_17_9_shed_counts_reach_the_metrics_of_shaken_serve(
    lab: Lab, tmp_path: Path, serving: list[Serve]
) -> None:
    """The SIP overload counters are on the same ``/metrics`` as REST's, in a real server."""
    sip, rest = free_sip_port(), free_port()
    config = lab_config(
        lab, f'sip_verify = ["udp:127.0.0.1:{sip}"]\nrest = ["http:127.0.0.1:{rest}"]'
    )
    served = start(serving, config, tmp_path / "serve.log")
    assert served.ready(), served.errors()
    assert sip_request(sip, call_id="metrics").code == 302
    with urllib.request.urlopen(f"http://127.0.0.1:{rest}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    for name in ("udp_shed_503", "udp_shed_dropped", "udp_kernel_drops", "overload_503"):
        assert f"shaken_sip_{name}_total " in text, name
