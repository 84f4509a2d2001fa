"""The commands of wire protocol v1 as msgspec types, and one decoder per command.

Theory of operation: every command that reaches the reservation core was
decoded by msgspec, in C, straight from its msgpack `args` into one of the
frozen Structs below, checking types, ranges, lengths, enum words and unknown
keys (EVerest's schemas say additionalProperties: false) in the same pass. So
the core never sees a malformed value, and a request that fails has changed
nothing: decoding has no side effects. Names and enum spellings are EVerest's
(interfaces and types `reservation` and `evse_manager`).

What msgspec cannot say is ours: `expiry_time` is an RFC 3339 date-time that
may be a leap second (`protocol.rfc3339`), decoded into `Rfc3339Time`, a str
that also carries its instant. msgspec's error text names the place as
`$.request.evse_id`; `decode_args` turns that into the protocol's
`args.request.evse_id: ...`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from .rfc3339 import parse_rfc3339
from .vocabulary import Command, ConnectorEventType, ConnectorType, ErrorCode
from .wire import ProtocolError, where_refused

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
TOKEN_MAX = 255

Int32 = Annotated[int, msgspec.Meta(ge=INT32_MIN, le=INT32_MAX)]
Id = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=TOKEN_MAX)]


class Rfc3339Time(str):
    """An `expiry_time` as the client wrote it (get_state echoes it) and, as
    `epoch`, the UTC instant it names. Constructing one checks it (ValueError)."""

    __slots__ = ("epoch",)

    def __new__(cls, text: str) -> Rfc3339Time:
        self = super().__new__(cls, text)
        self.epoch = parse_rfc3339(text)
        return self


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Every command type: immutable, no unknown keys, and an optional field
    that is absent (or nil, which EVerest's optionals read as absent) is None."""


class Reservation(Message):
    reservation_id: Int32
    id_token: Token
    expiry_time: Rfc3339Time
    evse_id: Id | None = None
    parent_id_token: Token | None = None
    connector_type: ConnectorType | None = None

    @property
    def expiry(self) -> float:
        return self.expiry_time.epoch


class ExistsReservation(Message):
    id_token: Token
    evse_id: Id | None = None
    group_id_token: Token | None = None


class _ExistsReservationArgs(Message):
    request: ExistsReservation


class ReserveNow(Message):
    request: Reservation


class CancelReservation(Message):
    reservation_id: Int32


class ConnectorEvent(Message):
    evse_id: Id
    connector_id: Id
    event: ConnectorEventType


class PlugEvent(Message):
    evse_id: Id
    plugged_in: bool


class UseReservation(Message):
    id_token: Token
    evse_id: Id | None = None
    parent_id_token: Token | None = None


class IsChargingPossible(Message):
    evse_id: Id


class GetState(Message):
    pass


class Ping(Message):
    pass


class Stats(Message):
    pass


ARGS: dict[str, type[Message]] = {   # each command's args type
    Command.RESERVE_NOW: ReserveNow,
    Command.CANCEL_RESERVATION: CancelReservation,
    Command.EXISTS_RESERVATION: _ExistsReservationArgs,
    Command.USE_RESERVATION: UseReservation,
    Command.CONNECTOR_EVENT: ConnectorEvent,
    Command.PLUG_EVENT: PlugEvent,
    Command.IS_CHARGING_POSSIBLE: IsChargingPossible,
    Command.GET_STATE: GetState,
    Command.PING: Ping,
    Command.STATS: Stats,
}


def _decode_custom(kind: type, value: Any) -> Any:
    if kind is Rfc3339Time:
        if type(value) is not str:
            raise TypeError(f"Expected an RFC 3339 date-time string, got `{type(value).__name__}`")
        return Rfc3339Time(value)
    raise NotImplementedError(kind)


_DECODERS = {cmd: msgspec.msgpack.Decoder(kind, dec_hook=_decode_custom).decode
             for cmd, kind in ARGS.items()}
_REFUSED = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
# An enum error names the word it refused; these name the words it takes.
_ENUM_FIELDS = {"connector_type": ConnectorType, "event": ConnectorEventType}


def refusal(code: ErrorCode, root: str, error: Exception) -> ProtocolError:
    """A msgspec error as the protocol's error: msgspec says "<what> - at
    `$.<where>`"; the protocol says "<root>.<where>: <what>"."""
    what, where = where_refused(error)
    field = (root + where).lstrip(".")
    if what.startswith("Invalid enum value"):
        words = _ENUM_FIELDS.get(field.rpartition(".")[2])
        if words is not None:
            what += f"; expected one of {', '.join(words)}"
    return ProtocolError(code, f"{field}: {what}" if field else what)


def invalid(message: str) -> ProtocolError:
    """A refusal of what the types cannot say alone (an EVSE this station lacks)."""
    return ProtocolError(ErrorCode.INVALID_ARGUMENT, message)


def _unknown(cmd: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.UNKNOWN_COMMAND,
                         f"unknown command {str(cmd)[:40]!r}; known: {', '.join(Command)}")


def _inner(command: Message) -> Message:
    # exists_reservation's args are {"request": {...}}; the core takes what is inside.
    return command.request if type(command) is _ExistsReservationArgs else command


def decode_args(cmd: str, args: msgspec.Raw) -> Message:
    """The typed command for `cmd`, decoded from its msgpack `args` (see wire.decode_request)."""
    decode = _DECODERS.get(cmd)
    if decode is None:
        raise _unknown(cmd)
    try:
        return _inner(decode(args))
    except _REFUSED as error:
        raise refusal(ErrorCode.INVALID_ARGUMENT, "args", error) from None


def parse_command(cmd: str, args: Any) -> Message:
    """The same as decode_args, from Python values (a stored row, a JSON
    request) instead of msgpack; None args is an empty map."""
    kind = ARGS.get(cmd)
    if kind is None:
        raise _unknown(cmd)
    try:
        return _inner(msgspec.convert({} if args is None else args, kind,
                                      dec_hook=_decode_custom))
    except _REFUSED as error:
        raise refusal(ErrorCode.INVALID_ARGUMENT, "args", error) from None


def reservation_from(fields: dict[str, Any]) -> Reservation:
    """A Reservation from plain values (a stored row), checked exactly as
    reserve_now's `args.request` is; the ProtocolError names the field alone."""
    try:
        return msgspec.convert(fields, Reservation, dec_hook=_decode_custom)
    except _REFUSED as error:
        raise refusal(ErrorCode.INVALID_ARGUMENT, "", error) from None
