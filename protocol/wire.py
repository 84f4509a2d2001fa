"""Framing of wire protocol v1: msgpack request and reply maps, two-frame updates.

See PROTOCOL.md beside this file for the reference text; the two are kept in step.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .messages import ProtocolError
from .vocabulary import ErrorCode

DEFAULT_COMMAND_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_UPDATE_ENDPOINT = "tcp://127.0.0.1:5556"

_REQUEST_KEYS = frozenset({"id", "cmd", "args", "deadline"})

# A deadline is UTC epoch milliseconds. These bounds (2001-09-09 and the year
# 5138) refuse a deadline sent in seconds or in microseconds by mistake, which
# would otherwise read as long past or as never.
DEADLINE_MIN_MS, DEADLINE_MAX_MS = 10**12, 10**14

# A valid request is a few small maps of short strings; these bounds make a
# hostile frame cost no more to refuse than a valid one costs to decode.
UNPACK_LIMITS = dict(max_str_len=4096, max_bin_len=4096, max_array_len=64, max_map_len=32)


def decode_request(body: bytes) -> tuple[Any, str, Any, int | None]:
    """(id, cmd, args, deadline) of a request frame; deadline is epoch ms or
    None. Raises ProtocolError(bad_request); the error carries the id when one
    could be read so the reply can echo it."""
    try:
        request = msgpack.unpackb(body, raw=False, **UNPACK_LIMITS)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"request is not valid msgpack ({type(exc).__name__})") from None
    if type(request) is not dict:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "request must be a msgpack map with keys id, cmd, args")
    request_id = request.get("id")
    try:
        if request_id is not None and type(request_id) not in (int, str):
            request_id = None
            raise ProtocolError(ErrorCode.BAD_REQUEST, "id must be an integer or a string")
        if not _REQUEST_KEYS.issuperset(request):
            extra = request.keys() - _REQUEST_KEYS
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown request keys {sorted(map(repr, extra))}; "
                                             "a request has id, cmd, args, deadline")
        cmd = request.get("cmd")
        if type(cmd) is not str:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "request has no cmd string")
        args = request.get("args")
        if args is not None and type(args) is not dict:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"args must be a map (or absent), got a "
                                             f"{type(args).__name__}")
        deadline = request.get("deadline")
        if deadline is not None:
            if type(deadline) is not int:
                raise ProtocolError(ErrorCode.BAD_REQUEST,
                                    f"deadline must be an integer of UTC epoch milliseconds, "
                                    f"got a {type(deadline).__name__}")
            if not DEADLINE_MIN_MS <= deadline < DEADLINE_MAX_MS:
                raise ProtocolError(ErrorCode.BAD_REQUEST,
                                    f"deadline {deadline} is not UTC epoch milliseconds (between "
                                    "2001 and 5138); seconds or microseconds sent by mistake?")
        return request_id, cmd, args, deadline
    except ProtocolError as error:
        error.request_id = request_id
        raise


class Encoder:
    """Replies and update bodies, packed with a msgpack Packer of its own
    (msgpack.packb builds one per call, a third of packing a small reply).
    A Packer is not thread-safe: one Encoder per thread."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer().pack

    def result(self, request_id: Any, result: Any) -> bytes:
        return self.pack({"id": request_id, "ok": True, "result": result})

    def error(self, request_id: Any, code: ErrorCode, message: str) -> bytes:
        return self.pack({"id": request_id, "ok": False,
                          "error": {"code": code, "message": message}})


def decode_reply(body: bytes) -> dict[str, Any]:
    return msgpack.unpackb(body, raw=False)


def decode_update(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    topic, body = frames
    return topic.decode(), msgpack.unpackb(body, raw=False)
