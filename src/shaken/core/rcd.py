"""Rich Call Data: the ``rcd``, ``rcdi`` and ``crn`` claims (RFC 9795) as pure rules.

Branded calling (the CTIA Branded Calling ID programme) puts these claims inside the ordinary
``ppt: "shaken"`` PASSporT; RFC 9795 also defines a separate ``ppt: "rcd"`` PASSporT that carries
the same claims. Everything here takes values and bytes and returns values or raises
:class:`RcdError`; fetching the referenced content is a service's job
(:mod:`shaken.services.rcd`).

What was followed, and where a choice had to be made. Only the front matter and the table of
contents of RFC 9795 and RFC 9796 could be read when this was written (section 4 "Overview of
Rich Call Data Integrity", section 5 "'rcd' PASSporT Claim: Definition and Usage", 5.1 the
claim), and the full text of RFC 9796's -09 draft, whose section numbers are used here; the
rest follows the drafts' published summaries and the vendor APIs that implement them, and
every rule below that is a choice says so:

* RFC 9795 section 5.1 (the ``rcd`` claim and the PASSporT RCD Claim Types registry): the keys
  ``nam`` (display name, a string; required when ``rcd`` is present), ``apn`` (alternate
  presentation number, a string), ``icn`` (a URI of an icon), ``jcd`` (a jCard, RFC 7095,
  inline) and ``jcl`` (the URI of a jCard). ``jcd`` and ``jcl`` are two ways to give the same
  thing and MUST NOT both appear. Keys outside the registry are kept, never presented.
* ``crn`` is a top-level string claim (RFC 9795; RFC 9796 ``call-reason``). RFC 9796's drafts
  say a call reason SHOULD stay under 64 characters; a verifier that renders it needs a hard
  limit, so :data:`DEFAULT_MAX_CRN_LENGTH` is enforced and configurable (a choice).
* RFC 9796 (one level of URI references, since its -02 draft): content that a URI references
  MUST NOT reference further content. So the URIs inside an inline ``jcd`` (``photo``,
  ``logo``, ``sound``) are references like ``icn`` and ``jcl``; a jCard fetched through
  ``jcl`` may carry no URI of its own except ``data:`` (inline) ones, and one that does is
  refused.
* ``rcdi`` (RFC 9795, the integrity section): a JSON object whose keys are JSON Pointers
  (RFC 6901) into the ``rcd`` claim, each naming one URI-valued member, and whose values are
  ``<alg>-<base64 digest>`` with ``alg`` one of ``sha256``, ``sha384``, ``sha512`` and the
  digest in standard (not url-safe) base64 with padding, as W3C Subresource Integrity writes
  them (confirmed by vendor APIs and published examples). Choices: the digest is over the
  **bytes of the resource exactly as received** (the HTTP body; the fetcher asks for
  ``identity`` coding, so nothing re-encodes it), the Subresource Integrity rule that value
  form comes from. The key ``/jcd`` (the inline jCard itself) is accepted with the digest
  taken over its RFC 8785 (JCS) canonical form, the one serialization two parties can agree on
  for a JSON value; it is never emitted, since the PASSporT signature covers an inline jCard
  already. When ``rcdi`` is present every reference must have a digest: a reference without
  one is an integrity failure, because the verifier could not tell changed content from
  unchanged. If the RFC's text differs, :func:`content_digest` and :func:`check_integrity`
  are the two places to change.

JCS is the ``rfc8785`` package and JSON Pointer the ``jsonpointer`` package (both maintained,
pure Python); the jCard shape check is written here because it is RFC 7095 section 3's four
lines of structure and no library checks only that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import jsonpointer
import rfc8785

from shaken.core.errors import VerificationFailure
from shaken.core.reasons import Reason

__all__ = [
    "DEFAULT_MAX_CRN_LENGTH",
    "DEFAULT_MAX_NAM_LENGTH",
    "DIGEST_ALGORITHMS",
    "JCARD_URI_PROPERTIES",
    "RCD_KEYS",
    "IntegrityProblem",
    "RcdError",
    "Reference",
    "RichCallData",
    "check_integrity",
    "check_jcard",
    "check_referenced_jcard",
    "compute_rcdi",
    "content_digest",
    "data_uri_bytes",
    "jcs",
    "parse_digest",
    "parse_rich_call_data",
    "references_of",
]

#: The PASSporT RCD Claim Types registry (RFC 9795, IANA Considerations).
RCD_KEYS = ("nam", "apn", "icn", "jcd", "jcl")
#: RFC 9796's recommended ceiling for a call reason; enforced, configurable.
DEFAULT_MAX_CRN_LENGTH = 64
#: A display name longer than this cannot be shown on any handset; SIP display names are
#: in practice far shorter (CNAM is 15 characters).
DEFAULT_MAX_NAM_LENGTH = 128
#: Digest algorithms of ``rcdi`` values (the SRI set), name -> hashlib constructor name.
DIGEST_ALGORITHMS: Mapping[str, str] = MappingProxyType(
    {"sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}
)
#: jCard properties whose URI value is content shown to the callee (RFC 9796 section 8).
JCARD_URI_PROPERTIES = ("photo", "logo", "sound")


class RcdError(VerificationFailure):
    """The Rich Call Data of a PASSporT is malformed, or fails its integrity or constraints."""


def _invalid(detail: str, **fields: Any) -> RcdError:
    return RcdError(Reason.RCD_INVALID, detail, **fields)


@dataclass(frozen=True, slots=True)
class Reference:
    """One URI-referenced resource of an ``rcd`` claim: its JSON Pointer, URI and role.

    ``role`` is ``icon`` (``/icn``), ``jcard`` (``/jcl``) or the jCard property name (``photo``,
    ``logo``, ``sound``) for a URI inside an inline ``jcd``.
    """

    pointer: str
    uri: str
    role: str


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON of ``value`` (UTF-8 bytes)."""
    return rfc8785.dumps(value)


def content_digest(data: bytes, algorithm: str = "sha256") -> str:
    """The ``rcdi`` value of ``data``: ``<alg>-<standard base64 of the digest>``."""
    name = DIGEST_ALGORITHMS.get(algorithm)
    if name is None:
        raise ValueError(f"digest algorithm must be one of {', '.join(DIGEST_ALGORITHMS)}")
    raw = hashlib.new(name, data).digest()
    return f"{algorithm}-{base64.b64encode(raw).decode('ascii')}"


def parse_digest(value: Any, *, pointer: str = "") -> tuple[str, bytes]:
    """An ``rcdi`` value as ``(algorithm, digest bytes)``.

    :raises RcdError: ``rcd_invalid`` for an unknown algorithm, bad base64 or a wrong length.
    """
    where = f"rcdi {pointer!r}" if pointer else "an rcdi value"
    if not isinstance(value, str) or "-" not in value:
        raise _invalid(f"{where} is not '<alg>-<base64 digest>'", pointer=pointer)
    algorithm, _, encoded = value.partition("-")
    name = DIGEST_ALGORITHMS.get(algorithm)
    if name is None:
        raise _invalid(
            f"{where} uses {algorithm!r}; only {', '.join(DIGEST_ALGORITHMS)} are defined",
            pointer=pointer,
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{where} is not base64", pointer=pointer) from None
    if len(raw) != hashlib.new(name).digest_size:
        raise _invalid(f"{where} is not a {algorithm} digest (wrong length)", pointer=pointer)
    return algorithm, raw


def data_uri_bytes(uri: str) -> bytes | None:
    """The content of a ``data:`` URI (RFC 2397), or None for any other URI."""
    if uri[:5].lower() != "data:":
        return None
    meta, sep, payload = uri[5:].partition(",")
    if not sep:
        raise _invalid("a data: URI has no ',' before its content")
    if meta.lower().endswith(";base64"):
        try:
            return base64.b64decode(unquote_to_bytes(payload), validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("a base64 data: URI is not base64") from None
    return unquote_to_bytes(payload)


def _check_uri(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(f"'{where}' is not a URI string", member=where)
    if value[:5].lower() == "data:":
        data_uri_bytes(value)
        return value
    if any(ch in value for ch in ' <>"\t\r\n') or not value.isascii():
        raise _invalid(f"'{where}' is not a URI: {value!r}", member=where)
    parts = urlsplit(value)
    if parts.scheme.lower() != "https" or not parts.hostname:
        # RFC 9796 section 5: a referenced resource MUST come over a transport that
        # authenticates its source (HTTPS), or be inline.
        raise _invalid(f"'{where}' must be an https or data: URI, got {value!r}", member=where)
    return value


def check_jcard(value: Any, where: str = "jcd") -> None:
    """The RFC 7095 section 3 shape: ``["vcard", [[name, {params}, type, value, ...], ...]]``.

    :raises RcdError: ``rcd_invalid`` naming the first property that does not fit.
    """
    if (
        not isinstance(value, list)
        or len(value) != 2
        or value[0] != "vcard"
        or not isinstance(value[1], list)
    ):
        raise _invalid(f"'{where}' is not a jCard ([\"vcard\", [properties]])", member=where)
    for i, prop in enumerate(value[1]):
        if (
            not isinstance(prop, list)
            or len(prop) < 4
            or not isinstance(prop[0], str)
            or not prop[0]
            or prop[0] != prop[0].lower()
            or not isinstance(prop[1], dict)
            or not isinstance(prop[2], str)
        ):
            raise _invalid(
                f"'{where}' property {i} is not [name, {{parameters}}, type, value]",
                member=where,
            )


def _jcard_references(jcard: list[Any], prefix: str) -> list[Reference]:
    out: list[Reference] = []
    for i, prop in enumerate(jcard[1]):
        if prop[0] in JCARD_URI_PROPERTIES and prop[2] == "uri":
            for j, item in enumerate(prop[3:], start=3):
                pointer = f"{prefix}/1/{i}/{j}"
                uri = _check_uri(item, pointer)
                if data_uri_bytes(uri) is None:
                    out.append(Reference(pointer=pointer, uri=uri, role=prop[0]))
    return out


def check_referenced_jcard(body: bytes, uri: str) -> list[Any]:
    """A jCard fetched through ``jcl``: valid JSON, the jCard shape, and no further references.

    :raises RcdError: ``rcd_invalid`` (RFC 9796 section 8.1's one level of URI references).
    """
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _invalid(f"the jCard at {uri} is not UTF-8 JSON", url=uri) from None
    check_jcard(value, "jcl")
    nested = _jcard_references(value, "/jcl")
    if nested:
        raise _invalid(
            f"the jCard at {uri} references {nested[0].uri!r}: referenced content may not"
            " reference further content (RFC 9796 section 8.1)",
            url=uri,
        )
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True, kw_only=True)
class RichCallData:
    """The checked ``rcd``/``rcdi``/``crn`` claims of one PASSporT."""

    nam: str | None = None
    apn: str | None = None
    icn: str | None = None
    jcd: Any = None
    jcl: str | None = None
    crn: str | None = None
    #: The ``rcd`` claim as received (for constraints and re-signing), None when absent.
    rcd: Mapping[str, Any] | None = None
    rcdi: Mapping[str, str] | None = None
    references: tuple[Reference, ...] = ()
    #: ``rcd`` members outside the registry: kept, never presented.
    unknown: tuple[str, ...] = field(default=())

    @property
    def present(self) -> bool:
        return self.rcd is not None or self.crn is not None

    def to_claims(self) -> dict[str, Any]:
        """The claims to put in a PASSporT."""
        out: dict[str, Any] = {}
        if self.rcd is not None:
            out["rcd"] = dict(self.rcd)
        if self.rcdi is not None:
            out["rcdi"] = dict(self.rcdi)
        if self.crn is not None:
            out["crn"] = self.crn
        return out


def _string(value: Any, where: str, limit: int | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"'{where}' is not a non-empty string", member=where)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _invalid(f"'{where}' contains control characters", member=where)
    if limit is not None and len(value) > limit:
        raise _invalid(
            f"'{where}' is {len(value)} characters, over the limit of {limit}", member=where
        )
    return value


def parse_rich_call_data(
    claims: Mapping[str, Any],
    *,
    max_crn_length: int = DEFAULT_MAX_CRN_LENGTH,
    max_nam_length: int = DEFAULT_MAX_NAM_LENGTH,
) -> RichCallData | None:
    """The ``rcd``, ``rcdi`` and ``crn`` of a claims object, checked; None when none is there.

    :raises RcdError: ``rcd_invalid`` with the first rule broken.
    """
    rcd, rcdi, crn = claims.get("rcd"), claims.get("rcdi"), claims.get("crn")
    if rcd is None and rcdi is None and crn is None:
        return None
    crn_value = None if crn is None else _string(crn, "crn", max_crn_length)
    if rcd is None:
        if rcdi is not None:
            raise _invalid("'rcdi' without 'rcd' protects nothing")
        return RichCallData(crn=crn_value)
    if not isinstance(rcd, Mapping):
        raise _invalid("'rcd' is not a JSON object")
    if "nam" not in rcd:
        raise _invalid("'rcd' has no 'nam' (RFC 9795 section 5.1.1)", member="rcd.nam")
    nam = _string(rcd["nam"], "rcd.nam", max_nam_length)
    apn = None if "apn" not in rcd else _string(rcd["apn"], "rcd.apn", 64)
    if "jcd" in rcd and "jcl" in rcd:
        raise _invalid(
            "'rcd' has both 'jcd' and 'jcl'; they MUST NOT be used together (RFC 9795 5.1)",
            member="rcd",
        )
    references: list[Reference] = []
    icn = None
    if "icn" in rcd:
        icn = _check_uri(rcd["icn"], "rcd.icn")
        if data_uri_bytes(icn) is None:
            references.append(Reference(pointer="/icn", uri=icn, role="icon"))
    jcl = None
    if "jcl" in rcd:
        jcl = _check_uri(rcd["jcl"], "rcd.jcl")
        if data_uri_bytes(jcl) is None:
            references.append(Reference(pointer="/jcl", uri=jcl, role="jcard"))
        else:
            check_referenced_jcard(data_uri_bytes(jcl) or b"", "the data: jcl")
    jcd = None
    if "jcd" in rcd:
        jcd = rcd["jcd"]
        check_jcard(jcd, "rcd.jcd")
        references.extend(_jcard_references(jcd, "/jcd"))
    unknown = tuple(sorted(k for k in rcd if k not in RCD_KEYS))
    digests: dict[str, str] | None = None
    if rcdi is not None:
        if not isinstance(rcdi, Mapping) or not rcdi:
            raise _invalid("'rcdi' is not a non-empty JSON object")
        known = {r.pointer for r in references}
        digests = {}
        for pointer, value in rcdi.items():
            _resolve(rcd, pointer)
            if pointer not in known and pointer != "/jcd" and not _inline_uri(rcd, pointer):
                raise _invalid(
                    f"rcdi key {pointer!r} names no URI-referenced member of 'rcd'",
                    pointer=pointer,
                )
            parse_digest(value, pointer=pointer)
            digests[pointer] = value
    return RichCallData(
        nam=nam,
        apn=apn,
        icn=icn,
        jcd=jcd,
        jcl=jcl,
        crn=crn_value,
        rcd=MappingProxyType(dict(rcd)),
        rcdi=None if digests is None else MappingProxyType(digests),
        references=tuple(references),
        unknown=unknown,
    )


def _resolve(rcd: Mapping[str, Any], pointer: str) -> Any:
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise _invalid(f"rcdi key {pointer!r} is not a JSON Pointer (RFC 6901)", pointer=pointer)
    try:
        return jsonpointer.resolve_pointer(dict(rcd), pointer)
    except (jsonpointer.JsonPointerException, TypeError, ValueError):
        raise _invalid(
            f"rcdi key {pointer!r} points at nothing in 'rcd'", pointer=pointer
        ) from None


def _inline_uri(rcd: Mapping[str, Any], pointer: str) -> bool:
    value = _resolve(rcd, pointer)
    return isinstance(value, str) and data_uri_bytes(value) is not None


@dataclass(frozen=True, slots=True)
class IntegrityProblem:
    """Why one reference failed its integrity check."""

    pointer: str
    uri: str
    detail: str


def _digest_matches(expected: str, data: bytes) -> bool:
    algorithm, raw = parse_digest(expected)
    actual = hashlib.new(DIGEST_ALGORITHMS[algorithm], data).digest()
    return hmac.compare_digest(actual, raw)


def check_integrity(data: RichCallData, contents: Mapping[str, bytes]) -> list[IntegrityProblem]:
    """Compare each ``rcdi`` digest with the content it names; the problems found, in order.

    ``contents`` maps each reference's URI to the bytes fetched from it. A reference with no
    digest, a digest over content that is missing from ``contents``, or a mismatch is a
    problem. With no ``rcdi`` there is nothing to compare and no problem.
    """
    if data.rcdi is None or data.rcd is None:
        return []
    problems: list[IntegrityProblem] = []
    by_pointer = {r.pointer: r for r in data.references}
    for reference in data.references:
        if reference.pointer not in data.rcdi:
            problems.append(
                IntegrityProblem(
                    reference.pointer,
                    reference.uri,
                    f"{reference.pointer} ({reference.uri}) has no rcdi digest",
                )
            )
    for pointer, expected in data.rcdi.items():
        if pointer == "/jcd":
            body: bytes | None = jcs(data.jcd)
            uri = "(inline jCard)"
        elif pointer in by_pointer:
            uri = by_pointer[pointer].uri
            body = contents.get(uri)
        else:
            uri = str(_resolve(data.rcd, pointer))
            body = data_uri_bytes(uri)
        if body is None:
            problems.append(IntegrityProblem(pointer, uri, f"{uri} was not obtained"))
        elif not _digest_matches(expected, body):
            problems.append(
                IntegrityProblem(
                    pointer,
                    uri,
                    f"the content of {pointer} ({uri}) does not match its rcdi digest"
                    f" {expected.partition('-')[0]}",
                )
            )
    return problems


def compute_rcdi(
    rcd: Mapping[str, Any], contents: Mapping[str, bytes], *, algorithm: str = "sha256"
) -> dict[str, str]:
    """The ``rcdi`` claim for ``rcd``: a digest of each reference's content, by JSON Pointer.

    :raises ValueError: a reference's content is missing from ``contents``, or ``rcd`` is not
        valid Rich Call Data (the signer's configuration is wrong, not a peer).
    """
    try:
        parsed = parse_rich_call_data({"rcd": dict(rcd)})
    except RcdError as exc:
        raise ValueError(exc.detail) from None
    assert parsed is not None
    out: dict[str, str] = {}
    for reference in parsed.references:
        body = contents.get(reference.uri)
        if body is None:
            raise ValueError(f"no content for {reference.pointer} ({reference.uri})")
        out[reference.pointer] = content_digest(body, algorithm)
    return out


def references_of(rcd: Mapping[str, Any]) -> Sequence[Reference]:
    """The URI references of an ``rcd`` object (signing side: what to fetch)."""
    try:
        parsed = parse_rich_call_data({"rcd": dict(rcd)})
    except RcdError as exc:
        raise ValueError(exc.detail) from None
    return () if parsed is None else parsed.references
