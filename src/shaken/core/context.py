"""The parts of a SIP request that STIR/SHAKEN reads, as plain strings.

The SIP adapter (or a REST request, or a Python caller) fills a :class:`SipContext`; the core
derives identities and dates from it. Nothing here knows about sockets or transactions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from shaken.core.fastinit import positional_constructor
from shaken.core.tn import NumberingPlan, PartyIdentity, identity_from_header, identity_from_uri

__all__ = [
    "CALLED_SOURCES",
    "CALLER_SOURCES",
    "SipContext",
    "called_identities",
    "caller_identities",
    "format_epoch_date",
    "format_sip_date",
    "make_context",
    "parse_sip_date",
]

#: Where the caller's identity may come from, by name (docs/architecture.md section 3, check 2).
CALLER_SOURCES = ("pai", "from")
#: Where the called identity may come from (check 10).
CALLED_SOURCES = ("to", "request_uri")


@dataclass(frozen=True, slots=True, kw_only=True)
class SipContext:
    """Header values of one request. ``identity`` holds every Identity header value, in order."""

    identity: tuple[str, ...] = ()
    from_header: str | None = None
    pai: tuple[str, ...] = ()
    to: str | None = None
    request_uri: str | None = None
    date: str | None = None
    call_id: str | None = None


#: SipContext(identity, from_header, pai, to, request_uri, date, call_id), positionally: the
#: SIP handler, the REST app and verify_identity build one per request
#: (:mod:`shaken.core.fastinit` says why).
make_context: Callable[..., SipContext] = positional_constructor(SipContext)


def _identities(
    ctx: SipContext, source: str, plan: NumberingPlan | None, numeric_user_is_tn: bool
) -> list[PartyIdentity]:
    if source == "pai":
        values: tuple[str | None, ...] = ctx.pai
    elif source == "from":
        values = (ctx.from_header,)
    elif source == "to":
        values = (ctx.to,)
    elif source == "request_uri":
        values = (ctx.request_uri,)
    else:
        raise ValueError(f"unknown identity source {source!r}")
    read = identity_from_uri if source == "request_uri" else identity_from_header
    out: list[PartyIdentity] = []
    for value in values:
        if value:
            try:
                out.append(read(value, plan=plan, numeric_user_is_tn=numeric_user_is_tn))
            except ValueError:
                continue
    return out


def caller_identities(
    ctx: SipContext,
    *,
    sources: tuple[str, ...] = CALLER_SOURCES,
    plan: NumberingPlan | None = None,
    numeric_user_is_tn: bool = True,
) -> tuple[PartyIdentity, ...]:
    """The caller's identities from the first source that has any (SHAKEN: PAI, else From).

    Several P-Asserted-Identity values (a tel and a sip URI, RFC 3325) all count.
    """
    for source in sources:
        found = _identities(ctx, source, plan, numeric_user_is_tn)
        if found:
            return tuple(found)
    return ()


def called_identities(
    ctx: SipContext,
    *,
    sources: tuple[str, ...] = CALLED_SOURCES,
    plan: NumberingPlan | None = None,
    numeric_user_is_tn: bool = True,
) -> tuple[PartyIdentity, ...]:
    """The called identities from every listed source (To, and the Request-URI)."""
    if len(sources) == 1:
        return tuple(_identities(ctx, sources[0], plan, numeric_user_is_tn))
    out: list[PartyIdentity] = []
    for source in sources:
        out.extend(_identities(ctx, source, plan, numeric_user_is_tn))
    return tuple(out)


def parse_sip_date(value: str) -> datetime | None:
    """An RFC 3261 SIP-date (RFC 1123 form, GMT) as an aware datetime, or None if unreadable.

    Cached: the calls of one second carry the same Date text. A SIP-date is 29 characters;
    longer text is parsed but not kept, so the cache's size is bounded in bytes too.
    """
    if len(value) > _CACHED_DATE_CHARS:
        return _parse_sip_date.__wrapped__(value)
    return _parse_sip_date(value)


_CACHED_DATE_CHARS = 64


@functools.lru_cache(maxsize=256)
def _parse_sip_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: "00" to "59": a day, an hour, a minute or a second, as a SIP-date writes it.
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))


def format_sip_date(moment: datetime) -> str:
    """``Fri, 25 Sep 2015 19:12:25 GMT`` (RFC 3261 section 20.17: RFC 1123's form, in GMT).

    Written out here rather than with :func:`email.utils.format_datetime` (which gives the same
    text, a test proves it): this runs for every call signed without a Date, and the general
    formatter builds a time tuple and a zone on the way. The two-digit fields come from a table:
    a ``:02d`` format spec costs more than the rest of the function.
    """
    t = moment.astimezone(UTC)
    year = t.year
    two = _TWO_DIGITS
    return (
        f"{_DAYS[t.weekday()]}, {two[t.day]} {_MONTHS[t.month - 1]}"
        f" {year if year >= 1000 else f'{year:04d}'}"
        f" {two[t.hour]}:{two[t.minute]}:{two[t.second]} GMT"
    )


@functools.lru_cache(maxsize=16)
def format_epoch_date(seconds: int) -> str:
    """The SIP-date of ``seconds`` since 1970 (a REST request's ``time``).

    Cached: the requests of one second carry the same ``time``; sixteen strings of 29
    characters bound the cache.
    """
    return format_sip_date(datetime.fromtimestamp(seconds, UTC))
