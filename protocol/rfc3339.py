"""RFC 3339 date-times, the protocol's only time format: reading one into UTC
epoch seconds and writing one from them.

msgspec reads RFC 3339 too, but refuses the leap second (`23:59:60`), which a
CSMS may legitimately send; so this stays ours.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

# Offset minutes are checked here: datetime reads "+00:60" as an hour.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:[0-5]\d)")

EXAMPLE = "2026-11-24T12:00:00Z"


def parse_rfc3339(value: str) -> float:
    """UTC epoch seconds of an RFC 3339 date-time, or ValueError saying what is
    wrong. The offset is mandatory: a reservation's expiry is an absolute instant."""
    if _RFC3339.fullmatch(value) is None:
        raise ValueError(f"expected an RFC 3339 date-time with offset or Z (e.g. {EXAMPLE}), "
                         f"got {value[:40]!r}")
    # A leap second (23:59:60 UTC) has no epoch instant of its own: it is read
    # as the following second, by reading :59 and adding one.
    leap = value[17:19] == "60"
    text = value[:17] + "59" + value[19:] if leap else value
    try:
        # datetime reads what the pattern lets through, finer digits than
        # microseconds included (it drops them: they cannot change a decision),
        # once RFC 3339's lower-case t and z are upper-case.
        epoch = datetime.fromisoformat(text.upper()).timestamp()
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid date-time ({exc})") from None
    if leap:
        epoch += 1
        if epoch // 1 % 86400:
            raise ValueError(f"{value!r} is not a valid date-time (second 60 is only the "
                             "leap second, 23:59:60 UTC)")
    return epoch


def format_rfc3339(epoch: float, timespec: str = "milliseconds") -> str:
    """The UTC instant `epoch` as RFC 3339 with Z, as the actor's own examples write it."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec=timespec).replace(
        "+00:00", "Z")
