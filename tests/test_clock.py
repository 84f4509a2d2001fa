"""Wall-clock steps (issue 5, "Time"): an expiry follows its absolute UTC deadline
even when the wall clock is stepped (NTP), and the monotonic clock measures the
time in between.

Nothing here sleeps or reads a real clock: UtcClock runs on injected wall and
monotonic callables, and the actor is an in-process Actor on tcp://127.0.0.1:*
whose turn() the test drives itself, with its own poller on the actor's ROUTER.
A turn is triggered by a ping, so it never waits for a deadline in real time.
"""

from __future__ import annotations

import time

import pytest
import zmq

import actor.server as server
from actor.config import Config, EvseConfig
from actor.clock import UtcClock
from actor.core import ReservationCore
from actor.server import Actor
from actor.store import MemoryStore
from protocol.client import Client, result_of
from protocol.messages import parse_command
from .helpers import rfc3339

T0 = 1_800_000_000.0    # 2027-01-15T08:00:00Z: the wall clock when each test starts
MONO0 = 5_000.0         # the monotonic clock then (any value: only differences count)
TICK = 0.01
HOUR = 3600.0
EVSES = 6



class FakeTime:
    """A monotonic clock the test advances, and a wall clock that follows it
    at an offset the test can step, plus a jitter the test can set."""

    def __init__(self) -> None:
        self.mono = MONO0
        self.offset = T0 - MONO0
        self.jitter = 0.0

    def wall(self) -> float:
        return self.mono + self.offset + self.jitter

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds

    def step(self, seconds: float) -> None:
        self.offset += seconds


# -- the clock alone ---------------------------------------------------------------------


def test_clock_runs_on_the_monotonic_clock_between_readings():
    fake = FakeTime()
    clock = UtcClock(wall=fake.wall, monotonic=fake.monotonic)
    assert clock() == T0
    for jitter in (0.4, -0.7, 0.999, -1.0, 1.0, 0.0):
        fake.advance(2.5)
        fake.jitter = jitter
        assert clock.stepped() == 0.0
        # UTC advanced by what the monotonic clock measured, not by the wall's jitter.
        assert clock() == T0 + (fake.mono - MONO0)


@pytest.mark.parametrize("jump", [HOUR, -HOUR, 1.001, -1.001])
def test_a_step_of_more_than_a_second_is_reported_once_and_reanchors(jump):
    fake = FakeTime()
    clock = UtcClock(wall=fake.wall, monotonic=fake.monotonic)
    fake.advance(10)
    fake.step(jump)
    assert clock() == T0 + 10                    # not noticed before stepped() looks
    assert clock.stepped() == pytest.approx(jump, abs=1e-6)
    assert clock() == fake.wall() == T0 + 10 + jump
    assert clock.stepped() == 0.0                # re-anchored: reported once
    fake.advance(5)
    assert clock() == T0 + 15 + jump


# -- the actor -----------------------------------------------------------------------------


class Rig:
    """An in-process actor on a fake clock, a DEALER client, and every update it published."""

    def __init__(self, context: zmq.Context) -> None:
        self.time = FakeTime()
        self.clock = UtcClock(wall=self.time.wall, monotonic=self.time.monotonic)
        config = Config(evses=tuple(EvseConfig(i, ((1, "cCCS2"),)) for i in range(1, EVSES + 1)),
                        command_endpoint="tcp://127.0.0.1:*", update_endpoint="tcp://127.0.0.1:*",
                        tick=TICK)
        self.store = MemoryStore()
        self.actor = Actor(config, self.store, context=context, clock=self.clock)
        self.actor.bind()
        self.poller = zmq.Poller()
        self.poller.register(self.actor.router, zmq.POLLIN)
        self.client = Client(self.actor.command_endpoint, context=context)
        self.published: list[tuple[str, dict]] = []
        publish = self.actor._publish

        def capture(updates):
            self.published.extend(updates)
            publish(updates)
        self.actor._publish = capture

    def close(self) -> None:
        self.client.close()
        self.actor.close()
        self.store.close()

    def call(self, cmd: str, args: dict | None = None):
        """Send one request and run actor turns until it has been decided; its result.
        (A turn's poll returns as soon as the request arrives.)"""
        self.client.send(cmd, args)
        handled = self.actor.requests
        deadline = time.monotonic() + 10
        while self.actor.requests == handled:
            assert time.monotonic() < deadline, "the actor never read the request"
            self.actor.turn(self.poller)
        return result_of(self.client.recv(timeout=5))

    def next_turn(self) -> None:
        assert self.call("ping") == "pong"

    def reserve(self, rid: int, evse: int, expiry: float) -> None:
        assert self.call("reserve_now", {"request": {
            "reservation_id": rid, "id_token": f"T{rid}", "evse_id": evse,
            "expiry_time": rfc3339(expiry)}}) == "Accepted"

    def live(self) -> list[int]:
        return sorted(r["reservation_id"] for r in self.call("get_state")["reservations"])

    def expired(self) -> list[int]:
        return [body["reservation_id"] for topic, body in self.published
                if topic == "reservation_update" and body["reservation_status"] == "Expired"]


@pytest.fixture
def rig(context):
    rig = Rig(context)
    yield rig
    rig.close()


def steps_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "wall clock stepped" in r.getMessage()]


def test_a_step_forward_expires_what_is_now_past_due_at_the_next_turn(rig, caplog):
    rig.reserve(1, 1, T0 + 600)
    rig.reserve(2, 2, T0 + HOUR - 0.25)
    rig.reserve(3, 3, T0 + HOUR + 0.5)
    rig.reserve(4, 4, T0 + 2 * HOUR)
    rig.time.step(HOUR)                          # the monotonic clock does not move
    rig.next_turn()
    assert steps_logged(caplog) == ["wall clock stepped by +3600.000 s; "
                                    "re-arming 4 expiries against UTC"]
    # Re-anchored on the new wall clock: UTC is now T0 + 1 h.
    assert rig.clock() == T0 + HOUR and rig.clock.stepped() == 0.0
    # What the new UTC time is past expired in that turn; the rest did not.
    assert rig.expired() == [1, 2]
    assert rig.live() == [3, 4]
    rig.time.advance(0.499)
    rig.next_turn()
    assert rig.expired() == [1, 2]
    rig.time.advance(0.001 + TICK)               # T0 + 1 h + 0.5 s, within one tick
    rig.next_turn()
    assert rig.expired() == [1, 2, 3]
    assert rig.live() == [4]
    assert len(steps_logged(caplog)) == 1


def test_an_idle_actor_notices_a_step_forward_within_its_longest_sleep(rig, monkeypatch):
    # Nothing arrives to wake it: only the cap on its poll makes it look at the wall
    # clock again before the old deadline (10 minutes of real time away, otherwise).
    assert server.MAX_SLEEP_MS <= 1000
    monkeypatch.setattr(server, "MAX_SLEEP_MS", 20)
    rig.reserve(1, 1, T0 + 600)
    rig.reserve(2, 2, T0 + 2 * HOUR)
    rig.time.step(HOUR)
    started = time.monotonic()
    rig.actor.turn(rig.poller)
    assert time.monotonic() - started < 5
    assert rig.expired() == [1]
    assert rig.live() == [2]


def test_a_step_backward_expires_nothing_early(rig, caplog):
    rig.reserve(1, 1, T0 + 30)
    rig.reserve(2, 2, T0 + 600)
    rig.time.advance(20)                         # UTC T0 + 20
    rig.next_turn()
    rig.time.step(-HOUR)                         # UTC T0 + 20 - 1 h
    rig.next_turn()
    assert steps_logged(caplog) == ["wall clock stepped by -3600.000 s; "
                                    "re-arming 2 expiries against UTC"]
    assert rig.clock() == T0 + 20 - HOUR
    # Placed after the step, due before the time the clock showed before it.
    rig.reserve(3, 3, T0 + 20 - HOUR + 60)
    # Walk the new clock up to each deadline: nothing goes before its UTC instant
    # (the old clock passes T0 + 30 and T0 + 600 ten seconds and ten minutes in).
    for rid, deadline in ((3, T0 + 20 - HOUR + 60), (1, T0 + 30), (2, T0 + 600)):
        before = rig.expired()
        while rig.clock() < deadline - 300:
            rig.time.advance(300)
            rig.next_turn()
            assert rig.expired() == before
        rig.time.advance(deadline - 0.001 - rig.clock())
        rig.next_turn()
        assert rig.expired() == before, f"reservation {rid} expired before {rfc3339(deadline)}"
        rig.time.advance(0.001 + TICK)           # its deadline, within one tick
        rig.next_turn()
        assert rig.expired() == before + [rid]
    assert rig.live() == []
    assert len(steps_logged(caplog)) == 1


def test_jitter_under_a_second_is_not_a_step(rig, caplog):
    rig.reserve(1, 1, T0 + 10)
    # The wall clock wobbles around the monotonic one; UTC follows the monotonic.
    for jitter in (0.3, -0.6, 0.9, -0.9, 0.5):
        rig.time.advance(1.5)
        rig.time.jitter = jitter
        rig.next_turn()
        assert rig.clock() == T0 + (rig.time.mono - MONO0)
    assert rig.clock() == T0 + 7.5 and rig.expired() == []
    rig.time.advance(2)
    rig.time.jitter = 0.9                        # the wall says T0 + 10.4: past the deadline
    rig.next_turn()
    assert rig.expired() == []                   # UTC says T0 + 9.5
    rig.time.advance(0.5)
    rig.time.jitter = -0.9                       # the wall says T0 + 9.1
    rig.next_turn()
    assert rig.expired() == [1]                  # UTC says T0 + 10: due
    assert steps_logged(caplog) == []


# -- why the wheel is re-armed ----------------------------------------------------------------


def test_without_the_rebase_a_step_backward_makes_expiries_an_hour_late_not_early():
    """The core alone, on the time a stepped clock gives it. Deadlines are absolute
    and the wheel ignores a time before the one it last saw, so a wheel left at the
    old time fires nothing early; instead a reservation placed after the step, due
    before the wheel's time, waits until the clock is back there: an hour late.
    rebase() puts the wheel at the new time."""
    def core_after_backward_step(rebase: bool) -> tuple[ReservationCore, float]:
        core = ReservationCore([(1, [(1, "cCCS2")]), (2, [(1, "cCCS2")])], tick=TICK, now=T0)
        reserve = parse_command("reserve_now", {"request": {
            "reservation_id": 1, "id_token": "A", "evse_id": 1, "expiry_time": rfc3339(T0 + 600)}})
        assert core.apply(reserve, T0).result == "Accepted"
        assert core.expire(T0 + 20) == []
        now = T0 + 20 - HOUR
        if rebase:
            core.rebase(now)
        reserve = parse_command("reserve_now", {"request": {
            "reservation_id": 2, "id_token": "B", "evse_id": 2, "expiry_time": rfc3339(now + 60)}})
        assert core.apply(reserve, now).result == "Accepted"
        return core, now

    def expired(updates) -> list[int]:
        return [body["reservation_id"] for topic, body in updates
                if topic == "reservation_update" and body["reservation_status"] == "Expired"]

    for rebase in (False, True):
        core, now = core_after_backward_step(rebase)
        # Nothing early either way.
        assert expired(core.expire(now + 59.99)) == []
        on_time = expired(core.expire(now + 60 + TICK))
        if rebase:
            assert on_time == [2]
        else:
            assert on_time == []                                   # late...
            assert expired(core.expire(now + HOUR - 1)) == []
            assert expired(core.expire(now + HOUR)) == [2]         # ...by an hour
        assert expired(core.expire(T0 + 600 - 0.001)) == []
        assert expired(core.expire(T0 + 600 + TICK)) == [1]
