"""When the actor retries storing its own changes after the store refused them.

What the actor changes on its own (an expiry; what start-up or a reload ended)
cannot be refused like a client's write, so after a failed commit it is held
back and tried again: RETRY_FIRST seconds later, doubling to RETRY_CAP, so a
full disk costs no CPU. The failure is worth a log line when it starts, every
STILL_FAILING_EVERY seconds while it lasts, and when it ends.

Sans-I/O: every method takes the current time; nothing here sleeps, reads a
clock or logs. Every time it holds is a plain finite number, so whatever
computes a wait from it never meets an infinity.
"""

from __future__ import annotations

import enum

RETRY_FIRST, RETRY_CAP = 0.1, 5.0   # seconds between retries of a held-back commit
STILL_FAILING_EVERY = 30.0          # seconds between "still failing" log lines


class Note(enum.Enum):
    """What a failed commit is worth saying in the log."""

    FAILING = "failing"                 # the first of a run of failures
    STILL_FAILING = "still failing"     # STILL_FAILING_EVERY seconds since the last note


class CommitRetry:
    """The retry schedule of the actor's own unstored changes."""

    __slots__ = ("failures", "_delay", "_next_attempt", "_noted_at")

    def __init__(self) -> None:
        self.failures = 0            # failed commits in a row; 0 while the store is healthy
        self._delay = 0.0            # the wait after the latest failure
        self._next_attempt = 0.0     # read only while failures > 0
        self._noted_at = 0.0         # when the latest note was due; only while failures > 0

    def next_attempt(self, now: float) -> float:
        """When held-back changes are to be committed: `now` while the store is healthy."""
        return self._next_attempt if self.failures else now

    def due(self, now: float) -> bool:
        return not self.failures or now >= self._next_attempt

    def failed(self, now: float) -> Note | None:
        """A commit failed at `now`: back off, and say whether to log it."""
        self.failures += 1
        # Doubled and capped step by step: 2 ** failures would overflow a float
        # after an hour and a half of full disk.
        self._delay = RETRY_FIRST if self.failures == 1 else min(RETRY_CAP, self._delay * 2)
        self._next_attempt = now + self._delay
        if self.failures == 1:
            self._noted_at = now
            return Note.FAILING
        if now - self._noted_at >= STILL_FAILING_EVERY:
            self._noted_at = now
            return Note.STILL_FAILING
        return None

    def recovered(self) -> int:
        """A commit succeeded: how many had failed in a row before it (0: nothing to log)."""
        failures, self.failures = self.failures, 0
        return failures

    def rebase(self, now: float) -> None:
        """The wall clock stepped to `now`: a retry or a note scheduled against
        the old time would wait for as long as the step, so both are due now."""
        self._next_attempt = min(self._next_attempt, now)
        self._noted_at = min(self._noted_at, now)
