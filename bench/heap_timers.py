"""The usual Python answer to "many timers": a binary heap with lazy deletion.

This is the baseline the timer wheel (actor/wheel.py) is measured against. It
is the recipe from the `heapq` documentation: the heap holds [deadline, seq,
key] entries, a dict maps each armed key to its entry, and cancelling marks
the entry dead instead of removing it from the heap (removal from the middle
of a heap is O(n)). Dead entries ("tombstones") are dropped only when they
reach the top, i.e. once their deadline has passed, so a timer that is
cancelled long before it is due keeps its entry in memory until then.

Same interface as TimerWheel: schedule / cancel / advance / next_expiry.
Deadlines fire exactly (no tick): advance(now) returns every key whose
deadline is <= now, in deadline order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable

_DEAD = object()   # the key slot of a cancelled entry


class HeapTimers:
    __slots__ = ("_heap", "_entries", "_seq", "_now")

    def __init__(self, now: float = 0.0) -> None:
        self._heap: list[list] = []
        self._entries: dict[Hashable, list] = {}
        self._seq = itertools.count()
        self._now = now

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    @property
    def heap_size(self) -> int:
        """Entries in the heap, tombstones included."""
        return len(self._heap)

    def schedule(self, key: Hashable, deadline: float) -> None:
        old = self._entries.get(key)
        if old is not None:
            old[2] = _DEAD
        entry = [deadline, next(self._seq), key]
        self._entries[key] = entry
        heapq.heappush(self._heap, entry)

    def cancel(self, key: Hashable) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        entry[2] = _DEAD
        return True

    def advance(self, now: float) -> list:
        if now < self._now:
            return []
        self._now = now
        heap = self._heap
        fired = []
        while heap and heap[0][0] <= now:
            key = heapq.heappop(heap)[2]
            if key is not _DEAD:
                del self._entries[key]
                fired.append(key)
        return fired

    def next_expiry(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2] is _DEAD:
            heapq.heappop(heap)
        if not heap:
            return None
        return max(self._now, heap[0][0])
