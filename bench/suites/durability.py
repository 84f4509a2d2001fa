"""durability: what the SQLite store costs, per durability mode, against `--store :memory:`.

Three actors run side by side on tcp loopback, on the same 4-EVSE station: one on a
SQLite file (in a temp dir) with synchronous=full, one on another file with
synchronous=normal, and the baseline on `--store :memory:`. Each loop turn of the actor
commits everything it read in one transaction (group commit), then replies.

- Lock-step latency: one DEALER in this process sends reserve_now / cancel_reservation
  pairs (rtt's workload and lock-step loop: reserve id n on EVSE 1, cancel id n), one
  request at a time, so every request is its own loop turn and its own commit (an fsync
  of the WAL in full mode). A figure's samples are each repetition's p50 or p99 over
  all requests of the pairs.
- Pipelined throughput: throughput's client processes (1 or 4, window 64 each, each on
  its own EVSE) and its measure(); many requests arrive per loop turn, so group commit
  shares one commit among them. The figure is replies per second.

Every repetition measures the three actors one after the other, in an order that
rotates from one repetition to the next, so drift on a noisy machine is shared.
No targets: the figures are informational.
"""

from __future__ import annotations

import os

import zmq

from bench.common import Context, Figure, percentile, rotation
from bench.procs import Workers, servers, short_tmp, start_actor, station_config
from bench.suites.rtt import Workload, connect, expect, lockstep
from bench.suites.throughput import EVSES, WINDOW, _Stats, client_process, measure

BASELINE = "memory"
MODES = ("full", "normal", BASELINE)
LABELS = {"full": "synchronous=full", "normal": "synchronous=normal", BASELINE: "store :memory:"}
NOTES = {
    ("latency", "full"): "each lock-step request is its own loop turn: one commit, fsync'd, "
                         "per request",
    ("latency", "normal"): "each lock-step request is its own loop turn: one commit per request, "
                           "appended to the WAL without fsync (fsync only at checkpoints)",
    ("throughput", "full"): "one fsync per loop turn; pipelining amortises it over every request "
                            "read in that turn (group commit)",
    ("throughput", "normal"): "one commit per loop turn without fsync, shared by every request "
                              "read in that turn (group commit)",
}


def start_actors(tmp: str, station: str, started: list) -> dict[str, str]:
    """The three actors; their command endpoints by mode."""
    endpoints = {}
    for mode in MODES:
        if mode == BASELINE:
            store, synchronous = ":memory:", None
        else:
            store, synchronous = os.path.join(tmp, f"store-{mode}.sqlite3"), mode
        server = start_actor("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", store=store,
                             synchronous=synchronous, config=station)
        started.append(server)
        if synchronous and f"(synchronous={synchronous})" not in server.log():
            raise RuntimeError(f"durability: actor not on synchronous={synchronous}:\n{server.log()}")
        endpoints[mode] = server.endpoint
    return endpoints


def latency(ctx: Context, endpoints: dict[str, str], pairs: int, reps: int) -> dict:
    """samples[mode][p]: one percentile of the lock-step round trips per repetition (us)."""
    samples = {mode: {50: [], 99: []} for mode in MODES}
    context = zmq.Context()
    sockets = {}
    try:
        for mode in MODES:
            sockets[mode] = connect(context, endpoints[mode])
        warm = Workload(min(pairs, 100))
        warm.next_id = 1_000_000_000
        for mode in MODES:
            lockstep(sockets[mode], warm.batch()["pair"])
        workload = Workload(pairs)
        for rep in range(reps):
            ctx.progress(f"durability lock-step: repetition {rep + 1}/{reps} "
                         f"({pairs} reserve/cancel pairs per mode)")
            work = workload.batch()["pair"]     # the same request bytes to every actor
            for mode in rotation(MODES, rep):
                times, replies = lockstep(sockets[mode], work)
                expect(replies, ["Accepted", True] * pairs, f"durability lock-step ({mode})")
                for p in (50, 99):
                    samples[mode][p].append(percentile(times, p))
    finally:
        for sock in sockets.values():
            sock.close()
        context.term()
    return samples


def throughput(ctx: Context, workers: Workers, endpoints: dict[str, str], clients: int,
               duration: float, reps: int) -> tuple[dict, dict]:
    """rates[mode]: replies per second per repetition; per_request[mode]: updates published
    per request (throughput.measure's check that the actor did the work)."""
    # measure() runs one endpoint named "actor" for one repetition here, so that this
    # suite chooses the order of the modes (rotated) and every mode gets the stats check.
    quiet = Context(quick=ctx.quick, progress=lambda message: None)
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    updates: dict[str, list[float]] = {mode: [] for mode in MODES}
    stats = {}
    try:
        for mode in MODES:
            stats[mode] = _Stats(endpoints[mode])
        for rep in range(reps):
            ctx.progress(f"durability pipelined x{clients}: repetition {rep + 1}/{reps}")
            for mode in rotation(MODES, rep):
                rate, per_request = measure(quiet, workers, f"durability {mode} x{clients}",
                                            {"actor": endpoints[mode]}, "dealer", clients,
                                            duration, 1, stats[mode])
                rates[mode] += rate["actor"]
                updates[mode].append(per_request)
    finally:
        for s in stats.values():
            s.close()
    return rates, {mode: sum(u) / len(u) for mode, u in updates.items()}


def run(ctx: Context) -> list[Figure]:
    reps = ctx.reps()
    pairs = 100 if ctx.quick else 1000
    duration = 0.2 if ctx.quick else 1.5
    figures = []
    with short_tmp() as tmp, servers() as started:
        station = station_config(tmp, EVSES)
        endpoints = start_actors(tmp, station, started)
        lat = latency(ctx, endpoints, pairs, reps)
        thr = {}
        with Workers(client_process, 4) as workers:
            for clients in (1, 4):
                thr[clients] = throughput(ctx, workers, endpoints, clients, duration, reps)
    for mode in MODES[:-1]:
        for p in (50, 99):
            note = ""
            if p == 50:
                note = (f"{NOTES['latency', mode]}; {pairs} lock-step reserve/cancel pairs per "
                        "repetition, same bytes to each actor, tcp; percentile over both commands")
            figures.append(Figure(
                suite="durability", name=f"reserve/cancel lock-step p{p}, {LABELS[mode]}",
                unit="us", samples=lat[mode][p], baseline=LABELS[BASELINE],
                baseline_samples=lat[BASELINE][p], higher_is_better=False, note=note,
                params={"kind": "lockstep", "synchronous": mode, "percentile": p}))
    for clients in (1, 4):
        rates, per_request = thr[clients]
        for mode in MODES[:-1]:
            note = (f"{NOTES['throughput', mode]}; {clients} client "
                    f"process{'es' if clients > 1 else ''}, window {WINDOW} each, {duration:g} s "
                    f"per repetition, tcp; {per_request[mode]:.2f} updates published per request "
                    f"({per_request[BASELINE]:.2f} on :memory:)")
            figures.append(Figure(
                suite="durability", name=f"reserve/cancel pipelined x{clients}, {LABELS[mode]}",
                unit="req/s", samples=rates[mode], baseline=LABELS[BASELINE],
                baseline_samples=rates[BASELINE], higher_is_better=True, note=note,
                params={"kind": "pipelined", "synchronous": mode, "clients": clients}))
    return figures
