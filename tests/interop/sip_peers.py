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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from shaken.toolkit.lab import Lab, LabSettings, init_lab

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
) -> ShakenServer:
    """Serve signing and verification over UDP on free ports; the lab chain pre-cached.

    ``extra`` is appended to the configuration (actions, profiles); ``cached`` are more
    (chain file, URL) pairs to import into the certificate cache first. The lab's own
    listeners (fixed ports) are left out.
    """
    sign, verify = free_port(), free_port()
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
    server = (
        "[server]\n"
        f'sip_sign = ["udp:127.0.0.1:{sign}"]\n'
        f'sip_verify = ["udp:127.0.0.1:{verify}"]\n'
        f'call_log = "{work / "calls.sqlite"}"\n'
        f"workers = {workers}\n\n"
    )
    text = text[:start] + server + text[end:]
    text = text.replace('cache_dir = "cache"', f'cache_dir = "{cache}"')
    config = lab.directory / f"serve-{sign}.toml"
    config.write_text(text + "\n" + extra, encoding="utf-8")
    log = work / "shaken.log"
    with log.open("w") as errors:
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
