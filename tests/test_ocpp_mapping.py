"""The mapping tables against both vocabularies, and the status rules over
every combination of connector states a small EVSE can be in."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import ocpp.v16.enums
import ocpp.v201
import pytest
from ocpp.v201.enums import StatusInfoReasonType

from protocol.client import CommandFailed
from protocol.ocpp.bridge import ReservationBridge
from protocol.ocpp.mapping import (
    CANCEL_STATUS_16, CANCEL_STATUS_201, CONNECTOR_STATUS_201, CONNECTOR_TYPE_201,
    ERROR_REASON_201, RESERVATION_END_201, RESERVE_NOW_STATUS_16, RESERVE_NOW_STATUS_201,
    connector_statuses_16, connector_statuses_201,
)
from protocol.ocpp.station import Station201
from protocol.vocabulary import (
    ConnectorState, ConnectorType, ErrorCode, ReservationResult, ReservationUpdateStatus,
)

from .helpers import HELD

SCHEMAS = Path(ocpp.v201.__file__).parent / "schemas"


def schema_enum(schema: str, definition: str) -> set[str]:
    return set(json.loads((SCHEMAS / schema).read_text())["definitions"][definition]["enum"])


def test_every_connector_type_a_2_0_1_csms_can_send_has_one_actor_type():
    assert set(CONNECTOR_TYPE_201) == schema_enum("ReserveNowRequest.json", "ConnectorEnumType")
    # One to one; only the actor's cMCS has no 2.0.1 spelling.
    assert len(set(CONNECTOR_TYPE_201.values())) == len(CONNECTOR_TYPE_201)
    assert set(ConnectorType) - set(CONNECTOR_TYPE_201.values()) == {ConnectorType.cMCS}
    assert CONNECTOR_TYPE_201["s309-1P-16A"] == "s309_1P_16A"
    assert CONNECTOR_TYPE_201["sCEE-7-7"] == "sCEE_7_7"


def test_every_actor_result_and_state_has_an_ocpp_word():
    assert set(RESERVE_NOW_STATUS_201) == set(RESERVE_NOW_STATUS_16) == set(ReservationResult)
    assert set(RESERVE_NOW_STATUS_201.values()) == schema_enum("ReserveNowResponse.json",
                                                               "ReserveNowStatusEnumType")
    assert set(CONNECTOR_STATUS_201) == set(ConnectorState)
    assert set(CANCEL_STATUS_201.values()) == schema_enum("CancelReservationResponse.json",
                                                          "CancelReservationStatusEnumType")
    assert set(CANCEL_STATUS_16.values()) == set(ocpp.v16.enums.CancelReservationStatus)
    assert set(RESERVATION_END_201) == {ReservationUpdateStatus.EXPIRED,
                                        ReservationUpdateStatus.REMOVED}


def evse(states, plugged_in=False, reserved_by=None) -> dict:
    """`reserved_by`: None (not reserved), its specific reservation's id, or HELD."""
    held = reserved_by == HELD
    return {"id": 1, "plugged_in": plugged_in, "reserved": reserved_by is not None,
            "reservation_id": None if held else reserved_by, "held_for_non_evse_specific": held,
            "connectors": [{"id": n, "type": "cCCS2", "state": s} for n, s in enumerate(states, 1)]}


# -1 is a reservation id like any other, not "held".
EVSES = [evse(states, plugged, reserved_by)
         for states in itertools.product(list(ConnectorState), repeat=2)
         for plugged in (False, True) for reserved_by in (None, -1, HELD)]


@pytest.mark.parametrize("station", EVSES, ids=lambda e: f"{e['connectors']}-{e['plugged_in']}"
                         f"-{e['reservation_id']}-{e['held_for_non_evse_specific']}")
def test_status_rules(station):
    states = [c["state"] for c in station["connectors"]]
    got201 = connector_statuses_201({"evses": [station]})
    for n, state in enumerate(states, 1):
        if state != ConnectorState.AVAILABLE:
            assert got201[1, n] == CONNECTOR_STATUS_201[state]
        elif station["plugged_in"]:
            assert got201[1, n] == "Occupied"
        elif station["reserved"]:
            assert got201[1, n] == "Reserved"
        else:
            assert got201[1, n] == "Available"
    status, error = connector_statuses_16({"evses": [station]})[1]
    car = {ConnectorState.OCCUPIED, ConnectorState.FAULTED_OCCUPIED} & set(states)
    faulty = {ConnectorState.FAULTED, ConnectorState.UNAVAILABLE_FAULTED,
              ConnectorState.FAULTED_OCCUPIED} & set(states)
    expected = ("Reserved" if station["reserved"] else "Charging" if car
                else "Preparing" if station["plugged_in"]
                else "Available" if ConnectorState.AVAILABLE in states
                else "Faulted" if faulty else "Unavailable")
    assert status == expected
    assert error == ("OtherError" if expected == "Faulted" else "NoError")


def reserve_now_answer(refusal: CommandFailed | None = None, **request):
    """What the 2.0.1 handlers answer a ReserveNow for EVSE-less `request`,
    with the actor (not running) refusing it with `refusal`."""
    bridge = ReservationBridge("tcp://127.0.0.1:9", "tcp://127.0.0.1:9", timeout=0.1)
    station = Station201("CS", None, reservation_bridge=bridge)

    async def refuse(**_):
        raise refusal

    if refusal is not None:
        bridge.client.reserve_now = refuse
    try:
        return asyncio.run(station.on_reserve_now(
            id=1, expiry_date_time="2030-01-01T00:00:00Z",
            id_token={"id_token": "A", "type": "Central"}, **request))
    finally:
        bridge.close()


def test_a_connector_type_without_mapping_is_rejected_before_the_actor():
    """A 2.0.1 CSMS cannot send one (the schema has none), but a library whose
    enum grows must not hand the actor a word it does not know."""
    response = reserve_now_answer(connector_type="cChaoJi")
    assert response.status == "Rejected"
    assert response.status_info.reason_code == "UnknownConnectorType"


@pytest.mark.parametrize("code, reason", [
    (ErrorCode.INVALID_ARGUMENT, "InvalidValue"),
    (ErrorCode.STORE_FAILED, "OutOfStorage"),
    (ErrorCode.INTERNAL, "InternalError"),
])
def test_an_actor_error_is_rejected_with_the_closest_reason(code, reason):
    response = reserve_now_answer(CommandFailed(code, "what the actor said"))
    assert response.status == "Rejected"
    assert response.status_info.reason_code == reason
    assert response.status_info.additional_info == f"{code}: what the actor said"


def test_every_actor_error_has_a_2_0_1_reason():
    assert set(ERROR_REASON_201) == set(ErrorCode)
    assert set(ERROR_REASON_201.values()) <= set(StatusInfoReasonType)
