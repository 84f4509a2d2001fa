"""The connector state machine, EVerest's, as one table.

Theory of operation: a connector is in exactly one of six states. Events come
from the EVSE manager (`connector_event`). A (state, event) pair missing from
TRANSITIONS is not an error: the event simply does not apply in that state and
the connector stays where it is, as EVerest does. "Faulted" combined with
"Unavailable" or "Occupied" is its own state so that clearing the error returns
to the right place.
"""

AVAILABLE = "Available"
UNAVAILABLE = "Unavailable"
FAULTED = "Faulted"
OCCUPIED = "Occupied"
UNAVAILABLE_FAULTED = "UnavailableFaulted"
FAULTED_OCCUPIED = "FaultedOccupied"

TRANSITIONS: dict[tuple[str, str], str] = {
    (AVAILABLE, "TransactionStarted"): OCCUPIED,
    (AVAILABLE, "Disable"): UNAVAILABLE,
    (AVAILABLE, "Faulted"): FAULTED,
    (UNAVAILABLE, "Enable"): AVAILABLE,
    (UNAVAILABLE, "Faulted"): UNAVAILABLE_FAULTED,
    (FAULTED, "ErrorCleared"): AVAILABLE,
    (FAULTED, "Disable"): UNAVAILABLE_FAULTED,
    (OCCUPIED, "SessionFinished"): AVAILABLE,
    (OCCUPIED, "Faulted"): FAULTED_OCCUPIED,
    (FAULTED_OCCUPIED, "ErrorCleared"): OCCUPIED,
    (FAULTED_OCCUPIED, "SessionFinished"): FAULTED,
    (UNAVAILABLE_FAULTED, "Enable"): FAULTED,
    (UNAVAILABLE_FAULTED, "ErrorCleared"): UNAVAILABLE,
}

# A car is on the EVSE: it cannot be free for anyone else.
IN_USE = frozenset({OCCUPIED, FAULTED_OCCUPIED})


def next_state(state: str, event: str) -> str:
    return TRANSITIONS.get((state, event), state)
