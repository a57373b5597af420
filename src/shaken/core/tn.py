"""Telephone numbers and URIs as RFC 8224 section 8 compares them.

A PASSporT names its parties as ``{"tn": ...}`` or ``{"uri": ...}``. A verifier must derive the
same identities from the SIP request (From, P-Asserted-Identity, To, Request-URI) and compare.
This module does both halves: it canonicalizes TNs (section 8.3), normalizes other URIs (section
8.5), decides which of the two a SIP URI is (section 8.1), and reads the addresses out of SIP
header values.

The SIP name-addr parsing here is hand-written because it is a few lines of RFC 3261 grammar
that no maintained library offers without a whole SIP stack; the grammar is quoted where used.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from shaken.core.fastinit import positional_constructor

__all__ = [
    "NANP",
    "NameAddr",
    "NumberingPlan",
    "PartyIdentity",
    "canonicalize_tn",
    "identity_from_header",
    "identity_from_uri",
    "is_valid_tn",
    "normalize_uri",
    "parse_name_addr",
]

_TN_CHARS = frozenset("0123456789#*")
_VISUAL_SEPARATORS = re.compile(r"[-.()\s]")
# RFC 3966 local numbers and RFC 8224 8.1 "local policy": a user part made of an optional '+',
# digits, '#', '*' and visual separators is taken as a telephone number.
_DIALABLE = re.compile(r"\+?[0-9#*]+")
# RFC 3986 section 2.3 unreserved characters, which percent-decoding may restore.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")


def canonicalize_tn(text: str) -> str:
    """RFC 8224 section 8.3 step 1: keep only digits, ``#`` and ``*``.

    Drops ``+``, dashes, dots, parentheses, spaces and anything else. The result may be empty.
    """
    if text.isdigit() and text.isascii():
        return text
    return "".join(ch for ch in text if ch in _TN_CHARS)


def is_valid_tn(tn: str) -> bool:
    """True for a canonical TN: 1 or more of ``0-9#*`` (RFC 8224 ``tn-spec``)."""
    return bool(tn) and all(ch in _TN_CHARS for ch in tn)


@dataclass(frozen=True, slots=True, kw_only=True)
class NumberingPlan:
    """RFC 8224 section 8.3 step 2: how to turn national numbers into E.164 form.

    ``country_code`` is prepended to canonical numbers whose length is in ``national_lengths``;
    ``international_prefixes`` (such as ``011`` in NANP or ``00`` elsewhere) are stripped from
    numbers that start with them; ``trunk_prefix`` (such as ``0``) is removed before prepending
    the country code. Numbers that fit no rule (911, 112) are left unchanged.
    """

    country_code: str
    national_lengths: tuple[int, ...] = ()
    international_prefixes: tuple[str, ...] = ()
    trunk_prefix: str = ""

    def __post_init__(self) -> None:
        if not self.country_code.isdigit():
            raise ValueError("country_code must be digits")

    def to_e164(self, tn: str) -> str:
        """The E.164 form of a canonical ``tn`` (no ``+``)."""
        if not tn.isdigit():
            return tn
        for prefix in self.international_prefixes:
            if tn.startswith(prefix) and len(tn) > len(prefix) + 6:
                return tn[len(prefix) :]
        national = tn
        if self.trunk_prefix and national.startswith(self.trunk_prefix):
            stripped = national[len(self.trunk_prefix) :]
            if len(stripped) in self.national_lengths:
                national = stripped
        if len(national) in self.national_lengths:
            return self.country_code + national
        return tn


#: North American Numbering Plan: ``2155551212`` -> ``12155551212``; ``011 44...`` -> ``44...``.
NANP = NumberingPlan(country_code="1", national_lengths=(10,), international_prefixes=("011",))


@dataclass(frozen=True, slots=True, kw_only=True)
class PartyIdentity:
    """One side of a call as RFC 8225 names it: a canonical ``tn`` or a normalized ``uri``.

    ``anonymous`` is set for RFC 3323 anonymous identities (``sip:anonymous@anonymous.invalid``,
    user ``anonymous``), which have neither.
    """

    tn: str | None = None
    uri: str | None = None
    anonymous: bool = False

    def __post_init__(self) -> None:
        if (self.tn is None) == (self.uri is None) and not self.anonymous:
            raise ValueError("a party identity has exactly one of tn and uri")

    def __str__(self) -> str:
        if self.anonymous:
            return "anonymous"
        return self.tn if self.tn is not None else str(self.uri)


@dataclass(frozen=True, slots=True, kw_only=True)
class NameAddr:
    """A parsed From/To/PAI/Contact value: ``"Display" <uri>;params`` or ``uri;params``."""

    display_name: str | None
    uri: str
    params: str = ""
    bracketed: bool = True

    def format(self, *, uri: str | None = None, display_name: str | None = None) -> str:
        """Serialize, optionally with a different URI or display name."""
        name = self.display_name if display_name is None else display_name
        target = self.uri if uri is None else uri
        out = f"<{target}>"
        if name:
            escaped = name.replace("\\", "\\\\").replace('"', '\\"')
            out = f'"{escaped}" {out}'
        return out + self.params


#: NameAddr positionally: every request's P-Asserted-Identity or From is parsed into one
#: (:mod:`shaken.core.fastinit` says why).
_make_name_addr: Callable[..., NameAddr] = positional_constructor(NameAddr)


def parse_name_addr(value: str) -> NameAddr:
    """Parse an RFC 3261 ``name-addr`` or ``addr-spec`` with header parameters.

    ``name-addr = [ display-name ] LAQUOT addr-spec RAQUOT``; ``display-name`` is a quoted
    string or tokens. Without angle brackets, everything after the first ``;`` is a header
    parameter (RFC 3261 section 20.10), not a URI parameter.

    :raises ValueError: no URI could be found.
    """
    text = value.strip()
    display: str | None = None
    close = text.find('"', 1) if text.startswith('"') else -1
    if close > 0 and "\\" not in text[1:close]:
        # A quoted display name without escapes (nearly all): its text is what the quotes hold.
        display = text[1:close]
        text = text[close + 1 :].strip()
    elif text.startswith('"'):
        i, chars = 1, []
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text):
                i += 1
            chars.append(text[i])
            i += 1
        if i >= len(text):
            raise ValueError("unterminated display name")
        display = "".join(chars)
        text = text[i + 1 :].strip()
    lt = text.find("<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise ValueError("missing '>'")
        if display is None:
            display = text[:lt].strip() or None
        uri = text[lt + 1 : gt].strip()
        params = text[gt + 1 :].strip()
        bracketed = True
    else:
        uri, sep, rest = text.partition(";")
        uri = uri.strip()
        params = sep + rest if sep else ""
        bracketed = False
    if not uri or ":" not in uri:
        raise ValueError(f"no URI in {value!r}")
    return _make_name_addr(display, uri, params, bracketed)  # NameAddr's fields, in order


def _pct_decode_unreserved(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    return _PCT.sub(repl, text)


def _split_sip_uri(uri: str) -> tuple[str, str, str, str]:
    """(scheme, user, host, uri-parameters) of a sip/sips URI; user may be empty."""
    scheme, _, rest = uri.partition(":")
    rest, _, _headers = rest.partition("?")
    userinfo, at, hostport = rest.rpartition("@")
    if not at:
        userinfo, hostport = "", rest
    hostport, _, params = hostport.partition(";")
    user = userinfo.partition(":")[0]  # drop any password (RFC 8224 8.5)
    if hostport.startswith("["):
        host = hostport[: hostport.find("]") + 1]
    else:
        host = hostport.partition(":")[0]
    return scheme.lower(), user, host, params


def normalize_uri(uri: str) -> str:
    """RFC 8224 section 8.5: ``scheme:user@host`` lowercased, unreserved octets decoded.

    Password, port, URI parameters and headers are dropped. Non-SIP URIs are lowercased in
    scheme only and otherwise kept.
    """
    scheme, sep, rest = uri.strip().partition(":")
    if not sep:
        return uri.strip()
    if scheme.lower() not in ("sip", "sips"):
        return f"{scheme.lower()}:{_pct_decode_unreserved(rest)}"
    scheme, user, host, _params = _split_sip_uri(uri.strip())
    user = _pct_decode_unreserved(user.partition(";")[0]).lower()
    host = host.lower()
    return f"{scheme}:{user}@{host}" if user else f"{scheme}:{host}"


def _uri_params(params: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in params.split(";"):
        if item:
            key, _, val = item.partition("=")
            out[key.strip().lower()] = val.strip()
    return out


def identity_from_uri(
    uri: str, *, plan: NumberingPlan | None = None, numeric_user_is_tn: bool = True
) -> PartyIdentity:
    """Classify and canonicalize one URI per RFC 8224 section 8.1.

    A ``tel:`` URI, or a ``sip:``/``sips:`` URI with ``user=phone``, is a telephone number; so
    is (by local policy, on by default as SHAKEN practice) a SIP user part that is dialable
    digits with an optional ``+``. Anything else is a URI, normalized per section 8.5.

    Cached as :func:`identity_from_header` is: a verifier reads the Request-URI of every
    INVITE (the called party, check 10), and the calls to one number carry the same one.
    """
    if len(uri) > CACHED_HEADER_CHARS:
        return _identity_from_uri.__wrapped__(uri, plan, numeric_user_is_tn)
    return _identity_from_uri(uri, plan, numeric_user_is_tn)


@functools.lru_cache(maxsize=8192)
def _identity_from_uri(
    uri: str, plan: NumberingPlan | None, numeric_user_is_tn: bool
) -> PartyIdentity:
    text = uri.strip()
    scheme, _, rest = text.partition(":")
    scheme = scheme.lower()
    if scheme == "tel":
        number = rest.partition(";")[0]
        return _tn_identity(number, plan)
    if scheme in ("sip", "sips"):
        _, user, host, params = _split_sip_uri(text)
        # A user part may carry tel parameters: sip:+1215...;verstat=...@host (3GPP TS 24.229).
        user_number = unquote(user.partition(";")[0])
        if user_number.lower() == "anonymous" or host.lower() == "anonymous.invalid":
            return PartyIdentity(anonymous=True)
        phone = _uri_params(params).get("user", "").lower() == "phone"
        compact = _VISUAL_SEPARATORS.sub("", user_number)
        if (phone and canonicalize_tn(user_number)) or (
            numeric_user_is_tn and _DIALABLE.fullmatch(compact)
        ):
            return _tn_identity(user_number, plan)
        return PartyIdentity(uri=normalize_uri(text))
    return PartyIdentity(uri=normalize_uri(text))


def _tn_identity(number: str, plan: NumberingPlan | None) -> PartyIdentity:
    tn = canonicalize_tn(number)
    if not tn:
        return PartyIdentity(anonymous=True)
    if plan is not None and not number.lstrip().startswith("+"):
        tn = plan.to_e164(tn)
    return PartyIdentity(tn=tn)


# The shapes most SBCs send: an optional display name, then <tel:+digits> or
# <sip:+digits@host;params>, then header parameters. One match gives the TN; anything else
# (separators, escapes, non-numeric users, user=phone off) takes the general parser.
_COMMON_TN_HEADER = re.compile(
    r'\s*(?:"[^"\\]*"\s*|[^"<]*)<(?:tel:(\+?)([0-9]+)(?:;[^>@]*)?|sips?:(\+?)([0-9]+)@[^>]*)>[^<>]*'
)


def identity_from_header(
    value: str, *, plan: NumberingPlan | None = None, numeric_user_is_tn: bool = True
) -> PartyIdentity:
    """The party identity of a From/To/P-Asserted-Identity header value.

    Cached: P-Asserted-Identity and To values carry no per-call tag, so a verifier sees the
    same few values again and again (From values with tags simply miss). Values longer than
    :data:`CACHED_HEADER_CHARS` are parsed but not kept, so the cache holds at most
    8192 x that many characters (and what was parsed from them), whatever callers send.

    :raises ValueError: the value holds no URI.
    """
    if len(value) > CACHED_HEADER_CHARS:
        return _identity_from_header.__wrapped__(value, plan, numeric_user_is_tn)
    return _identity_from_header(value, plan, numeric_user_is_tn)


#: The longest header value :func:`identity_from_header` caches (a real one is far shorter).
CACHED_HEADER_CHARS = 512


@functools.lru_cache(maxsize=8192)
def _identity_from_header(
    value: str, plan: NumberingPlan | None, numeric_user_is_tn: bool
) -> PartyIdentity:
    common = _COMMON_TN_HEADER.fullmatch(value) if numeric_user_is_tn else None
    if common is not None and "anonymous" not in value.lower():
        plus_tel, tel, plus_sip, sip = common.groups()
        tn, plus = (tel, plus_tel) if tel is not None else (sip, plus_sip)
        if plan is not None and not plus:
            tn = plan.to_e164(tn)
        return PartyIdentity(tn=tn)
    return identity_from_uri(
        parse_name_addr(value).uri, plan=plan, numeric_user_is_tn=numeric_user_is_tn
    )
