"""One lab for these tests, runtimes over variants of its configuration, and ASGI clients."""

from __future__ import annotations

import hashlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shaken.adapters.http import create_app
from shaken.adapters.http.app import ASGIApp
from shaken.adapters.runtime import Runtime
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
from shaken.core.jws import PrivateKey, b64url_encode, load_private_key, sign_es256
from shaken.services.calllog import CallRecord
from shaken.services.ports import Clock
from shaken.toolkit.lab import Lab, LabSettings, init_lab
from tests.support.config import without_actions

IN_RANGE = "12025550123"  # inside the lab's [tn_range.lab]: attestation A
OUTSIDE = "14155550100"  # no entry: unknown_tn_attest C
DEST = "13035550000"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class LabKit:
    """The lab: its directory, REST key, SP key, and token builders."""

    lab: Lab
    api_key: str
    sp_key: PrivateKey

    @property
    def x5u(self) -> str:
        return self.lab.x5u

    @property
    def dead_x5u(self) -> str:
        """An allowed URL on the lab's repository port, where nothing listens (E8)."""
        return self.lab.settings.repository_url + "gone.pem"

    def config(
        self,
        *,
        server: str = "",
        keys: str = "",
        replace: dict[str, str] | None = None,
    ) -> Path:
        """The lab configuration with ``server`` lines added to [server] and ``keys`` appended,
        without the lab's PASS / STOP / ALERT actions (these tests start from the defaults)."""
        text = without_actions(self.lab.config.read_text(encoding="utf-8"))
        text = text.replace("[server]\n", "[server]\n" + server + "\n", 1)
        for old, new in (replace or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        path = self.lab.directory / f"test-{uuid.uuid4().hex}.toml"
        path.write_text(text + "\n" + keys, encoding="utf-8")
        return path

    def runtime(self, **config: Any) -> Runtime:
        runtime = build_runtime(load_config(self.config(**config)))
        runtime.cache.import_chain(self.x5u, self.lab.sp_chain.read_bytes())
        return runtime

    def token(
        self,
        *,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        key: PrivateKey | None = None,
        params: str | None = None,
        drop_header: Iterable[str] = (),
        drop_claims: Iterable[str] = (),
        orig: str = IN_RANGE,
        dest: str = DEST,
        iat: int | None = None,
    ) -> str:
        """A full Identity header value, built by hand so any field can be wrong."""
        head: dict[str, Any] = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": self.x5u}
        head.update(header or {})
        body: dict[str, Any] = {
            "attest": "A",
            "dest": {"tn": [dest]},
            "iat": int(time.time()) if iat is None else iat,
            "orig": {"tn": orig},
            "origid": str(uuid.uuid4()),
        }
        body.update(claims or {})
        for name in drop_header:
            head.pop(name)
        for name in drop_claims:
            body.pop(name)
        signing_input = (
            b64url_encode(json.dumps(head, separators=(",", ":")).encode())
            + "."
            + b64url_encode(json.dumps(body, separators=(",", ":")).encode())
        )
        signature = b64url_encode(sign_es256(key or self.sp_key, signing_input.encode()))
        tail = (
            params
            if params is not None
            else f";info=<{head.get('x5u', self.x5u)}>;alg=ES256;ppt=shaken"
        )
        return f"{signing_input}.{signature}{tail}"


@pytest.fixture(scope="package")
def kit(tmp_path_factory: pytest.TempPathFactory) -> LabKit:
    directory = tmp_path_factory.mktemp("rest") / "lab"
    # The repository port is one nobody listens on: a fetch there fails at once (E8).
    lab = init_lab(
        directory,
        now=datetime.now(UTC),
        settings=LabSettings(repository_port=free_port()),
    )
    api_key = (directory / "secrets" / "rest-api-key").read_text(encoding="utf-8").strip()
    return LabKit(lab=lab, api_key=api_key, sp_key=load_private_key(lab.sp_key.read_bytes()))


def key_entry(name: str, secret: str, **values: Any) -> str:
    """An ``[api_key.NAME]`` table for ``secret``."""
    lines = [f"[api_key.{name}]", f'sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


@dataclass
class MemoryCallLog:
    """A :class:`~shaken.services.calllog.CallLog` that keeps records in a list."""

    records: list[CallRecord] = field(default_factory=list)
    ok: bool = True

    def record(self, record: CallRecord) -> None:
        self.records.append(record)

    def healthy(self) -> tuple[bool, str]:
        return self.ok, "writable" if self.ok else "not writable"


@dataclass
class Api:
    """An app over a runtime, a client for it, and what it recorded."""

    runtime: Runtime
    app: ASGIApp
    client: httpx.AsyncClient
    calls: MemoryCallLog
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def verify(
        self,
        identity: str | None,
        *,
        orig: str = IN_RANGE,
        dest: str = DEST,
        time_: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        request: dict[str, Any] = {
            "from": {"tn": orig},
            "to": {"tn": [dest]},
            "time": int(time.time()) if time_ is None else time_,
        }
        if identity is not None:
            request["identity"] = identity
        return await self.client.post(
            "/stir/v1/verification",
            json={"verificationRequest": request},
            headers=self.auth if headers is None else headers,
        )

    async def sign(
        self, request: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(
            "/stir/v1/signing",
            json={"signingRequest": request},
            headers=self.auth if headers is None else headers,
        )


ApiFactory = Callable[..., Any]


@pytest.fixture
async def make_api(kit: LabKit) -> AsyncIterator[ApiFactory]:
    """``await make_api(server=..., keys=..., clock=...)``: an :class:`Api`, closed afterwards."""
    made: list[Api] = []

    async def make(*, clock: Clock | None = None, key: str | None = None, **config: Any) -> Api:
        runtime = kit.runtime(**config)
        calls = MemoryCallLog()
        app = create_app(runtime, call_log=calls, clock=clock)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        api = Api(runtime, app, client, calls, key or kit.api_key)
        made.append(api)
        return api

    yield make
    for api in made:
        await api.client.aclose()
        await api.runtime.aclose()


def signing_request(orig: str = IN_RANGE, **extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "attest": "A",
        "dest": {"tn": [DEST]},
        "iat": int(time.time()),
        "orig": {"tn": orig},
    }
    request.update(extra)
    return request


async def raw(
    app: ASGIApp,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes] | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Call the ASGI app directly, with exactly these headers and body chunks."""
    pending = list(chunks if chunks is not None else [b""])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    if not sent:
        return 0, {}, b""
    start, body = sent[0], sent[1]
    return start["status"], dict(start["headers"]), body["body"]
