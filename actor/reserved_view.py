"""What each EVSE shows as reserved (`evse_reserved`, get_state's evses), and
what changed in it since it was last published.

Theory of operation
-------------------
An EVSE shows its EVSE-specific reservation, or that it is held back for
non-EVSE-specific reservations, or neither. Which free EVSEs are held is
decided per signature (all free EVSEs of a signature are held, or none), so
`changes` compares only the EVSEs touched since the last call and those of the
signatures whose held status flipped: a decision costs what the station's
distinct signatures cost, the same on 10 EVSEs as on 10,000. Kept apart from
the station because it is a view of the rules' state, read through the
guarantee, not part of the model the rules change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.vocabulary import ConnectorType

from .guarantee import can_use, holds_with_one_more
from .station import Evse, Signature, Station


class _HeldForNonSpecific:
    """What an EVSE held back for non-EVSE-specific reservations shows. Not an
    int: a client may give a reservation any int32 id, -1 included, so no id
    can also mean "held"."""


HELD_FOR_NON_SPECIFIC = _HeldForNonSpecific()
Shown = int | _HeldForNonSpecific | None   # an EVSE's specific reservation id, held, or neither


def reserved_fields(shown: Shown) -> dict[str, Any]:
    """How evse_reserved and get_state's evses say what an EVSE shows: the two
    reasons to be reserved each in a field of its own."""
    held = shown is HELD_FOR_NON_SPECIFIC
    return {"reserved": shown is not None, "reservation_id": None if held else shown,
            "held_for_non_evse_specific": held}


class ReservedView:
    """`cars` below: the non-EVSE-specific reservations per car type, and
    `count` their sum (without any, nothing is held)."""

    def __init__(self, station: Station) -> None:
        self._station = station
        self._held: frozenset[Signature] = frozenset()
        self.reset({evse_id: None for evse_id in station.evses})

    def reset(self, shown: dict[int, Shown]) -> None:
        """Take `shown` as what evse_reserved last published per EVSE. Nothing
        is known about what changed since, so the next `changes` compares every
        EVSE (`_touched` None) instead of the touched ones."""
        self._shown = shown
        self._touched: set[int] | None = None

    def touch(self, evse_id: int) -> None:
        if self._touched is not None:
            self._touched.add(evse_id)

    def fields(self, evse_id: int) -> dict[str, Any]:
        """What `evse_id` was last published as showing."""
        return reserved_fields(self._shown[evse_id])

    def current(self, cars: Mapping[ConnectorType, int], count: int) -> dict[int, Shown]:
        """Per EVSE: its specific reservation's id, HELD_FOR_NON_SPECIFIC when it is
        held back for non-EVSE-specific reservations, else None."""
        held = self._held = self._signatures_held(cars, count)
        return {evse.id: self._shown_by(evse, held) for evse in self._station.evses.values()}

    def changes(self, cars: Mapping[ConnectorType, int], count: int) -> list[dict[str, Any]]:
        """The evse_reserved bodies (without seq) of the EVSEs whose view changed
        since the last call, in station order; each is taken as published."""
        before = self._held
        held = self._held = self._signatures_held(cars, count)
        touched = self._touched
        station = self._station
        if touched is None:
            candidates = list(station.evses)
        else:
            if before or held:
                for signature in before ^ held:   # every free EVSE of these flips
                    touched.update(station.free_ids.get(signature, ()))
            candidates = sorted(touched, key=station.position.__getitem__) if len(touched) > 1 \
                else touched
        self._touched = set()
        last = self._shown
        evses = station.evses
        bodies = []
        for evse_id in candidates:
            shown = self._shown_by(evses[evse_id], held)
            if last[evse_id] != shown:
                last[evse_id] = shown
                bodies.append({"evse_id": evse_id, **reserved_fields(shown)})
        return bodies

    @staticmethod
    def _shown_by(evse: Evse, held: frozenset[Signature]) -> Shown:
        if evse.reservation is not None:
            return evse.reservation.reservation_id
        return HELD_FOR_NON_SPECIFIC if evse.free_signature in held else None

    def _signatures_held(self, cars: Mapping[ConnectorType, int],
                         count: int) -> frozenset[Signature]:
        """The signatures whose free EVSEs are held back for non-EVSE-specific
        reservations (EVerest's check_number_global_reservations_match_number_available_evses):
        all usable ones when there are exactly as many as reservations, else those
        a car of a type that could not get one more reservation could use."""
        if not count:
            return frozenset()
        free = self._station.free
        usable = [g for g, n in free.items() if g and n]
        if sum(free[g] for g in usable) == count:
            return frozenset(usable)
        held: set[Signature] = set()
        for wanted, n in cars.items():
            if n and not holds_with_one_more(cars, wanted, free):
                held.update(g for g in usable if can_use(wanted, g))
        return frozenset(held)
