"""Shared material of the SIP adapter tests: one lab, runtimes over it, requests to send."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.runtime import Runtime
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
from shaken.services.calllog import CallRecord
from shaken.toolkit.lab import Lab, LabSettings, init_lab
from tests.support.config import without_actions

ORIG = "12025550123"  # in the lab's TN range: attestation A
DEST = "13035550000"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    # Nothing listens on the repository port: a cold fetch fails at once (cert_fetch_failed).
    directory = tmp_path_factory.mktemp("sip") / "lab"
    return init_lab(
        directory, now=datetime.now(UTC), settings=LabSettings(repository_port=free_port())
    )


def write_config(
    lab: Lab,
    *,
    server: str = "",
    verification: str = "",
    extra: str = "",
    listeners: bool = True,
) -> Path:
    """The lab's shaken.toml with lines added to ``[server]`` and ``[verification]``, and
    sections appended; ``listeners=False`` drops the lab's own listeners (fixed ports). The
    lab's PASS / STOP / ALERT actions are left out: these tests start from the defaults."""
    text = without_actions(lab.config.read_text(encoding="utf-8"))
    if not listeners:
        start = text.index("[server]\n")
        end = text.index("[repository]")
        text = text[:start] + "[server]\n\n" + text[end:]
    text = text.replace("[server]\n", "[server]\n" + server + ("\n" if server else ""), 1)
    text = text.replace(
        "[verification]\n", "[verification]\n" + verification + ("\n" if verification else ""), 1
    )
    path = lab.directory / f"t-{uuid.uuid4().hex[:12]}.toml"
    path.write_text(text + "\n" + extra, encoding="utf-8")
    return path


@dataclass
class MemoryCallLog:
    records: list[CallRecord] = field(default_factory=list)

    def record(self, record: CallRecord) -> None:
        self.records.append(record)


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
async def runtimes(lab: Lab) -> AsyncIterator[RuntimeFactory]:
    """Build runtimes from the lab's configuration (plus additions); closed after the test.

    The lab's chain is imported into each runtime's cache and validated, so verification is
    warm (the repository itself is not running).
    """
    made: list[Runtime] = []

    def make(*, server: str = "", verification: str = "", extra: str = "") -> Runtime:
        path = write_config(lab, server=server, verification=verification, extra=extra)
        runtime = build_runtime(load_config(path))
        runtime.cache.import_chain(lab.x5u, lab.sp_chain.read_bytes())
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.aclose()


async def warm(runtime: Runtime, lab: Lab) -> None:
    """Validate the imported chain once, as the first call of a server would."""
    await runtime.cache.get(lab.x5u)


def invite(
    *,
    uri: str = f"sip:{DEST}@192.0.2.9",
    from_value: str = f"<sip:{ORIG}@192.0.2.1>;tag=f1",
    to_value: str = f"<sip:{DEST}@192.0.2.9>",
    headers: tuple[tuple[str, str], ...] = (),
    branch: str | None = None,
    call_id: str | None = None,
    method: str = "INVITE",
    via_host: str = "192.0.2.1:5060",
    cseq: int = 1,
) -> bytes:
    branch = branch or "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host};branch={branch}",
        "Max-Forwards: 70",
        f"From: {from_value}",
        f"To: {to_value}",
        f"Call-ID: {call_id or uuid.uuid4().hex}",
        f"CSeq: {cseq} {method}",
        *(f"{name}: {value}" for name, value in headers),
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()
