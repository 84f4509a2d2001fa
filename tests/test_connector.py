"""The connector state machine (issue 2, `connector_event`).

The expected table below is written out from the issue text, not taken from
actor.connector: every listed transition, and every other (state, event) pair
leaves the state as it is.
"""

import pytest

from actor.connector import next_state

STATES = ("Available", "Unavailable", "Faulted", "Occupied",
          "UnavailableFaulted", "FaultedOccupied")
EVENTS = ("Enable", "Disable", "Faulted", "ErrorCleared",
          "TransactionStarted", "SessionFinished")

# From the issue: "Available: TransactionStarted->Occupied, Disable->Unavailable,
# Faulted->Faulted; Unavailable: Enable->Available, Faulted->UnavailableFaulted;
# Faulted: ErrorCleared->Available, Disable->UnavailableFaulted; Occupied:
# SessionFinished->Available, Faulted->FaultedOccupied; FaultedOccupied:
# ErrorCleared->Occupied, SessionFinished->Faulted; UnavailableFaulted:
# Enable->Faulted, ErrorCleared->Unavailable".
SPEC_TRANSITIONS = {
    ("Available", "TransactionStarted"): "Occupied",
    ("Available", "Disable"): "Unavailable",
    ("Available", "Faulted"): "Faulted",
    ("Unavailable", "Enable"): "Available",
    ("Unavailable", "Faulted"): "UnavailableFaulted",
    ("Faulted", "ErrorCleared"): "Available",
    ("Faulted", "Disable"): "UnavailableFaulted",
    ("Occupied", "SessionFinished"): "Available",
    ("Occupied", "Faulted"): "FaultedOccupied",
    ("FaultedOccupied", "ErrorCleared"): "Occupied",
    ("FaultedOccupied", "SessionFinished"): "Faulted",
    ("UnavailableFaulted", "Enable"): "Faulted",
    ("UnavailableFaulted", "ErrorCleared"): "Unavailable",
}


def test_spec_table_has_thirteen_transitions_over_known_names():
    # Guards the table above against typos: a misspelt state or event would
    # turn a listed transition into a silently "unchanged" case below.
    assert len(SPEC_TRANSITIONS) == 13
    for (state, event), target in SPEC_TRANSITIONS.items():
        assert state in STATES and event in EVENTS and target in STATES


@pytest.mark.parametrize("state,event,target", [
    (state, event, target) for (state, event), target in SPEC_TRANSITIONS.items()])
def test_listed_transition(state, event, target):
    assert next_state(state, event) == target


@pytest.mark.parametrize("state,event", [
    (state, event) for state in STATES for event in EVENTS
    if (state, event) not in SPEC_TRANSITIONS])
def test_any_other_event_leaves_the_state_unchanged(state, event):
    assert next_state(state, event) == state

