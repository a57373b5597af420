"""``examples/prometheus/shaken-alerts.yml``: promtool accepts the rules and its own unit tests
of them pass (each alert fires on the series it is about, with the annotations it says)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool (Debian package prometheus; .ci/run installs it)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=EXAMPLES, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    done = _promtool("check", "rules", "shaken-alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rules_fire_as_their_unit_tests_say() -> None:
    done = _promtool("test", "rules", "shaken-alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def live_metrics(tmp_path: Path) -> tuple[set[str], dict[tuple[str, Any], float]]:
    """The series a real ``shaken serve`` exposes after signing and verifying over SIP and
    REST: every family and sample name, and each sample's value by (name, sorted labels)."""
    import asyncio
    import json
    import time
    import urllib.request
    from datetime import UTC, datetime

    from prometheus_client.parser import text_string_to_metric_families

    from shaken.adapters.sip.client import build_invite, send_invite
    from shaken.toolkit.lab import init_lab
    from tests.adapters.test_serve_processes import Serve, free_port, free_sip_port, lab_config

    lab = init_lab(tmp_path / "lab", now=datetime.now(UTC))
    sign, verify, rest = free_sip_port(), free_sip_port(), free_port()
    config = lab_config(
        lab,
        f'sip_sign = ["udp:127.0.0.1:{sign}"]\nsip_verify = ["udp:127.0.0.1:{verify}"]\n'
        f'rest = ["http:127.0.0.1:{rest}"]\nverification_open = true\n'
        f'call_log = "{tmp_path / "calls.sqlite"}"',
    )
    served = Serve(config, tmp_path / "serve.log")
    try:
        assert served.ready(), served.errors()

        def invite(*headers: tuple[str, str]):  # type: ignore[no-untyped-def]
            return lambda local: build_invite(
                request_uri="sip:13035550000@127.0.0.1",
                from_value="<sip:12025550123@127.0.0.1>;tag=a",
                to_value="<sip:13035550000@127.0.0.1>",
                local=local,
                headers=list(headers),
            )

        async def calls() -> None:
            signed = await send_invite(("127.0.0.1", sign), invite(), timeout=10)
            identity = signed.first("identity") or ""
            await send_invite(("127.0.0.1", verify), invite(("Identity", identity)), timeout=20)
            body = {
                "verificationRequest": {
                    "from": {"tn": "12025550123"},
                    "to": {"tn": ["13035550000"]},
                    "time": int(time.time()),
                    "identity": identity,
                }
            }
            request = urllib.request.Request(
                f"http://127.0.0.1:{rest}/stir/v1/verification",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=20) as reply:
                assert reply.status == 200

        asyncio.run(calls())
        with urllib.request.urlopen(f"http://127.0.0.1:{rest}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        exposed = set()
        values = {}
        for family in text_string_to_metric_families(text):
            exposed.add(family.name)
            exposed.update(sample.name for sample in family.samples)
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    finally:
        served.stop()
    return exposed, values


def test_every_metric_the_rules_read_is_exposed(tmp_path: Path) -> None:
    """The rules cannot drift from the metrics: a real ``shaken serve`` that signed and
    verified over SIP and REST exposes every series name the rules use."""
    import re

    names = set(re.findall(r"\bshaken_[a-z0-9_]+", (EXAMPLES / "shaken-alerts.yml").read_text()))
    exposed, values = live_metrics(tmp_path)
    assert names - exposed == set()
    # The SIP decisions are counted as they were made.
    signed = (("method", "INVITE"), ("outcome", "signed"), ("reason", ""), ("role", "sign"))
    assert values[("shaken_sip_requests_total", signed)] == 1
    assert values[("shaken_sip_responses_total", (("code", "302"),))] >= 1
    responses = [k for k in values if k[0] == "shaken_sip_responses_total"]
    assert sum(values[k] for k in responses) >= 2  # the signing 302 and the verdict
    verify_role = [
        k for k in values if k[0] == "shaken_sip_requests_total" and ("role", "verify") in k[1]
    ]
    assert sum(values[k] for k in verify_role) == 1
    assert values[("shaken_sip_decision_seconds_count", (("role", "sign"),))] == 1
