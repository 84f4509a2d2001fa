"""What the core hands the store: its image at start-up (StoredState) and what
changed since the store last took it (Changes, kept by ChangeLog)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol.messages import Reservation
from protocol.vocabulary import ConnectorState

from .station import Evse


@dataclass
class StoredState:
    """The core's image as the store keeps it; restore() takes it over."""
    seq: int = 0
    reservations: list[Reservation] = field(default_factory=list)   # oldest first
    evses: dict[int, tuple[bool, dict[int, ConnectorState]]] = field(default_factory=dict)


@dataclass
class Changes:
    """What changed since the last take_changes(), for the store to write."""
    seq: int
    reservations: list[tuple[int, Reservation | None]]          # None: ended, delete it
    evses: list[tuple[int, bool, list[tuple[int, ConnectorState]]]]   # (id, plugged_in, states)


class ChangeLog:
    """The ids of the reservations and EVSEs changed since the last take().
    Dicts keep the order of the last change, which for reservations is
    placement order. `enabled` False: a store that keeps nothing, so the hot
    path does not pay for it."""

    def __init__(self, *, enabled: bool, seq: int) -> None:
        self.enabled = enabled
        self._reservations: dict[int, None] = {}
        self._evses: dict[int, None] = {}
        self._taken_seq = seq

    def reservation(self, reservation_id: int) -> None:
        if not self.enabled:
            return
        # Move to the end: the store numbers positions in this order.
        self._reservations.pop(reservation_id, None)
        self._reservations[reservation_id] = None

    def evse(self, evse_id: int) -> None:
        if self.enabled:
            self._evses[evse_id] = None

    def save(self) -> dict[int, None]:
        """The changed reservations as they are now, for put_back()."""
        return self._reservations.copy()

    def put_back(self, saved: dict[int, None]) -> None:
        self._reservations = saved

    def take(self, seq: int, reservations: Mapping[int, Reservation],
             evses: Mapping[int, Evse]) -> Changes | None:
        """What changed, read from the current `reservations` and `evses`; None
        when nothing did (seq included)."""
        if not self.enabled:
            return None
        if not self._reservations and not self._evses and seq == self._taken_seq:
            return None
        changes = Changes(
            seq=seq,
            reservations=[(rid, reservations.get(rid)) for rid in self._reservations],
            evses=[(evse.id, evse.plugged_in, [(c.id, c.state) for c in evse.connectors.values()])
                   for evse in map(evses.__getitem__, self._evses)])
        self._reservations = {}
        self._evses = {}
        self._taken_seq = seq
        return changes
