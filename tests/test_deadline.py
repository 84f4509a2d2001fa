"""Request deadlines: a request the client reports as timed out must not take
effect later. The actor is frozen with SIGSTOP while a client's request waits
in its socket queue; after the client reports the timeout it is resumed with
SIGCONT, and the request must be refused (deadline_exceeded) instead of
carried out. Through the sync client, the asyncio client and the OCPP bridge,
and at the wire level with raw msgpack."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Iterator

import msgpack
import pytest
import zmq
from ocpp.exceptions import InternalError

from protocol.aio import AsyncClient
from protocol.client import Client
from protocol.vocabulary import ErrorCode

from .helpers import in_future
from .ocpp_csms import start_setup
from .test_aio import shared_actor  # noqa: F401  (a fixture: one actor for this module)
from .test_ocpp_faults import reserve_now

pytestmark = pytest.mark.timeout(60)

LATE_ID = 88


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The process stopped (SIGSTOP, and seen stopped) until the block ends (SIGCONT)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        end = time.monotonic() + 10
        while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "T":
            assert time.monotonic() < end, "the actor did not stop"
            time.sleep(0.01)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def refused_late(actor, before: int) -> int:
    """Once the actor has dealt with reservation LATE_ID's request (refused
    it, or carried it out): how many requests it has refused for their
    deadline since `before`. Asserts the reservation does not exist."""
    end = time.monotonic() + 10
    with actor.client() as client:
        while True:
            listed = {r["reservation_id"] for r in client.get_state()["reservations"]}
            refused = client.stats()["errors"].get(ErrorCode.DEADLINE_EXCEEDED, 0) - before
            if LATE_ID in listed or refused:
                break
            assert time.monotonic() < end, "the actor never dealt with the late request"
            time.sleep(0.02)
    assert LATE_ID not in listed, "a request reported as timed out took effect"
    return refused


def deadline_refusals(actor) -> int:
    with actor.client() as client:
        return client.stats()["errors"].get(ErrorCode.DEADLINE_EXCEEDED, 0)


def test_sync_call_that_timed_out_never_takes_effect(shared_actor):
    before = deadline_refusals(shared_actor)
    with Client(shared_actor.command_endpoint, timeout=1) as client:
        assert client.ping() == "pong"   # connected: the request goes straight to the actor's queue
        with frozen(shared_actor.pid):
            with pytest.raises(TimeoutError, match="can no longer take effect"):
                client.reserve_now(reservation_id=LATE_ID, id_token="LATE", evse_id=1,
                                   expiry_time=in_future())
        assert refused_late(shared_actor, before) == 1
        assert client.ping() == "pong"


def test_async_call_that_timed_out_never_takes_effect(shared_actor):
    before = deadline_refusals(shared_actor)

    async def body():
        async with AsyncClient(shared_actor.command_endpoint, timeout=1) as client:
            assert await client.ping() == "pong"
            with frozen(shared_actor.pid):
                with pytest.raises(TimeoutError, match="can no longer take effect"):
                    await client.reserve_now(reservation_id=LATE_ID, id_token="LATE", evse_id=1,
                                             expiry_time=in_future())
            # Same socket, answered in order: the late request was dealt with before this.
            assert await client.ping() == "pong"

    asyncio.run(body())
    assert refused_late(shared_actor, before) == 1


def test_async_call_beside_a_timed_out_one_waits_for_its_own_deadline(shared_actor):
    """Two calls on one AsyncClient, the second sent 1.5 s after the first:
    the first timing out must not fail the second, whose request can still
    take effect until its own deadline (and here does, once the actor goes on)."""
    before = deadline_refusals(shared_actor)

    async def body():
        async with AsyncClient(shared_actor.command_endpoint, timeout=2) as client:
            assert await client.ping() == "pong"
            with frozen(shared_actor.pid):
                first = asyncio.create_task(client.reserve_now(
                    reservation_id=LATE_ID, id_token="LATE", evse_id=1, expiry_time=in_future()))
                await asyncio.sleep(1.5)   # what the test is about: a later deadline beside it
                second = asyncio.create_task(client.reserve_now(
                    reservation_id=LATE_ID + 1, id_token="SECOND", evse_id=2,
                    expiry_time=in_future()))
                with pytest.raises(TimeoutError, match="can no longer take effect"):
                    await first
            assert await second == "Accepted"
            assert await client.cancel_reservation(LATE_ID + 1)

    asyncio.run(body())
    assert refused_late(shared_actor, before) == 1


def test_bridge_reserve_now_answered_internal_error_never_takes_effect():
    """The CSMS told InternalError (the bridge gives up on the actor after
    1 s) may take the reservation as not made: it must not appear later.
    OCPP 2.0.1 only: both versions' handlers make this call through the same
    ReservationBridge.reserve_now."""
    version = "2.0.1"
    setup = start_setup(version)
    try:
        before = deadline_refusals(setup.actor)
        with frozen(setup.actor.pid):
            with pytest.raises(InternalError, match="reservation service unavailable") as told:
                setup.csms.call(reserve_now(version, LATE_ID, 1, in_future()))
        # Through the bridge's socket too, so answered after the late request.
        assert setup.csms.call(reserve_now(version, LATE_ID + 1, 2, in_future())).status \
            == "Accepted"
        # The bridge's watcher also had a get_state refused for its deadline.
        assert refused_late(setup.actor, before) >= 1
        assert "refuses the request from now on; retry it" in told.value.description
    finally:
        setup.stop()


# -- the wire, with raw msgpack ---------------------------------------------------------------

@pytest.fixture
def dealer(shared_actor):
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(shared_actor.command_endpoint)
    yield sock
    context.destroy(linger=0)


def exchange(sock: zmq.Socket, request: dict) -> dict:
    sock.send(msgpack.packb(request))
    assert sock.poll(10_000), "no reply"
    return msgpack.unpackb(sock.recv(), raw=False)


def reserve(rid: int, evse_id: int = 2, **envelope) -> dict:
    return {"id": rid, "cmd": "reserve_now", **envelope, "args": {"request": {
        "reservation_id": rid, "id_token": "WIRE", "evse_id": evse_id, "expiry_time": in_future()}}}


def epoch_ms(offset_s: float) -> int:
    return round((time.time() + offset_s) * 1000)


def test_past_deadline_is_refused_and_changes_nothing(shared_actor, dealer):
    before = exchange(dealer, {"id": 0, "cmd": "get_state"})["result"]
    refusals = deadline_refusals(shared_actor)
    reply = exchange(dealer, reserve(501, deadline=epoch_ms(-1)))
    assert reply["id"] == 501 and reply["ok"] is False
    assert reply["error"]["code"] == ErrorCode.DEADLINE_EXCEEDED
    assert "send it again with a new deadline" in reply["error"]["message"]
    assert exchange(dealer, {"id": 0, "cmd": "get_state"})["result"] == before
    assert deadline_refusals(shared_actor) == refusals + 1


def test_future_deadline_and_no_deadline_are_served(dealer):
    assert exchange(dealer, reserve(502, deadline=epoch_ms(30)))["result"] == "Accepted"
    assert exchange(dealer, reserve(503, evse_id=1))["result"] == "Accepted"
    assert exchange(dealer, reserve(502, deadline=None))["result"] == "Accepted"   # nil: absent
    for rid in (502, 503):
        assert exchange(dealer, {"id": rid, "cmd": "cancel_reservation",
                                 "args": {"reservation_id": rid}})["result"] is True


@pytest.mark.parametrize("deadline, says", [
    (float(epoch_ms(30)), "must be an integer of UTC epoch milliseconds, got a float"),
    (str(epoch_ms(30)), "must be an integer of UTC epoch milliseconds, got a str"),
    (True, "must be an integer of UTC epoch milliseconds, got a bool"),
    (round(time.time()) + 30, "is not UTC epoch milliseconds"),           # seconds
    (epoch_ms(30) * 1000, "is not UTC epoch milliseconds"),               # microseconds
    (-1, "is not UTC epoch milliseconds"),
])
def test_bad_deadline_is_bad_request(dealer, deadline, says):
    before = exchange(dealer, {"id": 0, "cmd": "get_state"})["result"]
    reply = exchange(dealer, reserve(504, deadline=deadline))
    assert reply["id"] == 504 and reply["error"]["code"] == ErrorCode.BAD_REQUEST
    assert says in reply["error"]["message"]
    assert exchange(dealer, {"id": 0, "cmd": "get_state"})["result"] == before
