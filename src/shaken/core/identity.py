"""The SIP Identity header field value (RFC 8224 section 4).

ABNF (RFC 8224 section 4)::

    Identity = "Identity" HCOLON signed-identity-digest SEMI ident-info *( SEMI ident-info-params )
    signed-identity-digest = 1*(base64-char / ".")
    ident-info = "info" EQUAL ident-info-uri
    ident-info-uri = LAQUOT absoluteURI RAQUOT
    ident-info-params = ident-info-alg / ident-type / ident-info-extension
    ident-info-alg = "alg" EQUAL token
    ident-type = "ppt" EQUAL token
    ident-info-extension = generic-param

Deliberate deviations, all toward real traffic (RFC 8224 section 4.1):

* ``base64-char`` omits ``-`` and ``_``; every real PASSporT is base64url, so both are accepted.
* ``ppt`` is a token in the ABNF but most SHAKEN traffic quotes it (``ppt="shaken"``); both
  forms are accepted. We emit the bare token, as secsipidx and vermouth do.
* ``info`` is parsed as optional here so the verifier can report its absence as its own
  Reason (436, ATIS-1000082 E6) rather than as a syntax error.

Unknown parameters are kept, in order, and written back by :meth:`IdentityHeader.format`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from shaken.core.errors import IdentityHeaderError
from shaken.core.reasons import Reason

__all__ = ["HEADER_NAMES", "IdentityHeader", "identity_values", "match_common"]

# RFC 3261 token characters.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_DIGEST = re.compile(r"[A-Za-z0-9\-_+/.=]+")
_SEMI = re.compile(r"[ \t]*;[ \t]*")
_PARAM = re.compile(
    rf"(?P<name>{_TOKEN})(?:[ \t]*=[ \t]*(?P<value><[^<>\s]*>|{_QUOTED}|{_TOKEN}))?"
)
# The shape nearly every SHAKEN signer emits, parsed in one match; anything else takes the
# general path below, which accepts the same values and more.
_COMMON = re.compile(
    r"([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+);info=<([^<>\s\"]+)>"
    r";alg=([A-Za-z0-9-]+);ppt=(?:([A-Za-z0-9-]+)|\"([A-Za-z0-9-]+)\")"
)
# Header names RFC 8224 section 13.1 registers for this field: the long form and compact "y".
HEADER_NAMES = ("identity", "y")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def match_common(value: str) -> tuple[str, str, str, str] | None:
    """(token, info, alg, ppt) when ``value`` has the exact shape signers emit, else None.

    ``<token>;info=<uri>;alg=X;ppt=Y`` with ``ppt`` quoted or not and nothing else: the
    shape of nearly all SHAKEN traffic, read in one regex match.
    """
    common = _COMMON.fullmatch(value.strip())
    if common is None:
        return None
    token, info, alg, bare, quoted = common.groups()
    return token, info, alg, bare or quoted


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityHeader:
    """One Identity header value: the PASSporT and its parameters.

    ``token`` is the signed-identity-digest exactly as received: a full-form compact JWS
    (``header.payload.signature``) or the compact form (``..signature``).
    """

    token: str
    info: str | None = None
    alg: str | None = None
    ppt: str | None = None
    extra: tuple[tuple[str, str | None], ...] = field(default=())

    @property
    def is_compact_form(self) -> bool:
        """RFC 8224 section 5: the compact form omits the header and payload segments."""
        return self.token.startswith("..")

    @classmethod
    def parse(cls, value: str) -> IdentityHeader:
        """Parse a header field value.

        :raises IdentityHeaderError: (``invalid_header``) the value does not follow the grammar.
        """
        common = match_common(value)
        if common is not None:
            return cls(token=common[0], info=common[1], alg=common[2], ppt=common[3])
        text = value.strip()
        digest = _DIGEST.match(text)
        if digest is None:
            raise IdentityHeaderError(
                Reason.INVALID_HEADER, "Identity header does not start with a PASSporT"
            )
        token = digest.group(0)
        pos = digest.end()
        info: str | None = None
        alg: str | None = None
        ppt: str | None = None
        seen: set[str] = set()
        extra: list[tuple[str, str | None]] = []
        while pos < len(text):
            semi = _SEMI.match(text, pos)
            if semi is None:
                raise IdentityHeaderError(
                    Reason.INVALID_HEADER,
                    f"expected ';' at offset {pos} of the Identity header",
                    offset=pos,
                )
            pos = semi.end()
            param = _PARAM.match(text, pos)
            if param is None:
                raise IdentityHeaderError(
                    Reason.INVALID_HEADER,
                    f"malformed Identity header parameter at offset {pos}",
                    offset=pos,
                )
            pos = param.end()
            name = param.group("name").lower()
            raw = param.group("value")
            if name in seen and name in ("info", "alg", "ppt"):
                raise IdentityHeaderError(
                    Reason.INVALID_HEADER, f"Identity header repeats the {name} parameter"
                )
            seen.add(name)
            if name == "info":
                if raw is None or not (raw.startswith("<") and raw.endswith(">")) or len(raw) < 3:
                    raise IdentityHeaderError(
                        Reason.INVALID_HEADER, "info parameter must be <absoluteURI>"
                    )
                info = raw[1:-1]
            elif name == "alg":
                if raw is None:
                    raise IdentityHeaderError(Reason.INVALID_HEADER, "alg parameter has no value")
                alg = _unquote(raw)
            elif name == "ppt":
                if raw is None:
                    raise IdentityHeaderError(Reason.INVALID_HEADER, "ppt parameter has no value")
                ppt = _unquote(raw)
            else:
                extra.append((param.group("name"), raw))
        return cls(token=token, info=info, alg=alg, ppt=ppt, extra=tuple(extra))

    def format(self) -> str:
        """Serialize as ``<token>;info=<uri>;alg=..;ppt=..`` plus any extra parameters."""
        parts = [self.token]
        if self.info is not None:
            parts.append(f"info=<{self.info}>")
        if self.alg is not None:
            parts.append(f"alg={self.alg}")
        if self.ppt is not None:
            ppt = self.ppt
            if not _TOKEN_RE.fullmatch(ppt):
                ppt = '"' + ppt.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(f"ppt={ppt}")
        for name, value in self.extra:
            parts.append(name if value is None else f"{name}={value}")
        return ";".join(parts)

    def __str__(self) -> str:
        return self.format()


def identity_values(headers: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """Every Identity header value of a request, in order, from (name, value) pairs.

    Both the long name and the compact ``y`` count (RFC 8224 section 13.1), case-insensitively.
    A header field holds one value: values are not split on commas (the RFC 8224 ABNF has no
    list form, and a PASSporT never contains a comma).
    """
    return tuple(value.strip() for name, value in headers if name.strip().lower() in HEADER_NAMES)
