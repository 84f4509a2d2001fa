"""The reservation core against the rules of issue 2, without sockets or clocks.

Time is plain epoch seconds: every test starts at NOW and reservations expire
a minute later unless the test says otherwise. Each test is one rule; its
name says which.
"""

from __future__ import annotations


import pytest

from actor.core import ReservationCore
from protocol.messages import (
    CancelReservation, ConnectorEvent, ExistsReservation, GetState, IsChargingPossible,
    PlugEvent, ProtocolError, UseReservation, parse_command,
)
from .helpers import HELD, on_the_wire, reserved_by, rfc3339

NOW = 1000.0
TICK = 0.01
EXPIRY = NOW + 60

CCS = "cCCS2"
T2 = "cType2"
T1 = "cType1"          # a type no default connector has
UNKNOWN = "Unknown"

# The embedded default station: two EVSEs, each with a cCCS2 and a cType2 connector.
DUAL = [(1, [(1, CCS), (2, T2)]), (2, [(1, CCS), (2, T2)])]
# One EVSE per type, so a car of one type has exactly one place to go.
SPLIT = [(1, [(1, CCS)]), (2, [(1, T2)])]

UPDATE = "reservation_update"
RESERVED = "evse_reserved"


# -- helpers ------------------------------------------------------------------------

def make_core(evses=DUAL, **kwargs) -> ReservationCore:
    return ReservationCore(evses, tick=TICK, now=NOW, **kwargs)



def request(rid, token="TOKEN", *, evse=None, ctype=None, parent=None, expiry=EXPIRY) -> dict:
    """A reserve_now request map as a client sends it."""
    out = {"reservation_id": rid, "id_token": token, "expiry_time": rfc3339(expiry)}
    if evse is not None:
        out["evse_id"] = evse
    if ctype is not None:
        out["connector_type"] = ctype
    if parent is not None:
        out["parent_id_token"] = parent
    return out


def reserve(core, rid, token="TOKEN", *, now=NOW, **kwargs):
    return core.apply(parse_command("reserve_now", {"request": request(rid, token, **kwargs)}), now)


def accept(core, rid, token="TOKEN", **kwargs):
    outcome = reserve(core, rid, token, **kwargs)
    assert outcome.result == "Accepted", f"setup: reservation {rid} was {outcome.result}"
    return outcome


def event(core, evse, connector, name, now=NOW):
    return core.apply(ConnectorEvent(evse, connector, name), now)


def plug(core, evse, plugged_in=True, now=NOW):
    return core.apply(PlugEvent(evse, plugged_in), now)


def state(core, now=NOW) -> dict:
    return on_the_wire(core.apply(GetState(), now).result)


def live(core, now=NOW) -> list[int]:
    return [r["reservation_id"] for r in state(core, now)["reservations"]]


def statuses(updates) -> list[tuple[int, str]]:
    """The reservation_update stream as (reservation_id, status)."""
    return [(body["reservation_id"], body["reservation_status"])
            for topic, body in updates if topic == UPDATE]


def reserved(updates) -> dict[int, tuple[bool, int | str | None]]:
    """The evse_reserved updates as {evse_id: (reserved, the specific reservation's id or HELD)}."""
    out = {}
    for topic, body in updates:
        if topic == RESERVED:
            assert body["evse_id"] not in out, "one update per EVSE and change"
            out[body["evse_id"]] = (body["reserved"], reserved_by(body))
    return out


def shown(core, now=NOW) -> dict[int, bool]:
    return {e["id"]: e["reserved"] for e in state(core, now)["evses"]}


def exists(core, token, evse=None, group=None, now=NOW):
    return core.apply(ExistsReservation(token, evse, group), now).result


def use(core, token, evse=None, parent=None, now=NOW):
    return core.apply(UseReservation(token, evse, parent), now)


def charging_possible(core, evse, now=NOW):
    return core.apply(IsChargingPossible(evse), now).result


# -- reserve_now: the checks that come first -------------------------------------------

def test_reservations_disabled_rejects_even_what_would_be_occupied():
    core = make_core(reservations_enabled=False)
    plug(core, 1)
    outcome = reserve(core, 1, evse=1)
    assert outcome.result == "Rejected"
    assert outcome.updates == []
    assert reserve(core, 2).result == "Rejected"
    assert live(core) == []


def test_no_evse_id_with_non_evse_specific_disabled_is_rejected():
    core = make_core(non_evse_specific=False)
    outcome = reserve(core, 1)
    assert outcome.result == "Rejected"
    assert outcome.updates == []
    assert live(core) == []


def test_get_state_tells_what_the_station_takes():
    # A bridge (OCPP ReserveConnectorZeroSupported, ReservationCtrlr) learns it here.
    assert {k: state(make_core())[k] for k in ("reservations_enabled", "non_evse_specific")} == \
        {"reservations_enabled": True, "non_evse_specific": True}
    core = make_core(reservations_enabled=False, non_evse_specific=False)
    assert (state(core)["reservations_enabled"], state(core)["non_evse_specific"]) == (False, False)


def test_non_evse_specific_disabled_still_accepts_specific():
    core = make_core(non_evse_specific=False)
    assert reserve(core, 1, evse=1).result == "Accepted"


def test_expiry_equal_to_now_is_rejected_before_the_evse_checks():
    core = make_core()
    accept(core, 1, evse=1)
    # Would be Occupied (EVSE 1 holds another), but the expiry check comes first.
    assert reserve(core, 2, evse=1, expiry=NOW).result == "Rejected"
    assert reserve(core, 3, expiry=NOW).result == "Rejected"
    assert live(core) == [1]


def test_expiry_before_now_is_rejected():
    core = make_core()
    assert reserve(core, 1, evse=1, expiry=NOW - 1).result == "Rejected"
    assert live(core) == []


def test_expiry_just_after_now_is_accepted():
    core = make_core()
    assert reserve(core, 1, evse=1, expiry=NOW + 0.001).result == "Accepted"


# -- reserve_now: EVSE-specific ------------------------------------------------------------

def test_specific_on_evse_holding_another_specific_is_occupied():
    core = make_core()
    accept(core, 1, evse=1, ctype=CCS)
    assert reserve(core, 2, evse=1, ctype=T2).result == "Occupied"
    # Checked before the connector type: T1 is not at this EVSE at all.
    assert reserve(core, 3, evse=1, ctype=T1).result == "Occupied"
    assert live(core) == [1]


def test_specific_on_unknown_evse_is_rejected():
    core = make_core()
    outcome = reserve(core, 1, evse=99)
    assert outcome.result == "Rejected"
    assert outcome.updates == []


def test_specific_without_connector_of_the_type_is_rejected():
    core = make_core()
    plug(core, 1)   # would be Occupied, but the type check comes first
    assert reserve(core, 1, evse=1, ctype=T1).result == "Rejected"
    assert reserve(core, 2, evse=2, ctype=T1).result == "Rejected"


def test_specific_unknown_connector_matches_every_type():
    core = make_core([(1, [(1, UNKNOWN)])])
    assert reserve(core, 1, evse=1, ctype=T1).result == "Accepted"


def test_specific_absent_or_unknown_connector_type_matches_every_connector():
    core = make_core([(1, [(1, T2)]), (2, [(1, CCS)])])
    assert reserve(core, 1, evse=1).result == "Accepted"
    assert reserve(core, 2, evse=2, ctype=UNKNOWN).result == "Accepted"


def test_specific_on_plugged_in_evse_is_occupied():
    core = make_core()
    plug(core, 1)
    assert reserve(core, 1, evse=1, ctype=CCS).result == "Occupied"


def test_specific_with_any_connector_occupied_is_occupied():
    core = make_core()
    event(core, 1, 2, "TransactionStarted")          # the cType2 connector
    assert reserve(core, 1, evse=1, ctype=CCS).result == "Occupied"


def test_specific_with_a_connector_faulted_occupied_is_faulted():
    core = make_core()
    event(core, 1, 2, "TransactionStarted")
    assert event(core, 1, 2, "Faulted").result == "FaultedOccupied"
    assert reserve(core, 1, evse=1, ctype=CCS).result == "Faulted"


@pytest.mark.parametrize("events,expected", [
    (["Disable"], "Unavailable"),
    (["Faulted"], "Faulted"),
    (["Disable", "Faulted"], "Faulted"),      # UnavailableFaulted counts as Faulted
])
def test_specific_with_its_connector_not_available_answers_its_state(events, expected):
    core = make_core()
    for name in events:
        event(core, 1, 1, name)
    assert reserve(core, 1, evse=1, ctype=CCS).result == expected


def test_specific_not_available_answers_strongest_over_connectors_of_the_type():
    core = make_core([(1, [(1, CCS), (2, CCS), (3, T2)])])
    event(core, 1, 1, "Disable")
    event(core, 1, 2, "Faulted")
    assert reserve(core, 1, evse=1, ctype=CCS).result == "Faulted"


def test_specific_not_available_ignores_connectors_of_other_types():
    core = make_core()
    event(core, 1, 1, "Disable")      # cCCS2: Unavailable
    event(core, 1, 2, "Faulted")      # cType2: Faulted, not the requested type
    assert reserve(core, 1, evse=1, ctype=CCS).result == "Unavailable"


def test_specific_is_accepted_when_one_connector_of_the_type_is_available():
    core = make_core([(1, [(1, CCS), (2, CCS)])])
    event(core, 1, 1, "Faulted")
    assert reserve(core, 1, evse=1, ctype=CCS).result == "Accepted"


def test_specific_that_would_break_non_specific_guarantee_is_occupied():
    core = make_core(SPLIT)
    accept(core, 1, ctype=CCS)                       # needs EVSE 1, the only cCCS2
    outcome = reserve(core, 2, evse=1, ctype=CCS)
    assert outcome.result == "Occupied"
    assert outcome.updates == []
    assert reserve(core, 3, evse=2, ctype=T2).result == "Accepted"


def test_specific_accepted_publishes_placed_and_evse_reserved():
    core = make_core()
    outcome = reserve(core, 7, evse=2, ctype=CCS)
    assert outcome.result == "Accepted"
    assert statuses(outcome.updates) == [(7, "Placed")]
    assert reserved(outcome.updates) == {2: (True, 7)}
    assert live(core) == [7]
    assert shown(core) == {1: False, 2: True}


# -- reserve_now: non-EVSE-specific ------------------------------------------------------------

def test_non_specific_for_type_no_evse_has_is_rejected():
    core = make_core()
    outcome = reserve(core, 1, ctype=T1)
    assert outcome.result == "Rejected"
    assert outcome.updates == []


def test_non_specific_type_check_counts_unknown_connectors():
    core = make_core([(1, [(1, UNKNOWN)])])
    assert reserve(core, 1, ctype=T1).result == "Accepted"


def test_non_specific_accepted_publishes_placed():
    core = make_core()
    outcome = reserve(core, 1, ctype=CCS)
    assert outcome.result == "Accepted"
    assert statuses(outcome.updates) == [(1, "Placed")]
    assert live(core) == [1]


def test_non_specific_without_room_is_occupied_when_reservations_exist():
    core = make_core()
    accept(core, 1, ctype=CCS)
    accept(core, 2, ctype=CCS)
    outcome = reserve(core, 3, ctype=CCS)
    assert outcome.result == "Occupied"
    assert outcome.updates == []
    assert live(core) == [1, 2]


def test_non_specific_failing_is_occupied_when_any_reservation_exists_whatever_states():
    core = make_core(SPLIT)
    accept(core, 1, evse=2, ctype=T2)     # a specific one, on the other EVSE
    event(core, 1, 1, "Faulted")           # the only cCCS2 would answer Faulted
    assert reserve(core, 2, ctype=CCS).result == "Occupied"


def test_non_specific_failing_is_occupied_when_any_evse_is_plugged_in():
    core = make_core(SPLIT)
    plug(core, 2)                          # the cType2 EVSE, not one of the type
    event(core, 1, 1, "Faulted")
    assert reserve(core, 1, ctype=CCS).result == "Occupied"


@pytest.mark.parametrize("first,second,expected", [
    (["Disable"], ["Disable"], "Unavailable"),
    (["Disable"], ["Faulted"], "Faulted"),
    (["Disable", "Faulted"], ["Disable"], "Faulted"),     # UnavailableFaulted
    (["Faulted"], ["Faulted"], "Faulted"),
])
def test_non_specific_failing_answers_strongest_state_of_the_type(first, second, expected):
    core = make_core()
    for name in first:
        event(core, 1, 1, name)
    for name in second:
        event(core, 2, 1, name)
    assert reserve(core, 1, ctype=CCS).result == expected


def test_non_specific_failing_ignores_states_of_other_types():
    core = make_core()
    event(core, 1, 1, "Disable")
    event(core, 2, 1, "Disable")
    event(core, 1, 2, "Faulted")            # cType2 connectors are not asked about
    event(core, 2, 2, "Faulted")
    assert reserve(core, 1, ctype=CCS).result == "Unavailable"


def test_non_specific_failing_counts_an_evse_in_use_as_occupied():
    core = make_core()
    event(core, 1, 2, "TransactionStarted")   # EVSE 1 in use via its cType2
    event(core, 2, 1, "Faulted")
    # EVSE 1's cCCS2 connector is Available, but the EVSE is in use.
    assert reserve(core, 1, ctype=CCS).result == "Occupied"


# -- replacement (same reservation_id) ------------------------------------------------------

def test_replacement_is_decided_as_if_the_old_one_were_gone():
    core = make_core([(1, [(1, CCS)])])
    accept(core, 1, "OLD")
    assert reserve(core, 2, "OTHER").result == "Occupied"    # the station is full
    outcome = reserve(core, 1, "NEW")
    assert outcome.result == "Accepted"
    assert [r["id_token"] for r in state(core)["reservations"]] == ["NEW"]


def test_accepted_replacement_publishes_only_placed():
    core = make_core()
    accept(core, 1, "OLD", ctype=CCS)
    outcome = reserve(core, 1, "NEW", ctype=T2)
    assert outcome.result == "Accepted"
    assert statuses(outcome.updates) == [(1, "Placed")]


def test_accepted_specific_replacement_moves_the_reservation():
    core = make_core()
    accept(core, 1, evse=1)
    outcome = reserve(core, 1, evse=2)
    assert outcome.result == "Accepted"
    assert statuses(outcome.updates) == [(1, "Placed")]
    assert reserved(outcome.updates) == {1: (False, None), 2: (True, 1)}
    assert [r.get("evse_id") for r in state(core)["reservations"]] == [2]
    # EVSE 1 is free for someone else now.
    assert reserve(core, 2, evse=1).result == "Accepted"


def test_accepted_replacement_expires_at_its_new_time_only():
    core = make_core()
    accept(core, 1, evse=1, expiry=NOW + 30)
    accept(core, 1, evse=1, expiry=NOW + 90)
    assert core.expire(NOW + 30 + 2 * TICK) == []
    assert live(core, NOW + 30 + 2 * TICK) == [1]
    assert statuses(core.expire(NOW + 90 + TICK)) == [(1, "Expired")]


@pytest.mark.parametrize("replacement,expected", [
    (dict(evse=99), "Rejected"),                       # unknown EVSE
    (dict(evse=1, ctype=T1), "Rejected"),              # no such connector type
    (dict(evse=3), "Occupied"),                        # EVSE 3 holds reservation 3
    (dict(expiry=NOW), "Rejected"),                    # expiry not after now
    (dict(ctype=T1), "Rejected"),                      # non-specific, no such type
])
def test_refused_replacement_leaves_the_old_one_untouched(replacement, expected):
    core = make_core(DUAL + [(3, [(1, CCS), (2, T2)])])
    accept(core, 1, "A", ctype=CCS)
    accept(core, 2, "B", evse=1, expiry=NOW + 30)
    accept(core, 3, "C", evse=3)
    before = state(core)
    kwargs = {"expiry": NOW + 90, **replacement}
    outcome = reserve(core, 2, "NEW", **kwargs)
    assert outcome.result == expected
    assert outcome.updates == []
    assert state(core) == before               # same reservations, same order
    # Still expires at its old time.
    assert statuses(core.expire(NOW + 30 + TICK)) == [(2, "Expired")]


def test_refused_non_specific_replacement_keeps_old_one_counted():
    core = make_core([(1, [(1, CCS)])])
    accept(core, 1, "OLD")
    assert reserve(core, 1, "NEW", ctype=T1).result == "Rejected"
    assert reserve(core, 2, "OTHER").result == "Occupied"
    assert exists(core, "OLD") == "ReservedForToken"
    assert exists(core, "NEW") == "NotReserved"


# -- cancel_reservation ---------------------------------------------------------------------------

def test_cancel_active_returns_true_and_publishes_cancelled():
    core = make_core()
    accept(core, 5, evse=1)
    outcome = core.apply(CancelReservation(5), NOW)
    assert outcome.result is True
    assert statuses(outcome.updates) == [(5, "Cancelled")]
    assert reserved(outcome.updates) == {1: (False, None)}
    assert live(core) == []


def test_cancel_unknown_returns_false_and_publishes_nothing():
    core = make_core()
    accept(core, 5)
    outcome = core.apply(CancelReservation(6), NOW)
    assert outcome.result is False
    assert outcome.updates == []
    assert live(core) == [5]


def test_cancel_twice_second_is_false():
    core = make_core()
    accept(core, 5)
    assert core.apply(CancelReservation(5), NOW).result is True
    assert core.apply(CancelReservation(5), NOW).result is False


def test_cancelled_reservation_does_not_expire_later():
    core = make_core()
    accept(core, 5)
    core.apply(CancelReservation(5), NOW)
    assert core.expire(EXPIRY + 1) == []


# -- use_reservation ---------------------------------------------------------------------------------

def test_use_matches_id_token_case_insensitively_and_publishes_used():
    core = make_core()
    accept(core, 4, "AbCdEf")
    outcome = use(core, "aBcDeF")
    assert outcome.result == 4
    assert statuses(outcome.updates) == [(4, "Used")]
    assert live(core) == []


def test_use_matches_equal_parent_tokens_case_insensitively():
    core = make_core()
    accept(core, 4, "CARD-1", parent="Fleet")
    outcome = use(core, "CARD-2", parent="FLEET")
    assert outcome.result == 4
    assert statuses(outcome.updates) == [(4, "Used")]


def test_use_parent_token_on_one_side_only_does_not_match():
    core = make_core()
    accept(core, 4, "CARD-1", parent="FLEET")
    accept(core, 5, "CARD-3")
    assert use(core, "CARD-2").result is None                     # reservation has a parent, caller none
    assert use(core, "CARD-4", parent="CARD-3").result is None    # caller has a parent, reservation none
    assert live(core) == [4, 5]


def test_use_without_match_returns_none_and_publishes_nothing():
    core = make_core()
    accept(core, 4, "MINE")
    outcome = use(core, "THEIRS")
    assert outcome.result is None
    assert outcome.updates == []
    assert live(core) == [4]


def test_use_on_evse_with_specific_only_that_one_can_match():
    core = make_core()
    accept(core, 1, "SPECIFIC", evse=1)
    accept(core, 2, "GLOBAL")
    outcome = use(core, "GLOBAL", evse=1)
    assert outcome.result is None
    assert outcome.updates == []
    outcome = use(core, "specific", evse=1)
    assert outcome.result == 1
    assert statuses(outcome.updates) == [(1, "Used")]
    # EVSE 1 is free again, so EVSE 2 no longer has to be held for GLOBAL either.
    assert reserved(outcome.updates) == {1: (False, None), 2: (False, None)}
    assert live(core) == [2]


def test_use_on_evse_without_specific_searches_non_specific():
    core = make_core()
    accept(core, 1, "SPECIFIC", evse=1)
    accept(core, 2, "GLOBAL")
    assert use(core, "GLOBAL", evse=2).result == 2


def test_use_without_evse_does_not_consume_a_specific_reservation():
    core = make_core()
    accept(core, 1, "SPECIFIC", evse=1)
    assert use(core, "SPECIFIC").result is None
    assert use(core, "SPECIFIC", evse=2).result is None
    assert live(core) == [1]


# -- exists_reservation ------------------------------------------------------------------------------

def test_exists_specific_token_matches_case_insensitively():
    core = make_core()
    accept(core, 1, "Token-A", evse=1)
    assert exists(core, "TOKEN-a", evse=1) == "ReservedForToken"


def test_exists_specific_group_token_matches_parent():
    core = make_core()
    accept(core, 1, "TOKEN-A", evse=1, parent="Group")
    assert exists(core, "TOKEN-B", evse=1, group="GROUP") == "ReservedForToken"


def test_exists_specific_other_token_with_parent_and_no_group_given():
    core = make_core()
    accept(core, 1, "TOKEN-A", evse=1, parent="GROUP")
    assert exists(core, "TOKEN-B", evse=1) == "ReservedForOtherTokenAndHasParentToken"


def test_exists_specific_other_token_with_non_matching_group_given():
    core = make_core()
    accept(core, 1, "TOKEN-A", evse=1, parent="GROUP")
    assert exists(core, "TOKEN-B", evse=1, group="OTHER-GROUP") == "ReservedForOtherToken"


def test_exists_specific_other_token_without_parent():
    core = make_core()
    accept(core, 1, "TOKEN-A", evse=1)
    assert exists(core, "TOKEN-B", evse=1) == "ReservedForOtherToken"
    assert exists(core, "TOKEN-B", evse=1, group="GROUP") == "ReservedForOtherToken"


def test_exists_specific_other_token_ignores_matching_non_specific():
    core = make_core()
    accept(core, 1, "TOKEN-A", evse=1)
    accept(core, 2, "TOKEN-B")
    assert exists(core, "TOKEN-B", evse=1) == "ReservedForOtherToken"


def test_exists_evse_without_specific_finds_non_specific():
    core = make_core()
    accept(core, 1, "TOKEN-A", evse=1)
    accept(core, 2, "TOKEN-B", parent="FLEET")
    assert exists(core, "token-b", evse=2) == "ReservedForToken"
    assert exists(core, "TOKEN-C", evse=2, group="fleet") == "ReservedForToken"


def test_exists_evse_without_specific_and_no_non_specific_match_is_not_reserved():
    core = make_core()
    accept(core, 1, "TOKEN-A", evse=1)
    accept(core, 2, "TOKEN-B")
    # TOKEN-A's reservation is on EVSE 1, not this one.
    assert exists(core, "TOKEN-A", evse=2) == "NotReserved"
    assert exists(core, "TOKEN-C", evse=2) == "NotReserved"


def test_exists_without_evse_finds_only_non_specific():
    core = make_core()
    accept(core, 1, "TOKEN-A", evse=1)
    accept(core, 2, "TOKEN-B", parent="FLEET")
    assert exists(core, "TOKEN-B") == "ReservedForToken"
    assert exists(core, "TOKEN-C", group="FLEET") == "ReservedForToken"
    assert exists(core, "TOKEN-A") == "NotReserved"
    assert exists(core, "TOKEN-C") == "NotReserved"


def test_exists_changes_nothing():
    core = make_core()
    accept(core, 1, "TOKEN-A", evse=1)
    before = state(core)
    outcome = core.apply(ExistsReservation("TOKEN-A", 1), NOW)
    assert outcome.updates == []
    assert state(core) == before


# -- connector_event -----------------------------------------------------------------------------------

def test_connector_event_returns_the_new_state():
    core = make_core()
    assert event(core, 1, 1, "TransactionStarted").result == "Occupied"
    assert event(core, 1, 1, "Faulted").result == "FaultedOccupied"
    assert event(core, 1, 1, "Enable").result == "FaultedOccupied"    # does not apply
    assert event(core, 1, 1, "SessionFinished").result == "Faulted"
    states = {(e["id"], c["id"]): c["state"] for e in state(core)["evses"] for c in e["connectors"]}
    assert states == {(1, 1): "Faulted", (1, 2): "Available", (2, 1): "Available", (2, 2): "Available"}


@pytest.mark.parametrize("evse,connector", [(99, 1), (1, 99)])
def test_connector_event_unknown_evse_or_connector_is_invalid_and_changes_nothing(evse, connector):
    core = make_core()
    accept(core, 1, evse=1)
    accept(core, 2)
    before = state(core)
    with pytest.raises(ProtocolError) as info:
        event(core, evse, connector, "Faulted")
    assert info.value.code == "invalid_argument"
    assert state(core) == before


def test_connector_leaving_not_available_removes_matching_specific():
    core = make_core()
    accept(core, 1, evse=1, ctype=CCS)
    outcome = event(core, 1, 1, "Faulted")
    assert statuses(outcome.updates) == [(1, "Removed")]
    assert reserved(outcome.updates) == {1: (False, None)}
    assert live(core) == []


def test_connector_of_other_type_leaving_available_keeps_specific():
    core = make_core()
    accept(core, 1, evse=1, ctype=CCS)
    outcome = event(core, 1, 2, "Faulted")          # the cType2 connector
    assert statuses(outcome.updates) == []
    assert live(core) == [1]


def test_connector_event_on_other_evse_keeps_specific():
    core = make_core()
    accept(core, 1, evse=1, ctype=CCS)
    assert statuses(event(core, 2, 1, "Disable").updates) == []
    assert live(core) == [1]


@pytest.mark.parametrize("ctype", [None, UNKNOWN])
def test_specific_without_type_is_removed_by_any_connector(ctype):
    core = make_core()
    accept(core, 1, evse=1, ctype=ctype)
    assert statuses(event(core, 1, 2, "Disable").updates) == [(1, "Removed")]


def test_specific_is_removed_by_unknown_type_connector():
    core = make_core([(1, [(1, CCS), (2, UNKNOWN)])])
    accept(core, 1, evse=1, ctype=CCS)
    assert statuses(event(core, 1, 2, "TransactionStarted").updates) == [(1, "Removed")]


def test_connector_event_to_available_removes_nothing():
    core = make_core([(1, [(1, CCS), (2, CCS)])])
    event(core, 1, 1, "Disable")
    accept(core, 1, evse=1, ctype=CCS)
    outcome = event(core, 1, 1, "Enable")
    assert outcome.result == "Available"
    assert statuses(outcome.updates) == []
    assert live(core) == [1]


def test_connector_event_removes_newest_non_specific_that_no_longer_fits():
    core = make_core()
    accept(core, 1, ctype=CCS)       # older
    accept(core, 2, ctype=T2)        # newer
    outcome = event(core, 1, 1, "TransactionStarted")    # EVSE 1 in use: one EVSE left
    assert statuses(outcome.updates) == [(2, "Removed")]
    assert live(core) == [1]


def test_connector_event_recheck_keeps_later_ones_that_fit_beside_the_kept():
    core = make_core([(1, [(1, CCS)]), (2, [(1, CCS)]), (3, [(1, T2)])])
    accept(core, 1, ctype=CCS)
    accept(core, 2, ctype=CCS)
    accept(core, 3, ctype=T2)
    outcome = event(core, 2, 1, "Faulted")     # one cCCS2 EVSE left
    # 1 is kept; 2 no longer fits beside it; 3 still fits beside 1.
    assert statuses(outcome.updates) == [(2, "Removed")]
    assert live(core) == [1, 3]


def test_connector_event_on_a_free_evse_can_strand_non_specific():
    core = make_core()
    accept(core, 1, ctype=CCS)
    accept(core, 2, evse=1, ctype=CCS)
    # EVSE 2's cCCS2 faults: EVSE 2 is free but cannot serve cCCS2 any more,
    # and EVSE 1 is held by 2, so 1 is stranded.
    outcome = event(core, 2, 1, "Faulted")
    assert statuses(outcome.updates) == [(1, "Removed")]
    assert live(core) == [2]
    # EVSE 1's cCCS2 faults: 2 goes; with EVSE 1 freed nothing else is left to check.
    outcome = event(core, 1, 1, "Faulted")
    assert statuses(outcome.updates) == [(2, "Removed")]


def test_specific_removal_comes_before_the_non_specific_recheck():
    core = make_core([(1, [(1, CCS), (2, T2)]), (2, [(1, T2)])])
    accept(core, 1, ctype=T2)
    accept(core, 2, evse=1, ctype=CCS)
    # Plugging in is no re-check (the spec re-checks after connector events),
    # so reservation 1 now has no free EVSE left until EVSE 1 is freed.
    plug(core, 2)
    assert live(core) == [1, 2], "setup: plugging in removed a reservation"
    # EVSE 1's cCCS2 faults: 2 is Removed first; EVSE 1 (cType2 still
    # Available) is then free, so the re-check finds room for 1 and keeps it.
    outcome = event(core, 1, 1, "Faulted")
    assert statuses(outcome.updates) == [(2, "Removed")]
    assert live(core) == [1]


# -- plug_event ---------------------------------------------------------------------------------------------

def test_plug_event_recomputes_evse_reserved():
    core = make_core()
    accept(core, 1, ctype=CCS)
    accept(core, 2, ctype=CCS)
    assert shown(core) == {1: True, 2: True}     # two free EVSEs, two reservations
    outcome = plug(core, 1)
    assert outcome.result is None
    # One free EVSE left and cCCS2 is full: only EVSE 2 is held.
    assert reserved(outcome.updates) == {1: (False, None)}
    assert shown(core) == {1: False, 2: True}
    outcome = plug(core, 1, False)
    assert reserved(outcome.updates) == {1: (True, HELD)}
    evses = {e["id"]: e for e in state(core)["evses"]}
    assert evses[1]["plugged_in"] is False


def test_plug_event_sets_plugged_in():
    core = make_core()
    plug(core, 2)
    assert {e["id"]: e["plugged_in"] for e in state(core)["evses"]} == {1: False, 2: True}


def test_plug_event_unknown_evse_is_invalid_and_changes_nothing():
    core = make_core()
    accept(core, 1)
    before = state(core)
    with pytest.raises(ProtocolError) as info:
        plug(core, 99)
    assert info.value.code == "invalid_argument"
    assert state(core) == before


# -- is_charging_possible ---------------------------------------------------------------------------------------

def test_charging_not_possible_on_unknown_evse():
    assert charging_possible(make_core(), 99) is False


def test_charging_not_possible_on_evse_with_specific():
    core = make_core()
    accept(core, 1, evse=1)
    assert charging_possible(core, 1) is False
    assert charging_possible(core, 2) is True


def test_charging_possible_without_reservations():
    core = make_core()
    assert charging_possible(core, 1) is True
    assert charging_possible(core, 2) is True


def test_charging_possible_follows_the_guarantee():
    core = make_core(SPLIT)
    accept(core, 1, ctype=CCS)
    assert charging_possible(core, 1) is False    # the only cCCS2 EVSE
    assert charging_possible(core, 2) is True


def test_charging_possible_while_room_remains():
    core = make_core()
    accept(core, 1, ctype=CCS)
    assert charging_possible(core, 1) is True
    accept(core, 2, ctype=T2)
    assert charging_possible(core, 1) is False
    assert charging_possible(core, 2) is False


# -- evse_reserved for non-EVSE-specific reservations --------------------------------------------

def test_as_many_non_specific_as_available_free_evses_holds_them_all():
    core = make_core()
    accept(core, 1, ctype=CCS)
    outcome = reserve(core, 2, ctype=CCS)
    assert outcome.result == "Accepted"
    assert reserved(outcome.updates) == {1: (True, HELD), 2: (True, HELD)}
    assert shown(core) == {1: True, 2: True}


def test_evse_without_available_connector_is_not_counted_nor_held():
    core = make_core([(1, [(1, CCS)]), (2, [(1, CCS)]), (3, [(1, UNKNOWN)])])
    event(core, 3, 1, "Disable")
    accept(core, 1)
    outcome = reserve(core, 2)
    assert outcome.result == "Accepted"
    assert reserved(outcome.updates) == {1: (True, HELD), 2: (True, HELD)}
    assert shown(core) == {1: True, 2: True, 3: False}


def test_evse_with_specific_shows_its_own_id_not_held():
    core = make_core([(1, [(1, CCS)]), (2, [(1, CCS)]), (3, [(1, CCS)])])
    assert reserved(accept(core, 9, evse=3).updates) == {3: (True, 9)}
    accept(core, 1)
    outcome = reserve(core, 2)
    assert outcome.result == "Accepted"
    assert reserved(outcome.updates) == {1: (True, HELD), 2: (True, HELD)}
    evses = {e["id"]: e for e in state(core)["evses"]}
    assert evses[3]["reserved"] is True


def test_specific_reservation_with_id_minus_one_is_not_taken_for_held():
    # Any int32 is a client's reservation id; -1 once also meant "held".
    core = make_core([(1, [(1, CCS)]), (2, [(1, CCS)]), (3, [(1, CCS)])])
    assert reserved(accept(core, -1, evse=1).updates) == {1: (True, -1)}
    accept(core, 5)
    assert reserved(accept(core, 6).updates) == {2: (True, HELD), 3: (True, HELD)}
    assert [(e["reserved"], e["reservation_id"], e["held_for_non_evse_specific"])
            for e in state(core)["evses"]] == [(True, -1, False), (True, None, True),
                                               (True, None, True)]


def test_non_specific_holds_only_types_where_one_more_would_break():
    core = make_core(SPLIT)
    outcome = reserve(core, 1, ctype=CCS)
    assert outcome.result == "Accepted"
    # Two free EVSEs, one reservation; another cCCS2 would not fit: EVSE 1 held.
    assert reserved(outcome.updates) == {1: (True, HELD)}
    assert shown(core) == {1: True, 2: False}


def test_non_specific_with_room_for_one_more_holds_nothing():
    core = make_core()
    outcome = reserve(core, 1, ctype=CCS)
    assert outcome.result == "Accepted"
    assert reserved(outcome.updates) == {}
    assert shown(core) == {1: False, 2: False}


def test_evse_reserved_is_published_only_on_change():
    core = make_core([(1, [(1, CCS)]), (2, [(1, CCS)]), (3, [(1, T2)])])
    assert reserved(reserve(core, 1, ctype=CCS).updates) == {}
    # cCCS2 is full now: both cCCS2 EVSEs held, the cType2 one not.
    assert reserved(reserve(core, 2, ctype=CCS).updates) == {1: (True, HELD), 2: (True, HELD)}
    # Three free EVSEs, three reservations: all held; only EVSE 3 changed.
    assert reserved(reserve(core, 3, ctype=T2).updates) == {3: (True, HELD)}
    # Cancelling the cType2 one releases only EVSE 3.
    outcome = core.apply(CancelReservation(3), NOW)
    assert reserved(outcome.updates) == {3: (False, None)}


def test_evse_reserved_released_when_non_specific_ends():
    core = make_core(SPLIT)
    accept(core, 1, "CAR", ctype=CCS)
    outcome = use(core, "CAR")
    assert outcome.result == 1
    assert reserved(outcome.updates) == {1: (False, None)}
    assert shown(core) == {1: False, 2: False}


# -- seq ---------------------------------------------------------------------------------------------------

def test_seq_is_one_gap_free_counter_over_all_topics():
    core = make_core()
    start = state(core)["seq"]
    updates = []
    updates += reserve(core, 1, evse=1, ctype=CCS).updates
    updates += reserve(core, 2, ctype=CCS).updates
    updates += reserve(core, 3, ctype=T2).updates                   # fails, nothing published
    updates += core.apply(CancelReservation(99), NOW).updates       # nothing
    updates += event(core, 1, 1, "Faulted").updates                 # removes 1
    updates += plug(core, 2).updates
    updates += use(core, "TOKEN").updates
    updates += core.expire(EXPIRY + 1)
    topics = {topic for topic, _ in updates}
    assert topics == {UPDATE, RESERVED, "evse_state"}
    assert [body["seq"] for _, body in updates] == list(range(start + 1, start + 1 + len(updates)))
    assert state(core, EXPIRY + 1)["seq"] == start + len(updates)


def test_get_state_seq_is_that_of_the_last_update():
    core = make_core()
    outcome = reserve(core, 1, evse=2)
    assert state(core)["seq"] == outcome.updates[-1][1]["seq"]


# -- expiry ----------------------------------------------------------------------------------------------------

def test_not_expired_before_expiry_time():
    core = make_core()
    accept(core, 1, evse=1, expiry=NOW + 60.004)
    assert core.expire(NOW + 60.003) == []
    assert live(core, NOW + 60.003) == [1]


def test_expired_within_a_tick_of_expiry_time():
    core = make_core()
    expiry = NOW + 60.004
    accept(core, 1, evse=1, expiry=expiry)
    updates = core.expire(expiry + TICK)
    assert statuses(updates) == [(1, "Expired")]
    assert reserved(updates) == {1: (False, None)}
    assert live(core, expiry + TICK) == []
    assert core.expire(expiry + 1) == []           # ends once


def test_expired_at_expiry_time_on_a_tick_boundary():
    core = make_core()
    accept(core, 1, evse=1, expiry=NOW + 60)
    assert core.expire(NOW + 59.999) == []
    assert statuses(core.expire(NOW + 60 + TICK)) == [(1, "Expired")]


def test_each_reservation_expires_at_its_own_time():
    core = make_core(DUAL + [(3, [(1, CCS), (2, T2)])])
    accept(core, 1, evse=1, expiry=NOW + 50)
    accept(core, 2, evse=2, expiry=NOW + 40)
    accept(core, 3, ctype=CCS, expiry=NOW + 45)
    assert statuses(core.expire(NOW + 42)) == [(2, "Expired")]
    assert sorted(statuses(core.expire(NOW + 100))) == [(1, "Expired"), (3, "Expired")]


def test_apply_at_a_later_time_expires_due_reservations_first():
    core = make_core([(1, [(1, CCS)])])
    accept(core, 1, "FIRST", expiry=NOW + 60)
    later = NOW + 61
    outcome = reserve(core, 2, "SECOND", now=later, expiry=later + 60)
    # Reservation 1 takes no part: the single EVSE is free for reservation 2.
    assert outcome.result == "Accepted"
    assert statuses(outcome.updates) == [(1, "Expired"), (2, "Placed")]


def test_expired_specific_takes_no_part_in_use_or_exists():
    core = make_core()
    accept(core, 1, "CAR", evse=1, expiry=NOW + 60)
    later = NOW + 61
    assert exists(core, "OTHER", evse=1, now=later) == "NotReserved"
    assert use(core, "CAR", evse=1, now=later).result is None
    assert charging_possible(core, 1, now=later) is True


def test_apply_before_expiry_keeps_the_reservation():
    core = make_core()
    accept(core, 1, "CAR", evse=1, expiry=NOW + 60)
    outcome = use(core, "CAR", evse=1, now=NOW + 59.99)
    assert outcome.result == 1
    assert statuses(outcome.updates) == [(1, "Used")]


def test_next_expiry_is_within_a_tick_of_the_earliest_expiry():
    core = make_core()
    assert core.next_expiry() is None
    expiry = NOW + 60.004
    accept(core, 1, evse=1, expiry=NOW + 90)
    accept(core, 2, evse=2, expiry=expiry)
    wake = core.next_expiry()
    assert wake is not None
    assert NOW <= wake <= expiry + TICK


def test_sleeping_until_next_expiry_ends_the_reservation_in_time():
    # What the actor does: poll until next_expiry(), then expire(); repeat.
    core = make_core()
    expiry = NOW + 60.004
    accept(core, 1, evse=1, expiry=expiry)
    fired = []
    now = NOW
    for _ in range(20):
        now = core.next_expiry()
        assert now is not None
        fired = core.expire(now)
        if fired:
            break
    assert statuses(fired) == [(1, "Expired")]
    assert expiry <= now <= expiry + TICK
    assert core.next_expiry() is None


# -- get_state -----------------------------------------------------------------------------------------------------

def test_get_state_shape_and_content():
    core = make_core()
    specific = request(1, "TOKEN-A", evse=2, ctype=CCS, parent="GROUP")
    global_ = request(2, "TOKEN-B")
    updates = []
    for sent in (specific, global_):
        outcome = core.apply(parse_command("reserve_now", {"request": sent}), NOW)
        assert outcome.result == "Accepted"
        updates += outcome.updates
    updates += event(core, 1, 2, "Disable").updates
    updates += plug(core, 1).updates
    snapshot = state(core)
    assert snapshot["seq"] == updates[-1][1]["seq"]
    # Reservations as the client sent them, oldest first.
    assert snapshot["reservations"] == [specific, global_]
    evses = snapshot["evses"]
    assert [e["id"] for e in evses] == [1, 2]
    for e in evses:
        assert {"id", "plugged_in", "reserved", "connectors"} <= e.keys()
    assert [(e["plugged_in"], e["reserved"]) for e in evses] == [(True, False), (False, True)]
    assert evses[0]["connectors"] == [{"id": 1, "type": CCS, "state": "Available"},
                                      {"id": 2, "type": T2, "state": "Unavailable"}]
    assert evses[1]["connectors"] == [{"id": 1, "type": CCS, "state": "Available"},
                                      {"id": 2, "type": T2, "state": "Available"}]


def test_get_state_of_fresh_station():
    snapshot = state(make_core([(3, [(1, UNKNOWN)]), (0, [(4, T2), (5, CCS)])]))
    assert snapshot["reservations"] == []
    evses = sorted(snapshot["evses"], key=lambda e: e["id"])
    assert [(e["id"], e["plugged_in"], e["reserved"], e["connectors"]) for e in evses] == [
        (0, False, False, [{"id": 4, "type": T2, "state": "Available"},
                           {"id": 5, "type": CCS, "state": "Available"}]),
        (3, False, False, [{"id": 1, "type": UNKNOWN, "state": "Available"}]),
    ]


def test_decide_leaves_its_updates_in_the_outbox_until_drained():
    core = make_core()
    assert core.decide(parse_command("reserve_now", {"request": request(1, evse=1)}), NOW) == "Accepted"
    placed = core.updates_to_publish()
    assert [(topic, body["seq"]) for topic, body in placed] == [(UPDATE, 1), (RESERVED, 2)]
    assert core.updates_to_publish() == []
    assert core.decide(ExistsReservation("TOKEN", 1), NOW) == "ReservedForToken"
    assert core.updates_to_publish() == []          # a read changes nothing
