"""Fuzzing: random well-formed and malformed requests.

1. A hypothesis state machine sends them over real sockets to one actor
   process (started once for the module) and, after every step, checks that
   the actor answered exactly once with the request's id and a documented
   error code, is still running, and that its invariants hold on get_state
   and on the update stream, recomputed here independently (the guarantee by
   the brute-force arrival-order oracle, bench.everest_baseline).
2. A short in-process fuzz of the request decoder and validator: anything
   either parses or is refused with ProtocolError and a documented code.

Requests are built field by field from each command's schema: every field
either valid or replaced by junk (wrong types, huge ints, bad enums, bad
timestamps, nested containers, unknown keys), the args or the whole envelope
replaced, or the frame itself broken (truncated, trailing bytes, garbage).
"""

from __future__ import annotations

import itertools
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test,
)

from actor.server import MAX_FRAMES
from bench.everest_baseline import arrival_orders_hold
from bench.procs import station_config
from protocol.messages import ProtocolError, parse_command, parse_rfc3339
from protocol.vocabulary import Command, ConnectorEventType, ConnectorType, ErrorCode
from protocol.wire import UNPACK_LIMITS, decode_request

from .conftest import start_actor

# internal means a bug in the actor; store_failed cannot happen on ':memory:'.
EXPECTED_CODES = {ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_COMMAND, ErrorCode.INVALID_ARGUMENT}
TICK = 0.01           # the actor's default timer tick
CLOCK_MARGIN = 0.1    # the actor's clock and ours, read a moment apart
IN_USE = {"Occupied", "FaultedOccupied"}
STATION = {1: ("cCCS2", "cType2"), 2: ("cCCS2",), 3: ("cType2", "Unknown")}

# -- values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expiry:
    """An expiry_time `offset` seconds after the moment the request is sent,
    written in `style`; turned into text only then (see materialize)."""
    offset: float
    style: str


class RequestId:
    """Stands for the step's fresh request id until the request is sent."""


STYLES = ("Z", "+02:00", "-05:30", "micro", "nano")
INVALID_TIMES = ["tomorrow", "", "2026-11-24", "2026-11-24T12:00:00", "2026-11-24 12:00",
                 "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-24T24:00:00Z",
                 "2026-11-24T12:00:00+24:00", "2026-11-24T12:00:00+99:99",
                 "2026-11-24T12:00:00-00:60", "0000-01-01T00:00:00Z",
                 "２０２６-１１-２４T12:00:00Z", "٢٠٢٦-١١-٢٤T12:00:00Z", "2026-11-24T12:00:00.Z",
                 "2026-11-24T12:00:00Z\n", " 2026-11-24T12:00:00Z", "2026-11-24T12:00:00UTC"]
ODD_TIMES = ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2026-11-24t12:00:00z",
             "2026-11-24T12:00:00." + "9" * 300 + "Z", "2026-11-24 12:00:00+05:45"]   # all RFC 3339
BAD_TIMES = INVALID_TIMES + ODD_TIMES
HUGE_INTS = [2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1,
             -(2 ** 63), -1]
TOKENS = ["ALICE", "alice", "BOB", "FLEET", "fleet"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10), st.sampled_from(HUGE_INTS),
    st.integers(-(2 ** 63), 2 ** 64 - 1), st.floats(), st.text(max_size=12),
    st.binary(max_size=12), st.sampled_from(BAD_TIMES + TOKENS + sorted(ConnectorEventType)),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2 ** 33), st.integers(0, 999_999_999)),
)
keys = st.one_of(st.text(max_size=10), st.binary(max_size=4), st.integers(-2, 2),
                 st.sampled_from(["id", "cmd", "args", "request", "reservation_id", "evse_id"]))
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)), max_leaves=12)


@dataclass(frozen=True)
class Deep:
    """A list nested `depth` levels deep. Written into the frame by encode():
    neither msgpack's packer nor hypothesis's printer can recurse that far."""
    depth: int

    @property
    def marker(self) -> str:
        return f"\x00deep:{self.depth}\x00"

    @property
    def packed(self) -> bytes:
        return b"\x91" * self.depth + b"\x00"   # fixarray of one, ..., 0


# Past the decoder's unpack limits (strings of 4096, arrays of 64, maps of 32),
# or nested deeper than Python's recursion limit (msgpack unpacks 1023 levels).
oversized = st.one_of(st.sampled_from(["x" * 5000, b"x" * 5000, list(range(65)),
                                       {f"k{i}": i for i in range(33)}]),
                      st.builds(Deep, st.integers(990, 1030)))


def int32s(valid):
    return valid, st.one_of(st.sampled_from(HUGE_INTS), junk)


def tokens(valid):
    return valid, st.one_of(st.sampled_from(["", "x" * 256]), st.text(min_size=256, max_size=300),
                            junk)


# Offsets: past, due within the run, later, and beyond 2**31 ms (24.8 days).
EXPIRY = (st.builds(Expiry, st.one_of(st.sampled_from([-2.0, -0.01, 0.0]), st.floats(0.02, 1.5),
                                      st.sampled_from([600.0, 3600.0]),
                                      st.sampled_from([30 * 86400.0, 100 * 365 * 86400.0])),
                    st.sampled_from(STYLES)),
          st.one_of(st.sampled_from(BAD_TIMES), junk))
EVSE_ID = (st.sampled_from([1, 2, 3, 1, 2, 3, 0, 4]), st.one_of(st.sampled_from([-1, 2 ** 31]), junk))
TOKEN = tokens(st.one_of(st.sampled_from(TOKENS), st.text(min_size=1, max_size=255)))
PARENT = tokens(st.sampled_from(TOKENS))
CONNECTOR_TYPE = (st.sampled_from(["cCCS2", "cType2", "Unknown", "cCCS2", "cType2", "Unknown",
                                   *sorted(ConnectorType)]),
                  st.one_of(st.sampled_from(["CCS", "ccs2", "unknown", ""]), junk))

# Each command's args: field -> ((valid, invalid) strategies, required).
RESERVATION = {
    "reservation_id": (int32s(st.integers(1, 6)), True),
    "id_token": (TOKEN, True),
    "expiry_time": (EXPIRY, True),
    "evse_id": (EVSE_ID, False),
    "parent_id_token": (PARENT, False),
    "connector_type": (CONNECTOR_TYPE, False),
}
SCHEMAS: dict[str, dict] = {
    "reserve_now": {"request": (RESERVATION, True)},
    "cancel_reservation": {"reservation_id": (int32s(st.integers(1, 7)), True)},
    "exists_reservation": {"request": ({"id_token": (TOKEN, True), "evse_id": (EVSE_ID, False),
                                        "group_id_token": (PARENT, False)}, True)},
    "use_reservation": {"id_token": (TOKEN, True), "evse_id": (EVSE_ID, False),
                        "parent_id_token": (PARENT, False)},
    "connector_event": {"evse_id": (EVSE_ID, True),
                        "connector_id": ((st.sampled_from([1, 2, 1, 2, 0, 3]),
                                          st.one_of(st.just(-1), junk)), True),
                        "event": ((st.sampled_from(sorted(ConnectorEventType)),
                                   st.one_of(st.sampled_from(["enable", "Fault", ""]), junk)), True)},
    "plug_event": {"evse_id": (EVSE_ID, True),
                   "plugged_in": ((st.booleans(), st.one_of(st.sampled_from([0, 1, "true"]), junk)),
                                  True)},
    "is_charging_possible": {"evse_id": (EVSE_ID, True)},
    "get_state": {}, "ping": {}, "stats": {},
}
assert set(SCHEMAS) == set(Command)


@st.composite
def arguments(draw, schema: dict, mutate: bool) -> tuple[Any, bool]:
    """(args for `schema`, whether they are valid). With mutate, one thing at
    this level or below may go wrong."""
    fault = draw(st.sampled_from(["none", "value", "missing", "unknown_key", "not_a_map",
                                  "nested"])) if mutate else "none"
    if fault == "not_a_map":
        return draw(st.one_of(junk.filter(lambda v: type(v) is not dict), oversized)), False
    names = list(schema)
    faulty = draw(st.sampled_from(names)) if names and fault in ("value", "missing", "nested") else None
    args: dict[Any, Any] = {}
    valid = True
    for name, (spec, required) in schema.items():
        if name == faulty and fault == "missing":
            valid = valid and not required
            continue
        if not required and name != faulty and not draw(st.booleans()):
            if draw(st.integers(0, 4)) == 0:
                args[name] = None   # nil for an optional field is the field absent
            continue
        if name == faulty and (fault == "value" or fault == "nested" and not isinstance(spec, dict)):
            invalid = junk if isinstance(spec, dict) else spec[1]
            value, ok = draw(st.one_of(invalid, oversized)), False
        elif isinstance(spec, dict):   # a nested map (args.request)
            value, ok = draw(arguments(spec, name == faulty))
        else:
            value, ok = draw(spec[0]), True
        args[name] = value
        valid = valid and ok
    if fault == "unknown_key" or not names and fault in ("value", "missing", "nested"):
        key = draw(keys.filter(lambda k: k not in schema))
        args[key] = draw(junk)
        valid = False
    return args, valid


@dataclass
class Request:
    message: Any               # the msgpack value sent, with Expiry and RequestId placeholders
    frame_fault: str           # "none", "truncate", "trailing", "garbage"
    garbage: bytes
    valid: bool                # every part drawn from the valid values


@st.composite
def requests(draw, mutate: bool) -> Request:
    # Weighted toward the commands that change the station.
    cmd = draw(st.sampled_from([*tuple(Command), *["reserve_now"] * 4, *["cancel_reservation"] * 2,
                                "connector_event", "plug_event"]))
    fault = draw(st.sampled_from(["none", "args", "args", "args", "id", "cmd", "extra_key",
                                  "no_cmd", "not_a_map", "frame"])) if mutate else "none"
    args, valid = draw(arguments(SCHEMAS[cmd], fault == "args"))
    message: Any = {"id": RequestId(), "cmd": cmd}
    if args or fault == "args" or draw(st.booleans()):
        message["args"] = args
    if fault == "id":
        message["id"] = draw(junk)
    elif fault == "cmd":
        message["cmd"] = draw(st.one_of(st.text(max_size=20), junk))
    elif fault == "extra_key":
        message[draw(keys.filter(lambda k: k not in ("id", "cmd", "args")))] = draw(junk)
    elif fault == "no_cmd":
        del message["cmd"]
    elif fault == "not_a_map":
        message = draw(st.one_of(junk, oversized))
    frame_fault = draw(st.sampled_from(["truncate", "trailing", "garbage"])) if fault == "frame" \
        else "none"
    return Request(message, frame_fault, draw(st.binary(max_size=64)), valid and fault == "none")


def materialize(value: Any, now: float, request_id: Any) -> Any:
    """The value with its placeholders filled in for a request sent at `now`."""
    if isinstance(value, RequestId):
        return request_id
    if isinstance(value, Expiry):
        return rfc3339(now + value.offset, value.style)
    if isinstance(value, Deep):
        return value.marker
    if type(value) is dict:
        return {k: materialize(v, now, request_id) for k, v in value.items()}
    if type(value) is list:
        return [materialize(v, now, request_id) for v in value]
    return value


def deeps(value: Any) -> list[Deep]:
    if isinstance(value, Deep):
        return [value]
    if type(value) is dict:
        return [d for v in value.values() for d in deeps(v)]
    if type(value) is list:
        return [d for v in value for d in deeps(v)]
    return []


def rfc3339(epoch: float, style: str) -> str:
    offset = {"+02:00": timedelta(hours=2), "-05:30": -timedelta(hours=5, minutes=30)}.get(
        style, timedelta(0))
    moment = datetime.fromtimestamp(epoch, timezone(offset))
    text = moment.isoformat(timespec="microseconds" if style in ("micro", "nano") else "seconds")
    if style == "nano":
        text = text.replace("+00:00", "789+00:00")   # more digits than datetime keeps
    return text.replace("+00:00", "Z")


def encode(request: Request, now: float, request_id: Any) -> bytes:
    frame = msgpack.packb(materialize(request.message, now, request_id))
    for deep in deeps(request.message):
        frame = frame.replace(msgpack.packb(deep.marker), deep.packed)
    if request.frame_fault == "truncate":
        return frame[:len(frame) // 2]
    if request.frame_fault == "trailing":
        return frame + (request.garbage or b"\x00")
    if request.frame_fault == "garbage":
        return request.garbage
    return frame


def readable_id(frame: bytes) -> Any:
    """The id the reply must echo: the request's, when the frame is a map
    (within the unpack limits) whose id is an int or a string."""
    try:
        message = msgpack.unpackb(frame, raw=False, **UNPACK_LIMITS)
    except Exception:
        return None
    if type(message) is not dict or type(message.get("id")) not in (int, str):
        return None
    return message["id"]


# -- 1. the actor over real sockets ----------------------------------------------------------


class Stream:
    """The update stream as one listener sees it, followed across examples."""

    def __init__(self, socket: zmq.Socket) -> None:
        self.socket = socket
        self.last_seq: int | None = None

    def follow(self, seq: int) -> None:
        """Read the stream up to `seq`: one counter, +1 per update."""
        deadline = time.monotonic() + 5
        while self.last_seq is None or self.last_seq < seq:
            remaining = deadline - time.monotonic()
            assert remaining > 0 and self.socket.poll(int(remaining * 1000)), \
                f"updates stopped at seq {self.last_seq}; get_state says {seq}"
            topic, body = self.socket.recv_multipart()
            update = msgpack.unpackb(body, raw=False)
            if self.last_seq is not None:
                assert update["seq"] == self.last_seq + 1, (self.last_seq, topic, update)
            self.last_seq = update["seq"]


@pytest.fixture(scope="module")
def fuzz_actor(tmp_path_factory):
    config = station_config(tmp_path_factory.mktemp("fuzz"), STATION)
    actor = start_actor("--config", config, command="tcp://127.0.0.1:*",
                        update="tcp://127.0.0.1:*")
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(actor.command_endpoint)
    subscriber = context.socket(zmq.SUB)
    subscriber.setsockopt(zmq.LINGER, 0)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"")
    subscriber.connect(actor.update_endpoint)
    stream = Stream(subscriber)
    # Until the subscription reaches the PUB, updates are dropped: make some
    # until one arrives; from then on the stream must be complete.
    probe = ActorFuzz(actor, dealer, stream)
    deadline = time.monotonic() + 10
    while not subscriber.poll(100):
        assert time.monotonic() < deadline, "the subscription never took effect"
        probe.call("plug_event", {"evse_id": 1, "plugged_in": True})
        probe.call("plug_event", {"evse_id": 1, "plugged_in": False})
    stream.follow(probe.call("get_state")["seq"])
    yield actor, dealer, stream
    context.destroy(linger=0)
    assert actor.stop() == 0, "".join(actor.log[-30:])


class ActorFuzz(RuleBasedStateMachine):
    """Random requests against the one actor, which serves every example:
    initialize puts its station back to free (no reservations, nothing plugged
    in, every connector Available); seq and the update stream carry on."""

    ids = itertools.count(1)   # request ids stay unique across examples

    def __init__(self, actor, dealer, stream: Stream) -> None:
        super().__init__()
        self.actor, self.dealer, self.stream = actor, dealer, stream

    def call(self, cmd: str, args: dict | None = None) -> Any:
        message = {"id": next(self.ids), "cmd": cmd}
        if args is not None:
            message["args"] = args
        reply = self.exchange(msgpack.packb(message), message["id"])
        assert reply["ok"], reply
        return reply["result"]

    def exchange(self, frame: bytes, request_id: Any) -> dict:
        """Send one frame; its reply, which must be the next one and carry the id."""
        self.dealer.send(frame)
        assert self.dealer.poll(5000), f"no reply to {frame[:80]!r}; {self.alive()}"
        reply = msgpack.unpackb(self.dealer.recv(), raw=False)
        assert type(reply) is dict and type(reply.get("ok")) is bool, reply
        assert reply.get("id") == request_id, (reply, request_id)
        if not reply["ok"]:
            error = reply["error"]
            assert error["code"] in EXPECTED_CODES, (error, frame[:200])
            assert type(error["message"]) is str and error["message"]
        return reply

    def alive(self) -> str:
        if self.actor.process.poll() is None:
            return "the actor is running"
        return "the actor died:\n" + "".join(self.actor.log[-15:])

    @initialize()
    def reset(self):
        # A failed example may have left a reply unread: skip to our ping's.
        ping = next(self.ids)
        self.dealer.send(msgpack.packb({"id": ping, "cmd": "ping"}))
        while True:
            assert self.dealer.poll(5000), f"no reply to ping; {self.alive()}"
            if msgpack.unpackb(self.dealer.recv(), raw=False).get("id") == ping:
                break
        state = self.call("get_state")
        for r in state["reservations"]:
            self.call("cancel_reservation", {"reservation_id": r["reservation_id"]})
        toward_available = {"Unavailable": "Enable", "Faulted": "ErrorCleared",
                            "Occupied": "SessionFinished", "UnavailableFaulted": "ErrorCleared",
                            "FaultedOccupied": "ErrorCleared"}
        for evse in state["evses"]:
            self.call("plug_event", {"evse_id": evse["id"], "plugged_in": False})
            for connector in evse["connectors"]:
                current = connector["state"]
                while current != "Available":
                    current = self.call("connector_event", {
                        "evse_id": evse["id"], "connector_id": connector["id"],
                        "event": toward_available[current]})

    def send(self, request: Request) -> dict:
        request_id = next(self.ids)
        frame = encode(request, time.time(), request_id)
        reply = self.exchange(frame, readable_id(frame))
        if request.valid:
            # Validation refuses nothing valid; only the station can (no such EVSE or connector).
            cmd = request.message["cmd"]
            assert reply["ok"] or (cmd in ("connector_event", "plug_event")
                                   and reply["error"]["code"] == ErrorCode.INVALID_ARGUMENT), reply
        return reply

    @rule(request=requests(mutate=False))
    def well_formed(self, request):
        self.send(request)

    @rule(request=requests(mutate=True))
    def malformed(self, request):
        reply = self.send(request)
        assert request.frame_fault != "truncate" or not reply["ok"]

    @rule(frame=st.one_of(st.binary(max_size=200), st.sampled_from(
        [b"", b"\xc1", b"\x80", b"\x81\xa2id", b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
         b"\xdb\xff\xff\xff\xff", b"\xc7\x01\xff", msgpack.packb({"cmd": "ping"}) * 2])))
    def garbage_bytes(self, frame):
        self.exchange(frame, readable_id(frame))

    @rule(frames=st.lists(st.binary(max_size=20), min_size=2, max_size=MAX_FRAMES + 1))
    def multipart(self, frames):
        # The actor takes the last frame as the request and the rest (with the
        # identity the ROUTER adds) as the route back, up to MAX_FRAMES in all.
        self.dealer.send_multipart(frames)
        assert self.dealer.poll(5000), "no reply to a multipart request"
        reply = self.dealer.recv_multipart()
        decoded = msgpack.unpackb(reply[-1], raw=False)
        assert reply[:-1] == frames[:-1]
        if 1 + len(frames) > MAX_FRAMES:
            assert decoded["error"]["code"] == ErrorCode.BAD_REQUEST
        else:
            assert decoded["id"] == readable_id(frames[-1])
            assert decoded["ok"] or decoded["error"]["code"] in EXPECTED_CODES

    @rule(seconds=st.sampled_from([0.0, 0.02, 0.1]))
    def time_passes(self, seconds):
        time.sleep(seconds)   # lets short reservations reach their expiry_time

    @invariant()
    def actor_is_sound(self):
        assert self.actor.process.poll() is None, self.alive()
        sent_at = time.time()
        state = self.call("get_state")
        reservations = state["reservations"]
        evses = {e["id"]: e for e in state["evses"]}

        specific = [r for r in reservations if "evse_id" in r]
        assert len({r["evse_id"] for r in specific}) == len(specific), "an EVSE holds two"
        for r in specific:
            assert evses[r["evse_id"]]["reservation_id"] == r["reservation_id"]

        # Plugging in triggers no re-check by design (the car may be the reserved
        # one), so plugged-in EVSEs count as free, as in test_core_properties.
        taken = {r["evse_id"] for r in specific}
        free = [frozenset(c["type"] for c in e["connectors"] if c["state"] == "Available")
                for e in evses.values()
                if e["id"] not in taken and not any(c["state"] in IN_USE for c in e["connectors"])]
        cars = sorted(r.get("connector_type") or "Unknown" for r in reservations if "evse_id" not in r)
        assert arrival_orders_hold(cars, free), (cars, free)

        for r in reservations:
            assert parse_rfc3339(r["expiry_time"]) > sent_at - TICK - CLOCK_MARGIN, \
                f"reservation {r['reservation_id']} outlived its expiry_time {r['expiry_time']}"

        self.stream.follow(state["seq"])


def test_actor_survives_random_requests(fuzz_actor):
    run_state_machine_as_test(
        lambda: ActorFuzz(*fuzz_actor),
        settings=settings(max_examples=25, stateful_step_count=30, deadline=None,
                          suppress_health_check=list(HealthCheck)))
    assert fuzz_actor[0].process.poll() is None


# -- 2. the decoder and validator in-process -----------------------------------------------------

NOW = datetime(2026, 11, 24, tzinfo=timezone.utc).timestamp()


@contextmanager
def default_recursion_limit():
    """Python's default recursion limit, counted from here, as the actor has
    it: hypothesis raises the limit while it runs a test."""
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 1000)
    try:
        yield
    finally:
        sys.setrecursionlimit(saved)


def decode_and_validate(frame: bytes) -> None:
    try:
        with default_recursion_limit():
            _, cmd, args, _ = decode_request(frame)
            parse_command(cmd, args)
    except ProtocolError as error:
        assert error.code in EXPECTED_CODES, error.code
        assert type(error.message) is str and error.message


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(mutate=True))
def test_decoder_refuses_malformed_requests_only_with_protocol_errors(request):
    decode_and_validate(encode(request, NOW, 1))


@settings(max_examples=800, deadline=None)
@given(message=st.one_of(junk, st.dictionaries(st.sampled_from(["id", "cmd", "args"]), junk)))
def test_decoder_refuses_arbitrary_structures_only_with_protocol_errors(message):
    decode_and_validate(msgpack.packb(message))


@settings(max_examples=1000, deadline=None)
@given(frame=st.binary(max_size=300))
def test_decoder_refuses_arbitrary_bytes_only_with_protocol_errors(frame):
    decode_and_validate(frame)


@settings(max_examples=500, deadline=None)
@given(request=requests(mutate=False))
def test_validator_accepts_every_well_formed_request(request):
    _, cmd, args, _ = decode_request(encode(request, NOW, 1))
    parse_command(cmd, args)


@pytest.mark.parametrize("text", INVALID_TIMES)
def test_malformed_expiry_time_is_invalid_argument(text):
    request = {"reservation_id": 1, "id_token": "T", "expiry_time": text}
    with pytest.raises(ProtocolError) as refused:
        parse_command("reserve_now", {"request": request})
    assert refused.value.code == ErrorCode.INVALID_ARGUMENT
    assert refused.value.message.startswith("args.request.expiry_time: ")


@pytest.mark.parametrize("text", ODD_TIMES)
def test_unusual_but_valid_expiry_time_is_accepted(text):
    parse_command("reserve_now", {"request": {"reservation_id": 1, "id_token": "T",
                                              "expiry_time": text}})
