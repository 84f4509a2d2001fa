"""rtt: lock-step round-trip latency of single commands: the actor, the I/O floor, the bare echo.

One DEALER in this process sends a request, waits for its reply, and times the
pair with perf_counter_ns; each server is another process: `python -m actor`
on its default station, the I/O floor (`python -m bench.echo --floor`: the
actor's own replies and updates, recorded from it at the start, sent back with
the request's id and a running seq filled in and no other work) and the bare
echo (`python -m bench.echo`: a reply map and nothing else). All three get the
very same request bytes, so

- actor / echo is what the design costs in total over msgpack over a ROUTER;
- actor / floor is what the actor's own work adds (validation, the decision,
  encoding, logging) over the I/O this protocol needs;
- floor / echo is what the protocol itself costs (its updates, its reply sizes).

Where a C compiler can build bench/c/floor.c against libzmq, the same floor and
echo in C are measured in the same rotation: C floor / floor and C echo / echo
are how far Python is from libzmq itself. Where it cannot, the reason is printed
and noted, and those rows are left out.

Every figure is measured with one live subscriber process reading all topics
of the actor and the floors (as real deployments have), and again with none.

Commands: ping; reserve_now / cancel_reservation as a pair (reserve id n on
EVSE 1, cancel id n, so state never grows: each reserve is Accepted and each
cancel returns true, and each of them publishes two updates); exists_reservation
on a live reservation (ReservedForToken). A repetition is N round trips of each
after a warm-up, on every server and listener setting in a rotating order; a
figure's samples are that repetition's percentile.

The actor runs with `--store :memory:`, so the figures are the request path
itself; what a store file adds is the durability suite's subject.
"""

from __future__ import annotations

import time

import msgspec
import zmq

from bench import c
from bench.common import Context, Figure, percentile, rotation
from bench.procs import (
    Listener, Server, endpoint, servers, short_tmp, start_actor, start_c_echo, start_c_floor,
    start_echo, start_floor,
)
from protocol.rfc3339 import format_rfc3339
from protocol.vocabulary import Command, ConnectorType, ReservationCheckStatus, ReservationResult

COMMANDS = (Command.PING, Command.RESERVE_NOW, Command.CANCEL_RESERVATION,
            Command.EXISTS_RESERVATION)
PERCENTILES = ((50, "p50"), (99, "p99"), (99.9, "p99.9"))
# A day ahead: every reservation stays active until cancelled, and the actor's
# timer (poll timeout) stays within its int32 milliseconds.
EXPIRY = format_rfc3339(time.time() + 86400, "seconds")
EXISTS_ID = 2_000_000_000      # the live reservation exists_reservation asks about
POKE_ID = 1_999_999_999        # a reserve/cancel pair that makes a server publish
SERVERS = ("actor", "floor", "echo")
# The same floor and echo in C on libzmq (bench/c), where a C compiler can build them.
C_SERVERS = ("c_floor", "c_echo")
NAMES = {"actor": "actor", "floor": "I/O floor", "echo": "bare echo", "c_floor": "C floor",
         "c_echo": "C echo"}
ECHOES = ("echo", "c_echo")     # they answer each request with its cmd
# Targets (issue 11), on tcp with one listener: what the actor adds over the floor
# where it has work to do, and over the echo where it has almost none.
FLOOR_TARGETS = {Command.RESERVE_NOW: 1.15, Command.CANCEL_RESERVATION: 1.15}
ECHO_TARGETS = {Command.PING: 1.15, Command.EXISTS_RESERVATION: 1.15}
# p99.9 over the I/O floor's own p99.9 in the same run: the floor's tail is this shared
# machine's (its scheduler, libzmq's threads); the actor must not add to it.
TAIL_TARGET = 1.5
TIMEOUT_MS = 5000


def reserve(request_id: int, reservation_id: int, evse_id: int, token: str = "BENCH") -> bytes:
    return msgspec.msgpack.encode({"id": request_id, "cmd": Command.RESERVE_NOW, "args": {"request": {
        "reservation_id": reservation_id, "id_token": token, "expiry_time": EXPIRY,
        "evse_id": evse_id, "connector_type": ConnectorType.cCCS2}}})


def cancel(request_id: int, reservation_id: int) -> bytes:
    return msgspec.msgpack.encode({"id": request_id, "cmd": Command.CANCEL_RESERVATION,
                          "args": {"reservation_id": reservation_id}})


def exists(request_id: int) -> bytes:
    return msgspec.msgpack.encode({"id": request_id, "cmd": Command.EXISTS_RESERVATION,
                          "args": {"request": {"id_token": "EXISTS", "evse_id": 2}}})


def ping(request_id: int) -> bytes:
    return msgspec.msgpack.encode({"id": request_id, "cmd": Command.PING})


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
        decoded = msgspec.msgpack.decode(reply)
        if not decoded.get("ok") or decoded.get("result") != wanted:
            raise RuntimeError(f"{what}: expected {wanted!r}, got {decoded!r}")


def floor_requests() -> list[bytes]:
    """One request of each kind for the floor's script, in an order that leaves the
    actor as it was (the reservation exists_reservation asks about is placed before)."""
    return [ping(0), reserve(1, POKE_ID, 1), cancel(2, POKE_ID), exists(3)]


def listener_label(listeners: int) -> str:
    return "1 listener" if listeners else "no listener"


def measure(sock: zmq.Socket, work: dict[str, list[bytes]], actor: bool) -> dict[str, list[float]]:
    """One repetition: every command's round-trip times (us); `actor`: the server
    gives the actor's replies (the actor, the floors), not the echo's."""
    out: dict[str, list[float]] = {}
    # The echo answers each request with its cmd.
    out[Command.PING], replies = lockstep(sock, work["ping"])
    expect(replies, ["pong" if actor else Command.PING] * len(replies), Command.PING)
    times, replies = lockstep(sock, work["pair"])
    out[Command.RESERVE_NOW], out[Command.CANCEL_RESERVATION] = times[0::2], times[1::2]
    expect(replies, ([ReservationResult.ACCEPTED, True] if actor
                     else [Command.RESERVE_NOW, Command.CANCEL_RESERVATION])
           * (len(replies) // 2), f"{Command.RESERVE_NOW}/{Command.CANCEL_RESERVATION}")
    out[Command.EXISTS_RESERVATION], replies = lockstep(sock, work["exists"])
    expect(replies, [ReservationCheckStatus.RESERVED_FOR_TOKEN if actor
                     else Command.EXISTS_RESERVATION] * len(replies), Command.EXISTS_RESERVATION)
    return out


def connect(context: zmq.Context, address: str) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.connect(address)
    return sock


class Publishers:
    """The servers that publish (the actor, the floors), each with a lock-step socket
    to make it publish once: what Listener.attach needs to know it is subscribed."""

    def __init__(self, publishing: list[Server]) -> None:
        self.context = zmq.Context()
        self.sockets = [connect(self.context, server.endpoints[0]) for server in publishing]
        self.updates = [server.endpoints[1] for server in publishing]

    def poke(self) -> None:
        for sock in self.sockets:
            lockstep(sock, [reserve(0, POKE_ID, 1), cancel(1, POKE_ID)])

    def attach(self, listener: Listener) -> None:
        listener.attach(self.updates, self.poke)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.context.term()


def start_c(ctx: Context, tmp: str, transport: str, started: list[Server]) -> str:
    """Start the C floor and echo (the floor's script recorded in `tmp`): "" once
    both are up, else why they cannot be (printed, and noted in the figures)."""
    try:
        started.append(start_c_floor(tmp, endpoint(transport, tmp, "c-floor"),
                                     endpoint(transport, tmp, "c-floor-upd")))
        started.append(start_c_echo(endpoint(transport, tmp, "c-echo")))
    except c.Unavailable as reason:
        ctx.progress(f"C floor and echo skipped: {reason}")
        return str(reason)
    return ""


def run_transport(ctx: Context, transport: str, n: int, reps: int,
                  settings: tuple[int, ...]) -> list[Figure]:
    context = zmq.Context()
    sockets: dict[str, zmq.Socket] = {}
    publishers = None
    with short_tmp() as tmp, servers() as started, Listener() as listener:
        actor = start_actor(endpoint(transport, tmp, "cmd"), endpoint(transport, tmp, "upd"),
                            store=":memory:")
        started.append(actor)
        echo = start_echo(endpoint(transport, tmp, "echo"))
        started.append(echo)
        try:
            sockets["actor"] = connect(context, actor.endpoint)
            live = reserve(0, EXISTS_ID, 2, token="EXISTS")
            lockstep(sockets["actor"], [live])
            floor = start_floor(actor, floor_requests(), tmp, endpoint(transport, tmp, "floor"),
                                endpoint(transport, tmp, "floor-upd"))
            started.append(floor)
            sockets["floor"] = connect(context, floor.endpoint)
            sockets["echo"] = connect(context, echo.endpoint)
            c_skipped = start_c(ctx, tmp, transport, started)
            names = SERVERS if c_skipped else SERVERS + C_SERVERS
            publishing = [actor, floor]
            if not c_skipped:
                c_floor, c_echo = started[-2:]
                sockets["c_floor"] = connect(context, c_floor.endpoint)
                sockets["c_echo"] = connect(context, c_echo.endpoint)
                publishing.append(c_floor)
            publishers = Publishers(publishing)
            warm = Workload(min(n, 500))
            warm.next_id = 1_000_000_000
            for name in names:
                measure(sockets[name], warm.batch(), name not in ECHOES)
            samples = {(listeners, name): {cmd: {p: [] for p, _ in PERCENTILES} for cmd in COMMANDS}
                       for listeners in settings for name in names}
            # updates received: the actor's, the floor's (and the C floor's)
            received = {listeners: [0] * len(publishing) for listeners in settings}
            workload = Workload(n)
            for rep in range(reps):
                ctx.progress(f"rtt {transport}: repetition {rep + 1}/{reps} "
                             f"({n} round trips per command, server and listener setting)")
                work = workload.batch()
                for listeners in rotation(settings, rep):
                    if listeners:
                        publishers.attach(listener)
                        before = listener.counts()
                    for name in rotation(names, rep):
                        times = measure(sockets[name], work, name not in ECHOES)
                        for cmd in COMMANDS:
                            for p, _ in PERCENTILES:
                                samples[listeners, name][cmd][p].append(percentile(times[cmd], p))
                    if listeners:
                        after = listener.counts()
                        for k in range(len(publishing)):
                            received[listeners][k] += after[k] - before[k]
                        listener.detach()
        finally:
            if publishers is not None:
                publishers.close()
            for sock in sockets.values():
                sock.close()
            context.term()
    return figures_for(transport, n, reps, settings, samples, received, c_skipped)


def figures_for(transport: str, n: int, reps: int, settings: tuple[int, ...], samples: dict,
                received: dict, c_skipped: str) -> list[Figure]:
    figures = []
    graded = transport == "tcp"
    for listeners in settings:
        where = f"{transport}, {listener_label(listeners)}"
        actor, floor, echo = (samples[listeners, name] for name in SERVERS)
        for cmd in COMMANDS:
            for p, label in PERCENTILES:
                goal = graded and listeners == 1 and p == 50
                note = ""
                if cmd == Command.PING and p == 50:
                    note = (f"lock-step DEALER, {n} round trips per command and repetition, the same "
                            "request bytes to all three servers; actor on --store :memory:")
                    if listeners:
                        # 4 updates per reserve/cancel pair, each published to the listener.
                        sent = 4 * n * reps
                        note += (f"; the listener received {received[listeners][0]:,} of the "
                                 f"actor's {sent:,} updates and {received[listeners][1]:,} of the "
                                 f"floor's {sent:,}")
                        if not c_skipped:
                            note += f" ({received[listeners][2]:,} of the C floor's)"
                    if c_skipped:
                        note += f"; C floor and echo skipped: {c_skipped}"
                figures.append(Figure(
                    suite="rtt", name=f"{cmd} {label} ({where})", unit="us",
                    samples=actor[cmd][p], baseline=NAMES["echo"], baseline_samples=echo[cmd][p],
                    second_baseline=NAMES["floor"], second_baseline_samples=floor[cmd][p],
                    higher_is_better=False, note=note,
                    target=ECHO_TARGETS.get(cmd) if goal else None,
                    second_target=FLOOR_TARGETS.get(cmd) if goal else None,
                    params={"kind": "actor", "transport": transport, "cmd": cmd, "percentile": p,
                            "listeners": listeners}))
        for cmd in COMMANDS:
            figures.append(Figure(
                suite="rtt", name=f"I/O floor: {cmd} p50 ({where})", unit="us",
                samples=floor[cmd][50], baseline=NAMES["echo"], baseline_samples=echo[cmd][50],
                higher_is_better=False,
                note=("what the protocol costs: the actor's own reply and updates, no work"
                      if cmd == Command.PING else ""),
                params={"kind": "floor", "transport": transport, "cmd": cmd, "percentile": 50,
                        "listeners": listeners}))
        if not c_skipped:
            figures += c_figures(transport, listeners, samples)
        if graded and listeners == 1:
            for cmd in COMMANDS:
                figures.append(Figure(
                    suite="rtt", name=f"{cmd} p99.9 ({where})", unit="us",
                    samples=actor[cmd][99.9], baseline="I/O floor p99.9",
                    baseline_samples=floor[cmd][99.9], higher_is_better=False, target=TAIL_TARGET,
                    params={"kind": "tail", "transport": transport, "cmd": cmd,
                            "listeners": listeners}))
    return figures


def run(ctx: Context) -> list[Figure]:
    n = 300 if ctx.quick else 2000
    reps = ctx.reps()
    # The targets are on tcp; ipc (full run only) shows what the transport changes.
    figures = run_transport(ctx, "tcp", n, reps, (1, 0))
    if not ctx.quick:
        figures += run_transport(ctx, "ipc", n, reps, (1,))
    return figures


def c_figures(transport: str, listeners: int, samples: dict) -> list[Figure]:
    """The C floor and echo beside the Python ones: how far Python is from libzmq."""
    where = f"{transport}, {listener_label(listeners)}"
    figures = []
    for c_name, name in zip(C_SERVERS, ("floor", "echo")):
        for cmd in COMMANDS:
            figures.append(Figure(
                suite="rtt", name=f"{NAMES[c_name]}: {cmd} p50 ({where})", unit="us",
                samples=samples[listeners, c_name][cmd][50], baseline=NAMES[name],
                baseline_samples=samples[listeners, name][cmd][50], higher_is_better=False,
                note=(f"the {NAMES[name]} in C on libzmq (bench/c/floor.c): what Python costs "
                      "over libzmq itself" if cmd == Command.PING else ""),
                params={"kind": c_name, "transport": transport, "cmd": cmd, "percentile": 50,
                        "listeners": listeners}))
    return figures
