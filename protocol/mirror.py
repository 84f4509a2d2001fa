"""The Clone pattern's decisions (the ZeroMQ guide's snapshot + seq), without
sockets: `Mirror` keeps a copy of get_state's result current from the update
stream and says when to take a new snapshot. `Watcher` (protocol.client) and
`AsyncWatcher` (protocol.aio) feed it and do the I/O it asks for.
"""

from __future__ import annotations

import time
from typing import Any, Generator

from .vocabulary import ReservationUpdateStatus, Topic
from .wire import decode_update

RESYNC = "resync"   # Watcher.poll's entry for "the state was replaced by a new snapshot"
SNAPSHOT, WAIT, RECEIVE = "snapshot", "wait", "receive"   # what Mirror.poll asks its driver for
MAX_UPDATES_PER_POLL = 1000   # so that a flood cannot keep one poll from returning


class Mirror:
    """The Clone pattern's decisions, without sockets: Watcher and AsyncWatcher
    feed it what they receive and do the I/O it asks for.

    `state` is a copy of get_state's result (None until the first snapshot).
    `receive` applies an update that follows `seq` and ignores one already in
    the snapshot; anything else (a gap, a topic it cannot apply) makes it
    `stale`: the owner then takes get_state and hands it to `replace`. After
    `check_every` seconds without an update applied, `check_due` says to
    compare the actor's seq with ours, because a loss at the tail of a burst
    shows no gap until the next update, and an actor restarted without its
    history (a ':memory:' store) counts seq from 0 again: its updates look
    like ones already in the snapshot, so they must not count as heard."""

    def __init__(self, check_every: float | None) -> None:
        self.state: dict[str, Any] | None = None
        self.stale = True
        self.resyncs = 0
        self.check_every = check_every
        self._last_heard = time.monotonic()

    def check_due(self) -> bool:
        if self.check_every is None or time.monotonic() - self._last_heard < self.check_every:
            return False
        self._last_heard = time.monotonic()
        return True

    def receive(self, topic: str, body: dict[str, Any]) -> bool:
        """True when `body` was applied to state; False when it was not (already
        in the snapshot, or `stale` is now set)."""
        seq = body["seq"]
        if seq <= self.state["seq"]:
            return False
        if seq == self.state["seq"] + 1 and self._apply(topic, body):
            self.state["seq"] = seq
            self._last_heard = time.monotonic()
            return True
        self.stale = True
        return False

    def replace(self, snapshot: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Take `snapshot` as the state; the entry a poll reports for it."""
        if self.state is not None:
            self.resyncs += 1
        self.state = snapshot
        self.stale = False
        self._last_heard = time.monotonic()
        return RESYNC, {"seq": snapshot["seq"]}

    def differs(self, snapshot: dict[str, Any]) -> bool:
        # Higher: the updates we lack were dropped. Lower: the actor restarted
        # without its history. Either way the snapshot is the truth.
        return snapshot["seq"] != self.state["seq"]

    def poll(self, timeout: float) -> Generator[tuple, Any, list[tuple[str, dict[str, Any]]]]:
        """One Watcher.poll as a generator of the I/O it needs, so the sync and
        the asyncio watcher share every decision and differ only in how they
        wait. It yields (SNAPSHOT,) for a get_state result, (WAIT, ms) for
        whether an update arrived within ms, (RECEIVE,) for the next update's
        frames or None; it returns what the poll applied, in order."""
        applied: list[tuple[str, dict[str, Any]]] = []
        if self.stale:
            applied.append(self.replace((yield (SNAPSHOT,))))
        if (yield (WAIT, int(timeout * 1000))):
            for _ in range(MAX_UPDATES_PER_POLL):
                frames = yield (RECEIVE,)
                if frames is None:
                    break
                topic, body = decode_update(frames)
                if self.receive(topic, body):
                    applied.append((topic, body))
                elif self.stale:
                    applied.append(self.replace((yield (SNAPSHOT,))))
        if self.check_due():
            snapshot = yield (SNAPSHOT,)
            if self.differs(snapshot):
                applied.append(self.replace(snapshot))
        return applied

    def _apply(self, topic: str, body: dict[str, Any]) -> bool:
        """Change `state` as the actor did when it published `body`; False when
        this client cannot (a topic it does not know)."""
        if topic == Topic.RESERVATION_UPDATE:
            rid = body["reservation_id"]
            kept = [r for r in self.state["reservations"] if r["reservation_id"] != rid]
            if body["reservation_status"] == ReservationUpdateStatus.PLACED:
                # The actor lists reservations oldest first; a replacement is the newest.
                kept.append(body["reservation"])
            self.state["reservations"] = kept
            return True
        if topic in (Topic.EVSE_RESERVED, Topic.EVSE_STATE):
            evse = next((e for e in self.state["evses"] if e["id"] == body["evse_id"]), None)
            if evse is None:
                return False   # not in our snapshot's station: take a new one
            fields = (("reserved", "reservation_id", "held_for_non_evse_specific")
                      if topic == Topic.EVSE_RESERVED
                      else ("plugged_in", "connectors"))
            evse.update((key, body[key]) for key in fields)
            return True
        return False
