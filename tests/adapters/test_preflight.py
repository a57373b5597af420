"""``shaken serve`` refuses what ``shaken config check`` refuses, before it binds anything.

Issue 17 item 14: ``serve`` once started with a private key of mode 0644 that ``config check``
refused. Both now run :func:`shaken.adapters.preflight.check_files`.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.toolkit.lab import Lab, LabSettings, init_lab


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    settings = LabSettings(
        sip_signing_port=_free_port(), sip_verification_port=_free_port(), rest_port=_free_port()
    )
    return init_lab(tmp_path / "lab", now=datetime.now(UTC), settings=settings)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_17_14_serve_refuses_a_key_config_check_refuses(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    lab.sp_key.chmod(0o644)
    assert main(["config", "check", str(lab.config)]) == 1
    check = capsys.readouterr().out
    assert "is readable by group or others; chmod 600 it" in check
    assert main(["serve", "--config", str(lab.config)]) == 2
    err = capsys.readouterr().err
    line = next(x for x in check.splitlines() if "chmod 600" in x)
    assert line in err  # the same problem, with its file, line and key
    assert _bindable(lab.settings.sip_signing_port)  # nothing was bound


def test_17_14_serve_refuses_an_unreadable_trust_anchor(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    (lab.directory / "ca" / "root.pem").write_text("not a certificate")
    assert main(["serve", "--config", str(lab.config)]) == 2
    err = capsys.readouterr().err
    assert "verification.trust_anchors" in err and "root.pem" in err
