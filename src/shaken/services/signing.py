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

Everything here is decided from values the wiring loaded (keys are key objects, not paths);
the clock is read once per call unless the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from shaken.core.context import SipContext, called_identities, caller_identities, format_sip_date
from shaken.core.errors import ConfigurationError, SigningError
from shaken.core.jws import PrivateKey
from shaken.core.passport import ATTESTATION_LEVELS
from shaken.core.sign import sign_shaken
from shaken.core.tn import NumberingPlan, canonicalize_tn
from shaken.services.ports import Clock, SystemClock

__all__ = [
    "Attestation",
    "Credential",
    "SignedCall",
    "SigningPolicy",
    "SigningService",
    "TnRule",
    "weaker",
]


def weaker(first: str, second: str) -> str:
    """The weaker of two attestation levels ('A' < 'B' < 'C')."""
    return max(first, second)


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """A signing key and the URL of its certificate chain."""

    key: PrivateKey = field(repr=False)
    x5u: str
    name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TnRule:
    """What a ``[tn]`` or ``[tn_range]`` entry sets; ``None`` inherits from the profile."""

    attest: str | None = None
    credential: Credential | None = None
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
        return Attestation(credential=credential, level=level, why="; ".join(why))


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
    ) -> SignedCall:
        """Sign a call from the TN ``orig`` to ``dest`` (canonicalized here).

        ``attest`` may only lower the configured level (an API client asking for B where the
        number is configured at A), never raise it.
        """
        when = now if now is not None else self._clock.now()
        tn = canonicalize_tn(orig)
        if not tn:
            raise SigningError(f"orig {orig!r} has no telephone number")
        chosen = self.policy.attestation(tn, requested=attest)
        credential, level = chosen.credential, chosen.level
        dests = (dest,) if isinstance(dest, str) else tuple(dest)
        canonical = tuple(canonicalize_tn(d) for d in dests)
        if not canonical or not all(canonical):
            raise SigningError(f"dest {dests!r} has no telephone number")
        identity = sign_shaken(
            key=credential.key,
            x5u=credential.x5u,
            orig=tn,
            dest=canonical[0] if len(canonical) == 1 else list(canonical),
            attest=level,
            now=when,
            origid=origid,
        )
        return SignedCall(
            identity=identity,
            orig=tn,
            dest=canonical,
            attest=level,
            x5u=credential.x5u,
            iat=int(when.timestamp()),
            why=chosen.why,
        )

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
        signed = self.sign(orig=callers[0], dest=called[0], now=when)
        if context.date is None:
            return replace(signed, date=format_sip_date(when))
        return signed
