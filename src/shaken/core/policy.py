"""From what verification found to what the call gets (DESIGN.md section 5).

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
the action and on by default. Everything here is pure string work.

Branded calling (RFC 9795, RFC 9796): when a call verified *and* its Rich Call Data verdict is
``verified``, a profile may present the brand: ``rcd_display`` ``replace`` makes the caller's
display name the verified ``nam``, ``prefix`` makes it ``rcd_display_prefix`` + ``nam`` (e.g.
"(Verified) Acme Bank"); ``rcd_call_info`` adds the RFC 9796 ``Call-Info`` header. A brand that
did not verify is never presented: the display name is then left as the action makes it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shaken.core.branding import call_info
from shaken.core.errors import ConfigurationError
from shaken.core.reasons import REASONS, Reason, Verstat
from shaken.core.result import Outcome, VerificationResult
from shaken.core.tn import parse_name_addr

__all__ = [
    "Action",
    "ActionPolicy",
    "Decision",
    "OutcomeAction",
    "decide",
    "reason_header",
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

    def __post_init__(self) -> None:
        if self.reason_protocol not in ("STIR", "SIP"):
            raise ConfigurationError("reason_protocol is STIR (RFC 9410) or SIP")
        if self.rcd_display not in RCD_DISPLAY:
            raise ConfigurationError(f"rcd_display is one of {', '.join(RCD_DISPLAY)}")

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
        phrase = chosen.reject_phrase or (
            info.phrase if info is not None and code == info.sip_code else "Forbidden"
        )
        if code == 603 and chosen.reject_phrase is None:
            phrase = "Decline"
        return Decision(
            action=Action.REJECT,
            verstat=result.verstat,
            sip_code=code,
            sip_phrase=phrase,
            tag_verstat=policy.tag_verstat,
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
    return Decision(
        action=chosen.action,
        verstat=result.verstat,
        reason_header=header,
        display_name=name,
        tag_verstat=policy.tag_verstat,
        call_info=info_value,
        brand_presented=presented,
    )


_VERSTAT_PARAM = re.compile(r";verstat=[^;@>]*", re.IGNORECASE)


def tag_verstat(header_value: str, verstat: Verstat, *, display_name: str | None = None) -> str:
    """Add ``verstat`` to a P-Asserted-Identity or From value (3GPP TS 24.229 7.2A.20).

    A tel URI takes it as a parameter (``<tel:+12155551212;verstat=...>``); a SIP URI takes it
    in the user part (``<sip:+12155551212;verstat=...@host;user=phone>``). An existing verstat
    is replaced, never duplicated. ``display_name`` replaces the display name when given.
    """
    addr = parse_name_addr(header_value)
    uri = addr.uri
    tag = f";verstat={verstat.value}"
    scheme, _, rest = uri.partition(":")
    if scheme.lower() == "tel":
        number, sep, params = rest.partition(";")
        params = _VERSTAT_PARAM.sub("", sep + params)
        uri = f"{scheme}:{number}{tag}{params}"
    elif scheme.lower() in ("sip", "sips") and "@" in rest:
        user, _, host = rest.rpartition("@")
        user = _VERSTAT_PARAM.sub("", user)
        uri = f"{scheme}:{user}{tag}@{host}"
    else:
        return header_value if display_name is None else addr.format(display_name=display_name)
    return addr.format(uri=uri, display_name=display_name)
