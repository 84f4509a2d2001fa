"""Framing of wire protocol v1: the request envelope, replies, two-frame updates,
and the errors both sides speak. msgspec is the msgpack codec.

See PROTOCOL.md beside this file for the reference text; the two are kept in step.
A request is decoded in two steps: the envelope here, keeping `args` raw (still
msgpack), then `args` by the command's own decoder (`messages.decode_args`), so
a request costs one pass over its bytes and a refusal names the right field.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime
from typing import Annotated, Any

import msgspec

from .rfc3339 import format_rfc3339
from .vocabulary import Command, ErrorCode

DEFAULT_COMMAND_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_UPDATE_ENDPOINT = "tcp://127.0.0.1:5556"


class ProtocolError(Exception):
    """A request the actor refuses, with the ErrorCode a client can act on."""

    request_id: Any = None   # set when the request's id could be read, to echo it

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CommandFailed(Exception):
    """The actor answered with an error; `code` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


NO_ARGS = msgspec.Raw(b"\x80")   # msgpack's empty map: what absent (or nil) args mean
MAX_ID_LENGTH = 4096   # an id is echoed in the reply: a longer one is not an id but a load
# msgspec counts the nesting it reads against Python's recursion limit; a
# decoding process raises that limit to this, so that every frame a msgpack
# library writes by default (1023 levels at most) is read and its id echoed.
READABLE_NESTING = 4000

# A deadline is UTC epoch milliseconds. These bounds (2001-09-09 and the year
# 5138) refuse a deadline sent in seconds or in microseconds by mistake, which
# would otherwise read as long past or as never.
DEADLINE_MIN_MS, DEADLINE_MAX_MS = 10**12, 10**14
# Seconds a call waits for its reply past the request's deadline: a reply the
# actor decided just before the deadline still has the rest of that loop turn,
# its commit (one fsync) and the trip back ahead of it. Fixed, not a share of
# the timeout, because none of that grows with the caller's timeout.
DEADLINE_GRACE = 0.25


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cmd: str
    id: int | Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)] | None = None
    args: msgspec.Raw = NO_ARGS   # kept as msgpack, for the command's decoder
    deadline: Annotated[int, msgspec.Meta(ge=DEADLINE_MIN_MS, lt=DEADLINE_MAX_MS)] | None = None


class Error(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: str
    message: str


class _Ok(msgspec.Struct, frozen=True):
    id: Any
    ok: bool
    result: Any


class _Failed(msgspec.Struct, frozen=True):
    id: Any
    ok: bool
    error: Error


_decode_request = msgspec.msgpack.Decoder(Request).decode
_MAPS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}   # fixmap, map 16, map 32
_NIL = 0xC0
_REQUEST_KEYS = "a request is a map with cmd and optionally id, args, deadline"
_DEADLINE_HINT = ("a deadline is an integer of UTC epoch milliseconds, between 2001 and 5138 "
                  "(seconds or microseconds sent by mistake?)")


def decode_request(body: bytes) -> tuple[int | str | None, str, msgspec.Raw, int | None]:
    """(id, cmd, args, deadline) of a request frame, args still msgpack,
    deadline in epoch ms or None. Raises ProtocolError(bad_request), carrying
    the id when one could be read so the reply can echo it."""
    try:
        request = _decode_request(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as error:
        raise _bad_request(body, error) from None
    args = request.args
    if args is not NO_ARGS:
        first = memoryview(args)[0]
        if first == _NIL:
            args = NO_ARGS
        elif first not in _MAPS:
            refused = ProtocolError(ErrorCode.BAD_REQUEST, "args must be a map (or absent)")
            refused.request_id = request.id
            raise refused
    return request.id, request.cmd, args, request.deadline


_WHERE = re.compile(r" - at `(key` in `)?\$([^`]*)`$")


def where_refused(error: msgspec.ValidationError) -> tuple[str, str]:
    """(what, where) of a msgspec refusal: where is the path below the value
    refused (".request.evse_id"), empty for the value itself."""
    text = str(error)
    found = _WHERE.search(text)
    if found is None:
        return text, ""
    what = text[:found.start()]
    return (what + " (a map key)" if found.group(1) else what), found.group(2)


def _bad_request(body: bytes, error: Exception) -> ProtocolError:
    if isinstance(error, msgspec.ValidationError):
        what, where = where_refused(error)
        hint = _DEADLINE_HINT if where == ".deadline" else _REQUEST_KEYS
        refused = ProtocolError(ErrorCode.BAD_REQUEST, f"request{where}: {what}; {hint}")
    else:
        refused = ProtocolError(ErrorCode.BAD_REQUEST, f"request is not valid msgpack ({error})")
    # Echo the id if there is one to read, whatever else is wrong (only on this path).
    try:
        request = msgspec.msgpack.decode(body)
    except (msgspec.DecodeError, RecursionError, TypeError, ValueError):
        return refused
    if type(request) is dict:
        request_id = request.get("id")
        if type(request_id) is int or type(request_id) is str and len(request_id) <= MAX_ID_LENGTH:
            refused.request_id = request_id
    return refused


def deadline_after(timeout: float) -> int:
    """The `deadline` of a request sent now that may wait `timeout` seconds:
    UTC epoch milliseconds, as the wire protocol has it."""
    return math.ceil((time.time() + timeout) * 1000)


def encode_request(request_id: int, cmd: str, args: dict[str, Any] | None,
                   deadline: int | None = None) -> bytes:
    request: dict[str, Any] = {"id": request_id, "cmd": cmd}
    if args is not None:
        request["args"] = args
    if deadline is not None:
        request["deadline"] = deadline
    return msgspec.msgpack.encode(request)


class Encoder:
    """Replies and update bodies. An expiry_time (messages.Rfc3339Time) is
    written as the text it holds. One Encoder per thread."""

    def __init__(self) -> None:
        self.pack = msgspec.msgpack.Encoder(enc_hook=str).encode

    def result(self, request_id: Any, result: Any) -> bytes:
        return self.pack(_Ok(request_id, True, result))

    def error(self, request_id: Any, code: ErrorCode, message: str) -> bytes:
        return self.pack(_Failed(request_id, False, Error(code, message)))


def decode_reply(body: bytes) -> dict[str, Any]:
    return msgspec.msgpack.decode(body)


def result_of(reply: dict[str, Any]) -> Any:
    if reply.get("ok"):
        return reply.get("result")
    error = reply.get("error") or {}
    raise CommandFailed(error.get("code", "?"), error.get("message", ""))


def decode_update(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    topic, body = frames
    return topic.decode(), msgspec.msgpack.decode(body)


def timed_out(endpoint: str, wait: float) -> TimeoutError:
    return TimeoutError(f"no reply from {endpoint} within {wait} s (+{DEADLINE_GRACE} s grace); "
                        "the request's deadline has passed, so it can no longer take effect "
                        "(see PROTOCOL.md, Deadlines, for the limits of that)")


class Commands:
    """The protocol's commands as methods over `call`. Client and AsyncClient
    share them: AsyncClient.call is a coroutine function, so there each method
    returns an awaitable of the same result."""

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        raise NotImplementedError

    def reserve_now(self, **request: Any) -> str:
        """`expiry_time` is RFC 3339 text or an aware datetime."""
        expiry = request.get("expiry_time")
        if isinstance(expiry, datetime):
            if expiry.utcoffset() is None:
                raise ValueError(f"expiry_time {expiry.isoformat()} has no time zone; an expiry "
                                 "is an absolute instant: give tzinfo (e.g. timezone.utc)")
            request["expiry_time"] = format_rfc3339(expiry.timestamp())
        return self.call(Command.RESERVE_NOW, {"request": request})

    def cancel_reservation(self, reservation_id: int) -> bool:
        return self.call(Command.CANCEL_RESERVATION, {"reservation_id": reservation_id})

    def exists_reservation(self, **request: Any) -> str:
        return self.call(Command.EXISTS_RESERVATION, {"request": request})

    def connector_event(self, evse_id: int, connector_id: int, event: str) -> str:
        return self.call(Command.CONNECTOR_EVENT, {"evse_id": evse_id, "connector_id": connector_id,
                                                   "event": event})

    def plug_event(self, evse_id: int, plugged_in: bool) -> None:
        return self.call(Command.PLUG_EVENT, {"evse_id": evse_id, "plugged_in": plugged_in})

    def use_reservation(self, **args: Any) -> int | None:
        return self.call(Command.USE_RESERVATION, args)

    def is_charging_possible(self, evse_id: int) -> bool:
        return self.call(Command.IS_CHARGING_POSSIBLE, {"evse_id": evse_id})

    def get_state(self) -> dict[str, Any]:
        return self.call(Command.GET_STATE)

    def ping(self) -> str:
        return self.call(Command.PING)

    def stats(self) -> dict[str, Any]:
        return self.call(Command.STATS)
