"""RFC 3339 date-times as the protocol reads them (`expiry_time`), leap seconds included."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from protocol.messages import parse_command
from protocol.rfc3339 import parse_rfc3339
from protocol.wire import ProtocolError


@pytest.mark.parametrize("leap, following", [
    ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),
    ("2015-06-30T23:59:60Z", "2015-07-01T00:00:00Z"),
    ("2016-12-31T15:59:60-08:00", "2017-01-01T00:00:00Z"),     # RFC 3339's own example
    ("2017-01-01T05:29:60+05:30", "2017-01-01T00:00:00Z"),
    ("2016-12-31t23:59:60.250z", "2017-01-01T00:00:00.25Z"),
])
def test_a_leap_second_is_the_instant_of_the_following_second(leap, following):
    assert parse_rfc3339(leap) == parse_rfc3339(following)


@given(st.dates(min_value=date(1972, 1, 1), max_value=date(9998, 12, 30)))
def test_every_day_may_end_in_a_leap_second(day):
    # Leap seconds are announced months ahead; no table here could know them all.
    midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), timezone.utc)
    assert parse_rfc3339(f"{day.isoformat()}T23:59:60Z") == midnight.timestamp()


@pytest.mark.parametrize("value", [
    "2016-12-31T12:00:60Z",          # second 60 exists only as the last second of a UTC day
    "2016-12-31T23:59:60+01:00",     # that is 22:59:60 UTC
    "2016-12-31T23:58:60Z",
    "2016-12-31T23:59:61Z",
    "2016-12-32T23:59:60Z",
])
def test_second_60_anywhere_else_is_refused(value):
    with pytest.raises(ValueError, match="second 60|not a valid date-time"):
        parse_rfc3339(value)
    with pytest.raises(ProtocolError) as refused:
        parse_command("reserve_now", {"request": {"reservation_id": 1, "id_token": "T",
                                                  "expiry_time": value}})
    assert refused.value.code == "invalid_argument"
    assert refused.value.message.startswith("args.request.expiry_time: ")
    assert value in refused.value.message
