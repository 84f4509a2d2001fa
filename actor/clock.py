"""The actor's clock: UTC epoch seconds that advance with the monotonic clock."""

from __future__ import annotations

import time
from typing import Callable


class UtcClock:
    """UTC epoch seconds that advance with the monotonic clock, so the time
    between two readings is never distorted by the wall clock moving.

    The wall clock still defines UTC: when it steps (NTP) by more than STEP
    seconds away from where the monotonic clock says it should be, stepped()
    reports the jump and re-anchors, and the actor re-arms the expiry wheel,
    because deadlines are absolute UTC instants."""

    STEP = 1.0

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._anchor()

    def _anchor(self) -> None:
        self._wall0 = self._wall()
        self._mono0 = self._monotonic()

    def __call__(self) -> float:
        return self._wall0 + (self._monotonic() - self._mono0)

    def stepped(self) -> float:
        """How far the wall clock jumped since the last reading (0.0 if it did not)."""
        jump = self._wall() - self()
        if abs(jump) <= self.STEP:
            return 0.0
        self._anchor()
        return jump
