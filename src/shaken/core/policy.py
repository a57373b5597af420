"""From what verification found to what the call gets (docs/architecture.md section 5).

The outcome (``verified`` with A/B/C, ``missing``, ``failed`` with a Reason, ``not_checked``) is
separate from the action, which a profile sets per outcome:

* ``continue``: pass the call on (VoipNow PASS, Asterisk ``continue``);
* ``reject``: answer the Reason's SIP code and phrase, or a configured one such as 603
  (VoipNow STOP, Asterisk ``reject_request``);
* ``continue_with_reason``: pass on with an RFC 9410 ``Reason: STIR;cause=N;text="..."``
  (or the older ``SIP`` protocol token, Asterisk ``continue_return_reason``);
* ``alert``: pass on with the caller's display name given a prefix and/or suffix
  (VoipNow ALERT, e.g. "(Verified) " or "[SPAM?] ").

verstat tagging of P-Asserted-Identity/From (3GPP TS 24.229 section 7.2A.20) is independent of
the action and on by default.

The callee must never see a verdict shaken did not reach, so before any action the inbound
identity loses what only a verifier may write: every ``verstat`` parameter
(:func:`strip_verstat`) and every display-name prefix and suffix any action of the policy is
configured to add (:meth:`ActionPolicy.strip_marks`; an attacker picks the most convincing, so
all outcomes' marks go, repeatedly while stacked, matched case-sensitively as configured).
Everything here is pure string work.

Branded calling (RFC 9795, RFC 9796): when a call verified *and* its Rich Call Data verdict is
``verified``, a profile may present the brand: ``rcd_display`` ``replace`` makes the caller's
display name the verified ``nam``, ``prefix`` makes it ``rcd_display_prefix`` + ``nam`` (e.g.
"(Verified) Acme Bank"); ``rcd_call_info`` adds the RFC 9796 ``Call-Info`` header. A brand that
did not verify is never presented: the display name is then left as the action makes it. The
brand prefix is one of the policy's marks, so a caller cannot send "(Verified) ..." itself.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shaken.core.branding import call_info
from shaken.core.errors import ConfigurationError
from shaken.core.fastinit import positional_constructor
from shaken.core.reasons import REASONS, Reason, Verstat, sip_phrase
from shaken.core.result import Outcome, VerificationResult
from shaken.core.tn import parse_name_addr

__all__ = [
    "Action",
    "ActionPolicy",
    "Decision",
    "OutcomeAction",
    "decide",
    "reason_header",
    "strip_marks",
    "strip_verstat",
    "tag_uri",
    "tag_verstat",
]


class Action(enum.StrEnum):
    CONTINUE = "continue"
    REJECT = "reject"
    CONTINUE_WITH_REASON = "continue_with_reason"
    ALERT = "alert"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeAction:
    """The action for one outcome, with what it needs."""

    action: Action = Action.CONTINUE
    reject_code: int | None = None
    reject_phrase: str | None = None
    display_prefix: str = ""
    display_suffix: str = ""

    def __post_init__(self) -> None:
        if self.reject_code is not None and not 400 <= self.reject_code <= 699:
            raise ConfigurationError(f"reject_code {self.reject_code} is not a 4xx-6xx code")


def _empty_mapping() -> Mapping[Any, Any]:
    return MappingProxyType({})


RCD_DISPLAY = ("off", "replace", "prefix")


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionPolicy:
    """Per-outcome actions. ``by_attest`` refines ``verified``; ``by_reason`` refines ``failed``."""

    verified: OutcomeAction = field(default_factory=OutcomeAction)
    missing: OutcomeAction = field(default_factory=OutcomeAction)
    failed: OutcomeAction = field(default_factory=OutcomeAction)
    not_checked: OutcomeAction = field(default_factory=OutcomeAction)
    by_attest: Mapping[str, OutcomeAction] = field(default_factory=_empty_mapping)
    by_reason: Mapping[Reason, OutcomeAction] = field(default_factory=_empty_mapping)
    reason_protocol: str = "STIR"
    tag_verstat: bool = True
    #: Present a verified brand's name: "off", "replace" or "prefix" (module docstring).
    rcd_display: str = "off"
    rcd_display_prefix: str = "(Verified) "
    #: Add the RFC 9796 Call-Info header of a verified brand.
    rcd_call_info: bool = False
    #: Every display prefix and suffix an action of this policy adds (see :meth:`strip_marks`).
    marks: tuple[tuple[str, ...], tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.reason_protocol not in ("STIR", "SIP"):
            raise ConfigurationError("reason_protocol is STIR (RFC 9410) or SIP")
        if self.rcd_display not in RCD_DISPLAY:
            raise ConfigurationError(f"rcd_display is one of {', '.join(RCD_DISPLAY)}")
        actions = [self.verified, self.missing, self.failed, self.not_checked]
        actions += [*self.by_attest.values(), *self.by_reason.values()]
        brand_marks = {self.rcd_display_prefix} if self.rcd_display == "prefix" else set()
        prefixes = sorted(
            {a.display_prefix for a in actions if a.display_prefix.strip()}
            | {m for m in brand_marks if m.strip()}
        )
        suffixes = sorted({a.display_suffix for a in actions if a.display_suffix.strip()})
        object.__setattr__(self, "marks", (tuple(prefixes), tuple(suffixes)))

    def strip_marks(self, display_name: str | None) -> str | None:
        """``display_name`` without any prefix or suffix this policy's actions add."""
        return strip_marks(display_name, *self.marks)

    def action_for(self, result: VerificationResult) -> OutcomeAction:
        if result.outcome is Outcome.VERIFIED:
            return self.by_attest.get(result.attest or "", self.verified)
        if result.outcome is Outcome.MISSING:
            return self.missing
        if result.outcome is Outcome.NOT_CHECKED:
            return self.not_checked
        if result.reason is not None and result.reason in self.by_reason:
            return self.by_reason[result.reason]
        return self.failed


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to do with the call. ``sip_code`` is set only when the action rejects."""

    action: Action
    verstat: Verstat
    sip_code: int | None = None
    sip_phrase: str | None = None
    reason_header: str | None = None
    display_name: str | None = None
    tag_verstat: bool = True
    #: The RFC 9796 Call-Info value of a verified brand, when the profile presents it.
    call_info: str | None = None
    #: True when ``display_name`` is the verified brand's name.
    brand_presented: bool = False

    @property
    def allowed(self) -> bool:
        return self.action is not Action.REJECT


#: Decision with every field positionally, in field order: one per verified call
#: (:mod:`shaken.core.fastinit` says why).
make_decision: Callable[..., Decision] = positional_constructor(Decision)


def strip_marks(
    display_name: str | None, prefixes: tuple[str, ...], suffixes: tuple[str, ...]
) -> str | None:
    """Remove every ``prefixes``/``suffixes`` mark from both ends, repeatedly while stacked.

    Marks match case-sensitively, as configured, and also without their own surrounding
    spaces (``"(Verified)Bob"`` is as convincing as ``"(Verified) Bob"``). None when nothing
    is left.
    """
    if not display_name:
        return display_name or None
    name = display_name.strip()
    heads = [p.strip() for p in prefixes]
    tails = [t.strip() for t in suffixes]
    changed = True
    while changed and name:
        changed = False
        for head in heads:
            if name.startswith(head):
                name = name[len(head) :].lstrip()
                changed = True
        for tail in tails:
            if name.endswith(tail):
                name = name[: -len(tail)].rstrip()
                changed = True
    return name or None


# A verstat parameter anywhere in a URI: user part (3GPP TS 24.229 7.2A.20), URI parameters.
_ANY_VERSTAT = re.compile(r";[ \t]*verstat[ \t]*(?:=[^;@>?]*)?(?=[;@>?]|$)", re.IGNORECASE)


def strip_verstat(uri: str) -> str:
    """``uri`` without any ``verstat`` parameter (only a verifier may say what it found)."""
    if "verstat" not in uri.lower():
        return uri
    return _ANY_VERSTAT.sub("", uri)


def reason_header(reason: Reason, *, protocol: str = "STIR", ppi: str | None = None) -> str:
    """The Reason header value for ``reason`` (RFC 9410 section 4; RFC 3326 for ``SIP``).

    ``ppi`` carries the PASSporT that failed, preferably in compact form.
    """
    info = REASONS[reason]
    value = f'{protocol};cause={info.sip_code};text="{info.rfc9410_text}"'
    if ppi is not None:
        value += f';ppi="{ppi}"'
    return value


def decide(
    result: VerificationResult, policy: ActionPolicy, *, display_name: str | None = None
) -> Decision:
    """The action for ``result`` under ``policy``; ``display_name`` is the caller's, if any."""
    chosen = policy.action_for(result)
    info = result.reason_info
    if chosen.action is Action.REJECT:
        code = chosen.reject_code or (info.sip_code if info is not None else 403)
        # The Reason's own phrase for its own code (RFC 8224's 403 "Stale Date"), else the
        # registered phrase of the configured code.
        phrase = chosen.reject_phrase or (
            info.phrase if info is not None and code == info.sip_code else sip_phrase(code)
        )
        # Decision(...) positionally, in its field order (tests/core/test_fastinit.py).
        return make_decision(
            Action.REJECT,  # action
            result.verstat,  # verstat
            code,  # sip_code
            phrase,  # sip_phrase
            None,  # reason_header
            None,  # display_name
            policy.tag_verstat,  # tag_verstat
            None,  # call_info
            False,  # brand_presented
        )
    header = None
    if chosen.action is Action.CONTINUE_WITH_REASON and result.reason is not None:
        header = reason_header(result.reason, protocol=policy.reason_protocol)
    name = display_name
    if chosen.action is Action.ALERT:
        name = f"{chosen.display_prefix}{display_name or ''}{chosen.display_suffix}"
    brand = result.rcd if result.verified else None
    presented = False
    info_value = None
    if brand is not None and brand.presentable:
        if policy.rcd_display != "off" and brand.nam is not None:
            label = policy.rcd_display_prefix if policy.rcd_display == "prefix" else ""
            name = f"{label}{brand.nam}"
            presented = True
        if policy.rcd_call_info:
            info_value = call_info(brand)
    return make_decision(
        chosen.action,  # action
        result.verstat,  # verstat
        None,  # sip_code
        None,  # sip_phrase
        header,  # reason_header
        name,  # display_name
        policy.tag_verstat,  # tag_verstat
        info_value,  # call_info
        presented,  # brand_presented
    )


_VERSTAT_PARAM = re.compile(r";verstat=[^;@>]*", re.IGNORECASE)


def tag_verstat(header_value: str, verstat: Verstat, *, display_name: str | None = None) -> str:
    """Add ``verstat`` to a P-Asserted-Identity or From value (3GPP TS 24.229 7.2A.20).

    A tel URI takes it as a parameter (``<tel:+12155551212;verstat=...>``); a SIP URI takes it
    in the user part (``<sip:+12155551212;verstat=...@host;user=phone>``). An existing verstat
    is replaced, never duplicated. ``display_name`` replaces the display name when given.
    """
    addr = parse_name_addr(header_value)
    uri = tag_uri(addr.uri, verstat)
    if uri is None:
        return header_value if display_name is None else addr.format(display_name=display_name)
    return addr.format(uri=uri, display_name=display_name)


def tag_uri(uri: str, verstat: Verstat) -> str | None:
    """``uri`` with ``verstat`` where 3GPP TS 24.229 7.2A.20 puts it; None for other schemes."""
    tag = f";verstat={verstat.value}"
    scheme, _, rest = uri.partition(":")
    if scheme.lower() == "tel":
        number, sep, params = rest.partition(";")
        params = _VERSTAT_PARAM.sub("", sep + params)
        return f"{scheme}:{number}{tag}{params}"
    if scheme.lower() in ("sip", "sips") and "@" in rest:
        user, _, host = rest.rpartition("@")
        user = _VERSTAT_PARAM.sub("", user)
        return f"{scheme}:{user}{tag}@{host}"
    return None
