"""The bench's I/O floors (Python and C) and echoes as the rtt and throughput suites
run them: real processes on real sockets, beside a real actor.

The floor stands for "the actor's I/O with no work", so what a client relies on
from the actor's replies and updates must hold for it too: a reply carries its
request's id (clients match replies by it) and the updates a running seq.
"""

from __future__ import annotations

import msgpack
import pytest
import zmq

from bench import c
from bench.procs import (
    servers, short_tmp, start_actor, start_c_echo, start_c_floor, start_echo, start_floor,
)
from bench.suites.rtt import cancel, exists, ping, reserve

TIMEOUT_MS = 10_000


def recording() -> list[bytes]:
    """What the floor is recorded from: leaves the actor as it found it."""
    return [ping(0), reserve(1, 900, 1), cancel(2, 900), exists(3)]


def workload() -> list[bytes]:
    """Other ids and reservations than the recording's, as the suites send."""
    out = []
    for n in range(3):
        out += [ping(1000 + n), reserve(-n, 10 + n, 1), cancel("c%d" % n, 10 + n), exists(2 ** 40)]
    return out


def exchange(context: zmq.Context, server, requests: list[bytes], kind: int = zmq.DEALER
             ) -> tuple[list[bytes], list[list[bytes]]]:
    """The replies to `requests` sent one at a time, and the updates they caused."""
    sock = context.socket(kind)
    sub = context.socket(zmq.SUB) if len(server.endpoints) > 1 else None
    for s in (sock, sub):
        if s is not None:
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.connect(server.endpoint)
    updates: list[list[bytes]] = []
    if sub is not None:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(server.endpoints[1])
        # Subscribed once a reserve/cancel pair's updates arrive (they are not kept).
        while True:
            for request in (reserve(0, 901, 1), cancel(0, 901)):
                sock.send(request)
                sock.recv()
            if sub.poll(100):
                break
        while sub.poll(50):
            sub.recv_multipart()
    replies = []
    for request in requests:
        sock.send(request)
        replies.append(sock.recv())
    if sub is not None:
        # Two updates for each reserve_now and each cancel_reservation.
        published = 2 * sum(msgpack.unpackb(r)["cmd"] in ("reserve_now", "cancel_reservation")
                            for r in requests)
        updates = [sub.recv_multipart() for _ in range(published)]
        sub.close()
    sock.close()
    return replies, updates


@pytest.fixture(scope="module")
def started():
    with short_tmp() as tmp, servers() as running:
        actor = start_actor("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", store=":memory:")
        running.append(actor)
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        sock.connect(actor.endpoint)
        sock.send(reserve(0, 2_000_000_000, 2, token="EXISTS"))   # what exists() asks about
        sock.recv()
        sock.close(linger=0)
        out = {"actor": actor,
               "floor": start_floor(actor, recording(), tmp, "tcp://127.0.0.1:*",
                                    "tcp://127.0.0.1:*"),
               "echo": start_echo("tcp://127.0.0.1:*")}
        running += [out["floor"], out["echo"]]
        try:
            out["C floor"] = start_c_floor(tmp, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
            running.append(out["C floor"])
            out["C echo"] = start_c_echo("tcp://127.0.0.1:*")
            running.append(out["C echo"])
        except c.Unavailable as reason:
            out["unavailable"] = str(reason)
        yield context, out
        context.term()


def server(started, name: str):
    context, out = started
    if name not in out:
        pytest.skip(f"the C baselines cannot be built here: {out['unavailable']}")
    return context, out[name]


@pytest.mark.parametrize("name", ["floor", "C floor"])
def test_floor_replies_are_the_actors_with_each_requests_id(started, name):
    context, actor = server(started, "actor")
    _, floor = server(started, name)
    requests = workload()
    wanted, actor_updates = exchange(context, actor, requests)
    replies, updates = exchange(context, floor, requests)
    assert replies == wanted
    assert [msgpack.unpackb(r)["id"] for r in replies] == [msgpack.unpackb(r)["id"]
                                                             for r in requests]
    # Each reserve/cancel pair publishes what the actor published, with seqs in a row.
    assert [topic for topic, _ in updates] == [topic for topic, _ in actor_updates]
    seqs = [msgpack.unpackb(body)["seq"] for _, body in updates]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


@pytest.mark.parametrize("name", ["floor", "C floor"])
def test_floor_answers_a_req_socket_through_its_envelope(started, name):
    context, floor = server(started, name)
    replies, _ = exchange(context, floor, [ping(7)], zmq.REQ)
    assert msgpack.unpackb(replies[0]) == {"id": 7, "ok": True, "result": "pong"}


@pytest.mark.parametrize("name", ["echo", "C echo"])
def test_echo_answers_each_request_with_its_id_and_cmd(started, name):
    context, echo = server(started, name)
    requests = [ping("x"), cancel(-3, 5), msgpack.packb({"id": [1, {"a": 2}], "cmd": "get_state"}),
                b"\x01", msgpack.packb([1, 2])]
    replies, _ = exchange(context, echo, requests)
    assert [msgpack.unpackb(r) for r in replies] == [
        {"id": "x", "ok": True, "result": "ping"},
        {"id": -3, "ok": True, "result": "cancel_reservation"},
        {"id": [1, {"a": 2}], "ok": True, "result": "get_state"},
        {"id": None, "ok": True, "result": None},
        {"id": None, "ok": True, "result": None},
    ]
