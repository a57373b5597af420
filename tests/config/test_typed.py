"""The typed settings: one field per schema key, each unset key at its one default."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields, replace

import pytest

from shaken.config import (
    AttestationSettings,
    ServerSettings,
    VerificationSettings,
    effective_profile,
    parse_config,
)
from shaken.config.schema import ATTESTATION_KEYS, SERVER_KEYS, VERIFICATION_KEYS
from shaken.services.cert_cache import CacheSettings, RevocationMode
from shaken.services.ports import FetchLimits


def test_every_server_key_is_a_typed_field() -> None:
    assert {f.name for f in fields(ServerSettings)} == set(SERVER_KEYS)


def test_server_settings_are_typed_frozen_and_follow_the_table() -> None:
    settings = parse_config(
        '[server]\nworkers = 3\nrest = ["http:127.0.0.1:8080"]\n'
        'listener_profiles = {"udp:127.0.0.1:5060" = "global"}\nsip_sign = ["udp:127.0.0.1:5060"]\n'
    )
    server = settings.server_settings
    assert server.workers == 3
    assert server.rest == ("http:127.0.0.1:8080",)
    assert dict(server.listener_profiles) == {"udp:127.0.0.1:5060": "global"}
    assert server.retry_after == ServerSettings().retry_after  # unset: the default
    with pytest.raises(FrozenInstanceError):
        server.workers = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        server.listener_profiles["udp:127.0.0.1:5061"] = "x"  # type: ignore[index]
    # A replaced table gives replaced typed settings (``--workers``, ``--call-log``).
    assert replace(settings, server={**settings.server, "workers": 5}).server_settings.workers == 5


def test_an_unset_max_in_flight_bounds_sip_only() -> None:
    assert ServerSettings().max_in_flight is None
    assert ServerSettings().sip_max_in_flight > 0
    assert ServerSettings(max_in_flight=7).sip_max_in_flight == 7


def test_every_verification_key_is_a_typed_field_but_the_old_revocation_spellings() -> None:
    names = {f.name for f in fields(VerificationSettings)}
    assert names == set(VERIFICATION_KEYS) - {"require_crl", "crl_unavailable"}


def test_verification_defaults_are_the_cache_and_fetch_owners() -> None:
    """The numbers are CacheSettings' and FetchLimits', not written again in the config."""
    v, cache, limits = VerificationSettings(), CacheSettings(), FetchLimits()
    assert v.min_cache_ttl == cache.min_ttl.total_seconds()
    assert v.max_cache_ttl == cache.max_ttl.total_seconds()
    assert v.negative_cache_ttl == cache.negative_ttl.total_seconds()
    assert v.max_cache_entries == cache.max_entries
    assert v.crl_refresh == cache.crl_refresh.total_seconds()
    assert v.revocation is cache.revocation
    assert v.fetch_limits == limits
    assert effective_profile(parse_config(""), None).verification_settings == v


@pytest.mark.parametrize(
    ("setting", "mode"),
    [
        ("require_crl = true", RevocationMode.HARD),
        ('crl_unavailable = "fail"', RevocationMode.HARD),
        ('crl_unavailable = "pass"', RevocationMode.SOFT),
        ('revocation = "off"', RevocationMode.OFF),
        ("", RevocationMode.SOFT),
    ],
)
def test_one_revocation_setting_downstream_of_the_loader(
    setting: str, mode: RevocationMode
) -> None:
    settings = parse_config(f"[verification]\n{setting}\n\n[profile.p]\nmax_iat_age = 30\n")
    for name in (None, "p"):
        effective = effective_profile(settings, name)
        assert effective.verification_settings.revocation is mode
        assert effective.verification_profile.require_crl is (mode is RevocationMode.HARD)
        assert effective.verification["revocation"] == mode.value
        assert not {"require_crl", "crl_unavailable"} & set(effective.verification)


def test_every_attestation_key_is_a_typed_field() -> None:
    assert {f.name for f in fields(AttestationSettings)} == set(ATTESTATION_KEYS)


def test_a_profile_overrides_the_global_attestation_and_says_what_selects_it() -> None:
    settings = parse_config(
        '[attestation]\nattest = "A"\ncheck_x5u_at_load = true\n\n'
        '[profile.p]\nattest = "B"\nsources = ["192.0.2.0/24"]\nheader_value = "x"\n'
    )
    glob, p = effective_profile(settings, None), effective_profile(settings, "p")
    assert glob.attestation_settings == AttestationSettings(attest="A", check_x5u_at_load=True)
    assert p.attestation_settings.attest == "B" and p.attestation_settings.check_x5u_at_load
    assert (p.sources, p.header_value, p.attest_ceiling) == (("192.0.2.0/24",), "x", "B")
    assert (glob.sources, glob.header_value, glob.attest_ceiling) == ((), None, None)
