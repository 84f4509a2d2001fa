"""The reservation core: every reservation rule, and no I/O.

Theory of operation
-------------------
`ReservationCore.decide(command, now)` takes a validated command
(protocol.messages) and the current UTC time in epoch seconds, changes the
state, and returns the reply's result; the updates the change publishes go to
an outbox, already numbered with the one `seq` counter shared by all topics,
which `updates_to_publish()` drains (as a sans-I/O protocol's bytes to send).
`expire(now)` ends what is due; `apply(command, now)` is `decide` and the
drained outbox in one Outcome. The core never reads a clock or touches a
socket, so the actor decides when "now" is and every rule below can be tested
with plain numbers.

State: the station's EVSEs and connectors, the active reservations in placement
order (oldest first, which is the order re-checks keep them in), and the timer
wheel that ends them at their expiry_time. Everything else is derived, and kept up to date
as it changes rather than recomputed: the index of free EVSEs by signature
(the types of their Available connectors), the per-type count of
non-EVSE-specific reservations, the token index (actor.tokens), and what each
EVSE shows as reserved (actor.reserved_view). The station model and its index
of free EVSEs live in actor.station, what changed for the store in
actor.changes: this module holds the rules.

A reservation is active from Placed until a ReservationEndReason ends it; it
never comes back. Where a rule changes what an EVSE shows as reserved,
`_publish_reserved` publishes what the view reports as changed, so
`evse_reserved` goes out only on change.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from protocol.messages import (
    CancelReservation, ConnectorEvent, ExistsReservation, GetState, IsChargingPossible,
    Ping, PlugEvent, Reservation, ReserveNow, UseReservation, invalid,
)
from protocol.vocabulary import (
    ConnectorState, ConnectorType, ReservationCheckStatus, ReservationEndReason,
    ReservationResult, ReservationUpdateStatus, Topic,
)

from .changes import ChangeLog, Changes, StoredState
from .connector import IN_USE, next_state
from .guarantee import guarantee_holds, holds_with_one_more, types_match
from .reserved_view import ReservedView
from .station import Evse, Station, car_type
from .tokens import TokenIndex, token_matches
from .wheel import TimerWheel

# What a connector state answers when it is why a reservation cannot be made,
# with its strength: Occupied beats Faulted beats Unavailable. A car on a
# faulted connector (FaultedOccupied) answers Faulted where EVerest looks at
# one EVSE (an EVSE-specific reservation: that EVSE is faulted); where it
# looks at the station (non-EVSE-specific), an EVSE with a car on it is in
# use and counts as Occupied before this table is read.
_REFUSAL = {
    ConnectorState.UNAVAILABLE: (1, ReservationResult.UNAVAILABLE),
    ConnectorState.FAULTED: (2, ReservationResult.FAULTED),
    ConnectorState.UNAVAILABLE_FAULTED: (2, ReservationResult.FAULTED),
    ConnectorState.FAULTED_OCCUPIED: (2, ReservationResult.FAULTED),
    ConnectorState.OCCUPIED: (3, ReservationResult.OCCUPIED),
}


@dataclass
class Outcome:
    result: Any
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _strongest(states: Iterable[ConnectorState]) -> ReservationResult:
    return max((_REFUSAL[s] for s in states if s in _REFUSAL),
               default=(3, ReservationResult.OCCUPIED))[1]


class ReservationCore:
    def __init__(self, evses: Iterable[tuple[int, Iterable[tuple[int, ConnectorType]]]], *,
                 reservations_enabled: bool = True, non_evse_specific: bool = True,
                 tick: float = 0.01, now: float = 0.0, seq: int = 0,
                 record_changes: bool = True) -> None:
        """`record_changes`: keep what changed for take_changes(); False for a
        store that keeps nothing, so the hot path does not pay for it."""
        self.reservations_enabled = reservations_enabled
        self.non_evse_specific = non_evse_specific
        self.seq = seq
        self._station = Station(evses)
        self._evses = self._station.evses   # the two the rules read on every decision
        self._free = self._station.free
        self._reservations: dict[int, Reservation] = {}
        self._non_specific_types: Counter[ConnectorType] = Counter()
        self._non_specific_count = 0   # their sum: without any, no decision needs the guarantee
        self._tokens = TokenIndex()
        self._view = ReservedView(self._station)
        self._tick = tick
        self._wheel = TimerWheel(tick, now)
        self._expired_at = -math.inf
        self._changes = ChangeLog(enabled=record_changes, seq=seq)
        self._outbox: list[tuple[str, dict[str, Any]]] = []
        # Reserving is the one command whose decision depends on the time.
        self._handlers = {
            CancelReservation: self._cancel_reservation,
            ExistsReservation: self._exists_reservation,
            ConnectorEvent: self._connector_event,
            PlugEvent: self._plug_event,
            UseReservation: self._use_reservation,
            IsChargingPossible: self._is_charging_possible,
            GetState: self._get_state,
            Ping: lambda command: "pong",
        }

    # -- entry points ------------------------------------------------------------

    def apply(self, command: Any, now: float) -> Outcome:
        """Decide `command` at `now`: its result, and the outbox drained (so
        anything left undrained before goes with it). Raises ProtocolError
        (invalid_argument) for a command naming what the station does not have,
        before changing anything."""
        result = self.decide(command, now)
        return Outcome(result, self.updates_to_publish())

    def decide(self, command: Any, now: float) -> Any:
        """apply() for the loop: the result, with the updates left in the outbox."""
        if now != self._expired_at:
            # A reservation past its expiry_time must not take part in any decision.
            self._end_due(now)
        if type(command) is ReserveNow:
            return self._reserve_now(command, now)
        return self._handlers[type(command)](command)

    def updates_to_publish(self) -> list[tuple[str, dict[str, Any]]]:
        """The updates decided since the last call, in seq order; the outbox is
        left empty. Empty: nothing changed."""
        updates, self._outbox = self._outbox, []
        return updates

    def expire(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """End what is due at `now`; returns the drained outbox."""
        self._end_due(now)
        return self.updates_to_publish()

    def next_expiry(self) -> float | None:
        return self._wheel.next_expiry()

    def rebase(self, now: float) -> None:
        """The time domain jumped (the wall clock was stepped): re-arm every
        reservation on a wheel starting at `now`. Deadlines are absolute UTC, so
        a wheel left ahead of `now` fires nothing early, but it ignores times before
        its own and holds what falls due before it until the clock is back there:
        after a step back of an hour, expiries in that hour would come an hour late."""
        self._wheel = TimerWheel(self._tick, now)
        self._expired_at = -math.inf
        for reservation in self._reservations.values():
            self._wheel.schedule(reservation.reservation_id, reservation.expiry)

    @property
    def reservations(self) -> list[Reservation]:
        return list(self._reservations.values())

    @property
    def active_reservations(self) -> int:
        return len(self._reservations)

    def restore(self, stored: StoredState, now: float) -> list[tuple[str, dict[str, Any]]]:
        """Take over a stored image on a fresh core, applying what happened while
        the actor was down: reservations past their expiry end Expired; those whose
        EVSE or connector type the station no longer has, or that no longer fit
        beside older ones, end Removed. Returns the updates to publish (the drained outbox)."""
        self.seq = stored.seq
        for evse_id, (plugged_in, states) in stored.evses.items():
            evse = self._evses.get(evse_id)
            if evse is None:
                continue
            evse.plugged_in = plugged_in
            for connector_id, state in states.items():
                if connector_id in evse.connectors:
                    evse.connectors[connector_id].state = state
        self._station.index_all()
        ended = []
        for reservation in stored.reservations:
            if self._restorable(reservation):
                self._link(reservation)
                self._wheel.schedule(reservation.reservation_id, reservation.expiry)
            else:
                ended.append(reservation)
        # What is linked is what the store holds: only what start-up ends is a change.
        self._changes = ChangeLog(enabled=self._changes.enabled, seq=stored.seq)
        for reservation in ended:
            self._changes.reservation(reservation.reservation_id)
            self._publish_update(reservation, ReservationUpdateStatus.EXPIRED
                                 if reservation.expiry <= now else ReservationUpdateStatus.REMOVED)
        # Listeners last heard evse_reserved for the stored image: start from its
        # view, so that only what the start-up rules change is published again.
        self._view.reset(self._view.current(self._non_specific_types, self._non_specific_count))
        for reservation in [r for r in self._reservations.values() if r.expiry <= now]:
            self._end(reservation, ReservationEndReason.EXPIRED)
        # The guarantee under the loaded connector states. Plug flags do not count:
        # plugging in (the reserved car arriving) never removes a reservation.
        self._drop_non_specific_beyond_guarantee(Counter(
            e.signature() for e in self._evses.values() if e.is_free(plug_counts=False)))
        self._publish_reserved()
        return self.updates_to_publish()

    def _restorable(self, reservation: Reservation) -> bool:
        """A stored reservation the station can still hold: its EVSE (if any) is
        configured, not already taken, and has an Available connector of its
        type; without one, the live rules (a connector of its type leaving
        Available) would have removed it."""
        if reservation.evse_id is None:
            return True
        evse = self._evses.get(reservation.evse_id)
        return evse is not None and evse.reservation is None and any(
            c.state == ConnectorState.AVAILABLE and types_match(car_type(reservation), c.type)
            for c in evse.connectors.values())

    def take_changes(self) -> Changes | None:
        """What changed since the last call, for the store; None when nothing did."""
        return self._changes.take(self.seq, self._reservations, self._evses)

    # -- commands --------------------------------------------------------------------

    def _reserve_now(self, command: ReserveNow, now: float) -> ReservationResult:
        new = command.request
        old = self._reservations.get(new.reservation_id)
        if old is None:
            result = self._reserve_now_result(new, now)
        else:
            # Replacing is atomic: decide as if the old one were gone, and put
            # it back exactly where it was unless the new one is accepted.
            order, changed = self._reservations.copy(), self._changes.save()
            buckets = self._tokens.save(old)
            self._unlink(old)
            result = self._reserve_now_result(new, now)
            if result != ReservationResult.ACCEPTED:
                self._link(old)
                self._reservations = order
                self._changes.put_back(changed)
                self._tokens.put_back(buckets)
        if result == ReservationResult.ACCEPTED:
            self._link(new)
            self._wheel.schedule(new.reservation_id, new.expiry)
            self._publish_update(new, ReservationUpdateStatus.PLACED)
            self._publish_reserved()
        return result

    def _cancel_reservation(self, command: CancelReservation) -> bool:
        reservation = self._reservations.get(command.reservation_id)
        if reservation is None:
            return False
        self._end(reservation, ReservationEndReason.CANCELLED)
        self._publish_reserved()
        return True

    def _exists_reservation(self, command: ExistsReservation) -> ReservationCheckStatus:
        evse = self._evses.get(command.evse_id) if command.evse_id is not None else None
        held = evse.reservation if evse is not None else None
        if held is not None:
            if token_matches(held, command.id_token, command.group_id_token):
                return ReservationCheckStatus.RESERVED_FOR_TOKEN
            if command.group_id_token is None and held.parent_id_token is not None:
                return ReservationCheckStatus.RESERVED_FOR_OTHER_TOKEN_AND_HAS_PARENT_TOKEN
            return ReservationCheckStatus.RESERVED_FOR_OTHER_TOKEN
        if self._oldest_non_specific_match(command.id_token, command.group_id_token) is not None:
            return ReservationCheckStatus.RESERVED_FOR_TOKEN
        return ReservationCheckStatus.NOT_RESERVED

    def _use_reservation(self, command: UseReservation) -> int | None:
        evse = self._evses.get(command.evse_id) if command.evse_id is not None else None
        if evse is not None and evse.reservation is not None:
            # On an EVSE held for someone, only that reservation can be used there.
            held = evse.reservation
            match = held if token_matches(held, command.id_token, command.parent_id_token) else None
        else:
            match = self._oldest_non_specific_match(command.id_token, command.parent_id_token)
        if match is None:
            return None
        self._end(match, ReservationEndReason.USED_TO_START_CHARGING)
        self._publish_reserved()
        return match.reservation_id

    def _connector_event(self, command: ConnectorEvent) -> ConnectorState:
        evse = self._station.evse(command.evse_id)
        connector = evse.connectors.get(command.connector_id)
        if connector is None:
            raise invalid(f"args.connector_id: EVSE {evse.id} has no connector "
                          f"{command.connector_id} (it has {sorted(evse.connectors)})")
        state = next_state(connector.state, command.event)
        if state != connector.state:
            connector.state = state
            self._evse_changed(evse)
        if connector.state != ConnectorState.AVAILABLE:
            held = evse.reservation
            if held is not None and types_match(car_type(held), connector.type):
                self._end(held, ReservationEndReason.CONNECTOR_NOT_AVAILABLE)
            self._drop_non_specific_beyond_guarantee(self._free)
        self._publish_reserved()
        return connector.state

    def _plug_event(self, command: PlugEvent) -> None:
        evse = self._station.evse(command.evse_id)
        # No re-check here: plugging in is how the reserved car itself arrives,
        # before it identifies and uses its reservation.
        if evse.plugged_in != command.plugged_in:
            evse.plugged_in = command.plugged_in
            self._evse_changed(evse)
        self._publish_reserved()

    def _is_charging_possible(self, command: IsChargingPossible) -> bool:
        evse = self._evses.get(command.evse_id)
        if evse is None or evse.reservation is not None:
            return False
        return not self._non_specific_count or guarantee_holds(self._non_specific_types,
                                                               self._station.free_without(evse))

    def _get_state(self, command: GetState) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "reservations_enabled": self.reservations_enabled,
            "non_evse_specific": self.non_evse_specific,
            "reservations": list(self._reservations.values()),
            "evses": [{"id": evse.id, **evse.state_fields(), **self._view.fields(evse.id)}
                      for evse in self._evses.values()],
        }

    # -- decisions ---------------------------------------------------------------------

    def _reserve_now_result(self, new: Reservation, now: float) -> ReservationResult:
        if not self.reservations_enabled:
            return ReservationResult.REJECTED
        if new.evse_id is None and not self.non_evse_specific:
            return ReservationResult.REJECTED
        if new.expiry <= now:
            return ReservationResult.REJECTED
        if new.evse_id is None:
            return self._non_evse_specific_result(car_type(new))
        return self._evse_specific_result(new)

    def _evse_specific_result(self, new: Reservation) -> ReservationResult:
        evse = self._evses.get(new.evse_id)
        if evse is None:
            return ReservationResult.REJECTED
        if evse.reservation is not None:
            return ReservationResult.OCCUPIED
        wanted = car_type(new)
        fitting = [c for c in evse.connectors.values() if types_match(wanted, c.type)]
        if not fitting:
            return ReservationResult.REJECTED
        if evse.plugged_in:
            return ReservationResult.OCCUPIED
        cars = {c.state for c in evse.connectors.values()} & IN_USE
        if cars:
            return _strongest(cars)
        if all(c.state != ConnectorState.AVAILABLE for c in fitting):
            return _strongest(c.state for c in fitting)
        if self._non_specific_count and not guarantee_holds(self._non_specific_types,
                                                            self._station.free_without(evse)):
            return ReservationResult.OCCUPIED
        return ReservationResult.ACCEPTED

    def _non_evse_specific_result(self, wanted: ConnectorType) -> ReservationResult:
        if not self._station.has(wanted):
            return ReservationResult.REJECTED
        if holds_with_one_more(self._non_specific_types, wanted, self._free):
            return ReservationResult.ACCEPTED
        if self._reservations or any(e.plugged_in for e in self._evses.values()):
            return ReservationResult.OCCUPIED
        return _strongest(
            ConnectorState.OCCUPIED if evse.in_use() else c.state
            for evse in self._evses.values()
            for c in evse.connectors.values() if types_match(wanted, c.type))

    def _drop_non_specific_beyond_guarantee(self, free: Counter[frozenset[str]]) -> None:
        """Keep the oldest non-EVSE-specific reservations that still fit together
        on the `free` EVSEs; remove each newer one that no longer fits beside them."""
        if guarantee_holds(self._non_specific_types, free):
            return
        kept: Counter[str] = Counter()
        for reservation in [r for r in self._reservations.values() if r.evse_id is None]:
            kept[car_type(reservation)] += 1
            if not guarantee_holds(kept, free):
                kept[car_type(reservation)] -= 1
                self._end(reservation, ReservationEndReason.GLOBAL_RESERVATION_REQUIREMENT_DROPPED)

    def _publish_reserved(self) -> None:
        for body in self._view.changes(self._non_specific_types, self._non_specific_count):
            self._publish(Topic.EVSE_RESERVED, body)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _end_due(self, now: float) -> None:
        # Nothing can fall due twice at one instant: what is placed must expire after it.
        self._expired_at = now
        due = self._wheel.advance(now)
        if not due:
            return
        for reservation_id in due:
            self._end(self._reservations[reservation_id], ReservationEndReason.EXPIRED)
        self._publish_reserved()

    def _end(self, reservation: Reservation, reason: ReservationEndReason) -> None:
        self._unlink(reservation)
        self._wheel.cancel(reservation.reservation_id)
        self._publish_update(reservation, reason.status)

    def _link(self, reservation: Reservation) -> None:
        self._reservations[reservation.reservation_id] = reservation
        self._changes.reservation(reservation.reservation_id)
        if reservation.evse_id is None:
            self._non_specific_types[car_type(reservation)] += 1
            self._non_specific_count += 1
            self._tokens.add(reservation)
        else:
            self._set_evse_reservation(self._evses[reservation.evse_id], reservation)

    def _unlink(self, reservation: Reservation) -> None:
        del self._reservations[reservation.reservation_id]
        self._changes.reservation(reservation.reservation_id)
        if reservation.evse_id is None:
            self._non_specific_types[car_type(reservation)] -= 1
            self._non_specific_count -= 1
            self._tokens.remove(reservation)
        else:
            self._set_evse_reservation(self._evses[reservation.evse_id], None)

    def _set_evse_reservation(self, evse: Evse, reservation: Reservation | None) -> None:
        """Give `evse` its EVSE-specific reservation (None: it has none now), and
        file it where that puts it in the free-EVSE index."""
        evse.reservation = reservation
        self._index(evse)

    def _index(self, evse: Evse) -> None:
        self._station.index(evse)
        self._view.touch(evse.id)

    def _evse_changed(self, evse: Evse) -> None:
        self._index(evse)
        self._changes.evse(evse.id)
        self._publish(Topic.EVSE_STATE, {"evse_id": evse.id, **evse.state_fields()})

    def _publish_update(self, reservation: Reservation, status: ReservationUpdateStatus) -> None:
        body = {"reservation_id": reservation.reservation_id, "reservation_status": status,
                "evse_id": reservation.evse_id}
        if status is ReservationUpdateStatus.PLACED:
            # The whole reservation, so a listener can mirror get_state from updates alone.
            body["reservation"] = reservation
        self._publish(Topic.RESERVATION_UPDATE, body)

    def _publish(self, topic: Topic, body: dict[str, Any]) -> None:
        self.seq += 1
        body["seq"] = self.seq
        self._outbox.append((topic, body))

    def _oldest_non_specific_match(self, id_token: str,
                                   parent_token: str | None) -> Reservation | None:
        reservation_id = self._tokens.oldest_match(id_token, parent_token)
        return None if reservation_id is None else self._reservations[reservation_id]
