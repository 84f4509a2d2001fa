"""Every word that is spelt differently on the OCPP side and the actor's side, as tables.

The actor speaks EVerest (protocol/vocabulary.py); OCPP 2.0.1 and 1.6 have
their own enums (the `ocpp` library's). Nothing else in the bridge translates
a word: the handlers look it up here. Connector status is a rule over an EVSE
(plug, reservation, its connectors' states), so it is a function per version
built from these tables.
"""

from __future__ import annotations

from typing import Any, Callable

from ocpp.v16 import enums as v16
from ocpp.v201 import enums as v201

from ..vocabulary import (
    ConnectorState, ConnectorType, ErrorCode, ReservationResult, ReservationUpdateStatus,
)

# OCPP 2.0.1 ConnectorEnumType -> the actor's ConnectorType. The library's enum
# also has cChaoJi, cGBT and OppCharge (no EVerest type), but the 2.0.1
# ReserveNow schema does not list them: the library answers a ReserveNow
# carrying one with a FormatViolation CallError before any handler runs. The
# actor's cMCS has no 2.0.1 spelling (no CSMS can ask for it).
CONNECTOR_TYPE_201: dict[str, ConnectorType] = {
    v201.ConnectorEnumType.c_ccs1: ConnectorType.cCCS1,
    v201.ConnectorEnumType.c_ccs2: ConnectorType.cCCS2,
    v201.ConnectorEnumType.c_g105: ConnectorType.cG105,
    v201.ConnectorEnumType.c_tesla: ConnectorType.cTesla,
    v201.ConnectorEnumType.c_type1: ConnectorType.cType1,
    v201.ConnectorEnumType.c_type2: ConnectorType.cType2,
    v201.ConnectorEnumType.s309_1p_16a: ConnectorType.s309_1P_16A,
    v201.ConnectorEnumType.s309_1p_32a: ConnectorType.s309_1P_32A,
    v201.ConnectorEnumType.s309_3p_16a: ConnectorType.s309_3P_16A,
    v201.ConnectorEnumType.s309_3p_32a: ConnectorType.s309_3P_32A,
    v201.ConnectorEnumType.s_bs1361: ConnectorType.sBS1361,
    v201.ConnectorEnumType.s_cee_7_7: ConnectorType.sCEE_7_7,
    v201.ConnectorEnumType.s_type2: ConnectorType.sType2,
    v201.ConnectorEnumType.s_type3: ConnectorType.sType3,
    v201.ConnectorEnumType.other_1ph_max_16a: ConnectorType.Other1PhMax16A,
    v201.ConnectorEnumType.other_1ph_over_16a: ConnectorType.Other1PhOver16A,
    v201.ConnectorEnumType.other_3ph: ConnectorType.Other3Ph,
    v201.ConnectorEnumType.pan: ConnectorType.Pan,
    v201.ConnectorEnumType.w_inductive: ConnectorType.wInductive,
    v201.ConnectorEnumType.w_resonant: ConnectorType.wResonant,
    v201.ConnectorEnumType.undetermined: ConnectorType.Undetermined,
    v201.ConnectorEnumType.unknown: ConnectorType.Unknown,
}

RESERVE_NOW_STATUS_201: dict[ReservationResult, v201.ReserveNowStatusEnumType] = {
    ReservationResult.ACCEPTED: v201.ReserveNowStatusEnumType.accepted,
    ReservationResult.FAULTED: v201.ReserveNowStatusEnumType.faulted,
    ReservationResult.OCCUPIED: v201.ReserveNowStatusEnumType.occupied,
    ReservationResult.REJECTED: v201.ReserveNowStatusEnumType.rejected,
    ReservationResult.UNAVAILABLE: v201.ReserveNowStatusEnumType.unavailable,
}

# Why a 2.0.1 ReserveNow is Rejected when the actor answered it with an error
# reply (statusInfo.reasonCode; its message goes in additionalInfo). A bad
# request or an unknown command is the bridge's own fault, not the CSMS's.
ERROR_REASON_201: dict[ErrorCode, v201.StatusInfoReasonType] = {
    ErrorCode.BAD_REQUEST: v201.StatusInfoReasonType.internal_error,
    ErrorCode.UNKNOWN_COMMAND: v201.StatusInfoReasonType.internal_error,
    ErrorCode.INVALID_ARGUMENT: v201.StatusInfoReasonType.invalid_value,
    ErrorCode.STORE_FAILED: v201.StatusInfoReasonType.out_of_storage,
    ErrorCode.DEADLINE_EXCEEDED: v201.StatusInfoReasonType.internal_error,
    ErrorCode.INTERNAL: v201.StatusInfoReasonType.internal_error,
}

# CancelReservation's answer: did the actor cancel a reservation of that id?
CANCEL_STATUS_201: dict[bool, v201.CancelReservationStatusEnumType] = {
    True: v201.CancelReservationStatusEnumType.accepted,
    False: v201.CancelReservationStatusEnumType.rejected,
}
CANCEL_STATUS_16: dict[bool, v16.CancelReservationStatus] = {
    True: v16.CancelReservationStatus.accepted,
    False: v16.CancelReservationStatus.rejected,
}

RESERVE_NOW_STATUS_16: dict[ReservationResult, v16.ReservationStatus] = {
    ReservationResult.ACCEPTED: v16.ReservationStatus.accepted,
    ReservationResult.FAULTED: v16.ReservationStatus.faulted,
    ReservationResult.OCCUPIED: v16.ReservationStatus.occupied,
    ReservationResult.REJECTED: v16.ReservationStatus.rejected,
    ReservationResult.UNAVAILABLE: v16.ReservationStatus.unavailable,
}

# The actor's reservation ends that a 2.0.1 CSMS is told about with
# ReservationStatusUpdate. Cancelled is what the CSMS itself asked for, and
# Used is reported by the station's transaction, so neither is sent.
RESERVATION_END_201: dict[ReservationUpdateStatus, v201.ReservationUpdateStatusEnumType] = {
    ReservationUpdateStatus.EXPIRED: v201.ReservationUpdateStatusEnumType.expired,
    ReservationUpdateStatus.REMOVED: v201.ReservationUpdateStatusEnumType.removed,
}

def ocpp_boolean(value: bool) -> str:
    """How a configuration value that is a boolean is written (both versions)."""
    return "true" if value else "false"


# The 2.0.1 device-model component answered, and its variables (Actual
# attribute, read-only), each from a get_state snapshot.
RESERVATION_CTRLR = v201.ControllerComponentName.reservation_ctrlr
RESERVATION_VARIABLES_201: dict[str, Callable[[dict[str, Any]], str]] = {
    v201.ReservationCtrlrVariableName.available: lambda state: ocpp_boolean(True),
    v201.ReservationCtrlrVariableName.enabled:
        lambda state: ocpp_boolean(state["reservations_enabled"]),
    v201.ReservationCtrlrVariableName.non_evse_specific:
        lambda state: ocpp_boolean(state["non_evse_specific"]),
}

# The 1.6 configuration keys answered (all read-only), each from a get_state
# snapshot. The library has no enum for the feature profiles.
CONFIGURATION_16: dict[str, Callable[[dict[str, Any]], str]] = {
    v16.ConfigurationKey.reserve_connector_zero_supported:
        lambda state: ocpp_boolean(state["non_evse_specific"]),
    v16.ConfigurationKey.supported_feature_profiles: lambda state: "Core,Reservation",
}

CONNECTOR_STATUS_201: dict[ConnectorState, v201.ConnectorStatusEnumType] = {
    ConnectorState.AVAILABLE: v201.ConnectorStatusEnumType.available,
    ConnectorState.OCCUPIED: v201.ConnectorStatusEnumType.occupied,
    ConnectorState.UNAVAILABLE: v201.ConnectorStatusEnumType.unavailable,
    ConnectorState.FAULTED: v201.ConnectorStatusEnumType.faulted,
    ConnectorState.UNAVAILABLE_FAULTED: v201.ConnectorStatusEnumType.faulted,
    ConnectorState.FAULTED_OCCUPIED: v201.ConnectorStatusEnumType.faulted,
}


def connector_statuses_201(state: dict[str, Any]) -> dict[tuple[int, int], str]:
    """(evse id, connector id) -> 2.0.1 connector status. A connector that would
    be Available is Occupied on a plugged-in EVSE and Reserved on an EVSE the
    actor shows reserved (`reserved`: by its own reservation, whatever its id,
    or held back for non-EVSE-specific ones); the other states keep their own
    status (a faulted or disabled connector stays so whatever its EVSE's plug says)."""
    statuses = {}
    for evse in state["evses"]:
        for connector in evse["connectors"]:
            status = CONNECTOR_STATUS_201[connector["state"]]
            if status == v201.ConnectorStatusEnumType.available:
                if evse["plugged_in"]:
                    status = v201.ConnectorStatusEnumType.occupied
                elif evse["reserved"]:
                    status = v201.ConnectorStatusEnumType.reserved
            statuses[evse["id"], connector["id"]] = status
    return statuses


_CAR_ON_CONNECTOR = frozenset({ConnectorState.OCCUPIED, ConnectorState.FAULTED_OCCUPIED})
_FAULTY = frozenset({ConnectorState.FAULTED, ConnectorState.UNAVAILABLE_FAULTED,
                     ConnectorState.FAULTED_OCCUPIED})

# A 1.6 connector is an actor EVSE. The first rule whose test holds gives its
# status and error code; the last always holds.
STATUS_RULES_16: tuple[tuple[Callable[[dict, set], bool], v16.ChargePointStatus,
                             v16.ChargePointErrorCode], ...] = (
    (lambda evse, states: evse["reserved"],
     v16.ChargePointStatus.reserved, v16.ChargePointErrorCode.no_error),
    (lambda evse, states: bool(states & _CAR_ON_CONNECTOR),
     v16.ChargePointStatus.charging, v16.ChargePointErrorCode.no_error),
    (lambda evse, states: evse["plugged_in"],
     v16.ChargePointStatus.preparing, v16.ChargePointErrorCode.no_error),
    (lambda evse, states: ConnectorState.AVAILABLE in states,
     v16.ChargePointStatus.available, v16.ChargePointErrorCode.no_error),
    (lambda evse, states: bool(states & _FAULTY),
     v16.ChargePointStatus.faulted, v16.ChargePointErrorCode.other_error),
    (lambda evse, states: True,
     v16.ChargePointStatus.unavailable, v16.ChargePointErrorCode.no_error),
)


def connector_statuses_16(state: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """1.6 connector id (= actor EVSE id) -> (status, error code)."""
    statuses = {}
    for evse in state["evses"]:
        states = {connector["state"] for connector in evse["connectors"]}
        statuses[evse["id"]] = next((status, error) for holds, status, error in STATUS_RULES_16
                                    if holds(evse, states))
    return statuses
