"""The connector state machine, EVerest's, as one table.

Theory of operation: a connector is in exactly one of six states. Events come
from the EVSE manager (`connector_event`). A (state, event) pair missing from
TRANSITIONS is not an error: the event simply does not apply in that state and
the connector stays where it is, as EVerest does. "Faulted" combined with
"Unavailable" or "Occupied" is its own state so that clearing the error returns
to the right place.
"""

from protocol.vocabulary import ConnectorEventType as Event, ConnectorState as State

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.AVAILABLE, Event.TRANSACTION_STARTED): State.OCCUPIED,
    (State.AVAILABLE, Event.DISABLE): State.UNAVAILABLE,
    (State.AVAILABLE, Event.FAULTED): State.FAULTED,
    (State.UNAVAILABLE, Event.ENABLE): State.AVAILABLE,
    (State.UNAVAILABLE, Event.FAULTED): State.UNAVAILABLE_FAULTED,
    (State.FAULTED, Event.ERROR_CLEARED): State.AVAILABLE,
    (State.FAULTED, Event.DISABLE): State.UNAVAILABLE_FAULTED,
    (State.OCCUPIED, Event.SESSION_FINISHED): State.AVAILABLE,
    (State.OCCUPIED, Event.FAULTED): State.FAULTED_OCCUPIED,
    (State.FAULTED_OCCUPIED, Event.ERROR_CLEARED): State.OCCUPIED,
    (State.FAULTED_OCCUPIED, Event.SESSION_FINISHED): State.FAULTED,
    (State.UNAVAILABLE_FAULTED, Event.ENABLE): State.FAULTED,
    (State.UNAVAILABLE_FAULTED, Event.ERROR_CLEARED): State.UNAVAILABLE,
}

# A car is on the EVSE: it cannot be free for anyone else.
IN_USE = frozenset({State.OCCUPIED, State.FAULTED_OCCUPIED})


def next_state(state: State, event: Event) -> State:
    return TRANSITIONS.get((state, event), state)
