"""``examples/systemd/shaken.service``: its command reports readiness as ``Type=notify`` wants.

The test reads the unit, runs its ``ExecStart`` command (with the installed ``shaken`` and a
lab's configuration in place of ``/etc/shaken``) with ``NOTIFY_SOCKET`` pointing at a socket
it listens on, and reads ``READY=1`` once the servers answer; then ``ExecReload``'s SIGHUP
keeps it serving and SIGTERM stops it cleanly. ``systemd-analyze verify`` checks the unit's
syntax where it is installed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.systemd import notify
from shaken.toolkit.lab import LabSettings, init_lab

UNIT = Path(__file__).resolve().parents[2] / "examples" / "systemd" / "shaken.service"


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _service() -> dict[str, list[str]]:
    """The unit's [Service] section: each key's values in order (Environment repeats)."""
    section: dict[str, list[str]] = {}
    current = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line
            continue
        if current == "[Service]":
            key, _, value = line.partition("=")
            section.setdefault(key, []).append(value)
    return section


def test_the_unit_asks_for_what_a_hardened_notify_service_needs() -> None:
    service = _service()
    assert service["Type"] == ["notify"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["StateDirectory"] == ["shaken"]
    assert service["User"] == ["shaken"]
    # Binding 5060 needs this one capability, and nothing more is kept.
    assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    shaken = shutil.which("shaken") or str(Path(sys.executable).with_name("shaken"))
    unit = tmp_path / "shaken.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/shaken", shaken))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_notify_does_nothing_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def _notification(listener: socket.socket, process: subprocess.Popen[str], within: int) -> str:
    """The first sd_notify message, or a failure that says why none came (the server's own
    words, when it stopped)."""
    for _ in range(within):
        try:
            return listener.recv(4096).decode()
        except TimeoutError:
            if process.poll() is not None:
                _, stderr = process.communicate()
                pytest.fail(f"serve exited with {process.returncode} before READY=1:\n{stderr}")
    pytest.fail(f"serve sent no READY=1 within {within} s")


def test_exec_start_reports_ready_reloads_and_stops(tmp_path: Path) -> None:
    settings = LabSettings(
        repository_port=_free_port(),
        sip_signing_port=_free_port(socket.SOCK_DGRAM),
        sip_verification_port=_free_port(socket.SOCK_DGRAM),
        rest_port=_free_port(),
    )
    lab = init_lab(tmp_path / "lab", now=datetime.now(UTC), settings=settings)
    state = tmp_path / "state"
    state.mkdir()
    service = _service()
    [exec_start] = service["ExecStart"]
    command = shlex.split(exec_start.replace("/etc/shaken/shaken.toml", str(lab.config)))
    assert command[0] == "/usr/bin/shaken"
    command = [sys.executable, "-m", "shaken.adapters.cli", *command[1:]]
    environment = dict(os.environ)
    for assignment in service["Environment"]:
        key, _, value = assignment.partition("=")
        environment[key] = value.replace("/var/lib/shaken", str(state)).replace(
            "/etc/shaken", str(tmp_path / "etc")
        )
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    listener.bind(address)
    listener.settimeout(1)
    environment["NOTIFY_SOCKET"] = address
    process = subprocess.Popen(
        command,
        cwd=state,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        message = _notification(listener, process, within=90)
        states = dict(line.split("=", 1) for line in message.splitlines())
        assert states["READY"] == "1"
        assert states["MAINPID"] == str(process.pid)
        url = f"http://127.0.0.1:{settings.rest_port}/healthz"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.status == 200  # READY=1 means answering
        process.send_signal(signal.SIGHUP)  # what ExecReload sends
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.status == 200
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        # TimeoutStopSec (15 s) is what systemd allows; a loaded test machine gets more.
        assert process.wait(timeout=max(60, int(service["TimeoutStopSec"][0]))) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        listener.close()
