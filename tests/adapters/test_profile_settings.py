"""Every key a ``[profile.X]`` accepts takes effect for that profile's calls, key by key.

A profile's verification settings were once accepted, shown by ``config show --effective`` and
ignored, because one fetcher and one certificate cache were built from the global settings.
These tests build the runtime from a real configuration file and verify the same call under
the global settings and under the profile against a real HTTPS (or HTTP) repository on
loopback: the outcome differs exactly as the key says. Keys that cannot be per-profile are
refused by the loader, naming file, line and key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.adapters.runtime import ProfileRuntime, Runtime
from shaken.adapters.wiring import build_runtime
from shaken.config import ConfigError, load_config
from shaken.config.schema import ATTESTATION_KEYS, GLOBAL_ONLY, PROFILE_KEYS, VERIFICATION_KEYS
from shaken.core.context import SipContext
from shaken.core.jws import PrivateKey, generate_private_key
from shaken.core.reasons import Reason
from shaken.core.result import VerificationResult
from shaken.core.sign import sign_shaken
from shaken.testing import StiPki, make_sti_pki
from tests.support.fakes import ManualClock
from tests.support.https import RepositoryServer, Route, mapping_resolver

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ORIG, DEST = "12025550100", "12025550101"
CR, PA = "cr.example.test", "sti-pa.example.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def https() -> Iterator[RepositoryServer]:
    with RepositoryServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def http() -> Iterator[RepositoryServer]:
    with RepositoryServer(tls=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def pki(https: RepositoryServer) -> StiPki:
    return make_sti_pki(NOW, crl_url=https.url("/crl", host=PA))


@pytest.fixture(autouse=True)
def crl(https: RepositoryServer, pki: StiPki) -> None:
    https.route(
        "/crl", Route(body=pki.sti_pa_crl(), headers={"Content-Type": "application/pkix-crl"})
    )


def _leaf_without_tnauthlist(pki: StiPki) -> tuple[bytes, PrivateKey]:
    """A chain whose leaf has no TNAuthList (an ATIS-1000080 profile error too)."""
    key = generate_private_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SHAKEN 1234")])
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(pki.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(pki.intermediate_key, hashes.SHA256())
    )
    pem = leaf.public_bytes(Encoding.PEM) + pki.intermediate.public_bytes(Encoding.PEM)
    return pem, key


class Setup:
    """A configuration file with ``[verification]`` for the lab repository and one profile."""

    def __init__(self, tmp: Path, https: RepositoryServer, http: RepositoryServer, pki: StiPki):
        self.tmp = tmp
        self.https = https
        self.http = http
        self.pki = pki
        (tmp / "root.pem").write_bytes(pki.root_pem)
        self.clock = ManualClock(NOW)

    def runtime(self, profile: str, verification: str = "", *, tls_ca: bool = True) -> Runtime:
        ports = sorted({443, 8443, self.https.port, self.http.port})
        ca = f'tls_ca_file = "{self.https.ca_file}"' if tls_ca else ""
        text = f"""
[verification]
trust_anchors = ["root.pem"]
x5u_allowed_hosts = ["{CR}", "{PA}"]
x5u_allowed_ports = {ports}
cache_dir = "cache"
{ca}
{verification}

[profile.other]
sources = ["192.0.2.0/24"]
{profile}
"""
        config = self.tmp / "shaken.toml"
        config.write_text(text)
        resolver, _ = mapping_resolver({CR: "127.0.0.1", PA: "127.0.0.1"})
        return build_runtime(load_config(config), clock=self.clock, resolver=resolver, now=NOW)

    def call(self, url: str, key: PrivateKey | None = None) -> SipContext:
        value = sign_shaken(
            key=key or self.pki.leaf_key,
            x5u=url,
            orig=ORIG,
            dest=DEST,
            attest="A",
            iat=int(self.clock.now().timestamp()),
        )
        return SipContext(identity=(value,), from_header=f"<tel:+{ORIG}>", to=f"<tel:+{DEST}>")


@pytest.fixture
def setup(tmp_path: Path, https: RepositoryServer, http: RepositoryServer, pki: StiPki) -> Setup:
    return Setup(tmp_path, https, http, pki)


async def _both(runtime: Runtime, context: SipContext) -> tuple[VerificationResult, ...]:
    """The verdict under the profile, then under the global settings."""
    try:
        results = []
        for name in ("other", None):
            verifier = runtime.profiles[name].verifier
            assert verifier is not None
            results.append(await verifier.verify(context, now=runtime.clock.now()))
        return tuple(results)
    finally:
        await runtime.aclose()


def _reason(result: VerificationResult) -> Reason | None:
    return result.reason


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.anyio
async def test_require_tnauthlist_in_a_profile_takes_effect(setup: Setup) -> None:
    chain, key = _leaf_without_tnauthlist(setup.pki)
    url = setup.https.url("/no-tnauthlist-1.pem", host=CR)
    setup.https.route("/no-tnauthlist-1.pem", Route(body=chain))
    runtime = setup.runtime("require_tnauthlist = false")
    profile, glob = await _both(runtime, setup.call(url, key))
    assert profile.verified, profile.detail
    assert glob.reason is Reason.CERT_NO_TNAUTHLIST


@pytest.mark.anyio
async def test_enforce_certificate_profile_in_a_profile_takes_effect(setup: Setup) -> None:
    chain, key = _leaf_without_tnauthlist(setup.pki)
    url = setup.https.url("/no-tnauthlist-2.pem", host=CR)
    setup.https.route("/no-tnauthlist-2.pem", Route(body=chain))
    runtime = setup.runtime("enforce_certificate_profile = true", "require_tnauthlist = false")
    profile, glob = await _both(runtime, setup.call(url, key))
    assert profile.reason is Reason.CERT_PROFILE
    assert glob.verified, glob.detail


@pytest.mark.anyio
async def test_x5u_allow_http_in_a_profile_takes_effect(setup: Setup) -> None:
    setup.http.route("/sp.pem", Route(body=setup.pki.chain_pem))
    url = setup.http.url("/sp.pem", host=CR)
    assert url.startswith("http://")
    runtime = setup.runtime("x5u_allow_http = true")
    profile, glob = await _both(runtime, setup.call(url))
    assert profile.verified, profile.detail
    assert glob.reason is Reason.X5U_REJECTED
    assert setup.http.count("/sp.pem") == 1  # the global fetcher never sent a request


@pytest.mark.anyio
async def test_fetch_timeout_in_a_profile_takes_effect(setup: Setup) -> None:
    setup.https.route("/slow.pem", Route(body=setup.pki.chain_pem, delay=0.6))
    url = setup.https.url("/slow.pem", host=CR)
    runtime = setup.runtime("fetch_timeout = 0.2")
    profile, glob = await _both(runtime, setup.call(url))
    assert profile.reason is Reason.CERT_FETCH_FAILED
    assert "0.2 s" in (profile.detail or "")
    assert glob.verified, glob.detail


@pytest.mark.anyio
async def test_max_fetch_bytes_in_a_profile_takes_effect(setup: Setup) -> None:
    setup.https.route("/big.pem", Route(body=setup.pki.chain_pem))
    assert len(setup.pki.chain_pem) > 1024
    url = setup.https.url("/big.pem", host=CR)
    runtime = setup.runtime("max_fetch_bytes = 1024")
    profile, glob = await _both(runtime, setup.call(url))
    assert profile.reason is Reason.CERT_FETCH_FAILED
    assert glob.verified, glob.detail


@pytest.mark.anyio
async def test_tls_ca_file_in_a_profile_takes_effect(setup: Setup) -> None:
    setup.https.route("/tls.pem", Route(body=setup.pki.chain_pem))
    url = setup.https.url("/tls.pem", host=CR)
    runtime = setup.runtime(f'tls_ca_file = "{setup.https.ca_file}"', tls_ca=False)
    profile, glob = await _both(runtime, setup.call(url))
    assert profile.verified, profile.detail
    assert glob.reason is Reason.CERT_FETCH_FAILED  # the repository's TLS CA is not trusted


@pytest.mark.anyio
async def test_cache_lifetimes_in_a_profile_take_effect(setup: Setup) -> None:
    setup.https.route("/ttl.pem", Route(body=setup.pki.chain_pem))
    url = setup.https.url("/ttl.pem", host=CR)
    runtime = setup.runtime("min_cache_ttl = 60\nmax_cache_ttl = 3600")
    try:
        for name in ("other", None):
            verifier = runtime.profiles[name].verifier
            assert verifier is not None
            assert (await verifier.verify(setup.call(url), now=setup.clock.now())).verified
        assert setup.https.count("/ttl.pem") == 2  # one fetch per cache
        setup.clock.advance(hours=2)
        for name, fetches in (("other", 3), (None, 3)):
            verifier = runtime.profiles[name].verifier
            assert verifier is not None
            result = await verifier.verify(setup.call(url), now=setup.clock.now())
            assert result.verified, result.detail
            # Past its one-hour ceiling the profile refetches; the global 24 h floor holds.
            assert setup.https.count("/ttl.pem") == fetches
    finally:
        await runtime.aclose()


@pytest.mark.anyio
async def test_negative_cache_ttl_in_a_profile_takes_effect(setup: Setup) -> None:
    setup.https.route("/flaky.pem", Route(status=404))
    url = setup.https.url("/flaky.pem", host=CR)
    runtime = setup.runtime("negative_cache_ttl = 0")
    try:
        for name in ("other", None):
            verifier = runtime.profiles[name].verifier
            assert verifier is not None
            result = await verifier.verify(setup.call(url), now=setup.clock.now())
            assert result.reason is Reason.CERT_FETCH_FAILED
        setup.https.route("/flaky.pem", Route(body=setup.pki.chain_pem))
        setup.clock.advance(seconds=1)
        results = {}
        for name in ("other", None):
            verifier = runtime.profiles[name].verifier
            assert verifier is not None
            results[name] = await verifier.verify(setup.call(url), now=setup.clock.now())
        assert results["other"].verified, results["other"].detail
        assert results[None].reason is Reason.CERT_FETCH_FAILED  # remembered for 30 s
    finally:
        await runtime.aclose()


@pytest.mark.anyio
async def test_profiles_that_agree_share_one_cache(setup: Setup) -> None:
    runtime = setup.runtime("max_iat_age = 30")
    try:
        profile, glob = runtime.profiles["other"].verifier, runtime.profiles[None].verifier
        assert profile is not None and glob is not None
        assert profile.cache is glob.cache
        assert runtime.caches == (runtime.cache,)
    finally:
        await runtime.aclose()


# ------------------------------------------------------- every accepted key, where it lands

# How each verification key a profile accepts reaches the object that enforces it. Keys with a
# behavioural test above are probed here as well, so that the table stays complete.
Probe = Callable[[ProfileRuntime], Any]


def _vp(field: str) -> Probe:
    def probe(p: ProfileRuntime) -> Any:
        assert p.verifier is not None
        return getattr(p.verifier.profile, field)

    return probe


def _x5u(field: str) -> Probe:
    def probe(p: ProfileRuntime) -> Any:
        assert p.verifier is not None
        return getattr(p.verifier.profile.x5u_policy, field), getattr(p.fetcher.policy, field)

    return probe


def _limits(field: str) -> Probe:
    def probe(p: ProfileRuntime) -> Any:
        assert p.verifier is not None
        return getattr(p.fetcher.limits, field)

    return probe


def _cache(field: str) -> Probe:
    def probe(p: ProfileRuntime) -> Any:
        assert p.verifier is not None
        return getattr(p.verifier.cache.settings, field)

    return probe


def _actions(field: str) -> Probe:
    return lambda p: getattr(p.actions, field)


VERIFICATION_CASES: dict[str, tuple[str, Probe, Any]] = {
    "fetch_timeout": ("0.5", _limits("timeout"), 0.5),
    "max_fetch_bytes": ("2048", _limits("max_bytes"), 2048),
    "min_cache_ttl": ("60", _cache("min_ttl"), timedelta(seconds=60)),
    "max_cache_ttl": ("172800", _cache("max_ttl"), timedelta(days=2)),
    "negative_cache_ttl": ("5", _cache("negative_ttl"), timedelta(seconds=5)),
    "max_iat_age": ("30", _vp("max_iat_age"), 30),
    "max_future_skew": ("3", _vp("max_future_skew"), 3),
    "max_date_age": ("20", _vp("max_date_age"), 20),
    "date_header": ('"require"', lambda p: _vp("date_policy")(p).value, "require"),
    "full_form_only": ("false", _vp("full_form_only"), False),
    "accepted_ppt": ('["shaken"]', _vp("accepted_ppt"), ("shaken",)),
    "caller_sources": ('["from"]', _vp("caller_sources"), ("from",)),
    "called_sources": ('["request_uri"]', _vp("called_sources"), ("request_uri",)),
    "numbering_plan": ('"nanp"', lambda p: _vp("numbering_plan")(p) is not None, True),
    "numeric_user_is_tn": ("false", _vp("numeric_user_is_tn"), False),
    "check_dest": ("false", _vp("check_dest"), False),
    "x5u_allowed_ports": ("[443, 9443]", _x5u("allowed_ports"), ((443, 9443), (443, 9443))),
    "x5u_allow_http": ("true", _x5u("allow_http"), (True, True)),
    "x5u_any_port": ("true", _x5u("any_port"), (True, True)),
    "x5u_allowed_hosts": (
        '["cr.example.test"]',
        _x5u("allowed_hosts"),
        (("cr.example.test",),) * 2,
    ),
    "tls_ca_file": ('"tls.pem"', lambda p: p.fetcher and p.fetcher.tls_ca_file, "TLS"),
    "require_tnauthlist": (
        "false",
        lambda p: p.verifier and p.verifier.cache.profile.require_tnauthlist,
        False,
    ),
    "enforce_certificate_profile": (
        "true",
        lambda p: p.verifier and p.verifier.cache.profile.enforce_certificate_profile,
        True,
    ),
    "replay_check": ("true", lambda p: p.verifier and p.verifier.replay is not None, True),
    "max_div_iat_age": ("7", _vp("max_div_iat_age"), 7),
    "tag_verstat": ("false", _actions("tag_verstat"), False),
    "reason_protocol": ('"SIP"', _actions("reason_protocol"), "SIP"),
    "rcd_verify": ("false", lambda p: p.verifier and p.verifier.branding is None, True),
    "rcd_display": ('"replace"', _actions("rcd_display"), "replace"),
    "rcd_display_prefix": ('"[V] "', _actions("rcd_display_prefix"), "[V] "),
    "rcd_call_info": ("true", _actions("rcd_call_info"), True),
    "rcd_require_integrity": (
        "false",
        lambda p: (
            p.verifier and p.verifier.branding and p.verifier.branding.settings.require_integrity
        ),
        False,
    ),
    "rcd_max_crn_length": (
        "20",
        lambda p: (
            p.verifier and p.verifier.branding and p.verifier.branding.settings.max_crn_length
        ),
        20,
    ),
    "rcd_cache_ttl": (
        "60",
        lambda p: p.verifier and p.verifier.branding and p.verifier.branding.settings.ttl.seconds,
        60,
    ),
}
# Keys of the profile itself, and the attestation keys, have tests of their own (signing,
# profile selection); listed here so that the completeness check below covers every key.
OTHER_KEYS = {"behavior", "sources", "header_value", "brand", *ATTESTATION_KEYS}


def test_every_profile_key_is_covered() -> None:
    assert set(PROFILE_KEYS) == set(VERIFICATION_CASES) | (OTHER_KEYS - {"enabled"})
    assert set(VERIFICATION_KEYS) == set(VERIFICATION_CASES) | set(GLOBAL_ONLY)


@pytest.mark.parametrize("key", sorted(VERIFICATION_CASES))
def test_verification_key_in_a_profile_reaches_its_enforcer(
    key: str, setup: Setup, tmp_path: Path
) -> None:
    text, probe, expected = VERIFICATION_CASES[key]
    (tmp_path / "tls.pem").write_bytes(Path(setup.https.ca_file).read_bytes())
    runtime = setup.runtime(f"{key} = {text}", tls_ca=False)
    try:
        got, baseline = probe(runtime.profiles["other"]), probe(runtime.profiles[None])
    finally:
        import asyncio

        asyncio.run(runtime.aclose())
    if expected == "TLS":
        assert got == str(tmp_path / "tls.pem") and baseline is None
        return
    assert got == expected
    assert baseline != expected, f"{key}: pick a test value that differs from the default"


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("key", sorted(GLOBAL_ONLY))
def test_a_global_only_key_is_refused_in_a_profile(key: str, tmp_path: Path) -> None:
    spec = VERIFICATION_KEYS[key]
    value = {"bool": "true", "paths": '["x.pem"]', "path": '"x.pem"', "int": "10"}.get(
        spec.kind, '"fail"' if key == "crl_unavailable" else "true"
    )
    config = tmp_path / "shaken.toml"
    config.write_text(f'[profile.carrier]\nbehavior = "verify"\n{key} = {value}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (problem,) = caught.value.problems
    assert str(problem).startswith(f"{config}:3: profile.carrier.{key}: cannot be set in a profile")
    assert "[verification]" in str(problem) or "behavior" in str(problem)


def test_backend_key_covers_only_settings_that_differ() -> None:
    """A guard for the wiring's grouping: its fields are exactly the per-profile fetch, cache
    and validation settings, so a new such setting must be added there too."""
    from shaken.adapters.wiring import _BackendKey

    assert {f.name for f in dataclasses.fields(_BackendKey)} == {
        "policy",
        "limits",
        "tls_ca_file",
        "min_ttl",
        "max_ttl",
        "negative_ttl",
        "require_tnauthlist",
        "enforce_certificate_profile",
    }
