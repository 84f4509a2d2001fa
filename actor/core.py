"""The reservation core: every reservation rule, and no I/O.

Theory of operation
-------------------
`ReservationCore.apply(command, now)` takes a validated command (protocol.messages)
and the current UTC time in epoch seconds, changes the state, and returns an
Outcome: the reply's result and the updates to publish, already numbered with
the one `seq` counter shared by all topics. `expire(now)` ends what is due.
The core never reads a clock or touches a socket, so the actor decides when
"now" is and every rule below can be tested with plain numbers.

State: the station's EVSEs and connectors, the active reservations in placement
order (oldest first, which is the order re-checks keep them in), and the timer
wheel that ends them at their expiry_time. Everything else is derived, and kept up to date
as it changes rather than recomputed: the index of free EVSEs by signature
(the types of their Available connectors), the per-type count of
non-EVSE-specific reservations, and what each EVSE shows as reserved.

A reservation is active from Placed until a ReservationEndReason ends it; it never comes back. Where a rule changes what an EVSE shows as reserved,
`_publish_reserved` compares with what was last published, so `evse_reserved`
goes out only on change. Which EVSEs are held back for non-EVSE-specific
reservations is decided per signature (all free EVSEs of a signature are
held, or none), so it compares only the EVSEs touched since the last publish
and those of the signatures whose held status flipped: a decision costs what
the station's distinct signatures cost, the same on 10 EVSEs as on 10,000.
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
    ConnectorState, ConnectorState as State, ConnectorType, ReservationCheckStatus as Check,
    ReservationEndReason as End, ReservationResult as Result, ReservationUpdateStatus as Status,
    Topic,
)

from .connector import IN_USE, next_state
from .guarantee import can_use, guarantee_holds, types_match
from .wheel import TimerWheel

# What a connector state answers when it is why a reservation cannot be made,
# with its strength: Occupied beats Faulted beats Unavailable. A car on a
# faulted connector (FaultedOccupied) answers Faulted where EVerest looks at
# one EVSE (an EVSE-specific reservation: that EVSE is faulted); where it
# looks at the station (non-EVSE-specific), an EVSE with a car on it is in
# use and counts as Occupied before this table is read.
_REFUSAL = {
    State.UNAVAILABLE: (1, Result.UNAVAILABLE),
    State.FAULTED: (2, Result.FAULTED),
    State.UNAVAILABLE_FAULTED: (2, Result.FAULTED),
    State.FAULTED_OCCUPIED: (2, Result.FAULTED),
    State.OCCUPIED: (3, Result.OCCUPIED),
}


class _HeldForNonSpecific:
    """What an EVSE held back for non-EVSE-specific reservations shows. Not an
    int: a client may give a reservation any int32 id, -1 included, so no id
    can also mean "held"."""


HELD_FOR_NON_SPECIFIC = _HeldForNonSpecific()
Shown = int | _HeldForNonSpecific | None   # an EVSE's specific reservation id, held, or neither


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


@dataclass
class Outcome:
    result: Any
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class Connector:
    __slots__ = ("id", "type", "state")

    def __init__(self, connector_id: int, connector_type: ConnectorType,
                 state: State = State.AVAILABLE) -> None:
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
        self.free_signature: frozenset[ConnectorType] | None = None   # its index bucket; None: not free

    def car_on_connector(self) -> bool:
        return any(c.state in IN_USE for c in self.connectors.values())

    def in_use(self) -> bool:
        return self.plugged_in or self.car_on_connector()

    def is_free(self, *, plug_counts: bool = True) -> bool:
        return (self.reservation is None and not (plug_counts and self.plugged_in)
                and not self.car_on_connector())

    def signature(self) -> frozenset[ConnectorType]:
        """The car types' view of this EVSE: the types of its Available connectors."""
        return frozenset(c.type for c in self.connectors.values() if c.state == State.AVAILABLE)


def car_type(reservation: Reservation) -> ConnectorType:
    return reservation.connector_type or ConnectorType.Unknown


def token_matches(reservation: Reservation, id_token: str, parent_token: str | None) -> bool:
    """EVerest's matches_reserved_identifier: same token, or same parent (group)
    token on both sides; tokens are case-insensitive (CiString)."""
    if reservation.id_token.casefold() == id_token.casefold():
        return True
    return (parent_token is not None and reservation.parent_id_token is not None
            and reservation.parent_id_token.casefold() == parent_token.casefold())


def _evse_state(evse: Evse) -> dict[str, Any]:
    return {"plugged_in": evse.plugged_in,
            "connectors": [{"id": c.id, "type": c.type, "state": c.state}
                           for c in evse.connectors.values()]}


def _reserved_fields(shown: Shown) -> dict[str, Any]:
    """How evse_reserved and get_state's evses say what an EVSE shows: the two
    reasons to be reserved each in a field of its own."""
    held = shown is HELD_FOR_NON_SPECIFIC
    return {"reserved": shown is not None, "reservation_id": None if held else shown,
            "held_for_non_evse_specific": held}


def _strongest(states: Iterable[State]) -> Result:
    return max((_REFUSAL[s] for s in states if s in _REFUSAL), default=(3, Result.OCCUPIED))[1]


class ReservationCore:
    def __init__(self, evses: Iterable[tuple[int, Iterable[tuple[int, ConnectorType]]]], *,
                 reservations_enabled: bool = True, non_evse_specific: bool = True,
                 tick: float = 0.01, now: float = 0.0, seq: int = 0,
                 record_changes: bool = True) -> None:
        """`record_changes`: keep what changed for take_changes(); False for a
        store that keeps nothing, so the hot path does not pay for it."""
        self.reservations_enabled = reservations_enabled
        self.record_changes = record_changes
        self.non_evse_specific = non_evse_specific
        self.seq = seq
        self._evses = {evse_id: Evse(evse_id, connectors) for evse_id, connectors in evses}
        self._station_types = {c.type for e in self._evses.values() for c in e.connectors.values()}
        self._reservations: dict[int, Reservation] = {}
        self._non_specific_types: Counter[ConnectorType] = Counter()
        self._non_specific_count = 0   # their sum: without any, no decision needs the guarantee
        # Non-EVSE-specific reservations by casefolded id_token and by casefolded
        # parent_id_token, each bucket in placement order (reservation id -> placement
        # number): use and exists by token look up, where a scan of thousands of
        # reservations per request held up everything else.
        self._by_token: dict[str, dict[int, int]] = {}
        self._by_parent: dict[str, dict[int, int]] = {}
        self._placements = 0
        # Free EVSEs by signature, and their count (what the guarantee reads).
        self._free_ids: dict[frozenset[ConnectorType], set[int]] = {}
        self._free: Counter[frozenset[ConnectorType]] = Counter()
        self._held_signatures: frozenset[frozenset[ConnectorType]] = frozenset()
        self._position = {evse_id: n for n, evse_id in enumerate(self._evses)}
        self._reset_shown({evse_id: None for evse_id in self._evses})
        self._index_all()
        self._tick = tick
        self._wheel = TimerWheel(tick, now)
        self._expired_at = -math.inf
        # What changed since take_changes(), for the store. Dicts keep the order
        # of the last change, which for reservations is placement order.
        self._dirty_reservations: dict[int, None] = {}
        self._dirty_evses: dict[int, None] = {}
        self._taken_seq = seq
        self._handlers = {
            ReserveNow: self._reserve_now,
            CancelReservation: self._cancel_reservation,
            ExistsReservation: self._exists_reservation,
            ConnectorEvent: self._connector_event,
            PlugEvent: self._plug_event,
            UseReservation: self._use_reservation,
            IsChargingPossible: self._is_charging_possible,
            GetState: self._get_state,
            Ping: lambda command, now, updates: "pong",
        }

    def _reset_shown(self, shown: dict[int, Shown]) -> None:
        """Take `shown` as what evse_reserved last published per EVSE. Nothing
        is known about what changed since, so the next _publish_reserved
        compares every EVSE (`_touched` None) instead of the touched ones."""
        self._shown = shown
        self._touched: set[int] | None = None

    # -- entry points ------------------------------------------------------------

    def apply(self, command: Any, now: float) -> Outcome:
        """Decide `command` at `now`. Raises ProtocolError (invalid_argument)
        for a command naming what the station does not have, before changing anything."""
        outcome = Outcome(None)
        outcome.result = self.decide(command, now, outcome.updates)
        return outcome

    def decide(self, command: Any, now: float, updates: list) -> Any:
        """apply() for the loop: the result, with the updates appended to `updates`."""
        if now != self._expired_at:
            # A reservation past its expiry_time must not take part in any decision.
            self._expire_into(now, updates)
        return self._handlers[type(command)](command, now, updates)

    def expire(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        updates: list[tuple[str, dict[str, Any]]] = []
        self._expire_into(now, updates)
        return updates

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
        beside older ones, end Removed. Returns the updates to publish."""
        self.seq = self._taken_seq = stored.seq
        for evse_id, (plugged_in, states) in stored.evses.items():
            evse = self._evses.get(evse_id)
            if evse is None:
                continue
            evse.plugged_in = plugged_in
            for connector_id, state in states.items():
                if connector_id in evse.connectors:
                    evse.connectors[connector_id].state = state
        self._index_all()
        updates: list[tuple[str, dict[str, Any]]] = []
        ended = []
        for reservation in stored.reservations:
            if self._restorable(reservation):
                self._link(reservation)
                self._wheel.schedule(reservation.reservation_id, reservation.expiry)
            else:
                ended.append(reservation)
        # What is linked is what the store holds: only what start-up ends is a change.
        self._dirty_reservations = {}
        for reservation in ended:
            self._dirty_reservations[reservation.reservation_id] = None
            self._publish_update(reservation, Status.EXPIRED if reservation.expiry <= now
                                 else Status.REMOVED, updates)
        # Listeners last heard evse_reserved for the stored image: start from its
        # view, so that only what the start-up rules change is published again.
        self._reset_shown(self._reserved_view())
        for reservation in [r for r in self._reservations.values() if r.expiry <= now]:
            self._end(reservation, End.EXPIRED, updates)
        # The guarantee under the loaded connector states. Plug flags do not count:
        # plugging in (the reserved car arriving) never removes a reservation.
        self._drop_non_specific_beyond_guarantee(updates, Counter(
            e.signature() for e in self._evses.values() if e.is_free(plug_counts=False)))
        self._publish_reserved(updates)
        return updates

    def _restorable(self, reservation: Reservation) -> bool:
        """A stored reservation the station can still hold: its EVSE (if any) is
        configured, not already taken, and has an Available connector of its
        type; without one, the live rules (a connector of its type leaving
        Available) would have removed it."""
        if reservation.evse_id is None:
            return True
        evse = self._evses.get(reservation.evse_id)
        return evse is not None and evse.reservation is None and any(
            c.state == State.AVAILABLE and types_match(car_type(reservation), c.type)
            for c in evse.connectors.values())

    def take_changes(self) -> Changes | None:
        """What changed since the last call, for the store; None when nothing did."""
        if not self.record_changes:
            return None
        if not self._dirty_reservations and not self._dirty_evses and self.seq == self._taken_seq:
            return None
        reservations = self._reservations
        changes = Changes(
            seq=self.seq,
            reservations=[(rid, reservations.get(rid)) for rid in self._dirty_reservations],
            evses=[(evse.id, evse.plugged_in, [(c.id, c.state) for c in evse.connectors.values()])
                   for evse in map(self._evses.__getitem__, self._dirty_evses)])
        self._dirty_reservations = {}
        self._dirty_evses = {}
        self._taken_seq = self.seq
        return changes

    # -- commands --------------------------------------------------------------------

    def _reserve_now(self, command: ReserveNow, now: float, updates: list) -> Result:
        new = command.request
        old = self._reservations.get(new.reservation_id)
        if old is None:
            result = self._decide(new, now)
        else:
            # Replacing is atomic: decide as if the old one were gone, and put
            # it back exactly where it was unless the new one is accepted.
            order, dirty = self._reservations.copy(), self._dirty_reservations.copy()
            buckets = [(index, key, index[key].copy()) for index, key in self._token_keys(old)]
            self._unlink(old)
            result = self._decide(new, now)
            if result != Result.ACCEPTED:
                self._link(old)
                self._reservations, self._dirty_reservations = order, dirty
                for index, key, bucket in buckets:
                    index[key] = bucket
        if result == Result.ACCEPTED:
            self._link(new)
            self._wheel.schedule(new.reservation_id, new.expiry)
            self._publish_update(new, Status.PLACED, updates)
            self._publish_reserved(updates)
        return result

    def _cancel_reservation(self, command: CancelReservation, now: float, updates: list) -> bool:
        reservation = self._reservations.get(command.reservation_id)
        if reservation is None:
            return False
        self._end(reservation, End.CANCELLED, updates)
        self._publish_reserved(updates)
        return True

    def _exists_reservation(self, command: ExistsReservation, now: float, updates: list) -> Check:
        evse = self._evses.get(command.evse_id) if command.evse_id is not None else None
        held = evse.reservation if evse is not None else None
        if held is not None:
            if token_matches(held, command.id_token, command.group_id_token):
                return Check.RESERVED_FOR_TOKEN
            if command.group_id_token is None and held.parent_id_token is not None:
                return Check.RESERVED_FOR_OTHER_TOKEN_AND_HAS_PARENT_TOKEN
            return Check.RESERVED_FOR_OTHER_TOKEN
        if self._matching_non_specific(command.id_token, command.group_id_token) is not None:
            return Check.RESERVED_FOR_TOKEN
        return Check.NOT_RESERVED

    def _use_reservation(self, command: UseReservation, now: float, updates: list) -> int | None:
        evse = self._evses.get(command.evse_id) if command.evse_id is not None else None
        if evse is not None and evse.reservation is not None:
            # On an EVSE held for someone, only that reservation can be used there.
            held = evse.reservation
            match = held if token_matches(held, command.id_token, command.parent_id_token) else None
        else:
            match = self._matching_non_specific(command.id_token, command.parent_id_token)
        if match is None:
            return None
        self._end(match, End.USED_TO_START_CHARGING, updates)
        self._publish_reserved(updates)
        return match.reservation_id

    def _connector_event(self, command: ConnectorEvent, now: float, updates: list) -> State:
        evse = self._evse(command.evse_id)
        connector = evse.connectors.get(command.connector_id)
        if connector is None:
            raise invalid(f"args.connector_id: EVSE {evse.id} has no connector "
                          f"{command.connector_id} (it has {sorted(evse.connectors)})")
        state = next_state(connector.state, command.event)
        if state != connector.state:
            connector.state = state
            self._evse_changed(evse, updates)
        if connector.state != State.AVAILABLE:
            held = evse.reservation
            if held is not None and types_match(car_type(held), connector.type):
                self._end(held, End.GLOBAL_RESERVATION_REQUIREMENT_DROPPED, updates)
            self._drop_non_specific_beyond_guarantee(updates, self._free)
        self._publish_reserved(updates)
        return connector.state

    def _plug_event(self, command: PlugEvent, now: float, updates: list) -> None:
        evse = self._evse(command.evse_id)
        # No re-check here: plugging in is how the reserved car itself arrives,
        # before it identifies and uses its reservation.
        if evse.plugged_in != command.plugged_in:
            evse.plugged_in = command.plugged_in
            self._evse_changed(evse, updates)
        self._publish_reserved(updates)

    def _is_charging_possible(self, command: IsChargingPossible, now: float, updates: list) -> bool:
        evse = self._evses.get(command.evse_id)
        if evse is None or evse.reservation is not None:
            return False
        return not self._non_specific_count or guarantee_holds(self._non_specific_types,
                                                               self._free_without(evse))

    def _get_state(self, command: GetState, now: float, updates: list) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "reservations_enabled": self.reservations_enabled,
            "non_evse_specific": self.non_evse_specific,
            "reservations": list(self._reservations.values()),
            "evses": [{"id": evse.id, **_evse_state(evse), **_reserved_fields(self._shown[evse.id])}
                      for evse in self._evses.values()],
        }

    # -- decisions ---------------------------------------------------------------------

    def _decide(self, new: Reservation, now: float) -> Result:
        if not self.reservations_enabled:
            return Result.REJECTED
        if new.evse_id is None and not self.non_evse_specific:
            return Result.REJECTED
        if new.expiry <= now:
            return Result.REJECTED
        if new.evse_id is None:
            return self._decide_non_specific(car_type(new))
        return self._decide_specific(new)

    def _decide_specific(self, new: Reservation) -> Result:
        evse = self._evses.get(new.evse_id)
        if evse is None:
            return Result.REJECTED
        if evse.reservation is not None:
            return Result.OCCUPIED
        wanted = car_type(new)
        fitting = [c for c in evse.connectors.values() if types_match(wanted, c.type)]
        if not fitting:
            return Result.REJECTED
        if evse.plugged_in:
            return Result.OCCUPIED
        cars = {c.state for c in evse.connectors.values()} & IN_USE
        if cars:
            return _strongest(cars)
        if all(c.state != State.AVAILABLE for c in fitting):
            return _strongest(c.state for c in fitting)
        if self._non_specific_count and not guarantee_holds(self._non_specific_types,
                                                            self._free_without(evse)):
            return Result.OCCUPIED
        return Result.ACCEPTED

    def _decide_non_specific(self, wanted: ConnectorType) -> Result:
        if not self._station_has(wanted):
            return Result.REJECTED
        if guarantee_holds(self._with_one_more(wanted), self._free):
            return Result.ACCEPTED
        if self._reservations or any(e.plugged_in for e in self._evses.values()):
            return Result.OCCUPIED
        return _strongest(
            State.OCCUPIED if evse.in_use() else c.state
            for evse in self._evses.values()
            for c in evse.connectors.values() if types_match(wanted, c.type))

    def _drop_non_specific_beyond_guarantee(self, updates: list,
                                            free: Counter[frozenset[str]]) -> None:
        """Keep the oldest non-EVSE-specific reservations that still fit together
        on the `free` EVSEs; remove each newer one that no longer fits beside them."""
        if guarantee_holds(self._non_specific_types, free):
            return
        kept: Counter[str] = Counter()
        for reservation in [r for r in self._reservations.values() if r.evse_id is None]:
            kept[car_type(reservation)] += 1
            if not guarantee_holds(kept, free):
                kept[car_type(reservation)] -= 1
                self._end(reservation, End.GLOBAL_RESERVATION_REQUIREMENT_DROPPED, updates)

    # -- what EVSEs show as reserved ---------------------------------------------------------

    def _reserved_view(self) -> dict[int, Shown]:
        """Per EVSE: its specific reservation's id, HELD_FOR_NON_SPECIFIC when it is
        held back for non-EVSE-specific reservations, else None."""
        held = self._held_signatures = self._signatures_held()
        return {evse.id: self._shown_by(evse, held) for evse in self._evses.values()}

    @staticmethod
    def _shown_by(evse: Evse, held: frozenset[frozenset[ConnectorType]]) -> Shown:
        if evse.reservation is not None:
            return evse.reservation.reservation_id
        return HELD_FOR_NON_SPECIFIC if evse.free_signature in held else None

    def _signatures_held(self) -> frozenset[frozenset[ConnectorType]]:
        """The signatures whose free EVSEs are held back for non-EVSE-specific
        reservations (EVerest's check_number_global_reservations_match_number_available_evses):
        all usable ones when there are exactly as many as reservations, else those
        a car of a type that could not get one more reservation could use."""
        count = self._non_specific_count
        if not count:
            return frozenset()
        free = self._free
        usable = [g for g, n in free.items() if g and n]
        if sum(free[g] for g in usable) == count:
            return frozenset(usable)
        held: set[frozenset[ConnectorType]] = set()
        for wanted, n in self._non_specific_types.items():
            if n and not guarantee_holds(self._with_one_more(wanted), free):
                held.update(g for g in usable if can_use(wanted, g))
        return frozenset(held)

    def _publish_reserved(self, updates: list) -> None:
        before = self._held_signatures
        held = self._held_signatures = self._signatures_held()
        touched = self._touched
        if touched is None:
            candidates = list(self._evses)
        else:
            if before or held:
                for signature in before ^ held:   # every free EVSE of these flips
                    touched.update(self._free_ids.get(signature, ()))
            candidates = sorted(touched, key=self._position.__getitem__) if len(touched) > 1 \
                else touched
        self._touched = set()
        last = self._shown
        evses = self._evses
        for evse_id in candidates:
            shown = self._shown_by(evses[evse_id], held)
            if last[evse_id] != shown:
                last[evse_id] = shown
                self._publish(Topic.EVSE_RESERVED, {"evse_id": evse_id, **_reserved_fields(shown)},
                              updates)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _expire_into(self, now: float, updates: list) -> None:
        # Nothing can fall due twice at one instant: what is placed must expire after it.
        self._expired_at = now
        due = self._wheel.advance(now)
        if not due:
            return
        for reservation_id in due:
            self._end(self._reservations[reservation_id], End.EXPIRED, updates)
        self._publish_reserved(updates)

    def _end(self, reservation: Reservation, reason: End, updates: list) -> None:
        self._unlink(reservation)
        self._wheel.cancel(reservation.reservation_id)
        self._publish_update(reservation, reason.status, updates)

    def _link(self, reservation: Reservation) -> None:
        self._reservations[reservation.reservation_id] = reservation
        self._mark_dirty(reservation.reservation_id)
        if reservation.evse_id is None:
            self._non_specific_types[car_type(reservation)] += 1
            self._non_specific_count += 1
            self._placements += 1
            for index, key in self._token_keys(reservation):
                index.setdefault(key, {})[reservation.reservation_id] = self._placements
        else:
            self._hold(self._evses[reservation.evse_id], reservation)

    def _unlink(self, reservation: Reservation) -> None:
        del self._reservations[reservation.reservation_id]
        self._mark_dirty(reservation.reservation_id)
        if reservation.evse_id is None:
            self._non_specific_types[car_type(reservation)] -= 1
            self._non_specific_count -= 1
            for index, key in self._token_keys(reservation):
                bucket = index[key]
                del bucket[reservation.reservation_id]
                if not bucket:
                    del index[key]
        else:
            self._hold(self._evses[reservation.evse_id], None)

    def _hold(self, evse: Evse, reservation: Reservation | None) -> None:
        """Set `evse`'s specific reservation."""
        evse.reservation = reservation
        self._index(evse)

    def _index(self, evse: Evse) -> None:
        """File `evse` under the free signature its state gives it now (O(1);
        recounting the station would be O(EVSEs)), and mark it for _publish_reserved."""
        old = evse.free_signature
        new = evse.signature() if evse.is_free() else None
        if old != new:
            if old is not None:
                bucket = self._free_ids[old]
                bucket.discard(evse.id)
                if bucket:
                    self._free[old] -= 1
                else:
                    del self._free_ids[old], self._free[old]
            if new is not None:
                self._free_ids.setdefault(new, set()).add(evse.id)
                self._free[new] += 1
            evse.free_signature = new
        if self._touched is not None:
            self._touched.add(evse.id)

    def _index_all(self) -> None:
        self._free_ids.clear()
        self._free.clear()
        for evse in self._evses.values():
            evse.free_signature = None
            self._index(evse)

    def _evse_changed(self, evse: Evse, updates: list) -> None:
        self._index(evse)
        if self.record_changes:
            self._dirty_evses[evse.id] = None
        self._publish(Topic.EVSE_STATE, {"evse_id": evse.id, **_evse_state(evse)}, updates)

    def _mark_dirty(self, reservation_id: int) -> None:
        if not self.record_changes:
            return
        # Move to the end: the store numbers positions in this order.
        self._dirty_reservations.pop(reservation_id, None)
        self._dirty_reservations[reservation_id] = None

    def _publish_update(self, reservation: Reservation, status: Status, updates: list) -> None:
        body = {"reservation_id": reservation.reservation_id, "reservation_status": status,
                "evse_id": reservation.evse_id}
        if status is Status.PLACED:
            # The whole reservation, so a listener can mirror get_state from updates alone.
            body["reservation"] = reservation
        self._publish(Topic.RESERVATION_UPDATE, body, updates)

    def _publish(self, topic: Topic, body: dict[str, Any], updates: list) -> None:
        self.seq += 1
        body["seq"] = self.seq
        updates.append((topic, body))

    def _free_without(self, evse: Evse) -> Counter[frozenset[ConnectorType]]:
        """The free EVSEs once `evse` is taken (by a reservation or a car)."""
        if evse.free_signature is None:
            return self._free
        rest = self._free.copy()
        rest[evse.free_signature] -= 1
        return rest

    def _with_one_more(self, wanted: ConnectorType) -> Counter[ConnectorType]:
        cars = self._non_specific_types.copy()
        cars[wanted] += 1
        return cars

    def _station_has(self, wanted: ConnectorType) -> bool:
        return any(types_match(wanted, t) for t in self._station_types)

    def _token_keys(self, reservation: Reservation) -> list[tuple[dict, str]]:
        """The token index buckets a non-EVSE-specific reservation is filed in."""
        if reservation.evse_id is not None:
            return []
        keys = [(self._by_token, reservation.id_token.casefold())]
        if reservation.parent_id_token is not None:
            keys.append((self._by_parent, reservation.parent_id_token.casefold()))
        return keys

    def _matching_non_specific(self, id_token: str, parent_token: str | None) -> Reservation | None:
        """The oldest non-EVSE-specific reservation token_matches() accepts: the
        older of the first in its token's bucket and the first in its parent's."""
        buckets = [self._by_token.get(id_token.casefold())]
        if parent_token is not None:
            buckets.append(self._by_parent.get(parent_token.casefold()))
        firsts = [next(iter(bucket.items())) for bucket in buckets if bucket]
        if not firsts:
            return None
        return self._reservations[min(firsts, key=lambda first: first[1])[0]]

    def _evse(self, evse_id: int) -> Evse:
        evse = self._evses.get(evse_id)
        if evse is None:
            raise invalid(f"args.evse_id: no EVSE {evse_id} at this station "
                          f"(it has {sorted(self._evses)})")
        return evse
