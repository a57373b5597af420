"""The SIP Date header's text, written by hand, against the standard library's formatter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from shaken.core.context import format_sip_date, parse_sip_date


@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_format_sip_date_is_rfc_1123_in_gmt(moment: datetime, offset_minutes: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    aware = moment.replace(tzinfo=zone)
    expected = format_datetime(aware.astimezone(UTC).replace(microsecond=0), usegmt=True)
    assert format_sip_date(aware) == expected


def test_a_known_date() -> None:
    moment = datetime(2015, 9, 25, 19, 12, 25, 999_999, tzinfo=UTC)
    assert format_sip_date(moment) == "Fri, 25 Sep 2015 19:12:25 GMT"
    assert parse_sip_date(format_sip_date(moment)) == moment.replace(microsecond=0)
