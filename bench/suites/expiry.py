"""Suite `expiry`: 10,000 reservations expiring within the same second.

End to end, with the real actor process (`python -m actor`, INFO logging as
in production, its SQLite store in a temporary directory at the default
synchronous=full): a station of N EVSEs (one cCCS2 connector each) gets one
EVSE-specific reservation per EVSE over a pipelined DEALER, with expiry_time
spread evenly over one second that starts once all are placed (the lead is
twice the previous round's placing time plus 0.5 s; a round whose placing
overran it is left to expire and retried with twice the lead). A SUB socket
(connected and proven to receive before anything is placed) stamps each
Expired update with time.time() as it arrives; lateness = arrival -
expiry_time (the instant the actor parsed from the string sent). The note
gives the CPU time the actor spent while they expired (/proc), which, unlike
lateness, does not depend on what else the machine is running.

The actor's clock is UTC running on the monotonic clock and the bench's is
time.time() on the same machine, so the two agree to well under a millisecond
over a run. Lateness includes the wheel's rounding to its tick (a deadline is
due at the first tick boundary at or after it: up to one tick), the poll
wake-up, ending the reservations and committing them to the store, publishing,
and delivery over loopback TCP to a Python subscriber.

The baseline is the tick itself (samples = the tick, per repetition), so the
ratio reads as lateness in ticks. Target: p99 at most one tick plus 5 ms. The
full run repeats the measurement with the store at synchronous=normal (no
fsync per loop turn) to show what durability adds.
"""

from __future__ import annotations

import os
import statistics
import time

import msgspec
import zmq

from bench.common import Context, Figure, percentile
from bench.procs import cpu_seconds, servers, short_tmp, start_actor, station_config
from protocol.rfc3339 import format_rfc3339, parse_rfc3339
from protocol.vocabulary import (
    Command, ConnectorType, ReservationResult, ReservationUpdateStatus, Topic,
)

SUITE = "expiry"
TICK_MS = 10
WINDOW = 1.0          # all expiries fall within this many seconds
WINDOW_LEAD = 0.5     # seconds from the last placement to the first expiry
IN_FLIGHT = 500       # pipelined reserve_now requests outstanding at once


def _request(reservation_id: int, evse_id: int, expiry_time: str) -> bytes:
    return msgspec.msgpack.encode({"id": reservation_id, "cmd": Command.RESERVE_NOW, "args": {"request": {
        "reservation_id": reservation_id, "id_token": f"FLEET{reservation_id}",
        "evse_id": evse_id, "expiry_time": expiry_time}}})


class _TooSlow(Exception):
    """Placing took so long that expiry times had passed (the actor answered Rejected)."""


class _Bench:
    def __init__(self, context: zmq.Context, command: str, update: str) -> None:
        self.dealer = context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(command)
        self.sub = context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 0)   # never drop an update on our side
        self.sub.setsockopt(zmq.SUBSCRIBE, Topic.RESERVATION_UPDATE.encode())
        self.sub.connect(update)

    def close(self) -> None:
        self.dealer.close()
        self.sub.close()

    def call(self, request: dict, timeout: float = 10.0) -> dict:
        self.dealer.send(msgspec.msgpack.encode(request))
        if not self.dealer.poll(int(timeout * 1000)):
            raise TimeoutError(f"no reply to {request['cmd']} within {timeout} s")
        return msgspec.msgpack.decode(self.dealer.recv())

    def prove_subscribed(self, timeout: float = 10.0) -> None:
        """Place and cancel a probe reservation until its update arrives: PUB/SUB
        drops whatever is published before the subscription is in place."""
        deadline = time.monotonic() + timeout
        probe = {"reservation_id": -1, "id_token": "PROBE", "evse_id": 1,
                 "expiry_time": format_rfc3339(time.time() + 60, "microseconds")}
        while time.monotonic() < deadline:
            self.call({"id": 0, "cmd": Command.RESERVE_NOW, "args": {"request": probe}})
            self.call({"id": 0, "cmd": Command.CANCEL_RESERVATION, "args": {"reservation_id": -1}})
            if self.sub.poll(100):
                self.drain()
                return
        raise TimeoutError("the SUB socket never received an update")

    def drain(self) -> None:
        while self.sub.poll(0):
            self.sub.recv_multipart()

    def place(self, first_id: int, evses: int, start: float) -> dict[int, float]:
        """Reserve every EVSE, expiring evenly over [start, start + WINDOW);
        returns reservation id -> the expiry instant the actor parsed."""
        expiries: dict[int, float] = {}
        sent = received = 0
        late = False
        dealer = self.dealer
        while received < sent or (sent < evses and not late):
            while sent < evses and sent - received < IN_FLIGHT and not late:
                text = format_rfc3339(start + WINDOW * sent / evses, "microseconds")
                reservation_id = first_id + sent
                expiries[reservation_id] = parse_rfc3339(text)
                dealer.send(_request(reservation_id, sent + 1, text))
                sent += 1
            if not dealer.poll(10_000):
                raise TimeoutError(f"no reply after {received} of {evses} reservations")
            reply = msgspec.msgpack.decode(dealer.recv())
            received += 1
            if reply.get("ok") and reply.get("result") == ReservationResult.REJECTED:
                late = True   # stop sending; read what is in flight, then give up
            elif not reply.get("ok") or reply.get("result") != ReservationResult.ACCEPTED:
                raise RuntimeError(f"reserve_now {reply.get('id')} answered {reply}")
        if late:
            raise _TooSlow()
        return expiries

    def collect(self, expiries: dict[int, float], until: float) -> tuple[list[float], int]:
        """(lateness ms of each Expired update, how many never came)."""
        sub = self.sub
        stamped: list[tuple[float, bytes]] = []
        wanted = len(expiries)
        expired = 0
        status = ReservationUpdateStatus.EXPIRED.encode()
        while expired < wanted and time.time() < until:
            if not sub.poll(50):
                continue
            # Stamp first, decode later: the subscriber must not lag behind.
            while True:
                try:
                    frames = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                now = time.time()
                stamped.append((now, frames[1]))
                if status in frames[1]:
                    expired += 1
        lateness = []
        for arrival, body in stamped:
            update = msgspec.msgpack.decode(body)
            if (update["reservation_status"] == ReservationUpdateStatus.EXPIRED
                    and update["reservation_id"] in expiries):
                lateness.append((arrival - expiries[update["reservation_id"]]) * 1000)
        return lateness, wanted - len(lateness)


def _measure(ctx: Context, evses: int, reps: int, synchronous: str | None) -> dict:
    """Start the actor, run `reps` rounds of `evses` expiries; per-round p50, p99, max (ms)."""
    out = {"p50": [], "p99": [], "max": [], "lost": 0, "place_s": [], "cpu_s": []}
    context = zmq.Context()
    try:
        with short_tmp() as directory, servers() as started:
            ctx.progress(f"expiry: starting the actor on {evses:,} EVSEs")
            actor = start_actor("tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                                store=os.path.join(directory, "store.sqlite3"),
                                synchronous=synchronous, config=station_config(
                                    directory, evses, (ConnectorType.cCCS2,),
                                    tables={"timer": {"tick_ms": TICK_MS}}))
            started.append(actor)
            bench = _Bench(context, *actor.endpoints)
            try:
                bench.prove_subscribed()
                # How long placing takes is learnt from the first round.
                lead = 1.0 + evses * 0.0005
                first_id = 1
                rep = retries = 0
                while rep < reps:
                    ctx.progress(f"expiry: placing {evses:,} reservations, repetition "
                                 f"{rep + 1}/{reps}")
                    t0 = time.time()
                    start = t0 + lead
                    try:
                        expiries = bench.place(first_id, evses, start)
                    except _TooSlow:
                        expiries = None
                    first_id += evses
                    placed = time.time() - t0
                    if expiries is None or time.time() > start - 0.1:
                        # A busy machine slowed placing past the first expiry:
                        # let this round expire and retry it with more lead.
                        retries += 1
                        if retries > 3:
                            raise RuntimeError(f"placing {evses:,} reservations kept taking "
                                               f"longer than the {lead:.1f} s lead")
                        ctx.progress(f"expiry: placing took {placed:.1f} s, past the first "
                                     f"expiry; retrying with more lead")
                        time.sleep(max(0.0, start + WINDOW + 0.5 - time.time()))
                        bench.drain()
                        lead *= 2
                        continue
                    out["place_s"].append(placed)
                    bench.drain()
                    cpu = cpu_seconds(actor.pid)
                    lateness, missing = bench.collect(expiries, start + WINDOW + 10.0)
                    # The actor sleeps until the first expiry: this is the
                    # CPU it spent ending, storing and publishing them.
                    out["cpu_s"].append(cpu_seconds(actor.pid) - cpu)
                    out["lost"] += missing
                    if not lateness:
                        raise RuntimeError("no Expired update arrived")
                    out["p50"].append(percentile(lateness, 50))
                    out["p99"].append(percentile(lateness, 99))
                    out["max"].append(max(lateness))
                    lead = 2 * placed + WINDOW_LEAD
                    rep += 1
            finally:
                bench.close()
    finally:
        context.destroy(linger=0)
    return out


def run(ctx: Context) -> list[Figure]:
    evses = 2_000 if ctx.quick else 10_000
    reps = ctx.reps()
    base = f"wheel tick ({TICK_MS} ms)"
    ticks = [float(TICK_MS)] * reps
    figures = []
    # The default store, then (full run only) the store without fsync per turn,
    # to show what durability costs in lateness.
    for synchronous in (None,) if ctx.quick else (None, "normal"):
        got = _measure(ctx, evses, reps, synchronous)
        store = "synchronous=normal" if synchronous else "synchronous=full, the default"
        tag = ", store normal" if synchronous else ""
        params = {"reservations": evses, "store": synchronous or "full"}
        note = (f"{evses:,} EVSE-specific reservations expiring evenly within 1 s, end to end over "
                f"tcp loopback (actor at INFO; SQLite store {store}); placing them took "
                f"{min(got['place_s']):.1f}-{max(got['place_s']):.1f} s; "
                f"{got['lost']} Expired updates missing; actor CPU while they expired: "
                f"{statistics.median(got['cpu_s']):.2f} s "
                f"({statistics.median(got['cpu_s']) / evses * 1e6:.0f} us per reservation)")
        for q, limit in (("p50", None), ("p99", TICK_MS + 5.0), ("max", None)):
            figures.append(Figure(
                SUITE, f"Expired lateness {q}, {evses:,} in 1 s{tag}", "ms", got[q], base, ticks,
                higher_is_better=False, limit=None if synchronous else limit,
                note=note if q == "p50" else "", params={**params, "q": q}))
    return figures
