"""durability: what the SQLite store costs, per durability mode, against `--store :memory:`.

Three actors run side by side on tcp loopback, on the same 4-EVSE station: one on a
SQLite file (in a temp dir) with synchronous=full (the default), one on another file
with synchronous=normal, and the baseline on `--store :memory:`; beside them the I/O
floor (see rtt), recorded from the :memory: actor, as a second baseline. One listener
process reads every topic of all four, as in the targets' setting. Each loop turn of
the actor commits everything it read in one transaction (group commit), then replies.

- Lock-step latency: one DEALER in this process sends reserve_now / cancel_reservation
  pairs (rtt's workload and lock-step loop: reserve id n on EVSE 1, cancel id n), one
  request at a time, so every request is its own loop turn and its own commit (an fsync
  of the WAL in full mode). A figure's samples are each repetition's p50, p99 or p99.9
  over all requests of the pairs.
- Pipelined throughput: throughput's client processes (1 or 4, window 64 each, each on
  its own EVSE) and its measure(); many requests arrive per loop turn, so group commit
  shares one commit among them. The figure is replies per second.
- fsyncs per request: counted by `strace -f -c -e trace=fsync,fdatasync` attached to a
  file-store actor (by pid) for a lock-step run and then a pipelined x4 run, outside the
  timed runs (tracing slows every system call), divided by the requests the actor's
  `stats` counted in them. Without strace (or when it cannot attach) the figure is
  left out and a note says so.

Every repetition measures the servers one after the other, in an order that rotates
from one repetition to the next, so drift on a noisy machine is shared.
No targets: the figures are informational.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess

import zmq

from bench.common import Context, Figure, percentile, rotation
from bench.procs import Listener, Workers, servers, short_tmp, start_actor, start_floor, station_config
from bench.suites.rtt import NAMES, Publishers, Workload, connect, expect, lockstep
from bench.suites.throughput import EVSES, WINDOW, _Stats, client_process, measure, requests_for, run_once
from protocol.vocabulary import ReservationResult

BASELINE = "memory"
FLOOR = "floor"
MODES = ("full", "normal", BASELINE)
SERVERS = MODES + (FLOOR,)
LABELS = {"full": "synchronous=full", "normal": "synchronous=normal", BASELINE: "store :memory:",
          FLOOR: NAMES["floor"]}
PERCENTILES = (50, 99, 99.9)
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


def start_servers(tmp: str, station: str, started: list) -> dict:
    """The three actors and the floor, by mode."""
    out = {}
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
        out[mode] = server
    out[FLOOR] = start_floor(out[BASELINE], requests_for(0)[:2], tmp, "tcp://127.0.0.1:*",
                             "tcp://127.0.0.1:*")
    started.append(out[FLOOR])
    return out


def latency(ctx: Context, endpoints: dict[str, str], pairs: int, reps: int) -> dict:
    """samples[server][p]: one percentile of the lock-step round trips per repetition (us)."""
    samples = {name: {p: [] for p in PERCENTILES} for name in SERVERS}
    context = zmq.Context()
    sockets = {}
    try:
        for name in SERVERS:
            sockets[name] = connect(context, endpoints[name])
        warm = Workload(min(pairs, 100))
        warm.next_id = 1_000_000_000
        for name in SERVERS:
            lockstep(sockets[name], warm.batch()["pair"])
        workload = Workload(pairs)
        for rep in range(reps):
            ctx.progress(f"durability lock-step: repetition {rep + 1}/{reps} "
                         f"({pairs} reserve/cancel pairs per server)")
            work = workload.batch()["pair"]     # the same request bytes to every server
            for name in rotation(SERVERS, rep):
                times, replies = lockstep(sockets[name], work)
                expect(replies, [ReservationResult.ACCEPTED, True] * pairs,
                       f"durability lock-step ({name})")
                for p in PERCENTILES:
                    samples[name][p].append(percentile(times, p))
    finally:
        for sock in sockets.values():
            sock.close()
        context.term()
    return samples


def fsyncs(pid: int, run, stats: _Stats, directory: str) -> tuple[float | None, str]:
    """(fsync and fdatasync calls per request while `run()` drives the actor `pid`,
    or None with the reason it could not be counted)."""
    strace = shutil.which("strace")
    if strace is None:
        return None, "strace not found"
    out = os.path.join(directory, f"strace-{pid}.txt")
    tracer = subprocess.Popen([strace, "-f", "-c", "-e", "trace=fsync,fdatasync", "-p", str(pid),
                               "-o", out], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        # "Process N attached [with M threads]", once every thread is traced.
        ready, _, _ = select.select([tracer.stderr], [], [], 10)
        line = tracer.stderr.readline() if ready else ""
        if "attached" not in line:
            return None, f"strace could not attach to the actor: {line.strip() or 'no answer'}"
        before = stats()["requests"]
        run()
        requests = stats()["requests"] - before - 1
    finally:
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)
            tracer.communicate(timeout=10)
    calls = 0
    with open(out) as report:
        for line in report:
            fields = line.split()
            if fields and fields[-1] in ("fsync", "fdatasync"):
                calls += int(fields[3])
    return calls / max(1, requests), ""


def count_fsyncs(ctx: Context, workers: Workers, actors: dict, pairs: int, duration: float,
                 tmp: str) -> tuple[dict, str]:
    """counts[mode, kind]: fsyncs per request for each file store, lock-step and pipelined x4."""
    counts = {}
    context = zmq.Context()
    try:
        for mode in MODES[:-1]:
            ctx.progress(f"durability: counting fsyncs ({LABELS[mode]})")
            server = actors[mode]
            stats = _Stats(server.endpoint)
            sock = connect(context, server.endpoint)
            try:
                work = Workload(pairs)
                work.next_id = 1_500_000_000
                runs = {
                    "lockstep": lambda: lockstep(sock, work.batch()["pair"]),
                    "pipelined": lambda: run_once(workers, "fsync count", server.endpoint,
                                                  "dealer", 4, duration),
                }
                for kind, run in runs.items():
                    value, why = fsyncs(server.pid, run, stats, tmp)
                    if value is None:
                        return {}, why
                    counts[mode, kind] = value
            finally:
                sock.close()
                stats.close()
    finally:
        context.term()
    return counts, ""


def run(ctx: Context) -> list[Figure]:
    reps = ctx.reps()
    pairs = 100 if ctx.quick else 1000
    duration = 0.2 if ctx.quick else 1.5
    with short_tmp() as tmp, servers() as started, Listener() as listener:
        station = station_config(tmp, EVSES)
        started_servers = start_servers(tmp, station, started)
        endpoints = {name: server.endpoint for name, server in started_servers.items()}
        publishers = Publishers(list(started_servers.values()))
        try:
            publishers.attach(listener)
            lat = latency(ctx, endpoints, pairs, reps)
            thr = {}
            with Workers(client_process, 4) as workers:
                for clients in (1, 4):
                    stats = {mode: _Stats(endpoints[mode]) for mode in MODES}
                    try:
                        thr[clients] = measure(ctx, workers, f"durability pipelined x{clients}",
                                               endpoints, "dealer", clients, duration, reps, stats)
                    finally:
                        for s in stats.values():
                            s.close()
                counts, why = count_fsyncs(ctx, workers, started_servers, pairs, duration, tmp)
            listener.detach()
        finally:
            publishers.close()
    return figures_for(lat, thr, counts, why, pairs, duration)


def figures_for(lat: dict, thr: dict, counts: dict, why: str, pairs: int,
                duration: float) -> list[Figure]:
    figures = []
    for mode in MODES[:-1]:
        for p in PERCENTILES:
            note = ""
            if p == 50:
                note = (f"{NOTES['latency', mode]}; {pairs} lock-step reserve/cancel pairs per "
                        "repetition, same bytes to each server, tcp, one listener; percentile "
                        "over both commands")
                if not counts and mode == "full":
                    note += f"; fsyncs per request not counted: {why}"
            figures.append(Figure(
                suite="durability", name=f"reserve/cancel lock-step p{p:g}, {LABELS[mode]}",
                unit="us", samples=lat[mode][p], baseline=LABELS[BASELINE],
                baseline_samples=lat[BASELINE][p], second_baseline=LABELS[FLOOR],
                second_baseline_samples=lat[FLOOR][p], higher_is_better=False, note=note,
                params={"kind": "lockstep", "synchronous": mode, "percentile": p}))
    for clients in (1, 4):
        rates, per_request = thr[clients]
        for mode in MODES[:-1]:
            note = (f"{NOTES['throughput', mode]}; {clients} client "
                    f"process{'es' if clients > 1 else ''}, window {WINDOW} each, {duration:g} s "
                    f"per repetition, tcp, one listener; {per_request[mode]:.2f} updates "
                    f"published per request ({per_request[BASELINE]:.2f} on :memory:)")
            figures.append(Figure(
                suite="durability", name=f"reserve/cancel pipelined x{clients}, {LABELS[mode]}",
                unit="req/s", samples=rates[0, mode], baseline=LABELS[BASELINE],
                baseline_samples=rates[0, BASELINE], second_baseline=LABELS[FLOOR],
                second_baseline_samples=rates[0, FLOOR], higher_is_better=True, note=note,
                params={"kind": "pipelined", "synchronous": mode, "clients": clients}))
    for (mode, kind), value in counts.items():
        how = (f"{pairs} lock-step reserve/cancel pairs (one request per loop turn, so the "
               "count does not depend on speed)" if kind == "lockstep" else
               f"4 pipelining client processes for {duration:g} s (tracing slows the actor, so "
               "more requests share each turn's fsync than untraced: a lower bound)")
        figures.append(Figure(
            suite="durability", name=f"fsyncs per request, {kind}, {LABELS[mode]}",
            unit="fsyncs", samples=[value], baseline="one per request", baseline_samples=[1.0],
            higher_is_better=False,
            note=(f"fsync + fdatasync calls counted once by strace attached to the actor during "
                  f"{how}, outside the timed runs, over the requests its stats counted"),
            params={"kind": "fsyncs", "synchronous": mode, "mode": kind}))
    return figures
