"""``[sti_pa]``, ``[acme]`` and ``[lifecycle]`` in the strict schema, and what config check proves."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.config import ConfigError, parse_config
from shaken.toolkit.lab import LabSettings, init_lab

GOOD = """\
[sti_pa]
url = "https://authenticate-api-stg.iconectiv.com"
account_id = "1234"

[acme]
directory = "https://stica-dev.peeringhub.io/acme"
account_key = "acme.key"
spc = "1234"
org = "Example"
tnauthlist_encoding = "base64"
fingerprint = "spki"
post_as_get = "protected_only"

[lifecycle]
directory = "certs"
publish_dir = "repo"
x5u_base = "https://cr.example.com/shaken/"
"""


def test_a_peeringhub_style_configuration_is_accepted() -> None:
    settings = parse_config(GOOD)
    assert settings.acme["tnauthlist_encoding"] == "base64"
    assert settings.lifecycle["x5u_base"] == "https://cr.example.com/shaken/"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('tnauthlist_encoding = "base64"', 'tnauthlist_encoding = "hex"'),
            "<string>:10: acme.tnauthlist_encoding: must be one of 'base64url', 'base64', got 'hex'",
        ),
        (
            ('url = "https://authenticate-api-stg.iconectiv.com"', 'url = "http://pa.example"'),
            "<string>:2: sti_pa.url: must be an https URL, got 'http://pa.example'",
        ),
        (
            ('spc = "1234"', 'spc = "12ab"'),
            "<string>:8: acme.spc: must be digits and uppercase letters (ATIS-1000080), got '12ab'",
        ),
        (
            (
                'x5u_base = "https://cr.example.com/shaken/"',
                'x5u_base = "https://cr.example.com/x"',
            ),
            "<string>:17: lifecycle.x5u_base: must end with '/' (a base URL), got "
            "'https://cr.example.com/x'",
        ),
        (
            ('publish_dir = "repo"\n', ""),
            '<string>:14: lifecycle.publish_dir: is required with publish = "directory"',
        ),
        (
            ('fingerprint = "spki"', 'fingerprnt = "spki"'),
            "<string>:11: acme.fingerprnt: unknown key (did you mean 'fingerprint'?)",
        ),
    ],
)
def test_bad_lifecycle_values_name_file_key_and_line(
    change: tuple[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(GOOD.replace(*change))
    assert expected in [str(p) for p in caught.value.problems]


def test_acme_needs_the_sti_pa_and_a_lifecycle() -> None:
    text = GOOD.split("[acme]")[1].split("[lifecycle]", maxsplit=1)[0]
    with pytest.raises(ConfigError) as caught:
        parse_config("[acme]" + text)
    messages = {str(p) for p in caught.value.problems}
    assert (
        "<string>:1: acme: needs [sti_pa]: the SPC token that answers tkauth-01 comes from it"
        in messages
    )
    assert (
        "<string>:1: acme: needs [lifecycle]: where the certificates it obtains are kept"
        in messages
    )


def test_config_check_proves_the_lab_lifecycle_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = init_lab(tmp_path / "lab", now=datetime.now(UTC), settings=LabSettings())
    assert main(["config", "check", str(lab.config)]) == 0
    capsys.readouterr()
    credentials = lab.directory / "secrets" / "sti-pa.toml"
    password = credentials.read_text().split('password = "')[1].split('"')[0]
    os.chmod(credentials, 0o644)
    assert main(["config", "check", str(lab.config)]) == 1
    out = capsys.readouterr().out
    assert (
        f"sti_pa.credentials_file: the STI-PA credentials file {credentials} is readable by group "
        "or others; chmod 600 it"
    ) in out
    os.chmod(credentials, 0o600)
    credentials.write_text(f'user_id = "lab"\npassword = "{password}\n')  # broken TOML
    assert main(["config", "check", str(lab.config)]) == 1
    out = capsys.readouterr().out
    assert "is not TOML with user_id" in out
    assert password not in out  # the decoder's message would have quoted the line


def test_credentials_come_from_the_environment_without_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shaken.adapters.stipa import StiPaCredentials

    monkeypatch.delenv("SHAKEN_STI_PA_USER_ID", raising=False)
    monkeypatch.delenv("SHAKEN_STI_PA_PASSWORD", raising=False)
    with pytest.raises(ValueError, match=r"set sti_pa\.credentials_file, or SHAKEN_STI_PA_USER_ID"):
        StiPaCredentials.load(None)
    monkeypatch.setenv("SHAKEN_STI_PA_USER_ID", "noc")
    monkeypatch.setenv("SHAKEN_STI_PA_PASSWORD", "s3cret")
    found = StiPaCredentials.load(None)
    assert found.user_id == "noc"
    assert "s3cret" not in repr(found) and "s3cret" not in str(found)
