"""TimerWheel against its contract. No clock: the wheel only sees the `now` given.

The rule tested, in the implementation's own integer ticks (float division,
rounded once): advance(now) returns exactly the armed keys with

    deadline <= now  and  ceil(deadline / tick) <= floor(now / tick)

The first clause is "never early". The second is "due once the tick holding
the deadline is reached", i.e. at most one tick late; it can only exclude a
key whose deadline is <= now when that deadline lies in the unfinished tick.
"""

import gc
import random
import sys
import tracemalloc
import weakref
from math import ceil, floor, inf, nextafter

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actor.wheel import _LEVELS, TimerWheel

T0 = 1.8e9  # epoch seconds, as the actor passes them


def is_due(deadline, now, tick):
    return deadline <= now and ceil(deadline / tick) <= floor(now / tick)


def assert_empty_inside(wheel):
    assert len(wheel) == 0
    assert wheel._bits == 0
    assert not wheel._where
    assert not any(wheel._slots)


# --- unit tests, one per contract point --------------------------------------

def test_past_deadline_fires_on_next_advance():
    wheel = TimerWheel(0.01, T0)
    wheel.schedule("late", T0 - 5.0)
    wheel.schedule("now", T0)
    wheel.schedule("later", T0 + 5.0)
    assert wheel.next_expiry() == T0
    assert wheel.advance(T0) == ["late", "now"]
    assert wheel.advance(T0 + 4.99) == []
    assert wheel.advance(T0 + 5.0) == ["later"]


def test_past_deadline_after_time_moved_on():
    wheel = TimerWheel(0.01, T0)
    wheel.advance(T0 + 100.0)
    wheel.schedule("a", T0 + 50.0)
    assert wheel.advance(T0 + 100.0) == ["a"]


def test_reschedule_replaces():
    wheel = TimerWheel(0.01, T0)
    wheel.schedule("a", T0 + 10.0)
    wheel.schedule("a", T0 + 20.0)  # later
    assert len(wheel) == 1
    assert wheel.advance(T0 + 15.0) == []
    assert wheel.advance(T0 + 20.0) == ["a"]

    wheel.schedule("b", T0 + 3600.0)
    wheel.schedule("b", T0 + 30.0)  # earlier, and on another level
    assert wheel.advance(T0 + 30.0) == ["b"]
    assert wheel.advance(T0 + 7200.0) == []
    assert_empty_inside(wheel)


def test_reschedule_within_the_same_slot():
    wheel = TimerWheel(0.01, T0)
    wheel.schedule("a", T0 + 1.001)
    wheel.schedule("a", T0 + 1.002)
    assert wheel.advance(T0 + 1.0015) == []
    assert wheel.advance(T0 + 1.01) == ["a"]


def test_cancel():
    wheel = TimerWheel(0.01, T0)
    wheel.schedule("a", T0 + 1.0)
    wheel.schedule("b", T0 + 1.0)
    assert wheel.cancel("a") is True
    assert wheel.cancel("a") is False
    assert wheel.cancel("never armed") is False
    assert "a" not in wheel and len(wheel) == 1
    assert wheel.advance(T0 + 10.0) == ["b"]
    assert wheel.cancel("b") is False  # fired timers are no longer armed


def test_cancel_of_an_overdue_timer():
    wheel = TimerWheel(0.01, T0)
    wheel.schedule("a", T0 - 1.0)
    assert wheel.cancel("a") is True
    assert wheel.advance(T0 + 1.0) == []
    assert wheel.next_expiry() is None


def test_never_early():
    wheel = TimerWheel(0.01, T0)
    deadline = T0 + 1.004  # inside a tick, not on its boundary
    wheel.schedule("a", deadline)
    now = deadline
    for _ in range(64):
        now = nextafter(now, -inf)
    while now < deadline:  # every representable time just before the deadline
        assert wheel.advance(now) == []
        now = nextafter(now, inf)
    assert "a" in wheel


def test_deadline_just_after_now_in_the_same_tick():
    # At epoch scale 1800000000.06 and the next float up both divide by 0.01
    # to exactly 180000000006.0: one tick, though the deadline is after now.
    tick = 0.01
    now = 1800000000.06
    deadline = nextafter(now, inf)
    assert now < deadline and floor(now / tick) == ceil(deadline / tick)
    wheel = TimerWheel(tick, T0)
    wheel.schedule("after", deadline)
    wheel.schedule("before", now - 0.005)  # same tick, due
    assert wheel.advance(now) == ["before"]
    assert wheel.next_expiry() == deadline
    assert wheel.advance(deadline) == ["after"]


def test_at_most_one_tick_late():
    tick = 0.25  # exact in binary, so tick boundaries are exact floats
    wheel = TimerWheel(tick, T0)
    wheel.schedule("a", T0 + 10.1)
    assert wheel.advance(T0 + 10.1) == []  # due, but in the unfinished tick
    assert wheel.advance(T0 + 10.2499) == []
    assert wheel.advance(T0 + 10.25) == ["a"]  # the boundary it rounds up to


def test_deadline_on_a_tick_boundary_fires_at_it():
    tick = 0.25
    wheel = TimerWheel(tick, T0)
    wheel.schedule("a", T0 + 10.0)
    assert wheel.advance(T0 + 9.99) == []
    assert wheel.advance(T0 + 10.0) == ["a"]


def test_order_by_deadline_across_and_within_ticks():
    rng = random.Random(7)
    wheel = TimerWheel(0.01, T0)
    deadlines = {i: T0 + rng.choice([1.0, 60.0, 3600.0]) + rng.random() * 0.01 for i in range(300)}
    for key, deadline in deadlines.items():
        wheel.schedule(key, deadline)
    fired = wheel.advance(T0 + 4000.0)
    assert fired == sorted(deadlines, key=deadlines.get)


def test_long_idle_gap_in_one_advance():
    # One hour at 10 ms is 360,000 ticks: all of it in one call.
    rng = random.Random(3)
    wheel = TimerWheel(0.01, T0)
    deadlines = {i: T0 + rng.uniform(0.0, 3600.0) for i in range(2000)}
    for key, deadline in deadlines.items():
        wheel.schedule(key, deadline)
    assert wheel.advance(T0 + 3600.0) == sorted(deadlines, key=deadlines.get)
    assert_empty_inside(wheel)


def test_idle_gap_of_years_at_fine_ticks():
    # 3e11 ticks: a wheel that stepped tick by tick would never get here.
    wheel = TimerWheel(0.001, T0)
    wheel.schedule("a", T0 + 10 * 365 * 86400.0)
    wheel.schedule("b", T0 + 20 * 365 * 86400.0)
    assert wheel.advance(T0 + 15 * 365 * 86400.0) == ["a"]
    assert wheel.advance(T0 + 25 * 365 * 86400.0) == ["b"]


def test_long_gap_is_crossed_in_few_polls():
    # Polling at next_expiry hops from occupied slot to occupied slot: one
    # cascade per level at most, whatever the number of ticks in between.
    wheel = TimerWheel(0.01, T0)
    deadline = T0 + 3600.0
    wheel.schedule("a", deadline)
    polls = 0
    fired = []
    while not fired:
        polls += 1
        t = wheel.next_expiry()
        assert t <= deadline
        fired = wheel.advance(t)
    assert fired == ["a"]
    assert polls <= _LEVELS + 1


def test_far_future_beyond_the_top_level():
    # 2**48 ticks at 1 s is 2.8e14 s; this deadline lies past it.
    wheel = TimerWheel(1.0, 0.0)
    deadline = 1e15 + 0.5
    wheel.schedule("far", deadline)
    wheel.schedule("absurd", 1e300)
    polls = 0
    while True:
        t = wheel.next_expiry()
        assert 0.0 <= t <= ceil(deadline)  # the deadline rounded up to its tick
        fired = wheel.advance(t)
        polls += 1
        if fired:
            break
        assert "far" in wheel
    assert fired == ["far"] and t == ceil(deadline)
    assert polls <= 4 + _LEVELS + 1  # 1e15 is about 3.6 top-level blocks
    assert wheel.advance(1e17) == []
    assert "absurd" in wheel and wheel.next_expiry() > 1e17


def test_far_future_at_epoch_scale():
    wheel = TimerWheel(0.01, T0)
    deadline = T0 + 1e13  # beyond 2**48 ticks of 10 ms (2.8e12 s)
    wheel.schedule("a", deadline)
    assert wheel.advance(deadline - 1.0) == []
    assert wheel.advance(deadline) == ["a"]


def test_advance_backwards_is_a_no_op():
    wheel = TimerWheel(0.01, T0)
    wheel.advance(T0 + 10.0)
    wheel.schedule("overdue", T0 + 5.0)
    wheel.schedule("future", T0 + 20.0)
    before = wheel.next_expiry()
    assert wheel.advance(T0 + 9.0) == []
    assert wheel.advance(T0) == []
    assert len(wheel) == 2 and wheel.next_expiry() == before
    assert wheel.advance(T0 + 10.0) == ["overdue"]
    assert wheel.advance(T0 + 20.0) == ["future"]


def test_len_and_contains():
    wheel = TimerWheel(0.01, T0)
    assert len(wheel) == 0 and "a" not in wheel
    wheel.schedule("a", T0 + 1.0)
    wheel.schedule(("b", 2), T0 + 2.0)
    wheel.schedule("a", T0 + 3.0)
    assert len(wheel) == 2 and "a" in wheel and ("b", 2) in wheel
    wheel.cancel("a")
    assert len(wheel) == 1 and "a" not in wheel
    wheel.advance(T0 + 2.0)
    assert len(wheel) == 0 and ("b", 2) not in wheel


def test_next_expiry():
    tick = 0.01
    wheel = TimerWheel(tick, T0)
    assert wheel.next_expiry() is None
    wheel.schedule("a", T0 + 0.005)
    assert T0 <= wheel.next_expiry() <= T0 + 0.01
    wheel.schedule("b", T0 + 100.0)
    wheel.cancel("a")
    t = wheel.next_expiry()
    assert T0 <= t <= T0 + 100.0
    wheel.cancel("b")
    assert wheel.next_expiry() is None


def test_cancelled_timers_free_their_memory():
    class Key:
        pass

    wheel = TimerWheel(0.01, T0)
    keys = [Key() for _ in range(2000)]
    refs = [weakref.ref(k) for k in keys]
    for i, key in enumerate(keys):
        wheel.schedule(key, T0 + 60.0 + (i % 2) * 7.3)  # two crowded slots
    for key in keys:
        assert wheel.cancel(key)
    del keys, key
    gc.collect()
    assert all(ref() is None for ref in refs)  # the wheel holds no reference
    assert_empty_inside(wheel)
    # Nor the hash tables the crowd grew: an emptied slot is a fresh dict.
    assert all(sys.getsizeof(slot) == sys.getsizeof({}) for slot in wheel._slots)


def test_memory_is_flat_under_schedule_cancel_churn():
    rng = random.Random(5)
    wheel = TimerWheel(0.01, T0)

    def churn(first, count):
        for key in range(first, first + count):
            wheel.schedule(key, T0 + rng.uniform(60.0, 3600.0))
            wheel.cancel(key - 10)

    tracemalloc.start()
    try:
        churn(0, 5_000)
        baseline = tracemalloc.get_traced_memory()[0]
        churn(5_000, 50_000)
        growth = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert len(wheel) == 10
    assert growth < 32 * 1024, growth  # a tombstoning heap would hold 50,000 entries


# --- property test against a dict oracle ------------------------------------

SMALL_STEP = st.one_of(st.just(0.0), st.floats(0.0, 0.02), st.floats(0.0, 1.0))
LARGE_STEP = st.one_of(st.floats(0.0, 1e3), st.floats(0.0, 1e6), st.floats(0.0, 1e10))
OFFSET = st.one_of(st.floats(-1e3, 0.0), st.floats(0.0, 1.0), st.floats(0.0, 1e4),
                   st.floats(0.0, 1e8), st.floats(0.0, 5e12))


class WheelAgainstOracle(RuleBasedStateMachine):
    """A dict of key -> deadline is the oracle. Tick numbers stay below 2**53
    (the limit of the float arithmetic both sides use), while deadlines still
    reach past the top level at these ticks."""

    @initialize(tick=st.sampled_from([0.001, 0.01, 0.25, 1.0]),
                start=st.sampled_from([0.0, 1234.5678, T0, T0 + 0.005]))
    def start(self, tick, start):
        self.tick = tick
        self.now = start
        self.wheel = TimerWheel(tick, start)
        self.oracle = {}

    def check_advance(self, now):
        fired = self.wheel.advance(now)
        expected = {k for k, d in self.oracle.items() if is_due(d, now, self.tick)}
        assert len(fired) == len(set(fired))
        assert set(fired) == expected
        deadlines = [self.oracle.pop(k) for k in fired]
        assert deadlines == sorted(deadlines)
        self.now = now
        return fired

    @rule(key=st.integers(0, 15), offset=OFFSET)
    def schedule(self, key, offset):
        self.wheel.schedule(key, self.now + offset)
        self.oracle[key] = self.now + offset

    @rule(key=st.integers(0, 15), ticks=st.integers(-3, 70_000))
    def schedule_on_a_tick_boundary(self, key, ticks):
        deadline = (floor(self.now / self.tick) + ticks) * self.tick
        self.wheel.schedule(key, deadline)
        self.oracle[key] = deadline

    @rule(key=st.integers(0, 15))
    def cancel(self, key):
        assert self.wheel.cancel(key) == (self.oracle.pop(key, None) is not None)

    @rule(step=SMALL_STEP)
    def advance_a_little(self, step):
        self.check_advance(self.now + step)

    @rule(step=LARGE_STEP)
    def advance_a_lot(self, step):
        self.check_advance(self.now + step)

    @rule()
    def advance_to_next_expiry(self):
        t = self.wheel.next_expiry()
        if t is not None:
            fired = self.check_advance(t)
            after = self.wheel.next_expiry()
            assert fired or after is None or after > t  # polling always progresses

    @rule(back=st.floats(1e-9, 1e6))
    def advance_backwards(self, back):
        earlier = min(self.now - back, nextafter(self.now, -inf))  # strictly earlier
        before = self.wheel.next_expiry()
        assert self.wheel.advance(earlier) == []
        assert self.wheel.next_expiry() == before

    @invariant()
    def same_keys(self):
        assert len(self.wheel) == len(self.oracle)
        assert all(k in self.wheel for k in self.oracle)

    @invariant()
    def next_expiry_is_not_late(self):
        t = self.wheel.next_expiry()
        if not self.oracle:
            assert t is None
            return
        # Not before now, and not after the tick the earliest deadline rounds
        # up to (or now's tick, if that deadline is already past).
        earliest = min(self.oracle.values())
        assert t >= self.now
        assert floor(t / self.tick) <= max(floor(self.now / self.tick), ceil(earliest / self.tick))


WheelAgainstOracle.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                                deadline=None)
TestWheelAgainstOracle = WheelAgainstOracle.TestCase
