"""The SIP Date header's text, written by hand, against the standard library's formatter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from shaken.core.context import format_epoch_date, format_sip_date, parse_sip_date


@given(
    # From year 1: the years before 1000 are written with four digits too.
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_format_sip_date_is_rfc_1123_in_gmt(moment: datetime, offset_minutes: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    aware = moment.replace(tzinfo=zone)
    expected = format_datetime(aware.astimezone(UTC).replace(microsecond=0), usegmt=True)
    assert format_sip_date(aware) == expected


@given(st.integers(min_value=1, max_value=2**33 - 1))
def test_format_epoch_date_is_the_sip_date_of_that_second(seconds: int) -> None:
    expected = format_datetime(datetime.fromtimestamp(seconds, UTC), usegmt=True)
    assert format_epoch_date(seconds) == expected
    assert format_epoch_date(seconds) == expected  # the cached answer too


def test_a_year_before_1000_has_four_digits() -> None:
    assert format_sip_date(datetime(999, 1, 5, 3, 4, 5, tzinfo=UTC)) == (
        "Sat, 05 Jan 0999 03:04:05 GMT"
    )


def test_a_known_date() -> None:
    moment = datetime(2015, 9, 25, 19, 12, 25, 999_999, tzinfo=UTC)
    assert format_sip_date(moment) == "Fri, 25 Sep 2015 19:12:25 GMT"
    assert parse_sip_date(format_sip_date(moment)) == moment.replace(microsecond=0)
