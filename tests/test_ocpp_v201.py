"""The bridge for OCPP 2.0.1, end to end: a real CSMS (the `ocpp` library's
central-system side), the real actor and `python -m protocol.ocpp` as
processes, shared by the tests of this module. Each test leaves the station
as it found it (no reservation, every connector Available, as the CSMS sees).
"""

from __future__ import annotations

import base64
import time

import pytest
from ocpp.exceptions import InternalError, OCPPError
from ocpp.v201 import call

from protocol.vocabulary import ConnectorEventType

from .helpers import in_future, rfc3339
from .ocpp_csms import module_fixtures, restore

pytestmark = pytest.mark.timeout(60)

ALL_AVAILABLE = {(e, c): "Available" for e in (1, 2) for c in (1, 2)}
PASSWORD = "s3cret-for-CS1"


setup, clean = module_fixtures("2.0.1", password=PASSWORD)


def token(value: str) -> dict:
    return {"id_token": value, "type": "Central"}


def reserve(setup, rid: int, evse_id: int | None = None, connector_type: str | None = None,
            expiry: str | None = None, group: str | None = None, who: str = "ALICE"):
    return setup.csms.call(call.ReserveNow(
        id=rid, expiry_date_time=expiry or in_future(), id_token=token(who), evse_id=evse_id,
        connector_type=connector_type, group_id_token=token(group) if group else None))


def status_updates(setup, rid: int, since: int = 0) -> list[str]:
    return [m.payload["reservation_update_status"] for m in setup.csms.messages[since:]
            if m.action == "ReservationStatusUpdate" and m.payload["reservation_id"] == rid]


def test_boot_reports_every_connector_and_authenticates(setup):
    boot = next(m for m in setup.csms.messages if m.action == "BootNotification")
    assert boot.payload["charging_station"]["model"] == "reservation-ocpp"
    assert boot.payload["reason"] == "PowerUp"
    assert setup.csms.statuses() == ALL_AVAILABLE
    assert setup.csms.sessions[0].id == "CS1"
    basic = base64.b64encode(f"CS1:{PASSWORD}".encode()).decode()
    assert setup.csms.headers[0]["Authorization"] == f"Basic {basic}"


def test_evse_specific_reservation_shows_reserved_and_back(setup):
    response = reserve(setup, 1, evse_id=1, connector_type="cCCS2", group="FLEET")
    assert response.status == "Accepted"
    setup.csms.wait_statuses({(1, 1): "Reserved", (1, 2): "Reserved",
                              (2, 1): "Available", (2, 2): "Available"})
    with setup.client() as client:
        [placed] = client.get_state()["reservations"]
    assert placed == {"reservation_id": 1, "id_token": "ALICE", "parent_id_token": "FLEET",
                      "evse_id": 1, "connector_type": "cCCS2",
                      "expiry_time": placed["expiry_time"]}
    mark = setup.csms.mark()
    assert setup.csms.call(call.CancelReservation(reservation_id=1)).status == "Accepted"
    setup.csms.wait_statuses({(1, 1): "Available", (1, 2): "Available"})
    # A cancel the CSMS asked for is not reported back to it.
    assert status_updates(setup, 1, mark) == []


def test_evse_specific_results(setup):
    assert reserve(setup, 1, evse_id=1).status == "Accepted"
    assert reserve(setup, 2, evse_id=1, who="BOB").status == "Occupied"
    # The past: the actor's own Rejected.
    assert reserve(setup, 3, evse_id=2, expiry=rfc3339(time.time() - 60)).status == "Rejected"
    # A type this station has no connector for.
    assert reserve(setup, 3, evse_id=2, connector_type="sType3").status == "Rejected"
    with setup.client() as client:
        client.connector_event(2, 1, ConnectorEventType.FAULTED)
        client.connector_event(2, 2, ConnectorEventType.DISABLE)
    setup.csms.wait_statuses({(2, 1): "Faulted", (2, 2): "Unavailable"})
    assert reserve(setup, 4, evse_id=2, connector_type="cCCS2").status == "Faulted"
    assert reserve(setup, 5, evse_id=2, connector_type="cType2").status == "Unavailable"


@pytest.mark.parametrize("evse_id, connector_type, reason", [
    (0, None, "ValueZeroNotAllowed"),
    (7, None, "UnknownEvse"),
])
def test_what_the_station_cannot_map_is_rejected_with_a_reason(setup, evse_id, connector_type,
                                                               reason):
    response = reserve(setup, 9, evse_id=evse_id, connector_type=connector_type)
    assert response.status == "Rejected"
    assert response.status_info["reason_code"] == reason
    assert response.status_info["additional_info"]
    with setup.client() as client:
        assert client.get_state()["reservations"] == []


def test_an_expiry_the_actor_cannot_read_is_rejected_with_its_message(setup):
    response = reserve(setup, 9, evse_id=1, expiry="2030-01-01 12:00")
    assert response.status == "Rejected"
    assert response.status_info["reason_code"] == "InvalidValue"
    assert "expiry_time" in response.status_info["additional_info"]


def test_non_evse_specific_results(setup):
    assert reserve(setup, 1).status == "Accepted"
    assert reserve(setup, 2, who="BOB").status == "Accepted"
    # Both EVSEs are now held for the two reservations.
    setup.csms.wait_statuses({key: "Reserved" for key in ALL_AVAILABLE})
    assert reserve(setup, 3, who="CAROL").status == "Occupied"
    assert reserve(setup, 4, connector_type="sType3").status == "Rejected"
    with setup.client() as client:
        restore(client)
        for evse_id in (1, 2):
            client.connector_event(evse_id, 1, ConnectorEventType.FAULTED)
            client.connector_event(evse_id, 2, ConnectorEventType.DISABLE)
    assert reserve(setup, 5, connector_type="cCCS2").status == "Faulted"
    assert reserve(setup, 6, connector_type="cType2").status == "Unavailable"


def test_a_reservation_numbered_minus_one_and_a_held_evse_both_show_reserved(setup):
    assert reserve(setup, -1, evse_id=1).status == "Accepted"
    setup.csms.wait_statuses({(1, 1): "Reserved", (1, 2): "Reserved",
                              (2, 1): "Available", (2, 2): "Available"})
    # EVSE 2 is the only one left for a non-EVSE-specific reservation: held back.
    assert reserve(setup, 2, who="BOB").status == "Accepted"
    setup.csms.wait_statuses({key: "Reserved" for key in ALL_AVAILABLE})
    assert setup.csms.call(call.CancelReservation(reservation_id=-1)).status == "Accepted"
    # Two free EVSEs for one reservation: neither is held back any more.
    setup.csms.wait_statuses(ALL_AVAILABLE)


def test_replacement_by_the_same_id_moves_the_reservation(setup):
    assert reserve(setup, 1, evse_id=1).status == "Accepted"
    setup.csms.wait_statuses({(1, 1): "Reserved", (1, 2): "Reserved"})
    assert reserve(setup, 1, evse_id=2).status == "Accepted"
    setup.csms.wait_statuses({(1, 1): "Available", (1, 2): "Available",
                              (2, 1): "Reserved", (2, 2): "Reserved"})
    with setup.client() as client:
        assert [(r["reservation_id"], r["evse_id"]) for r in client.get_state()["reservations"]] \
            == [(1, 2)]


def test_cancel_of_an_unknown_id_is_rejected(setup):
    assert setup.csms.call(call.CancelReservation(reservation_id=424242)).status == "Rejected"


def test_expired_reservation_is_reported_once(setup):
    mark = setup.csms.mark()
    assert reserve(setup, 11, evse_id=2, expiry=in_future(1)).status == "Accepted"
    setup.csms.wait_statuses({(2, 1): "Reserved"})
    setup.csms.wait(lambda m: m.action == "ReservationStatusUpdate", since=mark,
                    what="ReservationStatusUpdate")
    setup.csms.wait_statuses({(2, 1): "Available", (2, 2): "Available"})
    # Something later, so that a second report would have arrived before it.
    assert reserve(setup, 12, evse_id=1).status == "Accepted"
    setup.csms.wait_statuses({(1, 1): "Reserved"})
    assert status_updates(setup, 11, mark) == ["Expired"]


def test_fault_removes_the_reservation_and_is_reported(setup):
    mark = setup.csms.mark()
    assert reserve(setup, 21, evse_id=1, connector_type="cCCS2").status == "Accepted"
    setup.csms.wait_statuses({(1, 1): "Reserved"})
    with setup.client() as client:
        client.connector_event(1, 1, ConnectorEventType.FAULTED)
    setup.csms.wait(lambda m: m.action == "ReservationStatusUpdate", since=mark,
                    what="ReservationStatusUpdate")
    setup.csms.wait_statuses({(1, 1): "Faulted", (1, 2): "Available"})
    assert status_updates(setup, 21, mark) == ["Removed"]


def test_plugged_in_evse_is_occupied(setup):
    with setup.client() as client:
        client.plug_event(2, True)
        setup.csms.wait_statuses({(2, 1): "Occupied", (2, 2): "Occupied"})
        client.plug_event(2, False)
        client.connector_event(1, 2, ConnectorEventType.TRANSACTION_STARTED)
    setup.csms.wait_statuses({(2, 1): "Available", (1, 2): "Occupied", (1, 1): "Available"})


def test_get_variables_answers_reservation_ctrlr_from_the_actor(setup):
    def ask(component: str, variable: str, attribute: str | None = None) -> dict:
        request = {"component": {"name": component}, "variable": {"name": variable}}
        if attribute:
            request["attribute_type"] = attribute
        return request

    response = setup.csms.call(call.GetVariables(get_variable_data=[
        ask("ReservationCtrlr", "Enabled"), ask("ReservationCtrlr", "NonEvseSpecific", "Actual"),
        ask("ReservationCtrlr", "Enabled", "Target"), ask("ReservationCtrlr", "Colour"),
        ask("OCPPCommCtrlr", "HeartbeatInterval")]))
    results = [(r["attribute_status"], r.get("attribute_value"))
               for r in response.get_variable_result]
    assert results == [("Accepted", "true"), ("Accepted", "true"),
                       ("NotSupportedAttributeType", None), ("UnknownVariable", None),
                       ("UnknownComponent", None)]


def test_schema_invalid_csms_messages_are_refused_and_the_bridge_goes_on(setup):
    # No idToken: the library on the station side refuses it before our handler.
    with pytest.raises(OCPPError) as refused:
        setup.csms.run(setup.csms.sessions[-1].call(
            call.ReserveNow(id=1, expiry_date_time=in_future(), id_token=None),
            suppress=False, skip_schema_validation=True))
    assert not isinstance(refused.value, InternalError)
    assert reserve(setup, 1, evse_id=1).status == "Accepted"
    assert setup.bridge.process.poll() is None
