"""Every closed set of words the protocol uses, each defined once.

Theory of operation: each set is an `enum.StrEnum`, so a member is the very
string that travels on the wire (`ReservationResult.ACCEPTED == "Accepted"`,
msgpack encodes it as that string) while a misspelt member is an
AttributeError at import time instead of a silent mismatch at run time. The
validator, the core, the connector table, the guarantee check, the clients and
the bridges import these; nothing else spells a protocol word. Values are
EVerest's spellings (interfaces and types `reservation` and `evse_manager`),
except the error codes and topics, which are this protocol's own.
"""

from __future__ import annotations

from enum import StrEnum


class ReservationResult(StrEnum):
    """What reserve_now answers."""
    ACCEPTED = "Accepted"
    FAULTED = "Faulted"
    OCCUPIED = "Occupied"
    REJECTED = "Rejected"
    UNAVAILABLE = "Unavailable"


class ReservationCheckStatus(StrEnum):
    """What exists_reservation answers."""
    NOT_RESERVED = "NotReserved"
    RESERVED_FOR_TOKEN = "ReservedForToken"
    RESERVED_FOR_OTHER_TOKEN = "ReservedForOtherToken"
    RESERVED_FOR_OTHER_TOKEN_AND_HAS_PARENT_TOKEN = "ReservedForOtherTokenAndHasParentToken"


class ReservationUpdateStatus(StrEnum):
    """reservation_update's reservation_status."""
    PLACED = "Placed"
    CANCELLED = "Cancelled"
    REMOVED = "Removed"
    EXPIRED = "Expired"
    USED = "Used"


class ReservationEndReason(StrEnum):
    """Why a reservation ended (EVerest-internal); `status` is what is published."""
    EXPIRED = "Expired"
    CANCELLED = "Cancelled"
    USED_TO_START_CHARGING = "UsedToStartCharging"
    GLOBAL_RESERVATION_REQUIREMENT_DROPPED = "GlobalReservationRequirementDropped"
    # Not EVerest's: a connector of an EVSE-specific reservation's type left
    # Available. EVerest ends it Cancelled, but no one cancelled it.
    CONNECTOR_NOT_AVAILABLE = "ConnectorNotAvailable"

    @property
    def status(self) -> ReservationUpdateStatus:
        return _END_STATUS[self]


_END_STATUS = {
    ReservationEndReason.EXPIRED: ReservationUpdateStatus.EXPIRED,
    ReservationEndReason.CANCELLED: ReservationUpdateStatus.CANCELLED,
    ReservationEndReason.USED_TO_START_CHARGING: ReservationUpdateStatus.USED,
    ReservationEndReason.GLOBAL_RESERVATION_REQUIREMENT_DROPPED: ReservationUpdateStatus.REMOVED,
    ReservationEndReason.CONNECTOR_NOT_AVAILABLE: ReservationUpdateStatus.REMOVED,
}


class ConnectorType(StrEnum):
    """EVerest's ConnectorTypeEnum. Member names are the spellings themselves,
    because several of them are not valid upper-case identifiers."""
    cCCS1 = "cCCS1"
    cCCS2 = "cCCS2"
    cG105 = "cG105"
    cMCS = "cMCS"
    cTesla = "cTesla"
    cType1 = "cType1"
    cType2 = "cType2"
    s309_1P_16A = "s309_1P_16A"
    s309_1P_32A = "s309_1P_32A"
    s309_3P_16A = "s309_3P_16A"
    s309_3P_32A = "s309_3P_32A"
    sBS1361 = "sBS1361"
    sCEE_7_7 = "sCEE_7_7"
    sType2 = "sType2"
    sType3 = "sType3"
    Other1PhMax16A = "Other1PhMax16A"
    Other1PhOver16A = "Other1PhOver16A"
    Other3Ph = "Other3Ph"
    Pan = "Pan"
    wInductive = "wInductive"
    wResonant = "wResonant"
    Undetermined = "Undetermined"
    Unknown = "Unknown"   # on either side (car or connector) it matches any type


class ConnectorState(StrEnum):
    """A connector's state; transitions are in actor/connector.py."""
    AVAILABLE = "Available"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"
    OCCUPIED = "Occupied"
    UNAVAILABLE_FAULTED = "UnavailableFaulted"
    FAULTED_OCCUPIED = "FaultedOccupied"


class ConnectorEventType(StrEnum):
    """connector_event's `event`: what the EVSE manager reports."""
    ENABLE = "Enable"
    DISABLE = "Disable"
    FAULTED = "Faulted"
    ERROR_CLEARED = "ErrorCleared"
    TRANSACTION_STARTED = "TransactionStarted"
    SESSION_FINISHED = "SessionFinished"


class ErrorCode(StrEnum):
    """An error reply's error.code."""
    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    INVALID_ARGUMENT = "invalid_argument"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    STORE_FAILED = "store_failed"
    INTERNAL = "internal"


class Topic(StrEnum):
    """The PUB socket's topics (an update's first frame)."""
    RESERVATION_UPDATE = "reservation_update"
    EVSE_RESERVED = "evse_reserved"
    EVSE_STATE = "evse_state"


class Command(StrEnum):
    """A request's cmd."""
    RESERVE_NOW = "reserve_now"
    CANCEL_RESERVATION = "cancel_reservation"
    EXISTS_RESERVATION = "exists_reservation"
    USE_RESERVATION = "use_reservation"
    CONNECTOR_EVENT = "connector_event"
    PLUG_EVENT = "plug_event"
    IS_CHARGING_POSSIBLE = "is_charging_possible"
    GET_STATE = "get_state"
    PING = "ping"
    STATS = "stats"
