"""The station as the reservation rules see it: EVSEs, their connectors, and
the index of free EVSEs by signature.

Theory of operation
-------------------
An EVSE is free when no EVSE-specific reservation holds it and no car is on it
(plugged in, or on a connector in use). Its signature is the set of types of
its Available connectors: what a car arriving later could use there. The
guarantee reads the free EVSEs only as a count per signature, so `Station`
keeps that count, and the ids behind it, up to date EVSE by EVSE (`index`)
instead of recounting the station on every decision.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from protocol.messages import Reservation, invalid
from protocol.vocabulary import ConnectorState, ConnectorType

from .connector import IN_USE
from .guarantee import types_match

Signature = frozenset[ConnectorType]


class Connector:
    __slots__ = ("id", "type", "state")

    def __init__(self, connector_id: int, connector_type: ConnectorType,
                 state: ConnectorState = ConnectorState.AVAILABLE) -> None:
        self.id = connector_id
        self.type = connector_type
        self.state = state


class Evse:
    __slots__ = ("id", "connectors", "plugged_in", "reservation", "free_signature")

    def __init__(self, evse_id: int, connectors: Iterable[tuple[int, ConnectorType]]) -> None:
        self.id = evse_id
        self.connectors = {cid: Connector(cid, ctype) for cid, ctype in connectors}
        self.plugged_in = False
        self.reservation: Reservation | None = None   # its EVSE-specific reservation
        self.free_signature: Signature | None = None   # its index bucket; None: not free

    def car_on_connector(self) -> bool:
        return any(c.state in IN_USE for c in self.connectors.values())

    def in_use(self) -> bool:
        return self.plugged_in or self.car_on_connector()

    def is_free(self, *, plug_counts: bool = True) -> bool:
        return (self.reservation is None and not (plug_counts and self.plugged_in)
                and not self.car_on_connector())

    def signature(self) -> Signature:
        """The car types' view of this EVSE: the types of its Available connectors."""
        return frozenset(c.type for c in self.connectors.values()
                         if c.state == ConnectorState.AVAILABLE)

    def state_fields(self) -> dict[str, Any]:
        """What evse_state and get_state's evses say about it."""
        return {"plugged_in": self.plugged_in,
                "connectors": [{"id": c.id, "type": c.type, "state": c.state}
                               for c in self.connectors.values()]}


def car_type(reservation: Reservation) -> ConnectorType:
    return reservation.connector_type or ConnectorType.Unknown


class Station:
    def __init__(self, evses: Iterable[tuple[int, Iterable[tuple[int, ConnectorType]]]]) -> None:
        self.evses = {evse_id: Evse(evse_id, connectors) for evse_id, connectors in evses}
        self.position = {evse_id: n for n, evse_id in enumerate(self.evses)}
        self._types = {c.type for e in self.evses.values() for c in e.connectors.values()}
        # Free EVSEs by signature, and their count (what the guarantee reads).
        self.free_ids: dict[Signature, set[int]] = {}
        self.free: Counter[Signature] = Counter()
        self.index_all()

    def evse(self, evse_id: int) -> Evse:
        """The EVSE a command names; invalid_argument when the station has none by that id."""
        evse = self.evses.get(evse_id)
        if evse is None:
            raise invalid(f"args.evse_id: no EVSE {evse_id} at this station "
                          f"(it has {sorted(self.evses)})")
        return evse

    def has(self, wanted: ConnectorType) -> bool:
        """Some connector of the station fits a car of type `wanted`."""
        return any(types_match(wanted, t) for t in self._types)

    def index(self, evse: Evse) -> None:
        """File `evse` under the free signature its state gives it now (O(1);
        recounting the station would be O(EVSEs))."""
        old = evse.free_signature
        new = evse.signature() if evse.is_free() else None
        if old == new:
            return
        if old is not None:
            bucket = self.free_ids[old]
            bucket.discard(evse.id)
            if bucket:
                self.free[old] -= 1
            else:
                del self.free_ids[old], self.free[old]
        if new is not None:
            self.free_ids.setdefault(new, set()).add(evse.id)
            self.free[new] += 1
        evse.free_signature = new

    def index_all(self) -> None:
        self.free_ids.clear()
        self.free.clear()
        for evse in self.evses.values():
            evse.free_signature = None
            self.index(evse)

    def free_without(self, evse: Evse) -> Counter[Signature]:
        """The free EVSEs once `evse` is taken (by a reservation or a car)."""
        if evse.free_signature is None:
            return self.free
        rest = self.free.copy()
        rest[evse.free_signature] -= 1
        return rest
