"""throughput: replies per second under many requests: the actor, the I/O floor, the bare echo.

Client processes (1 or 4, started once with multiprocessing and reused) each
send the reserve/cancel mix on their own EVSE of a 4-EVSE station: reserve id
n, cancel id n, so every reserve is Accepted, every cancel returns true, and
each request publishes two updates (checked through `stats`). Pipelined: a
DEALER keeps WINDOW requests in flight, sending one more per reply. Lock-step:
a REQ socket, one request at a time. All clients start at the same instant and
run for a fixed time; the figure is the replies received in that time, summed
over clients, per second. The I/O floor (the actor's own replies and updates
for these requests, recorded from it, sent with no work between; see rtt) and
the bare echo get the same request bytes from the same clients, with one live
subscriber process reading every topic and again with none. So do the same floor
and echo in C on libzmq where they can be built (see rtt): how far Python is
from libzmq itself.
"""

from __future__ import annotations

import time

import msgpack
import zmq

from bench.common import Context, Figure, rotation
from bench.procs import (
    Listener, Workers, serve_commands, servers, short_tmp, start_actor, start_echo, start_floor,
    station_config,
)
from bench.suites.rtt import (
    C_SERVERS, NAMES, SERVERS, Publishers, cancel, listener_label, reserve, start_c,
)
from protocol.vocabulary import Command

WINDOW = 64
EVSES = 4
RING = 512            # reservation ids per client, reused in a cycle
TIMEOUT_MS = 10_000
OK = b"\xa2ok\xc3"    # msgpack for "ok": true
FLOOR_TARGET = 0.75   # pipelined, with one listener: the actor's share of the floor's rate


def requests_for(index: int) -> list[bytes]:
    """Client `index`'s cycle: reserve id n on its own EVSE, cancel id n."""
    base = (index + 1) * 10_000_000
    out = []
    for k in range(RING):
        out += [reserve(2 * k, base + k, index % EVSES + 1, token=f"CLIENT{index}"),
                cancel(2 * k + 1, base + k)]
    return out


class _Client:
    def __init__(self, index: int) -> None:
        self.context = zmq.Context()
        self.ring = requests_for(index)
        self.sockets: dict[tuple[str, str], list] = {}   # (endpoint, mode) -> [socket, position]

    def socket(self, endpoint: str, mode: str) -> list:
        key = (endpoint, mode)
        if key not in self.sockets:
            sock = self.context.socket(zmq.REQ if mode == "req" else zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
            sock.connect(endpoint)
            self.sockets[key] = [sock, 0]
        return self.sockets[key]

    def handle(self, command: tuple) -> object:
        kind, endpoint, mode = command[:3]
        entry = self.socket(endpoint, mode)
        if kind == "warm":
            entry[1] = self.lockstep(entry[0], entry[1], time.monotonic() + 0.05)[2]
            return "ok"
        start_at, duration = command[3:]
        while time.monotonic() < start_at:
            time.sleep(0.0005)
        run = self.pipelined if mode == "dealer" else self.lockstep
        received, bad, entry[1] = run(entry[0], entry[1], start_at + duration)
        return received, bad

    def lockstep(self, sock: zmq.Socket, pos: int, end: float) -> tuple[int, int, int]:
        ring, n = self.ring, len(self.ring)
        send, recv, monotonic = sock.send, sock.recv, time.monotonic
        received = bad = 0
        while monotonic() < end or pos % 2:
            send(ring[pos % n])
            pos += 1
            if OK not in recv():
                bad += 1
            received += 1
        return received, bad, pos

    def pipelined(self, sock: zmq.Socket, pos: int, end: float) -> tuple[int, int, int]:
        ring, n = self.ring, len(self.ring)
        send, recv, monotonic = sock.send, sock.recv, time.monotonic
        for _ in range(WINDOW):
            send(ring[pos % n])
            pos += 1
        inflight = WINDOW
        received = bad = 0
        while True:
            reply = recv()
            inflight -= 1
            if OK not in reply:
                bad += 1
            if monotonic() >= end:
                break
            received += 1
            send(ring[pos % n])
            pos += 1
            inflight += 1
        if pos % 2:   # the cancel of the last reserve, so the EVSE is free again
            send(ring[pos % n])
            pos += 1
            inflight += 1
        for _ in range(inflight):
            if OK not in recv():
                bad += 1
        return received, bad, pos


def client_process(conn, index: int) -> None:
    client = _Client(index)
    try:
        serve_commands(conn, client.handle)
    finally:
        for sock, _ in client.sockets.values():
            sock.close()
        client.context.term()


class _Stats:
    """The actor's own counters, to check what the load made it do."""

    def __init__(self, endpoint: str) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        self.sock.connect(endpoint)

    def __call__(self) -> dict:
        self.sock.send(msgpack.packb({"id": 0, "cmd": Command.STATS}))
        return msgpack.unpackb(self.sock.recv())["result"]

    def close(self) -> None:
        self.sock.close()
        self.context.term()


def run_once(workers: Workers, label: str, endpoint: str, mode: str, clients: int,
             duration: float) -> float:
    """Replies per second from `clients` client processes running for `duration`."""
    start_at = time.monotonic() + 0.05
    results = workers.ask(("run", endpoint, mode, start_at, duration), duration + 30, clients)
    bad = sum(b for _, b in results)
    if bad:
        raise RuntimeError(f"throughput {label}: {bad} error replies from {endpoint}")
    return sum(r for r, _ in results) / duration


def measure(ctx: Context, workers: Workers, label: str, endpoints: dict[str, str], mode: str,
            clients: int, duration: float, reps: int, stats: dict[str, _Stats],
            listener: Listener | None = None, publishers: Publishers | None = None,
            settings: tuple[int, ...] = (0,)) -> tuple[dict, dict]:
    """rates[listeners, name]: replies per second per repetition, every server (and
    listener setting, if a listener is given) in a rotating order each repetition;
    per_request[name]: updates the server published per request, for those whose
    `stats` are given (the check that the actor did the work)."""
    for endpoint in endpoints.values():
        workers.ask(("warm", endpoint, mode), 30, clients)
    rates: dict[tuple[int, str], list[float]] = {
        (listeners, name): [] for listeners in settings for name in endpoints}
    requests = {name: 0 for name in stats}
    updates = {name: 0 for name in stats}
    for rep in range(reps):
        ctx.progress(f"throughput {label}: repetition {rep + 1}/{reps}")
        for listeners in rotation(settings, rep):
            if listeners:
                publishers.attach(listener)
            for name in rotation(list(endpoints), rep):
                before = stats[name]() if name in stats else None
                rates[listeners, name].append(
                    run_once(workers, label, endpoints[name], mode, clients, duration))
                if before is not None:
                    after = stats[name]()
                    requests[name] += after["requests"] - before["requests"] - 1
                    updates[name] += after["updates_published"] - before["updates_published"]
                    if after["active_reservations"] != before["active_reservations"]:
                        raise RuntimeError(f"throughput {label}: reservations left active on {name}")
            if listeners:
                listener.detach()
    return rates, {name: updates[name] / max(1, requests[name]) for name in stats}


def run(ctx: Context) -> list[Figure]:
    reps = ctx.reps()
    duration = 0.25 if ctx.quick else 1.0
    configs = [("dealer", 1), ("dealer", 4), ("req", 1)] + ([] if ctx.quick else [("req", 4)])
    # With one listener (the targets' setting) and with none; quick keeps the first.
    settings = (1,) if ctx.quick else (1, 0)
    figures = []
    with short_tmp() as tmp, servers() as started, Workers(client_process, 4) as workers, \
            Listener() as listener:
        station = station_config(tmp, EVSES)
        actor = start_actor("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", store=":memory:",
                            config=station)
        started.append(actor)
        floor = start_floor(actor, requests_for(0)[:2], tmp, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
        started.append(floor)
        echo = start_echo("tcp://127.0.0.1:*")
        started.append(echo)
        endpoints = {"actor": actor.endpoint, "floor": floor.endpoint, "echo": echo.endpoint}
        publishing = [actor, floor]
        c_skipped = start_c(ctx, tmp, "tcp", started)
        if not c_skipped:
            c_floor, c_echo = started[-2:]
            endpoints.update(c_floor=c_floor.endpoint, c_echo=c_echo.endpoint)
            publishing.append(c_floor)
        publishers = Publishers(publishing)
        try:
            for n, (mode, clients) in enumerate(configs):
                kind = "pipelined DEALER" if mode == "dealer" else "lock-step REQ"
                label = f"{kind} x{clients}"
                measured = endpoints
                if ctx.quick and n:
                    # CI's quick run keeps the C baselines working in the first setting only,
                    # so it takes about as long as it did before them.
                    measured = {name: endpoints[name] for name in SERVERS}
                stats = {"actor": _Stats(actor.endpoint)}
                try:
                    rates, per_request = measure(
                        ctx, workers, label, measured, mode, clients, duration, reps, stats,
                        listener, publishers, settings)
                finally:
                    stats["actor"].close()
                figures += figures_for(mode, clients, duration, rates, per_request["actor"],
                                       settings, c_skipped)
        finally:
            publishers.close()
    return figures


def figures_for(mode: str, clients: int, duration: float, rates: dict, per_request: float,
                settings: tuple[int, ...], c_skipped: str) -> list[Figure]:
    kind = "pipelined DEALER" if mode == "dealer" else "lock-step REQ"
    figures = []
    for listeners in settings:
        label = f"{kind} x{clients}, {listener_label(listeners)}"
        actor, floor, echo = (rates[listeners, name] for name in SERVERS)
        note = ""
        if listeners:
            note = (f"{clients} client process{'es' if clients > 1 else ''}"
                    f"{f', window {WINDOW} each' if mode == 'dealer' else ''}, {duration:g} s per "
                    f"repetition, tcp; actor on --store :memory:; {per_request:.2f} updates "
                    "published per request")
            if c_skipped:
                note += f"; C floor and echo skipped: {c_skipped}"
        figures.append(Figure(
            suite="throughput", name=f"reserve/cancel, {label}", unit="req/s",
            samples=actor, baseline=NAMES["echo"], baseline_samples=echo,
            second_baseline=NAMES["floor"], second_baseline_samples=floor,
            higher_is_better=True,
            second_target=FLOOR_TARGET if mode == "dealer" and listeners == 1 else None,
            note=note, params={"kind": "actor", "mode": mode, "clients": clients,
                               "listeners": listeners}))
        figures.append(Figure(
            suite="throughput", name=f"I/O floor: reserve/cancel, {label}", unit="req/s",
            samples=floor, baseline=NAMES["echo"], baseline_samples=echo, higher_is_better=True,
            params={"kind": "floor", "mode": mode, "clients": clients, "listeners": listeners}))
        if (listeners, C_SERVERS[0]) not in rates:
            continue
        for c_name, name in zip(C_SERVERS, ("floor", "echo")):
            figures.append(Figure(
                suite="throughput", name=f"{NAMES[c_name]}: reserve/cancel, {label}",
                unit="req/s", samples=rates[listeners, c_name], baseline=NAMES[name],
                baseline_samples=rates[listeners, name], higher_is_better=True,
                params={"kind": c_name, "mode": mode, "clients": clients,
                        "listeners": listeners}))
    return figures
