"""The STI-AS as a service: which credential and attestation a call gets, then the signature.

The key, x5u and attestation come from the effective profile; a ``tn`` entry (or a
``tn_range``) overrides the profile's key for its numbers, and TNs with no entry are signed at
``unknown_tn_attest`` or not at all (Asterisk's ``unknown_tn_attest_level``). The orig TN is
taken from P-Asserted-Identity, else From, and dest from To, canonicalized.

Attestation follows the source as well as the number (ATIS-1000074 section 5.2: A needs both a
customer the provider authenticated *and* a number that customer may use). So the level of a
call is the *weaker* of what the number's entry allows and what the source's profile allows:
an ``attest`` set in a ``[profile.X]`` is a ceiling over every TN entry (a gateway profile at C
signs our own A-numbers at C when they arrive through the gateway), and an API client may only
lower it further. :class:`Attestation` carries the level with the reason, for the operator.

Branded calling (RFC 9795, the CTIA Branded Calling ID model): a ``[brand.NAME]`` vetted for a
TN, a TN range or a profile is signed into that number's PASSporTs (``rcd``, ``rcdi``, ``crn``
in the SHAKEN PASSporT, and/or a separate ``ppt: "rcd"`` PASSporT when the brand asks for it).
A request may name a brand's values or one of its call reasons, never anything else: signing
refuses Rich Call Data the configuration did not vet for the number. The ``rcdi`` digests are
computed over the referenced content once (a local file with its published URL, or a fetch
under the x5u URL policy) and kept with the brand.

Everything here is decided from values the wiring loaded (keys are key objects, not paths);
the clock is read once per call unless the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from shaken.core.context import SipContext, called_identities, caller_identities, format_sip_date
from shaken.core.errors import ConfigurationError, SigningError
from shaken.core.fastinit import positional_constructor
from shaken.core.jws import PrivateKey
from shaken.core.passport import ATTESTATION_LEVELS
from shaken.core.rcd import RcdError, compute_rcdi, parse_rich_call_data, references_of
from shaken.core.sign import new_origid, sign_rcd, sign_shaken
from shaken.core.tn import NumberingPlan, canonicalize_tn
from shaken.core.verify import VerificationProfile
from shaken.services.ports import Clock, SystemClock

__all__ = [
    "Attestation",
    "Brand",
    "Credential",
    "SignedCall",
    "SigningPolicy",
    "SigningService",
    "TnRule",
    "signing_time",
    "weaker",
]


def signing_time(iat: float, *, now: datetime, freshness: VerificationProfile) -> datetime:
    """The ``iat`` to sign a client's call with: the client's own ``iat`` (its SIP Date) while
    a verifier under ``freshness`` would still accept it, else ``now``.

    A stale (or too far future) ``iat`` is replaced rather than signed into a token born
    stale (RFC 8224 section 6.1; ATIS-1000082 lets the client pass its ``iat``).
    """
    age = now.timestamp() - iat
    if -freshness.max_future_skew <= age <= freshness.max_iat_age:
        return datetime.fromtimestamp(iat, UTC)
    return now


def weaker(first: str, second: str) -> str:
    """The weaker of two attestation levels ('A' < 'B' < 'C')."""
    return max(first, second)


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """A signing key and the URL of its certificate chain."""

    key: PrivateKey = field(repr=False)
    x5u: str
    name: str = ""


#: Where a brand's claims go: inside the SHAKEN PASSporT (BCID), a separate ``ppt: "rcd"``
#: PASSporT (RFC 9795 section 4), or both.
BRAND_PPT = ("shaken", "rcd", "both")


@dataclass(frozen=True, slots=True, kw_only=True)
class Brand:
    """One vetted brand: the ``rcd`` object to sign, its call reasons and its digests.

    ``rcdi`` is None until the referenced content has been obtained (:meth:`with_content`);
    a brand whose ``rcd`` references content cannot sign before that.
    """

    name: str
    rcd: Mapping[str, Any]
    crn: str | None = None
    call_reasons: tuple[str, ...] = ()
    ppt: str = "shaken"
    digest: str = "sha256"
    rcdi: Mapping[str, str] | None = None
    #: Where it is configured (``[brand.acme]``), for reasons.
    label: str = ""

    def __post_init__(self) -> None:
        if self.ppt not in BRAND_PPT:
            raise ConfigurationError(f"brand ppt must be one of {', '.join(BRAND_PPT)}")
        claims: dict[str, Any] = {"rcd": dict(self.rcd)}
        for reason in (self.crn, *self.call_reasons):
            if reason is not None:
                claims["crn"] = reason
            try:
                parse_rich_call_data(claims)
            except RcdError as exc:
                raise ConfigurationError(f"{self.label or self.name}: {exc.detail}") from None

    @property
    def references(self) -> tuple[str, ...]:
        """The URLs whose content the ``rcdi`` digests cover."""
        return tuple(r.uri for r in references_of(self.rcd))

    @property
    def ready(self) -> bool:
        return not self.references or self.rcdi is not None

    def with_content(self, contents: Mapping[str, bytes]) -> Brand:
        """This brand with ``rcdi`` computed over ``contents`` (URL -> bytes as published)."""
        try:
            rcdi = compute_rcdi(self.rcd, contents, algorithm=self.digest)
        except ValueError as exc:
            raise ConfigurationError(f"{self.label or self.name}: {exc}") from None
        return replace(self, rcdi=MappingProxyType(rcdi) if rcdi else None)

    def allows_reason(self, reason: str) -> bool:
        return reason == self.crn or reason in self.call_reasons


@dataclass(frozen=True, slots=True, kw_only=True)
class TnRule:
    """What a ``[tn]`` or ``[tn_range]`` entry sets; ``None`` inherits from the profile."""

    attest: str | None = None
    credential: Credential | None = None
    brand: Brand | None = None
    #: Where the entry is configured (``[tn."12025550100"]``, ``[tn_range.main]``), for reasons.
    label: str = "the TN entry"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attestation:
    """The credential and level a call gets, and why (``config show --tn``, REST, logs)."""

    credential: Credential
    level: str
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningPolicy:
    """The signing side of one effective profile, with the TN entries it sees."""

    credential: Credential | None = None
    attest: str | None = None
    unknown_tn_attest: str | None = None
    tns: dict[str, TnRule] = field(default_factory=dict)
    ranges: tuple[tuple[int, int, int, TnRule], ...] = ()  # (first, last, digits, rule)
    caller_sources: tuple[str, ...] = ("pai", "from")
    called_sources: tuple[str, ...] = ("to",)
    numbering_plan: NumberingPlan | None = None
    #: The most the source's calls are signed at (the profile's own ``attest``); None: no cap.
    ceiling: str | None = None
    #: Who sets the ceiling (``profile gateway``), for reasons.
    ceiling_label: str = "the profile"
    #: The profile's brand: every number it signs that has no brand of its own.
    brand: Brand | None = None

    def __post_init__(self) -> None:
        for level in (self.attest, self.unknown_tn_attest, self.ceiling):
            if level is not None and level not in ATTESTATION_LEVELS:
                raise ConfigurationError(f"attestation {level!r} is not A, B or C")

    @staticmethod
    def range_of(start: str, count: int, rule: TnRule) -> tuple[int, int, int, TnRule]:
        """A ``[tn_range]`` entry as (first, last, digits, rule)."""
        if not start.isdigit() or count < 1:
            raise ConfigurationError(f"tn_range start {start!r} / count {count} is not usable")
        return (int(start), int(start) + count - 1, len(start), rule)

    def rule_for(self, tn: str) -> TnRule | None:
        """The entry that covers ``tn``: an exact ``[tn]`` first, then a range."""
        exact = self.tns.get(tn)
        if exact is not None:
            return exact
        if not tn.isdigit() or not self.ranges:
            return None
        value = int(tn)
        # Ranges are few (an operator's number blocks); the first that covers tn wins.
        for first, last, digits, rule in self.ranges:
            if first <= value <= last and digits == len(tn):
                return rule
        return None

    def brand_for(self, tn: str) -> Brand | None:
        """The brand vetted for ``tn``: its entry's, else the profile's."""
        rule = self.rule_for(tn)
        if rule is not None and rule.brand is not None:
            return rule.brand
        return self.brand

    def choose(self, tn: str) -> tuple[Credential, str]:
        """The credential and attestation for calls from ``tn`` (see :meth:`attestation`)."""
        chosen = self.attestation(tn)
        return chosen.credential, chosen.level

    def attestation(self, tn: str, *, requested: str | None = None) -> Attestation:
        """The credential and attestation for calls from ``tn``, with the reason.

        The level is the weakest of the number's (its entry's ``attest``, the profile's, or
        ``unknown_tn_attest`` for a number with no entry), the profile's ceiling, and
        ``requested`` (an API client may lower the level, never raise it).

        :raises SigningError: no entry and no ``unknown_tn_attest``, no level at all, no key,
            or a ``requested`` level that is not A, B or C.
        """
        rule = self.rule_for(tn)
        if rule is None:
            if self.unknown_tn_attest is None:
                raise SigningError(f"{tn} has no [tn] entry and unknown TNs are not signed")
            level = self.unknown_tn_attest
            why = [f"{tn} has no [tn] or [tn_range] entry: unknown_tn_attest is {level}"]
            credential = self.credential
        else:
            level = rule.attest or self.attest or self.unknown_tn_attest or ""
            if not level:
                raise SigningError(f"no attestation level is configured for {tn}")
            why = [f"{rule.label} allows {level}" if rule.attest else f"{tn} is at {level}"]
            credential = rule.credential or self.credential
        if credential is None:
            raise SigningError("no private_key/x5u is configured for signing")
        if self.ceiling is not None and weaker(level, self.ceiling) != level:
            level = self.ceiling
            why.append(f"{self.ceiling_label} allows at most {level}")
        if requested is not None:
            if requested not in ATTESTATION_LEVELS:
                raise SigningError(f"attest must be A, B or C, not {requested!r}")
            if weaker(level, requested) != level:
                level = requested
                why.append(f"the request asked for {level}")
        return _make_attestation(credential, level, "; ".join(why))


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedCall:
    """The outcome of signing one call."""

    identity: str
    orig: str
    dest: tuple[str, ...]
    attest: str
    x5u: str
    iat: int
    date: str | None = None
    #: Why the call got its attestation (:attr:`Attestation.why`).
    why: str = ""
    #: The origid signed (RFC 8588 section 10): where a traceback starts.
    origid: str | None = None
    #: The brand's name signed (rcd ``nam``), if any: what the call log records.
    brand: str | None = None
    #: A separate ``ppt: "rcd"`` Identity header value, when the brand asks for one.
    rcd_identity: str | None = None


#: Attestation(credential, level, why) and SignedCall(identity, orig, dest, attest, x5u, iat,
#: date, why, origid, brand, rcd_identity), positionally: built for every signed call
#: (:mod:`shaken.core.fastinit` says why; ``tests/core/test_fastinit.py`` pins the orders).
_make_attestation: Callable[..., Attestation] = positional_constructor(Attestation)
make_signed_call: Callable[..., SignedCall] = positional_constructor(SignedCall)


class SigningService:
    """Sign calls under one :class:`SigningPolicy`."""

    def __init__(self, policy: SigningPolicy, *, clock: Clock | None = None) -> None:
        self.policy = policy
        self._clock = clock or SystemClock()

    def sign(
        self,
        *,
        orig: str,
        dest: str | Sequence[str],
        now: datetime | None = None,
        attest: str | None = None,
        origid: str | None = None,
        rcd: Mapping[str, Any] | None = None,
        crn: str | None = None,
    ) -> SignedCall:
        """Sign a call from the TN ``orig`` to ``dest`` (canonicalized here).

        ``attest`` may only lower the configured level (an API client asking for B where the
        number is configured at A), never raise it. ``rcd`` and ``crn`` are what a client asks
        to sign; both must come from the brand vetted for ``orig`` (:meth:`branding`).

        :raises SigningError: no credential or level, or Rich Call Data not vetted for orig.
        """
        when = now if now is not None else self._clock.now()
        return self._sign(orig, dest, when, attest=attest, origid=origid, rcd=rcd, crn=crn)

    def _sign(
        self,
        orig: str,
        dest: str | Sequence[str],
        when: datetime,
        *,
        attest: str | None = None,
        origid: str | None = None,
        rcd: Mapping[str, Any] | None = None,
        crn: str | None = None,
        date: str | None = None,
    ) -> SignedCall:
        """:meth:`sign` at ``when``; ``date`` is the Date header the request is to carry."""
        tn = canonicalize_tn(orig)
        if not tn:
            raise SigningError(f"orig {orig!r} has no telephone number")
        chosen = self.policy.attestation(tn, requested=attest)
        credential, level = chosen.credential, chosen.level
        dests = (dest,) if isinstance(dest, str) else tuple(dest)
        canonical = tuple(canonicalize_tn(d) for d in dests)
        if not canonical or not all(canonical):
            raise SigningError(f"dest {dests!r} has no telephone number")
        brand, claims = self.branding(tn, rcd=rcd, crn=crn)
        in_shaken = brand is not None and brand.ppt in ("shaken", "both")
        # Chosen here, not in the core, so the call log records the origid that was signed.
        origid = origid if origid is not None else new_origid()
        signed_dest = canonical[0] if len(canonical) == 1 else list(canonical)
        identity = sign_shaken(
            key=credential.key,
            x5u=credential.x5u,
            orig=tn,
            dest=signed_dest,
            attest=level,
            now=when,
            origid=origid,
            extra_claims=claims if in_shaken else None,
        )
        rcd_identity = None
        if brand is not None and brand.ppt in ("rcd", "both"):
            rcd_identity = sign_rcd(
                key=credential.key,
                x5u=credential.x5u,
                orig=tn,
                dest=signed_dest,
                now=when,
                claims=claims,
            )
        return make_signed_call(  # SignedCall's fields, in order
            identity,
            tn,  # orig
            canonical,  # dest
            level,  # attest
            credential.x5u,
            int(when.timestamp()),  # iat
            date,
            chosen.why,
            origid,
            None if brand is None else claims["rcd"]["nam"],  # brand
            rcd_identity,
        )

    def branding(
        self, tn: str, *, rcd: Mapping[str, Any] | None = None, crn: str | None = None
    ) -> tuple[Brand | None, dict[str, Any]]:
        """The brand and the ``rcd``/``rcdi``/``crn`` claims a call from ``tn`` is signed with.

        With no request, the vetted brand (if any) is signed as configured. A requested
        ``rcd`` must repeat values of the vetted brand (a subset of its members, each equal):
        asking for a name, logo or jCard the brand does not have is refused, as is any
        ``rcd`` or ``crn`` for a number with no brand, or a ``crn`` that is not one of the
        brand's call reasons.
        """
        brand = self.policy.brand_for(tn)
        if brand is None:
            if rcd is not None or crn is not None:
                raise SigningError(f"{tn} has no vetted brand: Rich Call Data is not signed for it")
            return None, {}
        where = brand.label or f"brand {brand.name}"
        chosen = dict(brand.rcd)
        if rcd is not None:
            for member, value in rcd.items():
                if member not in brand.rcd or brand.rcd[member] != value:
                    raise SigningError(
                        f"rcd.{member} is not what {where} vetted for {tn}; refusing to sign it"
                    )
            chosen = dict(rcd)
            if "nam" not in chosen:
                raise SigningError("rcd needs 'nam' (RFC 9795 section 5.1.1)")
        reason = brand.crn if crn is None else crn
        if crn is not None and not brand.allows_reason(crn):
            raise SigningError(f"crn {crn!r} is not a call reason {where} vetted for {tn}")
        if not brand.ready:
            raise SigningError(f"{where}: its referenced content is not loaded, so no rcdi yet")
        claims: dict[str, Any] = {"rcd": chosen}
        if brand.rcdi:
            pointers = {r.pointer for r in references_of(chosen)}
            digests = {k: v for k, v in brand.rcdi.items() if k in pointers}
            if digests:
                claims["rcdi"] = digests
        if reason is not None:
            claims["crn"] = reason
        return brand, claims

    def sign_request(self, context: SipContext, *, now: datetime | None = None) -> SignedCall:
        """Sign a SIP request: orig from P-Asserted-Identity else From, dest from To.

        Adds the Date the request should carry when it had none (RFC 8224 section 6.1 step 3).
        """
        when = now if now is not None else self._clock.now()
        policy = self.policy
        callers = [
            c.tn
            for c in caller_identities(
                context, sources=policy.caller_sources, plan=policy.numbering_plan
            )
            if c.tn
        ]
        if not callers:
            raise SigningError("the request has no caller TN (P-Asserted-Identity or From)")
        called = [
            c.tn
            for c in called_identities(
                context, sources=policy.called_sources, plan=policy.numbering_plan
            )
            if c.tn
        ]
        if not called:
            raise SigningError("the request has no called TN (To)")
        date = format_sip_date(when) if context.date is None else None
        return self._sign(callers[0], called[0], when, date=date)
