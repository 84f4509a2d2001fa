"""The retry schedule of the actor's own unstored changes (actor/retry.py) and the
poll timeout the loop computes from it, on plain numbers. That the running actor
follows them is tested on a full disk (test_failures.py) and across restarts
(test_lifecycle*.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actor.retry import RETRY_CAP, RETRY_FIRST, STILL_FAILING_EVERY, CommitRetry, Note
from actor.server import MAX_SLEEP_MS, poll_ms

NOW = 1_800_000_000.0


def test_a_healthy_store_takes_held_back_changes_at_once():
    retry = CommitRetry()
    assert retry.due(NOW)
    # A finite time, the current one: start-up's own changes wait for nothing.
    assert retry.next_attempt(NOW) == NOW
    assert poll_ms(retry.next_attempt(NOW), NOW) == 0


def test_failures_back_off_from_the_first_delay_doubling_to_the_cap():
    retry = CommitRetry()
    waits = []
    now = NOW
    for _ in range(10):
        retry.failed(now)
        waits.append(retry.next_attempt(now) - now)
        assert not retry.due(now)
        now = retry.next_attempt(now)
        assert retry.due(now)
    assert waits == pytest.approx([RETRY_FIRST * 2 ** n for n in range(6)] + [RETRY_CAP] * 4)


def test_a_full_disk_for_days_keeps_the_cap_instead_of_overflowing():
    retry = CommitRetry()
    now = NOW
    for _ in range(100_000):     # about six days of retries every RETRY_CAP seconds
        retry.failed(now)
        now = retry.next_attempt(now)
    assert retry.failures == 100_000
    retry.failed(now)
    assert retry.next_attempt(now) - now == pytest.approx(RETRY_CAP)


def test_the_log_notes_the_start_every_still_failing_period_and_the_recovery():
    retry = CommitRetry()
    assert retry.failed(NOW) is Note.FAILING
    notes = [retry.failed(NOW + t) for t in (1, 10, STILL_FAILING_EVERY - 1, STILL_FAILING_EVERY,
                                             STILL_FAILING_EVERY + 5, 2 * STILL_FAILING_EVERY)]
    assert notes == [None, None, None, Note.STILL_FAILING, None, Note.STILL_FAILING]
    assert retry.failures == 7
    assert retry.recovered() == 7
    assert retry.recovered() == 0      # nothing more to note
    assert retry.due(NOW)
    # The next run of failures starts over: noted at once, first delay again.
    assert retry.failed(NOW + 100) is Note.FAILING
    assert retry.next_attempt(NOW + 100) == pytest.approx(NOW + 100 + RETRY_FIRST)


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
def test_a_wall_clock_step_makes_the_retry_due_now_and_does_not_silence_the_log(step):
    retry = CommitRetry()
    retry.failed(NOW)
    for _ in range(8):
        retry.failed(retry.next_attempt(NOW))
    stepped = NOW + step
    retry.rebase(stepped)
    assert retry.next_attempt(stepped) <= stepped
    assert retry.due(stepped)
    # Stepped back an hour, the "still failing" line is still at most a period away.
    assert retry.failed(stepped + STILL_FAILING_EVERY) is Note.STILL_FAILING


def test_rebase_of_a_healthy_schedule_keeps_it_healthy():
    retry = CommitRetry()
    retry.rebase(NOW - 3600)
    assert retry.due(NOW) and retry.next_attempt(NOW) == NOW and retry.recovered() == 0


@pytest.mark.parametrize("deadline, expected", [
    (NOW, 0),                        # due now
    (NOW - 2.0, 0),                  # in the past: expired while the actor was down
    (NOW - 1e9, 0),                  # the clock stepped far forward
    (NOW + 0.0004, 1),               # never 0 before it is due: that would spin
    (NOW + 0.25, 250),
    (NOW + 30 * 86400, MAX_SLEEP_MS),    # beyond a C int of milliseconds
    (-math.inf, 0), (math.inf, MAX_SLEEP_MS), (math.nan, 0),
])
def test_the_poll_timeout_is_defined_for_every_deadline(deadline, expected):
    assert poll_ms(deadline, NOW) == expected


@given(st.floats(allow_nan=True, allow_infinity=True),
       st.floats(allow_nan=True, allow_infinity=True))
def test_the_poll_timeout_is_total_over_every_pair_of_floats(deadline, now):
    timeout = poll_ms(deadline, now)
    assert isinstance(timeout, int) and 0 <= timeout <= MAX_SLEEP_MS
    if deadline - now > 0:
        assert timeout > 0
