"""Running real SIP peers against ``shaken serve``: the server process, sipp runs, message logs.

Helpers shared by ``test_sipp.py`` and ``test_kamailio.py``; nothing here is a test. Every
port is picked free at run time and every file lives in the test's temporary directory.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from shaken.adapters.sip.codec import SipRequest, build_response, parse_request
from shaken.toolkit.lab import Lab, LabSettings, init_lab
from tests.support.config import without_tables

SIPP = shutil.which("sipp")
ORIG, DEST = "12025550123", "13035550000"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def make_lab(directory: Path) -> Lab:
    """A lab whose repository port nothing listens on (a cold fetch fails at once)."""
    return init_lab(
        directory,
        now=datetime.now(UTC),
        settings=LabSettings(repository_port=free_port(socket.SOCK_STREAM)),
    )


@dataclass
class ShakenServer:
    """``shaken serve`` on the lab's keys with its own listeners, in a subprocess."""

    process: subprocess.Popen[str]
    sign: int
    verify: int
    config: Path
    log: Path
    out: list[str] = field(default_factory=list)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_shaken(
    lab: Lab,
    work: Path,
    *,
    extra: str = "",
    workers: int = 1,
    cached: tuple[tuple[Path, str], ...] = (),
    ports: tuple[int, int] | None = None,
    server_lines: str = "",
) -> ShakenServer:
    """Serve signing and verification over UDP on free ports; the lab chain pre-cached.

    ``extra`` is appended to the configuration (actions, profiles); a table it has replaces
    the lab's table of that name (e.g. one of the lab's PASS / STOP / ALERT actions).
    ``cached`` are more (chain file, URL) pairs to import into the certificate cache first.
    The lab's own listeners (fixed ports) are left out. ``ports`` (sign, verify) brings an
    instance back on the ports it had; ``server_lines`` are more ``[server]`` keys (a
    ``call_log`` there replaces the SQLite file in ``work``).
    """
    sign, verify = ports if ports is not None else (free_port(), free_port())
    cache = work / "cache"
    for chain, url in ((lab.sp_chain, lab.x5u), *cached):
        command = [sys.executable, "-m", "shaken.adapters.cli", "cache", "import", str(chain)]
        subprocess.run(
            [*command, "--url", url, "--lab", "--cache-dir", str(cache)],
            check=True,
            capture_output=True,
        )
    text = lab.config.read_text(encoding="utf-8")
    start, end = text.index("[server]\n"), text.index("[repository]")
    call_log = "" if "call_log" in server_lines else f'call_log = "{work / "calls.sqlite"}"\n'
    server = (
        "[server]\n"
        f'sip_sign = ["udp:127.0.0.1:{sign}"]\n'
        f'sip_verify = ["udp:127.0.0.1:{verify}"]\n'
        f"{call_log}"
        f"workers = {workers}\n"
        # A test machine is shared and loaded: the interop tests check answers, not
        # overload shedding (its own tests do), so a request may wait its turn for 2 s.
        f"{'' if 'udp_max_age_ms' in server_lines else 'udp_max_age_ms = 2000'}\n"
        f"{server_lines}\n"
    )
    text = text[:start] + server + text[end:]
    text = text.replace('cache_dir = "cache"', f'cache_dir = "{cache}"')
    tables = {line.strip() for line in extra.splitlines() if line.startswith("[")}
    text = without_tables(text, tables.__contains__)
    config = lab.directory / f"serve-{sign}.toml"
    config.write_text(text + "\n" + extra, encoding="utf-8")
    log = work / f"shaken-{sign}.log"
    with log.open("a") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "shaken.adapters.cli", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    served = ShakenServer(process, sign, verify, config, log)
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        served.out.append(line)
        if line.startswith("ready"):
            return served
    served.stop()
    raise AssertionError(f"shaken serve did not start: {served.out} {log.read_text()}")


@dataclass
class SippRun:
    returncode: int
    messages: str
    errors: str
    screen: str

    def logged(self, direction: str, first_line: str = "") -> list[str]:
        """Messages sipp logged as ``sent`` or ``received`` whose first line starts so."""
        out = []
        for block in re.split(r"^-{20,}.*$", self.messages, flags=re.M):
            lines = block.strip().splitlines()
            if not lines or f"message {direction}" not in lines[0]:
                continue
            message = "\n".join(lines[1:]).strip()
            if message.startswith(first_line):
                out.append(message)
        return out


def sipp(
    scenario: Path,
    target: str,
    work: Path,
    *,
    calls: int,
    rate: int = 20,
    inf: Path | None = None,
    server: bool = False,
    port: int | None = None,
    timeout: int = 60,
) -> SippRun:
    """One sipp run in the foreground; its message and error logs are read back."""
    assert SIPP is not None
    name = scenario.stem + ("-uas" if server else "")
    messages, errors = work / f"{name}.messages", work / f"{name}.errors"
    args = [SIPP, "-sf", str(scenario), "-m", str(calls), "-nostdin", "-trace_msg"]
    args += ["-message_file", str(messages), "-trace_err", "-error_file", str(errors)]
    args += ["-timeout", f"{timeout}s", "-recv_timeout", "10000", "-i", "127.0.0.1"]
    # sipp takes 5060 when it is free: never collide with a test that listens there.
    args += ["-p", str(port if port is not None else free_port())]
    if inf is not None:
        args += ["-inf", str(inf)]
    if not server:
        args += ["-r", str(rate), target]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout + 30, cwd=work, check=False
    )
    return SippRun(
        done.returncode,
        messages.read_text(errors="replace") if messages.exists() else "",
        errors.read_text(errors="replace") if errors.exists() else "",
        done.stdout[-3000:],
    )


def start_sipp_server(
    scenario: Path, work: Path, *, calls: int, port: int
) -> subprocess.Popen[str]:
    """A sipp UAS in the background (its logs are read once it exits)."""
    assert SIPP is not None
    name = scenario.stem
    args = [SIPP, "-sf", str(scenario), "-m", str(calls), "-nostdin", "-trace_msg"]
    args += ["-message_file", str(work / f"{name}.messages"), "-trace_err"]
    args += ["-error_file", str(work / f"{name}.errors"), "-i", "127.0.0.1", "-p", str(port)]
    args += ["-timeout", "90s"]
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work
    )


def headers_of(message: str) -> dict[str, list[str]]:
    """Header values by lower-case name, from a logged message."""
    out: dict[str, list[str]] = {}
    for line in message.splitlines()[1:]:
        name, colon, value = line.partition(":")
        if colon and name.strip() and " " not in name.strip():
            out.setdefault(name.strip().lower(), []).append(value.strip())
    return out


#: What a :class:`UdpPeer` answers a request: (code, phrase, extra headers), or None for silence.
Answer = tuple[int, str, list[tuple[str, str]]] | None


class UdpPeer:
    """A SIP peer on a free UDP port, in a thread: it records every request and answers each
    with what ``answer`` returns (nothing for ACK).

    It stands in for what sipp cannot easily be told to be: a far end that records exactly
    what reached it, or a broken redirect server (a 500, a 503, a 302 without its headers,
    silence). Responses copy the request's Via, From, To (tagged), Call-ID and CSeq.
    """

    def __init__(self, answer: Callable[[SipRequest], Answer]) -> None:
        self.answer = answer
        self.requests: list[SipRequest] = []
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port: int = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self._socket.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            request = parse_request(data)
            if request.is_response or not request.method:
                continue
            with self._lock:
                self.requests.append(request)
            if request.method == "ACK":
                continue
            answer = self.answer(request)
            if answer is not None:
                code, phrase, headers = answer
                self._socket.sendto(build_response(request, code, phrase, headers), source)

    def invites(self, call_id: str) -> list[SipRequest]:
        """The INVITEs of ``call_id`` that reached this peer, one per branch (retransmissions
        of a branch are left out)."""
        seen: dict[str, SipRequest] = {}
        with self._lock:
            for request in self.requests:
                if request.method == "INVITE" and request.first("call-id") == call_id:
                    branch = request.top_via.branch if request.top_via is not None else None
                    seen.setdefault(branch or "", request)
        return list(seen.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> UdpPeer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
