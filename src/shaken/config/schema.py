"""The keys of a shaken configuration file, their types and their checks.

What an unset key means is not written here: it is the default of the typed settings
(:mod:`shaken.config.typed`) or of the dataclass a key feeds.

The object model is Asterisk's ``stir_shaken.conf`` in TOML (docs/architecture.md
section 7): ``[attestation]`` and ``[verification]`` hold global
defaults, ``[profile.NAME]`` overrides any of them for the calls a profile applies to,
``[tn."TN"]`` and ``[tn_range.NAME]`` give per-number signing data, ``[brand.NAME]`` a vetted
brand for branded calling (RFC 9795) that a TN, range or profile names, ``[api_key.NAME]`` the REST
clients, ``[server]`` the listeners. Every key is optional: an unset key inherits, which is why
booleans here are tri-state by construction (absent, true, false), unlike Asterisk's
``not_set`` strings. Unknown keys and bad values are errors; nothing falls back silently
(Asterisk's ``failure_action`` typo that silently meant ``continue`` is the counter-example).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shaken.core.reasons import Reason
from shaken.core.tn import is_valid_tn

__all__ = [
    "ACTION_KEYS",
    "ATTESTATION_KEYS",
    "BRAND_KEYS",
    "GLOBAL_ONLY",
    "GLOBAL_PROFILE",
    "REVOCATION_KEYS",
    "REVOCATION_MODES",
    "VERIFICATION_KEYS",
    "Behavior",
    "Spec",
    "revocation_conflict",
    "revocation_of",
    "revocation_spellings",
]

Check = Callable[[Any], str | None]

#: The name of the global settings (no ``[profile]``) wherever a profile is named: a listener
#: bound to it in ``[server] listener_profiles``, ``shaken config show --effective global``,
#: the call log's profile column.
GLOBAL_PROFILE = "global"


class Behavior(enum.StrEnum):
    """Which directions a profile runs (``[profile.NAME] behavior``; Asterisk endpoint_behavior)."""

    SIGN = "sign"
    VERIFY = "verify"
    BOTH = "both"
    OFF = "off"

    @property
    def signs(self) -> bool:
        return self is Behavior.SIGN or self is Behavior.BOTH

    @property
    def verifies(self) -> bool:
        return self is Behavior.VERIFY or self is Behavior.BOTH


@dataclass(frozen=True, slots=True)
class Spec:
    """One key: its TOML type name, a check returning an error text or None, and a help line."""

    kind: str
    check: Check
    help: str


def _typed(kind: str, test: Callable[[Any], bool]) -> Check:
    def check(value: Any) -> str | None:
        return None if test(value) else f"expected {kind}, got {type(value).__name__} {value!r}"

    return check


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bool() -> Check:
    return _typed("true or false", _is_bool)


def _int(minimum: int = 0, maximum: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if not _is_int(value):
            return f"expected an integer, got {type(value).__name__} {value!r}"
        if value < minimum or (maximum is not None and value > maximum):
            upper = "" if maximum is None else f" and at most {maximum}"
            return f"must be at least {minimum}{upper}, got {value}"
        return None

    return check


def _number(minimum: float) -> Check:
    def check(value: Any) -> str | None:
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return f"expected a number, got {type(value).__name__} {value!r}"
        return None if value > minimum else f"must be more than {minimum}, got {value}"

    return check


def _string(nonempty: bool = True) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"expected a string, got {type(value).__name__} {value!r}"
        return "must not be empty" if nonempty and not value.strip() else None

    return check


def _choice(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"

    return check


def _list(item: Check, nonempty: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"expected an array, got {type(value).__name__} {value!r}"
        if nonempty and not value:
            return "must not be empty"
        for i, element in enumerate(value):
            problem = item(element)
            if problem is not None:
                return f"item {i}: {problem}"
        return None

    return check


def _x5u(value: Any) -> str | None:
    """A signing x5u: what every verifier's URL policy accepts, whatever host and port.

    ATIS-1000074 and RFC 8224 verifiers fetch https only and refuse userinfo, a query or a
    fragment; a signature pointing at such a URL fails at every peer, so it is refused here.
    The port is left to the operator (a lab repository runs on any port; SHAKEN verifiers
    accept 443 and 8443).
    """
    problem = _string()(value)
    if problem is not None:
        return problem
    if any(ch in value for ch in ' <>;\t"') or not value.isascii():
        return f"must not contain spaces, quotes, '<', '>' or ';': {value!r}"
    parts = urlsplit(value)
    if parts.scheme.lower() != "https" or not parts.hostname:
        return f"must be an https URL (verifiers fetch nothing else), got {value!r}"
    if "@" in parts.netloc:
        return f"must not carry a user name or password: {value!r}"
    if parts.query or "?" in value:
        return f"must not have a query string (verifiers refuse one): {value!r}"
    if parts.fragment or "#" in value:
        return f"must not have a fragment (verifiers refuse one): {value!r}"
    return None


def _tn(value: Any) -> str | None:
    problem = _string()(value)
    if problem is not None:
        return problem
    if not is_valid_tn(value) or len(value) > 15:
        return f"must be a canonical TN (1 to 15 of 0-9, #, *), got {value!r}"
    return None


def _network(value: Any) -> str | None:
    problem = _string()(value)
    if problem is not None:
        return problem
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"must be an IP address or CIDR network, got {value!r}"
        return (
            f"{value!r} has host bits set: it would mean {network} (write the network address,"
            " or /32 (/128) for one host)"
        )
    return None


SIP_TRANSPORTS = ("udp", "tcp", "tls")
HTTP_TRANSPORTS = ("http", "https")


def _listen(*transports: str) -> Check:
    """``TRANSPORT:HOST:PORT`` (IPv6 hosts in brackets), one of ``transports``."""
    example = f"{transports[0]}:127.0.0.1:{5060 if transports[0] == 'udp' else 8080}"

    def check(value: Any) -> str | None:
        problem = _string()(value)
        if problem is not None:
            return problem
        transport, _, rest = value.partition(":")
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            return f"must look like {example!r}, got {value!r}"
        if transport not in transports:
            kind = "a SIP" if transports == SIP_TRANSPORTS else "an HTTP"
            names = ", ".join(transports[:-1]) + f" or {transports[-1]}"
            return f"{value!r} is not {kind} listener ({names})"
        if not 0 < int(port) < 65536:
            return f"port out of range in {value!r}"
        return None

    return check


def _hex64(value: Any) -> str | None:
    ok = isinstance(value, str) and len(value) == 64
    ok = ok and all(c in "0123456789abcdef" for c in value.lower())
    return None if ok else "must be the SHA-256 of the key, as 64 hex digits"


ATTEST = _choice("A", "B", "C")

#: The one revocation setting (``revocation``); ``require_crl`` and ``crl_unavailable`` are
#: its old spellings, still accepted.
REVOCATION_MODES = ("off", "soft", "hard")
REVOCATION_KEYS = ("revocation", "require_crl", "crl_unavailable")


def _spelled(values: Mapping[str, Any]) -> dict[str, str]:
    """The revocation mode each revocation key set in ``values`` stands for."""
    found: dict[str, str] = {}
    if values.get("revocation") in REVOCATION_MODES:
        found["revocation"] = values["revocation"]
    if values.get("require_crl") is True:
        found["require_crl"] = "hard"
    if values.get("crl_unavailable") in ("pass", "fail"):
        found["crl_unavailable"] = "hard" if values["crl_unavailable"] == "fail" else "soft"
    return found


def revocation_of(values: Mapping[str, Any]) -> str:
    """The revocation mode of a ``[verification]`` table, a profile or an effective profile.

    ``revocation`` when it is set; otherwise the old spellings, which were ORed: ``require_crl
    = true`` or ``crl_unavailable = "fail"`` is ``"hard"``; otherwise ``"soft"``.
    """
    spelled = _spelled(values)
    if "revocation" in spelled:
        return spelled["revocation"]
    return "hard" if "hard" in spelled.values() else "soft"


def revocation_conflict(values: Mapping[str, Any]) -> str | None:
    """Why the revocation keys set in one table contradict each other, or None."""
    spelled = _spelled(values)
    if len(set(spelled.values())) < 2:
        return None
    said = ", ".join(f'{key} means "{mode}"' for key, mode in spelled.items())
    return f"the revocation keys contradict each other ({said}); set only revocation"


def revocation_spellings(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, explanation) for each old spelling of ``revocation`` set in one table."""
    return [
        (key, f'the old spelling of revocation = "{mode}"; write that instead')
        for key, mode in _spelled(values).items()
        if key != "revocation"
    ]


ATTESTATION_KEYS: dict[str, Spec] = {
    "enabled": Spec("bool", _bool(), "sign calls at all (Asterisk global_disable, inverted)"),
    "private_key": Spec("path", _string(), "PEM P-256 private key (file mode 0600)"),
    "x5u": Spec("url", _x5u, "certificate URL put in x5u and info (Asterisk public_cert_url)"),
    "attest": Spec("A|B|C", ATTEST, "attestation for known TNs (Asterisk attest_level)"),
    "unknown_tn_attest": Spec(
        "A|B|C", ATTEST, "sign TNs with no [tn] entry at this level; unset: do not sign them"
    ),
    "check_x5u_at_load": Spec(
        "bool", _bool(), "at load, fetch x5u and check it matches the key and is valid"
    ),
}

VERIFICATION_KEYS: dict[str, Spec] = {
    "enabled": Spec("bool", _bool(), "verify calls at all (Asterisk global_disable, inverted)"),
    "trust_anchors": Spec(
        "paths", _list(_string()), "STI-CA roots: PEM files or directories of plain PEM files"
    ),
    "trust_list": Spec("path", _string(), "an STI-PA signed trust list (JWT) of STI-CA roots"),
    "sti_pa_certificate": Spec(
        "path", _string(), "the STI-PA certificate the trust list is checked with"
    ),
    "revocation": Spec(
        "off|soft|hard",
        _choice(*REVOCATION_MODES),
        "CRL checking: soft applies the CRLs that can be had and says so in the"
        " result when a status is unknown; hard fails such a chain; off checks none",
    ),
    "crl_files": Spec(
        "paths", _list(_string()), "CRLs (PEM or DER) applied with the fetched ones; re-read"
    ),
    "crl_refresh": Spec(
        "seconds",
        _int(60, 86400),
        "how often CRLs are fetched again, whatever their nextUpdate (at most a day)",
    ),
    "require_crl": Spec("bool", _bool(), 'old spelling: true is revocation = "hard"'),
    "crl_unavailable": Spec(
        "pass|fail",
        _choice("pass", "fail"),
        'old spelling: "fail" is revocation = "hard", "pass" is revocation = "soft"',
    ),
    "cache_dir": Spec("path", _string(), "certificate cache directory (Asterisk cert_cache_dir)"),
    "fetch_timeout": Spec("seconds", _number(0), "total x5u fetch time (Asterisk curl_timeout)"),
    "max_fetch_bytes": Spec("int", _int(1024), "x5u body cap"),
    "min_cache_ttl": Spec("seconds", _int(0), "cache floor (ATIS-1000074: 24 h)"),
    "max_cache_ttl": Spec("seconds", _int(1), "cache ceiling"),
    "max_cache_entries": Spec("int", _int(1), "cache size bound (Asterisk max_cache_size)"),
    "negative_cache_ttl": Spec("seconds", _int(0), "how long a failed fetch is remembered"),
    "max_iat_age": Spec("seconds", _int(1), "iat freshness window (Asterisk max_iat_age)"),
    "max_future_skew": Spec("seconds", _int(0), "how far ahead iat or Date may be"),
    "max_date_age": Spec("seconds", _int(1), "Date freshness (Asterisk max_date_header_age)"),
    "date_header": Spec(
        "policy",
        _choice("check_if_present", "require", "ignore"),
        "Date header policy (Asterisk ignore_sip_date_header)",
    ),
    "full_form_only": Spec("bool", _bool(), "refuse the compact form (SHAKEN)"),
    "accepted_ppt": Spec("list", _list(_string(), nonempty=True), "PASSporT types to verify"),
    "caller_sources": Spec(
        "list", _list(_choice("pai", "from"), nonempty=True), "where the caller TN comes from"
    ),
    "called_sources": Spec(
        "list", _list(_choice("to", "request_uri"), nonempty=True), "where the called TN comes from"
    ),
    "numbering_plan": Spec("none|nanp", _choice("none", "nanp"), "national numbers to E.164"),
    "numeric_user_is_tn": Spec("bool", _bool(), "treat numeric SIP users as TNs (RFC 8224 8.1)"),
    "check_dest": Spec("bool", _bool(), "compare dest with To / Request-URI"),
    "x5u_allowed_ports": Spec("list", _list(_int(1, 65535), nonempty=True), "x5u ports"),
    "x5u_allow_http": Spec("bool", _bool(), "LAB ONLY: allow http x5u URLs"),
    "x5u_any_port": Spec("bool", _bool(), "LAB ONLY: allow any x5u port"),
    "x5u_allowed_hosts": Spec(
        "list", _list(_string()), "hosts allowed despite special-purpose addresses (labs)"
    ),
    "tls_ca_file": Spec("path", _string(), "extra CA for x5u TLS (a lab repository)"),
    "require_tnauthlist": Spec("bool", _bool(), "refuse certificates without TNAuthList"),
    "enforce_certificate_profile": Spec("bool", _bool(), "refuse ATIS-1000080 profile errors"),
    "replay_check": Spec("bool", _bool(), "refuse a PASSporT seen within the window"),
    "max_div_iat_age": Spec("seconds", _int(1), "freshness of div PASSporTs (transfers)"),
    "tag_verstat": Spec("bool", _bool(), "add verstat to P-Asserted-Identity/From"),
    "reason_protocol": Spec(
        "STIR|SIP", _choice("STIR", "SIP"), "Reason header protocol (RFC 9410 STIR, or SIP)"
    ),
    "rcd_verify": Spec("bool", _bool(), "check Rich Call Data of verified calls (RFC 9795)"),
    "rcd_display": Spec(
        "off|replace|prefix",
        _choice("off", "replace", "prefix"),
        "show a verified brand: display name := nam, or rcd_display_prefix + nam",
    ),
    "rcd_display_prefix": Spec(
        "string", _string(nonempty=False), "prefix of a verified brand name ('(Verified) ')"
    ),
    "rcd_call_info": Spec("bool", _bool(), "add RFC 9796 Call-Info for a verified brand"),
    "rcd_require_integrity": Spec(
        "bool", _bool(), "refuse a brand whose referenced content has no rcdi digest"
    ),
    "rcd_max_crn_length": Spec("int", _int(1, 1024), "longest call reason (crn) accepted"),
    "rcd_cache_ttl": Spec("seconds", _int(1), "how long fetched logos and jCards are kept"),
}

ACTION_KEYS: dict[str, Spec] = {
    "action": Spec(
        "action",
        _choice("continue", "reject", "continue_with_reason", "alert"),
        "what the call gets for this outcome",
    ),
    "reject_code": Spec("int", _int(400, 699), "SIP code when rejecting (default: the Reason's)"),
    "reject_phrase": Spec("string", _string(), "SIP reason phrase when rejecting"),
    "display_prefix": Spec("string", _string(nonempty=False), "alert: caller display-name prefix"),
    "display_suffix": Spec("string", _string(nonempty=False), "alert: caller display-name suffix"),
}
OUTCOMES = ("verified", "missing", "failed", "not_checked")
REASON_NAMES = tuple(r.value for r in Reason)

#: ``[verification]`` keys that only the global section may set, and why. One trust store (the
#: anchors, the STI-PA certificate, the CRLs and how strictly revocation is checked) and one
#: certificate store serve every profile, so a per-profile value could not take effect; a
#: profile that sets one is refused rather than ignored.
GLOBAL_ONLY: dict[str, str] = {
    "enabled": "verification is switched off per profile with behavior",
    **dict.fromkeys(
        (
            "trust_anchors",
            "trust_list",
            "sti_pa_certificate",
            "crl_files",
            "revocation",
            "crl_refresh",
            "require_crl",
            "crl_unavailable",
        ),
        "one trust store and one revocation setting serve every profile; set it in [verification]",
    ),
    **dict.fromkeys(
        ("cache_dir", "max_cache_entries"),
        "one certificate store serves every profile; set it in [verification]",
    ),
}

PROFILE_KEYS: dict[str, Spec] = {
    "behavior": Spec(
        "sign|verify|both|off",
        _choice(*(b.value for b in Behavior)),
        "which directions this profile runs (Asterisk endpoint_behavior)",
    ),
    "sources": Spec("list", _list(_network), "source addresses (CIDR) this profile applies to"),
    "header_value": Spec("string", _string(), "value of the profile-selecting SIP header"),
    **{k: v for k, v in ATTESTATION_KEYS.items() if k != "enabled"},
    **{k: v for k, v in VERIFICATION_KEYS.items() if k not in GLOBAL_ONLY},
}

_BRAND_REF = Spec("name", _string(), "the [brand.NAME] vetted for these numbers (RFC 9795)")
PROFILE_KEYS["brand"] = _BRAND_REF

TN_KEYS: dict[str, Spec] = {
    "private_key": ATTESTATION_KEYS["private_key"],
    "x5u": ATTESTATION_KEYS["x5u"],
    "attest": ATTESTATION_KEYS["attest"],
    "brand": _BRAND_REF,
}
BRAND_KEYS: dict[str, Spec] = {
    "nam": Spec("string", _string(), "the vetted display name (rcd nam)"),
    "apn": Spec("string", _string(), "alternate presentation number (rcd apn)"),
    "icn": Spec("url", _x5u, "URL of the logo (rcd icn); https, as verifiers fetch it"),
    "icn_file": Spec("path", _string(), "local copy of the logo published at icn (for rcdi)"),
    "jcl": Spec("url", _x5u, "URL of the brand's jCard (rcd jcl)"),
    "jcl_file": Spec("path", _string(), "local copy of the jCard published at jcl (for rcdi)"),
    "jcd_file": Spec("path", _string(), "a jCard (RFC 7095 JSON) signed inline (rcd jcd)"),
    "crn": Spec("string", _string(), "the call reason signed by default (crn)"),
    "call_reasons": Spec("list", _list(_string()), "other call reasons a request may ask for"),
    "ppt": Spec(
        "shaken|rcd|both",
        _choice("shaken", "rcd", "both"),
        "claims in the SHAKEN PASSporT (default), a separate ppt=rcd one, or both",
    ),
    "digest": Spec("alg", _choice("sha256", "sha384", "sha512"), "rcdi digest algorithm"),
}
TN_RANGE_KEYS: dict[str, Spec] = {
    "start": Spec("TN", _tn, "first TN of the range"),
    "count": Spec("int", _int(1), "how many TNs from start"),
    **TN_KEYS,
}
API_KEY_KEYS: dict[str, Spec] = {
    "sha256": Spec("hex", _hex64, "SHA-256 of the API key (the key itself is never stored)"),
    "tns": Spec("list", _list(_tn), "TNs this key may sign for (empty: none by TN)"),
    "spcs": Spec("list", _list(_string()), "SPCs whose certificates this key may sign with"),
    "profiles": Spec("list", _list(_string()), "profiles this key may use"),
    "may_verify": Spec("bool", _bool(), "this key may call the verification API"),
    "rate_per_second": Spec(
        "number", _number(0), "requests per second allowed, bursts of one second (default: any)"
    ),
    "admin": Spec("bool", _bool(), "this key may read GET /dashboard and its data (default false)"),
}


def _listener_profiles(value: Any) -> str | None:
    """A table of SIP listener -> profile name (:data:`GLOBAL_PROFILE`: the global settings)."""
    if not isinstance(value, dict):
        return f"expected a table of listener = profile, got {type(value).__name__}"
    for listener, profile in value.items():
        problem = _listen(*SIP_TRANSPORTS)(listener)
        if problem is not None:
            return problem
        problem = _string()(profile)
        if problem is not None:
            return f"{listener}: {problem}"
    return None


def _call_log(value: Any) -> str | None:
    """A file path, or a PostgreSQL URL (which needs the psycopg driver installed)."""
    problem = _string()(value)
    if problem is not None:
        return problem
    scheme = value.partition("://")[0].lower() if "://" in value else ""
    if not scheme:
        return None
    if scheme not in ("postgresql", "postgres"):
        return f"must be a file path or a postgresql:// URL, got a {scheme}:// URL"
    return _needs("psycopg", "a postgresql:// call log")


def _redis_url(value: Any) -> str | None:
    problem = _string()(value)
    if problem is not None:
        return problem
    scheme = value.partition("://")[0].lower()
    if scheme not in ("redis", "rediss", "unix") or "://" not in value:
        return "must be a redis://, rediss:// or unix:// URL"
    return _needs("redis", "shared_state")


def _needs(module: str, what: str) -> str | None:
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec(module) is None:
        return f"{what} needs the {module} package: pip install 'shaken[scale]'"
    return None


LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_levels(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"expected a table of logger = level, got {type(value).__name__}"
    for name, level in value.items():
        if name != "shaken" and not name.startswith("shaken."):
            return f"{name!r} is not a shaken logger (shaken, shaken.sip, shaken.serve, ...)"
        if level not in LOG_LEVELS:
            return f"{name}: must be one of {', '.join(LOG_LEVELS)}, got {level!r}"
    return None


SERVER_KEYS: dict[str, Spec] = {
    "sip_sign": Spec(
        "list", _list(_listen(*SIP_TRANSPORTS)), "SIP signing listeners, e.g. 'udp:127.0.0.1:5060'"
    ),
    "sip_verify": Spec("list", _list(_listen(*SIP_TRANSPORTS)), "SIP verification listeners"),
    "rest": Spec(
        "list", _list(_listen(*HTTP_TRANSPORTS)), "REST listeners, e.g. 'http:127.0.0.1:8080'"
    ),
    "profile_header": Spec("string", _string(), "SIP header naming the profile (last resort)"),
    "workers": Spec("int", _int(1, 64), "worker processes"),
    "max_in_flight": Spec("int", _int(1), "requests in progress before answering 503"),
    "tls_certificate": Spec("path", _string(), "TLS certificate for tls/https listeners"),
    "tls_key": Spec("path", _string(), "TLS private key for tls/https listeners"),
    "listener_profiles": Spec(
        "table",
        _listener_profiles,
        'bind SIP listeners to profiles: {"udp:127.0.0.1:5062" = "carrier"} ("global": none)',
    ),
    "max_message_size": Spec("bytes", _int(1024, 65535), "largest SIP message accepted (513)"),
    "retry_after": Spec("seconds", _int(1, 3600), "Retry-After of the overload 503"),
    # The call log and the state instances share (one block: several instances as one service).
    "call_log": Spec(
        "path|url", _call_log, "SQLite call log file, or a postgresql:// URL (several instances)"
    ),
    "call_log_spool": Spec(
        "path",
        _string(),
        "PostgreSQL log: where records wait while it is away (default: beside the cache)",
    ),
    "call_log_spool_max_records": Spec(
        "int", _int(1000), "PostgreSQL log: records the spool holds at most"
    ),
    "call_log_timeout": Spec(
        "seconds", _number(0), "PostgreSQL log: connect and statement timeout"
    ),
    "shared_state": Spec(
        "url",
        _redis_url,
        "redis:// URL: certificate cache, replay window and API-key rates across instances",
    ),
    "shared_state_timeout_ms": Spec(
        "ms",
        _int(1, 10000),
        "a shared-state operation longer than this falls back to the local form",
    ),
    "shared_state_prefix": Spec("string", _string(), "prefix of every shared-state key"),
    "call_log_flush_ms": Spec(
        "ms", _int(1, 10000), "call log batch window: commit at least this often"
    ),
    "call_log_retention_days": Spec(
        "days", _int(1, 36500), "delete call records older than this (default: keep them all)"
    ),
    "instance": Spec(
        "string", _string(), "this server's name in the call log (default: the host name)"
    ),
    "log_format": Spec(
        "text|json", _choice("text", "json"), "log lines as text or JSON, one per event"
    ),
    "log_level": Spec("level", _choice(*LOG_LEVELS), "level of every shaken logger; SIGHUP"),
    "log_levels": Spec(
        "table", _log_levels, 'levels of single loggers: {"shaken.sip" = "debug"}; SIGHUP'
    ),
    "verification_open": Spec("bool", _bool(), "REST verification needs no API key"),
    "api_schema": Spec(
        "atis|3gpp|auto",
        _choice("atis", "3gpp", "auto"),
        "REST JSON schema: ATIS-1000082, 3GPP TS 24.229 Ms, or by request shape",
    ),
    # SIP robustness: memory, connections and overload (one block).
    "transaction_memory": Spec(
        "bytes",
        _int(65536),
        "bytes of SIP answers kept for retransmissions per worker",
    ),
    "tcp_connections_per_source": Spec(
        "int", _int(1), "SIP TCP/TLS connections one source address may hold"
    ),
    "tcp_message_timeout": Spec(
        "seconds", _number(0), "a SIP message over TCP/TLS must arrive whole within"
    ),
    "udp_max_age_ms": Spec(
        "ms",
        _int(1, 10000),
        "a UDP request queued longer than this is shed before any work",
    ),
    "overload_answer": Spec(
        "503|drop",
        _choice("503", "drop"),
        "what a shed request gets: 503 with Retry-After, or nothing",
    ),
    "udp_receive_buffer": Spec(
        "bytes",
        _int(4096, 2**30),
        "SO_RCVBUF of the SIP UDP sockets (the kernel doubles it)",
    ),
    # What a REST client may hold and for how long, and the descriptors a worker keeps free.
    "rest_header_timeout": Spec(
        "seconds", _number(0), "REST: a request's headers must arrive within this, else 408"
    ),
    "rest_body_timeout": Spec(
        "seconds", _number(0), "REST: its body within this of the headers, else 408"
    ),
    "rest_keep_alive_timeout": Spec(
        "seconds", _int(1, 3600), "REST: an idle kept-alive connection closes after this"
    ),
    "rest_keep_alive_requests": Spec(
        "int", _int(1), "REST: requests on one connection, then Connection: close"
    ),
    "rest_max_connections": Spec(
        "int", _int(1), "REST: connections per worker; more wait to be accepted"
    ),
    "rest_max_connections_per_source": Spec(
        "int", _int(1), "REST: connections per client address; more get 503"
    ),
    "descriptor_reserve": Spec(
        "int", _int(16), "descriptors a worker keeps from connections, for fetches"
    ),
}
REPOSITORY_KEYS: dict[str, Spec] = {
    "directory": Spec("path", _string(), "directory of chains and CRLs the repository serves"),
    "listen": Spec(
        "listen", _listen(*HTTP_TRANSPORTS), "repository listener, e.g. 'https:127.0.0.1:8443'"
    ),
    "tls_certificate": Spec("path", _string(), "repository TLS certificate"),
    "tls_key": Spec("path", _string(), "repository TLS key"),
    "max_age": Spec("seconds", _int(0), "Cache-Control max-age of served files"),
}


# --------------------------------------------------------------------------------------------
# The certificate lifecycle: [sti_pa], [acme], [lifecycle]. Per-CA differences from the RFCs are
# settings here with the RFC behaviour as the default (shaken.core.acme names each variant).


def _https_url(value: Any) -> str | None:
    problem = _string()(value)
    if problem is not None:
        return problem
    parts = urlsplit(value)
    if parts.scheme.lower() != "https" or not parts.hostname:
        return f"must be an https URL, got {value!r}"
    if "@" in parts.netloc:
        return f"must not carry a user name or password (use credentials_file): {value!r}"
    return None


def _x5u_base(value: Any) -> str | None:
    problem = _x5u(value)
    if problem is not None:
        return problem
    return None if value.endswith("/") else f"must end with '/' (a base URL), got {value!r}"


def _spc(value: Any) -> str | None:
    problem = _string()(value)
    if problem is not None:
        return problem
    ok = value.isascii() and all(c.isdigit() or c.isupper() for c in value)
    return None if ok else f"must be digits and uppercase letters (ATIS-1000080), got {value!r}"


def _country(value: Any) -> str | None:
    ok = isinstance(value, str) and len(value) == 2 and value.isascii() and value.isupper()
    return None if ok else f"must be an ISO 3166-1 alpha-2 code such as 'US', got {value!r}"


def _fraction(value: Any) -> str | None:
    if not (isinstance(value, int | float) and not isinstance(value, bool)):
        return f"expected a number, got {type(value).__name__} {value!r}"
    return None if 0 < value < 1 else f"must be between 0 and 1, got {value}"


def _argv(value: Any) -> str | None:
    problem = _list(_string(), nonempty=True)(value)
    if problem is not None:
        return problem
    return None if "{chain}" in " ".join(value) else "must pass the chain file: put '{chain}' in it"


STI_PA_KEYS: dict[str, Spec] = {
    "url": Spec("url", _https_url, "STI-PA API base URL (iconectiv: authenticate-api...)"),
    "account_id": Spec("string", _string(), "the STI-PA account id of /api/v1/account/{id}/token"),
    "credentials_file": Spec(
        "path", _string(), "TOML file (0600) with user_id and password; else the environment"
    ),
    "root_certificate": Spec(
        "path", _string(), "STI-PA root: check the SPC token's x5u chain and signature locally"
    ),
    "tls_ca_file": Spec("path", _string(), "LAB: the CA of the STI-PA's TLS certificate"),
    "auth_header": Spec(
        "raw|bearer", _choice("raw", "bearer"), "Authorization value: the raw token (iconectiv)"
    ),
    "token_accept": Spec(
        "type",
        _choice("application/json", "application/jose+json"),
        "Accept of the SPC token request",
    ),
    "token_path": Spec("path", _string(), "SPC token request path ({account_id} is replaced)"),
    "min_token_lifetime": Spec("seconds", _int(1), "refuse an SPC token expiring sooner"),
    "token_command": Spec(
        "argv",
        _list(_string(), nonempty=True),
        "get the SPC token from another host (the whitelisted one): {tkvalue} {fingerprint}"
        " {ca} are replaced; it prints the token (e.g. ssh pa-host shaken cert spc-token ...)",
    ),
    "timeout": Spec("seconds", _number(0), "per request"),
}

ACME_KEYS: dict[str, Spec] = {
    "directory": Spec("url", _https_url, "the STI-CA's ACME directory URL"),
    "account_key": Spec("path", _string(), "ACME account key (P-256, 0600; created once)"),
    "account_url": Spec("url", _https_url, "an account URL the CA issued (skips newAccount)"),
    "contact": Spec("list", _list(_string()), "account contacts, e.g. 'mailto:noc@example.com'"),
    "spc": Spec("SPC", _spc, "our Service Provider Code (the TNAuthList of the certificate)"),
    "org": Spec("string", _string(), "our legal name: the certificate subject's O"),
    "country": Spec("CC", _country, "the certificate subject's C"),
    "tnauthlist_encoding": Spec(
        "base64url|base64",
        _choice("base64url", "base64"),
        "identifier and tkvalue encoding (RFC 9448: base64url; iconectiv, Peeringhub: base64)",
    ),
    "fingerprint": Spec(
        "jwk_thumbprint|spki",
        _choice("jwk_thumbprint", "spki"),
        "account key fingerprint in the SPC token (RFC 8555 thumbprint; Peeringhub: spki)",
    ),
    "fingerprint_case": Spec(
        "upper|lower", _choice("upper", "lower"), "hex case of the fingerprint"
    ),
    "challenge_key": Spec(
        "atc|tkauth", _choice("atc", "tkauth"), "member of the tkauth-01 answer (RFC 9448: atc)"
    ),
    "post_as_get": Spec(
        "rfc|protected_only",
        _choice("rfc", "protected_only"),
        "POST-as-GET signing input (RFC 7515: 'protected.'; Peeringhub: protected only)",
    ),
    "jwk_kid": Spec("string", _string(), "a kid inside the new-account JWK (Peeringhub)"),
    "unique_cn": Spec("bool", _bool(), "CN 'SHAKEN <SPC> <time>' per certificate (Peeringhub)"),
    "csr_crl_url": Spec("url", _https_url, "request this CRL Distribution Point in the CSR"),
    "validity_days": Spec("days", _int(1, 3650), "ask for notAfter this far ahead (CA default)"),
    "enforce_profile": Spec("bool", _bool(), "refuse an issued certificate with profile errors"),
    "tls_ca_file": Spec("path", _string(), "LAB: the CA of the ACME server's TLS certificate"),
    "poll_timeout": Spec("seconds", _number(0), "give up waiting on the order after this"),
    "timeout": Spec("seconds", _number(0), "per request"),
}

LIFECYCLE_KEYS: dict[str, Spec] = {
    "directory": Spec("path", _string(), "generations: archive/<id>, current.json, state.json"),
    "publish": Spec(
        "directory|command",
        _choice("directory", "command"),
        "where new chains go: our STI-CR directory, or a command (the CA's hosted repository)",
    ),
    "publish_dir": Spec("path", _string(), "the directory `shaken repo serve` serves"),
    "x5u_base": Spec("url", _x5u_base, "base URL of the published chains (x5u = base + file)"),
    "publish_command": Spec(
        "argv", _argv, "argv run to publish: {chain} {name} {x5u} are replaced"
    ),
    "unpublish_command": Spec("argv", _list(_string(), nonempty=True), "argv to take one down"),
    "renew_fraction": Spec("fraction", _fraction, "renew once this much of the lifetime passed"),
    "renew_before_days": Spec(
        "days", _int(0, 3650), "or this many days before notAfter, if that is sooner"
    ),
    "warning_days": Spec("days", _int(0, 3650), "/readyz degrades this close to notAfter"),
    "retire_after": Spec(
        "seconds",
        _int(0),
        "the old chain stays published this long after the switch (at least the iat window"
        " + watch_interval + a reload margin, whatever is set)",
    ),
    "retry_min": Spec("seconds", _int(1), "first retry after a failed renewal"),
    "retry_max": Spec("seconds", _int(1), "longest retry interval"),
    "x5u_wait": Spec("seconds", _int(1), "give up on a new x5u that does not serve it after this"),
    "watch_interval": Spec("seconds", _number(0), "how often workers look at current.json"),
    "renew_in_serve": Spec("bool", _bool(), "`shaken serve` renews in the background"),
    "keep": Spec("int", _int(1, 100), "retired generations kept for rollback"),
}
