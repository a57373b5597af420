"""``shaken serve`` pieces in process: proving a configuration, check_x5u_at_load, reloads."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.serve import ServiceOptions, Worker, check_settings, with_workers
from shaken.adapters.sip.handler import Listener, Role
from shaken.adapters.sip.server import bind_listeners
from shaken.adapters.wiring import check_signing_certificates
from shaken.config import ConfigError, load_config, parse_config
from shaken.core.errors import ConfigurationError
from shaken.testing import make_sti_pki
from shaken.toolkit.lab import Lab

from .conftest import RuntimeFactory, write_config

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "kamailio" / "shaken.toml"


def test_the_kamailio_example_configuration_loads() -> None:
    settings = load_config(EXAMPLE)
    assert settings.server["sip_sign"] == ["udp:127.0.0.1:5060"]
    assert settings.attestation["check_x5u_at_load"] is True
    assert "sbc" in settings.profiles


def test_workers_from_the_command_line(lab: Lab) -> None:
    settings = load_config(write_config(lab))
    assert with_workers(settings, None) is settings
    assert with_workers(settings, 3).server["workers"] == 3


async def test_check_x5u_at_load(runtimes: RuntimeFactory, lab: Lab) -> None:
    repository = lab.serve(port=lab.settings.repository_port).start()
    try:
        # Not asked for: nothing fetched.
        assert await check_signing_certificates(runtimes()) == 0
        path = write_config(lab)
        text = path.read_text().replace(
            "[attestation]\n", "[attestation]\ncheck_x5u_at_load = true\n", 1
        )
        path.write_text(text)
        runtime = await check_settings(load_config(path))
        try:
            assert await check_signing_certificates(runtime) == 1
        finally:
            await runtime.aclose()
        # Another SP's certificate at the URL: the key does not match it.
        other = lab.repo_dir / "other.pem"
        other.write_bytes(make_sti_pki(datetime.now(UTC)).chain_pem)
        path.write_text(
            text.replace(
                f'x5u = "{lab.x5u}"', f'x5u = "{lab.x5u.replace("sp.pem", "other.pem")}"', 1
            )
        )
        with pytest.raises(ConfigurationError, match="public keys differ"):
            await check_settings(load_config(path))
        path.write_text(
            text.replace(
                f'x5u = "{lab.x5u}"', f'x5u = "{lab.x5u.replace("sp.pem", "gone.pem")}"', 1
            )
        )
        with pytest.raises(ConfigurationError, match=r"gone\.pem"):
            await check_settings(load_config(path))
    finally:
        repository.close()


async def test_reload_in_process(lab: Lab, tmp_path: Path) -> None:
    config = write_config(lab, listeners=False, server=f'call_log = "{tmp_path / "a.sqlite"}"')
    bound = bind_listeners([Listener("udp:127.0.0.1:0", Role.VERIFY)])
    ready = asyncio.Event()
    worker = Worker(ServiceOptions(config, handle_signals=False), bound, ready=ready.set)
    task = asyncio.get_running_loop().create_task(worker.run())
    await asyncio.wait_for(ready.wait(), 30)
    handler = worker.handler
    assert handler is not None
    first = handler.runtime
    good = config.read_text()
    config.write_text(good + "\n[profile.lab]\nbehavior = 12\n")
    assert await worker.reload() is False
    assert handler.runtime is first
    config.write_text(
        good.replace("a.sqlite", "b.sqlite") + '\n[verification.on.missing]\naction = "reject"\n'
    )
    assert await worker.reload() is True
    assert handler.runtime is not first
    assert worker.call_log is not None and worker.call_log.path == tmp_path / "b.sqlite"
    assert handler.runtime.profiles["lab"].actions.missing.action.value == "reject"
    worker.stopping.set()
    assert await asyncio.wait_for(task, 30) == 0
    assert (tmp_path / "a.sqlite").exists() and (tmp_path / "b.sqlite").exists()


def test_listener_profiles_are_checked() -> None:
    text = (
        '[profile.pbx]\nbehavior = "sign"\n\n[server]\n'
        'sip_sign = ["udp:127.0.0.1:5060"]\n'
        'listener_profiles = { "udp:127.0.0.1:5060" = "pbx", "udp:127.0.0.1:5999" = "nope" }\n'
        "call_log_flush_ms = 0\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="t.toml")
    problems = [str(p) for p in caught.value.problems]
    assert (
        "t.toml:7: server.call_log_flush_ms: must be at least 1 and at most 10000, got 0"
        in problems
    )
    assert any(
        p.startswith("t.toml:6: server.listener_profiles.udp:127.0.0.1:5999: not one of")
        for p in problems
    ), problems
    assert any(p.endswith("no [profile.nope]") for p in problems)
    bad = '[server]\nlistener_profiles = { "http:127.0.0.1:80" = "global" }\n'
    with pytest.raises(ConfigError, match="not a SIP listener"):
        parse_config(bad)
    good = parse_config(
        text.replace('"nope"', '"global"')
        .replace("5999", "5060")
        .replace("call_log_flush_ms = 0", "call_log_flush_ms = 50")
        .replace(', "udp:127.0.0.1:5060" = "global"', "")
    )
    assert good.server["listener_profiles"] == {"udp:127.0.0.1:5060": "pbx"}


ROBUSTNESS = """transaction_memory = 1048576
tcp_connections_per_source = 3
tcp_message_timeout = 2.5
udp_max_age_ms = 80
overload_answer = "drop"
udp_receive_buffer = 262144"""


async def test_17_robustness_settings_reach_the_server_and_a_reload(
    lab: Lab, tmp_path: Path
) -> None:
    config = write_config(lab, listeners=False, server=ROBUSTNESS)
    bound = bind_listeners([Listener("udp:127.0.0.1:0", Role.VERIFY)])
    ready = asyncio.Event()
    worker = Worker(ServiceOptions(config, handle_signals=False), bound, ready=ready.set)
    task = asyncio.get_running_loop().create_task(worker.run())
    await asyncio.wait_for(ready.wait(), 30)
    sip, handler = worker.sip, worker.handler
    assert sip is not None and handler is not None
    assert handler.transactions.max_bytes == 1048576
    assert (sip.max_connections_per_source, sip.message_timeout) == (3, 2.5)
    assert (sip.udp_max_age, sip.overload_answer) == (0.08, "drop")
    assert bound[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 262144
    config.write_text(config.read_text().replace("udp_max_age_ms = 80", "udp_max_age_ms = 40"))
    assert await worker.reload() is True
    assert sip.udp_max_age == 0.04
    worker.stopping.set()
    assert await asyncio.wait_for(task, 30) == 0


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('overload_answer = "reset"', "must be one of '503', 'drop'"),
        ("udp_max_age_ms = 0", "must be at least 1"),
        ("tcp_connections_per_source = 0", "must be at least 1"),
        ("transaction_memory = 10", "must be at least 65536"),
    ],
)
def test_17_robustness_settings_are_checked(line: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(f"[server]\n{line}\n")
