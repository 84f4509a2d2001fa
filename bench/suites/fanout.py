"""fanout: updates per second delivered to many subscriber processes, with losses.

The load: this process drives reserve/cancel pairs through the actor as fast as
a pipelined DEALER (window 64) gets them answered; each pair publishes four
updates (Placed, evse_reserved true, Cancelled, evse_reserved false). N
subscriber processes (SUB, default high-water marks, decoding every map as a
listener does) count the updates of the measured seq range; a seq missing from
the range is a loss. The figure is the updates delivered, summed over
subscribers, per second from the first request to the last update received.

Baseline: a bare PUB process (`python -m bench.echo --publisher`) publishing
the same number of pre-encoded two-frame messages, copies of one cycle of the
actor's own updates captured at start-up (so the same topics, maps and sizes,
with the same seq numbers), paced at the rate the actor published them in the
same repetition, to the same subscribers. Before measuring, every subscriber has received from both (the
slow-joiner warm-up).
"""

from __future__ import annotations

import statistics
import time

import msgspec
import zmq

from bench.common import Context, Figure
from bench.procs import Workers, serve_commands, servers, start_actor, start_publisher
from bench.suites.rtt import cancel, reserve
from protocol.vocabulary import Command

WINDOW = 64
TIMEOUT_MS = 10_000
IDLE_MS = 500          # a subscriber gives up this long after its last update (tail lost)


def subscriber_process(conn, index: int, endpoints: dict[str, str]) -> None:
    context = zmq.Context()
    sockets = {}
    for name, endpoint in endpoints.items():
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        sockets[name] = sock

    def handle(command: tuple) -> object:
        kind, name = command[:2]
        sock = sockets[name]
        if kind == "warm":
            if not sock.poll(int(command[2] * 1000)):
                return False
            while sock.poll(0):
                sock.recv_multipart()
            return True
        first, last, timeout = command[2:]
        conn.send("armed")
        return receive(sock, first, last, timeout)

    try:
        serve_commands(conn, handle)
    finally:
        for sock in sockets.values():
            sock.close()
        context.term()


def receive(sock: zmq.Socket, first: int, last: int, timeout: float) -> tuple[int, float, float]:
    """(updates with first <= seq <= last received, time of the first, time of the last)."""
    recv, poll, unpackb, monotonic = sock.recv_multipart, sock.poll, msgspec.msgpack.decode, time.monotonic
    count = 0
    t_first = t_last = 0.0
    deadline = monotonic() + timeout
    while True:
        try:
            _, body = recv(zmq.NOBLOCK)
        except zmq.Again:
            if poll(IDLE_MS):
                continue
            if count or monotonic() > deadline:
                break
            continue
        seq = unpackb(body)["seq"]
        if seq < first:
            continue
        if seq <= last:
            count += 1
            t_last = monotonic()
            if count == 1:
                t_first = t_last
        if seq >= last:
            break
    return count, t_first, t_last


class _Driver:
    """This process's DEALER to the actor: pipelined reserve/cancel pairs."""

    def __init__(self, context: zmq.Context, endpoint: str) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        self.sock.connect(endpoint)
        self.next_id = 1

    def pairs(self, count: int) -> list[bytes]:
        out = []
        for k in range(count):
            rid = self.next_id + k
            out += [reserve(2 * k, rid, 1, token="FANOUT"), cancel(2 * k + 1, rid)]
        self.next_id += count
        return out

    def drive(self, requests: list[bytes]) -> None:
        send, recv = self.sock.send, self.sock.recv
        inflight = 0
        bad = 0
        for request in requests:
            if inflight == WINDOW:
                if b"\xa2ok\xc3" not in recv():
                    bad += 1
                inflight -= 1
            send(request)
            inflight += 1
        for _ in range(inflight):
            if b"\xa2ok\xc3" not in recv():
                bad += 1
        if bad:
            raise RuntimeError(f"fanout: {bad} error replies from the actor")

    def seq(self) -> int:
        self.sock.send(msgspec.msgpack.encode({"id": 0, "cmd": Command.STATS}))
        return msgspec.msgpack.decode(self.sock.recv())["result"]["seq"]


def capture_cycle(context: zmq.Context, endpoint: str, driver: "_Driver") -> list:
    """One reserve/cancel pair's updates as the actor publishes them: [[topic, map], ...]."""
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    try:
        deadline = time.monotonic() + 20
        while not sub.poll(10):   # the slow joiner: until our subscription is in place
            if time.monotonic() > deadline:
                raise TimeoutError("fanout: no update from the actor within 20 s")
            driver.drive(driver.pairs(1))
        while sub.poll(100):
            sub.recv_multipart()
        driver.drive(driver.pairs(1))
        cycle = []
        while len(cycle) < 4 and sub.poll(5000):
            topic, body = sub.recv_multipart()
            cycle.append([topic.decode(), msgspec.msgpack.decode(body)])
        if len(cycle) != 4:
            raise RuntimeError(f"fanout: a reserve/cancel pair published {len(cycle)} updates, not 4")
        return cycle
    finally:
        sub.close()


def warm_up(workers: Workers, name: str, stimulate) -> None:
    """Stimulate until every subscriber has received something from `name`."""
    workers.send_all(("warm", name, 20.0))
    deadline = time.monotonic() + 20
    while not all(conn.poll(0) for conn in workers.conns):
        if time.monotonic() > deadline:
            raise TimeoutError(f"fanout: subscribers did not join {name} within 20 s")
        stimulate()
        time.sleep(0.01)
    if not all(workers.recv_all(5)):
        raise TimeoutError(f"fanout: a subscriber received nothing from {name}")


def run(ctx: Context) -> list[Figure]:
    reps = ctx.reps()
    pairs = 1000 if ctx.quick else 5000
    counts = (1, 10) if ctx.quick else (1, 10, 50)
    updates = 4 * pairs
    figures = []
    context = zmq.Context()
    try:
        with servers() as started:
            actor = start_actor("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", store=":memory:")
            started.append(actor)
            publisher = start_publisher("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
            started.append(publisher)
            driver = _Driver(context, actor.endpoints[0])
            control = context.socket(zmq.DEALER)
            control.setsockopt(zmq.LINGER, 0)
            control.setsockopt(zmq.RCVTIMEO, 60_000)
            control.connect(publisher.endpoints[0])

            def bare(request: dict) -> dict:
                control.send(msgspec.msgpack.encode(request))
                return msgspec.msgpack.decode(control.recv())["result"]

            try:
                templates = capture_cycle(context, actor.endpoints[1], driver)
                for n in counts:
                    ctx.progress(f"fanout: starting {n} subscriber process{'es' if n > 1 else ''}")
                    endpoints = {"actor": actor.endpoints[1], "bare": publisher.endpoints[1]}
                    with Workers(subscriber_process, n, endpoints) as workers:
                        warm_up(workers, "actor", lambda: driver.drive(driver.pairs(1)))
                        warm_up(workers, "bare", lambda: bare({"cmd": "warm"}))
                        rates = {"actor": [], "bare": []}
                        losses = {"actor": [], "bare": []}
                        for rep in range(reps):
                            ctx.progress(f"fanout {n} subscribers: repetition {rep + 1}/{reps} "
                                         f"({updates} updates)")
                            # The actor, then the bare PUB at the rate the actor reached.
                            requests = driver.pairs(pairs)
                            first = driver.seq() + 1
                            last = first + updates - 1
                            workers.ask(("measure", "actor", first, last, 60.0), 10)
                            t0 = time.monotonic()
                            driver.drive(requests)
                            published = time.monotonic() - t0
                            results = workers.recv_all(90)
                            if driver.seq() != last:
                                raise RuntimeError("fanout: the actor published an unexpected "
                                                   "number of updates")
                            record(rates["actor"], losses["actor"], results, t0, updates)
                            # Same seq numbers as the actor's: same sizes (the
                            # subscribers keep the two streams apart).
                            workers.ask(("measure", "bare", first, last, 60.0), 10)
                            times = bare({"cmd": "publish", "first": first, "count": updates,
                                          "rate": updates / published, "templates": templates})
                            results = workers.recv_all(90)
                            record(rates["bare"], losses["bare"], results, times["t0"], updates)
                    total = n * updates
                    figures.append(Figure(
                        suite="fanout", name=f"updates delivered, {n} subscriber"
                                             f"{'s' if n > 1 else ''}",
                        unit="updates/s", samples=rates["actor"], baseline="bare PUB, same rate",
                        baseline_samples=rates["bare"], higher_is_better=True,
                        note=(f"{updates} updates x {n} subscriber process(es) per repetition; "
                              f"lost (median of repetitions): actor {statistics.median(losses['actor']):g} "
                              f"of {total}, bare PUB {statistics.median(losses['bare']):g}; "
                              f"summed over subscribers"),
                        params={"subscribers": n, "updates": updates,
                                "lost_actor": losses["actor"], "lost_bare": losses["bare"]}))
            finally:
                driver.sock.close()
                control.close()
    finally:
        context.term()
    return figures


def record(rates: list[float], losses: list[int], results: list, t0: float, updates: int) -> None:
    delivered = sum(count for count, _, _ in results)
    end = max(t_last for _, _, t_last in results)
    losses.append(len(results) * updates - delivered)
    rates.append(delivered / (end - t0) if end > t0 else 0.0)
