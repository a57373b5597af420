"""The typed ``[lifecycle]``, ``[acme]``, ``[sti_pa]``, ``[tn]`` and ``[tn_range]`` settings,
and the schema's help texts, which say what a key does, never its default again."""

from __future__ import annotations

import inspect
import re
from dataclasses import FrozenInstanceError, fields
from datetime import timedelta
from typing import Any

import pytest

from shaken.adapters.acme import AcmeSettings
from shaken.adapters.lifecycle import AcmeIssuer, acme_client_settings, sti_pa_client_settings
from shaken.adapters.stipa import StiPaSettings
from shaken.config import (
    AcmeConfig,
    AttestationSettings,
    ConfigError,
    LifecycleSettings,
    ServerSettings,
    StiPaConfig,
    TnEntry,
    TnRangeEntry,
    VerificationSettings,
    parse_config,
)
from shaken.config.schema import (
    ACME_KEYS,
    ATTESTATION_KEYS,
    LIFECYCLE_KEYS,
    SERVER_KEYS,
    STI_PA_KEYS,
    TN_KEYS,
    TN_RANGE_KEYS,
    VERIFICATION_KEYS,
    Spec,
)
from shaken.config.typed import toml_defaults
from shaken.services.lifecycle import CertificateLifecycle, RenewalPolicy

LIFECYCLE = """\
[sti_pa]
url = "https://pa.example.com"
account_id = "1234"
timeout = 5

[acme]
directory = "https://ca.example.com/acme"
account_key = "acme.key"
spc = "1234"
org = "Example"
contact = ["mailto:noc@example.com"]
fingerprint = "spki"
poll_timeout = 60

[lifecycle]
directory = "certs"
publish_dir = "repo"
x5u_base = "https://cr.example.com/shaken/"
renew_before_days = 20
watch_interval = 2
renew_in_serve = false
"""


@pytest.mark.parametrize(
    ("cls", "specs"),
    [
        (LifecycleSettings, LIFECYCLE_KEYS),
        (AcmeConfig, ACME_KEYS),
        (StiPaConfig, STI_PA_KEYS),
        (TnEntry, TN_KEYS),
        (TnRangeEntry, TN_RANGE_KEYS),
    ],
)
def test_every_key_of_a_section_is_a_typed_field(cls: type[Any], specs: dict[str, Spec]) -> None:
    assert {f.name for f in fields(cls)} == set(specs)


def test_the_lifecycle_sections_are_typed_and_frozen() -> None:
    settings = parse_config(LIFECYCLE)
    lifecycle, acme, sti_pa = (
        settings.lifecycle_settings,
        settings.acme_settings,
        settings.sti_pa_settings,
    )
    assert lifecycle is not None and acme is not None and sti_pa is not None
    assert (lifecycle.renew_before_days, lifecycle.watch_interval) == (20, 2.0)
    assert isinstance(lifecycle.watch_interval, float)
    assert lifecycle.renew_in_serve is False
    assert lifecycle.publish == "directory"  # unset: the default
    assert acme.contact == ("mailto:noc@example.com",)
    assert (acme.poll_timeout, sti_pa.timeout) == (60.0, 5.0)
    assert acme.tnauthlist_encoding is None  # unset: the client's
    with pytest.raises(FrozenInstanceError):
        lifecycle.keep = 2  # type: ignore[misc]
    # Without the sections there is nothing typed either.
    bare = parse_config("")
    assert (bare.lifecycle_settings, bare.acme_settings, bare.sti_pa_settings) == (None,) * 3


def test_lifecycle_defaults_are_the_renewal_policy() -> None:
    """The numbers are RenewalPolicy's, not written again in the configuration."""
    lifecycle, policy = LifecycleSettings(directory="d"), RenewalPolicy()
    assert lifecycle.renewal_policy == policy
    assert lifecycle.retire_after == policy.retire_after.total_seconds()
    given = LifecycleSettings(directory="d", renew_before_days=20, retry_min=5, keep=2)
    assert given.renewal_policy.before == timedelta(days=20)
    assert (given.renewal_policy.retry_min, given.renewal_policy.keep) == (timedelta(seconds=5), 2)


def test_unset_acme_and_sti_pa_keys_keep_the_clients_defaults() -> None:
    settings = parse_config(LIFECYCLE)
    assert settings.acme_settings is not None and settings.sti_pa_settings is not None
    acme = acme_client_settings(settings.acme_settings)
    assert acme == AcmeSettings(
        directory="https://ca.example.com/acme",
        contact=("mailto:noc@example.com",),
        fingerprint="spki",
        poll_timeout=60.0,
    )
    sti_pa = sti_pa_client_settings(settings.sti_pa_settings)
    assert sti_pa == StiPaSettings(url="https://pa.example.com", account_id="1234", timeout=5.0)


def test_tn_entries_are_typed() -> None:
    settings = parse_config(
        '[tn."12025550100"]\nattest = "A"\n\n'
        '[tn_range.block]\nstart = "12025550200"\ncount = 100\nattest = "B"\n'
    )
    assert settings.tn_entries == {"12025550100": TnEntry(attest="A")}
    assert settings.tn_range_entries == {
        "block": TnRangeEntry(start="12025550200", count=100, attest="B")
    }
    with pytest.raises(TypeError):
        settings.tn_entries["12025550101"] = TnEntry()  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[tn_range.r]\nstart = "12025550200"\n', "<string>:1: tn_range.r.count: is required"),
        ("[lifecycle]\npublish_dir = 'repo'\n", "<string>:1: lifecycle.directory: is required"),
    ],
)
def test_a_missing_required_key_is_a_problem_not_a_crash(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert expected in [str(p) for p in caught.value.problems]


def _parameter_defaults(call: Any, *names: str) -> dict[str, Any]:
    parameters = inspect.signature(call).parameters
    return {name: parameters[name].default for name in names}


#: Each table of keys and the defaults of what it feeds (the typed settings, or the dataclass
#: whose default an unset key keeps).
TABLES: list[tuple[str, dict[str, Spec], dict[str, Any]]] = [
    ("server", SERVER_KEYS, toml_defaults(ServerSettings)),
    ("verification", VERIFICATION_KEYS, toml_defaults(VerificationSettings)),
    ("attestation", ATTESTATION_KEYS, toml_defaults(AttestationSettings)),
    ("lifecycle", LIFECYCLE_KEYS, toml_defaults(LifecycleSettings)),
    (
        "acme",
        ACME_KEYS,
        {
            **toml_defaults(AcmeSettings),
            **_parameter_defaults(AcmeIssuer, "country", "unique_cn"),
            **_parameter_defaults(CertificateLifecycle, "enforce_profile"),
        },
    ),
    ("sti_pa", STI_PA_KEYS, toml_defaults(StiPaSettings)),
]


def _restates(help_text: str, value: Any) -> bool:
    """Does ``help_text`` spell ``value`` as a default: ``(30)``, ``(300; ...)``,
    ``(default US)``, ``default false``, ``text (default)``?"""
    if isinstance(value, bool):
        spelled = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        spelled = str(int(value))
    elif isinstance(value, int | float | str) and str(value):
        spelled = str(value)
    else:
        return False
    v = re.escape(spelled)
    patterns = (
        rf"\(\s*{v}\s*[;)]",
        rf"\bdefault:?\s+{v}(?![\w/])",
        rf"(?<![\w/]){v}\s+\(default\)",
    )
    return any(re.search(p, help_text) for p in patterns)


def restated_defaults() -> list[str]:
    return [
        f"{section}.{key}: {spec.help!r} restates {defaults[key]!r}"
        for section, specs, defaults in TABLES
        for key, spec in specs.items()
        if key in defaults and _restates(spec.help, defaults[key])
    ]


def test_no_help_text_restates_a_default() -> None:
    """A default is written once, in what the key feeds; a help text that repeats it goes
    stale when the default changes (``config show --effective`` prints the real one)."""
    assert restated_defaults() == []


@pytest.mark.parametrize(
    ("help_text", "value"),
    [
        ("refuse an SPC token expiring sooner (180)", 180),
        ("the old chain stays published this long (300; at least ...)", 300),
        ("subject C (default US)", "US"),
        ("REST verification needs no API key (default false: a key is needed)", False),
        ("log lines as text (default) or JSON", "text"),
        ("how often workers look at current.json (1)", 1.0),
    ],
)
def test_the_restatement_check_sees_each_form(help_text: str, value: Any) -> None:
    assert _restates(help_text, value)


@pytest.mark.parametrize(
    ("help_text", "value"),
    [
        ("largest SIP message accepted (513)", 65535),
        ("identifier and tkvalue encoding (RFC 9448: base64url)", "base64url"),
        ("cache floor (ATIS-1000074: 24 h)", 0),
    ],
)
def test_the_restatement_check_leaves_other_numbers(help_text: str, value: Any) -> None:
    assert not _restates(help_text, value)
