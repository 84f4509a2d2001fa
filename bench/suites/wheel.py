"""Suite `wheel`: the actor's timer wheel against a heapq with lazy deletion.

Both structures get the same keys and deadlines (reservation expiries drawn
uniformly from 60 to 900 s ahead, the usual reservation horizon) with the
garbage collector on, as in the actor.

* schedule / cancel / expire ops/s at growing numbers of armed timers. One
  repetition: arm N timers (schedule), cancel a random 10% of them (cancel),
  then advance in 1 s steps until up to 100,000 timers have fired (expire; at
  1M that is the first ~11% of the span, with ~900k still armed). At 1k the
  work is repeated on 50 separate structures so a repetition is not a
  fraction of a millisecond.
* peak memory (tracemalloc) while arming the N timers: everything the
  structure allocates; keys and deadline floats exist beforehand and are not
  counted.
* the realistic mix: a stream of reservations, each armed at now + U(60, 900) s,
  90% cancelled (or used) at a uniform time before they are due; simulated
  time advances in 10 ms steps (the actor's tick) with one advance() per
  step. ops/s counts schedule + cancel + advance calls. Memory is what the
  structure holds at the end (sys.getsizeof over what it reaches): the
  lazy heap still holds a tombstone for every cancelled timer whose deadline
  has not yet passed, the wheel only the armed ones.
"""

from __future__ import annotations

import gc
import random
import sys
import time
import tracemalloc

from actor.wheel import TimerWheel
from bench.common import Context, Figure
from bench.heap_timers import HeapTimers

SUITE = "wheel"
TICK = 0.01
HORIZON = (60.0, 900.0)
CANCEL_SHARE = 0.1      # of the armed timers, in the size sweep
EXPIRE_CAP = 100_000    # timers fired per repetition in the size sweep
MIX_CANCELLED = 0.9

STRUCTURES = {
    "wheel": lambda: TimerWheel(TICK, 0.0),
    "heap": lambda: HeapTimers(0.0),
}
BASELINE = "heapq + lazy deletion"


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


# -- the size sweep ------------------------------------------------------------------

def _workload(n: int, seed: int) -> tuple[list[int], list[float], list[int]]:
    rng = random.Random(seed)
    keys = list(range(1, n + 1))
    deadlines = [rng.uniform(*HORIZON) for _ in keys]
    cancelled = rng.sample(keys, max(1, int(n * CANCEL_SHARE)))
    return keys, deadlines, cancelled


def _one_rep(make, keys, deadlines, cancelled, rounds: int) -> tuple[float, float, float]:
    """(schedule, cancel, expire) ops/s over `rounds` structures of len(keys) timers."""
    gc.collect()
    timers = [make() for _ in range(rounds)]
    start = time.perf_counter()
    for t in timers:
        schedule = t.schedule
        for key, deadline in zip(keys, deadlines):
            schedule(key, deadline)
    t_schedule = time.perf_counter() - start
    start = time.perf_counter()
    for t in timers:
        cancel = t.cancel
        for key in cancelled:
            cancel(key)
    t_cancel = time.perf_counter() - start
    fired = 0
    start = time.perf_counter()
    for t in timers:
        now, count = HORIZON[0], 0
        while count < EXPIRE_CAP and now <= HORIZON[1] + 1:
            count += len(t.advance(now))
            now += 1.0
        fired += count
    t_expire = time.perf_counter() - start
    del timers
    return (rounds * len(keys) / t_schedule, rounds * len(cancelled) / t_cancel,
            fired / t_expire)


def _armed_peak(make, keys, deadlines) -> float:
    """Peak bytes allocated while arming one structure with every key (MiB)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        t = make()
        schedule = t.schedule
        for key, deadline in zip(keys, deadlines):
            schedule(key, deadline)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del t
    return peak / 2 ** 20


# -- the realistic mix -----------------------------------------------------------------

class _Mix:
    """A precomputed stream: per 10 ms step, the timers armed and those cancelled."""

    def __init__(self, per_step: int, seconds: float, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.steps = int(seconds / TICK)
        self.arm: list[list[tuple[int, float]]] = [[] for _ in range(self.steps)]
        self.cancel: list[list[int]] = [[] for _ in range(self.steps)]
        key = 0
        for step in range(self.steps):
            now = step * TICK
            for _ in range(per_step):
                key += 1
                deadline = now + rng.uniform(*HORIZON)
                self.arm[step].append((key, deadline))
                if rng.random() < MIX_CANCELLED:
                    at = int(rng.uniform(now, deadline) / TICK) + 1
                    if at < self.steps:
                        self.cancel[at].append(key)
        self.ops = self.steps + sum(map(len, self.arm)) + sum(map(len, self.cancel))

    def run(self, timers, every: int = 0, probe=None) -> None:
        """Play the stream into `timers`; with `probe`, call it every `every` steps."""
        schedule, cancel, advance = timers.schedule, timers.cancel, timers.advance
        for step in range(self.steps):
            for key, deadline in self.arm[step]:
                schedule(key, deadline)
            for key in self.cancel[step]:
                cancel(key)
            advance(step * TICK)
            if probe is not None and (step + 1) % every == 0:
                probe(step + 1)

    def owned(self) -> set[int]:
        """ids of the objects the stream owns (keys, deadlines): not the structures'."""
        return {id(x) for step in self.arm for pair in step for x in pair}


def retained_bytes(root, shared: set[int]) -> int:
    """Bytes held by `root` and everything it reaches (sys.getsizeof of each
    object once), leaving out the objects in `shared` and Python's cached
    small ints. Exact for structures built of dicts, lists and slotted objects."""
    seen = set(shared)
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        kind = type(obj)
        if kind is int and -5 <= obj <= 256:
            continue
        total += sys.getsizeof(obj)
        if kind is dict:
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif kind is list or kind is tuple:
            stack.extend(obj)
        else:
            for name in getattr(kind, "__slots__", ()):
                stack.append(getattr(obj, name))
    return total


def _mix_rate(mix: _Mix, make, shared: set[int], curve: list | None = None,
              points: int = 6) -> tuple[float, float, int, int]:
    """(ops/s, KiB held at the end, armed timers at the end, heap entries or armed).
    With `curve`, also append (simulated s, KiB held, armed) at `points` moments;
    the time spent measuring them is left out of the rate."""
    gc.collect()
    timers = make()
    paused = 0.0

    def probe(step: int) -> None:
        nonlocal paused
        start = time.perf_counter()
        curve.append((round(step * TICK), round(retained_bytes(timers, shared) / 1024),
                      len(timers)))
        paused += time.perf_counter() - start

    start = time.perf_counter()
    if curve is None:
        mix.run(timers)
    else:
        mix.run(timers, mix.steps // points, probe)
    rate = mix.ops / (time.perf_counter() - start - paused)
    entries = timers.heap_size if isinstance(timers, HeapTimers) else len(timers)
    return rate, retained_bytes(timers, shared) / 1024, len(timers), entries


# -- the suite -------------------------------------------------------------------------

def run(ctx: Context) -> list[Figure]:
    figures: list[Figure] = []
    sizes = (1_000, 100_000) if ctx.quick else (1_000, 100_000, 1_000_000)
    for n in sizes:
        reps = ctx.reps(3 if n >= 1_000_000 else 5)
        rounds = max(1, 50_000 // n)
        keys, deadlines, cancelled = _workload(n, seed=n)
        rates = {name: [] for name in STRUCTURES}
        memory = {name: [] for name in STRUCTURES}
        for rep in range(reps):
            ctx.progress(f"wheel: {_label(n)} armed timers, repetition {rep + 1}/{reps}")
            # Alternate which goes first so neither always gets the warmer machine.
            order = list(STRUCTURES) if rep % 2 == 0 else list(reversed(STRUCTURES))
            for name in order:
                rates[name].append(_one_rep(STRUCTURES[name], keys, deadlines, cancelled, rounds))
                memory[name].append(_armed_peak(STRUCTURES[name], keys, deadlines))
        label = _label(n)
        params = {"timers": n}
        for i, (op, what) in enumerate((
                ("schedule", f"arming {n:,} timers"),
                ("cancel", f"cancelling a random {CANCEL_SHARE:.0%} of {n:,} armed"),
                ("expire", f"advancing in 1 s steps until {min(EXPIRE_CAP, int(n * 0.9)):,} "
                           f"fired of {n:,} armed"))):
            figures.append(Figure(
                SUITE, f"{op} ops/s, {label} armed", "ops/s",
                [r[i] for r in rates["wheel"]], BASELINE, [r[i] for r in rates["heap"]],
                higher_is_better=True, note=what if n == sizes[0] else "",
                params={**params, "op": op}))
        figures.append(Figure(
            SUITE, f"peak memory arming {label}", "MiB", memory["wheel"], BASELINE,
            memory["heap"], higher_is_better=False,
            note="tracemalloc peak while arming; keys and deadlines not counted"
            if n == sizes[0] else "", params={**params, "op": "memory"}))

    per_step, seconds = (1, 1000.0) if ctx.quick else (2, 1200.0)
    ctx.progress(f"wheel: building the realistic mix ({per_step * 100}/s for {seconds:.0f} s)")
    mix = _Mix(per_step, seconds)
    shared = mix.owned()
    reps = ctx.reps()
    rates = {name: [] for name in STRUCTURES}
    held = {name: [] for name in STRUCTURES}
    shape = {}
    curves: dict[str, list] = {}
    for rep in range(reps):
        ctx.progress(f"wheel: realistic mix, repetition {rep + 1}/{reps}")
        order = list(STRUCTURES) if rep % 2 == 0 else list(reversed(STRUCTURES))
        for name in order:
            # The first repetition also records memory along the way.
            curve = curves.setdefault(name, []) if rep == 0 else None
            rate, kib, armed, entries = _mix_rate(mix, STRUCTURES[name], shared, curve)
            rates[name].append(rate)
            held[name].append(kib)
            shape[name] = (armed, entries)
    armed, tombstones = shape["heap"][0], shape["heap"][1] - shape["heap"][0]
    stream = (f"{per_step * 100} timers/s armed at now+U(60,900) s, {MIX_CANCELLED:.0%} "
              f"cancelled before due, {seconds:.0f} s simulated in 10 ms steps, "
              f"{mix.ops:,} ops")
    along = "; ".join(
        f"{name} " + ", ".join(f"{kib:,}" for _, kib, _ in curve) for name, curve in curves.items())
    figures.append(Figure(
        SUITE, "realistic mix ops/s", "ops/s", rates["wheel"], BASELINE, rates["heap"],
        higher_is_better=True, target=1.0, note=stream,
        params={"timers": armed, "op": "mix"}))
    figures.append(Figure(
        SUITE, "memory after the mix", "KiB", held["wheel"], BASELINE, held["heap"],
        higher_is_better=False, target=1.0,
        note=(f"retained bytes (getsizeof walk) at the end: {armed:,} timers armed; the wheel "
              f"holds only those, the heap also {tombstones:,} tombstones of cancelled timers "
              f"not yet due ({shape['heap'][1]:,} entries). KiB at "
              + "/".join(str(t) for t, _, _ in curves["wheel"]) + f" s: {along} "
              "(armed: " + ", ".join(f"{a:,}" for _, _, a in curves["wheel"]) + ")"),
        params={"timers": armed, "op": "mix memory",
                "curve": {name: [[t, kib] for t, kib, _ in curve] for name, curve in curves.items()}}))
    return figures
