"""Suite-wide rules: tests of tools that read the real clock step aside under a shifted clock.

CI runs the suite twice: as is, and under ``faketime '+400 days'`` to prove that nothing depends
on today's date. libfaketime shifts the clock of every program that asks libc for the time,
which covers this project, OpenSSL, sipp and Kamailio; a Go program such as secsipidx reads the
clock through the kernel's vDSO itself and keeps the real time. A test that compares our dates
with such a tool is marked ``real_clock("why")`` and is skipped, with that reason, when the
clock is shifted.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "FAKETIME" not in os.environ:
        return
    for item in items:
        marker = item.get_closest_marker("real_clock")
        if marker is not None:
            why = marker.args[0] if marker.args else "a third-party tool reads the real clock"
            item.add_marker(pytest.mark.skip(reason=f"under faketime: {why}"))


# ------------------------------------------------------------------------ no secret in logs
#
# Every log line the suite writes, in-process (captured logging and stderr of every test) or
# by the servers it starts (the *.log files under the test directories), is read at the end
# of the session for the secrets the tests made: REST API keys, STI-PA passwords and private
# keys (each lab and CA writes them under the session's temporary directory). One found
# fails the session, naming the file or test and the kind of secret, never the secret.

_CAPTURED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for title, text in report.sections:
        if title.startswith(("Captured log", "Captured stderr")) and text:
            _CAPTURED.append((f"{report.nodeid} ({title.lower()})", text))


def _secrets(base: Path) -> dict[str, str]:
    """secret -> what kind it is, found in the files the tests wrote under ``base``."""
    found: dict[str, str] = {}
    for path in base.rglob("rest-api-key"):
        with contextlib.suppress(OSError):
            value = path.read_text().strip()
            if len(value) >= 16:
                found[value] = "a REST API key"
    for path in base.rglob("sti-pa.toml"):
        with contextlib.suppress(OSError, ValueError):
            password = tomllib.loads(path.read_text()).get("password")
            if isinstance(password, str) and len(password) >= 8:
                found[password] = "an STI-PA password"
    for path in base.rglob("*.key"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = path.read_text()
            if "PRIVATE KEY" in text:
                body = [line for line in text.splitlines() if line and "-----" not in line]
                if body and len(body[0]) >= 40:
                    found[body[0]] = "a private key"
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller reads everything once
    base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    secrets = _secrets(base)
    if not secrets:
        return
    texts = list(_CAPTURED)
    for path in base.rglob("*.log"):
        with contextlib.suppress(OSError):
            texts.append((str(path), path.read_text(errors="replace")))
    problems = sorted(
        {
            f"{where}: {kind}"
            for where, text in texts
            for secret, kind in secrets.items()
            if secret in text
        }
    )
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for problem in problems:
            line = f"SECRET IN A LOG LINE: {problem}"
            if reporter is not None:
                reporter.write_line(line, red=True)
            else:
                print(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def anyio_backend() -> str:
    """``pytest.mark.anyio`` tests run on asyncio, the loop the servers use: anyio's plugin
    would also run them on trio wherever trio is installed (selenium, of the browser tests,
    brings it)."""
    return "asyncio"
