"""Hierarchical timing wheel: the actor's expiry timer.

Theory of operation
-------------------
Time is kept in integer ticks. Each float is converted exactly once, deadlines
rounding up (ceil(deadline / tick)) and the clock rounding down
(floor(now / tick)), and both are taken relative to the tick of the
constructor's `now`, so epoch-sized floats never enter the bookkeeping and the
tick numbers stay small. `cur` is the tick of the latest advance().

Levels. There are _LEVELS levels of 64 slots; level L slot s stands for the
ticks whose 6-bit digit L is s. A timer due at tick e > cur is filed at the
level of the highest digit in which e differs from cur (the bit length of
e ^ cur), in the slot named by e's digit at that level. So a level-L timer
shares all higher digits with cur and has a larger digit L: at every level the
slots at or below cur's digit are empty, and the occupied ones lie after cur
inside cur's current block of 64**(L+1) ticks.

Cascading. When cur reaches the first tick of a level-L slot, its timers now
also share digit L with cur and are re-filed one level down or lower (those
due at that very tick go to the current slot, below). A timer moves at most
_LEVELS times in its life and a cancelled one never moves, so advance() does
no work per elapsed tick and touches a timer only to move or fire it.

Bitmap. One int has bit 64*L + s set exactly when level L slot s is occupied.
Level-L slots all lie before the end of the current 64**(L+1) block, which is
no later than the first tick of any level-(L+1) slot, so bit order is time
order: the lowest set bit (bits & -bits) is the next thing that happens, be it
a firing (level 0) or a cascade. advance() hops from one such event to the
next, however long the gap, and next_expiry() reads it off without a scan.

Current slot. Level-0 slot `cur % 64` holds timers that are due but not yet
returned: scheduled in the past, or whose deadline lies a few ulps after `now`
inside the tick advance() stopped at (float division can round both to the same
tick), which is why only the final tick of an advance compares deadlines.

Overflow. A timer that differs from cur above the top level waits in one extra
bucket (bit 64 * _LEVELS) and is re-filed at the start of every block of
64**_LEVELS ticks (2**48 ticks: 89,000 years at 10 ms), so it is clamped,
never fired early and never lost.
"""

from __future__ import annotations

from collections.abc import Hashable
from math import ceil, floor, inf, isfinite, nextafter

_DIGIT = 6
_SLOTS = 1 << _DIGIT
_MASK = _SLOTS - 1
_LEVELS = 8
_SPAN = _LEVELS * _DIGIT
_OVERFLOW = _LEVELS * _SLOTS  # slot index of the overflow bucket

_BIT = [1 << i for i in range(_OVERFLOW + 1)]
# The tick at which occupied slot i must be fired or cascaded is
# (cur & _ALIGN[i]) + _OFFSET[i]: cur's block at that level, plus the slot's
# place in it; for the overflow bucket, the start of the next block.
_ALIGN = [~((1 << (_DIGIT * (i // _SLOTS + 1))) - 1) for i in range(_OVERFLOW)] + [~((1 << _SPAN) - 1)]
_OFFSET = [(i % _SLOTS) << (_DIGIT * (i // _SLOTS)) for i in range(_OVERFLOW)] + [1 << _SPAN]
# By bit length n of (e ^ cur), 1 <= n <= _SPAN: the shift of e's digit at
# that level and the index of the level's first slot.
_SHIFT = [0] + [(n - 1) // _DIGIT * _DIGIT for n in range(1, _SPAN + 1)]
_BASE = [0] + [(n - 1) // _DIGIT * _SLOTS for n in range(1, _SPAN + 1)]


def _slot_of(e: int, cur: int) -> int:
    if e <= cur:
        return cur & _MASK
    n = (e ^ cur).bit_length()
    if n > _SPAN:
        return _OVERFLOW
    return _BASE[n] | ((e >> _SHIFT[n]) & _MASK)


class TimerWheel:
    """Timers keyed by any hashable, each firing once at a float deadline.

    A key is never returned before its deadline, and is returned by the first
    advance(now) whose tick floor(now / tick) has reached ceil(deadline / tick):
    at most one tick late.
    """

    __slots__ = ("_tick", "_origin", "_now", "_cur", "_bits", "_slots", "_where")

    def __init__(self, tick: float = 0.01, now: float = 0.0) -> None:
        if not (tick > 0 and isfinite(tick)):
            raise ValueError(f"tick must be a positive number of seconds, not {tick!r}")
        self._tick = tick
        self._origin = floor(now / tick)  # ValueError/OverflowError for nan/inf
        self._now = now
        self._cur = 0
        self._bits = 0
        self._slots: list[dict[Hashable, float]] = [{} for _ in range(_OVERFLOW + 1)]
        self._where: dict[Hashable, int] = {}  # key -> slot index

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._where

    def schedule(self, key: Hashable, deadline: float) -> None:
        """Arm `key` to fire at `deadline` (finite), replacing any earlier
        arming; a deadline already past fires on the next advance()."""
        e = ceil(deadline / self._tick) - self._origin
        # _slot_of, inlined: this is the hottest call.
        cur = self._cur
        if e <= cur:
            index = cur & _MASK
        else:
            n = (e ^ cur).bit_length()
            index = _OVERFLOW if n > _SPAN else _BASE[n] | ((e >> _SHIFT[n]) & _MASK)
        slots = self._slots
        slot = slots[index]
        if not slot:
            self._bits |= _BIT[index]
        slot[key] = deadline
        # One dict probe for a new key; a re-armed one also leaves its old slot.
        where = self._where
        old = where.setdefault(key, index)
        if old != index:
            where[key] = index
            slot = slots[old]
            del slot[key]
            if not slot:
                slot.clear()  # see cancel()
                self._bits ^= _BIT[old]

    def cancel(self, key: Hashable) -> bool:
        """Disarm `key`; True if it was armed."""
        index = self._where.pop(key, None)
        if index is None:
            return False
        slot = self._slots[index]
        del slot[key]
        if not slot:
            slot.clear()  # a dict keeps its grown table until cleared
            self._bits ^= _BIT[index]
        return True

    def advance(self, now: float) -> list:
        """Move to `now` and return the keys that came due, by deadline.

        A `now` before the previous one returns [] and changes nothing.
        """
        if now < self._now:
            return []
        target = floor(now / self._tick) - self._origin
        self._now = now
        fired: list = []
        bits = self._bits
        cur = self._cur
        slots = self._slots
        where = self._where
        while bits:
            low = bits & -bits
            index = low.bit_length() - 1
            t = (cur & _ALIGN[index]) + _OFFSET[index]
            if t > target:
                break
            cur = t
            if index < _SLOTS:
                slot = slots[index]
                keys = sorted(slot, key=slot.__getitem__) if len(slot) > 1 else list(slot)
                if t == target:
                    # A deadline in an earlier tick is before `now` (float
                    # division is monotonic); in this one it may be a few ulps
                    # after `now` yet have divided to the same tick.
                    while keys and slot[keys[-1]] > now:
                        keys.pop()
                for key in keys:
                    del where[key]
                fired += keys
                if len(keys) < len(slot):
                    for key in keys:
                        del slot[key]
                    break  # the rest stays in the current slot
                slot.clear()
                bits ^= low
            else:
                bits ^= low
                moving = slots[index]
                slots[index] = {}  # overflow timers may be filed right back here
                tick = self._tick
                origin = self._origin
                for key, deadline in moving.items():
                    new = _slot_of(ceil(deadline / tick) - origin, cur)
                    slot = slots[new]
                    if not slot:
                        bits |= _BIT[new]
                    slot[key] = deadline
                    where[key] = new
        self._bits = bits
        self._cur = target
        return fired

    def next_expiry(self) -> float | None:
        """None if nothing is armed, else the earliest time worth an advance().

        It is never before the current time nor after the tick in which the
        earliest deadline falls, and advance(next_expiry()) always makes
        progress: it fires something or moves next_expiry() later. It may
        precede the first firing by a cascade, so callers just poll again.
        (The tick bounds need tick numbers below 2**53, where float division
        still tells ticks apart: epoch seconds at 1 us ticks are 1.8e15.)
        """
        bits = self._bits
        if not bits:
            return None
        index = (bits & -bits).bit_length() - 1
        cur = self._cur
        if index == cur & _MASK:
            return max(self._now, min(self._slots[index].values()))
        tick = self._tick
        t = (cur & _ALIGN[index]) + _OFFSET[index] + self._origin
        # The first float whose tick is t: t * tick can round to just below it.
        x = t * tick
        while floor(x / tick) < t:
            x = nextafter(x, inf)
        return x
