"""rtt: lock-step round-trip latency of single commands, actor against the bare echo.

One DEALER in this process sends a request, waits for its reply, and times the
pair with perf_counter_ns; the server is another process (`python -m actor` on
its default station, or `python -m bench.echo`). The echo gets the very same
request bytes, so the ratio is what validation, the decision, the reply and the
updates cost over the floor of msgpack over a ROUTER in Python.

Commands: ping; reserve_now / cancel_reservation as a pair (reserve id n on
EVSE 1, cancel id n, so state never grows: each reserve is Accepted and each
cancel returns true, and each of them publishes two updates); exists_reservation
on a live reservation (ReservedForToken). A repetition is N round trips of each
after a warm-up; a figure's samples are that repetition's percentile.

The actor runs with `--store :memory:`, so the figures are the request path
itself; what a store file adds is the durability suite's subject.
"""

from __future__ import annotations

import time

import msgpack
import zmq

from bench.common import Context, Figure, percentile
from bench.procs import endpoint, servers, short_tmp, start_actor, start_echo

COMMANDS = ("ping", "reserve_now", "cancel_reservation", "exists_reservation")
PERCENTILES = ((50, "p50"), (99, "p99"), (99.9, "p99.9"))
# A day ahead: every reservation stays active until cancelled, and the actor's
# timer (poll timeout) stays within its int32 milliseconds.
EXPIRY = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
EXISTS_ID = 2_000_000_000      # the live reservation exists_reservation asks about
TIMEOUT_MS = 5000


def reserve(request_id: int, reservation_id: int, evse_id: int, token: str = "BENCH") -> bytes:
    return msgpack.packb({"id": request_id, "cmd": "reserve_now", "args": {"request": {
        "reservation_id": reservation_id, "id_token": token, "expiry_time": EXPIRY,
        "evse_id": evse_id, "connector_type": "cCCS2"}}})


def cancel(request_id: int, reservation_id: int) -> bytes:
    return msgpack.packb({"id": request_id, "cmd": "cancel_reservation",
                          "args": {"reservation_id": reservation_id}})


def exists(request_id: int) -> bytes:
    return msgpack.packb({"id": request_id, "cmd": "exists_reservation",
                          "args": {"request": {"id_token": "EXISTS", "evse_id": 2}}})


def ping(request_id: int) -> bytes:
    return msgpack.packb({"id": request_id, "cmd": "ping"})


class Workload:
    """Pre-encoded request bytes, identical for the actor and the echo; reservation
    ids move on every repetition like a real central system's."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.next_id = 1

    def batch(self) -> dict[str, list[bytes]]:
        n, first = self.n, self.next_id
        self.next_id += n
        pairs = []
        for k in range(n):
            pairs.append(reserve(2 * k, first + k, 1))
            pairs.append(cancel(2 * k + 1, first + k))
        return {"ping": [ping(k) for k in range(n)], "pair": pairs,
                "exists": [exists(k) for k in range(n)]}


def lockstep(sock: zmq.Socket, requests: list[bytes]) -> tuple[list[float], list[bytes]]:
    """Round-trip times in microseconds, and the replies."""
    times: list[float] = []
    replies: list[bytes] = []
    clock = time.perf_counter_ns
    send, recv = sock.send, sock.recv
    add_time, add_reply = times.append, replies.append
    for request in requests:
        t0 = clock()
        send(request)
        reply = recv()
        add_time((clock() - t0) / 1000)
        add_reply(reply)
    return times, replies


def expect(replies: list[bytes], results: list[object], what: str) -> None:
    for reply, wanted in zip(replies, results):
        decoded = msgpack.unpackb(reply)
        if not decoded.get("ok") or decoded.get("result") != wanted:
            raise RuntimeError(f"{what}: expected {wanted!r}, got {decoded!r}")


def measure(sock: zmq.Socket, work: dict[str, list[bytes]], actor: bool) -> dict[str, list[float]]:
    """One repetition: every command's round-trip times (us)."""
    out: dict[str, list[float]] = {}
    out["ping"], replies = lockstep(sock, work["ping"])
    expect(replies, ["pong" if actor else "ping"] * len(replies), "ping")
    times, replies = lockstep(sock, work["pair"])
    out["reserve_now"], out["cancel_reservation"] = times[0::2], times[1::2]
    expect(replies, (["Accepted", True] if actor else ["reserve_now", "cancel_reservation"])
           * (len(replies) // 2), "reserve_now/cancel_reservation")
    out["exists_reservation"], replies = lockstep(sock, work["exists"])
    expect(replies, ["ReservedForToken" if actor else "exists_reservation"] * len(replies),
           "exists_reservation")
    return out


def connect(context: zmq.Context, address: str) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.connect(address)
    return sock


def run_transport(ctx: Context, transport: str, n: int, reps: int) -> list[Figure]:
    context = zmq.Context()
    with short_tmp() as tmp, servers() as started:
        actor = start_actor(endpoint(transport, tmp, "cmd"), endpoint(transport, tmp, "upd"),
                            store=":memory:")
        started.append(actor)
        echo = start_echo(endpoint(transport, tmp, "echo"))
        started.append(echo)
        sockets = {"actor": connect(context, actor.endpoint), "echo": connect(context, echo.endpoint)}
        try:
            live = reserve(0, EXISTS_ID, 2, token="EXISTS")
            lockstep(sockets["actor"], [live])
            lockstep(sockets["echo"], [live])
            warm = Workload(min(n, 500))
            warm.next_id = 1_000_000_000
            for name, sock in sockets.items():
                measure(sock, warm.batch(), name == "actor")
            samples = {name: {cmd: {p: [] for p, _ in PERCENTILES} for cmd in COMMANDS}
                       for name in sockets}
            workload = Workload(n)
            for rep in range(reps):
                ctx.progress(f"rtt {transport}: repetition {rep + 1}/{reps} ({n} round trips per command)")
                work = workload.batch()
                order = ("actor", "echo") if rep % 2 == 0 else ("echo", "actor")
                for name in order:
                    times = measure(sockets[name], work, name == "actor")
                    for cmd in COMMANDS:
                        for p, _ in PERCENTILES:
                            samples[name][cmd][p].append(percentile(times[cmd], p))
        finally:
            for sock in sockets.values():
                sock.close()
            context.term()
    figures = []
    for cmd in COMMANDS:
        for p, label in PERCENTILES:
            target = 1.2 if (cmd == "reserve_now" and p == 50) else None
            figures.append(Figure(
                suite="rtt", name=f"{cmd} {label} ({transport})", unit="us",
                samples=samples["actor"][cmd][p], baseline="bare echo",
                baseline_samples=samples["echo"][cmd][p], higher_is_better=False, target=target,
                note=(f"lock-step DEALER, {n} round trips per repetition, same request bytes to both; "
                      "actor on --store :memory:"
                      if cmd == "ping" and p == 50 else ""),
                params={"transport": transport, "cmd": cmd, "percentile": p}))
    return figures


def run(ctx: Context) -> list[Figure]:
    n = 300 if ctx.quick else 2000
    reps = ctx.reps()
    figures = []
    for transport in ("tcp", "ipc"):
        figures += run_transport(ctx, transport, n, reps)
    return figures
