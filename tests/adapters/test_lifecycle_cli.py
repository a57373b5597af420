"""``shaken cert acquire|renew|status|rollback`` against the test STI-PA and ACME STI-CA.

Real HTTPS servers on loopback (STI-PA, ACME STI-CA, our certificate repository), the real
directory of generations; the time the commands see comes from a manual clock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.adapters.lifecycle import lifecycle_gauges, readiness
from shaken.config import load_config
from shaken.core.errors import AcquisitionError
from shaken.toolkit.ca import CaSettings
from shaken.toolkit.repository import RepositoryServer, serve_repository
from tests.support.fakes import ManualClock
from tests.support.sti import Sti, running_sti, write_config, write_tls


@dataclass
class Setup:
    sti: Sti
    repo: RepositoryServer
    repo_dir: Path
    config: Path
    #: The test STI-PA's and STI-CA's time (now, unless a test moves it).
    clock: ManualClock


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    clock = ManualClock(datetime.now(UTC))
    tls = write_tls(tmp_path / "repo-tls", clock.now())
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    repo = serve_repository(repo_dir, port=0, tls_cert=tls[1], tls_key=tls[2]).start()
    # The CA publishes its CRL where our repository serves it, as the lab's does.
    ca = CaSettings(
        repository_url=repo.base_url, crl_url=repo.base_url + "crl.der", publish_dir=str(repo_dir)
    )
    try:
        with running_sti(tmp_path / "sti", now=clock.now, ca_settings=ca, tls=tls) as sti:
            config = write_config(
                sti, tmp_path / "sp", repository_url=repo.base_url, repo_dir=repo_dir
            )
            yield Setup(sti, repo, repo_dir, config, clock)
    finally:
        repo.close()


def _status(
    setup: Setup, capsys: pytest.CaptureFixture[str], clock: ManualClock | None = None
) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = main(["cert", "status", "--json", "--config", str(setup.config)], clock=clock)
    return code, json.loads(capsys.readouterr().out)


def test_acquire_status_renew_rollback(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(setup.config)
    code, report = _status(setup, capsys)
    assert code == 2 and report["problems"] == [
        "no certificate obtained yet: run shaken cert acquire"
    ]
    assert main(["cert", "acquire", "--config", config]) == 0
    first = capsys.readouterr().out
    assert first.startswith("signing with certificate ")
    code, report = _status(setup, capsys)
    assert code == 0 and report["status"] == "OK"
    current = report["current"]
    assert isinstance(current, dict)
    name = str(current["x5u"]).rsplit("/", 1)[1]
    assert (setup.repo_dir / name).is_file()
    assert main(["cert", "status", "--config", config]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"CERTIFICATE OK: {current['serial']} SPC 1234, 365.0 days left")
    assert "x5u serves    the current certificate" in text

    assert main(["cert", "renew", "--config", config]) == 0
    assert capsys.readouterr().out.startswith("renewal is not due: ")
    assert main(["cert", "renew", "--force", "--config", config]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("signing with certificate ")
    assert out[1].startswith(
        f"  the previous certificate {current['serial']} stays published until "
    )
    code, report = _status(setup, capsys)
    assert report["previous"] == current["id"] and code == 0
    assert (setup.repo_dir / name).is_file()  # the old chain is still served

    assert main(["cert", "rollback", "--config", config]) == 0
    assert capsys.readouterr().out.startswith(
        f"rolled back: signing with certificate {current['serial']}"
    )
    code, report = _status(setup, capsys)
    assert report["current"] == {**current, "state": "current"}


def test_status_exit_codes_follow_nagios(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cert", "acquire", "--config", str(setup.config)]) == 0
    now = datetime.now(UTC)
    code, report = _status(setup, capsys, ManualClock(now + timedelta(days=355)))
    assert code == 1 and report["status"] == "WARNING"
    assert str(report["problems"]).startswith("['the signing certificate expires in 10.")
    code, report = _status(setup, capsys, ManualClock(now + timedelta(days=400)))
    assert code == 2 and report["status"] == "CRITICAL"
    # The x5u no longer serving the certificate is critical too.
    current = report["current"]
    assert isinstance(current, dict)
    (setup.repo_dir / str(current["x5u"]).rsplit("/", 1)[1]).unlink()
    code, report = _status(setup, capsys)
    assert code == 2
    assert str(report["problems"]).startswith("['the x5u does not serve the current certificate: ")
    setup.config.write_text(setup.config.read_text() + "\n[lifecycle.nope]\n")
    assert main(["cert", "status", "--config", str(setup.config)]) == 3
    assert capsys.readouterr().out.startswith("CERTIFICATE UNKNOWN: ")


def test_signing_stays_on_the_old_certificate_while_the_new_x5u_serves_nothing(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cert", "acquire", "--config", str(setup.config)]) == 0
    _, before = _status(setup, capsys)
    # A hosted repository whose upload "succeeds" but serves nothing at the new URL.
    text = (
        setup.config.read_text()
        .replace(
            f'publish_dir = "{setup.repo_dir}"',
            'publish = "command"\npublish_command = ["true", "{chain}"]',
        )
        .replace("x5u_wait = 20", "x5u_wait = 3")
    )
    setup.config.write_text(text)
    assert main(["cert", "renew", "--force", "--config", str(setup.config)]) == 1
    waited, gave_up = capsys.readouterr().out.splitlines()
    assert " is published but https://127.0.0.1:" in waited
    assert waited.endswith(
        "answered HTTP 404); signing stays on the current certificate; waiting up to 3 s for it"
    )
    assert gave_up.startswith("gave up on certificate ")
    assert gave_up.endswith(" did not serve it within 3 s")
    code, after = _status(setup, capsys)
    assert after["current"] == before["current"]
    assert code == 1 and after["failures"] == 1  # WARNING: renewal failing, still signing


def test_a_wrong_password_fails_with_the_sti_pa_s_words(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = setup.config.parent / "secrets" / "sti-pa.toml"
    credentials.write_text('user_id = "alice"\npassword = "not-the-password"\n')
    assert main(["cert", "acquire", "--config", str(setup.config)]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"shaken: the STI-PA refused the login of user 'alice' at {setup.sti.pa_server.base_url}"
        "/api/v1/auth/login (HTTP 401: 'Invalid userId or password'): wrong user id or password?\n"
    )
    assert "not-the-password" not in captured.err + captured.out
    _, report = _status(setup, capsys)
    assert report["failures"] == 1 and report["generations"] == []


def test_readyz_degrades_and_metrics_report_the_lifecycle(setup: Setup) -> None:
    assert main(["cert", "acquire", "--config", str(setup.config)]) == 0
    settings = load_config(setup.config)
    now = datetime.now(UTC)
    ok, detail = readiness(settings, now) or (None, "")
    assert ok is True and "365.0 days left, renews at " in detail
    ok, detail = readiness(settings, now + timedelta(days=352)) or (None, "")
    assert ok is False and detail.startswith("the signing certificate expires in 13.")
    gauges = {name: value for name, _, value in lifecycle_gauges(settings, now)}
    assert gauges["shaken_certificate_renewal_failures"] == 0
    assert gauges["shaken_certificate_rollover_pending"] == 0
    assert 364 < gauges["shaken_certificate_days_left"] <= 365


def test_serve_renews_when_due_and_signs_with_the_new_certificate(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    """Worker 0 of ``shaken serve`` renews in the background (here: the clock is past the
    renewal point) and every worker reloads onto the new generation through current.json."""
    from shaken.adapters.serve import ServiceOptions, Worker
    from shaken.adapters.sip.handler import Listener, Role
    from shaken.adapters.sip.server import bind_listeners

    assert main(["cert", "acquire", "--config", str(setup.config)], clock=setup.clock) == 0
    _, before = _status(setup, capsys, setup.clock)
    text = setup.config.read_text()
    setup.config.write_text(
        text.replace("[lifecycle]\n", "[lifecycle]\nwatch_interval = 0.2\n")
        + '\n[attestation]\nattest = "A"\nunknown_tn_attest = "A"\n'
    )
    setup.clock.advance(days=250)  # past two thirds of a year, for us, the STI-PA and the CA
    later = setup.clock

    async def run() -> tuple[str, str]:
        bound = bind_listeners([Listener("udp:127.0.0.1:0", Role.SIGN)])
        ready = asyncio.Event()
        options = ServiceOptions(setup.config, handle_signals=False, clock=later)
        worker = Worker(options, bound, ready=ready.set)
        task = asyncio.get_running_loop().create_task(worker.run())
        await asyncio.wait_for(ready.wait(), 30)
        assert worker.handler is not None
        first = worker.handler.runtime.profiles[None].signer
        assert first is not None and first.policy.credential is not None
        old_x5u = first.policy.credential.x5u
        for _ in range(300):
            if worker.reloads:
                break
            await asyncio.sleep(0.1)
        signer = worker.handler.runtime.profiles[None].signer
        assert signer is not None and signer.policy.credential is not None
        new_x5u = signer.policy.credential.x5u
        worker.stopping.set()
        assert await asyncio.wait_for(task, 30) == 0
        return old_x5u, new_x5u

    old_x5u, new_x5u = asyncio.run(run())
    assert isinstance(before["current"], dict) and old_x5u == before["current"]["x5u"]
    _, after = _status(setup, capsys, setup.clock)
    assert isinstance(after["current"], dict)
    assert after["current"]["serial"] != before["current"]["serial"]
    assert new_x5u == after["current"]["x5u"] != old_x5u


def test_a_publish_command_gets_the_chain_and_not_the_sti_pa_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shaken.adapters.lifecycle import CommandPublisher

    monkeypatch.setenv("SHAKEN_STI_PA_PASSWORD", "pa-secret")
    command = ["sh", "-c", 'env > "$0.env"; echo https://cr.example.test/hosted/x.pem', "{chain}"]
    publisher = CommandPublisher(command, x5u_base=None, unpublish=None, staging=tmp_path)
    x5u = asyncio.run(publisher.publish("shaken-1234-ab.pem", b"CHAIN"))
    assert x5u == "https://cr.example.test/hosted/x.pem"
    assert (tmp_path / "shaken-1234-ab.pem").read_bytes() == b"CHAIN"
    assert "pa-secret" not in (tmp_path / "shaken-1234-ab.pem.env").read_text()
    failing = CommandPublisher(
        ["false", "{chain}"], x5u_base=None, unpublish=None, staging=tmp_path
    )
    with pytest.raises(AcquisitionError, match="publish command false exited 1"):
        asyncio.run(failing.publish("n.pem", b"C"))


def test_a_revoked_certificate_is_critical_and_renewed(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cert", "acquire", "--config", str(setup.config)], clock=setup.clock) == 0
    code, before = _status(setup, capsys, setup.clock)
    assert code == 0 and before["revoked"] is None
    current = before["current"]
    assert isinstance(current, dict)
    setup.sti.ca.revoke(
        int(str(current["serial"]), 16), now=setup.clock.now(), reason="keyCompromise"
    )
    code, report = _status(setup, capsys, setup.clock)
    assert code == 2 and str(report["revoked"]).startswith("certificate at depth 0 (CN=SHAKEN 1234")
    assert f"serial {current['serial']} revoked on " in str(report["revoked"])
    assert str(report["problems"][0]).startswith("the signing certificate is revoked: ")  # type: ignore[index]
    assert main(["cert", "renew", "--config", str(setup.config)], clock=setup.clock) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("the current certificate is revoked (") and out[0].endswith(
        "): renewing"
    )
    assert out[1].startswith("signing with certificate ")
    code, after = _status(setup, capsys, setup.clock)
    assert code == 0 and after["revoked"] is None
    assert isinstance(after["current"], dict) and after["current"]["serial"] != current["serial"]


def test_the_spc_token_can_come_from_another_host(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the STI-PA-whitelisted host logs in (``cert spc-token``); the renewing host has
    no STI-PA credentials and runs it as its ``[sti_pa] token_command``."""
    import sys

    text = setup.config.read_text()
    sti_pa = text.split("[sti_pa]\n", 1)[1].split("\n[", 1)[0]
    pa_host = setup.config.parent / "pa-host.toml"
    pa_host.write_text("[sti_pa]\n" + sti_pa + "\n")
    command = [sys.executable, "-m", "shaken.adapters.cli", "cert", "spc-token"]
    command += [
        "--config",
        str(pa_host),
        "--tkvalue",
        "{tkvalue}",
        "--fingerprint",
        "{fingerprint}",
    ]
    kept = [
        line for line in sti_pa.splitlines() if line.startswith(("root_certificate", "tls_ca_file"))
    ]
    local = "[sti_pa]\n" + "\n".join(kept) + f"\ntoken_command = {json.dumps(command)}\n"
    setup.config.write_text(text.replace("[sti_pa]\n" + sti_pa, local))
    assert "credentials_file" not in setup.config.read_text()
    assert main(["config", "check", str(setup.config)]) == 0
    assert main(["cert", "acquire", "--config", str(setup.config)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("signing with certificate ")
    assert [user for user, *_ in setup.sti.pa_server.issued] == ["alice"]
    # A command that fails says so, and prints nothing it may have written to stderr.
    setup.config.write_text(
        setup.config.read_text().replace(json.dumps(command), '["false", "{tkvalue}"]')
    )
    assert main(["cert", "renew", "--force", "--config", str(setup.config)]) == 1
    assert capsys.readouterr().err == "shaken: sti_pa.token_command false exited 1 (no SPC token)\n"


def test_ca_list_writes_the_approved_roots(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    out = setup.config.parent / "roots.pem"
    assert main(["cert", "ca-list", "--config", str(setup.config), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: 1 approved STI-CA root(s)\n"
    from shaken.core.certs import load_certificates

    assert load_certificates(out.read_bytes()) == (setup.sti.ca.root,)
