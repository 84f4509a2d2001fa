"""Fair under every flood: clients that stop reading and then disconnect, and
floods of requests whose replies are cheap but whose decisions were not.

Each test runs the actor as a process (`python -m actor`) on tcp, with the
flooding clients on sockets of their own, and judges by the actor's counters
and by the order of what it publishes, never by how long something took.
"""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

from bench.procs import station_config
from bench.suites.fairness import keep_in_flight
from protocol.client import Client
from protocol.vocabulary import Command, ReservationUpdateStatus, Topic

from .conftest import start_actor
from .helpers import in_future, rfc3339, wait_until_subscribed

LOCAL = dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")
CCS, T2 = "cCCS2", "cType2"


def packed(request_id: int, cmd: str, args: dict | None = None) -> bytes:
    return msgpack.packb({"id": request_id, "cmd": cmd, **({"args": args} if args else {})})


def dealer(context: zmq.Context, endpoint: str, **options: int) -> zmq.Socket:
    """A connected DEALER (socket `options` set first): its first request
    answered, so what it sends next arrives as one stream."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.connect(endpoint)
    sock.send(packed(-1, Command.PING))
    assert sock.poll(10000), "the actor did not answer a ping"
    sock.recv()
    return sock


# -- peers that stop reading and then disconnect ----------------------------------------------

# 1,000 EVSEs make a get_state reply of about 120 kB: the kernel's socket buffers take a few
# dozen before a peer that reads nothing has unread replies and is parked.
DISCONNECT_EVSES = 1000
DISCONNECT_LIMITS = {"turn_reply_bytes": 128 * 1024, "peer_unread_bytes": 256 * 1024}
FLOODERS = 2
FLOOD = 300     # get_state each; fewer than actor.flow.MAX_PARKED, so none is shed
SETTLED = 5     # round trips of the other client without a flood request decided


def test_requests_held_for_peers_that_disconnect_are_dropped_not_decided(tmp_path, context):
    """Peers pipeline get_state, never read, and disconnect. What the actor held
    for them is dropped and counted in requests_abandoned, never decided (its
    replies would reach nobody), and another client is answered meanwhile."""
    config = station_config(tmp_path, DISCONNECT_EVSES, tables={"limits": DISCONNECT_LIMITS})
    running = start_actor("--config", config, **LOCAL)
    try:
        # Reading nothing, they keep libzmq's queue and the kernel's buffer short.
        flooders = [dealer(context, running.command_endpoint, RCVHWM=2, RCVBUF=65536)
                    for _ in range(FLOODERS)]
        for flooder in flooders:
            flooder.setsockopt(zmq.LINGER, 10000)      # closed, it still sends what it queued
            for n in range(FLOOD):
                flooder.send(packed(n, Command.GET_STATE))
        sent = FLOODERS * (FLOOD + 1)                  # with each one's first ping
        # A client that waits as long as it takes: what it sees is judged by counters.
        with running.client(timeout=120) as client:
            own = 0

            def flood_decided() -> int:
                nonlocal own
                assert client.ping() == "pong"
                stats = client.stats()
                own += 2
                return stats["requests"] - own, stats

            # Until the flooders' replies fill the kernel's buffers, they are served;
            # then what they send is held, and the other client is still answered.
            decided, settled = -1, 0
            while settled < SETTLED:
                before = decided
                decided, _ = flood_decided()
                settled = settled + 1 if decided == before else 0
            held = sent - decided
            assert held > sent // 2, f"only {held} of {sent} requests held"
            for flooder in flooders:
                flooder.close()
            for _ in range(10_000):
                decided_now, stats = flood_decided()
                if decided_now + stats.get("requests_abandoned", 0) == sent:
                    break
            else:
                pytest.fail(f"the flood was never accounted for: {stats}")
        assert decided_now == decided, \
            f"{decided_now - decided} of {held} held requests decided for peers that left"
        assert stats["requests_abandoned"] == held
        assert stats["requests_shed"] == 0
    finally:
        running.stop()


# -- a flood of exists/use against many non-EVSE-specific reservations ------------------------

RESERVATIONS = 1500            # non-EVSE-specific, cCCS2, tokens of 240 characters
SPARE = 10                     # cCCS2 EVSEs beyond them: nothing is held back for them
CHAIN = 6                      # EVSE-specific reservations expiring CHAIN_GAP apart
CHAIN_GAP = 0.1
MARKER_EVSE = 1                # cType2 only: its plug flag is toggled to mark turns
MARKER_EVERY = 16              # flood requests per marker


def token(n: int) -> str:
    return f"{n:08d}".rjust(240, "T")


def flood_until(stop: threading.Event, context: zmq.Context, endpoint: str) -> None:
    """exists_reservation and use_reservation for tokens nobody holds (a full
    scan each before the index), and every MARKER_EVERY a plug_event on the
    marker EVSE, whose evse_state update shows which turn it was decided in."""
    sock = dealer(context, endpoint)
    missing = {"id_token": "X" * 240}
    requests = [packed(0, Command.EXISTS_RESERVATION, {**missing, "group_id_token": "G" * 240}),
                packed(0, Command.USE_RESERVATION, {**missing, "parent_id_token": "G" * 240})]
    marker = [packed(0, Command.PLUG_EVENT, {"evse_id": MARKER_EVSE, "plugged_in": plugged})
              for plugged in (False, True)]
    try:
        keep_in_flight(sock, lambda n: marker[n // MARKER_EVERY % 2] if n % MARKER_EVERY == 0
                       else requests[n % 2], stop)
    finally:
        sock.close()


def test_an_exists_use_flood_leaves_expiries_on_time(tmp_path, context):
    """While a client floods exists/use by token against many non-EVSE-specific
    reservations, reservations due CHAIN_GAP apart each expire in a turn of
    their own: the flood's marker updates come between their Expired updates.
    Before the token index, each request scanned every reservation and a turn
    of them outlasted several expiries, which then went out together, late."""
    station = {MARKER_EVSE: [T2], **{n: [CCS] for n in range(2, RESERVATIONS + SPARE + CHAIN + 2)}}
    config = station_config(tmp_path, station)
    running = start_actor("--config", config, **LOCAL)
    stop = threading.Event()
    flood = None
    try:
        with running.client() as client, running.subscriber() as sub:
            wait_until_subscribed(sub, client)
            placer = dealer(context, running.command_endpoint)
            for n in range(RESERVATIONS):
                placer.send(packed(n, Command.RESERVE_NOW, {"request": {
                    "reservation_id": 1 + n, "id_token": token(n), "connector_type": CCS,
                    "expiry_time": in_future()}}))
            for n in range(RESERVATIONS):
                assert placer.poll(30000)
                assert msgpack.unpackb(placer.recv())["result"] == "Accepted"
            placer.close()
            first = time.time() + 1.0
            chain = [100_000 + k for k in range(CHAIN)]
            for k, rid in enumerate(chain):
                assert client.reserve_now(reservation_id=rid, id_token=f"chain{k}", evse_id=2 + k,
                                          connector_type=CCS,
                                          expiry_time=rfc3339(first + k * CHAIN_GAP)) == "Accepted"
            flood = threading.Thread(target=flood_until,
                                     args=(stop, context, running.command_endpoint))
            flood.start()
            expired: dict[int, int] = {}
            markers: list[int] = []
            while len(expired) < CHAIN:
                topic, body = sub.recv(timeout=60)
                if topic == Topic.EVSE_STATE and body["evse_id"] == MARKER_EVSE:
                    markers.append(body["seq"])
                elif (topic == Topic.RESERVATION_UPDATE and body["reservation_id"] in chain
                      and body["reservation_status"] == ReservationUpdateStatus.EXPIRED):
                    expired[body["reservation_id"]] = body["seq"]
    finally:
        stop.set()
        if flood is not None:
            flood.join()
        running.stop()
    seqs = [expired[rid] for rid in chain]
    assert seqs == sorted(seqs)
    apart = sum(any(a < m < b for m in markers) for a, b in zip(seqs, seqs[1:]))
    # One pair may share a turn when the machine stalls for a moment.
    assert apart >= CHAIN - 2, \
        f"only {apart} of {CHAIN - 1} expiries {CHAIN_GAP} s apart were published apart"
