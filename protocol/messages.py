"""Message types of wire protocol v1 and the validation that builds them.

Every command that reaches the reservation core has been turned into one of
the frozen dataclasses below by `parse_command`, so the core never sees a
malformed value. Names and enum spellings are EVerest's (interfaces and types
`reservation` and `evse_manager`), so an EVerest user reads the same words.

Validation raises `ProtocolError` with the code a client can act on and a
message naming the offending field; it never has side effects, which is what
makes "a request that fails validation changes nothing" hold.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Callable

from .vocabulary import Command, ConnectorEventType, ConnectorType, ErrorCode

class ProtocolError(Exception):
    """A request the actor refuses, with the ErrorCode a client can act on."""

    request_id: Any = None   # set when the request's id could be read, to echo it

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_ARGUMENT, message)


# -- command types --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reservation:
    reservation_id: int
    id_token: str
    expiry_time: str          # as the client sent it, echoed in get_state
    expiry: float             # the same instant as UTC epoch seconds
    evse_id: int | None = None
    parent_id_token: str | None = None
    connector_type: ConnectorType | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reservation_id": self.reservation_id,
                               "id_token": self.id_token,
                               "expiry_time": self.expiry_time}
        if self.evse_id is not None:
            out["evse_id"] = self.evse_id
        if self.parent_id_token is not None:
            out["parent_id_token"] = self.parent_id_token
        if self.connector_type is not None:
            out["connector_type"] = self.connector_type
        return out


@dataclass(frozen=True, slots=True)
class ReserveNow:
    request: Reservation


@dataclass(frozen=True, slots=True)
class CancelReservation:
    reservation_id: int


@dataclass(frozen=True, slots=True)
class ExistsReservation:
    id_token: str
    evse_id: int | None = None
    group_id_token: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectorEvent:
    evse_id: int
    connector_id: int
    event: ConnectorEventType


@dataclass(frozen=True, slots=True)
class PlugEvent:
    evse_id: int
    plugged_in: bool


@dataclass(frozen=True, slots=True)
class UseReservation:
    id_token: str
    evse_id: int | None = None
    parent_id_token: str | None = None


@dataclass(frozen=True, slots=True)
class IsChargingPossible:
    evse_id: int


@dataclass(frozen=True, slots=True)
class GetState:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Stats:
    pass


# -- field validators -------------------------------------------------------------
# Each takes (value, path) and returns the converted value or raises.

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
TOKEN_MAX = 255


def _int32(value: Any, path: str) -> int:
    # bool is an int subclass in Python; a client sending true meant something else.
    if type(value) is not int:
        raise invalid(f"{path}: expected an integer, got {_describe(value)}")
    if not INT32_MIN <= value <= INT32_MAX:
        raise invalid(f"{path}: {value} is outside the int32 range")
    return value


def _non_negative_id(value: Any, path: str) -> int:
    value = _int32(value, path)
    if value < 0:
        raise invalid(f"{path}: must be >= 0, got {value}")
    return value


def _token(value: Any, path: str) -> str:
    if type(value) is not str:
        raise invalid(f"{path}: expected a string, got {_describe(value)}")
    if not 1 <= len(value) <= TOKEN_MAX:
        raise invalid(f"{path}: must be 1 to {TOKEN_MAX} characters, got {len(value)}")
    return value


def _bool(value: Any, path: str) -> bool:
    if type(value) is not bool:
        raise invalid(f"{path}: expected true or false, got {_describe(value)}")
    return value


def _one_of(vocabulary: type[StrEnum]) -> Callable[[Any, str], StrEnum]:
    """A check for a word of `vocabulary`, returning its member."""
    members = {member.value: member for member in vocabulary}
    listed = ", ".join(members)

    def check(value: Any, path: str) -> StrEnum:
        member = members.get(value) if type(value) is str else None
        if member is None:
            raise invalid(f"{path}: {_describe(value)} is not one of {listed}")
        return member
    return check


# Offset minutes are checked here: datetime reads "+00:60" as an hour.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.(\d+))?(?:[Zz]|[+-]\d{2}:[0-5]\d)")


def parse_rfc3339(value: Any, path: str = "expiry_time") -> float:
    """UTC epoch seconds of an RFC 3339 date-time; the offset is mandatory
    because a reservation's expiry is an absolute instant."""
    match = _RFC3339.fullmatch(value) if type(value) is str else None
    if match is None:
        raise invalid(f"{path}: expected an RFC 3339 date-time with offset or Z "
                      f"(e.g. 2026-11-24T12:00:00Z), got {_describe(value)}")
    text = value.upper().replace(" ", "T").replace("Z", "+00:00")
    fraction = match.group(1)
    if fraction and len(fraction) > 6:
        # datetime resolves microseconds; finer digits cannot change a decision.
        text = text.replace("." + fraction, "." + fraction[:6], 1)
    # A leap second (23:59:60 UTC) has no epoch instant of its own: it is read
    # as the following second, by reading :59 and adding one.
    leap = value[17:19] == "60"
    if leap:
        text = text[:17] + "59" + text[19:]
    try:
        epoch = datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise invalid(f"{path}: {value!r} is not a valid date-time ({exc})") from None
    if leap:
        epoch += 1
        if epoch // 1 % 86400:
            raise invalid(f"{path}: {value!r} is not a valid date-time (second 60 is only the "
                          "leap second, 23:59:60 UTC)")
    return epoch


def format_rfc3339(epoch: float, timespec: str = "milliseconds") -> str:
    """The UTC instant `epoch` as RFC 3339 with Z, as the actor's own examples write it."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec=timespec).replace(
        "+00:00", "Z")


# reprlib bounds depth and width: a request can nest lists ~1000 deep within
# msgpack's limits, deeper than repr() can recurse, and is shown in 40 characters anyway.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 4, 40, 40


def _describe(value: Any) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- structured arguments -------------------------------------------------------------

Field = tuple[Callable[[Any, str], Any], bool]   # (validator, required)


class _Spec:
    """The fields of one map at one place in a request, with every path string
    made once here rather than on every request."""

    __slots__ = ("path", "keys", "fields")

    def __init__(self, path: str, fields: dict[str, Field]) -> None:
        self.path = path
        self.keys = fields.keys()
        self.fields = tuple((key, check, required, f"{path}.{key}")
                            for key, (check, required) in fields.items())


_ABSENT = object()


def _fields(args: Any, spec: _Spec) -> dict[str, Any]:
    """Validate a map against `spec`: no unknown keys (EVerest's schemas say
    additionalProperties: false), every required key present."""
    if type(args) is not dict:
        raise invalid(f"{spec.path}: expected a map, got {_describe(args)}")
    if not spec.keys >= args.keys():
        for key in args:
            if key not in spec.keys:
                raise invalid(f"{spec.path}: unknown key {_describe(key)}; "
                              f"expected {', '.join(spec.keys)}")
    out = {}
    for key, check, required, path in spec.fields:
        value = args.get(key, _ABSENT)
        if value is _ABSENT:
            if required:
                raise invalid(f"{spec.path}: missing required key {key!r}")
        # nil for an optional field means absent, as in EVerest's optionals.
        elif value is not None or required:
            out[key] = check(value, path)
    return out


_RESERVATION: dict[str, Field] = {
    "reservation_id": (_int32, True),
    "id_token": (_token, True),
    "expiry_time": (lambda v, p: v, True),   # parsed below, keeping the text
    "evse_id": (_non_negative_id, False),
    "parent_id_token": (_token, False),
    "connector_type": (_one_of(ConnectorType), False),
}
_RESERVATION_CHECK: dict[str, Field] = {
    "id_token": (_token, True),
    "evse_id": (_non_negative_id, False),
    "group_id_token": (_token, False),
}


_REQUEST_ARG = _Spec("args", {"request": (lambda v, p: v, True)})
_RESERVATION_SPEC = _Spec("args.request", _RESERVATION)
_RESERVATION_CHECK_SPEC = _Spec("args.request", _RESERVATION_CHECK)


def _reserve_now(args: Any) -> ReserveNow:
    request = _fields(_fields(args, _REQUEST_ARG)["request"], _RESERVATION_SPEC)
    expiry = parse_rfc3339(request["expiry_time"], "args.request.expiry_time")
    return ReserveNow(Reservation(expiry=expiry, **request))


def _exists_reservation(args: Any) -> ExistsReservation:
    request = _fields(args, _REQUEST_ARG)["request"]
    return ExistsReservation(**_fields(request, _RESERVATION_CHECK_SPEC))


def _flat(cls: type, fields: dict[str, Field]) -> Callable[[Any], Any]:
    spec = _Spec("args", fields)
    return lambda args: cls(**_fields(args, spec))


PARSERS: dict[str, Callable[[Any], Any]] = {
    Command.RESERVE_NOW: _reserve_now,
    Command.CANCEL_RESERVATION: _flat(CancelReservation, {"reservation_id": (_int32, True)}),
    Command.EXISTS_RESERVATION: _exists_reservation,
    Command.CONNECTOR_EVENT: _flat(ConnectorEvent, {
        "evse_id": (_non_negative_id, True),
        "connector_id": (_non_negative_id, True),
        "event": (_one_of(ConnectorEventType), True)}),
    Command.PLUG_EVENT: _flat(PlugEvent, {
        "evse_id": (_non_negative_id, True),
        "plugged_in": (_bool, True)}),
    Command.USE_RESERVATION: _flat(UseReservation, {
        "id_token": (_token, True),
        "evse_id": (_non_negative_id, False),
        "parent_id_token": (_token, False)}),
    Command.IS_CHARGING_POSSIBLE: _flat(IsChargingPossible, {"evse_id": (_non_negative_id, True)}),
    Command.GET_STATE: _flat(GetState, {}),
    Command.PING: _flat(Ping, {}),
    Command.STATS: _flat(Stats, {}),
}


def parse_command(cmd: str, args: Any) -> Any:
    """The typed command for `cmd` with `args` (an absent args is an empty map)."""
    parser = PARSERS.get(cmd)
    if parser is None:
        raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {_describe(cmd)}; "
                                                       f"known: {', '.join(Command)}")
    return parser({} if args is None else args)
