"""Suite `guarantee`: how long a non-EVSE-specific reserve_now takes to decide.

Stations are prefixes of one seeded 10,000-EVSE station: each EVSE has one or
two connectors of four types (cCCS2, cType2, cCCS1, cTesla), all Available.
A station of N EVSEs gets the first round(0.75 N) of one seeded sequence of
non-EVSE-specific reserve_now requests, each for one of the four types, so
the later ones find their type saturated and are refused (Occupied): the
sequence runs up to saturation. At 200 EVSEs that is 150 requests.

Measured per request, p50 over the sequence (one sample per repetition, each
on a fresh core):

* `reserve_now`: ReservationCore.apply(ReserveNow(...), now): the decision as
  a user gets it, including the bookkeeping and the evse_reserved view it
  publishes (no wire, no store).
* `guarantee_holds`: the max-flow check alone, on the same states.
* the baseline, EVerest's method (bench/everest_baseline.py): every distinct
  arrival order of the reserved cars and every EVSE choice, on the same
  states, with the same answers (checked). It stops early when it finds an
  order that strands a car, so refusals are cheap and acceptances with many
  cars are what grows factorially. It is run at growing sizes until one
  decision passes the cap (10 s; quick: 1 s); beyond that size it cannot be
  measured, and the larger stations are compared with the enumeration at the
  largest size it completed, which understates its cost there.

Sizes: 10, 50, 200, 1000 and 10,000 EVSEs (quick: 10 and 200). Above 1000 EVSEs
there are 3 repetitions, and each stops timing once LARGE_BUDGET seconds of
decisions are spent (the figure's note then says over how many of the requests
the p50 is): where a decision scans every EVSE, the whole 7,500-request
sequence at 10,000 EVSEs would take minutes per repetition.
"""

from __future__ import annotations

import random
import signal
import statistics
import time
from collections import Counter
from typing import Iterator

from actor.core import ReservationCore
from actor.guarantee import guarantee_holds
from bench.common import Context, Figure
from bench.everest_baseline import arrival_orders_hold
from protocol.messages import Reservation, ReserveNow, Rfc3339Time
from protocol.rfc3339 import format_rfc3339
from protocol.vocabulary import ConnectorType, ReservationResult

SUITE = "guarantee"
TYPES = (ConnectorType.cCCS2, ConnectorType.cType2, ConnectorType.cCCS1, ConnectorType.cTesla)
MASTER_SIZE = 10_000
FIRST_SIZE = 1000      # the master station's first draws, kept as they were when it had 1000 EVSEs
LOAD = 0.75            # reserve_now requests per EVSE
NOW = 1_000_000.0
EXPIRY = NOW + 3600.0
TARGET_SIZE = 200
MIN_SAMPLES = 200   # timings per repetition, replaying small sequences
LARGE_BUDGET = 20.0  # seconds of reserve_now per repetition above FIRST_SIZE EVSEs


class _Capped(Exception):
    pass


def _alarm(*_: object) -> None:
    raise _Capped()


def _master() -> tuple[list[tuple[str, ...]], list[str]]:
    # Drawn in two parts, so that every station up to FIRST_SIZE EVSEs is the one
    # earlier runs measured, and the larger ones extend it.
    rng = random.Random(2024)
    evses: list[tuple[str, ...]] = []
    wanted: list[str] = []
    for count in (FIRST_SIZE, MASTER_SIZE - FIRST_SIZE):
        evses += [tuple(rng.sample(TYPES, rng.choice((1, 2)))) for _ in range(count)]
        wanted += [rng.choice(TYPES) for _ in range(count)]
    return evses, wanted


class Scenario:
    """The first `n` EVSEs of the master station and the first round(0.75 n) requests."""

    _evses, _wanted = _master()

    def __init__(self, n: int) -> None:
        self.n = n
        self.station = [(evse_id, [(c + 1, t) for c, t in enumerate(types)])
                        for evse_id, types in enumerate(self._evses[:n], 1)]
        self.signatures = [frozenset(types) for types in self._evses[:n]]
        self.wanted = self._wanted[:max(1, round(LOAD * n))]
        self.commands = [ReserveNow(Reservation(
            reservation_id=i, id_token=f"CAR{i}", expiry_time=Rfc3339Time(format_rfc3339(EXPIRY)),
            connector_type=t)) for i, t in enumerate(self.wanted, 1)]
        # Every state the sequence passes through: the cars already reserved
        # plus the one asking. Nothing else changes, so every EVSE stays free.
        # Kept as counts (a list per state grows with the square of the requests).
        self.asking: list[Counter] = []
        self.accepted: list[bool] = []
        cars: Counter = Counter()
        free = Counter(self.signatures)
        for t in self.wanted:
            state = cars.copy()
            state[t] += 1
            self.asking.append(state)
            ok = guarantee_holds(state, free)
            self.accepted.append(ok)
            if ok:
                cars = state

    def states(self) -> Iterator[list[str]]:
        """Each state as the enumeration takes it: the list of cars, the asking one last."""
        cars: list[str] = []
        for t, accepted in zip(self.wanted, self.accepted):
            yield cars + [t]
            if accepted:
                cars.append(t)

    def _rounds(self) -> int:
        # Small stations have few requests: replay them on fresh cores until
        # a repetition has at least MIN_SAMPLES timings to take the p50 of.
        return -(-MIN_SAMPLES // len(self.commands))

    def apply_p50(self, budget: float | None = None) -> tuple[float, int]:
        """(p50 ms of ReservationCore.apply over the sequence, each round on a fresh
        core; the number of requests timed). With a `budget` (seconds), a round
        stops at the first request after the budget is spent: at the largest sizes
        a slow decision would otherwise take minutes."""
        clock = time.perf_counter_ns
        times = []
        end = None if budget is None else clock() + budget * 1e9
        for _ in range(self._rounds()):
            apply = ReservationCore(self.station, now=NOW).apply
            for command, accepted in zip(self.commands, self.accepted):
                start = clock()
                outcome = apply(command, NOW)
                times.append(clock() - start)
                if (outcome.result == ReservationResult.ACCEPTED) != accepted:
                    raise RuntimeError(
                        f"{self.n} EVSEs: reservation {command.request.reservation_id} was "
                        f"{outcome.result}, guarantee_holds says {accepted}")
                if end is not None and start > end:
                    return statistics.median(times) / 1e6, len(times)
        return statistics.median(times) / 1e6, len(times)

    def holds_p50(self) -> float:
        free = Counter(self.signatures)
        clock = time.perf_counter_ns
        times = []
        for _ in range(self._rounds()):
            for cars in self.asking:
                start = clock()
                guarantee_holds(cars, free)
                times.append(clock() - start)
        return statistics.median(times) / 1e6

    def enumeration(self, cap: float) -> tuple[float, float]:
        """(p50 ms, worst s) of the arrival-order enumeration over the sequence,
        replayed like apply_p50 while that stays cheap; raises _Capped when
        one decision passes `cap` seconds."""
        times = []
        spent = 0.0
        for _ in range(self._rounds()):
            for cars, accepted in zip(self.states(), self.accepted):
                signal.setitimer(signal.ITIMER_REAL, cap)
                try:
                    start = time.perf_counter()
                    ok = arrival_orders_hold(cars, self.signatures)
                    times.append(time.perf_counter() - start)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                if ok != accepted:
                    raise RuntimeError(f"{self.n} EVSEs, cars {cars}: enumeration says {ok}, "
                                       f"guarantee_holds {accepted}")
            spent += sum(times[-len(self.wanted):])
            if spent > 0.05:
                break
        return statistics.median(times) * 1e3, max(times)


def _sweep_sizes():
    yield from (2, 4, 6, 8)
    n = 10
    while n < MASTER_SIZE:
        yield n
        n += 1


def run(ctx: Context) -> list[Figure]:
    cap = 1.0 if ctx.quick else 10.0
    figures: list[Figure] = []

    # 1. The enumeration at growing sizes, beside apply on the same states.
    sweep_reps = ctx.reps(3)
    previous = signal.signal(signal.SIGALRM, _alarm)
    sweep: list[tuple[int, list[float], list[float], float]] = []
    capped_at: int | None = None   # EVSEs at which one decision passed the cap
    try:
        for n in _sweep_sizes():
            scenario = Scenario(n)
            ctx.progress(f"guarantee: enumeration at {n} EVSEs, {len(scenario.wanted)} requests")
            enum, worst = [], 0.0
            try:
                for rep in range(sweep_reps):
                    # The cap decides where the sweep ends on the first
                    # repetition; later ones only guard against a hang.
                    p50, slowest = scenario.enumeration(cap if rep == 0 else 3 * cap)
                    enum.append(p50)
                    worst = max(worst, slowest)
            except _Capped:
                capped_at = n
                break
            mine = [scenario.apply_p50()[0] for _ in range(sweep_reps)]
            sweep.append((n, mine, enum, worst))
    finally:
        signal.signal(signal.SIGALRM, previous)
    largest, _, base_samples, base_worst = sweep[-1]
    slower = [statistics.median(enum) > statistics.median(mine) for _, mine, enum, _ in sweep]
    # The smallest size from which on the enumeration is always the slower.
    crossing = next((sweep[i][0] for i in range(len(sweep)) if all(slower[i:])), None)
    for n, mine, enum, worst in sweep:
        figures.append(Figure(
            SUITE, f"reserve_now p50, {n} EVSEs (sweep)", "ms", mine,
            "EVerest enumeration, same states", enum, higher_is_better=False,
            params={"evses": n, "series": "sweep", "worst_s": worst}))
    if capped_at:
        figures[-1].params.update(capped_at=capped_at, cap_s=cap)
    passed = (f"at {capped_at} EVSEs one decision passed {cap:g} s and the sweep stopped"
              if capped_at else f"it never passed {cap:g} s up to {largest} EVSEs")
    figures[-1].note = (
        f"enumeration worst decision at {largest} EVSEs: {base_worst:.3g} s; {passed}; "
        + (f"from {crossing} EVSEs on the enumeration's p50 is slower than reserve_now's"
           if crossing else "the enumeration's p50 stayed below reserve_now's"))

    # 2. The growing station: apply and the bare check, against the enumeration
    #    at the same size when it can do it, else at the largest size it did.
    sizes = (10, TARGET_SIZE) if ctx.quick else (10, 50, TARGET_SIZE, 1000, MASTER_SIZE)
    by_size = {n: enum for n, _, enum, _ in sweep}
    for n in sizes:
        scenario = Scenario(n)
        large = n > FIRST_SIZE
        reps = 3 if large else ctx.reps()
        mine, bare, timed = [], [], []
        for rep in range(reps):
            ctx.progress(f"guarantee: {n} EVSEs, {len(scenario.wanted)} requests, "
                         f"repetition {rep + 1}/{reps}")
            p50, count = scenario.apply_p50(LARGE_BUDGET if large else None)
            mine.append(p50)
            timed.append(count)
            bare.append(scenario.holds_p50())
        if n in by_size:
            baseline, samples, where = "EVerest enumeration, same states", by_size[n], ""
        else:
            baseline, samples = f"EVerest enumeration at {largest} EVSEs", base_samples
            where = (f"the enumeration cannot decide at {n} EVSEs within {cap:g} s; the baseline "
                     f"is its p50 at {largest} EVSEs ({len(Scenario(largest).wanted)} requests), "
                     f"the largest it completed, so the speed-up shown is a lower bound. ")
        accepted = sum(scenario.accepted)
        shape = f"{len(scenario.wanted)} requests of 4 types, {accepted} accepted"
        if min(timed) < len(scenario.wanted):
            shape += (f"; p50 over the first {min(timed)}-{max(timed)} requests of the sequence "
                      f"(each repetition stops once {LARGE_BUDGET:g} s are spent)")
        figures.append(Figure(
            SUITE, f"reserve_now p50, {n} EVSEs", "ms", mine, baseline, samples,
            higher_is_better=False, limit=1.0 if n == TARGET_SIZE else None,
            note=where + shape + " (ReservationCore.apply, no wire)",
            params={"evses": n, "series": "apply"}))
        figures.append(Figure(
            SUITE, f"guarantee_holds p50, {n} EVSEs", "ms", bare, baseline, samples,
            higher_is_better=False, params={"evses": n, "series": "guarantee_holds"}))
    return figures
